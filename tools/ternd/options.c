/*
 * ternd's settings from the command line and the config file. One table of
 * keys serves both: a long flag --NAME and a file line "NAME = VALUE" go
 * through the same parser, so the file takes every setting the flags do,
 * with the same checks. The file is INI without sections, read by libinih
 * through a line-counting reader (so that a bad key's line is known).
 */
#include "options.h"

#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <ini.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum {
  K_KEY, K_ALLOW, K_OPEN, K_LISTEN, K_LISTEN_TCP, K_PORT_FILE, K_DATA_DIR, K_RETENTION,
  K_NO_FSYNC, K_STORE_RESERVE, K_HS_TIMEOUT, K_MAX_PEERS, K_MAX_MSG, K_PING, K_NO_PROBES,
  K_COOKIES,
  K_METRICS, K_ADMIN_SOCKET, K_VERBOSE, K_QUIET, K_TOKEN_KEY, K_REVOKED, K_DRAIN_DEADLINE,
  K_DRAIN_SPREAD, K_RCPT_MSGS, K_RCPT_BYTES, K_SEND_MSGS, K_SEND_BYTES,
  K_DELIVER_BUDGET, K_SEND_RATE, K_SEND_RATE_BYTES, K_PUSH_URL, K_PUSH_SECRET, K_PUSH_INTERVAL,
  K_PUSH_MAX, K_PRESENCE, K_NO_COPIES, K_STORE, NKEYS
};
_Static_assert(NKEYS <= TERND_MAX_KEYS, "ternd_opts.source is too small");

typedef struct keydef {
  const char *name;
  int takes_value; /* 0: a flag (true/false in the file) */
  long lo, hi;     /* numbers: the range */
} keydef;

static const keydef keys[NKEYS] = {
    [K_KEY] = {"key", 1, 0, 0},
    [K_ALLOW] = {"allow", 1, 0, 0},
    [K_OPEN] = {"open", 0, 0, 0},
    [K_LISTEN] = {"listen", 1, 0, 0},
    [K_LISTEN_TCP] = {"listen-tcp", 1, 0, 65535},
    [K_PORT_FILE] = {"port-file", 1, 0, 0},
    [K_DATA_DIR] = {"data-dir", 1, 0, 0},
    [K_RETENTION] = {"retention-days", 1, 1, 3650},
    [K_NO_FSYNC] = {"no-fsync", 0, 0, 0},
    [K_STORE_RESERVE] = {"store-reserve", 1, 0, 16L << 20},
    [K_HS_TIMEOUT] = {"handshake-timeout", 1, 100, 600000},
    [K_MAX_PEERS] = {"max-peers", 1, 1, TERN_RELAY_MAX_PEERS},
    [K_MAX_MSG] = {"max-message-size", 1, 1, TERN_MESSAGE_MAX},
    [K_PING] = {"ping-interval", 1, 1000, 3600000},
    [K_NO_PROBES] = {"no-probes", 0, 0, 0},
    [K_COOKIES] = {"cookies", 1, 0, 0},
    [K_METRICS] = {"metrics", 1, 0, 0},
    [K_ADMIN_SOCKET] = {"admin-socket", 1, 0, 0},
    [K_VERBOSE] = {"verbose", 0, 0, 0},
    [K_QUIET] = {"quiet", 0, 0, 0},
    [K_TOKEN_KEY] = {"token-key", 1, 0, 0},
    [K_REVOKED] = {"revoked", 1, 0, 0},
    [K_DRAIN_DEADLINE] = {"drain-deadline", 1, 1, 3600},
    [K_DRAIN_SPREAD] = {"drain-spread", 1, 0, 3600},
    [K_RCPT_MSGS] = {"recipient-max-messages", 1, 0, 1L << 40},
    [K_RCPT_BYTES] = {"recipient-max-bytes", 1, 0, 1L << 50},
    [K_SEND_MSGS] = {"sender-max-messages", 1, 0, 1L << 40},
    [K_SEND_BYTES] = {"sender-max-bytes", 1, 0, 1L << 50},
    [K_DELIVER_BUDGET] = {"deliver-budget", 1, 0, 1L << 50},
    [K_SEND_RATE] = {"send-rate", 1, 0, 1L << 30},
    [K_SEND_RATE_BYTES] = {"send-rate-bytes", 1, 0, 1L << 40},
    [K_PUSH_URL] = {"push-url", 1, 0, 0},
    [K_PUSH_SECRET] = {"push-secret", 1, 0, 0},
    [K_PUSH_INTERVAL] = {"push-interval", 1, 1, 3600},
    [K_PUSH_MAX] = {"push-max-pending", 1, 1, 1000000},
    [K_PRESENCE] = {"presence", 0, 0, 0},
    [K_NO_COPIES] = {"no-copies", 0, 0, 0},
    [K_STORE] = {"store", 1, 0, 0},
};

