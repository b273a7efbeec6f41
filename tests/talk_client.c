/*
 * talk_client: one side of a steady conversation, for the network tests
 * (tests/paths_test.sh, tests/tcp_test.sh), on the public API only, like
 * any app.
 *
 * It sends "<n>" to PEER at RATE per second for SECONDS, receives what PEER
 * sends, and at the end prints one line of facts the test checks:
 *
 *   sent N acked A recv R dups D reordered O connects C migrations M
 *   drops X maxgap_ms G gap_after_mark_ms T connect_ms K tcp_connects P
 *   on_tcp_end E
 *
 * recv counts distinct messages from PEER; dups those handed over twice;
 * reordered those that came after a higher number; maxgap_ms the longest
 * silence between two messages from PEER; gap_after_mark_ms the time from
 * the last SIGUSR2 (the test marks "the path changes now") to the next
 * message from PEER; connect_ms the time from tern_client_connect() to the
 * first CONNECTED; tcp_connects the sessions made over TCP; on_tcp_end 1 if
 * the session ran over TCP at the end. SIGUSR1 calls
 * tern_client_network_changed(). It waits up to 10 s after the last send
 * for the last acks and messages.
 *
 *   talk_client --relay HOST:PORT --relay-key HEX --key FILE --user NAME
 *               --peer NAME --rate R --seconds S [--expect N]
 *               [--relay-tcp PORT] [--udp-retry MS]
 */
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tern/tern.h"

static volatile sig_atomic_t changed, marked;

static void on_usr1(int sig) {
  (void)sig;
  changed = 1;
}

static void on_usr2(int sig) {
  (void)sig;
  marked = 1;
}

static uint64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

