/*
 * Names resolved in the background (lib/io/resolver.c, c-ares) and a
 * client that always tries to be online (lib/client/conn.c): a slow DNS
 * server does not hold up sends or the service loop, a name that does not
 * resolve and a relay that does not exist yet are failures like any other,
 * reported with the time of the next try, and retried until they work.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "loop.h"
#include "slowdns.h"
#include "tern_test.h"
#include "tern/tern.h"

TestSuite(resolve, .timeout = 120);

static char servers[64];

/* The client's log (tern_client_config.log), kept for the checks. */
static char logged[8192];
static void keep_log(void *ctx, int level, const char *line) {
  (void)ctx;
  size_t n = strlen(logged);
  snprintf(logged + n, sizeof logged - n, "%d %s\n", level, line);
}

/* A client of the loop's relay found by `name` through the DNS server. */
static size_t add_named(loop *l, const char *user, const char *name, uint16_t dns_port) {
  tern_client_config cfg;
  loop_client_config(l, &cfg, user);
  cfg.relay_host = name;
  snprintf(servers, sizeof servers, "127.0.0.1:%u", dns_port);
  cfg.dns_servers = servers;
  cfg.resolve_timeout_ms = 20000;
  return loop_add_client(l, &cfg);
}

Test(resolve, a_slow_dns_server_holds_up_neither_sends_nor_the_loop) {
  uint16_t dport;
  slowdns *dns = slowdns_start(5000, 0x7F000001, &dport);
  cr_assert_not_null(dns);
  loop l;
  loop_start(&l, NULL, NULL, 0);
  tern_client_config cb;
  loop_client_config(&l, &cb, "bob");
  size_t b = loop_add_client(&l, &cb);
  uint64_t t0 = tt_now_ms();
  size_t a = add_named(&l, "alice", "relay.tern.test", dport);
  loop_event ev;
  cr_assert(loop_wait(&l, b, TERN_EV_CONNECTED, 5000, &ev));
  /* alice is looking the relay up: every call returns at once. */
  uint64_t worst = 0;
  for (int i = 0; i < 20; i++) {
    uint64_t s = tt_now_ms();
    char text[16];
    snprintf(text, sizeof text, "m%d", i);
    cr_assert_eq(tern_client_send(l.clients[a], "bob", text, strlen(text), NULL), 0);
    cr_assert_geq(tern_client_service(l.clients[a], 0), 0);
    uint64_t took = tt_now_ms() - s;
    if (took > worst) worst = took;
    usleep(50 * 1000);
  }
  cr_assert_lt(worst, 100, "a send or service call took %llu ms during the lookup",
               (unsigned long long)worst);
  cr_assert_geq(slowdns_queries(dns), 1, "the client never asked the DNS server");
  cr_assert(loop_wait(&l, a, TERN_EV_CONNECTED, 10000, &ev), "alice never connected");
  uint64_t at = tt_now_ms() - t0;
  cr_assert_geq(at, 4500, "connected after %llu ms: the 5 s lookup was not used", (unsigned long long)at);
  for (int i = 0; i < 20; i++) {
    cr_assert(loop_wait(&l, b, TERN_EV_MESSAGE, 5000, &ev), "m%d never arrived", i);
    char want[16];
    snprintf(want, sizeof want, "m%d", i);
    cr_assert_eq(ev.body_len, strlen(want));
    cr_assert_arr_eq(ev.body, want, ev.body_len);
  }
  loop_stop(&l);
  slowdns_stop(dns);
}

