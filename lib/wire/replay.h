/*
 * Anti-replay window for the sealed transport (RFC 6479's bitmap of blocks,
 * as WireGuard uses it). Counters are checked only after a packet has passed
 * AEAD authentication, so a forged counter can never move the window.
 *
 * The bitmap is TERN__REPLAY_BLOCKS words of 64 bits used as a ring; one
 * block is kept as slack so that sliding forward clears whole words, which
 * leaves TERN__REPLAY_WINDOW counters below the highest one acceptable.
 */
#ifndef TERN_REPLAY_H
#define TERN_REPLAY_H

#include <stdint.h>

#define TERN__REPLAY_BLOCKS 33
#define TERN__REPLAY_WINDOW ((TERN__REPLAY_BLOCKS - 1) * 64) /* 2048 */

typedef struct tern__replay {
  uint64_t top;   /* highest counter accepted so far */
  int any;        /* 0 until the first counter is accepted */
  uint64_t bits[TERN__REPLAY_BLOCKS];
} tern__replay;

void tern__replay_init(tern__replay *w);

/* 0 if counter `n` has not been seen and is inside the window;
 * TERN_EREPLAY if it was seen or is too old. Does not change the window. */
int tern__replay_check(const tern__replay *w, uint64_t n);

/* Marks `n` as seen, sliding the window forward if it is the new highest.
 * Call only after tern__replay_check() accepted it and the packet opened. */
void tern__replay_update(tern__replay *w, uint64_t n);

#endif
