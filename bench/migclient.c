/*
 * migclient: one end of the migration bench (bench/migrate.sh): how long
 * after a client's address changes the next message is delivered, for
 *
 *   migrate    tern: the app calls tern_client_network_changed(); the
 *              session moves to a new socket without a new handshake
 *              (spec/wire.md §11);
 *   reconnect  tern as it was before migration existed: the link is
 *              dropped at once and rebuilt with a full handshake (ENet
 *              connect + Noise IK), no backoff. Done through the public
 *              API with tern_client_set_network(c, "net-<k>"), a network
 *              name not seen before, which drops the link and reconnects
 *              at once (what tern_client_network_changed() did before);
 *   tcp        the bench's TCP baseline (transport_tcp.c: TCP_NODELAY,
 *              crypto_kx + secretstream, the shape of TLS 1.3): the old
 *              connection is closed and a new one is opened, keyed and
 *              named (BP_HELLO) before the next message goes.
 *
 *   migclient --system migrate|reconnect|tcp --role mover|fixed
 *             --relay IP:PORT [--relay-key HEX] --name NAME --peer NAME
 *             [--rate R (50)] [--size B (100)] [--timeout S (120)]
 *             mover: [--changes N (15)] [--interval S (2)] [--warmup S (2)]
 *                    --switch CMD --switch CMD
 *             fixed: [--ready-file F]
 *
 * Both ends send to each other at --rate messages a second (evenly spaced)
 * from the moment they are connected. The mover, after --warmup seconds,
 * changes its address --changes times, --interval seconds apart: change k
 * runs the k-th --switch command (they alternate: the first moves to the
 * second path, the second back) through /bin/sh, which returns once the
 * kernel has the new address and route; t0_k is the moment it returns.
 * Then the mover tells its transport (above) and hands the next message to
 * it at once; that message is the first of epoch k and carries t0_k.
 *
 *   up_ms[k]   (printed by the fixed end) arrival of the first message of
 *              epoch k minus t0_k: the mover's traffic is flowing again;
 *   down_ms[k] (printed by the mover) arrival of the first message the
 *              fixed end sent at or after t0_k, minus t0_k: traffic to the
 *              mover is flowing again (includes up to one send interval of
 *              the fixed end's phase).
 *
 * A message: kind (1: BP_DATA or BP_END) | epoch (4) | seq (8) |
 * sent_ns (8) | t0_ns (8), big-endian, zero-padded to --size; the first 21
 * bytes are benchproto.h's bp_msg with `pair` holding the epoch. All stamps
 * are CLOCK_MONOTONIC, shared by every namespace.
 *
 * The end: after the last change and one more interval the mover sends
 * BP_END (seq = its count); the fixed end answers BP_END with its own count,
 * serves for 1.5 s more (tern: until its outbox is settled, at most 5 s) and
 * prints its JSON line; the mover prints its own when the answer arrives (or
 * after 10 s). Each counts received, lost (per the peer's count),
 * duplicates and out-of-order messages. tern ends also print
 * tern_client_stats.connects and .migrations and the link drops seen.
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "benchproto.h"
#include "tern/tern.h"
#include "transport.h"

extern char **environ;

enum { SYS_MIGRATE, SYS_RECONNECT, SYS_TCP };
#define MSG_T0_OFF BP_MSG_HEADER
#define MSG_MIN (BP_MSG_HEADER + 8)
#define MAX_CHANGES 200
#define SEEN_MAX (1u << 20)

typedef struct mig {
  int system;
  bool mover;
  const char *relay, *relay_key, *name, *peer;
  /* tern */
  tern_client *tc;
  int tern_connected, tern_drops;
  /* tcp */
  void *tcp;
  bench_transport_config tcfg;
  const char *tcp_names[1];
  uint64_t tcp_connects;
  /* traffic */
  size_t size;
  int64_t period_ns;
  uint8_t *body;
  uint64_t sent;
  uint32_t epoch;
  int64_t t0[MAX_CHANGES + 1];
  int64_t next_send_ns;
  /* receiving */
  uint8_t *seen;
  uint64_t received, dups, reordered, next_seq;
  bool peer_end;
  uint64_t peer_count;
  double up_ms[MAX_CHANGES + 1];   /* fixed: per epoch, -1 until seen */
  double down_ms[MAX_CHANGES + 1]; /* mover: per change, -1 until seen */
  double switch_ms[MAX_CHANGES + 1];
  int nchanges;
  bool failed;
} mig;