Test(resolve, a_name_that_does_not_resolve_is_retried_with_the_backoff) {
  uint16_t dport;
  slowdns *dns = slowdns_start(0, 0, &dport); /* NXDOMAIN for everything */
  cr_assert_not_null(dns);
  loop l;
  loop_start(&l, NULL, NULL, 0);
  tern_client_config cfg;
  loop_client_config(&l, &cfg, "alice");
  cfg.relay_host = "nowhere.tern.test";
  snprintf(servers, sizeof servers, "127.0.0.1:%u", dport);
  cfg.dns_servers = servers;
  cfg.reconnect_base_ms = 100;
  cfg.reconnect_cap_ms = 400;
  cfg.log = keep_log;
  logged[0] = 0;
  size_t a = loop_add_client(&l, &cfg);
  loop_event ev;
  for (int i = 0; i < 3; i++) {
    cr_assert(loop_wait(&l, a, TERN_EV_DISCONNECTED, 5000, &ev), "failure %d was not reported", i);
    cr_assert_eq(ev.error, TERN_EADDR, "failure %d: %s", i, tern_strerror(ev.error));
    cr_assert_leq(ev.retry_ms, 400, "retry in %llu ms, over the cap", (unsigned long long)ev.retry_ms);
  }
  cr_assert_geq(slowdns_queries(dns), 3, "the name was not looked up again");
  cr_assert(strstr(logged, "1 no address for nowhere.tern.test"), "the log does not say why:\n%s", logged);
  cr_assert(strstr(logged, "next try in"), "the log does not say when:\n%s", logged);
  /* Offline by request: no more tries. */
  cr_assert_eq(tern_client_disconnect(l.clients[a]), 0);
  cr_assert(loop_wait(&l, a, TERN_EV_DISCONNECTED, 2000, &ev));
  cr_assert_eq(ev.retry_ms, 0);
  loop_stop(&l);
  slowdns_stop(dns);
}

/* A UDP port nothing listens on now (bound, read, and closed again). */
static uint16_t free_port(void) {
  int fd = socket(AF_INET, SOCK_DGRAM, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t sl = sizeof sa;
  cr_assert_eq(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
  getsockname(fd, (struct sockaddr *)&sa, &sl);
  close(fd);
  return ntohs(sa.sin_port);
}

Test(resolve, a_client_started_before_its_relay_delivers_once_the_relay_is_up) {
  loop l;
  tern_relay_config rc;
  loop_relay_config(&l, &rc); /* the key, not the relay yet */
  rc.port = free_port();
  tern_client_config cfg;
  tern_client_config_default(&cfg);
  cfg.relay_host = "127.0.0.1";
  cfg.relay_port = rc.port;
  memcpy(cfg.relay_public_key, l.relay_kp.public_key, TERN_KEY_BYTES);
  cr_assert_eq(tern_keypair_generate(&cfg.keypair), 0);
  cfg.user = "alice";
  cfg.reconnect_cap_ms = 2000;
  size_t a = loop_add_client(&l, &cfg);
  cr_assert_eq(tern_client_send(l.clients[a], "bob", "queued", 6, NULL), 0);
  loop_event ev;
  cr_assert(loop_wait(&l, a, TERN_EV_DISCONNECTED, 6000, &ev), "the unanswered attempt was not reported");
  cr_assert_eq(ev.error, TERN_ETIMEDOUT);
  uint64_t t0 = tt_now_ms();
  while (tt_now_ms() < t0 + 5000) loop_pump(&l), usleep(10 * 1000);
  loop_start_relay(&l, &rc);
  tern_client_config cb;
  loop_client_config(&l, &cb, "bob");
  size_t b = loop_add_client(&l, &cb);
  cr_assert(loop_wait(&l, b, TERN_EV_MESSAGE, 15000, &ev), "the queued message never arrived");
  cr_assert_eq(ev.body_len, 6);
  cr_assert_arr_eq(ev.body, "queued", 6);
  loop_stop(&l);
}

/* A state directory that cannot be made: TERN_EIO, errno kept, and the
 * log names the path and the reason. */
Test(resolve, a_state_dir_that_cannot_be_made_is_named_in_the_log) {
  loop l;
  loop_start(&l, NULL, NULL, 0);
  tern_client_config cfg;
  loop_client_config(&l, &cfg, "alice");
  char file[] = "/tmp/tern-not-a-dir-XXXXXX";
  int fd = mkstemp(file);
  cr_assert_geq(fd, 0);
  close(fd);
  char dir[128];
  snprintf(dir, sizeof dir, "%s/state", file); /* under a plain file */
  cfg.state_dir = dir;
  cfg.log = keep_log;
  logged[0] = 0;
  tern_client *c;
  cr_assert_eq(tern_client_new(&c, &cfg), TERN_EIO);
  cr_assert_eq(errno, ENOTDIR, "errno %d", errno);
  cr_assert(strstr(logged, "0 cannot create the state directory") && strstr(logged, dir) &&
                strstr(logged, "Not a directory"),
            "the log does not name the path and the reason:\n%s", logged);
  unlink(file);
  loop_stop(&l);
}
