/* RFC 6479-style sliding window over a ring of 64-bit blocks. */
#include "wire/replay.h"

#include <string.h>

#include "tern/tern.h"

void tern__replay_init(tern__replay *w) { memset(w, 0, sizeof(*w)); }

int tern__replay_check(const tern__replay *w, uint64_t n) {
  if (!w->any || n > w->top) return 0;
  if (w->top - n >= TERN__REPLAY_WINDOW) return TERN_EREPLAY;
  uint64_t block = (n >> 6) % TERN__REPLAY_BLOCKS;
  return (w->bits[block] >> (n & 63)) & 1 ? TERN_EREPLAY : 0;
}

void tern__replay_update(tern__replay *w, uint64_t n) {
  if (!w->any) {
    w->any = 1;
    w->top = n;
  } else if (n > w->top) {
    /* Clear every block that the window slides past; at most all of them. */
    uint64_t cur = w->top >> 6, next = n >> 6;
    uint64_t diff = next - cur;
    if (diff > TERN__REPLAY_BLOCKS) diff = TERN__REPLAY_BLOCKS;
    for (uint64_t i = 1; i <= diff; i++) w->bits[(cur + i) % TERN__REPLAY_BLOCKS] = 0;
    w->top = n;
  }
  w->bits[(n >> 6) % TERN__REPLAY_BLOCKS] |= (uint64_t)1 << (n & 63);
}
