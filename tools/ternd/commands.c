/*
 * ternd's admin commands (commands.h): what each one asks the relay, and
 * its answer as text or JSON.
 */
#include "commands.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

static uint64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* A JSON string: quoted, with what JSON needs escaped. NULL is null. */
static void jstr(FILE *out, const char *s) {
  if (!s) {
    fputs("null", out);
    return;
  }
  fputc('"', out);
  for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
    if (*p == '"' || *p == '\\') fprintf(out, "\\%c", *p);
    else if (*p < 0x20) fprintf(out, "\\u%04x", *p);
    else fputc(*p, out);
  }
  fputc('"', out);
}

/* A duration for a person: "45s", "12m05s", "3h07m", "2d04h". */
static void human_ms(uint64_t ms, char *buf, size_t cap) {
  uint64_t s = ms / 1000;
  if (s < 60) snprintf(buf, cap, "%llus", (unsigned long long)s);
  else if (s < 3600) snprintf(buf, cap, "%llum%02llus", (unsigned long long)(s / 60), (unsigned long long)(s % 60));
  else if (s < 86400) snprintf(buf, cap, "%lluh%02llum", (unsigned long long)(s / 3600), (unsigned long long)(s / 60 % 60));
  else snprintf(buf, cap, "%llud%02lluh", (unsigned long long)(s / 86400), (unsigned long long)(s / 3600 % 24));
}

static int cmd_status(ternd_cmd_ctx *x, int json, FILE *out) {
  tern_relay_stats st;
  tern_relay_get_stats(x->relay, &st);
  uint64_t up = mono_ms() - x->started_mono_ms;
  char started[32], tcp[24] = "", uptime[32];
  struct tm tm;
  gmtime_r(&x->started_wall, &tm);
  strftime(started, sizeof(started), "%Y-%m-%dT%H:%M:%SZ", &tm);
  if (x->tcp_port >= 0) snprintf(tcp, sizeof(tcp), "%ld", x->tcp_port);
  human_ms(up, uptime, sizeof(uptime));
  if (json) {
    fprintf(out, "{\"version\": ");
    jstr(out, TERN_VERSION_STRING);
    fprintf(out, ", \"libtern\": ");
    jstr(out, tern_version());
    fprintf(out, ", \"pid\": %ld, \"started\": \"%s\", \"uptime_s\": %llu", (long)getpid(), started,
            (unsigned long long)(up / 1000));
    fprintf(out, ", \"peers_connected\": %llu, \"peers_handshaking\": %llu, \"listen_udp\": ",
            (unsigned long long)st.peers_connected, (unsigned long long)st.peers_handshaking);
    jstr(out, x->udp);
    fprintf(out, ", \"listen_tcp_port\": ");
    if (x->tcp_port >= 0) fprintf(out, "%ld", x->tcp_port);
    else fputs("null", out);
    fprintf(out, ", \"metrics\": ");
    jstr(out, x->metrics);
    fprintf(out, ", \"admin_socket\": ");
    jstr(out, x->admin_path);
    fprintf(out, ", \"config\": ");
    jstr(out, x->config_path);
    fprintf(out, ", \"allow_list\": ");
    jstr(out, x->allow_path);
    fprintf(out, "}\n");
    return 0;
  }
  fprintf(out, "version       ternd %s (libtern %s)\n", TERN_VERSION_STRING, tern_version());
  fprintf(out, "pid           %ld\n", (long)getpid());
  fprintf(out, "started       %s (up %s)\n", started, uptime);
  fprintf(out, "peers         %llu connected, %llu in handshake\n",
          (unsigned long long)st.peers_connected, (unsigned long long)st.peers_handshaking);
  fprintf(out, "listening     udp %s%s%s\n", x->udp, tcp[0] ? ", tcp port " : "", tcp);
  fprintf(out, "metrics       %s\n", x->metrics ? x->metrics : "off");
  fprintf(out, "admin socket  %s\n", x->admin_path);
  fprintf(out, "config        %s\n", x->config_path ? x->config_path : "(flags only)");
  fprintf(out, "allow-list    %s\n", x->allow_path ? x->allow_path : "(none)");
  if (x->revoked_path)
    fprintf(out, "revoked       %s: %zu token ids, %zu device keys\n", x->revoked_path,
            x->revoked->nids, x->revoked->nkeys);
  return 0;
}