/* getopt values of the flags that are not keys. */
enum { OPT_HELP = 'h', OPT_VERSION = 'V', OPT_CONFIG = 1000, OPT_CHECK, OPT_KEY0 = 2000 };

static void usage(FILE *f) {
  fprintf(f,
          "usage: ternd --key KEYFILE (--allow FILE | --open | --token-key KEY) [options]\n"
          "       ternd --config FILE [options]\n"
          "       ternd --check-config [--config FILE] [options]\n"
          "\n"
          "The tern relay. Clients connect over UDP, prove their key in a Noise IK\n"
          "handshake, and exchange sealed messages through it.\n"
          "\n"
          "  --config FILE         read settings from FILE: one 'key = value' a line, the\n"
          "                        keys named as the flags below without '--' (a flag\n"
          "                        takes true or false there); '#' or ';' starts a\n"
          "                        comment line. Flags given here override the file\n"
          "  --check-config        check the settings (the file, the flags, the key and\n"
          "                        the allow-list), print them with where each came\n"
          "                        from, and exit: 0 if they are good, 1 if not\n"
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
          "  --token-key HEX|FILE  admit devices whose handshake carries a token signed\n"
          "                        by this backend Ed25519 public key (spec/tokens.md;\n"
          "                        tern-token keygen makes one), as the token's user.\n"
          "                        With --allow or --open too, devices without a token\n"
          "                        go by those; alone, they are refused\n"
          "  --revoked FILE        token ids (32 hex digits) and device keys (64) whose\n"
          "                        tokens are refused, one a line; reloaded with the\n"
          "                        allow-list on SIGHUP, and sessions it now names are\n"
          "                        disconnected\n"
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
          "  --store nats://HOST:PORT[,nats://...][?stream=NAME&replicas=N&snapshot=E&check=C&audit=A]\n"
          "                        keep messages in a NATS JetStream cluster shared by\n"
          "                        several relays (spec/store.md, \"The cluster\n"
          "                        store\") instead of DIR/relay.db; refuses to start\n"
          "                        if the cluster is unreachable or has JetStream off.\n"
          "                        The log is compacted by a snapshot every E entries\n"
          "                        (default 100000); the relays compare a hash of\n"
          "                        every C entries they took (default 64, 0: off);\n"
          "                        audit=A logs a digest of the replica every A\n"
          "                        entries, to compare relays\n"
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
          "  --recipient-max-messages N\n"
          "                        quota of one user's inbox: messages held for it until\n"
          "                        all its devices have them (default 100000; 0: none).\n"
          "                        Past it a sender gets FAILED with TERN_EQUOTA\n"
          "  --recipient-max-bytes B\n"
          "                        the same in body bytes (default 1073741824)\n"
          "  --sender-max-messages N\n"
          "                        quota of what one user sent that is held, across its\n"
          "                        recipients (default 100000; 0: none)\n"
          "  --sender-max-bytes B  the same in body bytes (default 1073741824)\n"
          "  --deliver-budget B    bytes of deliveries the relay keeps in flight to devices\n"
          "                        that have not acknowledged them, all sessions together\n"
          "                        (default 268435456; 0: none). Past it deliveries wait\n"
          "                        in the store until acknowledgements free room\n"
          "  --send-rate N         messages a second one device may send, in bursts of up\n"
          "                        to 10 s worth (default 1000; 0: none). Past it the\n"
          "                        sender gets BUSY with TERN_ERATE and sends again later\n"
          "  --send-rate-bytes B   the same in body bytes a second (default 16777216)\n"
          "  --push-url URL        tell the app's backend, by an HTTP POST to URL, when\n"
          "                        messages wait for a device that is not connected\n"
          "                        (user, device key, sender, count; never the content;\n"
          "                        spec/push.md). Default: no push\n"
          "  --push-secret FILE    its first line goes as 'Authorization: Bearer ...'\n"
          "                        (read at start and on SIGHUP)\n"
          "  --push-interval S     at most one POST per device every S seconds; what\n"
          "                        comes between is folded into the next (default 30)\n"
          "  --push-max-pending N  devices with a POST due or retrying, at most\n"
          "                        (default 10000); past it new ones are dropped, logged\n"
          "  --ping-interval MS    ENet ping for clients that announce no keepalive of\n"
          "                        their own (default 60000; spec/keepalive.md)\n"
          "  --presence            tell users whether their contacts are online and when\n"
          "                        they were last seen: with --allow, users the list\n"
          "                        lets write to each other both ways; with --open,\n"
          "                        everyone (spec/messages.md §9.1). Default: off\n"
          "  --no-probes           do not answer NAT-timeout probes (clients then keep\n"
          "                        a conservative keepalive; spec/keepalive.md)\n"
          "  --no-copies           send no redundant copies of small DELIVERs (fewer\n"
          "                        bytes, a longer tail under loss; spec/messages.md §8)\n"
          "  --cookies MODE        when a CONNECT from a new UDP address must first\n"
          "                        show that the address receives (a COOKIE round\n"
          "                        trip; spoofed CONNECTs then get one small reply and\n"
          "                        hold no slot): auto (default: while 64 or more new\n"
          "                        connections are pending, a flood), always, never\n"
          "  --metrics IP:PORT     serve Prometheus metrics over HTTP at\n"
          "                        http://IP:PORT/metrics (an IP literal; keep it on\n"
          "                        loopback or a private network: there is no TLS and\n"
          "                        no authentication). Default: off\n"
          "  --admin-socket PATH   serve ternctl on a Unix socket at PATH, mode 0600\n"
          "                        (ternd's user only): status, stats, sessions, kick,\n"
          "                        reload, drain. Removed at exit. Default: none\n"
          "  --drain-deadline S    on SIGTERM (or ternctl drain) ternd drains: it takes\n"
          "                        no new sessions, tells every client to reconnect\n"
          "                        (elsewhere if it can) after a delay of its own, and\n"
          "                        exits once all have gone or after S seconds, its\n"
          "                        store committed (default 20; a second SIGTERM, or\n"
          "                        SIGINT, stops at once)\n"
          "  --drain-spread S      the clients' delays are spread evenly over S seconds,\n"
          "                        so N clients return at N/S a second (default 10)\n"
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

int ternd_split_hostport(const char *s, char *host, size_t cap, uint16_t *port) {
  const char *colon = strrchr(s, ':');
  if (!colon || (size_t)(colon - s) >= cap) return -1;
  char *end;
  errno = 0;
  long p = strtol(colon + 1, &end, 10);
  if (errno || *end || p < 0 || p > 65535 || colon[1] == 0) return -1;
  memcpy(host, s, (size_t)(colon - s));
  host[colon - s] = 0;
  if (!host[0]) snprintf(host, cap, "::");
  *port = (uint16_t)p;
  return 0;
}

static int set_str(char **slot, const char *v, char *err, size_t cap) {
  if (!v[0]) {
    snprintf(err, cap, "wants a value");
    return -1;
  }
  char *copy = strdup(v);
  if (!copy) {
    snprintf(err, cap, "out of memory");
    return -1;
  }
  free(*slot);
  *slot = copy;
  return 0;
}

static int parse_bool(const char *v, int *out, char *err, size_t cap) {
  static const char *yes[] = {"true", "yes", "on", "1"}, *no[] = {"false", "no", "off", "0"};
  for (size_t i = 0; i < 4; i++) {
    if (strcasecmp(v, yes[i]) == 0) return *out = 1, 0;
    if (strcasecmp(v, no[i]) == 0) return *out = 0, 0;
  }
  snprintf(err, cap, "wants true or false, not '%s'", v);
  return -1;
}

static int parse_long(const keydef *k, const char *v, long *out, char *err, size_t cap) {
  char *end;
  errno = 0;
  long n = strtol(v, &end, 10);
  if (errno || !v[0] || *end || n < k->lo || n > k->hi) {
    snprintf(err, cap, "must be a number from %ld to %ld, not '%s'", k->lo, k->hi, v);
    return -1;
  }
  *out = n;
  return 0;
}

/* "IP:PORT" with an IP literal ("[V6]:PORT" for IPv6). */
static int parse_metrics(ternd_opts *o, const char *v, char *err, size_t cap) {
  char host[256];
  uint16_t port;
  unsigned char sa[16];
  if (ternd_split_hostport(v, host, sizeof(host), &port) == 0) {
    size_t n = strlen(host);
    int v6 = n > 2 && host[0] == '[' && host[n - 1] == ']';
    if (v6) {
      memmove(host, host + 1, n - 2);
      host[n - 2] = 0;
    }
    if (inet_pton(v6 ? AF_INET6 : AF_INET, host, sa) == 1) {
      snprintf(o->metrics_host, sizeof(o->metrics_host), "%s", host);
      o->metrics_port = port;
      o->metrics_on = 1;
      return 0;
    }
  }
  snprintf(err, cap, "wants IP:PORT (an IPv4 address, or [IPv6]), not '%s'", v);
  return -1;
}

/* tern_relay_config.cookies by value: TERN_RELAY_COOKIES_AUTO, _ALWAYS, _NEVER. */
static const char *const cookie_modes[3] = {"auto", "always", "never"};
_Static_assert(TERN_RELAY_COOKIES_AUTO == 0 && TERN_RELAY_COOKIES_ALWAYS == 1 &&
                   TERN_RELAY_COOKIES_NEVER == 2,
               "cookie_modes is indexed by the policy");

/* Applies one setting; `v` is "true" for a flag given on the command line. */
static int apply(ternd_opts *o, int id, const char *v, char *err, size_t cap) {
  const keydef *k = &keys[id];
  long n = 0;
  int b = 0;
  if (!k->takes_value && parse_bool(v, &b, err, cap) != 0) return -1;
  if (k->takes_value && k->hi && parse_long(k, v, &n, err, cap) != 0) return -1;
  tern_relay_config *c = &o->cfg;
  switch (id) {
    case K_KEY: return set_str(&o->key_path, v, err, cap);
    case K_ALLOW: return set_str(&o->allow_path, v, err, cap);
    case K_PORT_FILE: return set_str(&o->port_file, v, err, cap);
    case K_DATA_DIR: return set_str(&o->data_dir, v, err, cap);
    case K_STORE:
      if (strncmp(v, "nats://", 7) != 0) {
        snprintf(err, cap, "store: a cluster url nats://HOST:PORT[,...] (got \"%s\"); without\n"
                 "--store messages are kept in --data-dir", v);
        return -1;
      }
      return set_str(&o->store_url, v, err, cap);
    case K_ADMIN_SOCKET: return set_str(&o->admin_path, v, err, cap);
    case K_TOKEN_KEY: return set_str(&o->token_key, v, err, cap);
    case K_PUSH_URL:
      if (strncmp(v, "http://", 7) != 0 && strncmp(v, "https://", 8) != 0) {
        snprintf(err, cap, "wants an http:// or https:// URL, not '%s'", v);
        return -1;
      }
      return set_str(&o->push_url, v, err, cap);
    case K_PUSH_SECRET: return set_str(&o->push_secret_path, v, err, cap);
    case K_PUSH_INTERVAL: o->push_interval_s = (uint32_t)n; return 0;
    case K_PUSH_MAX: o->push_max_pending = (uint32_t)n; return 0;
    case K_PRESENCE: o->presence = b; return 0;
    case K_REVOKED: return set_str(&o->revoked_path, v, err, cap);
    case K_OPEN: o->open_mode = b; return 0;
    case K_DRAIN_DEADLINE: o->drain_deadline_s = (uint32_t)n; return 0;
    case K_DRAIN_SPREAD: o->drain_spread_s = (uint32_t)n; return 0;
    case K_LISTEN:
      if (ternd_split_hostport(v, o->host, sizeof(o->host), &c->port) != 0) {
        snprintf(err, cap, "wants HOST:PORT, not '%s'", v);
        return -1;
      }
      return 0;
    case K_LISTEN_TCP: o->tcp_port = n; return 0;
    case K_RETENTION: c->retention_ms = (uint64_t)n * 86400000ull; return 0;
    case K_NO_FSYNC: c->durable_fsync = !b; return 0;
    case K_STORE_RESERVE: c->store_reserve_bytes = (uint64_t)n * 1024u; return 0;
    case K_HS_TIMEOUT: c->handshake_timeout_ms = (uint32_t)n; return 0;
    case K_MAX_PEERS: c->max_peers = (uint32_t)n; return 0;
    case K_MAX_MSG: c->max_message_size = (uint32_t)n; return 0;
    case K_RCPT_MSGS: c->recipient_max_messages = (uint64_t)n; return 0;
    case K_RCPT_BYTES: c->recipient_max_bytes = (uint64_t)n; return 0;
    case K_SEND_MSGS: c->sender_max_messages = (uint64_t)n; return 0;
    case K_SEND_BYTES: c->sender_max_bytes = (uint64_t)n; return 0;
    case K_DELIVER_BUDGET: c->deliver_budget_bytes = (uint64_t)n; return 0;
    case K_SEND_RATE: c->send_rate_messages = (uint32_t)n; return 0;
    case K_SEND_RATE_BYTES: c->send_rate_bytes = (uint64_t)n; return 0;
    case K_PING: c->ping_interval_ms = (uint32_t)n; return 0;
    case K_NO_PROBES: c->probes = !b; return 0;
    case K_NO_COPIES: c->no_copies = b; return 0;
    case K_COOKIES:
      for (int m = 0; m < 3; m++)
        if (strcmp(v, cookie_modes[m]) == 0) {
          c->cookies = m;
          return 0;
        }
      snprintf(err, cap, "wants always, auto or never, not '%s'", v);
      return -1;
    case K_METRICS: return parse_metrics(o, v, err, cap);
    case K_VERBOSE: o->verbosity = b ? 3 : o->verbosity == 3 ? 2 : o->verbosity; return 0;
    case K_QUIET: o->verbosity = b ? 1 : o->verbosity == 1 ? 2 : o->verbosity; return 0;
    default: snprintf(err, cap, "not a setting"); return -1;
  }
}

/* The config file, as libinih reads it. */
typedef struct file_ctx {
  FILE *f;
  ternd_opts *o;
  int line;      /* the line libinih is parsing */
  int next_line; /* the line the next read starts */
  int err_line;  /* the first error this file found (0: none) */
  char err[512];
} file_ctx;

static void file_error(file_ctx *fc, const char *fmt, const char *a, const char *b) {
  if (fc->err_line) return; /* the first one is reported */
  fc->err_line = fc->line;
  snprintf(fc->err, sizeof(fc->err), fmt, a, b);
}

/* fgets that counts lines. A line too long for libinih (INI_MAX_LINE) is
 * an error of its own, not two half lines. */
static char *file_reader(char *str, int num, void *stream) {
  file_ctx *fc = stream;
  fc->line = fc->next_line;
  if (!fgets(str, num, fc->f)) return NULL;
  size_t n = strlen(str);
  if (n && str[n - 1] == '\n') {
    fc->next_line++;
  } else if (!feof(fc->f)) {
    int ch;
    while ((ch = fgetc(fc->f)) != EOF && ch != '\n') {}
    fc->next_line++;
    char max[16];
    snprintf(max, sizeof(max), "%d", num - 2);
    file_error(fc, "line longer than %s characters%s", max, "");
    str[0] = 0;
  }
  /* libinih reads an indented line as the continuation of the value
   * before (a second value for that key): say what it is. Indented
   * comments and blank lines are fine. */
  size_t sp = strspn(str, " \t");
  if (sp && str[sp] && str[sp] != '\n' && str[sp] != '\r' && str[sp] != '#' && str[sp] != ';') {
    file_error(fc, "a line may not start with a space or tab%s%s", "", "");
    str[0] = 0;
  }
  return str;
}

static int find_key(const char *name) {
  for (int i = 0; i < NKEYS; i++)
    if (strcmp(keys[i].name, name) == 0) return i;
  return -1;
}

static int file_handler(void *user, const char *section, const char *name, const char *value) {
  file_ctx *fc = user;
  if (section[0]) {
    file_error(fc, "key '%s' is in section [%s]: ternd's keys take no section", name, section);
    return 0;
  }
  int id = find_key(name);
  if (id < 0) {
    file_error(fc, "unknown key '%s'%s (the keys are the long flags of ternd --help)", name, "");
    return 0;
  }
  if (fc->o->source[id] > 0) {
    char first[16];
    snprintf(first, sizeof(first), "%d", fc->o->source[id]);
    file_error(fc, "key '%s' given twice (first on line %s)", name, first);
    return 0;
  }
  char why[400];
  if (apply(fc->o, id, value, why, sizeof(why)) != 0) {
    file_error(fc, "key '%s': %s", name, why);
    return 0;
  }
  fc->o->source[id] = fc->line;
  fc->o->file_keys++;
  return 1;
}

static int load_file(ternd_opts *o, const char *path) {
  file_ctx fc = {.o = o, .next_line = 1};
  fc.f = fopen(path, "r");
  if (!fc.f) {
    fprintf(stderr, "ternd: cannot read config file %s: %s\n", path, strerror(errno));
    return -1;
  }
  int rc = ini_parse_stream(file_reader, &fc, file_handler, &fc);
  fclose(fc.f);
  if (fc.err_line && (rc <= 0 || fc.err_line <= rc)) {
    fprintf(stderr, "ternd: %s:%d: %s\n", path, fc.err_line, fc.err);
    return -1;
  }
  if (rc > 0) {
    fprintf(stderr, "ternd: %s:%d: not a 'key = value' line\n", path, rc);
    return -1;
  }
  if (rc < 0) {
    fprintf(stderr, "ternd: %s: cannot parse (out of memory)\n", path);
    return -1;
  }
  return 0;
}

static void defaults(ternd_opts *o) {
  memset(o, 0, sizeof(*o));
  tern_relay_config_default(&o->cfg);
  snprintf(o->host, sizeof(o->host), "::");
  o->tcp_port = -1;
  o->drain_deadline_s = 20;
  o->drain_spread_s = 10;
  o->push_interval_s = 30;
  o->push_max_pending = 10000;
  o->verbosity = 2;
  o->data_dir = strdup("ternd-data");
}

int ternd_opts_parse(ternd_opts *o, int argc, char **argv) {
  defaults(o);
  if (!o->data_dir) return TERND_EXIT_BAD;
  struct option opts[NKEYS + 5];
  size_t n = 0;
  for (int i = 0; i < NKEYS; i++)
    opts[n++] = (struct option){keys[i].name, keys[i].takes_value ? required_argument : no_argument,
                                0, OPT_KEY0 + i};
  opts[n++] = (struct option){"config", required_argument, 0, OPT_CONFIG};
  opts[n++] = (struct option){"check-config", no_argument, 0, OPT_CHECK};
  opts[n++] = (struct option){"help", no_argument, 0, OPT_HELP};
  opts[n++] = (struct option){"version", no_argument, 0, OPT_VERSION};
  opts[n] = (struct option){0, 0, 0, 0};
  /* First pass: what is not a setting (and bad flags); the file comes
   * before the flags that override it. */
  int c;
  optind = 0;
  while ((c = getopt_long(argc, argv, "vqh", opts, NULL)) != -1) {
    if (c == OPT_HELP) {
      usage(stdout);
      return TERND_EXIT_OK;
    }
    if (c == OPT_VERSION) {
#ifdef TERN_HAVE_CLUSTER
      printf("ternd %s (libtern %s, cluster store)\n", TERN_VERSION_STRING, tern_version());
#else
      printf("ternd %s (libtern %s)\n", TERN_VERSION_STRING, tern_version());
#endif
      return TERND_EXIT_OK;
    }
    if (c == OPT_CONFIG) {
      char err[64];
      if (set_str(&o->config_path, optarg, err, sizeof(err)) != 0) {
        fprintf(stderr, "ternd: --config %s\n", err);
        return TERND_EXIT_BAD;
      }
    } else if (c == OPT_CHECK) {
      o->check_only = 1;
    } else if (c == '?') {
      usage(stderr);
      return TERND_EXIT_BAD;
    }
  }
  if (optind != argc) {
    fprintf(stderr, "ternd: unexpected argument '%s'\n", argv[optind]);
    usage(stderr);
    return TERND_EXIT_BAD;
  }
  if (o->config_path && load_file(o, o->config_path) != 0) return TERND_EXIT_FILE;
  optind = 0;
  while ((c = getopt_long(argc, argv, "vqh", opts, NULL)) != -1) {
    int id = c == 'v' ? K_VERBOSE : c == 'q' ? K_QUIET : c - OPT_KEY0;
    if (id < 0 || id >= NKEYS) continue;
    char err[400];
    if (apply(o, id, keys[id].takes_value ? optarg : "true", err, sizeof(err)) != 0) {
      fprintf(stderr, "ternd: --%s %s\n", keys[id].name, err);
      return TERND_EXIT_BAD;
    }
    o->source[id] = -1;
    o->flags_used++;
  }
  if (!o->key_path || (!o->allow_path && !o->open_mode && !o->token_key) ||
      (o->allow_path && o->open_mode) || (o->revoked_path && !o->token_key)) {
    fprintf(stderr, "ternd: need --key, and exactly one of --allow or --open, or --token-key "
            "(alone or with either; --revoked needs --token-key)%s%s%s\n",
            o->config_path ? " (keys 'key', 'allow', 'open', 'token-key', 'revoked' of " : "",
            o->config_path ? o->config_path : "", o->config_path ? ", or flags)" : "");
    if (!o->config_path) usage(stderr);
    return o->config_path ? TERND_EXIT_FILE : TERND_EXIT_BAD;
  }
  return TERND_RUN;
}

void ternd_opts_print(const ternd_opts *o, FILE *f) {
  for (int id = 0; id < NKEYS; id++) {
    char v[300];
    const tern_relay_config *c = &o->cfg;
    const char *s = NULL;
    v[0] = 0;
    switch (id) {
      case K_KEY: s = o->key_path; break;
      case K_ALLOW: s = o->allow_path; break;
      case K_PORT_FILE: s = o->port_file; break;
      case K_DATA_DIR: s = o->data_dir; break;
      case K_STORE: s = o->store_url; break;
      case K_ADMIN_SOCKET: s = o->admin_path; break;
      case K_TOKEN_KEY: s = o->token_key; break;
      case K_PUSH_URL: s = o->push_url; break;
      case K_PUSH_SECRET: s = o->push_secret_path; break;
      case K_PUSH_INTERVAL: snprintf(v, sizeof(v), "%u", o->push_interval_s); break;
      case K_PUSH_MAX: snprintf(v, sizeof(v), "%u", o->push_max_pending); break;
      case K_PRESENCE: s = o->presence ? "true" : "false"; break;
      case K_REVOKED: s = o->revoked_path; break;
      case K_OPEN: s = o->open_mode ? "true" : "false"; break;
      case K_DRAIN_DEADLINE: snprintf(v, sizeof(v), "%u", o->drain_deadline_s); break;
      case K_DRAIN_SPREAD: snprintf(v, sizeof(v), "%u", o->drain_spread_s); break;
      case K_LISTEN: snprintf(v, sizeof(v), "%s:%u", o->host, c->port); break;
      case K_LISTEN_TCP: if (o->tcp_port >= 0) snprintf(v, sizeof(v), "%ld", o->tcp_port); break;
      case K_RETENTION: snprintf(v, sizeof(v), "%llu", (unsigned long long)(c->retention_ms / 86400000ull)); break;
      case K_NO_FSYNC: s = c->durable_fsync ? "false" : "true"; break;
      case K_STORE_RESERVE: snprintf(v, sizeof(v), "%llu", (unsigned long long)(c->store_reserve_bytes / 1024)); break;
      case K_HS_TIMEOUT: snprintf(v, sizeof(v), "%u", c->handshake_timeout_ms); break;
      case K_MAX_PEERS: snprintf(v, sizeof(v), "%u", c->max_peers); break;
      case K_MAX_MSG: snprintf(v, sizeof(v), "%u", c->max_message_size); break;
      case K_RCPT_MSGS: snprintf(v, sizeof(v), "%llu", (unsigned long long)c->recipient_max_messages); break;
      case K_RCPT_BYTES: snprintf(v, sizeof(v), "%llu", (unsigned long long)c->recipient_max_bytes); break;
      case K_SEND_MSGS: snprintf(v, sizeof(v), "%llu", (unsigned long long)c->sender_max_messages); break;
      case K_SEND_BYTES: snprintf(v, sizeof(v), "%llu", (unsigned long long)c->sender_max_bytes); break;
      case K_DELIVER_BUDGET: snprintf(v, sizeof(v), "%llu", (unsigned long long)c->deliver_budget_bytes); break;
      case K_SEND_RATE: snprintf(v, sizeof(v), "%u", c->send_rate_messages); break;
      case K_SEND_RATE_BYTES: snprintf(v, sizeof(v), "%llu", (unsigned long long)c->send_rate_bytes); break;
      case K_PING: snprintf(v, sizeof(v), "%u", c->ping_interval_ms); break;
      case K_NO_PROBES: s = c->probes ? "false" : "true"; break;
      case K_NO_COPIES: s = c->no_copies ? "true" : "false"; break;
      case K_COOKIES: s = c->cookies >= 0 && c->cookies < 3 ? cookie_modes[c->cookies] : "?"; break;
      case K_METRICS:
        if (o->metrics_on)
          snprintf(v, sizeof(v), "%s%s%s:%u", strchr(o->metrics_host, ':') ? "[" : "", o->metrics_host,
                   strchr(o->metrics_host, ':') ? "]" : "", o->metrics_port);
        break;
      case K_VERBOSE: s = o->verbosity == 3 ? "true" : "false"; break;
      case K_QUIET: s = o->verbosity == 1 ? "true" : "false"; break;
      default: break;
    }
    if (s) snprintf(v, sizeof(v), "%s", s);
    char from[300];
    if (o->source[id] < 0) snprintf(from, sizeof(from), "command line");
    else if (o->source[id] > 0) snprintf(from, sizeof(from), "%s:%d", o->config_path, o->source[id]);
    else snprintf(from, sizeof(from), "default");
    if (v[0]) fprintf(f, "%s = %s  # %s\n", keys[id].name, v, from);
    else fprintf(f, "# %s (not set)\n", keys[id].name);
  }
}

void ternd_opts_free(ternd_opts *o) {
  free(o->config_path);
  free(o->key_path);
  free(o->allow_path);
  free(o->port_file);
  free(o->data_dir);
  free(o->store_url);
  free(o->admin_path);
  free(o->token_key);
  free(o->revoked_path);
  free(o->push_url);
  free(o->push_secret_path);
  memset(o, 0, sizeof(*o));
}
