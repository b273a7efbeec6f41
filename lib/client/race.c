/* Connection racing (race.h; RFC 8305). */
#include "client/race.h"

#include <string.h>

void tern__race_init(tern__race *r, const tern__addr *addrs, size_t n, uint16_t tcp_port, uint32_t stagger_ms, uint32_t tcp_after_ms, uint64_t now_ms) {
  memset(r, 0, sizeof(*r));
  if (n > TERN__RACE_ADDRS) n = TERN__RACE_ADDRS;
  for (size_t i = 0; i < n; i++) r->e[r->n++] = (tern__race_entry){.addr = addrs[i]};
  r->nudp = r->n;
  for (size_t i = 0; tcp_port && i < n; i++) {
    r->e[r->n] = (tern__race_entry){.addr = addrs[i], .tcp = 1};
    r->e[r->n++].addr.port = tcp_port;
  }
  r->stagger_ms = stagger_ms;
  r->next[0] = 0;
  r->next[1] = r->nudp;
  r->due[0] = now_ms;
  r->due[1] = now_ms + tcp_after_ms;
}

/* The end (one past the last entry) of lane k. */
static size_t lane_end(const tern__race *r, int k) { return k ? r->n : r->nudp; }

int tern__race_next(tern__race *r, uint64_t now_ms, size_t *idx) {
  for (int k = 0; k < 2; k++) {
    if (r->next[k] >= lane_end(r, k) || now_ms < r->due[k]) continue;
    *idx = r->next[k]++;
    r->e[*idx].state = 1;
    r->due[k] = now_ms + r->stagger_ms;
    r->last_start_ms = now_ms;
    return 1;
  }
  return 0;
}

void tern__race_failed(tern__race *r, size_t idx, uint64_t now_ms) {
  if (idx >= r->n || r->e[idx].state != 1) return;
  r->e[idx].state = 2;
  int k = r->e[idx].tcp;
  /* RFC 8305 §5: the next attempt need not wait out the delay when the
   * one before it failed. */
  if (r->next[k] == idx + 1 && r->due[k] > now_ms) r->due[k] = now_ms;
}

void tern__race_tcp_now(tern__race *r, uint64_t now_ms) {
  if (r->next[1] == r->nudp && r->due[1] > now_ms) r->due[1] = now_ms;
}

int tern__race_timeout(const tern__race *r, uint64_t now_ms) {
  int t = -1;
  for (int k = 0; k < 2; k++) {
    if (r->next[k] >= lane_end(r, k)) continue;
    int w = r->due[k] <= now_ms ? 0 : (int)(r->due[k] - now_ms);
    if (t < 0 || w < t) t = w;
  }
  return t;
}

int tern__race_lost(const tern__race *r) {
  for (size_t i = 0; i < r->n; i++)
    if (r->e[i].state != 2) return 0;
  return r->n > 0;
}
