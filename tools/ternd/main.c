/*
 * ternd: the tern relay server.
 *
 * Takes its settings from flags and a config file (options.c), loads its
 * key, decides who may connect (an allow-list reloaded on SIGHUP, or --open
 * for development, and backend tokens with their revocation list: tokens.c),
 * and runs the relay from a poll loop over the relay's descriptors and a
 * self-pipe its signal handler writes to (POSIX, so it runs wherever the
 * library does). Beside the relay: a metrics endpoint on its
 * own thread (metrics.c), systemd's readiness and watchdog (notify.c), and
 * the admin socket for ternctl (admin.c, commands.c), served from the same
 * poll loop.
 * SIGTERM (or ternctl drain) drains it: no new sessions, every client told
 * to reconnect after a delay of its own (spread over --drain-spread), exit
 * once they have gone or at --drain-deadline. SIGINT, or a second SIGTERM,
 * shuts it down at once, still cleanly, telling every client it is a
 * shutdown.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <malloc.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "admin.h"
#include "allowlist.h"
#include "commands.h"
#include "metrics.h"
#include "notify.h"
#include "options.h"
#include "push.h"
#include "tokens.h"
#include "tern/tern.h"

static int verbosity = 2; /* 0 error, 1 warning, 2 info, 3 debug */
static int to_journal;    /* stderr is the journal: priorities, no timestamps */

static void say(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void say(int level, const char *fmt, ...) {
  if (level > verbosity) return;
  static const char *names[] = {"error", "warning", "info", "debug"};
  int lv = level < 0 ? 0 : level > 3 ? 3 : level;
  if (to_journal) {
    static const char *prio[] = {SD_ERR, SD_WARNING, SD_INFO, SD_DEBUG};
    va_list ap;
    va_start(ap, fmt);
    fputs(prio[lv], stderr);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return;
  }
  char ts[32];
  time_t t = time(NULL);
  struct tm tm;
  gmtime_r(&t, &tm);
  strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%SZ", &tm);
  fprintf(stderr, "%s ternd[%s] ", ts, names[lv]);
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
  tern_relay *relay; /* for the peers a reload no longer allows */
  int tokens;        /* --token-key: users come from tokens too */
  revlist revoked;   /* --revoked FILE's entries */
  const char *revoked_path;
  int open_mode;     /* --open: with --presence, everyone sees everyone */
  ternd_push *push;  /* --push-url: the notifier, whose secret SIGHUP reloads */
  const char *push_secret_path;
} auth_state;

/* The first line of --push-secret FILE, without its newline, into out.
 * Returns 0, or -1 with the reason in err. */
static int read_push_secret(const char *path, char *out, size_t cap, char *err, size_t errcap) {
  FILE *f = fopen(path, "r");
  if (!f) {
    snprintf(err, errcap, "cannot read --push-secret %s: %s", path, strerror(errno));
    return -1;
  }
  int ok = fgets(out, (int)cap, f) != NULL;
  fclose(f);
  if (ok) out[strcspn(out, "\r\n")] = 0;
  if (!ok || !out[0]) {
    snprintf(err, errcap, "--push-secret %s: the first line is empty", path);
    return -1;
  }
  return 0;
}

/* SIGHUP: the push secret again; a bad file keeps the old one. */
static void reload_push_secret(auth_state *a) {
  if (!a->push || !a->push_secret_path) return;
  char secret[1024], err[600];
  if (read_push_secret(a->push_secret_path, secret, sizeof(secret), err, sizeof(err)) != 0) {
    say(0, "push secret reload failed, keeping the old one: %s", err);
    return;
  }
  if (ternd_push_set_secret(a->push, secret) == 0) say(2, "push secret reloaded from %s", a->push_secret_path);
  explicit_bzero(secret, sizeof(secret));
}

/* --token-key without --allow or --open: a device without a token is
 * refused (a NULL auth callback would admit it). */
static int refuse_cb(void *ctx, const uint8_t key[TERN_KEY_BYTES], const char *requested,
                     char user[TERN_USER_MAX + 1]) {
  (void)ctx, (void)key, (void)requested, (void)user;
  return TERN_EUNKNOWNKEY;
}

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
  /* A token's user the list does not name may write to anyone
   * (spec/tokens.md §4.1). */
  if (a->tokens && !allowlist_user_exists(&a->list, from)) return 1;
  return allowlist_may_send(&a->list, from, to);
}

