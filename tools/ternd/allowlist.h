/*
 * ternd's allow-list: which client keys may connect, as which user, and
 * whom each user may write to.
 *
 * File format, one entry a line; '#' starts a comment; blank lines ignored:
 *
 *   <client public key, 64 hex digits> <user name> [* | @USER ...]
 *
 * A user may have several keys (devices); a key appears at most once.
 * After the user name, '*' (or nothing) lets that user write to anyone;
 * one or more '@USER' fields (a name cannot contain '@') let it write to
 * those users only, and to no one else. A restriction given on one line of
 * a user holds for all of that user's keys; two lines of one user that
 * give different lists are an error. Every user named in the first two
 * columns exists (can receive); a name that appears only after '@' does
 * not, until a key of its own is listed.
 */
#ifndef TERND_ALLOWLIST_H
#define TERND_ALLOWLIST_H

#include <stddef.h>
#include <stdint.h>

#include "tern/tern.h"

typedef struct allow_entry {
  uint8_t key[TERN_KEY_BYTES];
  char user[TERN_USER_MAX + 1];
} allow_entry;

/* One user: whom it may write to. */
typedef struct allow_user {
  char name[TERN_USER_MAX + 1];
  int restricted;   /* 0: may write to anyone */
  char **to;        /* restricted: the users it may write to, sorted */
  size_t nto;
  int line;         /* the line that gave the list, for errors */
} allow_user;

typedef struct allowlist {
  allow_entry *entries; /* sorted by key */
  size_t count;
  allow_user *users;    /* sorted by name, one per user listed */
  size_t nusers;
} allowlist;

/* Parses `path` into *out. On error returns TERN_ENOENT, TERN_EIO,
 * TERN_EINVAL or TERN_ENOMEM and writes "PATH: line N: what is wrong" into
 * err[0..errcap); *out is then untouched. */
int allowlist_load(allowlist *out, const char *path, char *err, size_t errcap);

void allowlist_free(allowlist *a);

/* The user of `key`, or NULL. */
const char *allowlist_find(const allowlist *a, const uint8_t key[TERN_KEY_BYTES]);

/* 1 if `user` has a key in the list (it can receive), else 0. */
int allowlist_user_exists(const allowlist *a, const char *user);

/* 1 if `from` may write to `to`, else 0. A user not in the list may write
 * to no one (it cannot connect anyway). */
int allowlist_may_send(const allowlist *a, const char *from, const char *to);

#endif
