/*
 * tern-chat: a line-oriented chat client on libtern.
 *
 * Reads lines "@USER TEXT" from standard input and sends TEXT to USER;
 * prints one line per event on standard output:
 *
 *   connected USER          the handshake finished; USER is our name
 *   recv FROM TEXT          a message arrived
 *   failed CMID REASON      the relay refused message CMID
 *   disconnected REASON     the link is gone
 *
 * Lines typed before the connection is up are sent once it is. At end of
 * input it keeps running for --linger seconds (default 1) so that replies
 * and refusals can arrive, or until --expect N messages have been received,
 * then disconnects and exits 0. Exit status 1 means the link failed.
 */
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tern/tern.h"

static void usage(FILE *f) {
  fprintf(f,
          "usage: tern-chat --relay HOST:PORT --relay-key PUBKEY --key KEYFILE [options]\n"
          "\n"
          "  --relay HOST:PORT     the relay's UDP address\n"
          "  --relay-key PUBKEY    the relay's public key, 64 hex digits (pinned)\n"
          "  --key KEYFILE         this device's private key (tern-keygen makes one)\n"
          "  --user NAME           name to ask for (used by relays in --open mode)\n"
          "  --linger SECONDS      keep running this long after end of input (default 1)\n"
          "  --expect N            at end of input, exit as soon as N messages arrived\n"
          "  -h, --help            this text\n"
          "\n"
          "Input lines: '@USER TEXT'. Output lines: 'connected USER', 'recv FROM TEXT',\n"
          "'failed CMID REASON', 'disconnected REASON'.\n");
}

static uint64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

typedef struct pending {
  char **lines;
  size_t count, cap;
} pending;

static int pending_add(pending *p, const char *line) {
  if (p->count == p->cap) {
    size_t ncap = p->cap ? p->cap * 2 : 64;
    char **n = realloc(p->lines, ncap * sizeof(*n));
    if (!n) return -1;
    p->lines = n;
    p->cap = ncap;
  }
  p->lines[p->count] = strdup(line);
  if (!p->lines[p->count]) return -1;
  p->count++;
  return 0;
}