/* --presence: contacts are users the allow-list lets write to each other
 * both ways; a token's user the list does not name is nobody's contact.
 * With --open and no list, everyone (development). */
static int may_see_cb(void *ctx, const char *watcher, const char *user) {
  const auth_state *a = ctx;
  if (!a->path) return a->open_mode;
  return allowlist_user_exists(&a->list, watcher) && allowlist_user_exists(&a->list, user) &&
         allowlist_may_send(&a->list, watcher, user) && allowlist_may_send(&a->list, user, watcher);
}

/* The device keys `now` revokes that `before` (NULL: none) did not are
 * removed from the relay (tern_relay_remove_device): their cursors stop
 * holding their users' messages back. */
static void remove_revoked(auth_state *auth, const revlist *now, const revlist *before) {
  static const uint8_t no_id[TERN_TOKEN_ID_BYTES] = {0};
  int removed = 0;
  for (size_t i = 0; i < now->nkeys; i++) {
    const uint8_t *key = now->keys + i * TERN_KEY_BYTES;
    if (before && revlist_has((void *)before, no_id, key)) continue;
    int rc = tern_relay_remove_device(auth->relay, key);
    if (rc < 0) say(0, "cannot remove a revoked device: %s", tern_strerror(rc));
    else removed += rc;
  }
  if (removed) say(2, "%d revoked device(s) removed from the store", removed);
}

/* Reloads the allow-list and the revocation list, those ternd has (SIGHUP,
 * or ternctl reload, a ternd_reload_fn): both are read before either is
 * replaced, so a bad file keeps both old lists. Logs either way. */
static int reload_allowlist(void *ctx, size_t *keys, size_t *users, int *dropped, char *err,
                            size_t cap) {
  auth_state *auth = ctx;
  allowlist fresh = {0};
  revlist fresh_rev = {0};
  if (auth->path && allowlist_load(&fresh, auth->path, err, cap) != 0) {
    say(0, "allow-list reload failed, keeping the old list: %s", err);
    return -1;
  }
  if (auth->revoked_path && revlist_load(&fresh_rev, auth->revoked_path, err, cap) != 0) {
    say(0, "revocation list reload failed, keeping the old lists: %s", err);
    allowlist_free(&fresh);
    return -1;
  }
  if (auth->path) {
    allowlist_free(&auth->list);
    auth->list = fresh;
    say(2, "allow-list reloaded: %zu keys, %zu users", auth->list.count, auth->list.nusers);
  }
  if (auth->revoked_path) {
    revlist old = auth->revoked;
    auth->revoked = fresh_rev;
    remove_revoked(auth, &auth->revoked, &old);
    revlist_free(&old);
    say(2, "revocation list reloaded: %zu token ids, %zu device keys", auth->revoked.nids,
        auth->revoked.nkeys);
  }
  *keys = auth->list.count;
  *users = auth->list.nusers;
  *dropped = tern_relay_recheck_auth(auth->relay);
  if (*dropped) say(2, "%d peer(s) no longer allowed were disconnected", *dropped);
  return 0;
}

/* "host:port", with brackets around a bare IPv6 host. */
static void addr_text(const char *host, unsigned port, char *buf, size_t cap) {
  int bare_v6 = strchr(host, ':') && host[0] != '[';
  snprintf(buf, cap, "%s%s%s:%u", bare_v6 ? "[" : "", host, bare_v6 ? "]" : "", port);
}

/* --check-config: the settings and the files they name, without binding
 * anything. Prints the settings with their sources; 0 if good, else 1. */
