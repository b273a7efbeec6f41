/* RFC 6479-style sliding window over a ring of 64-bit blocks; one rule for
 * both window sizes, the ring's size a parameter. */
#include "wire/replay.h"

#include <string.h>

#include "tern/tern.h"

static int check(uint64_t top, int any, const uint64_t *bits, uint64_t blocks, uint64_t n) {
  if (!any || n > top) return 0;
  if (top - n >= (blocks - 1) * 64) return TERN_EREPLAY;
  return (bits[(n >> 6) % blocks] >> (n & 63)) & 1 ? TERN_EREPLAY : 0;
}

static void update(uint64_t *top, int *any, uint64_t *bits, uint64_t blocks, uint64_t n) {
  if (!*any) {
    *any = 1;
    *top = n;
  } else if (n > *top) {
    /* Clear every block that the window slides past; at most all of them. */
    uint64_t cur = *top >> 6, next = n >> 6;
    uint64_t diff = next - cur;
    if (diff > blocks) diff = blocks;
    for (uint64_t i = 1; i <= diff; i++) bits[(cur + i) % blocks] = 0;
    *top = n;
  }
  bits[(n >> 6) % blocks] |= (uint64_t)1 << (n & 63);
}

void tern__replay_init(tern__replay *w) { memset(w, 0, sizeof(*w)); }

int tern__replay_check(const tern__replay *w, uint64_t n) {
  return check(w->top, w->any, w->bits, TERN__REPLAY_BLOCKS, n);
}

void tern__replay_update(tern__replay *w, uint64_t n) {
  update(&w->top, &w->any, w->bits, TERN__REPLAY_BLOCKS, n);
}

void tern__replay_small_init(tern__replay_small *w) { memset(w, 0, sizeof(*w)); }

int tern__replay_small_check(const tern__replay_small *w, uint64_t n) {
  return check(w->top, w->any, w->bits, TERN__REPLAY_SMALL_BLOCKS, n);
}

void tern__replay_small_update(tern__replay_small *w, uint64_t n) {
  update(&w->top, &w->any, w->bits, TERN__REPLAY_SMALL_BLOCKS, n);
}
