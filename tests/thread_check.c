/*
 * thread_check: thread mode (lib/client/thread.c) on the public API only,
 * as a plain program so that it also runs under ThreadSanitizer (the
 * Criterion runner does not; scripts/test.sh --tsan). A relay serviced on
 * the main thread, two clients on threads of their own; three threads send
 * 10,000 messages through one of them. Checked: every message arrives
 * exactly once and in order per sending thread, every callback runs on the
 * client's own thread, the app's thread may not service a client that has
 * one, and a stop then a start loses nothing. Exit 0 if all holds, 1 with
 * the reason if not.
 */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tern/tern.h"

enum { SENDERS = 3, TOTAL = 10000, LATER = 200 };

static void fail(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "thread_check: FAIL: ");
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\n");
  va_end(ap);
  exit(1);
}

static uint64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

typedef struct inbox {
  pthread_mutex_t mu;
  int next[SENDERS + 1]; /* the number expected next from each sender (+1: the later batch) */
  int got, bad, connected;
  char why[160];
  pthread_t cb_thread;
  int cb_threads;
} inbox;

static void on_event(void *ctx, const tern_event *ev) {
  inbox *in = ctx;
  pthread_mutex_lock(&in->mu);
  if (!in->cb_threads || !pthread_equal(in->cb_thread, pthread_self())) {
    in->cb_thread = pthread_self();
    in->cb_threads++;
  }
  if (ev->type == TERN_EV_CONNECTED) in->connected++;
  if (ev->type == TERN_EV_MESSAGE) {
    int t = -1, k = -1;
    char body[32];
    size_t n = ev->body_len < sizeof body - 1 ? ev->body_len : sizeof body - 1;
    memcpy(body, ev->body, n);
    body[n] = 0;
    if (sscanf(body, "s%d-%d", &t, &k) != 2 || t < 0 || t > SENDERS || k != in->next[t]) {
      if (!in->bad) snprintf(in->why, sizeof in->why, "got '%s' out of turn", body);
      in->bad++;
    } else {
      in->next[t]++;
      in->got++;
    }
  }
  pthread_mutex_unlock(&in->mu);
}

typedef struct sender {
  tern_client *c;
  int id, n, errors;
} sender;

static void *send_main(void *p) {
  sender *s = p;
  for (int k = 0; k < s->n; k++) {
    char body[32];
    int len = snprintf(body, sizeof body, "s%d-%d", s->id, k);
    if (tern_client_send(s->c, "bob", body, (size_t)len, NULL) != 0) s->errors++;
  }
  return NULL;
}

static int count(inbox *in, int connected) {
  pthread_mutex_lock(&in->mu);
  int n = connected ? in->connected : in->got;
  pthread_mutex_unlock(&in->mu);
  return n;
}

/* Services the relay until `in` has `want` (messages, or connections). */
static void relay_until(tern_relay *r, inbox *in, int connected, int want, int ms) {
  uint64_t end = now_ms() + (uint64_t)ms;
  while (count(in, connected) < want && now_ms() < end)
    if (tern_relay_service(r, 5) != 0) fail("tern_relay_service");
}

int main(void) {
  tern_relay_config rc;
  tern_relay_config_default(&rc);
  rc.bind_host = "127.0.0.1";
  rc.port = 0;
  if (tern_keypair_generate(&rc.keypair) != 0) fail("keypair");
  tern_relay *r;
  if (tern_relay_new(&r, &rc) != 0) fail("tern_relay_new");
  tern_client *c[2];
  static inbox in[2] = {{.mu = PTHREAD_MUTEX_INITIALIZER}, {.mu = PTHREAD_MUTEX_INITIALIZER}};
  const char *names[2] = {"alice", "bob"};
  for (int i = 0; i < 2; i++) {
    tern_client_config cfg;
    tern_client_config_default(&cfg);
    cfg.relay_host = "127.0.0.1";
    cfg.relay_port = tern_relay_port(r);
    memcpy(cfg.relay_public_key, rc.keypair.public_key, TERN_KEY_BYTES);
    if (tern_keypair_generate(&cfg.keypair) != 0) fail("keypair");
    cfg.user = names[i];
    if (tern_client_new(&c[i], &cfg) != 0) fail("tern_client_new");
    if (tern_client_start(c[i], on_event, &in[i]) != 0) fail("tern_client_start");
    if (tern_client_connect(c[i]) != 0) fail("tern_client_connect");
  }
  if (tern_client_start(c[0], on_event, &in[0]) != TERN_EINVAL) fail("a client started twice");
  if (tern_client_service(c[0], 0) != TERN_EINVAL) fail("serviced from the app's thread in thread mode");
  relay_until(r, &in[0], 1, 1, 5000);
  relay_until(r, &in[1], 1, 1, 5000);
  if (!count(&in[0], 1) || !count(&in[1], 1)) fail("the clients did not connect on their threads");

  pthread_t th[SENDERS];
  sender s[SENDERS];
  for (int i = 0; i < SENDERS; i++) {
    s[i] = (sender){.c = c[0], .id = i, .n = TOTAL / SENDERS + (i < TOTAL % SENDERS)};
    if (pthread_create(&th[i], NULL, send_main, &s[i]) != 0) fail("pthread_create");
  }
  relay_until(r, &in[1], 0, TOTAL, 60000);
  for (int i = 0; i < SENDERS; i++) {
    pthread_join(th[i], NULL);
    if (s[i].errors) fail("sender %d: %d sends failed", i, s[i].errors);
  }
  if (in[1].bad) fail("%d messages out of order or twice: %s", in[1].bad, in[1].why);
  if (in[1].got != TOTAL) fail("bob got %d of %d", in[1].got, TOTAL);
  if (in[1].cb_threads != 1 || pthread_equal(in[1].cb_thread, pthread_self()))
    fail("callbacks ran on %d threads (want 1, not the app's)", in[1].cb_threads);

  /* Stopped, bob's events wait; started again, they come. */
  if (tern_client_stop(c[1]) != 0) fail("tern_client_stop");
  if (tern_client_stop(c[1]) != TERN_EINVAL) fail("stopped twice");
  sender later = {.c = c[0], .id = SENDERS, .n = LATER};
  send_main(&later);
  uint64_t end = now_ms() + 500;
  while (now_ms() < end)
    if (tern_relay_service(r, 5) != 0) fail("tern_relay_service");
  if (count(&in[1], 0) != TOTAL) fail("events were handed over while stopped");
  in[1].cb_threads = 0;
  if (tern_client_start(c[1], on_event, &in[1]) != 0) fail("tern_client_start again");
  relay_until(r, &in[1], 0, TOTAL + LATER, 20000);
  if (in[1].bad || in[1].got != TOTAL + LATER)
    fail("after a stop and a start bob got %d of %d (%s)", in[1].got, TOTAL + LATER, in[1].why);

  tern_event e = {.type = TERN_EV_MESSAGE, .user = "alice", .body = (const uint8_t *)"hi", .body_len = 2};
  tern_event *copy;
  if (tern_event_dup(&e, &copy) != 0 || strcmp(copy->user, "alice") != 0 || copy->user == e.user ||
      copy->body == e.body || memcmp(copy->body, "hi", 2) != 0)
    fail("tern_event_dup");
  tern_event_free(copy);
  tern_client_free(c[0]); /* stops its thread */
  tern_client_free(c[1]);
  tern_relay_free(r);
  printf("thread_check: PASS (%d messages from %d threads, a stop and a start)\n", TOTAL + LATER, SENDERS);
  return 0;
}