static int check_config(const ternd_opts *o) {
  tern_keypair kp;
  char why[256];
  int rc = tern_keypair_load_why(o->key_path, &kp, why, sizeof(why));
  explicit_bzero(&kp, sizeof(kp));
  if (rc) {
    fprintf(stderr, "ternd: cannot load relay key %s: %s\n", o->key_path, why);
    return 1;
  }
  size_t keys = 0, users = 0;
  if (o->allow_path) {
    allowlist list;
    char err[512];
    if (allowlist_load(&list, o->allow_path, err, sizeof(err)) != 0) {
      fprintf(stderr, "ternd: cannot load allow-list: %s\n", err);
      return 1;
    }
    keys = list.count;
    users = list.nusers;
    allowlist_free(&list);
  }
  char err[512];
  uint8_t tk[32];
  revlist rl;
  if (o->token_key && ternd_token_key_load(o->token_key, tk, err, sizeof(err)) != 0) {
    fprintf(stderr, "ternd: cannot load token key: %s\n", err);
    return 1;
  }
  if (o->revoked_path) {
    if (revlist_load(&rl, o->revoked_path, err, sizeof(err)) != 0) {
      fprintf(stderr, "ternd: cannot load revocation list: %s\n", err);
      return 1;
    }
    revlist_free(&rl);
  }
  ternd_opts_print(o, stdout);
  printf("# configuration OK (%s%s); key %s loads", o->config_path ? "file " : "flags only",
         o->config_path ? o->config_path : "", o->key_path);
  if (o->allow_path) printf("; allow-list %s: %zu keys, %zu users", o->allow_path, keys, users);
  if (o->token_key) printf("; token key loads");
  if (o->revoked_path) printf("; revocation list %s loads", o->revoked_path);
  printf("\n");
  return 0;
}

static void log_stats(const tern_relay_stats *st) {
  say(2, "stopped: %llu handshakes ok, %llu failed; messages %llu stored, %llu delivered, "
         "%llu resends deduped, %llu refused, %llu busy, %llu expired",
      (unsigned long long)st->handshakes_ok, (unsigned long long)st->handshakes_failed,
      (unsigned long long)st->messages_stored, (unsigned long long)st->messages_delivered,
      (unsigned long long)st->messages_deduped, (unsigned long long)st->messages_refused,
      (unsigned long long)st->messages_busy, (unsigned long long)st->messages_expired);
  say(2, "paths: %llu sessions moved to a new address; %llu new clients refused (full)",
      (unsigned long long)st->sessions_moved, (unsigned long long)st->connects_refused_full);
  say(2, "cookies: %llu sent, %llu connects with a cookie, %llu bad",
      (unsigned long long)st->cookies_sent, (unsigned long long)st->cookie_connects,
      (unsigned long long)st->cookies_bad);
  say(2, "probes: %llu requests, %llu replies, %llu rejected, %llu rate-limited",
      (unsigned long long)st->probe_requests, (unsigned long long)st->probe_replies,
      (unsigned long long)st->probe_rejected, (unsigned long long)st->probe_limited);
}

static uint64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static int min_timeout(int a, int b) { return a < 0 ? b : b < 0 ? a : a < b ? a : b; }

/* The self-pipe: SIGINT, SIGTERM and SIGHUP write their number to
 * sig_pipe[1] (on_signal), the poll loop reads it from sig_pipe[0]. */
static int sig_pipe[2] = {-1, -1};

static void on_signal(int signo) {
  int saved = errno;
  unsigned char b = (unsigned char)signo;
  ssize_t w = write(sig_pipe[1], &b, 1); /* a full pipe: signals are waiting already */
  (void)w;
  errno = saved;
}

/* The next signal the handler recorded, or 0 if none is waiting. */
static int next_signal(int fd) {
  unsigned char b;
  return read(fd, &b, 1) == 1 ? b : 0;
}

/* Makes the self-pipe and sends the three signals to it. 0 or -1 (errno). */
static int signals_open(void) {
  if (pipe(sig_pipe) != 0) return -1;
  for (int i = 0; i < 2; i++)
    if (fcntl(sig_pipe[i], F_SETFL, O_NONBLOCK) != 0 || fcntl(sig_pipe[i], F_SETFD, FD_CLOEXEC) != 0)
      return -1;
  struct sigaction sa;
  memset(&sa, 0, sizeof(sa));
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  if (sigaction(SIGINT, &sa, NULL) != 0 || sigaction(SIGTERM, &sa, NULL) != 0 ||
      sigaction(SIGHUP, &sa, NULL) != 0)
    return -1;
  return 0;
}

/* The drain (tern_relay_drain()): started by SIGTERM or ternctl drain. */
typedef struct drain_ctl {
  tern_relay *relay;
  uint32_t spread_s, deadline_s;
  uint64_t started;    /* monotonic ms; 0: not draining */
  uint64_t status_at;  /* next STATUS= with the sessions left */
  int told;            /* sessions told GOAWAY */
} drain_ctl;