/* The fields of tern_relay_stats, by name. */
#define F(name) {#name, offsetof(tern_relay_stats, name)}
static const struct {
  const char *name;
  size_t off;
} stat_fields[] = {
    F(peers_connected), F(peers_handshaking), F(handshakes_ok), F(handshakes_failed),
    F(hs_failed_version), F(hs_failed_unreadable), F(hs_failed_protocol), F(hs_failed_refused),
    F(hs_failed_timeout), F(packets_rejected), F(packets_replayed), F(messages_stored),
    F(messages_early), F(messages_deduped), F(messages_delivered), F(messages_refused),
    F(messages_busy), F(messages_expired), F(messages_out_of_order), F(messages_stale), F(store_errors), F(store_commits), F(store_commit_us),
    F(probe_requests), F(probe_replies), F(probe_rejected), F(probe_limited),
    F(connects_refused_full), F(sessions_moved), F(tcp_accepted), F(tcp_connections),
    F(bytes_received), F(bytes_sent), F(draining), F(peers_held), F(hs_failed_draining),
    F(sessions_replaced), F(cookies_sent), F(cookie_connects), F(cookies_bad),
    F(cluster), F(cluster_connected), F(cluster_position), F(cluster_published),
    F(cluster_applied), F(cluster_refused), F(cluster_publish_errors), F(cluster_resyncs),
    F(cluster_acks_refuted),
};
#undef F

static int cmd_stats(ternd_cmd_ctx *x, int json, FILE *out) {
  tern_relay_stats st;
  tern_relay_get_stats(x->relay, &st);
  static const uint64_t bounds[TERN_RELAY_COMMIT_BUCKETS] = TERN_RELAY_COMMIT_BOUNDS_US;
  size_t n = sizeof(stat_fields) / sizeof(stat_fields[0]);
  if (json) fputc('{', out);
  for (size_t i = 0; i < n; i++) {
    uint64_t v;
    memcpy(&v, (const char *)&st + stat_fields[i].off, sizeof(v));
    if (json) fprintf(out, "%s\"%s\": %llu", i ? ", " : "", stat_fields[i].name, (unsigned long long)v);
    else fprintf(out, "%-24s %llu\n", stat_fields[i].name, (unsigned long long)v);
  }
  for (int i = 0; i < TERN_RELAY_COMMIT_BUCKETS; i++) {
    char name[48];
    snprintf(name, sizeof(name), "store_commit_le_%llu_us", (unsigned long long)bounds[i]);
    if (json) fprintf(out, ", \"%s\": %llu", name, (unsigned long long)st.store_commit_le_us[i]);
    else fprintf(out, "%-24s %llu\n", name, (unsigned long long)st.store_commit_le_us[i]);
  }
  if (json) fputs("}\n", out);
  return 0;
}

typedef struct list_ctx {
  FILE *out;
  int json;
  int n;
} list_ctx;

