/*
 * drain_client: the clients of tests/drain_test.sh. Holds N tern clients
 * (N/2 pairs: <prefix>s<i> writes to <prefix>r<i>) against one ternd, says
 * READY once all are connected, then each sender sends M numbered messages,
 * one every INTERVAL ms, while the relay is drained and restarted under it.
 * It writes every connect (Unix ms) that follows a drain's disconnect to
 * OUT, and ends with one line:
 *   sent S unique U duplicated D reordered O lost L goaway G reconnected R
 * Exit 0 when every message arrived exactly once and in order, 1 if not,
 * 2 on an error (or when it has not finished after 120 s).
 *
 *   drain_client HOST PORT RELAY_KEY_HEX PREFIX N M INTERVAL_MS OUT
 */
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "tern/tern.h"

typedef struct dc {
  tern_client *c;
  int connected;
  int drained;       /* a drain's disconnect came; the next connect is counted */
  uint32_t next_send; /* sender: messages sent so far */
  uint32_t next_want; /* receiver: the number expected next */
} dc;

static uint64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint64_t wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

int main(int argc, char **argv) {
  if (argc != 9) {
    fprintf(stderr, "usage: drain_client HOST PORT RELAY_KEY_HEX PREFIX N M INTERVAL_MS OUT\n");
    return 2;
  }
  const char *host = argv[1], *prefix = argv[4];
  int port = atoi(argv[2]), n = atoi(argv[5]), m = atoi(argv[6]), interval = atoi(argv[7]);
  if (n < 2 || n % 2 || n > 20000 || m < 1 || interval < 1 || port < 1 || port > 65535) {
    fprintf(stderr, "drain_client: bad N, M, INTERVAL_MS or PORT\n");
    return 2;
  }
  FILE *out = fopen(argv[8], "w");
  uint8_t relay_key[TERN_KEY_BYTES];
  if (!out || tern_key_from_hex(argv[3], relay_key) != 0) {
    fprintf(stderr, "drain_client: cannot open %s or bad relay key\n", argv[8]);
    return 2;
  }
  /* About 5 descriptors a client: as many as the hard limit allows. */
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0) rl.rlim_cur = rl.rlim_max;
  if (setrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur < (rlim_t)n * 6 + 64) {
    fprintf(stderr, "drain_client: %d clients need about %d descriptors\n", n, n * 6 + 64);
    return 2;
  }
  dc *cl = calloc((size_t)n, sizeof(*cl));
  /* What to wait for: each client's tern_client_pollfds(), every round (one
   * descriptor each with epoll, its sockets with the poll() backend). */
  size_t cap = (size_t)n * 16;
  struct pollfd *pf = calloc(cap, sizeof(*pf));
  if (!cl || !pf) return 2;
  for (int i = 0; i < n; i++) {
    char name[TERN_USER_MAX + 1];
    snprintf(name, sizeof(name), "%s%c%d", prefix, i % 2 ? 'r' : 's', i / 2);
    tern_client_config cc;
    tern_client_config_default(&cc);
    cc.relay_host = host;
    cc.relay_port = (uint16_t)port;
    memcpy(cc.relay_public_key, relay_key, TERN_KEY_BYTES);
    if (tern_keypair_generate(&cc.keypair) != 0) return 2;
    cc.user = name;
    cc.state_dir = NULL;           /* the outbox in memory: this process lives throughout */
    cc.keepalive_fixed_ms = 25000; /* no NAT probes: not what is tested */
    int rc = tern_client_new(&cl[i].c, &cc);
    if (rc == 0) rc = tern_client_connect(cl[i].c);
    if (rc) {
      fprintf(stderr, "drain_client: client %d: %s\n", i, tern_errname(rc));
      return 2;
    }
  }
  uint64_t start = mono_ms(), ready_at = 0, next_round = 0;
  long dup = 0, reorder = 0, unique = 0, sent = 0, goaway = 0, reconnected = 0;
  int connected = 0, status = 2;
  for (;;) {
    uint64_t now = mono_ms();
    if (now - start > 120000) {
      fprintf(stderr, "drain_client: not finished after 120 s\n");
      break;
    }
    if (ready_at && unique + dup >= (long)(n / 2) * m && sent == (long)(n / 2) * m) {
      status = 0;
      break;
    }
    if (ready_at && now >= next_round) {
      /* Every sender's next message, whether online or not: the outbox
       * keeps it (what the drain must not lose). */
      for (int i = 0; i < n; i += 2) {
        if (cl[i].next_send >= (uint32_t)m) continue;
        char body[16], to[TERN_USER_MAX + 1];
        int len = snprintf(body, sizeof(body), "%u", cl[i].next_send);
        snprintf(to, sizeof(to), "%sr%d", prefix, i / 2);
        uint64_t cmid;
        if (tern_client_send(cl[i].c, to, body, (size_t)len, &cmid) == 0) {
          cl[i].next_send++;
          sent++;
        }
      }
      next_round = now + (uint64_t)interval;
    }
    int wait = ready_at ? (int)(next_round > now ? next_round - now : 0) : 20;
    if (wait > 20) wait = 20;
    size_t npf = 0;
    for (int i = 0; i < n; i++) {
      int k = tern_client_pollfds(cl[i].c, pf + npf, cap - npf);
      if (k > 0 && (size_t)k <= cap - npf) npf += (size_t)k;
    }
    if (poll(pf, (nfds_t)npf, wait) < 0 && errno != EINTR) break;
    for (int i = 0; i < n; i++) {
      if (tern_client_service(cl[i].c, 0) < 0) continue;
      tern_event ev;
      while (tern_client_next_event(cl[i].c, &ev) == 1) {
        if (ev.type == TERN_EV_CONNECTED) {
          if (!cl[i].connected) connected++;
          cl[i].connected = 1;
          if (cl[i].drained) {
            fprintf(out, "connect %llu\n", (unsigned long long)wall_ms());
            reconnected++;
            cl[i].drained = 0;
          }
        } else if (ev.type == TERN_EV_DISCONNECTED) {
          if (cl[i].connected) connected--;
          cl[i].connected = 0;
          if (ev.error == TERN_ESHUTDOWN && !cl[i].drained) {
            cl[i].drained = 1;
            goaway++;
            fprintf(out, "goaway %llu %llu\n", (unsigned long long)wall_ms(),
                    (unsigned long long)ev.retry_ms);
          }
        } else if (ev.type == TERN_EV_MESSAGE && i % 2) {
          char num[16] = "";
          memcpy(num, ev.body, ev.body_len < sizeof(num) - 1 ? ev.body_len : sizeof(num) - 1);
          uint32_t k = (uint32_t)strtoul(num, NULL, 10);
          if (k < cl[i].next_want) dup++;
          else {
            if (k > cl[i].next_want) reorder++;
            unique++;
            cl[i].next_want = k + 1;
          }
        }
      }
    }
    if (!ready_at && connected == n) {
      ready_at = mono_ms();
      printf("READY %d clients in %llu ms\n", n, (unsigned long long)(ready_at - start));
      fflush(stdout);
    }
  }
  long lost = (long)(n / 2) * m - unique;
  printf("sent %ld unique %ld duplicated %ld reordered %ld lost %ld goaway %ld reconnected %ld\n", sent,
         unique, dup, reorder, lost, goaway, reconnected);
  if (status == 0 && (dup || reorder || lost)) status = 1;
  for (int i = 0; i < n; i++) tern_client_free(cl[i].c);
  fclose(out);
  free(cl);
  free(pf);
  return status;
}
