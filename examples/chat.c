/*
 * examples/chat.c: two users talking through a relay, all in one process.
 *
 * Starts a relay on 127.0.0.1 (a free port, open to any key, messages kept
 * in memory) and two clients, alice and bob. Alice writes to bob, bob
 * answers. Exits 0 once alice has bob's answer and the receipt (✓✓) for her
 * own message; 1 if either failed or did not come within 10 s.
 *
 * One thread drives all three objects from one poll() loop: each gives a
 * descriptor and a deadline and is serviced when either comes. That is the
 * poll-loop mode of <tern/tern.h>; poll_client.c shows it for one client.
 */
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <tern/tern.h>

static const char hello[] = "hello bob", reply[] = "hi alice";

/* Ends the program on a failed call: an example has no better plan. */
static int check(int rc, const char *what) {
  if (rc < 0) {
    fprintf(stderr, "chat: %s: %s (%s)\n", what, tern_strerror(rc), tern_errname(rc));
    exit(1);
  }
  return rc;
}

/* How many entries a *_pollfds call filled: all it needs, in the 32 given. */
static int fds_in(int needed, const char *who) {
  check(needed, who);
  if (needed > 32) check(TERN_ERESOURCE, who);
  return needed;
}

static tern_client *start_client(const char *user, uint16_t port, const uint8_t *relay_key) {
  tern_client_config cfg;
  tern_client_config_default(&cfg);
  cfg.relay_host = "127.0.0.1";
  cfg.relay_port = port;
  memcpy(cfg.relay_public_key, relay_key, TERN_KEY_BYTES);
  check(tern_keypair_generate(&cfg.keypair), "keypair");
  cfg.user = user; /* an open relay gives each client the name it asks for */
  tern_client *c;
  check(tern_client_new(&c, &cfg), "client");
  check(tern_client_connect(c), "connect"); /* returns at once */
  return c;
}

/* The sooner of two deadlines in ms, where -1 means none. */
static int sooner(int a, int b) { return a < 0 ? b : b < 0 ? a : a < b ? a : b; }

int main(void) {
  tern_relay_config rcfg;
  tern_relay_config_default(&rcfg);
  rcfg.bind_host = "127.0.0.1";
  rcfg.port = 0; /* no auth callback: open; no store_path: in memory */
  check(tern_keypair_generate(&rcfg.keypair), "keypair");
  tern_relay *relay;
  check(tern_relay_new(&relay, &rcfg), "relay");

  uint16_t port = tern_relay_port(relay);
  tern_client *alice = start_client("alice", port, rcfg.keypair.public_key);
  tern_client *bob = start_client("bob", port, rcfg.keypair.public_key);
  uint64_t hello_id;
  /* Sending works offline: the message waits in the outbox until connected. */
  check(tern_client_send(alice, "bob", hello, strlen(hello), &hello_id), "send");

  int got_reply = 0, delivered = 0, failed = 0;
  time_t give_up = time(NULL) + 10;
  while (!(got_reply && delivered) && !failed && time(NULL) < give_up) {
    /* What the three wait on, one after the other: a descriptor each with
     * epoll or kqueue, each socket with the poll() backend (a few each). */
    struct pollfd pf[96];
    int n = fds_in(tern_relay_pollfds(relay, pf, 32), "relay");
    n += fds_in(tern_client_pollfds(alice, pf + n, 32), "alice");
    n += fds_in(tern_client_pollfds(bob, pf + n, 32), "bob");
    int timeout = sooner(tern_relay_timeout_ms(relay),
                         sooner(tern_client_timeout_ms(alice), tern_client_timeout_ms(bob)));
    poll(pf, (nfds_t)n, sooner(timeout, 1000)); /* at least once a second, for give_up */
    check(tern_relay_service(relay, 0), "relay");
    check(tern_client_service(alice, 0), "alice");
    check(tern_client_service(bob, 0), "bob");

    tern_event ev;
    while (tern_client_next_event(bob, &ev) == 1) {
      if (ev.type == TERN_EV_MESSAGE) {
        printf("bob   <- %s: %.*s\n", ev.user, (int)ev.body_len, (const char *)ev.body);
        check(tern_client_send(bob, ev.user, reply, strlen(reply), NULL), "send");
      }
    }
    while (tern_client_next_event(alice, &ev) == 1) {
      if (ev.type == TERN_EV_SENT && ev.cmid == hello_id)
        printf("alice: message %llu ✓ (the relay has it)\n", (unsigned long long)ev.cmid);
      if (ev.type == TERN_EV_DELIVERED && ev.cmid == hello_id) {
        printf("alice: message %llu ✓✓ (bob has it)\n", (unsigned long long)ev.cmid);
        delivered = 1;
      }
      if (ev.type == TERN_EV_FAILED) failed = 1;
      if (ev.type == TERN_EV_MESSAGE) {
        printf("alice <- %s: %.*s\n", ev.user, (int)ev.body_len, (const char *)ev.body);
        got_reply = strcmp(ev.user, "bob") == 0 && ev.body_len == strlen(reply) &&
                    memcmp(ev.body, reply, ev.body_len) == 0;
      }
    }
  }
  tern_client_free(alice);
  tern_client_free(bob);
  tern_relay_free(relay);
  if (got_reply && delivered) return 0;
  fprintf(stderr, "chat: no exchange within 10 s (reply %d, receipt %d, failed %d)\n", got_reply,
          delivered, failed);
  return 1;
}