/* Sends one input line; complains on stderr about a malformed one. */
static void send_line(tern_client *c, char *line) {
  size_t n = strlen(line);
  while (n && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = 0;
  if (n == 0) return;
  char *sp = strchr(line, ' ');
  if (line[0] != '@' || !sp || sp == line + 1) {
    fprintf(stderr, "tern-chat: ignored input line (want '@USER TEXT'): %s\n", line);
    return;
  }
  *sp = 0;
  const char *text = sp + 1;
  uint64_t cmid;
  int rc = tern_client_send(c, line + 1, text, strlen(text), &cmid);
  if (rc) printf("failed - %s\n", tern_errname(rc));
}

int main(int argc, char **argv) {
  const char *relay = NULL, *relay_key = NULL, *key_path = NULL, *user = NULL;
  double linger = 1.0;
  long expect = -1;
  static const struct option opts[] = {
      {"relay", required_argument, 0, 'r'},  {"relay-key", required_argument, 0, 'R'},
      {"key", required_argument, 0, 'k'},    {"user", required_argument, 0, 'u'},
      {"linger", required_argument, 0, 'l'}, {"expect", required_argument, 0, 'e'},
      {"help", no_argument, 0, 'h'},         {0, 0, 0, 0}};
  int o;
  while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
    switch (o) {
      case 'r': relay = optarg; break;
      case 'R': relay_key = optarg; break;
      case 'k': key_path = optarg; break;
      case 'u': user = optarg; break;
      case 'l': linger = atof(optarg); break;
      case 'e': expect = atol(optarg); break;
      case 'h': usage(stdout); return 0;
      default: usage(stderr); return 2;
    }
  }
  if (optind != argc || !relay || !relay_key || !key_path || linger < 0) {
    usage(stderr);
    return 2;
  }
  setvbuf(stdout, NULL, _IOLBF, 0);

  tern_client_config cfg;
  tern_client_config_default(&cfg);
  char host[256];
  const char *colon = strrchr(relay, ':');
  if (!colon || colon == relay || (size_t)(colon - relay) >= sizeof(host) || atoi(colon + 1) <= 0 ||
      atoi(colon + 1) > 65535) {
    fprintf(stderr, "tern-chat: --relay wants HOST:PORT, not '%s'\n", relay);
    return 2;
  }
  memcpy(host, relay, (size_t)(colon - relay));
  host[colon - relay] = 0;
  cfg.relay_host = host;
  cfg.relay_port = (uint16_t)atoi(colon + 1);
  if (tern_key_from_hex(relay_key, cfg.relay_public_key) != 0) {
    fprintf(stderr, "tern-chat: --relay-key wants 64 hex digits\n");
    return 2;
  }
  int rc = tern_keypair_load(key_path, &cfg.keypair);
  if (rc) {
    fprintf(stderr, "tern-chat: cannot load key %s: %s\n", key_path, tern_strerror(rc));
    return 1;
  }
  cfg.user = user;
  tern_client *c;
  rc = tern_client_new(&c, &cfg);
  if (rc == 0) rc = tern_client_connect(c);
  if (rc) {
    fprintf(stderr, "tern-chat: cannot start: %s\n", tern_strerror(rc));
    return 1;
  }

  pending queue = {0};
  int connected = 0, input_open = 1, status = 0, done = 0;
  long received = 0;
  uint64_t eof_at = 0, connected_at = 0;
  char *line = NULL;
  size_t line_cap = 0, line_len = 0;
  while (!done) {
    struct pollfd pf[2] = {{.fd = tern_client_fd(c), .events = POLLIN},
                           {.fd = input_open ? STDIN_FILENO : -1, .events = POLLIN}};
    int timeout = tern_client_timeout_ms(c);
    if (!input_open && connected) {
      uint64_t end = eof_at + (uint64_t)(linger * 1000);
      uint64_t now = now_ms();
      int left = now >= end ? 0 : (int)(end - now);
      if (timeout < 0 || timeout > left) timeout = left;
    }
    if (poll(pf, 2, timeout) < 0 && errno != EINTR) break;
    if (input_open && (pf[1].revents & (POLLIN | POLLHUP))) {
      /* Raw reads, not stdio: poll() cannot see lines stdio has buffered. */
      char chunk[4096];
      ssize_t n = read(STDIN_FILENO, chunk, sizeof(chunk));
      if (n <= 0) {
        input_open = 0;
        eof_at = now_ms();
        if (line_len) chunk[0] = '\n', n = 1; /* a last line without newline */
      }
      for (ssize_t i = 0; i < n; i++) {
        if (line_len + 1 >= line_cap) {
          size_t ncap = line_cap ? line_cap * 2 : 256;
          char *nl = realloc(line, ncap);
          if (!nl) {
            fprintf(stderr, "tern-chat: out of memory\n");
            return 1;
          }
          line = nl;
          line_cap = ncap;
        }
        if (chunk[i] != '\n') {
          line[line_len++] = chunk[i];
          continue;
        }
        line[line_len] = 0;
        line_len = 0;
        if (connected) {
          send_line(c, line);
        } else if (pending_add(&queue, line) != 0) {
          fprintf(stderr, "tern-chat: out of memory\n");
          return 1;
        }
      }
    }
    if (tern_client_service(c, 0) < 0) {
      status = 1;
      break;
    }
    tern_event ev;
    while (tern_client_next_event(c, &ev) == 1) {
      switch (ev.type) {
        case TERN_EV_CONNECTED:
          connected = 1;
          connected_at = now_ms();
          printf("connected %s\n", ev.user);
          for (size_t i = 0; i < queue.count; i++) {
            send_line(c, queue.lines[i]);
            free(queue.lines[i]);
          }
          queue.count = 0;
          break;
        case TERN_EV_MESSAGE:
          received++;
          printf("recv %s %.*s\n", ev.user, (int)ev.body_len, (const char *)ev.body);
          break;
        case TERN_EV_SEND_FAILED:
          printf("failed %llu %s\n", (unsigned long long)ev.cmid, tern_errname(ev.error));
          break;
        case TERN_EV_DISCONNECTED:
          printf("disconnected %s\n", tern_errname(ev.error));
          fprintf(stderr, "tern-chat: disconnected: %s\n", tern_strerror(ev.error));
          status = ev.error == TERN_ECLOSED ? 0 : 1;
          done = 1;
          break;
        default:
          break;
      }
    }
    /* End of input: linger only once connected, so that queued lines go out;
     * a connection that fails ends the run through its DISCONNECTED event. */
    if (!input_open && !done && connected) {
      if (eof_at < connected_at) eof_at = connected_at;
      if ((expect >= 0 && received >= expect) || now_ms() >= eof_at + (uint64_t)(linger * 1000)) {
        if (tern_client_disconnect(c) == 0) {
          /* Wait briefly for the relay to confirm the goodbye. */
          uint64_t until = now_ms() + 1000;
          while (!done && now_ms() < until) {
            if (tern_client_service(c, 100) < 0) break;
            while (tern_client_next_event(c, &ev) == 1)
              if (ev.type == TERN_EV_DISCONNECTED) done = 1;
          }
        }
        done = 1;
      }
    }
  }
  for (size_t i = 0; i < queue.count; i++) free(queue.lines[i]);
  free(queue.lines);
  free(line);
  tern_client_free(c);
  return status;
}