/* A ternd_drain_fn (commands.h); the SIGTERM path too. */
static int start_drain(void *ctx, int *told, uint32_t *deadline_s) {
  drain_ctl *d = ctx;
  if (!d->started) {
    d->started = mono_ms();
    d->status_at = d->started;
    d->told = tern_relay_drain(d->relay, d->spread_s * 1000u);
    /* The library logged what it told the sessions; this is ternd's part. */
    say(2, "drain: exiting once every peer has gone, or in %u s", d->deadline_s);
    ternd_notify_stopping("draining");
  }
  if (told) *told = d->told;
  if (deadline_s) *deadline_s = d->deadline_s;
  return 0;
}

/* While draining: 1 when ternd should stop (drained, or the deadline). */
static int drain_over(drain_ctl *d, const tern_relay_stats *st, uint64_t now) {
  if (!d->started) return 0;
  if (tern_relay_drained(d->relay)) {
    say(2, "drained in %llu ms", (unsigned long long)(now - d->started));
    return 1;
  }
  if (now >= d->started + d->deadline_s * 1000ull) {
    say(1, "drain deadline (%u s) passed with %llu peer%s left; stopping", d->deadline_s,
        (unsigned long long)st->peers_held, st->peers_held == 1 ? "" : "s");
    return 1;
  }
  if (now >= d->status_at) {
    char text[96];
    snprintf(text, sizeof(text), "draining: %llu peer%s left", (unsigned long long)st->peers_held,
             st->peers_held == 1 ? "" : "s");
    ternd_notify_status(0, text);
    d->status_at = now + 1000;
  }
  return 0;
}

/* The service loop, until a signal or the end of a drain stops it.
 * Returns the exit status. */
static int serve(tern_relay *r, int sfd, auth_state *auth, ternd_metrics *metrics,
                 ternd_notify *notify, ternd_admin *admin, drain_ctl *drain) {
  int running = 1, status = 0, publish_again = 0;
  tern_relay_stats st;
  tern_relay_get_stats(r, &st);
  /* pf: the signal pipe, the admin socket's, then the relay's (as many as
   * tern_relay_pollfds asks for: one descriptor, or with the poll()
   * backend one per socket). */
  struct pollfd *pf = NULL;
  size_t cap = 0;
  while (running) {
    int nrelay = tern_relay_pollfds(r, NULL, 0);
    size_t need = 1 + 1 + ADMIN_MAX_CONNS + (size_t)(nrelay > 0 ? nrelay : 0);
    if (need > cap) {
      struct pollfd *grown = realloc(pf, need * sizeof(*pf));
      if (!grown) {
        say(0, "out of memory");
        status = 1;
        break;
      }
      pf = grown;
      cap = need;
    }
    pf[0] = (struct pollfd){.fd = sfd, .events = POLLIN};
    int nadmin = admin ? ternd_admin_pollfds(admin, pf + 1, 1 + ADMIN_MAX_CONNS) : 0;
    nrelay = tern_relay_pollfds(r, pf + 1 + nadmin, cap - 1 - (size_t)nadmin);
    int timeout = tern_relay_timeout_ms(r);
    timeout = min_timeout(timeout, ternd_notify_tick(notify, mono_ms(), &st));
    if (admin) timeout = min_timeout(timeout, ternd_admin_timeout(admin, mono_ms()));
    /* A publish skipped (a scrape was copying): try again soon. */
    if (publish_again) timeout = min_timeout(timeout, 10);
    if (drain->started) {
      uint64_t end = drain->started + drain->deadline_s * 1000ull, now = mono_ms();
      timeout = min_timeout(timeout, now >= end ? 0 : (int)(end - now));
      timeout = min_timeout(timeout, 1000); /* the STATUS= line */
    }
    int polled = poll(pf, (nfds_t)(1 + nadmin + nrelay), timeout);
    if (polled < 0 && errno != EINTR) {
      say(0, "poll: %s", strerror(errno));
      status = 1;
      break;
    }
    /* Admin requests first, so that what they change (a kick, a reload)
     * goes out with this round's service. */
    if (admin) ternd_admin_handle(admin, pf + 1, polled > 0 ? nadmin : 0, mono_ms());
    if (pf[0].revents & POLLIN) {
      int signo;
      while ((signo = next_signal(sfd)) > 0) {
        if (signo == SIGHUP && (auth->path || auth->revoked_path || auth->push_secret_path)) {
          size_t keys, users;
          int dropped;
          char err[512];
          if (auth->path || auth->revoked_path)
            (void)reload_allowlist(auth, &keys, &users, &dropped, err, sizeof(err));
          reload_push_secret(auth);
        } else if (signo == SIGTERM && !drain->started) {
          (void)start_drain(drain, NULL, NULL);
        } else if (signo == SIGINT || signo == SIGTERM) {
          say(2, "signal %d%s: shutting down now", signo, drain->started ? " while draining" : "");
          ternd_notify_stopping("shutting down");
          running = 0;
        }
      }
    }
    if (tern_relay_service(r, 0) != 0) {
      say(0, "relay socket failed; exiting");
      status = 1;
      break;
    }
    /* What a scrape sees: the counters as this iteration left them. */
    tern_relay_get_stats(r, &st);
    if (metrics) publish_again = ternd_metrics_publish(metrics, &st);
    if (running && drain_over(drain, &st, mono_ms())) running = 0;
  }
  free(pf);
  return status;
}

