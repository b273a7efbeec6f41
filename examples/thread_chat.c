/*
 * examples/thread_chat.c: the chat of chat.c in thread mode.
 *
 * A relay on 127.0.0.1 (a free port, open to any key, messages in memory)
 * serviced by this thread; alice and bob each run on a thread of their own
 * (tern_client_start) and call on_event() there. Bob answers alice from his
 * callback. Exits 0 once alice has bob's answer, 1 if it did not come
 * within 10 s.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <tern/tern.h>

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static int answered;

static void check(int rc, const char *what) {
  if (rc < 0) {
    fprintf(stderr, "thread_chat: %s: %s\n", what, tern_strerror(rc));
    exit(1);
  }
}

/* Runs on the client's own thread. ctx is the client itself. */
static void on_event(void *ctx, const tern_event *ev) {
  tern_client *self = ctx;
  if (ev->type != TERN_EV_MESSAGE) return;
  printf("%s: %.*s\n", ev->user, (int)ev->body_len, (const char *)ev->body);
  if (strcmp(ev->user, "alice") == 0) {
    check(tern_client_send(self, "alice", "hi alice", 8, NULL), "send"); /* any thread may send */
  } else {
    pthread_mutex_lock(&mu);
    answered = 1;
    pthread_mutex_unlock(&mu);
  }
}

static tern_client *start(const char *user, uint16_t port, const uint8_t *key) {
  tern_client_config cfg;
  tern_client_config_default(&cfg);
  cfg.relay_host = "127.0.0.1";
  cfg.relay_port = port;
  memcpy(cfg.relay_public_key, key, TERN_KEY_BYTES);
  check(tern_keypair_generate(&cfg.keypair), "keypair");
  cfg.user = user;
  tern_client *c;
  check(tern_client_new(&c, &cfg), "client");
  check(tern_client_start(c, on_event, c), "start");
  check(tern_client_connect(c), "connect");
  return c;
}

int main(void) {
  tern_relay_config rc;
  tern_relay_config_default(&rc);
  rc.bind_host = "127.0.0.1";
  rc.port = 0;
  check(tern_keypair_generate(&rc.keypair), "keypair");
  tern_relay *r;
  check(tern_relay_new(&r, &rc), "relay");
  tern_client *alice = start("alice", tern_relay_port(r), rc.keypair.public_key);
  tern_client *bob = start("bob", tern_relay_port(r), rc.keypair.public_key);
  check(tern_client_send(alice, "bob", "hello bob", 9, NULL), "send"); /* queued until online */
  time_t end = time(NULL) + 10;
  int done = 0;
  while (!done && time(NULL) < end) {
    check(tern_relay_service(r, 10), "relay");
    pthread_mutex_lock(&mu);
    done = answered;
    pthread_mutex_unlock(&mu);
  }
  tern_client_free(alice); /* stops its thread */
  tern_client_free(bob);
  tern_relay_free(r);
  if (!done) fprintf(stderr, "thread_chat: no answer within 10 s\n");
  return done ? 0 : 1;
}
