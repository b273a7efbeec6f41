/*
 * The address table (sans-I/O): tern's side of the socket layer under ENet
 * (docs/socket-layer.md, "Handles, not addresses"). ENet is never given a
 * real address: an ENetAddress carries a handle (`host`, never 0 or
 * 0xFFFFFFFF) and the handle's generation (`port`), and this table maps the
 * handle to the real address (IPv4 or IPv6) and back. Because ENet checks a
 * datagram's source against its peer's ENetAddress, the real address behind
 * a handle can change without ENet noticing.
 *
 * Each entry has an owner (the index of the virtual socket, i.e. the ENet
 * host, it belongs to) and counts the connections that use it (two ENet
 * peers can share an address: a client reconnecting from the same socket
 * before the relay noticed its old connection end); an entry no connection
 * was bound to yet older than a limit are swept, so a CONNECT that
 * ENet never answered (no free slot, a duplicate) does not hold an entry.
 *
 * Not thread-safe: the dispatcher that owns it serialises access.
 */
#ifndef TERN_ADDRTAB_H
#define TERN_ADDRTAB_H

#include <stddef.h>
#include <stdint.h>

#include "io/addr.h"

typedef struct tern__atab tern__atab;

typedef struct tern__atab_entry {
  tern__addr addr;      /* where datagrams for the handle go */
  tern__addr local;     /* our address they were sent to (a relay bound to a
                           wildcard answers from it); all zero: unknown */
  uint32_t owner;       /* virtual socket index */
  uint16_t gen;         /* generation: ENetAddress.port */
  uint8_t used, bound;
  uint32_t refs;        /* connections using the handle (bound ones) */
  uint64_t created_ms;
  uint32_t next;        /* hash chain: entry index + 1, 0 ends */
} tern__atab_entry;

/* An empty table that holds at most `max` entries. Returns 0 or TERN_ENOMEM. */
int tern__atab_new(tern__atab **out, size_t max);
void tern__atab_free(tern__atab *t);

/* Adds `a` for `owner`; sets *handle and *gen. Returns 0, TERN_EEXIST if
 * the address has an entry already, TERN_ERESOURCE if the table is full,
 * TERN_ENOMEM. */
int tern__atab_add(tern__atab *t, const tern__addr *a, uint32_t owner, uint64_t now_ms,
                   uint32_t *handle, uint16_t *gen);

/* The handle of address `a`, or 0 if it has none. */
uint32_t tern__atab_find(const tern__atab *t, const tern__addr *a);

/* The entry of a handle, checked against its generation; NULL if the
 * handle is unknown or was reused since (gen differs). */
const tern__atab_entry *tern__atab_get(const tern__atab *t, uint32_t handle, uint16_t gen);

/* Moves a handle to a new real address (a session that migrated). Returns
 * 0, TERN_ENOENT (handle gone), TERN_EEXIST (another handle has `to`). */
int tern__atab_move(tern__atab *t, uint32_t handle, uint16_t gen, const tern__addr *to);

/* Records our address the handle's datagrams arrive at. */
void tern__atab_set_local(tern__atab *t, uint32_t handle, const tern__addr *local);

/* Marks the handle's entry bound (a connection uses it) and counts the
 * connection. Returns 0, or TERN_ENOENT if the handle is gone. */
int tern__atab_bind(tern__atab *t, uint32_t handle, uint16_t gen);

/* One connection stopped using the handle: the entry is removed when none
 * is left (or if it was never bound). Returns 1 if it was removed. */
int tern__atab_release(tern__atab *t, uint32_t handle, uint16_t gen);

/* Removes unbound entries created more than `max_age_ms` ago. Returns how
 * many. */
size_t tern__atab_sweep(tern__atab *t, uint64_t now_ms, uint64_t max_age_ms);

/* The entry of handle `handle` whatever its generation, NULL if the slot
 * is unused; handles run from 1 to tern__atab_span(). */
const tern__atab_entry *tern__atab_entry_at(const tern__atab *t, uint32_t handle);
uint32_t tern__atab_span(const tern__atab *t);

/* Entries in use. */
size_t tern__atab_count(const tern__atab *t);

#endif
