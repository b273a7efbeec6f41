/*
 * ternd's admin socket (--admin-socket PATH): a Unix stream socket, mode
 * 0600 (only ternd's user may connect), served from ternd's own poll loop
 * and never blocking it. ternctl is its client.
 *
 * Protocol, one request per connection: the client sends one line,
 * "FORMAT COMMAND [ARG...]\n" (FORMAT "text" or "json", at most
 * ADMIN_LINE_MAX bytes); ternd answers "ok\n" followed by the output, or
 * "error MESSAGE\n", and closes. A connection that has not sent its line,
 * or not taken its answer, within ADMIN_DEADLINE_MS is closed; at most
 * ADMIN_MAX_CONNS are served at a time (more are told "error busy").
 * What the commands do is the caller's (admin_cmd_fn): this file owns the
 * socket, the connections and their buffers.
 */
#ifndef TERND_ADMIN_H
#define TERND_ADMIN_H

#include <poll.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Room for group-set with TERN_GROUP_MEMBERS_MAX (1000) members of 64 bytes. */
#define ADMIN_LINE_MAX (72u << 10)
#define ADMIN_ARGS_MAX 1010
#define ADMIN_DEADLINE_MS 5000
#define ADMIN_MAX_CONNS 8
/* An answer larger than this is cut (and says so). */
#define ADMIN_OUT_MAX (64u << 20)

typedef struct ternd_admin ternd_admin;

/* Runs one command: argv[0] is the command, json says the format. Writes
 * the output to `out` and returns 0, or returns -1 with a one-line reason
 * in err. */
typedef int (*admin_cmd_fn)(void *ctx, int argc, char **argv, int json, FILE *out, char *err,
                            size_t cap);

/* Creates the socket at `path` (a stale socket file from a ternd that
 * died is replaced; one that answers is an error), mode 0600. Returns 0,
 * or -1 with the reason in err. */
int ternd_admin_open(ternd_admin **out, const char *path, admin_cmd_fn fn, void *ctx, char *err,
                     size_t cap);
/* The descriptors to poll (the listener and every connection): fills up
 * to `max` entries of pf and returns how many. */
int ternd_admin_pollfds(const ternd_admin *a, struct pollfd *pf, int max);
/* Milliseconds until the next connection deadline (-1: none). */
int ternd_admin_timeout(const ternd_admin *a, uint64_t now_ms);
/* Serves what poll reported on the n entries ternd_admin_pollfds gave,
 * and closes connections past their deadline. */
void ternd_admin_handle(ternd_admin *a, const struct pollfd *pf, int n, uint64_t now_ms);
/* Closes every connection and the socket, removes the socket file, frees
 * a. NULL is fine. */
void ternd_admin_close(ternd_admin *a);

#endif