/* Opens the relay: store, socket, TCP listener. Logs why not. */
static int open_relay(tern_relay **out, const ternd_opts *o, const tern_relay_config *cfg) {
  char where[300];
  addr_text(o->host, cfg->port, where, sizeof(where));
  errno = 0;
  int rc = tern_relay_new(out, cfg);
  if (rc) {
    say(0, "cannot start relay on %s: %s%s%s", where, tern_strerror(rc),
        rc == TERN_EADDR && errno ? ": " : "", rc == TERN_EADDR && errno ? strerror(errno) : "");
    return rc;
  }
  uint16_t tcp_bound = 0;
  if (o->tcp_port >= 0 && (rc = tern_relay_listen_tcp(*out, (uint16_t)o->tcp_port, &tcp_bound)) != 0) {
    say(0, "cannot listen on TCP port %ld: %s%s%s", o->tcp_port, tern_strerror(rc),
        rc == TERN_EADDR ? ": " : "", rc == TERN_EADDR ? strerror(errno) : "");
    tern_relay_free(*out);
    *out = NULL;
    return rc;
  }
  char pub[TERN_KEY_HEX_BYTES], tcp_text[32] = "";
  tern_key_to_hex(cfg->keypair.public_key, pub);
  if (o->tcp_port >= 0) snprintf(tcp_text, sizeof(tcp_text), ", TCP port %u", tcp_bound);
  addr_text(o->host, tern_relay_port(*out), where, sizeof(where));
  say(2, "listening on %s (UDP%s%s); relay public key (hex) %s", where,
      strcmp(o->host, "::") == 0 || strcmp(o->host, "[::]") == 0 ? ", IPv4 and IPv6" : "",
      tcp_text, pub);
  return 0;
}

