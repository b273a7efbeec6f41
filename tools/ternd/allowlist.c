#include "allowlist.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Longest line read; a list of whom a user may write to can be long. */
#define LINE_MAX_BYTES 65536

static int cmp_entry(const void *a, const void *b) {
  return memcmp(((const allow_entry *)a)->key, ((const allow_entry *)b)->key, TERN_KEY_BYTES);
}

static int cmp_user(const void *a, const void *b) {
  const allow_user *x = a, *y = b;
  int c = strcmp(x->name, y->name);
  return c ? c : x->line - y->line;
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static int valid_user(const char *u) {
  size_t n = strlen(u);
  if (n == 0 || n > TERN_USER_MAX) return 0;
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)u[i];
    if (c <= 0x20 || c == 0x7f || c == '@') return 0;
  }
  return 1;
}

static void free_user(allow_user *u) {
  for (size_t i = 0; i < u->nto; i++) free(u->to[i]);
  free(u->to);
  u->to = NULL;
  u->nto = 0;
}

static void free_users(allow_user *u, size_t n) {
  for (size_t i = 0; i < n; i++) free_user(&u[i]);
  free(u);
}

static int same_list(const allow_user *a, const allow_user *b) {
  if (a->nto != b->nto) return 0;
  for (size_t i = 0; i < a->nto; i++)
    if (strcmp(a->to[i], b->to[i]) != 0) return 0;
  return 1;
}

/* Parses the fields after the user name into u (restricted, to). Returns 0,
 * TERN_EINVAL (what in err) or TERN_ENOMEM. */
static int parse_targets(allow_user *u, char **save, const char **what) {
  int star = 0;
  for (char *t = strtok_r(NULL, " \t\r\n", save); t; t = strtok_r(NULL, " \t\r\n", save)) {
    if (strcmp(t, "*") == 0) {
      star = 1;
      continue;
    }
    if (t[0] != '@' || !valid_user(t + 1)) {
      *what = "after the user name, expected '*' or '@USER' fields";
      return TERN_EINVAL;
    }
    char **n = realloc(u->to, (u->nto + 1) * sizeof(*n));
    if (!n) return TERN_ENOMEM;
    u->to = n;
    if (!(u->to[u->nto] = strdup(t + 1))) return TERN_ENOMEM;
    u->nto++;
  }
  if (star && u->nto) {
    *what = "'*' (anyone) and '@USER' fields on one line";
    return TERN_EINVAL;
  }
  u->restricted = u->nto > 0;
  if (u->nto) {
    qsort(u->to, u->nto, sizeof(*u->to), cmp_str);
    size_t k = 1;
    for (size_t i = 1; i < u->nto; i++) {
      if (strcmp(u->to[i], u->to[k - 1]) == 0) free(u->to[i]);
      else u->to[k++] = u->to[i];
    }
    u->nto = k;
  }
  return 0;
}