static void put_be64(uint8_t *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (56 - 8 * i));
}

static uint64_t get_be64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v = (v << 8) | p[i];
  return v;
}

/* ---- the transports ------------------------------------------------------ */

static int tern_open_client(mig *m) {
  char host[64];
  const char *colon = strrchr(m->relay, ':');
  if (!colon || (size_t)(colon - m->relay) >= sizeof host) return -1;
  memcpy(host, m->relay, (size_t)(colon - m->relay));
  host[colon - m->relay] = 0;
  tern_client_config cc;
  tern_client_config_default(&cc);
  cc.relay_host = host;
  cc.relay_port = (uint16_t)strtol(colon + 1, NULL, 10);
  if (!m->relay_key || tern_key_from_hex(m->relay_key, cc.relay_public_key) != 0) {
    fprintf(stderr, "migclient: tern needs --relay-key HEX\n");
    return -1;
  }
  if (tern_keypair_generate(&cc.keypair) != 0) return -1;
  cc.user = m->name;
  cc.state_dir = NULL;
  /* A fixed keepalive: no NAT-timeout probes on the side (the reconnect
   * variant names a new network each time, which would start them). */
  cc.keepalive_fixed_ms = 25000;
  int rc = tern_client_new(&m->tc, &cc);
  memset(&cc.keypair, 0, sizeof cc.keypair);
  if (rc) {
    fprintf(stderr, "migclient: tern_client_new: %s\n", tern_errname(rc));
    return -1;
  }
  rc = tern_client_connect(m->tc);
  if (rc) {
    fprintf(stderr, "migclient: tern_client_connect: %s\n", tern_errname(rc));
    return -1;
  }
  return 0;
}

static int tcp_open_client(mig *m) {
  m->tcp_names[0] = m->name;
  m->tcfg = (bench_transport_config){.relay = m->relay, .nclients = 1, .names = m->tcp_names,
                                     .connect_timeout_ms = 10000};
  m->tcp = bench_transport_tcp.open(&m->tcfg);
  if (!m->tcp) return -1;
  m->tcp_connects++;
  return 0;
}

static int xsend(mig *m, const uint8_t *body, size_t len) {
  if (m->system == SYS_TCP) return bench_transport_tcp.send(m->tcp, 0, m->peer, body, len);
  int rc = tern_client_send(m->tc, m->peer, body, len, NULL);
  if (rc) fprintf(stderr, "migclient: tern_client_send: %s\n", tern_errname(rc));
  return rc ? -1 : 0;
}

static void on_message(void *arg, int client, const char *from, const uint8_t *body, size_t len);

static int tern_drain(mig *m) {
  tern_event ev;
  for (int k = 0; k < 10000 && tern_client_next_event(m->tc, &ev) == 1; k++) {
    switch (ev.type) {
      case TERN_EV_MESSAGE: on_message(m, 0, ev.user, ev.body, ev.body_len); break;
      case TERN_EV_CONNECTED: m->tern_connected = 1; break;
      case TERN_EV_DISCONNECTED:
        m->tern_connected = 0;
        m->tern_drops++;
        break;
      case TERN_EV_FAILED:
        fprintf(stderr, "migclient: message %" PRIu64 " failed: %s\n", ev.cmid, tern_errname(ev.error));
        return -1;
      default: break;
    }
  }
  return 0;
}

/* Waits at most timeout_ms for traffic and handles what came. */
static int xpoll(mig *m, int timeout_ms) {
  if (m->system == SYS_TCP) return bench_transport_tcp.poll(m->tcp, timeout_ms, on_message, m);
  int t = tern_client_timeout_ms(m->tc);
  if (t >= 0 && t < timeout_ms) timeout_ms = t;
  struct pollfd p[64];
  int n = tern_client_pollfds(m->tc, p, 64);
  if (n < 0 || n > 64) return -1;
  if (timeout_ms > 0 && poll(p, (nfds_t)n, timeout_ms) < 0 && errno != EINTR) return -1;
  if (tern_client_service(m->tc, 0) < 0) return -1;
  return tern_drain(m);
}

static void xclose(mig *m) {
  if (m->tcp) bench_transport_tcp.close(m->tcp);
  m->tcp = NULL;
  if (m->tc) tern_client_free(m->tc);
  m->tc = NULL;
}

