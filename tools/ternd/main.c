/*
 * ternd: the tern relay server.
 *
 * Loads its key, decides who may connect (an allow-list reloaded on SIGHUP,
 * or --open for development), and runs the relay from a poll loop over the
 * relay's descriptor and a signalfd. SIGINT/SIGTERM shut it down cleanly,
 * telling every client it is a shutdown.
 */
#include <errno.h>
#include <getopt.h>
#include <malloc.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "allowlist.h"
#include "tern/tern.h"

static int verbosity = 2; /* 0 error, 1 warning, 2 info, 3 debug */

static void say(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void say(int level, const char *fmt, ...) {
  if (level > verbosity) return;
  static const char *names[] = {"error", "warning", "info", "debug"};
  char ts[32];
  time_t t = time(NULL);
  struct tm tm;
  gmtime_r(&t, &tm);
  strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%SZ", &tm);
  fprintf(stderr, "%s ternd[%s] ", ts, names[level < 0 ? 0 : level > 3 ? 3 : level]);
  va_list ap;
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
}

static void relay_log(void *ctx, int level, const char *line) {
  (void)ctx;
  say(level, "%s", line);
}

typedef struct auth_state {
  allowlist list;
  const char *path;
} auth_state;

static int auth_cb(void *ctx, const uint8_t key[TERN_KEY_BYTES], const char *requested,
                   char user[TERN_USER_MAX + 1]) {
  (void)requested; /* with an allow-list, the list names the user */
  const auth_state *a = ctx;
  const char *u = allowlist_find(&a->list, key);
  if (!u) return TERN_EUNKNOWNKEY;
  snprintf(user, TERN_USER_MAX + 1, "%s", u);
  return 0;
}

/* With an allow-list, the users it lists exist and no others: a message to
 * anyone else fails at once (TERN_ENOENT) instead of waiting out the
 * retention. */
static int user_exists_cb(void *ctx, const char *user) {
  const auth_state *a = ctx;
  return allowlist_user_exists(&a->list, user);
}

static int may_send_cb(void *ctx, const char *from, const char *to) {
  const auth_state *a = ctx;
  return allowlist_may_send(&a->list, from, to);
}

static void usage(FILE *f) {
  fprintf(f,
          "usage: ternd --key KEYFILE (--allow FILE | --open) [options]\n"
          "\n"
          "The tern relay. Clients connect over UDP, prove their key in a Noise IK\n"
          "handshake, and exchange sealed messages through it.\n"
          "\n"
          "  --key FILE            the relay's private key (make one with tern-keygen)\n"
          "  --allow FILE          allow-list, one device a line:\n"
          "                          <client public key hex> <user> [* | @USER ...]\n"
          "                        '*' or nothing: the user may write to anyone; '@USER'\n"
          "                        fields: to those users only (others get FAILED\n"
          "                        TERN_EDENIED). Only listed users can receive (others:\n"
          "                        FAILED TERN_ENOENT). '#' starts a comment. Reloaded\n"
          "                        on SIGHUP (a bad file keeps the old list)\n"
          "  --open                development mode: any key may connect, as the user\n"
          "                        name it asks for, and write to any name (logged as a\n"
          "                        warning)\n"
          "  --listen HOST:PORT    UDP address to bind (default [::]:7400: IPv4 and IPv6\n"
          "                        on one port; 0.0.0.0:PORT IPv4 only, [V6ADDR]:PORT\n"
          "                        IPv6 only; port 0 picks a free port)\n"
          "  --listen-tcp PORT     also accept TCP on PORT of the --listen address, for\n"
          "                        clients whose network blocks UDP (they race TCP\n"
          "                        after 1 s of UDP silence and move back to UDP when it\n"
          "                        works; 443 passes most firewalls). Default: no TCP\n"
          "  --port-file FILE      write the bound port to FILE once listening\n"
          "  --data-dir DIR        where messages are kept until delivered (default\n"
          "                        ./ternd-data; created if missing)\n"
          "  --retention-days N    undelivered messages expire after N days and their\n"
          "                        senders are told (default 30)\n"
          "  --no-fsync            commit without fsync: survives a crash of ternd but\n"
          "                        not of the machine (default: fsync every group commit)\n"
          "  --store-reserve KIB   disk kept in reserve next to the store (default 16384,\n"
          "                        0: none). On a full disk new messages get BUSY and\n"
          "                        the reserve is given back so that deliveries, acks\n"
          "                        and receipts go on; messages are accepted again once\n"
          "                        the disk has room for it\n"
          "  --handshake-timeout MS  drop peers that have not finished the handshake\n"
          "                        after MS milliseconds (default 5000)\n"
          "  --max-peers N         simultaneous peers, up to 262144 (default 4095); past\n"
          "                        4095 the relay runs several ENet hosts on its one port.\n"
          "                        Beyond it new clients are told FULL and come back later\n"
          "  --max-message-size B  largest message body forwarded (default 65536)\n"
          "  --ping-interval MS    ENet ping for clients that announce no keepalive of\n"
          "                        their own (default 60000; spec/keepalive.md)\n"
          "  --no-probes           do not answer NAT-timeout probes (clients then keep\n"
          "                        a conservative keepalive; spec/keepalive.md)\n"
          "  -v, --verbose         log every peer event (debug)\n"
          "  -q, --quiet           log warnings and errors only\n"
          "  --version             print the version and exit\n"
          "  -h, --help            this text\n"
          "\n"
          "Networks: one --listen [::] port serves IPv4 and IPv6 clients; a client's\n"
          "session moves to its new address (NAT rebinding, Wi-Fi to cellular) without\n"
          "a new handshake once it proves the address (spec/wire.md 11). Limits: the\n"
          "ENet header is not authenticated (spec/threat-model.md); NAT64 prefixes\n"
          "are learned only if /96; a session on TCP that loses its connection\n"
          "reconnects (it does not move to another TCP connection).\n");
}

static int parse_listen(const char *s, char *host, size_t cap, uint16_t *port) {
  const char *colon = strrchr(s, ':');
  if (!colon || (size_t)(colon - s) >= cap) return -1;
  char *end;
  long p = strtol(colon + 1, &end, 10);
  if (*end || p < 0 || p > 65535 || colon[1] == 0) return -1;
  memcpy(host, s, (size_t)(colon - s));
  host[colon - s] = 0;
  if (!host[0]) snprintf(host, cap, "::");
  *port = (uint16_t)p;
  return 0;
}

static long parse_num(const char *s, long lo, long hi, const char *what) {
  char *end;
  errno = 0;
  long v = strtol(s, &end, 10);
  if (errno || *end || v < lo || v > hi) {
    fprintf(stderr, "ternd: %s must be a number from %ld to %ld, not '%s'\n", what, lo, hi, s);
    exit(2);
  }
  return v;
}

int main(int argc, char **argv) {
  const char *key_path = NULL, *allow_path = NULL, *port_file = NULL, *data_dir = "ternd-data";
  int open_mode = 0;
  long tcp_port = -1;
  char host[256] = "::";
  tern_relay_config cfg;
  tern_relay_config_default(&cfg);
  static const struct option opts[] = {
      {"key", required_argument, 0, 'k'},        {"allow", required_argument, 0, 'a'},
      {"open", no_argument, 0, 'o'},             {"listen", required_argument, 0, 'l'},
      {"port-file", required_argument, 0, 'P'},  {"handshake-timeout", required_argument, 0, 'T'},
      {"max-peers", required_argument, 0, 'm'},  {"max-message-size", required_argument, 0, 'M'},
      {"data-dir", required_argument, 0, 'D'},   {"retention-days", required_argument, 0, 'R'},
      {"no-fsync", no_argument, 0, 'F'},      {"no-probes", no_argument, 0, 'N'},
      {"ping-interval", required_argument, 0, 'I'},
      {"store-reserve", required_argument, 0, 'S'},
      {"listen-tcp", required_argument, 0, 'C'},
      {"verbose", no_argument, 0, 'v'},          {"quiet", no_argument, 0, 'q'},
      {"help", no_argument, 0, 'h'},             {"version", no_argument, 0, 'V'},
      {0, 0, 0, 0}};
  int c;
  while ((c = getopt_long(argc, argv, "vqh", opts, NULL)) != -1) {
    switch (c) {
      case 'V': printf("ternd %s (libtern %s)\n", TERN_VERSION_STRING, tern_version()); return 0;
      case 'k': key_path = optarg; break;
      case 'a': allow_path = optarg; break;
      case 'o': open_mode = 1; break;
      case 'l':
        if (parse_listen(optarg, host, sizeof(host), &cfg.port) != 0) {
          fprintf(stderr, "ternd: --listen wants HOST:PORT, not '%s'\n", optarg);
          return 2;
        }
        break;
      case 'P': port_file = optarg; break;
      case 'C': tcp_port = parse_num(optarg, 0, 65535, "--listen-tcp"); break;
      case 'T': cfg.handshake_timeout_ms = (uint32_t)parse_num(optarg, 100, 600000, "--handshake-timeout"); break;
      case 'm': cfg.max_peers = (uint32_t)parse_num(optarg, 1, TERN_RELAY_MAX_PEERS, "--max-peers"); break;
      case 'M': cfg.max_message_size = (uint32_t)parse_num(optarg, 1, TERN_MESSAGE_MAX, "--max-message-size"); break;
      case 'D': data_dir = optarg; break;
      case 'R': cfg.retention_ms = (uint64_t)parse_num(optarg, 1, 3650, "--retention-days") * 86400000ull; break;
      case 'F': cfg.durable_fsync = 0; break;
      case 'S': cfg.store_reserve_bytes = (uint64_t)parse_num(optarg, 0, 16L << 20, "--store-reserve") * 1024u; break;
      case 'N': cfg.probes = 0; break;
      case 'I': cfg.ping_interval_ms = (uint32_t)parse_num(optarg, 1000, 3600000, "--ping-interval"); break;
      case 'v': verbosity = 3; break;
      case 'q': verbosity = 1; break;
      case 'h': usage(stdout); return 0;
      default: usage(stderr); return 2;
    }
  }
  if (optind != argc || !key_path || (!allow_path && !open_mode) || (allow_path && open_mode)) {
    fprintf(stderr, "ternd: need --key, and exactly one of --allow or --open\n");
    usage(stderr);
    return 2;
  }
  cfg.bind_host = host;
  if (mkdir(data_dir, 0700) != 0 && errno != EEXIST) {
    say(0, "cannot create --data-dir %s: %s", data_dir, strerror(errno));
    return 1;
  }
  char store_path[4096];
  snprintf(store_path, sizeof(store_path), "%s/relay.db", data_dir);
  cfg.store_path = store_path;

  int rc = tern_keypair_load(key_path, &cfg.keypair);
  if (rc) {
    say(0, "cannot load relay key %s: %s", key_path, tern_strerror(rc));
    return 1;
  }
  auth_state auth = {.path = allow_path};
  if (allow_path) {
    char err[512];
    rc = allowlist_load(&auth.list, allow_path, err, sizeof(err));
    if (rc) {
      say(0, "cannot load allow-list: %s", err);
      return 1;
    }
    cfg.auth = auth_cb;
    cfg.auth_ctx = &auth;
    cfg.user_exists = user_exists_cb;
    cfg.user_exists_ctx = &auth;
    cfg.may_send = may_send_cb;
    cfg.may_send_ctx = &auth;
  }
  cfg.log = relay_log;

  /* Signals arrive through a signalfd, so the poll loop sees them. */
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGINT);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGHUP);
  sigprocmask(SIG_BLOCK, &mask, NULL);
  int sfd = signalfd(-1, &mask, SFD_CLOEXEC);
  if (sfd < 0) {
    say(0, "signalfd: %s", strerror(errno));
    return 1;
  }

  /* SQLite's statement journal takes a 64 KiB chunk for every store
   * operation and frees it when the operation ends. With glibc's default
   * trim threshold the top of the heap then goes back to the kernel and is
   * taken again each time: a brk pair per stored message, and a TLB
   * shootdown on every CPU with each. That was a fifth of ternd's CPU in a
   * burst of 3000 messages (bench/README.md, F5). Keep up to 32 MiB of
   * freed memory for reuse instead. */
  (void)mallopt(M_TRIM_THRESHOLD, 32 << 20);

  tern_relay *r;
  errno = 0;
  rc = tern_relay_new(&r, &cfg);
  if (rc) {
    say(0, "cannot start relay on %s%s%s:%u: %s%s%s", strchr(host, ':') && host[0] != '[' ? "[" : "",
        host, strchr(host, ':') && host[0] != '[' ? "]" : "", cfg.port, tern_strerror(rc),
        rc == TERN_EADDR && errno ? ": " : "", rc == TERN_EADDR && errno ? strerror(errno) : "");
    return 1;
  }
  uint16_t tcp_bound = 0;
  if (tcp_port >= 0 && (rc = tern_relay_listen_tcp(r, (uint16_t)tcp_port, &tcp_bound)) != 0) {
    say(0, "cannot listen on TCP port %ld: %s%s%s", tcp_port, tern_strerror(rc),
        rc == TERN_EADDR ? ": " : "", rc == TERN_EADDR ? strerror(errno) : "");
    tern_relay_free(r);
    return 1;
  }
  char pub[TERN_KEY_HEX_BYTES];
  tern_key_to_hex(cfg.keypair.public_key, pub);
  int bare_v6 = strchr(host, ':') && host[0] != '[';
  char tcp_text[32] = "";
  if (tcp_port >= 0) snprintf(tcp_text, sizeof(tcp_text), ", TCP port %u", tcp_bound);
  say(2, "listening on %s%s%s:%u (UDP%s%s); relay public key (hex) %s", bare_v6 ? "[" : "", host,
      bare_v6 ? "]" : "", tern_relay_port(r),
      strcmp(host, "::") == 0 || strcmp(host, "[::]") == 0 ? ", IPv4 and IPv6" : "", tcp_text, pub);
  say(2, "store %s (%s; undelivered messages kept %llu days; %llu KiB disk reserve)", store_path,
      cfg.durable_fsync ? "fsync per group commit" : "no fsync",
      (unsigned long long)(cfg.retention_ms / 86400000ull),
      (unsigned long long)(cfg.store_reserve_bytes / 1024));
  if (open_mode)
    say(1, "--open: ANY client key may connect under any name it asks for; "
           "use --allow for anything but development");
  else
    say(2, "allow-list %s: %zu keys, %zu users", allow_path, auth.list.count, auth.list.nusers);
  if (port_file) {
    FILE *f = fopen(port_file, "w");
    if (!f || fprintf(f, "%u\n", tern_relay_port(r)) < 0 || fclose(f) != 0) {
      say(0, "cannot write --port-file %s: %s", port_file, strerror(errno));
      tern_relay_free(r);
      return 1;
    }
  }

  int running = 1, status = 0;
  while (running) {
    struct pollfd pf[2] = {{.fd = tern_relay_fd(r), .events = POLLIN},
                           {.fd = sfd, .events = POLLIN}};
    int timeout = tern_relay_timeout_ms(r);
    if (poll(pf, 2, timeout) < 0 && errno != EINTR) {
      say(0, "poll: %s", strerror(errno));
      status = 1;
      break;
    }
    if (pf[1].revents & POLLIN) {
      struct signalfd_siginfo si;
      if (read(sfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
        if (si.ssi_signo == SIGHUP && allow_path) {
          allowlist fresh;
          char err[512];
          if (allowlist_load(&fresh, allow_path, err, sizeof(err)) == 0) {
            allowlist_free(&auth.list);
            auth.list = fresh;
            say(2, "allow-list reloaded: %zu keys, %zu users", auth.list.count, auth.list.nusers);
            int n = tern_relay_recheck_auth(r);
            if (n) say(2, "%d peer(s) no longer allowed were disconnected", n);
          } else {
            say(0, "allow-list reload failed, keeping the old list: %s", err);
          }
        } else if (si.ssi_signo == SIGINT || si.ssi_signo == SIGTERM) {
          say(2, "signal %u: shutting down", si.ssi_signo);
          running = 0;
        }
      }
    }
    if (tern_relay_service(r, 0) != 0) {
      say(0, "relay socket failed; exiting");
      status = 1;
      break;
    }
  }
  tern_relay_stats st;
  tern_relay_get_stats(r, &st);
  say(2, "stopped: %llu handshakes ok, %llu failed; messages %llu stored, %llu delivered, "
         "%llu resends deduped, %llu refused, %llu busy, %llu expired",
      (unsigned long long)st.handshakes_ok, (unsigned long long)st.handshakes_failed,
      (unsigned long long)st.messages_stored, (unsigned long long)st.messages_delivered,
      (unsigned long long)st.messages_deduped, (unsigned long long)st.messages_refused,
      (unsigned long long)st.messages_busy, (unsigned long long)st.messages_expired);
  say(2, "paths: %llu sessions moved to a new address; %llu new clients refused (full)",
      (unsigned long long)st.sessions_moved, (unsigned long long)st.connects_refused_full);
  say(2, "probes: %llu requests, %llu replies, %llu rejected, %llu rate-limited",
      (unsigned long long)st.probe_requests, (unsigned long long)st.probe_replies,
      (unsigned long long)st.probe_rejected, (unsigned long long)st.probe_limited);
  tern_relay_free(r);
  allowlist_free(&auth.list);
  close(sfd);
  return status;
}