int allowlist_load(allowlist *out, const char *path, char *err, size_t errcap) {
  FILE *f = fopen(path, "r");
  if (!f) {
    snprintf(err, errcap, "%s: %s", path, strerror(errno));
    return errno == ENOENT ? TERN_ENOENT : TERN_EIO;
  }
  allowlist a = {0};
  size_t cap = 0, ucap = 0;
  char *line = NULL;
  size_t line_cap = 0;
  ssize_t got;
  int lineno = 0, rc = 0;
  while ((got = getline(&line, &line_cap, f)) >= 0) {
    lineno++;
    if (got > LINE_MAX_BYTES) {
      snprintf(err, errcap, "%s: line %d: too long", path, lineno);
      rc = TERN_EINVAL;
      break;
    }
    char *hash = strchr(line, '#');
    if (hash) *hash = 0;
    char *save = NULL;
    char *key_hex = strtok_r(line, " \t\r\n", &save);
    if (!key_hex) continue;
    char *user = strtok_r(NULL, " \t\r\n", &save);
    allow_entry e;
    if (!user || tern_key_from_hex(key_hex, e.key) != 0 || !valid_user(user)) {
      snprintf(err, errcap,
               "%s: line %d: expected '<64-hex-digit public key> <user name> [* | @USER ...]' "
               "(name: 1-%d bytes, no spaces or '@')",
               path, lineno, TERN_USER_MAX);
      rc = TERN_EINVAL;
      break;
    }
    memcpy(e.user, user, strlen(user) + 1);
    if (a.count == cap) {
      cap = cap ? cap * 2 : 32;
      allow_entry *ne = realloc(a.entries, cap * sizeof(*ne));
      if (!ne) {
        rc = TERN_ENOMEM;
        break;
      }
      a.entries = ne;
    }
    a.entries[a.count++] = e;
    if (a.nusers == ucap) {
      ucap = ucap ? ucap * 2 : 32;
      allow_user *nu = realloc(a.users, ucap * sizeof(*nu));
      if (!nu) {
        rc = TERN_ENOMEM;
        break;
      }
      a.users = nu;
    }
    allow_user *u = &a.users[a.nusers++];
    memset(u, 0, sizeof(*u));
    memcpy(u->name, user, strlen(user) + 1);
    u->line = lineno;
    const char *what = NULL;
    rc = parse_targets(u, &save, &what);
    if (rc == TERN_EINVAL) snprintf(err, errcap, "%s: line %d: %s", path, lineno, what);
    if (rc) break;
  }
  if (rc == TERN_ENOMEM) snprintf(err, errcap, "%s: out of memory", path);
  if (rc == 0 && ferror(f)) {
    snprintf(err, errcap, "%s: read error", path);
    rc = TERN_EIO;
  }
  free(line);
  fclose(f);
  if (rc == 0 && a.count) {
    qsort(a.entries, a.count, sizeof(*a.entries), cmp_entry);
    for (size_t i = 1; i < a.count; i++) {
      if (cmp_entry(&a.entries[i - 1], &a.entries[i]) == 0) {
        char hex[TERN_KEY_HEX_BYTES];
        tern_key_to_hex(a.entries[i].key, hex);
        snprintf(err, errcap, "%s: key %s is listed twice", path, hex);
        rc = TERN_EINVAL;
        break;
      }
    }
  }
  if (rc == 0 && a.nusers) {
    /* One entry per user: the list one of its lines gave, if any. */
    qsort(a.users, a.nusers, sizeof(*a.users), cmp_user);
    size_t k = 0;
    for (size_t i = 0; i < a.nusers; i++) {
      allow_user *u = &a.users[i];
      if (k == 0 || strcmp(a.users[k - 1].name, u->name) != 0) {
        a.users[k++] = *u;
        continue;
      }
      allow_user *kept = &a.users[k - 1];
      if (u->restricted && kept->restricted && !same_list(u, kept)) {
        snprintf(err, errcap, "%s: lines %d and %d give user %s different lists of whom it may "
                 "write to", path, kept->line, u->line, u->name);
        rc = TERN_EINVAL;
        /* Keep both owned so that everything is freed below. */
        a.users[k++] = *u;
        for (size_t j = i + 1; j < a.nusers; j++) a.users[k++] = a.users[j];
        break;
      }
      if (u->restricted && !kept->restricted) {
        free_user(kept);
        *kept = *u;
      } else {
        free_user(u);
      }
    }
    a.nusers = k;
  }
  if (rc) {
    free(a.entries);
    free_users(a.users, a.nusers);
    return rc;
  }
  *out = a;
  return 0;
}

void allowlist_free(allowlist *a) {
  free(a->entries);
  free_users(a->users, a->nusers);
  memset(a, 0, sizeof(*a));
}

const char *allowlist_find(const allowlist *a, const uint8_t key[TERN_KEY_BYTES]) {
  if (!a->count) return NULL;
  allow_entry probe;
  memcpy(probe.key, key, TERN_KEY_BYTES);
  const allow_entry *e = bsearch(&probe, a->entries, a->count, sizeof(*a->entries), cmp_entry);
  return e ? e->user : NULL;
}

static const allow_user *find_user(const allowlist *a, const char *name) {
  size_t lo = 0, hi = a->nusers;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    int c = strcmp(a->users[mid].name, name);
    if (c == 0) return &a->users[mid];
    if (c < 0) lo = mid + 1;
    else hi = mid;
  }
  return NULL;
}

int allowlist_user_exists(const allowlist *a, const char *user) { return find_user(a, user) != NULL; }

int allowlist_may_send(const allowlist *a, const char *from, const char *to) {
  const allow_user *u = find_user(a, from);
  if (!u) return 0;
  if (!u->restricted) return 1;
  const char *key = to;
  return bsearch(&key, u->to, u->nto, sizeof(*u->to), cmp_str) != NULL;
}
