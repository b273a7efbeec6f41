/*
 * The relays' cross-check of the log (spec/store.md, "Cross-checking the
 * relays"): every relay hashes the entries it takes (sequence, writer id,
 * applied or refused) in windows of `every` entries and tells the others
 * each window's hash; a relay whose window the others (two or more, none
 * agreeing) hashed differently took entries the log does not have (a
 * server that lost its leadership delivered them), and goes back. A
 * relay writes a snapshot only of windows another relay agreed with, when
 * it hears other relays at all.
 *
 * Sans-I/O: the caller publishes the hashes, passes in what it hears, and
 * keeps the time. Senders are named by a 64-bit tag (a hash of their id).
 */
#ifndef TERN_CLUSTER_XCHECK_H
#define TERN_CLUSTER_XCHECK_H

#include <sodium.h>
#include <stddef.h>
#include <stdint.h>

#define TERN__XCHECK_OWN 256  /* own windows remembered */
#define TERN__XCHECK_HEARD 1024 /* others' hashes of windows not yet reached */
#define TERN__XCHECK_VOTERS 4 /* distinct relays counted for or against */

typedef struct tern__xcheck_win {
  uint64_t end; /* the window's last sequence (0: unused slot) */
  uint8_t h[16];
  uint64_t agree[TERN__XCHECK_VOTERS], disagree[TERN__XCHECK_VOTERS];
  uint8_t nagree, ndisagree;
} tern__xcheck_win;

typedef struct tern__xcheck_heard {
  uint64_t end, from;
  uint8_t h[16];
} tern__xcheck_heard;

/* Zero-initialised and then tern__xcheck_reset(). No heap. */
typedef struct tern__xcheck {
  uint64_t every;   /* entries a window (0: off) */
  uint64_t next;    /* the sequence the current window expects next */
  int whole;        /* the current window has every entry from its start */
  crypto_generichash_state st;
  tern__xcheck_win own[TERN__XCHECK_OWN];       /* by (end / every) % OWN */
  tern__xcheck_heard heard[TERN__XCHECK_HEARD]; /* ring */
  size_t nheard;
  uint64_t heard_ms; /* when another relay was last heard */
} tern__xcheck;

/* The replica is at `pos` (opened, or a snapshot loaded, or gone back):
 * own windows are forgotten, and the window containing pos + 1 counts
 * only if it starts there. What others said stays. */
void tern__xcheck_reset(tern__xcheck *x, uint64_t every, uint64_t pos);

/* The replica took entry `seq` (the one after the last taken) written by
 * `id`, applied (1) or refused (0). Returns 1 when it ends a whole window:
 * *end and h are what to tell the others; 0 otherwise. */
int tern__xcheck_take(tern__xcheck *x, uint64_t seq, const char *id, int verdict, uint64_t *end,
                      uint8_t h[16]);

/* Another relay (`from`, never this one's tag) hashed the window ending
 * at `end` as h, heard at now_ms. */
void tern__xcheck_heard_one(tern__xcheck *x, uint64_t end, const uint8_t h[16], uint64_t from,
                            uint64_t now_ms);

/* The lowest own window that two or more other relays hashed differently
 * and none alike (its end), or 0. */
uint64_t tern__xcheck_outvoted(const tern__xcheck *x);

/* 1 if a snapshot at `pos` may be written: no other relay heard within
 * quiet_ms of now_ms (a relay alone), or the last whole own window at or
 * below pos was hashed alike by another relay and no remembered window at
 * or below pos was hashed differently by any relay without one alike. */
int tern__xcheck_may_snapshot(const tern__xcheck *x, uint64_t pos, uint64_t now_ms, uint64_t quiet_ms);

/* 1 if a remembered own window at or below pos was hashed differently by
 * some relay and alike by none. */
int tern__xcheck_disputed(const tern__xcheck *x, uint64_t pos);

/* This relay's hash of the window ending at `end`, if remembered: 1 with h
 * filled, else 0. */
int tern__xcheck_own(const tern__xcheck *x, uint64_t end, uint8_t h[16]);

/* Forgets what others said of the window ending at `end` (this relay read
 * the log again and took the same entries: the log has them). */
void tern__xcheck_settle(tern__xcheck *x, uint64_t end);

/* A sender's tag: the first 8 bytes of BLAKE2b of its id. */
uint64_t tern__xcheck_tag(const char *id);

#endif
