#include "loop.h"
#include "tern_test.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void loop_relay_config(loop *l, tern_relay_config *rc) {
  memset(l, 0, sizeof(*l));
  cr_assert_eq(tern_keypair_generate(&l->relay_kp), 0);
  tern_relay_config_default(rc);
  rc->bind_host = "127.0.0.1";
  rc->port = 0;
  rc->keypair = l->relay_kp;
}

void loop_start_relay(loop *l, const tern_relay_config *rc) {
  int rc2 = tern_relay_new(&l->relay, rc);
  cr_assert_eq(rc2, 0, "tern_relay_new: %s", tern_strerror(rc2));
  cr_assert_neq(tern_relay_port(l->relay), 0);
}

void loop_start(loop *l, tern_relay_auth_fn auth, void *auth_ctx, uint32_t hs_timeout_ms) {
  tern_relay_config rc;
  loop_relay_config(l, &rc);
  rc.auth = auth;
  rc.auth_ctx = auth_ctx;
  if (hs_timeout_ms) rc.handshake_timeout_ms = hs_timeout_ms;
  loop_start_relay(l, &rc);
}

void loop_client_config(loop *l, tern_client_config *cfg, const char *user) {
  tern_client_config_default(cfg);
  cfg->relay_host = "127.0.0.1";
  cfg->relay_port = tern_relay_port(l->relay);
  memcpy(cfg->relay_public_key, l->relay_kp.public_key, TERN_KEY_BYTES);
  cr_assert_eq(tern_keypair_generate(&cfg->keypair), 0);
  cfg->user = user;
}

size_t loop_add_client(loop *l, const tern_client_config *cfg) {
  cr_assert_lt(l->nclients, LOOP_MAX_CLIENTS);
  tern_client *c;
  int rc = tern_client_new(&c, cfg);
  cr_assert_eq(rc, 0, "tern_client_new: %s", tern_strerror(rc));
  rc = tern_client_connect(c);
  cr_assert_eq(rc, 0, "tern_client_connect: %s", tern_strerror(rc));
  l->clients[l->nclients] = c;
  return l->nclients++;
}

void loop_add_pair(loop *l, size_t *a, size_t *b) {
  tern_client_config ca, cb;
  loop_client_config(l, &ca, "alice");
  loop_client_config(l, &cb, "bob");
  *a = loop_add_client(l, &ca);
  *b = loop_add_client(l, &cb);
  loop_event ev;
  cr_assert(loop_wait(l, *a, TERN_EV_CONNECTED, 5000, &ev), "alice did not connect");
  cr_assert_str_eq(ev.user, "alice");
  cr_assert(loop_wait(l, *b, TERN_EV_CONNECTED, 5000, &ev), "bob did not connect");
  cr_assert_str_eq(ev.user, "bob");
}

void loop_pump(loop *l) {
  if (l->relay) cr_assert_eq(tern_relay_service(l->relay, 0), 0);
  for (size_t i = 0; i < l->nclients; i++)
    if (l->clients[i]) cr_assert_geq(tern_client_service(l->clients[i], 0), 0);
}

int loop_wait(loop *l, size_t i, tern_event_type type, int timeout_ms, loop_event *out) {
  uint64_t end = tt_now_ms() + (uint64_t)timeout_ms;
  memset(out, 0, sizeof(*out));
  free(l->last_body);
  l->last_body = NULL;
  while (tt_now_ms() < end) {
    if (l->relay) cr_assert_eq(tern_relay_service(l->relay, 1), 0);
    for (size_t k = 0; k < l->nclients; k++) {
      if (!l->clients[k]) continue;
      cr_assert_geq(tern_client_service(l->clients[k], k == i ? 1 : 0), 0);
    }
    tern_event ev;
    while (tern_client_next_event(l->clients[i], &ev) == 1) {
      if (ev.type != type) continue;
      out->type = ev.type;
      out->error = ev.error;
      out->cmid = ev.cmid;
      out->seq = ev.seq;
      out->retry_ms = ev.retry_ms;
      snprintf(out->user, sizeof(out->user), "%s", ev.user ? ev.user : "");
      out->body_len = ev.body_len;
      out->body = l->last_body = malloc(ev.body_len + 1);
      cr_assert_not_null(out->body);
      if (ev.body_len) memcpy(out->body, ev.body, ev.body_len);
      return 1;
    }
  }
  return 0;
}

void loop_stop(loop *l) {
  for (size_t i = 0; i < l->nclients; i++) tern_client_free(l->clients[i]);
  tern_relay_free(l->relay);
  free(l->last_body);
  memset(l, 0, sizeof(*l));
}