int main(int argc, char **argv) {
  ternd_opts o;
  int parsed = ternd_opts_parse(&o, argc, argv);
  if (parsed != TERND_RUN) {
    int code = parsed == TERND_EXIT_OK ? 0 : o.check_only ? 1 : 2;
    ternd_opts_free(&o);
    return code;
  }
  if (o.check_only) {
    int code = check_config(&o);
    ternd_opts_free(&o);
    return code;
  }
  verbosity = o.verbosity;
  to_journal = ternd_stderr_is_journal();
  int status = 1;
  tern_relay_config cfg = o.cfg;
  cfg.bind_host = o.host;
  say(2, "ternd %s (libtern %s) starting; settings from %s%s%s", TERN_VERSION_STRING,
      tern_version(), o.config_path ? o.config_path : "the command line only",
      o.config_path && o.flags_used ? " and the command line" : "",
      o.config_path && !o.flags_used ? " only" : "");
  ternd_notify_status(0, "starting: opening the store");
  auth_state auth = {.path = o.allow_path, .revoked_path = o.revoked_path};
  uint8_t token_key[32];
  ternd_metrics *metrics = NULL;
  ternd_admin *admin = NULL;
  tern_relay *r = NULL;
  int sfd = -1;
  if (mkdir(o.data_dir, 0700) != 0 && errno != EEXIST) {
    say(0, "cannot create --data-dir %s: %s", o.data_dir, strerror(errno));
    goto out;
  }
  char store_path[4096];
  snprintf(store_path, sizeof(store_path), "%s", o.store_url ? o.store_url : "");
  if (!o.store_url) snprintf(store_path, sizeof(store_path), "%s/relay.db", o.data_dir);
  cfg.store_path = store_path;
  char why[256];
  int rc = tern_keypair_load_why(o.key_path, &cfg.keypair, why, sizeof(why));
  if (rc) {
    say(0, "cannot load relay key %s: %s", o.key_path, why);
    goto out;
  }
  if (o.allow_path) {
    char err[512];
    rc = allowlist_load(&auth.list, o.allow_path, err, sizeof(err));
    if (rc) {
      say(0, "cannot load allow-list: %s", err);
      goto out;
    }
    cfg.auth = auth_cb;
    cfg.auth_ctx = &auth;
    cfg.user_exists = user_exists_cb;
    cfg.user_exists_ctx = &auth;
    cfg.may_send = may_send_cb;
    cfg.may_send_ctx = &auth;
  }
  if (o.token_key) {
    char err[512];
    if (ternd_token_key_load(o.token_key, token_key, err, sizeof(err)) != 0) {
      say(0, "cannot load token key: %s", err);
      goto out;
    }
    if (o.revoked_path && (rc = revlist_load(&auth.revoked, o.revoked_path, err, sizeof(err))) != 0) {
      say(0, "cannot load revocation list: %s", err);
      goto out;
    }
    auth.tokens = 1;
    cfg.token_key = token_key;
    cfg.token_revoked = revlist_has;
    cfg.token_revoked_ctx = &auth.revoked;
    /* The backend's users are not known in advance: any name can receive. */
    cfg.user_exists = NULL;
    if (!o.allow_path && !o.open_mode) cfg.auth = refuse_cb;
  }
  cfg.log = relay_log;
  if (o.presence) {
    auth.open_mode = o.open_mode;
    cfg.may_see_presence = may_see_cb;
    cfg.may_see_presence_ctx = &auth;
  }

  /* Signals reach the poll loop through a self-pipe. They are blocked
   * until serve() so that the metrics thread, started before, inherits the
   * mask and only this thread runs the handler; one that comes meanwhile
   * waits for the unblocking. */
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGINT);
  sigaddset(&mask, SIGTERM);
  sigaddset(&mask, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &mask, NULL);
  if (signals_open() != 0) {
    say(0, "signal pipe: %s", strerror(errno));
    goto out;
  }
  sfd = sig_pipe[0];

  /* SQLite's statement journal takes a 64 KiB chunk for every store
   * operation and frees it when the operation ends. With glibc's default
   * trim threshold the top of the heap then goes back to the kernel and is
   * taken again each time: a brk pair per stored message, and a TLB
   * shootdown on every CPU with each. That was a fifth of ternd's CPU in a
   * burst of 3000 messages (bench/README.md, F5). Keep up to 32 MiB of
   * freed memory for reuse instead. */
  (void)mallopt(M_TRIM_THRESHOLD, 32 << 20);

  if (o.push_url) {
    ternd_push_config pc;
    ternd_push_config_default(&pc);
    pc.url = o.push_url;
    pc.interval_s = o.push_interval_s;
    pc.max_pending = o.push_max_pending;
    pc.log = relay_log;
    char secret[1024], err[600];
    if (o.push_secret_path) {
      if (read_push_secret(o.push_secret_path, secret, sizeof(secret), err, sizeof(err)) != 0) {
        say(0, "%s", err);
        goto out;
      }
      pc.secret = secret;
    }
    int prc = ternd_push_start(&auth.push, &pc, err, sizeof(err));
    explicit_bzero(secret, sizeof(secret));
    if (prc != 0) {
      say(0, "cannot start push notifications: %s", err);
      goto out;
    }
    auth.push_secret_path = o.push_secret_path;
    cfg.push = ternd_push_event;
    cfg.push_ctx = auth.push;
    say(2, "push: devices with messages waiting are notified at %s (at most every %u s each%s)",
        o.push_url, o.push_interval_s, o.push_secret_path ? ", with a bearer secret" : "");
  }
  if (open_relay(&r, &o, &cfg) != 0) goto out;
  if (o.store_url)
    say(2, "store: the cluster at %s (undelivered messages kept %llu days)", store_path,
        (unsigned long long)(cfg.retention_ms / 86400000ull));
  else
    say(2, "store %s (%s; undelivered messages kept %llu days; %llu KiB disk reserve)", store_path,
        cfg.durable_fsync ? "fsync per group commit" : "no fsync",
        (unsigned long long)(cfg.retention_ms / 86400000ull),
        (unsigned long long)(cfg.store_reserve_bytes / 1024));
  if (o.open_mode)
    say(1, "--open: ANY client key may connect under any name it asks for; "
           "use --allow for anything but development");
  else if (o.allow_path)
    say(2, "allow-list %s: %zu keys, %zu users", o.allow_path, auth.list.count, auth.list.nusers);
  if (o.token_key) {
    char hex[TERN_KEY_HEX_BYTES];
    tern_key_to_hex(token_key, hex);
    say(2, "backend tokens signed by %s are admitted%s; revocation list %s: %zu token ids, "
           "%zu device keys", hex, o.allow_path || o.open_mode ? "" : " (devices without one are not)",
        o.revoked_path ? o.revoked_path : "(none)", auth.revoked.nids, auth.revoked.nkeys);
  }
  if (o.metrics_on) {
    char err[256], where[300];
    if (ternd_metrics_start(&metrics, o.metrics_host, o.metrics_port, cfg.max_peers, err,
                            sizeof(err)) != 0) {
      addr_text(o.metrics_host, o.metrics_port, where, sizeof(where));
      say(0, "cannot serve --metrics on %s: %s", where, err);
      goto out;
    }
    addr_text(o.metrics_host, ternd_metrics_port(metrics), where, sizeof(where));
    say(2, "metrics on http://%s/metrics", where);
    if (auth.push) ternd_metrics_set_push(metrics, auth.push);
  }
  char udp_text[300], metrics_text[300];
  addr_text(o.host, tern_relay_port(r), udp_text, sizeof(udp_text));
  if (metrics) addr_text(o.metrics_host, ternd_metrics_port(metrics), metrics_text, sizeof(metrics_text));
  auth.relay = r;
  if (o.revoked_path) remove_revoked(&auth, &auth.revoked, NULL);
  drain_ctl drain = {.relay = r, .spread_s = o.drain_spread_s, .deadline_s = o.drain_deadline_s};
  ternd_cmd_ctx cmd = {.relay = r,
                       .drain = start_drain,
                       .drain_ctx = &drain,
                       .started_mono_ms = mono_ms(),
                       .started_wall = time(NULL),
                       .udp = udp_text,
                       .tcp_port = o.tcp_port,
                       .metrics = metrics ? metrics_text : NULL,
                       .admin_path = o.admin_path,
                       .config_path = o.config_path,
                       .allow_path = o.allow_path,
                       .revoked_path = o.revoked_path,
                       .revoked = &auth.revoked,
                       .reload = reload_allowlist,
                       .reload_ctx = &auth};
  if (o.admin_path) {
    char err[512];
    if (ternd_admin_open(&admin, o.admin_path, ternd_command, &cmd, err, sizeof(err)) != 0) {
      say(0, "cannot serve --admin-socket: %s", err);
      goto out;
    }
    say(2, "admin socket %s (mode 0600; ternctl --socket %s)", o.admin_path, o.admin_path);
  }
  if (o.port_file) {
    FILE *f = fopen(o.port_file, "w");
    if (!f || fprintf(f, "%u\n", tern_relay_port(r)) < 0 || fclose(f) != 0) {
      say(0, "cannot write --port-file %s: %s", o.port_file, strerror(errno));
      goto out;
    }
  }
  /* The store is open and the socket bound: ready. */
  char where[300], ready[320];
  addr_text(o.host, tern_relay_port(r), where, sizeof(where));
  snprintf(ready, sizeof(ready), "serving on %s", where);
  ternd_notify_status(1, ready);
  ternd_notify notify;
  ternd_notify_init(&notify, mono_ms());
  pthread_sigmask(SIG_UNBLOCK, &mask, NULL);
  status = serve(r, sfd, &auth, metrics, &notify, admin, &drain);
  pthread_sigmask(SIG_BLOCK, &mask, NULL);
  tern_relay_stats st;
  tern_relay_get_stats(r, &st);
  log_stats(&st);
out:
  ternd_admin_close(admin); /* removes the socket file */
  ternd_metrics_stop(metrics); /* before the relay: the scrapes read no more */
  tern_relay_free(r);
  ternd_push_stop(auth.push); /* after the relay: it calls the notifier */
  allowlist_free(&auth.list);
  revlist_free(&auth.revoked);
  for (int i = 0; i < 2; i++)
    if (sig_pipe[i] >= 0) close(sig_pipe[i]);
  explicit_bzero(&cfg.keypair, sizeof(cfg.keypair));
  ternd_opts_free(&o);
  return status;
}
