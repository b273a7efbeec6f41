/*
 * ternd's allow-list: which client keys may connect, and as which user.
 *
 * File format, one entry a line; '#' starts a comment; blank lines ignored:
 *
 *   <client public key, 64 hex digits> <user name>
 *
 * A user may have several keys (devices); a key appears at most once.
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

typedef struct allowlist {
  allow_entry *entries; /* sorted by key */
  size_t count;
} allowlist;

/* Parses `path` into *out. On error returns TERN_ENOENT, TERN_EIO or
 * TERN_EINVAL and writes "line N: what is wrong" into err[0..errcap);
 * *out is then untouched. */
int allowlist_load(allowlist *out, const char *path, char *err, size_t errcap);

void allowlist_free(allowlist *a);

/* The user of `key`, or NULL. */
const char *allowlist_find(const allowlist *a, const uint8_t key[TERN_KEY_BYTES]);

#endif
