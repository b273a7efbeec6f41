/*
 * tern-chat: a terminal chat client on libtern.
 *
 * Scripted (standard input is not a terminal), the contract is exact:
 *   input lines   "@USER TEXT"   send TEXT to USER
 *                 "#GROUP TEXT"  send TEXT to the group GROUP
 *   output lines  "sent CMID"              the relay stored message CMID
 *                 "delivered CMID"         a device of its recipient got it
 *                 "failed CMID REASON"     it will never be delivered
 *                 "recv FROM SEQ TEXT"     a message arrived
 * TEXT is the body with '\' written as "\\", newline, carriage return and
 * tab as "\n", "\r", "\t", and every other byte below 0x20, and 0x7f, as
 * "\xHH", so that each event is one line whatever the body holds (bytes
 * from 0x80 up, UTF-8, are written as they are). Connection status, errors
 * the client works around (a relay that cannot store a message now) and
 * warnings go to standard error. At end of input it waits until it has
 * connected, the outbox is empty and nothing has arrived for a moment (what
 * was stored for it while away has come in), or until --linger SECONDS
 * passes, then exits 0; if --linger ran out first it says on standard
 * error how many messages were left in the outbox (kept in --state if
 * given). It exits 1 at once if the relay refuses this device for good
 * (unknown key, wrong relay key, incompatible version, a backend token it
 * refuses), 2 on bad usage. --token passes a backend token (spec/tokens.md).
 *
 * Keepalive: by default the client learns how long the network's NAT keeps
 * an idle mapping and keeps the link alive just often enough; each change
 * is reported on standard error ("tern-chat: keepalive ..."). --network
 * names the network so what was learned is kept per network in --state.
 *
 * Interactive (a terminal), it shows incoming messages and marks each sent
 * message with ticks as messaging apps do: one when the relay has it, two
 * when the recipient does.
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

/* --verbose: the client's log lines on stderr. */
static void log_line(void *ctx, int level, const char *line) {
  (void)ctx;
  static const char *const names[] = {"error", "warning", "info", "debug"};
  fprintf(stderr, "tern-chat[%s]: %s\n", names[level < 0 ? 0 : level > 3 ? 3 : level], line);
}

static void usage(FILE *f) {
  fprintf(f,
          "usage: tern-chat --relay HOST:PORT --relay-key PUBKEY --key KEYFILE [--state DIR]\n"
          "                 [--user NAME] [--linger SECONDS] [--expect N]\n"
          "                 [--network NAME] [--keepalive learn|off|MS] [--foreground]\n"
          "                 [--relay-tcp PORT] [--token TOKEN|@FILE] [--verbose]\n"
          "\n"
          "  --relay HOST:PORT     the relay's UDP address: a name (A or AAAA), an IPv4\n"
          "                        address, or [IPV6]:PORT; several endpoints of one\n"
          "                        relay (a cluster's relays) separated by commas,\n"
          "                        HOST:PORT,HOST[:PORT]...: raced, the first to answer\n"
          "                        is used, another when it is gone\n"
          "  --relay-tcp PORT      the relay's TCP port (ternd --listen-tcp): used when UDP\n"
          "                        has not answered for 1 s; back to UDP when it does\n"
          "  --relay-key PUBKEY    the relay's public key, 64 hex digits (pinned)\n"
          "  --key KEYFILE         this device's private key (tern-keygen makes one)\n"
          "  --state DIR           keep the outbox and delivery state in DIR, so\n"
          "                        nothing is lost or shown twice across restarts\n"
          "  --user NAME           name to ask for (used by relays in --open mode)\n"
          "  --token TOKEN|@FILE   a backend token (tern-token mint; spec/tokens.md) for a\n"
          "                        relay with --token-key: connect as its user\n"
          "  --linger SECONDS      at end of input, wait at most this long for the\n"
          "                        outbox to empty (default 30)\n"
          "  --expect N            at end of input, also wait until N messages have\n"
          "                        been received (within --linger)\n"
          "  --network NAME        the network this device is on, e.g. wifi:home;\n"
          "                        keepalive timing is learned and kept per network\n"
          "  --keepalive MODE      learn (default): learn the NAT's idle timeout and\n"
          "                        keep alive just often enough; off: never; MS: a\n"
          "                        fixed interval in milliseconds\n"
          "  --foreground          behave as an app in the foreground (keepalive at\n"
          "                        most every 60 s); default: background\n"
          "  -v, --verbose         log what the client tries and why it fails (lookups,\n"
          "                        connects, TCP fallback, moves) to stderr\n"
          "  --version             print the version and exit\n"
          "  -h, --help            this text\n"
          "\n"
          "Input lines: '@USER TEXT', '#GROUP TEXT'. Output lines: 'sent CMID',\n"
          "'delivered CMID', 'receipts CMID GOT OF', 'failed CMID REASON', 'recv FROM SEQ\n"
          "TEXT', 'group #GROUP FROM SEQ TEXT', 'carbon TO SEQ TEXT'. In TEXT, '\\' is\n"
          "written '\\\\', newline, CR and tab '\\n', '\\r', '\\t', other control bytes\n"
          "'\\xHH'. Status, errors and warnings go to stderr. At end of input it waits\n"
          "for the outbox to empty (at most --linger), then exits 0; 1 if the relay\n"
          "refuses this device for good (unknown key, wrong relay key, a token it\n"
          "refuses), 2 on bad usage.\n");
}

