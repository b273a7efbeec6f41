/*
 * Connection racing (sans-I/O): which connect to start when, for a relay
 * reachable at several addresses and over UDP or TCP. RFC 8305 (Happy
 * Eyeballs v2) for the addresses: they are tried in the order given (the
 * caller orders them as §4 says), each `stagger_ms` after the one before,
 * or at once when the one before failed; the first to connect wins and the
 * others are abandoned. TCP (spec/wire.md §12) is a second lane over the
 * same addresses: its first connect starts `tcp_after_ms` after the race
 * (0: at once, when the app said UDP is blocked), then staggered the same
 * way, so a network that drops UDP is on TCP a little after tcp_after_ms.
 *
 * The shell starts what tern__race_next() names, reports failures that it
 * learns of early (a TCP connection refused, an address this host cannot
 * reach), and stops asking once one attempt connected.
 */
#ifndef TERN_RACE_H
#define TERN_RACE_H

#include <stddef.h>
#include <stdint.h>

#include "io/addr.h"

/* Addresses raced per lane (UDP, TCP); both lanes together fit a client's
 * link (TERN__RACE_MAX peer slots). */
#define TERN__RACE_ADDRS 4
#define TERN__RACE_MAX (2 * TERN__RACE_ADDRS)

typedef struct tern__race_entry {
  tern__addr addr;     /* UDP entries: the relay's UDP port; TCP: its TCP port */
  uint8_t tcp;
  uint8_t state;       /* 0 waiting, 1 started, 2 failed */
} tern__race_entry;

typedef struct tern__race {
  tern__race_entry e[TERN__RACE_MAX]; /* UDP entries first, then TCP */
  size_t n, nudp;
  size_t next[2];          /* per lane: index of its next entry to start */
  uint64_t due[2];         /* per lane: when it may start that entry */
  uint32_t stagger_ms;
  uint64_t last_start_ms;  /* the latest start in either lane */
} tern__race;

/* A race over `addrs` (UDP addresses with their ports; at most
 * TERN__RACE_ADDRS are used, in order), and over the same hosts on TCP port
 * `tcp_port` unless it is 0, starting at now_ms. */
void tern__race_init(tern__race *r, const tern__addr *addrs, size_t n, uint16_t tcp_port, uint32_t stagger_ms, uint32_t tcp_after_ms, uint64_t now_ms);
/* The next entry to start now: 1 with *idx (the entry counts as started),
 * 0 if none is due. */
int tern__race_next(tern__race *r, uint64_t now_ms, size_t *idx);
/* Entry idx failed before connecting: the next entry of its lane may
 * start at once. */
void tern__race_failed(tern__race *r, size_t idx, uint64_t now_ms);
/* The TCP lane starts now (the app said UDP is blocked here). */
void tern__race_tcp_now(tern__race *r, uint64_t now_ms);
/* ms until an entry is due, 0 if one is, -1 if none is left. */
int tern__race_timeout(const tern__race *r, uint64_t now_ms);
/* 1 if every entry was started and has failed. */
int tern__race_lost(const tern__race *r);

#endif
