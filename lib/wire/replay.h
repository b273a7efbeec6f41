/*
 * Anti-replay windows for the sealed transport (RFC 6479's bitmap of
 * blocks, as WireGuard uses it). Counters are checked only after a packet
 * has passed AEAD authentication, so a forged counter can never move a
 * window.
 *
 * The bitmap is a ring of 64-bit words; one word is kept as slack so that
 * sliding forward clears whole words, which leaves (words - 1) * 64
 * counters below the highest one acceptable. Two sizes, one rule:
 *
 *   tern__replay        33 words: 2048 counters, for the stream ENet
 *                       delivers in any order (unsequenced copies);
 *   tern__replay_small   3 words:  128 counters, for the streams ENet
 *                       delivers in order (reliable or sequenced), where
 *                       a packet can only be late by the few the sender
 *                       sealed before handing it to ENet.
 *
 * Both are plain values (no pointers): copying one copies the window.
 */
#ifndef TERN_REPLAY_H
#define TERN_REPLAY_H

#include <stdint.h>

#define TERN__REPLAY_BLOCKS 33
#define TERN__REPLAY_WINDOW ((TERN__REPLAY_BLOCKS - 1) * 64) /* 2048 */
#define TERN__REPLAY_SMALL_BLOCKS 3
#define TERN__REPLAY_SMALL_WINDOW ((TERN__REPLAY_SMALL_BLOCKS - 1) * 64) /* 128 */

typedef struct tern__replay {
  uint64_t top;   /* highest counter accepted so far */
  int any;        /* 0 until the first counter is accepted */
  uint64_t bits[TERN__REPLAY_BLOCKS];
} tern__replay;

typedef struct tern__replay_small {
  uint64_t top;
  int any;
  uint64_t bits[TERN__REPLAY_SMALL_BLOCKS];
} tern__replay_small;

void tern__replay_init(tern__replay *w);

/* 0 if counter `n` has not been seen and is inside the window;
 * TERN_EREPLAY if it was seen or is too old. Does not change the window. */
int tern__replay_check(const tern__replay *w, uint64_t n);

/* Marks `n` as seen, sliding the window forward if it is the new highest.
 * Call only after tern__replay_check() accepted it and the packet opened. */
void tern__replay_update(tern__replay *w, uint64_t n);

/* The same three for the small window. */
void tern__replay_small_init(tern__replay_small *w);
int tern__replay_small_check(const tern__replay_small *w, uint64_t n);
void tern__replay_small_update(tern__replay_small *w, uint64_t n);

#endif