/* The transport's answer to an address change (see the top). */
static int on_change(mig *m, int k) {
  switch (m->system) {
    case SYS_MIGRATE: tern_client_network_changed(m->tc); return 0;
    case SYS_RECONNECT: {
      char net[32];
      snprintf(net, sizeof net, "net-%d", k);
      int rc = tern_client_set_network(m->tc, net);
      if (rc) fprintf(stderr, "migclient: tern_client_set_network: %s\n", tern_errname(rc));
      return rc ? -1 : 0;
    }
    default:
      bench_transport_tcp.close(m->tcp);
      m->tcp = NULL;
      return tcp_open_client(m);
  }
}

/* ---- traffic ------------------------------------------------------------- */

static int send_kind(mig *m, uint8_t kind, uint64_t seq) {
  bp_msg h = {kind, m->epoch, seq, bp_now_ns()};
  bp_msg_write(m->body, m->size, &h);
  put_be64(m->body + MSG_T0_OFF, (uint64_t)m->t0[m->epoch]);
  return xsend(m, m->body, m->size);
}

/* Sends what is due; the schedule restarts at each change (next_send_ns). */
static int send_due(mig *m) {
  int64_t now = bp_now_ns();
  for (int k = 0; k < 1000 && m->next_send_ns <= now; k++) {
    if (send_kind(m, BP_DATA, m->sent) < 0) return -1;
    m->sent++;
    m->next_send_ns += m->period_ns;
  }
  return 0;
}

static int wait_ms_until(const mig *m, int64_t deadline) {
  int64_t t = deadline < m->next_send_ns ? deadline : m->next_send_ns;
  int64_t ms = (t - bp_now_ns() + 999999) / 1000000;
  return ms < 0 ? 0 : ms > 50 ? 50 : (int)ms;
}

static void on_message(void *arg, int client, const char *from, const uint8_t *body, size_t len) {
  (void)client;
  mig *m = arg;
  int64_t now = bp_now_ns();
  bp_msg h;
  if (strcmp(from, m->peer) != 0 || len < MSG_MIN || bp_msg_read(body, len, &h) < 0) {
    fprintf(stderr, "migclient: unexpected message from %s (%zu bytes)\n", from, len);
    m->failed = true;
    return;
  }
  if (h.kind == BP_END) {
    m->peer_end = true;
    m->peer_count = h.seq;
    return;
  }
  if (h.seq >= SEEN_MAX) {
    m->failed = true;
    return;
  }
  if (m->seen[h.seq]) {
    m->dups++;
    return;
  }
  m->seen[h.seq] = 1;
  m->received++;
  /* Older than one already delivered: out of order (a gap is a loss). */
  if (h.seq < m->next_seq) m->reordered++;
  else m->next_seq = h.seq + 1;
  if (!m->mover) {
    /* The first message of epoch k delivered: up_ms[k]. */
    if (h.pair >= 1 && h.pair <= MAX_CHANGES && m->up_ms[h.pair] < 0) {
      m->up_ms[h.pair] = (double)(now - (int64_t)get_be64(body + MSG_T0_OFF)) / 1e6;
      if ((int)h.pair > m->nchanges) m->nchanges = (int)h.pair;
    }
  } else {
    /* The first message the fixed end sent at or after t0 of the latest change. */
    int k = (int)m->epoch;
    if (k >= 1 && m->down_ms[k] < 0 && h.sent_ns >= m->t0[k]) m->down_ms[k] = (double)(now - m->t0[k]) / 1e6;
  }
}

