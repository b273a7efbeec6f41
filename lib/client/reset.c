/*
 * The client's side of the restart notice (spec/wire.md §14): a RESET
 * datagram from the relay address of the open UDP session, carrying that
 * session's token, ends the session at once and reconnects without
 * backoff, reporting TERN_EV_DISCONNECTED with TERN_ERESET. Anything else
 * that looks like a RESET (wrong token, another source, no open session,
 * a session on TCP, the token of an earlier session) is ignored and
 * counted in stats.resets_ignored.
 */
#include "client/client_impl.h"

int tern__cl_on_reset(tern_client *c, const tern__addr *from, const uint8_t *data, size_t len) {
  uint8_t token[TERN__RESET_TOKEN_BYTES];
  if (!tern__reset_parse(data, len, token)) return 0;
  if (c->state == C_OPEN && !c->on_tcp && c->has_reset_token && tern__addr_equal(from, &c->relay_addr) &&
      sodium_memcmp(token, c->reset_token, sizeof(token)) == 0)
    c->reset_pending = 1;
  else
    c->stats.resets_ignored++;
  sodium_memzero(token, sizeof(token));
  return 1;
}

void tern__cl_take_reset(tern_client *c) {
  if (!c->reset_pending) return;
  c->reset_pending = 0;
  if (c->state != C_OPEN) return;
  cl_log(c, 2, "the relay restarted (RESET with this session's token): reconnecting at once");
  c->retry_now = 1;
  /* The relay has no such session any more: ENet's peer is let go at once. */
  tern__cl_drop(c, TERN_ERESET, TERN__LINK_CLOSE_NOW, TERN__DISC_GOODBYE);
}