static int list_one(void *ctx, const tern_relay_session *s) {
  list_ctx *l = ctx;
  char hex[TERN_KEY_HEX_BYTES];
  tern_key_to_hex(s->device_key, hex);
  if (l->json) {
    fprintf(l->out, "%s\n  {\"user\": ", l->n ? "," : "");
    jstr(l->out, s->user);
    fprintf(l->out, ", \"device\": \"%s\", \"address\": ", hex);
    jstr(l->out, s->address);
    fprintf(l->out, ", \"transport\": \"%s\", \"keepalive_ms\": %llu, \"rtt_ms\": %u, \"age_s\": %llu}",
            s->tcp ? "tcp" : "udp", (unsigned long long)s->keepalive_ms, s->rtt_ms,
            (unsigned long long)(s->age_ms / 1000));
  } else {
    char ka[32] = "-", age[32];
    if (s->keepalive_ms) human_ms(s->keepalive_ms, ka, sizeof(ka));
    human_ms(s->age_ms, age, sizeof(age));
    fprintf(l->out, "%-16s %.16s  %-40s %-4s %9s %6u %8s\n", s->user, hex, s->address,
            s->tcp ? "tcp" : "udp", ka, s->rtt_ms, age);
  }
  l->n++;
  return 0;
}

static int cmd_sessions(ternd_cmd_ctx *x, int json, FILE *out) {
  list_ctx l = {.out = out, .json = json};
  if (json) fputs("{\"sessions\": [", out);
  else fprintf(out, "%-16s %-16s  %-40s %-4s %9s %6s %8s\n", "USER", "DEVICE", "ADDRESS", "VIA",
               "KEEPALIVE", "RTT_MS", "AGE");
  int n = tern_relay_sessions_each(x->relay, list_one, &l);
  if (json) fprintf(out, "%s], \"count\": %d}\n", n ? "\n" : "", n);
  else fprintf(out, "(%d session%s)\n", n, n == 1 ? "" : "s");
  return 0;
}

/* kick USER [DEVICE]: DEVICE is the start of a device key in hex (as
 * `sessions` shows it), which must pick one of the user's sessions. */
typedef struct find_ctx {
  const char *user, *prefix;
  uint8_t key[TERN_KEY_BYTES];
  int matches;
} find_ctx;

static int find_one(void *ctx, const tern_relay_session *s) {
  find_ctx *f = ctx;
  char hex[TERN_KEY_HEX_BYTES];
  tern_key_to_hex(s->device_key, hex);
  if (strcmp(s->user, f->user) == 0 && strncasecmp(hex, f->prefix, strlen(f->prefix)) == 0) {
    if (f->matches == 0 || memcmp(f->key, s->device_key, TERN_KEY_BYTES) != 0) f->matches++;
    memcpy(f->key, s->device_key, TERN_KEY_BYTES);
  }
  return 0;
}

static int cmd_kick(ternd_cmd_ctx *x, int argc, char **argv, int json, FILE *out, char *err,
                    size_t cap) {
  if (argc < 2 || argc > 3) {
    snprintf(err, cap, "usage: kick USER [DEVICE-KEY-PREFIX]");
    return -1;
  }
  const char *user = argv[1];
  const uint8_t *key = NULL;
  find_ctx f = {.user = user, .prefix = argc == 3 ? argv[2] : ""};
  if (argc == 3) {
    size_t n = strlen(f.prefix);
    for (size_t i = 0; i < n; i++)
      if (!isxdigit((unsigned char)f.prefix[i])) n = 0;
    if (n < 4 || n > TERN_KEY_HEX_BYTES - 1) {
      snprintf(err, cap, "DEVICE must be 4 to 64 hex digits of the device key, not '%.80s'", f.prefix);
      return -1;
    }
    (void)tern_relay_sessions_each(x->relay, find_one, &f);
    if (f.matches > 1) {
      snprintf(err, cap, "device '%.80s' matches %d devices of user '%.64s': give more digits",
               f.prefix, f.matches, user);
      return -1;
    }
    key = f.key;
  }
  int n = argc == 3 && f.matches == 0 ? 0 : tern_relay_kick(x->relay, user, key);
  if (n == 0) {
    snprintf(err, cap, "no session of user '%.64s'%s%.80s", user, argc == 3 ? " with device " : "",
             argc == 3 ? f.prefix : "");
    return -1;
  }
  if (json) {
    fputs("{\"user\": ", out);
    jstr(out, user);
    fprintf(out, ", \"kicked\": %d}\n", n);
  } else {
    fprintf(out, "kicked %d session%s of %s\n", n, n == 1 ? "" : "s", user);
  }
  return 0;
}