/* Runs CMD through /bin/sh and waits for it. Returns its exit status or -1. */
static int run_cmd(const char *cmd) {
  pid_t pid;
  char *argv[] = {"sh", "-c", (char *)cmd, NULL};
  if (posix_spawn(&pid, "/bin/sh", NULL, NULL, argv, environ) != 0) return -1;
  int st;
  while (waitpid(pid, &st, 0) < 0)
    if (errno != EINTR) return -1;
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Serves (sending what is due) until `deadline` or until done() holds. */
static int serve(mig *m, int64_t deadline, bool sending, bool (*done)(const mig *)) {
  while (bp_now_ns() < deadline && !(done && done(m))) {
    if (sending && send_due(m) < 0) return -1;
    if (xpoll(m, wait_ms_until(m, deadline)) < 0) return -1;
    if (m->failed) return -1;
  }
  return 0;
}

static bool got_end(const mig *m) { return m->peer_end; }
static bool connected(const mig *m) { return m->system == SYS_TCP || m->tern_connected; }
static bool settled(const mig *m) { return m->system == SYS_TCP || tern_client_outbox_size(m->tc) == 0; }

static void print_list(const char *key, const double *v, int from, int n) {
  printf(",\"%s\":[", key);
  for (int k = from; k <= n; k++) {
    if (v[k] < 0) printf("%snull", k > from ? "," : "");
    else printf("%s%.2f", k > from ? "," : "", v[k]);
  }
  printf("]");
}

static const char *system_name(int s) { return s == SYS_MIGRATE ? "migrate" : s == SYS_RECONNECT ? "reconnect" : "tcp"; }

static void report(mig *m) {
  uint64_t lost = m->peer_end && m->peer_count > m->received ? m->peer_count - m->received : 0;
  char peer_sent[24] = "null";
  if (m->peer_end) snprintf(peer_sent, sizeof peer_sent, "%" PRIu64, m->peer_count);
  printf("{\"system\":\"%s\",\"role\":\"%s\",\"sent\":%" PRIu64 ",\"received\":%" PRIu64
         ",\"peer_sent\":%s,\"lost\":%" PRIu64 ",\"duplicates\":%" PRIu64 ",\"reordered\":%" PRIu64,
         system_name(m->system), m->mover ? "mover" : "fixed", m->sent, m->received, peer_sent, lost,
         m->dups, m->reordered);
  if (m->system == SYS_TCP) {
    printf(",\"connects\":%" PRIu64, m->tcp_connects);
  } else if (m->tc) {
    tern_client_stats st;
    tern_client_get_stats(m->tc, &st);
    printf(",\"connects\":%" PRIu64 ",\"migrations\":%" PRIu64 ",\"link_drops\":%d", st.connects,
           st.migrations, m->tern_drops);
  }
  printf(",\"changes\":%d", m->nchanges);
  if (m->mover) {
    print_list("down_ms", m->down_ms, 1, m->nchanges);
    print_list("switch_ms", m->switch_ms, 1, m->nchanges);
  } else {
    print_list("up_ms", m->up_ms, 1, m->nchanges);
  }
  printf(",\"failed\":%s}\n", m->failed ? "true" : "false");
  fflush(stdout);
}

static void usage(void) {
  printf("usage: migclient --system migrate|reconnect|tcp --role mover|fixed --relay IP:PORT\n"
         "                 [--relay-key HEX] --name NAME --peer NAME [--rate R (50)] [--size B (100)]\n"
         "                 [--timeout S (120)] [--changes N (15)] [--interval S (2)] [--warmup S (2)]\n"
         "                 [--switch CMD --switch CMD] [--ready-file F]\n"
         "See the comment at the top of bench/migclient.c.\n");
}

int main(int argc, char **argv) {
  static mig m;
  m.system = -1;
  m.size = 100;
  double rate = 50, timeout = 120, interval = 2, warmup = 2;
  int changes = 15, nswitch = 0;
  const char *role = NULL, *ready = NULL, *sw[2] = {NULL, NULL};
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--help")) {
      usage();
      return 0;
    }
    if (i + 1 >= argc) goto bad;
    const char *a = argv[i], *v = argv[++i];
    if (!strcmp(a, "--system")) {
      m.system = !strcmp(v, "migrate") ? SYS_MIGRATE : !strcmp(v, "reconnect") ? SYS_RECONNECT
                 : !strcmp(v, "tcp")   ? SYS_TCP : -2;
    } else if (!strcmp(a, "--role")) role = v;
    else if (!strcmp(a, "--relay")) m.relay = v;
    else if (!strcmp(a, "--relay-key")) m.relay_key = v;
    else if (!strcmp(a, "--name")) m.name = v;
    else if (!strcmp(a, "--peer")) m.peer = v;
    else if (!strcmp(a, "--rate")) rate = strtod(v, NULL);
    else if (!strcmp(a, "--size")) m.size = strtoul(v, NULL, 10);
    else if (!strcmp(a, "--timeout")) timeout = strtod(v, NULL);
    else if (!strcmp(a, "--changes")) changes = atoi(v);
    else if (!strcmp(a, "--interval")) interval = strtod(v, NULL);
    else if (!strcmp(a, "--warmup")) warmup = strtod(v, NULL);
    else if (!strcmp(a, "--ready-file")) ready = v;
    else if (!strcmp(a, "--switch") && nswitch < 2) sw[nswitch++] = v;
    else goto bad;
  }
  if (m.system < 0 || !role || !m.relay || !m.name || !m.peer || rate <= 0 || timeout <= 0 ||
      m.size < MSG_MIN || m.size > 65536 || interval <= 0 || warmup < 0)
    goto bad;
  m.mover = !strcmp(role, "mover");
  if (!m.mover && strcmp(role, "fixed") != 0) goto bad;
  if (m.mover && (changes < 1 || changes > MAX_CHANGES || nswitch != 2)) goto bad;
  m.period_ns = (int64_t)(1e9 / rate);
  m.body = malloc(m.size);
  m.seen = calloc(SEEN_MAX, 1);
  if (!m.body || !m.seen) return 1;
  for (int k = 0; k <= MAX_CHANGES; k++) m.up_ms[k] = m.down_ms[k] = m.switch_ms[k] = -1;

  int64_t start = bp_now_ns(), end = start + (int64_t)(timeout * 1e9);
  int rc = m.system == SYS_TCP ? tcp_open_client(&m) : tern_open_client(&m);
  if (rc == 0 && m.system != SYS_TCP) {
    int64_t until = bp_now_ns() + 10000000000LL;
    rc = serve(&m, until < end ? until : end, false, connected);
    if (rc == 0 && !m.tern_connected) {
      fprintf(stderr, "migclient: not connected after 10 s\n");
      rc = -1;
    }
  }
  if (rc < 0) {
    fprintf(stderr, "migclient: %s %s: could not connect to %s\n", system_name(m.system), role, m.relay);
    xclose(&m);
    return 1;
  }
  if (ready) {
    FILE *f = fopen(ready, "w");
    if (f) fclose(f);
  }
  m.next_send_ns = bp_now_ns();
  if (m.mover) {
    int64_t t = bp_now_ns() + (int64_t)(warmup * 1e9);
    rc = serve(&m, t, true, NULL);
    for (int k = 1; rc == 0 && k <= changes; k++) {
      int64_t s0 = bp_now_ns();
      if (run_cmd(sw[(k - 1) % 2]) != 0) {
        fprintf(stderr, "migclient: change %d: the switch command failed\n", k);
        rc = -1;
        break;
      }
      m.t0[k] = bp_now_ns();
      m.switch_ms[k] = (double)(m.t0[k] - s0) / 1e6;
      m.epoch = (uint32_t)k;
      m.nchanges = k;
      if (on_change(&m, k) < 0) {
        fprintf(stderr, "migclient: change %d: the transport failed\n", k);
        rc = -1;
        break;
      }
      m.next_send_ns = bp_now_ns();
      t = m.t0[k] + (int64_t)(interval * 1e9);
      rc = serve(&m, t < end ? t : end, true, NULL);
      if (bp_now_ns() >= end) rc = -1;
    }
    if (rc == 0 && send_kind(&m, BP_END, m.sent) < 0) rc = -1;
    if (rc == 0) {
      int64_t until = bp_now_ns() + 10000000000LL;
      rc = serve(&m, until < end ? until : end, false, got_end);
    }
    if (!m.peer_end) fprintf(stderr, "migclient: mover: no BP_END from %s\n", m.peer);
  } else {
    rc = serve(&m, end, true, got_end);
    if (rc == 0 && m.peer_end) {
      if (send_kind(&m, BP_END, m.sent) < 0) rc = -1;
      int64_t t = bp_now_ns() + 1500000000LL;
      if (rc == 0) rc = serve(&m, t, false, NULL);
      t = bp_now_ns() + 3500000000LL;
      if (rc == 0) rc = serve(&m, t, false, settled);
    } else if (rc == 0) {
      fprintf(stderr, "migclient: fixed: no BP_END from %s within the timeout\n", m.peer);
    }
  }
  if (rc < 0) m.failed = true;
  report(&m);
  xclose(&m);
  free(m.body);
  free(m.seen);
  return m.failed || !m.peer_end ? 1 : 0;
bad:
  fprintf(stderr, "migclient: bad arguments (see --help)\n");
  return 2;
}