int main(int argc, char **argv) {
  const char *relay = NULL, *relay_key = NULL, *key_path = NULL, *user = NULL, *peer = NULL;
  double rate = 50, seconds = 10;
  long expect = -1, relay_tcp = 0, udp_retry = 0;
  static const struct option opts[] = {
      {"relay", required_argument, 0, 'r'}, {"relay-key", required_argument, 0, 'K'},
      {"key", required_argument, 0, 'k'},   {"user", required_argument, 0, 'u'},
      {"peer", required_argument, 0, 'p'},  {"rate", required_argument, 0, 'R'},
      {"seconds", required_argument, 0, 's'}, {"expect", required_argument, 0, 'e'},
      {"relay-tcp", required_argument, 0, 't'}, {"udp-retry", required_argument, 0, 'U'},
      {0, 0, 0, 0}};
  int o;
  while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (o) {
      case 'r': relay = optarg; break;
      case 'K': relay_key = optarg; break;
      case 'k': key_path = optarg; break;
      case 'u': user = optarg; break;
      case 'p': peer = optarg; break;
      case 'R': rate = atof(optarg); break;
      case 's': seconds = atof(optarg); break;
      case 'e': expect = atol(optarg); break;
      case 't': relay_tcp = atol(optarg); break;
      case 'U': udp_retry = atol(optarg); break;
      default: return 2;
    }
  }
  if (!relay || !relay_key || !key_path || !user || !peer || rate <= 0 || seconds <= 0) {
    fprintf(stderr, "talk_client: missing arguments\n");
    return 2;
  }
  tern_client_config cfg;
  tern_client_config_default(&cfg);
  static char host[256];
  const char *colon = strrchr(relay, ':');
  if (!colon || (size_t)(colon - relay) >= sizeof host) return 2;
  memcpy(host, relay, (size_t)(colon - relay));
  host[colon - relay] = 0;
  cfg.relay_host = host;
  cfg.relay_port = (uint16_t)atoi(colon + 1);
  cfg.user = user;
  cfg.keepalive_off = 1; /* the conversation keeps the path busy */
  cfg.relay_tcp_port = (uint16_t)relay_tcp;
  if (udp_retry > 0) cfg.udp_retry_ms = (uint32_t)udp_retry;
  if (tern_key_from_hex(relay_key, cfg.relay_public_key) != 0 ||
      tern_keypair_load(key_path, &cfg.keypair) != 0) {
    fprintf(stderr, "talk_client: bad relay key or key file\n");
    return 2;
  }
  signal(SIGUSR1, on_usr1);
  signal(SIGUSR2, on_usr2);
  tern_client *c;
  uint64_t started = 0, connect_ms = 0;
  int rc = tern_client_new(&c, &cfg);
  if (rc == 0) {
    started = now_ms();
    rc = tern_client_connect(c);
  }
  if (rc) {
    fprintf(stderr, "talk_client: %s\n", tern_strerror(rc));
    return 1;
  }
  long total = (long)(rate * seconds);
  if (expect < 0) expect = total;
  uint8_t *seen = calloc((size_t)expect + 1, 1);
  long sent = 0, acked = 0, recv = 0, dups = 0, reordered = 0, drops = 0, last = 0;
  uint64_t t0 = 0, last_msg = 0, maxgap = 0, mark_at = 0, gap_after_mark = 0;
  uint64_t end = 0;
  int connected = 0;
  /* Bounded: a client that never connects gives up after 15 s. */
  uint64_t give_up = now_ms() + 15000;
  for (;;) {
    uint64_t now = now_ms();
    if (!t0 && now >= give_up) {
      fprintf(stderr, "talk_client: never connected\n");
      break;
    }
    if (changed) {
      changed = 0;
      tern_client_network_changed(c);
    }
    if (marked) {
      marked = 0;
      mark_at = now;
      gap_after_mark = 0;
    }
    if (connected && !t0) t0 = now;
    while (t0 && sent < total && now >= t0 + (uint64_t)(sent * 1000.0 / rate)) {
      char body[32];
      int n = snprintf(body, sizeof body, "%ld", sent + 1);
      if (tern_client_send(c, peer, body, (size_t)n, NULL) != 0) break;
      sent++;
    }
    if (t0 && sent == total && !end) end = now + 10000;
    if (end && (now >= end || (acked == total && recv >= expect))) break;
    int srv = tern_client_service(c, 5);
    if (srv < 0) {
      fprintf(stderr, "talk_client: tern_client_service: %s\n", tern_strerror(srv));
      break;
    }
    tern_event ev;
    while (tern_client_next_event(c, &ev) == 1) {
      if (ev.type == TERN_EV_CONNECTED) {
        if (!connected) connect_ms = now_ms() - started;
        connected = 1;
      }
      else if (ev.type == TERN_EV_DISCONNECTED) drops++;
      else if (ev.type == TERN_EV_SENT) acked++;
      else if (ev.type == TERN_EV_MESSAGE && strcmp(ev.user, peer) == 0) {
        char num[32];
        size_t n = ev.body_len < sizeof num - 1 ? ev.body_len : sizeof num - 1;
        memcpy(num, ev.body, n);
        num[n] = 0;
        long k = atol(num);
        uint64_t at = now_ms();
        if (k < 1 || k > expect) continue;
        if (seen[k]) {
          dups++;
          continue;
        }
        seen[k] = 1;
        recv++;
        if (k < last) reordered++;
        last = k;
        if (last_msg && at - last_msg > maxgap) maxgap = at - last_msg;
        last_msg = at;
        if (mark_at && !gap_after_mark) gap_after_mark = at - mark_at;
      }
    }
  }
  tern_client_stats st;
  tern_client_get_stats(c, &st);
  printf("sent %ld acked %ld recv %ld dups %ld reordered %ld connects %llu migrations %llu drops %ld "
         "maxgap_ms %llu gap_after_mark_ms %llu connect_ms %llu tcp_connects %llu on_tcp_end %llu\n",
         sent, acked, recv, dups, reordered, (unsigned long long)st.connects,
         (unsigned long long)st.migrations, drops, (unsigned long long)maxgap,
         (unsigned long long)gap_after_mark, (unsigned long long)connect_ms,
         (unsigned long long)st.connects_tcp, (unsigned long long)st.on_tcp);
  fflush(stdout);
  tern_client_free(c);
  free(seen);
  return 0;
}