/* remove-device KEY: the whole device key in hex (the backend's word that
 * the device is gone: a lost phone). */
static int cmd_remove_device(ternd_cmd_ctx *x, int argc, char **argv, int json, FILE *out, char *err,
                             size_t cap) {
  uint8_t key[TERN_KEY_BYTES];
  if (argc != 2 || tern_key_from_hex(argv[1], key) != 0) {
    snprintf(err, cap, "usage: remove-device DEVICE-KEY (its 64 hex digits)");
    return -1;
  }
  int rc = tern_relay_remove_device(x->relay, key);
  if (rc < 0) {
    snprintf(err, cap, "the store failed: %s", tern_strerror(rc));
    return -1;
  }
  if (json) fprintf(out, "{\"device\": \"%s\", \"removed\": %s}\n", argv[1], rc ? "true" : "false");
  else if (rc) fprintf(out, "device %.16s... removed\n", argv[1]);
  else fprintf(out, "device %.16s... was not known: nothing to remove\n", argv[1]);
  return 0;
}

/* group-set GROUP [USER...]: the backend's word on who is in the group
 * (spec/messages.md §14); no user empties it. */
static int cmd_group_set(ternd_cmd_ctx *x, int argc, char **argv, int json, FILE *out, char *err,
                         size_t cap) {
  if (argc < 2) {
    snprintf(err, cap, "usage: group-set @GROUP [USER...]");
    return -1;
  }
  int rc = tern_relay_group_set(x->relay, argv[1], (const char *const *)argv + 2, (size_t)argc - 2);
  if (rc == TERN_EINVAL) {
    snprintf(err, cap, "bad group or user name, or more than %d members (a group is '@name')",
             TERN_GROUP_MEMBERS_MAX);
    return -1;
  }
  if (rc < 0) {
    snprintf(err, cap, "the store failed: %s", tern_strerror(rc));
    return -1;
  }
  if (json) {
    fputs("{\"group\": ", out);
    jstr(out, argv[1]);
    fprintf(out, ", \"members\": %d}\n", argc - 2);
  } else {
    fprintf(out, "group %s: %d member%s\n", argv[1], argc - 2, argc - 2 == 1 ? "" : "s");
  }
  return 0;
}

typedef struct show_ctx {
  FILE *out;
  int json, n;
} show_ctx;

static int show_member(void *ctx, const char *user) {
  show_ctx *sc = ctx;
  if (sc->json) {
    if (sc->n) fputs(", ", sc->out);
    jstr(sc->out, user);
  } else {
    fprintf(sc->out, "%s\n", user);
  }
  sc->n++;
  return 0;
}

/* group-show GROUP: its current members, one a line. */
static int cmd_group_show(ternd_cmd_ctx *x, int argc, char **argv, int json, FILE *out, char *err,
                          size_t cap) {
  if (argc != 2) {
    snprintf(err, cap, "usage: group-show @GROUP");
    return -1;
  }
  show_ctx sc = {out, json, 0};
  if (json) {
    fputs("{\"group\": ", out);
    jstr(out, argv[1]);
    fputs(", \"members\": [", out);
  }
  int rc = tern_relay_group_members(x->relay, argv[1], show_member, &sc);
  if (rc < 0) {
    snprintf(err, cap, rc == TERN_EINVAL ? "bad group name (a group is '@name')" : "the store failed: %s",
             tern_strerror(rc));
    return -1;
  }
  if (json) fputs("]}\n", out);
  return 0;
}

