/* The relays' cross-check of the log (xcheck.h). */
#include "cluster/xcheck.h"

#include <string.h>

uint64_t tern__xcheck_tag(const char *id) {
  uint8_t h[16];
  crypto_generichash(h, sizeof h, (const uint8_t *)id, strlen(id), NULL, 0);
  uint64_t t = 0;
  for (int i = 0; i < 8; i++) t = t << 8 | h[i];
  return t ? t : 1;
}

static tern__xcheck_win *slot(tern__xcheck *x, uint64_t end) {
  return &x->own[(end / x->every) % TERN__XCHECK_OWN];
}

static void vote(tern__xcheck_win *w, const uint8_t h[16], uint64_t from) {
  int same = memcmp(w->h, h, 16) == 0;
  uint64_t *v = same ? w->agree : w->disagree;
  uint8_t *n = same ? &w->nagree : &w->ndisagree;
  for (uint8_t i = 0; i < *n; i++)
    if (v[i] == from) return;
  if (*n < TERN__XCHECK_VOTERS) v[(*n)++] = from;
}

void tern__xcheck_reset(tern__xcheck *x, uint64_t every, uint64_t pos) {
  x->every = every;
  if (!every) return;
  /* The replica is no longer the one that took the remembered windows
   * (a snapshot's, or entry 0's): their hashes and votes say nothing of
   * it. */
  memset(x->own, 0, sizeof x->own);
  x->next = pos + 1;
  x->whole = pos % every == 0;
  crypto_generichash_init(&x->st, NULL, 0, 16);
}

int tern__xcheck_take(tern__xcheck *x, uint64_t seq, const char *id, int verdict, uint64_t *end,
                      uint8_t h[16]) {
  if (!x->every) return 0;
  if (seq != x->next) { /* not the next: this window is not whole */
    x->whole = 0;
    x->next = seq;
  }
  uint8_t rec[9];
  for (int i = 0; i < 8; i++) rec[i] = (uint8_t)(seq >> (56 - 8 * i));
  rec[8] = (uint8_t)(verdict ? 1 : 0);
  crypto_generichash_update(&x->st, rec, sizeof rec);
  crypto_generichash_update(&x->st, (const uint8_t *)id, strlen(id) + 1);
  x->next = seq + 1;
  if (seq % x->every != 0) return 0;
  int whole = x->whole;
  uint8_t d[16];
  crypto_generichash_final(&x->st, d, sizeof d);
  crypto_generichash_init(&x->st, NULL, 0, 16);
  x->whole = 1;
  if (!whole) return 0;
  tern__xcheck_win *w = slot(x, seq);
  *w = (tern__xcheck_win){.end = seq};
  memcpy(w->h, d, 16);
  /* What the others said of it before this relay got there. */
  for (size_t i = 0; i < x->nheard && i < TERN__XCHECK_HEARD; i++)
    if (x->heard[i].end == seq) vote(w, x->heard[i].h, x->heard[i].from);
  *end = seq;
  memcpy(h, d, 16);
  return 1;
}

void tern__xcheck_heard_one(tern__xcheck *x, uint64_t end, const uint8_t h[16], uint64_t from,
                            uint64_t now_ms) {
  if (!x->every || !end || end % x->every != 0) return;
  x->heard_ms = now_ms;
  tern__xcheck_win *w = slot(x, end);
  if (w->end == end) {
    vote(w, h, from);
    return;
  }
  tern__xcheck_heard *r = &x->heard[x->nheard++ % TERN__XCHECK_HEARD];
  r->end = end;
  r->from = from;
  memcpy(r->h, h, 16);
  if (x->nheard >= 2 * TERN__XCHECK_HEARD) x->nheard -= TERN__XCHECK_HEARD;
}

uint64_t tern__xcheck_outvoted(const tern__xcheck *x) {
  uint64_t low = 0;
  if (!x->every) return 0;
  for (size_t i = 0; i < TERN__XCHECK_OWN; i++) {
    const tern__xcheck_win *w = &x->own[i];
    if (w->end && w->ndisagree >= 2 && w->nagree == 0 && (!low || w->end < low)) low = w->end;
  }
  return low;
}

int tern__xcheck_may_snapshot(const tern__xcheck *x, uint64_t pos, uint64_t now_ms, uint64_t quiet_ms) {
  if (!x->every || !x->heard_ms || now_ms > x->heard_ms + quiet_ms) return 1;
  uint64_t last = 0;
  int last_agreed = 0;
  for (size_t i = 0; i < TERN__XCHECK_OWN; i++) {
    const tern__xcheck_win *w = &x->own[i];
    if (!w->end || w->end > pos) continue;
    if (w->ndisagree && !w->nagree) return 0;
    if (w->end > last) {
      last = w->end;
      last_agreed = w->nagree > 0;
    }
  }
  return last_agreed;
}

int tern__xcheck_disputed(const tern__xcheck *x, uint64_t pos) {
  for (size_t i = 0; x->every && i < TERN__XCHECK_OWN; i++) {
    const tern__xcheck_win *w = &x->own[i];
    if (w->end && w->end <= pos && w->ndisagree && !w->nagree) return 1;
  }
  return 0;
}

int tern__xcheck_own(const tern__xcheck *x, uint64_t end, uint8_t h[16]) {
  if (!x->every || !end) return 0;
  const tern__xcheck_win *w = &x->own[(end / x->every) % TERN__XCHECK_OWN];
  if (w->end != end) return 0;
  memcpy(h, w->h, 16);
  return 1;
}

void tern__xcheck_settle(tern__xcheck *x, uint64_t end) {
  if (!x->every || !end) return;
  tern__xcheck_win *w = slot(x, end);
  if (w->end != end) return;
  w->ndisagree = 0;
  /* And what waits for it in the ring: it would vote again. */
  for (size_t i = 0; i < TERN__XCHECK_HEARD; i++)
    if (x->heard[i].end == end) x->heard[i].end = 0;
}
