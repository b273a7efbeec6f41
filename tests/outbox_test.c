/*
 * The app's view of its outbox (tern_client_outbox_each) and its own
 * message ids (tern_client_send_id), on the public API: what waits for the
 * relay and what waits for its receipt, after a restart too, and a resend
 * from the UI that never sends twice.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "loop.h"
#include "tmpdir.h"
#include "tern/tern.h"

typedef struct seen {
  int n;
  uint64_t cmid[8];
  tern_outbox_state state[8];
  char to[8][TERN_USER_MAX + 1], app[8][TERN_APP_ID_MAX + 1];
  size_t len[8];
} seen;

static int keep(void *ctx, const tern_outbox_item *it) {
  seen *s = ctx;
  if (s->n < 8) {
    s->cmid[s->n] = it->cmid;
    s->state[s->n] = it->state;
    s->len[s->n] = it->body_len;
    snprintf(s->to[s->n], sizeof s->to[0], "%s", it->to);
    snprintf(s->app[s->n], sizeof s->app[0], "%s", it->app_id);
  }
  s->n++;
  return 0;
}

static seen list(tern_client *c) {
  seen s;
  memset(&s, 0, sizeof s);
  int n = tern_client_outbox_each(c, keep, &s);
  cr_assert_eq(n, s.n, "tern_client_outbox_each: %d", n);
  return s;
}

Test(outbox, the_app_sees_what_waits_and_an_app_id_never_sends_twice, .timeout = 60) {
  char dir[256];
  cr_assert_eq(tern__test_mkdtemp(dir, sizeof dir), 0);
  loop l;
  loop_start(&l, NULL, NULL, 0);
  tern_client_config cfg;
  loop_client_config(&l, &cfg, "alice");
  cfg.state_dir = dir;
  tern_client *c;
  cr_assert_eq(tern_client_new(&c, &cfg), 0);
  /* Offline: the message waits; the same UI id again is the same message. */
  uint64_t first = 0, again = 0, other = 0;
  cr_assert_eq(tern_client_send_id(c, "bob", "hello", 5, "bubble-1", &first), 0);
  cr_assert_eq(tern_client_send_id(c, "bob", "hello", 5, "bubble-1", &again), 0);
  cr_assert_eq(again, first, "a second send with the same app id made a new message");
  cr_assert_eq(tern_client_send(c, "carol", "hey", 3, &other), 0);
  cr_assert_eq(tern_client_send_id(c, "bob", "x", 1, "", NULL), TERN_EINVAL);
  char longid[TERN_APP_ID_MAX + 2];
  memset(longid, 'a', sizeof longid - 1);
  longid[sizeof longid - 1] = 0;
  cr_assert_eq(tern_client_send_id(c, "bob", "x", 1, longid, NULL), TERN_EINVAL);
  cr_assert_eq(tern_client_outbox_size(c), 2);
  seen s = list(c);
  cr_assert_eq(s.n, 2);
  cr_assert_eq(s.cmid[0], first);
  cr_assert_eq(s.state[0], TERN_OUTBOX_WAITING);
  cr_assert_str_eq(s.to[0], "bob");
  cr_assert_str_eq(s.app[0], "bubble-1");
  cr_assert_eq(s.len[0], 5);
  cr_assert_str_eq(s.to[1], "carol");
  cr_assert_str_eq(s.app[1], "");
  /* The app restarts: the list and the id survive. */
  tern_client_free(c);
  cr_assert_eq(tern_client_new(&c, &cfg), 0);
  s = list(c);
  cr_assert_eq(s.n, 2);
  cr_assert_eq(s.cmid[0], first);
  cr_assert_eq(tern_client_send_id(c, "bob", "hello", 5, "bubble-1", &again), 0);
  cr_assert_eq(again, first);
  cr_assert_eq(tern_client_outbox_size(c), 2);
  /* Online: SENT, then DELIVERED once bob has it. */
  cr_assert_eq(tern_client_connect(c), 0);
  l.clients[l.nclients++] = c;
  size_t a = l.nclients - 1;
  loop_event ev;
  cr_assert(loop_wait(&l, a, TERN_EV_SENT, 5000, &ev));
  cr_assert(loop_wait(&l, a, TERN_EV_SENT, 5000, &ev));
  s = list(c);
  cr_assert_eq(s.n, 2);
  cr_assert_eq(s.state[0], TERN_OUTBOX_SENT, "stored by the relay but listed as waiting");
  tern_client_config cb;
  loop_client_config(&l, &cb, "bob");
  size_t b = loop_add_client(&l, &cb);
  cr_assert(loop_wait(&l, b, TERN_EV_MESSAGE, 5000, &ev));
  cr_assert(loop_wait(&l, a, TERN_EV_DELIVERED, 5000, &ev));
  cr_assert_eq(ev.cmid, first);
  s = list(c);
  cr_assert_eq(s.n, 1, "a delivered message is still listed");
  cr_assert_str_eq(s.to[0], "carol");
  loop_stop(&l);
  tern__test_rmtree(dir);
}