static uint64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static int interactive;

/* Sends one input line; complains on stderr about a malformed one. */
static void send_line(tern_client *c, char *line) {
  size_t n = strlen(line);
  while (n && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = 0;
  if (n == 0) return;
  char *sp = strchr(line, ' ');
  if ((line[0] != '@' && line[0] != '#') || !sp || sp == line + 1) {
    fprintf(stderr, "tern-chat: ignored input line (want '@USER TEXT' or '#GROUP TEXT'): %s\n", line);
    return;
  }
  *sp = 0;
  const char *text = sp + 1;
  /* '#team' is the group the library calls '@team'. */
  const char *to = line + 1;
  if (line[0] == '#') {
    line[0] = '@';
    to = line;
  }
  uint64_t cmid;
  int rc = tern_client_send(c, to, text, strlen(text), &cmid);
  if (rc) {
    fprintf(stderr, "tern-chat: not sent to %s: %s\n", to, tern_strerror(rc));
    return;
  }
  if (interactive) printf("  [%llu] to %s: %s  (queued)\n", (unsigned long long)cmid, to, text);
}

/* Fatal for a tool: reconnecting cannot fix these. */
static int fatal(int err) {
  return err == TERN_ERELAYKEY || err == TERN_EUNKNOWNKEY || err == TERN_EVERSION ||
         err == TERN_ETOKENEXPIRED || err == TERN_ETOKENINVALID || err == TERN_ETOKENKEY ||
         err == TERN_ETOKENREVOKED || err == TERN_EREPLACED; /* the client stays offline */
}

static const char *ka_state_name(tern_keepalive_state s) {
  switch (s) {
    case TERN_KA_OFF: return "off";
    case TERN_KA_FIXED: return "fixed";
    case TERN_KA_UNKNOWN: return "unknown";
    case TERN_KA_LEARNING: return "learning";
    case TERN_KA_LEARNED: return "learned";
    case TERN_KA_BAD: return "bad";
    case TERN_KA_UNAVAILABLE: return "unavailable";
  }
  return "?";
}

static tern_client *the_client;

/* Writes a body so that it stays on one line and cannot drive the
 * terminal: '\\' doubled, control bytes escaped (see the top comment). */
static void put_text(const uint8_t *p, size_t n) {
  for (size_t i = 0; i < n; i++) {
    uint8_t b = p[i];
    if (b == '\\') fputs("\\\\", stdout);
    else if (b == '\n') fputs("\\n", stdout);
    else if (b == '\r') fputs("\\r", stdout);
    else if (b == '\t') fputs("\\t", stdout);
    else if (b < 0x20 || b == 0x7f) printf("\\x%02x", b);
    else putchar(b);
  }
}

static void print_event(const tern_event *ev) {
  switch (ev->type) {
    case TERN_EV_CONNECTED:
      fprintf(stderr, "tern-chat: connected as %s\n", ev->user);
      break;
    case TERN_EV_DISCONNECTED:
      if (ev->retry_ms)
        fprintf(stderr, "tern-chat: disconnected: %s (%s); trying again in %.1f s\n",
                tern_strerror(ev->error), tern_errname(ev->error), (double)ev->retry_ms / 1000);
      else
        fprintf(stderr, "tern-chat: disconnected: %s (%s)\n", tern_strerror(ev->error),
                tern_errname(ev->error));
      break;
    case TERN_EV_MESSAGE:
      if (interactive) {
        time_t t = (time_t)(ev->server_time_ms / 1000);
        struct tm tm;
        char hm[8];
        localtime_r(&t, &tm);
        strftime(hm, sizeof(hm), "%H:%M", &tm);
        if (ev->to && ev->to[0] == '@') printf("%s #%s %s: ", hm, ev->to + 1, ev->user);
        else if (ev->to) printf("%s you (another device) -> %s: ", hm, ev->to);
        else printf("%s %s: ", hm, ev->user);
      } else if (ev->to && ev->to[0] == '@') {
        printf("group #%s %s %llu ", ev->to + 1, ev->user, (unsigned long long)ev->seq);
      } else if (ev->to) {
        printf("carbon %s %llu ", ev->to, (unsigned long long)ev->seq);
      } else {
        printf("recv %s %llu ", ev->user, (unsigned long long)ev->seq);
      }
      put_text(ev->body, ev->body_len);
      putchar('\n');
      break;
    case TERN_EV_SENT:
      if (interactive) printf("  [%llu] \u2713 sent\n", (unsigned long long)ev->cmid);
      else printf("sent %llu\n", (unsigned long long)ev->cmid);
      break;
    case TERN_EV_RECEIPTS:
      if (interactive)
        printf("  [%llu] \u2713\u2713 %u of %u members\n", (unsigned long long)ev->cmid, ev->delivered,
               ev->members);
      else
        printf("receipts %llu %u %u\n", (unsigned long long)ev->cmid, ev->delivered, ev->members);
      break;
    case TERN_EV_DELIVERED:
      if (interactive) printf("  [%llu] \u2713\u2713 delivered\n", (unsigned long long)ev->cmid);
      else printf("delivered %llu\n", (unsigned long long)ev->cmid);
      break;
    case TERN_EV_FAILED:
      if (interactive)
        printf("  [%llu] failed: %s\n", (unsigned long long)ev->cmid, tern_strerror(ev->error));
      else
        printf("failed %llu %s\n", (unsigned long long)ev->cmid, tern_errname(ev->error));
      break;
    case TERN_EV_ERROR:
      if (ev->user[0])
        fprintf(stderr, "tern-chat: message %llu to %s not stored now (%s): %.*s\n",
                (unsigned long long)ev->cmid, ev->user, tern_errname(ev->error), (int)ev->body_len,
                (const char *)ev->body);
      else
        fprintf(stderr, "tern-chat: error (%s): %.*s\n", tern_errname(ev->error),
                (int)ev->body_len, (const char *)ev->body);
      break;
    case TERN_EV_PRESENCE: {
      time_t t = (time_t)(ev->server_time_ms / 1000);
      struct tm tm;
      char when[32];
      localtime_r(&t, &tm);
      strftime(when, sizeof(when), "%Y-%m-%d %H:%M", &tm);
      if (interactive) printf("  * %s is %s (%s %s)\n", ev->user, ev->online ? "online" : "offline",
                              ev->online ? "since" : "last seen", when);
      else printf("presence %s %s %llu\n", ev->user, ev->online ? "online" : "offline",
                  (unsigned long long)ev->server_time_ms);
      break;
    }
    case TERN_EV_KEEPALIVE: {
      tern_keepalive_info ki;
      tern_client_keepalive(the_client, &ki);
      fprintf(stderr,
              "tern-chat: keepalive %s on network '%s': every %u ms (proven %u ms, failed %u ms, "
              "learned in %llu ms, %llu probes)%s\n",
              ka_state_name(ki.state), ki.network, ki.interval_ms, ki.proven_ms, ki.failed_ms,
              (unsigned long long)ki.learn_ms, (unsigned long long)ki.probes,
              ev->error ? ": this network forgets idle UDP mappings very fast" : "");
      break;
    }
    default:
      break;
  }
}

int main(int argc, char **argv) {
  const char *relay = NULL, *relay_key = NULL, *key_path = NULL, *user = NULL, *state = NULL;
  uint16_t relay_tcp = 0;
  const char *network = NULL, *keepalive = "learn", *token = NULL;
  char token_text[TERN_TOKEN_TEXT_MAX + 64];
  int foreground = 0, verbose = 0;
  double linger = 30.0;
  long expect = 0;
  static const struct option opts[] = {
      {"relay", required_argument, 0, 'r'},  {"relay-key", required_argument, 0, 'R'},
      {"key", required_argument, 0, 'k'},    {"user", required_argument, 0, 'u'},
      {"state", required_argument, 0, 's'},  {"linger", required_argument, 0, 'l'},
      {"expect", required_argument, 0, 'e'}, {"help", no_argument, 0, 'h'},
      {"network", required_argument, 0, 'n'}, {"keepalive", required_argument, 0, 'K'},
      {"foreground", no_argument, 0, 'f'},  {"version", no_argument, 0, 'V'},
      {"relay-tcp", required_argument, 0, 't'}, {"verbose", no_argument, 0, 'v'},
      {"token", required_argument, 0, 'T'},
      {0, 0, 0, 0}};
  int o;
  while ((o = getopt_long(argc, argv, "hv", opts, NULL)) != -1) {
    switch (o) {
      case 'V': printf("tern-chat %s (libtern %s)\n", TERN_VERSION_STRING, tern_version()); return 0;
      case 'r': relay = optarg; break;
      case 'R': relay_key = optarg; break;
      case 'k': key_path = optarg; break;
      case 'u': user = optarg; break;
      case 's': state = optarg; break;
      case 'l': linger = atof(optarg); break;
      case 'e': expect = atol(optarg); break;
      case 'n': network = optarg; break;
      case 'K': keepalive = optarg; break;
      case 'f': foreground = 1; break;
      case 'v': verbose = 1; break;
      case 'T': token = optarg; break;
      case 't': {
        char *end;
        long p = strtol(optarg, &end, 10);
        if (*end || p <= 0 || p > 65535) {
          fprintf(stderr, "tern-chat: --relay-tcp wants a port, not '%s'\n", optarg);
          return 2;
        }
        relay_tcp = (uint16_t)p;
        break;
      }
      case 'h': usage(stdout); return 0;
      default: usage(stderr); return 2;
    }
  }
  if (optind != argc || !relay || !relay_key || !key_path || linger < 0 || expect < 0) {
    usage(stderr);
    return 2;
  }
  interactive = isatty(STDIN_FILENO);
  setvbuf(stdout, NULL, _IOLBF, 0);

  tern_client_config cfg;
  tern_client_config_default(&cfg);
  /* HOST:PORT, or [IPV6]:PORT for an IPv6 literal; several endpoints of
   * one relay (a cluster's relays) separated by commas, the first with its
   * port, the others with theirs if it differs: the library races them. */
  char host[256], first[256];
  const char *list = strchr(relay, ',') ? relay : NULL;
  if (list) {
    size_t k = (size_t)(strchr(relay, ',') - relay);
    if (k >= sizeof(first) || strlen(relay) >= sizeof(host)) {
      fprintf(stderr, "tern-chat: --relay is too long\n");
      return 2;
    }
    memcpy(first, relay, k);
    first[k] = 0;
    relay = first;
  }
  const char *hs = relay, *he, *colon;
  if (relay[0] == '[') {
    hs = relay + 1;
    he = strchr(hs, ']');
    colon = he && he[1] == ':' ? he + 1 : NULL;
  } else {
    colon = strrchr(relay, ':');
    he = colon;
    if (colon && strchr(relay, ':') != colon) colon = NULL; /* a bare IPv6 literal */
  }
  char *pend = NULL;
  long port = colon ? strtol(colon + 1, &pend, 10) : 0;
  if (!colon || he == hs || (size_t)(he - hs) >= sizeof(host) || !pend || *pend || port <= 0 ||
      port > 65535) {
    fprintf(stderr, "tern-chat: --relay wants HOST:PORT or [IPV6]:PORT, not '%s'\n", relay);
    return 2;
  }
  memcpy(host, hs, (size_t)(he - hs));
  host[he - hs] = 0;
  if (list) snprintf(host, sizeof(host), "%s", list);
  cfg.relay_host = host;
  cfg.relay_port = (uint16_t)port;
  cfg.relay_tcp_port = relay_tcp;
  if (verbose) cfg.log = log_line;
  if (tern_key_from_hex(relay_key, cfg.relay_public_key) != 0) {
    fprintf(stderr, "tern-chat: --relay-key wants 64 hex digits\n");
    return 2;
  }
  char why[256];
  int rc = tern_keypair_load_why(key_path, &cfg.keypair, why, sizeof(why));
  if (rc) {
    fprintf(stderr, "tern-chat: cannot load key %s: %s\n", key_path, why);
    return 1;
  }
  if (token && token[0] == '@') {
    FILE *f = fopen(token + 1, "r");
    size_t n = f ? fread(token_text, 1, sizeof(token_text) - 1, f) : 0;
    if (!f || ferror(f)) {
      fprintf(stderr, "tern-chat: cannot read token file %s: %s\n", token + 1, strerror(errno));
      if (f) fclose(f);
      return 1;
    }
    fclose(f);
    token_text[n] = 0;
    token = token_text;
  }
  tern_token_info ti;
  if (token && tern_token_decode(token, NULL, &ti) != 0) {
    fprintf(stderr, "tern-chat: --token is not a backend token (base64url, spec/tokens.md)\n");
    return 2;
  }
  cfg.token = token;
  cfg.user = user;
  cfg.state_dir = state;
  cfg.network = network;
  if (strcmp(keepalive, "off") == 0) {
    cfg.keepalive_off = 1;
  } else if (strcmp(keepalive, "learn") != 0) {
    char *end = NULL;
    unsigned long ms = strtoul(keepalive, &end, 10);
    if (!end || *end || ms < 1000 || ms > 3600000) {
      fprintf(stderr, "tern-chat: --keepalive wants learn, off or 1000..3600000 ms, not '%s'\n",
              keepalive);
      return 2;
    }
    cfg.keepalive_fixed_ms = (uint32_t)ms;
  }
  tern_client *c;
  rc = tern_client_new(&c, &cfg);
  if (rc == 0) {
    the_client = c;
    tern_client_set_foreground(c, foreground);
    rc = tern_client_connect(c);
  }
  if (rc) {
    fprintf(stderr, "tern-chat: cannot start: %s\n", tern_strerror(rc));
    return 1;
  }
  if (interactive)
    printf("tern-chat: type '@USER TEXT' or '#GROUP TEXT' to send, Ctrl-D to quit. \u2713 = relay has it, "
           "\u2713\u2713 = delivered.\n");

  int input_open = 1, status = 0, done = 0, ever_connected = 0;
  long received = 0;
  uint64_t last_event_ms = now_ms();
  uint64_t eof_at = 0;
  char *line = NULL;
  size_t line_cap = 0, line_len = 0;
  while (!done) {
    /* stdin, then what the client waits on (one descriptor with epoll or
     * kqueue, each of its sockets with the poll() backend). */
    struct pollfd pf[1 + 64] = {{.fd = input_open ? STDIN_FILENO : -1, .events = POLLIN}};
    int nfd = tern_client_pollfds(c, pf + 1, 64);
    if (nfd < 0 || nfd > 64) {
      fprintf(stderr, "tern-chat: %d descriptors to wait on\n", nfd);
      status = 1;
      break;
    }
    int timeout = tern_client_timeout_ms(c);
    if (!input_open) {
      uint64_t end = eof_at + (uint64_t)(linger * 1000), now = now_ms();
      int left = now >= end ? 0 : (int)(end - now);
      if (left > 100) left = 100; /* to notice the quiet period ending */
      if (timeout < 0 || timeout > left) timeout = left;
    }
    if (poll(pf, (nfds_t)(1 + nfd), timeout) < 0 && errno != EINTR) break;
    if (input_open && (pf[0].revents & (POLLIN | POLLHUP))) {
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
        send_line(c, line);
      }
    }
    if (tern_client_service(c, 0) < 0) {
      status = 1;
      break;
    }
    tern_event ev;
    while (tern_client_next_event(c, &ev) == 1) {
      print_event(&ev);
      last_event_ms = now_ms();
      if (ev.type == TERN_EV_CONNECTED) ever_connected = 1;
      /* Carbons are not counted; group messages are. */
      if (ev.type == TERN_EV_MESSAGE && (!ev.to || ev.to[0] == '@')) received++;
      if (ev.type == TERN_EV_DISCONNECTED && fatal(ev.error)) {
        status = 1;
        done = 1;
      }
    }
    if (!input_open && !done) {
      int drained = ever_connected && tern_client_outbox_size(c) == 0 && received >= expect &&
                    now_ms() >= last_event_ms + 300;
      if (drained || now_ms() >= eof_at + (uint64_t)(linger * 1000)) {
        if (!drained) {
          /* The contract: exit 0 all the same; what is left is said here. */
          fprintf(stderr,
                  "tern-chat: --linger ran out with %zu message(s) in the outbox%s and %ld of "
                  "%ld expected message(s) received\n",
                  tern_client_outbox_size(c), state ? " (kept in --state)" : " (lost)", received,
                  expect);
        }
        done = 1;
      }
    }
  }
  /* Let delivery acks and receipts go out, then say goodbye. */
  if (tern_client_disconnect(c) == 0) {
    uint64_t until = now_ms() + 1000;
    int closed = 0;
    while (!closed && now_ms() < until) {
      if (tern_client_service(c, 50) < 0) break;
      tern_event ev;
      while (tern_client_next_event(c, &ev) == 1) {
        if (ev.type == TERN_EV_DISCONNECTED) closed = 1;
        else print_event(&ev);
      }
    }
  }
  free(line);
  tern_client_free(c);
  return status;
}