static int cmd_reload(ternd_cmd_ctx *x, int json, FILE *out, char *err, size_t cap) {
  if (!x->allow_path && !x->revoked_path) {
    snprintf(err, cap, "nothing to reload: ternd runs with no allow-list and no revocation list");
    return -1;
  }
  size_t keys = 0, users = 0;
  int dropped = 0;
  if (x->reload(x->reload_ctx, &keys, &users, &dropped, err, cap) != 0) return -1;
  if (json) {
    fputs("{\"allow_list\": ", out);
    if (x->allow_path) jstr(out, x->allow_path);
    else fputs("null", out);
    fprintf(out, ", \"keys\": %zu, \"users\": %zu, ", keys, users);
    if (x->revoked_path) {
      fputs("\"revoked\": ", out);
      jstr(out, x->revoked_path);
      fprintf(out, ", \"revoked_ids\": %zu, \"revoked_keys\": %zu, ", x->revoked->nids,
              x->revoked->nkeys);
    }
    fprintf(out, "\"disconnected\": %d}\n", dropped);
  } else {
    if (x->allow_path)
      fprintf(out, "allow-list %s reloaded: %zu keys, %zu users; ", x->allow_path, keys, users);
    if (x->revoked_path)
      fprintf(out, "revocation list %s reloaded: %zu token ids, %zu device keys; ", x->revoked_path,
              x->revoked->nids, x->revoked->nkeys);
    fprintf(out, "%d peer(s) no longer allowed disconnected\n", dropped);
  }
  return 0;
}

/* drain: what SIGTERM does (tern_relay_drain()); ternd exits when it ends. */
static int cmd_drain(ternd_cmd_ctx *x, int json, FILE *out, char *err, size_t cap) {
  int told = 0;
  uint32_t deadline_s = 0;
  if (!x->drain || x->drain(x->drain_ctx, &told, &deadline_s) != 0) {
    snprintf(err, cap, "this ternd cannot drain");
    return -1;
  }
  if (json)
    fprintf(out, "{\"draining\": true, \"told\": %d, \"deadline_s\": %u}\n", told, deadline_s);
  else
    fprintf(out, "draining: %d session%s told to reconnect; ternd exits when all have gone, or in %u s\n",
            told, told == 1 ? "" : "s", deadline_s);
  return 0;
}

int ternd_command(void *ctx, int argc, char **argv, int json, FILE *out, char *err, size_t cap) {
  ternd_cmd_ctx *x = ctx;
  const char *cmd = argv[0];
  static const char *const known[] = {"status", "stats", "sessions", "kick", "reload", "drain",
                                      "remove-device", "group-set", "group-show"};
  int found = 0;
  for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++) found |= strcmp(cmd, known[i]) == 0;
  if (!found) {
    snprintf(err, cap,
             "unknown command '%.64s' (status, stats, sessions, kick, reload, drain, remove-device, "
             "group-set, group-show)",
             cmd);
    return -1;
  }
  if (strcmp(cmd, "kick") != 0 && strcmp(cmd, "remove-device") != 0 && strncmp(cmd, "group-", 6) != 0 &&
      argc != 1) {
    snprintf(err, cap, "'%.32s' takes no arguments", cmd);
    return -1;
  }
  if (strcmp(cmd, "status") == 0) return cmd_status(x, json, out);
  if (strcmp(cmd, "stats") == 0) return cmd_stats(x, json, out);
  if (strcmp(cmd, "sessions") == 0) return cmd_sessions(x, json, out);
  if (strcmp(cmd, "kick") == 0) return cmd_kick(x, argc, argv, json, out, err, cap);
  if (strcmp(cmd, "remove-device") == 0) return cmd_remove_device(x, argc, argv, json, out, err, cap);
  if (strcmp(cmd, "group-set") == 0) return cmd_group_set(x, argc, argv, json, out, err, cap);
  if (strcmp(cmd, "group-show") == 0) return cmd_group_show(x, argc, argv, json, out, err, cap);
  if (strcmp(cmd, "drain") == 0) return cmd_drain(x, json, out, err, cap);
  return cmd_reload(x, json, out, err, cap);
}
