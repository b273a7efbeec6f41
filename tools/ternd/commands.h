/*
 * ternd's admin commands, as the admin socket (admin.h) runs them for
 * ternctl: status, stats, sessions, kick, reload, drain. Each writes its answer as
 * text (tables for a person) or JSON (one object, for scripts).
 *
 * Owns: nothing; the context's pointers are main's and outlive the socket.
 */
#ifndef TERND_COMMANDS_H
#define TERND_COMMANDS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#include "tern/tern.h"
#include "tokens.h"

/* Reloads the allow-list and the revocation list (the SIGHUP path): 0 with what it now holds and
 * how many peers it disconnected, or -1 with the reason in err. */
typedef int (*ternd_reload_fn)(void *ctx, size_t *keys, size_t *users, int *dropped, char *err,
                               size_t cap);

/* Starts a drain (the SIGTERM path) if none runs: 0 with how many sessions
 * were told to go and the deadline in seconds. */
typedef int (*ternd_drain_fn)(void *ctx, int *told, uint32_t *deadline_s);

typedef struct ternd_cmd_ctx {
  tern_relay *relay;
  uint64_t started_mono_ms; /* for the uptime */
  time_t started_wall;
  const char *udp;          /* "host:port" listening for UDP */
  long tcp_port;            /* -1: no TCP */
  const char *metrics;      /* "ip:port", or NULL */
  const char *admin_path;
  const char *config_path;  /* NULL: flags only */
  const char *allow_path;   /* NULL: --open or tokens only */
  const char *revoked_path; /* --revoked, or NULL */
  const revlist *revoked;   /* its entries, as the last (re)load left them */
  ternd_reload_fn reload;
  void *reload_ctx;
  ternd_drain_fn drain;
  void *drain_ctx;
} ternd_cmd_ctx;

/* An admin_cmd_fn (admin.h): ctx is a ternd_cmd_ctx. */
int ternd_command(void *ctx, int argc, char **argv, int json, FILE *out, char *err, size_t cap);

#endif
