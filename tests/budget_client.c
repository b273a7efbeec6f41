/*
 * budget_client: the clients of tests/budget_test.sh (issue 13, finding 4:
 * receivers that stop answering must not make the relay hold more than its
 * delivery budget).
 *
 *   budget_client recv HOST PORT RELAY_KEY_HEX PREFIX N PER
 *     N receivers, users PREFIX0..PREFIX<N-1>; prints READY once all are
 *     connected, then takes messages until each has PER of them, checking
 *     that every message arrives once and whole; prints
 *     "received R duplicated D damaged X" and exits 0 if all came intact.
 *     The test stops this process (SIGSTOP) to make the receivers stall.
 *   budget_client send HOST PORT RELAY_KEY_HEX PREFIX N PER SIZE
 *     one sender writes PER messages of SIZE bytes to each receiver and
 *     exits 0 once all are SENT (stored by the relay), printing "sent S".
 *
 * Exit 2 on an error, or when not finished after 120 s.
 */
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tern/tern.h"

#define MAX_N 64

static uint64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static tern_client *open_client(const char *host, int port, const uint8_t *relay_key, const char *user) {
  tern_client_config cc;
  tern_client_config_default(&cc);
  cc.relay_host = host;
  cc.relay_port = (uint16_t)port;
  memcpy(cc.relay_public_key, relay_key, TERN_KEY_BYTES);
  if (tern_keypair_generate(&cc.keypair) != 0) return NULL;
  cc.user = user;
  cc.keepalive_fixed_ms = 25000; /* no NAT probes: not what is tested */
  tern_client *c = NULL;
  int rc = tern_client_new(&c, &cc);
  if (rc == 0) rc = tern_client_connect(c);
  if (rc) {
    fprintf(stderr, "budget_client: %s: %s\n", user, tern_errname(rc));
    tern_client_free(c);
    return NULL;
  }
  return c;
}

/* Waits for any of the clients' descriptors, up to 20 ms. */
static void wait_any(tern_client **c, int n) {
  struct pollfd pf[MAX_N * 8];
  size_t npf = 0;
  for (int i = 0; i < n; i++) {
    int k = tern_client_pollfds(c[i], pf + npf, sizeof pf / sizeof pf[0] - npf);
    if (k > 0) npf += (size_t)k;
  }
  if (poll(pf, (nfds_t)npf, 20) < 0 && errno != EINTR) perror("poll");
}

/* Message k to a receiver: "k:" then SIZE - len bytes of (k % 251). */
static size_t make_body(uint8_t *b, size_t size, int k) {
  int h = snprintf((char *)b, size, "%d:", k);
  memset(b + h, k % 251, size - (size_t)h);
  return size;
}

static int body_ok(const tern_event *ev, int *k) {
  char num[16] = "";
  size_t i = 0;
  while (i < ev->body_len && i < sizeof num - 1 && ev->body[i] != ':') num[i] = (char)ev->body[i], i++;
  if (i == ev->body_len || ev->body[i] != ':') return 0;
  *k = atoi(num);
  for (size_t j = i + 1; j < ev->body_len; j++)
    if (ev->body[j] != (uint8_t)(*k % 251)) return 0;
  return 1;
}

int main(int argc, char **argv) {
  int recv_mode = argc == 8 && strcmp(argv[1], "recv") == 0;
  int send_mode = argc == 9 && strcmp(argv[1], "send") == 0;
  if (!recv_mode && !send_mode) {
    fprintf(stderr, "usage: budget_client recv HOST PORT RELAY_KEY_HEX PREFIX N PER\n"
                    "       budget_client send HOST PORT RELAY_KEY_HEX PREFIX N PER SIZE\n");
    return 2;
  }
  const char *host = argv[2], *prefix = argv[5];
  int port = atoi(argv[3]), n = atoi(argv[6]), per = atoi(argv[7]);
  size_t size = send_mode ? (size_t)atol(argv[8]) : 0;
  uint8_t relay_key[TERN_KEY_BYTES];
  if (port < 1 || port > 65535 || n < 1 || n > MAX_N || per < 1 || per > 100000 ||
      (send_mode && (size < 16 || size > TERN_MESSAGE_MAX)) || tern_key_from_hex(argv[4], relay_key) != 0) {
    fprintf(stderr, "budget_client: bad arguments\n");
    return 2;
  }
  tern_client *c[MAX_N];
  int nc = recv_mode ? n : 1;
  for (int i = 0; i < nc; i++) {
    char user[TERN_USER_MAX + 1];
    if (recv_mode) snprintf(user, sizeof user, "%s%d", prefix, i);
    else snprintf(user, sizeof user, "%ssender", prefix);
    if (!(c[i] = open_client(host, port, relay_key, user))) return 2;
  }
  static uint8_t body[TERN_MESSAGE_MAX];
  static int next[MAX_N]; /* receiver: the message expected next */
  long received = 0, dup = 0, damaged = 0, sent = 0, stored = 0;
  int connected = 0, ready = 0, status = 2;
  uint64_t start = mono_ms();
  while (mono_ms() - start < 120000) {
    if (send_mode && ready && stored == (long)n * per) {
      status = 0;
      break;
    }
    if (recv_mode && received + damaged >= (long)n * per) {
      status = damaged || dup ? 1 : 0;
      break;
    }
    wait_any(c, nc);
    for (int i = 0; i < nc; i++) {
      if (tern_client_service(c[i], 0) < 0) continue;
      tern_event ev;
      while (tern_client_next_event(c[i], &ev) == 1) {
        if (ev.type == TERN_EV_CONNECTED) connected++;
        else if (ev.type == TERN_EV_SENT) stored++;
        else if (ev.type == TERN_EV_MESSAGE) {
          int k;
          if (!body_ok(&ev, &k)) damaged++;
          else if (k < next[i]) dup++;
          else received++, next[i] = k + 1;
        }
      }
    }
    if (!ready && connected >= nc) {
      ready = 1;
      printf("READY %d\n", nc);
      fflush(stdout);
      if (send_mode) {
        for (int k = 0; k < per; k++)
          for (int i = 0; i < n; i++) {
            char to[TERN_USER_MAX + 1];
            snprintf(to, sizeof to, "%s%d", prefix, i);
            if (tern_client_send(c[0], to, body, make_body(body, size, k), NULL) == 0) sent++;
          }
      }
    }
  }
  if (send_mode) printf("sent %ld stored %ld\n", sent, stored);
  else printf("received %ld duplicated %ld damaged %ld\n", received, dup, damaged);
  if (status == 2) fprintf(stderr, "budget_client: not finished after 120 s\n");
  for (int i = 0; i < nc; i++) tern_client_free(c[i]);
  return status;
}
