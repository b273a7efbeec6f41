/*
 * Static X25519 keypairs, their hex encoding, and private key files.
 *
 * A private key file is a short text file (spec/keys.md has the details):
 *
 *   # tern private key (X25519). Keep this file secret; share only the public key.
 *   public: <64 lowercase hex digits>
 *   secret: <64 lowercase hex digits>
 *
 * Lines starting with '#' and blank lines are ignored. "secret:" must occur
 * exactly once; "public:" at most once, and when present it must be the
 * public key of the secret, so a file whose halves were pasted from two keys
 * is refused rather than silently giving an identity nobody expects. No other
 * line is allowed. The file must be a regular file that neither group nor
 * others may access (mode & 077 == 0).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "tern/tern.h"

/* A key file is about 230 bytes; anything far larger is not one of ours and
 * is refused without reading it all. */
#define KEYFILE_MAX 4096

static const char keyfile_comment[] =
    "# tern private key (X25519). Keep this file secret; share only the public key.\n";

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

void tern_key_to_hex(const uint8_t key[TERN_KEY_BYTES], char out[TERN_KEY_HEX_BYTES]) {
  /* sodium_bin2hex runs in constant time, which matters for secret keys. */
  sodium_bin2hex(out, TERN_KEY_HEX_BYTES, key, TERN_KEY_BYTES);
}

/* Decodes hex[0..len): whitespace around exactly 2 * TERN_KEY_BYTES hex
 * digits of either case. A span, not a string, so that a key file line can be
 * decoded in place. */
static int key_from_hex_span(const char *hex, size_t len, uint8_t key[TERN_KEY_BYTES]) {
  while (len > 0 && is_space(*hex)) hex++, len--;
  while (len > 0 && is_space(hex[len - 1])) len--;
  size_t bin_len = 0;
  const char *end = NULL;
  if (len != 2 * TERN_KEY_BYTES ||
      sodium_hex2bin(key, TERN_KEY_BYTES, hex, len, NULL, &bin_len, &end) != 0 ||
      bin_len != TERN_KEY_BYTES || end != hex + len) {
    sodium_memzero(key, TERN_KEY_BYTES);
    return TERN_EINVAL;
  }
  return 0;
}

int tern_key_from_hex(const char *hex, uint8_t key[TERN_KEY_BYTES]) {
  return key_from_hex_span(hex, strlen(hex), key);
}

int tern_keypair_generate(tern_keypair *kp) {
  sodium_memzero(kp, sizeof *kp);
  if (sodium_init() < 0) return TERN_ECRYPTO;
  randombytes_buf(kp->secret_key, TERN_KEY_BYTES);
  /* The same derivation tern_keypair_load() checks the file against. It only
   * fails for a secret whose public key would be the identity, which a
   * clamped scalar never gives. */
  if (crypto_scalarmult_base(kp->public_key, kp->secret_key) != 0) {
    sodium_memzero(kp, sizeof *kp);
    return TERN_ECRYPTO;
  }
  return 0;
}

/* Writes all of buf to fd; 0 or -1 with errno set. */
static int write_all(int fd, const char *buf, size_t len) {
  while (len > 0) {
    ssize_t n = write(fd, buf, len);
    if (n < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    buf += n;
    len -= (size_t)n;
  }
  return 0;
}

/* fsyncs the directory holding `path`, so that a rename or link into it
 * survives a crash. 0 or -1 with errno set. */
static int fsync_parent(const char *path) {
  const char *slash = strrchr(path, '/');
  char *dir;
  if (slash == NULL) dir = strdup(".");
  else if (slash == path) dir = strdup("/");
  else dir = strndup(path, (size_t)(slash - path));
  if (dir == NULL) return -1;
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  free(dir);
  if (fd < 0) return -1;
  int rc = fsync(fd);
  int saved = errno;
  close(fd);
  errno = saved;
  return rc;
}

/* Creates a new temporary file next to `path`, so that rename() and link()
 * stay within one file system: O_EXCL so that nobody else's file is ever
 * opened, mode 0600 from the first instant (the fchmod() in the caller makes
 * it exact whatever the umask). Returns the descriptor, or -1 with errno set;
 * *tmp_out receives the malloc'ed name, or NULL when out of memory. */
static int open_temp(const char *path, char **tmp_out) {
  size_t path_len = strlen(path);
  char *tmp = malloc(path_len + sizeof ".tmp." + 16);
  *tmp_out = tmp;
  if (tmp == NULL) return -1;
  int fd = -1;
  for (int attempt = 0; fd < 0 && attempt < 16; attempt++) {
    uint8_t suffix[8];
    randombytes_buf(suffix, sizeof suffix);
    memcpy(tmp, path, path_len);
    memcpy(tmp + path_len, ".tmp.", 5);
    sodium_bin2hex(tmp + path_len + 5, 17, suffix, sizeof suffix);
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0 && errno != EEXIST) break;
  }
  return fd;
}

/* Puts `text` at `path` through a temporary file: fully written and synced
 * before it takes the name, so a crash leaves no half-written key. Returns 0,
 * TERN_EEXIST, TERN_EIO (errno set), TERN_ENOMEM. */
static int write_atomically(const char *path, const char *text, size_t len, int force) {
  char *tmp = NULL;
  int fd = open_temp(path, &tmp);
  if (fd < 0) {
    int rc = tmp == NULL ? TERN_ENOMEM : TERN_EIO;
    int err = errno;
    free(tmp);
    errno = err;
    return rc;
  }
  int ok = fchmod(fd, 0600) == 0 && write_all(fd, text, len) == 0 && fsync(fd) == 0;
  int err = errno;
  if (close(fd) != 0 && ok) {
    ok = 0;
    err = errno;
  }
  if (ok) {
    /* link() fails with EEXIST where rename() would replace, so without
     * `force` a file that appears at `path` at any moment is never
     * overwritten. */
    ok = (force ? rename(tmp, path) : link(tmp, path)) == 0;
    err = errno;
  }
  /* The temporary name is gone only after a successful rename(). */
  if (!ok || !force) unlink(tmp);
  free(tmp);
  if (!ok) {
    errno = err;
    return !force && err == EEXIST ? TERN_EEXIST : TERN_EIO;
  }
  return fsync_parent(path) == 0 ? 0 : TERN_EIO;
}

int tern_keypair_save(const char *path, const tern_keypair *kp, int force) {
  if (sodium_init() < 0) return TERN_ECRYPTO;
  /* A keypair whose halves do not belong together would be written fine and
   * then refused by tern_keypair_load(); refuse it here instead. */
  uint8_t derived[TERN_KEY_BYTES];
  int ok = crypto_scalarmult_base(derived, kp->secret_key) == 0 &&
           sodium_memcmp(derived, kp->public_key, TERN_KEY_BYTES) == 0;
  sodium_memzero(derived, sizeof derived);
  if (!ok) return TERN_EINVAL;

  char pub_hex[TERN_KEY_HEX_BYTES], sec_hex[TERN_KEY_HEX_BYTES];
  char text[sizeof keyfile_comment + 2 * (sizeof "secret: \n" + TERN_KEY_HEX_BYTES)];
  tern_key_to_hex(kp->public_key, pub_hex);
  tern_key_to_hex(kp->secret_key, sec_hex);
  int len = snprintf(text, sizeof text, "%spublic: %s\nsecret: %s\n", keyfile_comment, pub_hex, sec_hex);
  sodium_memzero(sec_hex, sizeof sec_hex);
  int rc = write_atomically(path, text, (size_t)len, force);
  int err = errno;
  sodium_memzero(text, sizeof text);
  errno = err;
  return rc;
}

/* Says why a key file is refused (tern_keypair_load_why). */
static void why_f(char *why, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void why_f(char *why, size_t cap, const char *fmt, ...) {
  if (!why || !cap) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(why, cap, fmt, ap);
  va_end(ap);
}

/* Parses the key file text in buf[0..len) into *kp; on TERN_EKEYFILE says
 * which check failed in why. */
static int parse_keyfile(const char *buf, size_t len, tern_keypair *kp, char *why, size_t cap) {
  uint8_t stored_public[TERN_KEY_BYTES];
  int have_public = 0, have_secret = 0, lineno = 0;
  int rc = TERN_EKEYFILE;

  for (const char *line = buf, *end = buf + len; line < end;) {
    const char *nl = memchr(line, '\n', (size_t)(end - line));
    const char *line_end = nl ? nl : end;
    const char *p = line;
    line = nl ? nl + 1 : end;
    lineno++;

    while (p < line_end && is_space(*p)) p++;
    if (p == line_end || *p == '#') continue;

    const char *colon = memchr(p, ':', (size_t)(line_end - p));
    size_t name_len = colon ? (size_t)(colon - p) : 0;
    uint8_t *dest;
    int *seen;
    const char *name;
    if (name_len == 6 && memcmp(p, "public", 6) == 0) {
      dest = stored_public;
      seen = &have_public;
      name = "public";
    } else if (name_len == 6 && memcmp(p, "secret", 6) == 0) {
      dest = kp->secret_key;
      seen = &have_secret;
      name = "secret";
    } else {
      why_f(why, cap, "line %d is not 'public: HEX', 'secret: HEX' or a '#' comment", lineno);
      goto out;
    }
    if (*seen) {
      why_f(why, cap, "line %d: a second '%s:' line", lineno, name);
      goto out;
    }
    if (key_from_hex_span(colon + 1, (size_t)(line_end - colon - 1), dest) != 0) {
      why_f(why, cap, "line %d: the %s key is not 64 hex digits", lineno, name);
      goto out;
    }
    *seen = 1;
  }
  if (!have_secret) {
    why_f(why, cap, "no 'secret:' line");
    goto out;
  }
  if (crypto_scalarmult_base(kp->public_key, kp->secret_key) != 0) {
    why_f(why, cap, "the secret key is not a usable X25519 key");
    goto out;
  }
  if (have_public && sodium_memcmp(stored_public, kp->public_key, TERN_KEY_BYTES) != 0) {
    why_f(why, cap, "its 'public:' line is not the public key of its secret key");
    goto out;
  }
  rc = 0;
out:
  sodium_memzero(stored_public, sizeof stored_public);
  return rc;
}

int tern_keypair_load_why(const char *path, tern_keypair *kp, char *why, size_t why_size) {
  if (why && why_size) why[0] = 0;
  sodium_memzero(kp, sizeof *kp);
  if (sodium_init() < 0) return TERN_ECRYPTO;

  char buf[KEYFILE_MAX + 1];
  size_t len = 0;
  int rc = TERN_EIO;
  int saved_errno = 0;

  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) {
    saved_errno = errno;
    rc = errno == ENOENT ? TERN_ENOENT : TERN_EIO;
    goto out;
  }
  struct stat st;
  if (fstat(fd, &st) != 0) {
    saved_errno = errno;
    goto out_close;
  }
  /* Like ssh: a secret others may read (or rewrite) is not a secret. */
  if (!S_ISREG(st.st_mode)) {
    why_f(why, why_size, "not a regular file");
    rc = TERN_EKEYFILE;
    goto out_close;
  }
  if ((st.st_mode & 077) != 0) {
    why_f(why, why_size, "mode %04o: group or others may read or write it (chmod 600 it)",
          (unsigned)(st.st_mode & 07777));
    rc = TERN_EKEYFILE;
    goto out_close;
  }
  /* Read one byte past the limit so that an oversized file is noticed. */
  while (len < sizeof buf) {
    ssize_t n = read(fd, buf + len, sizeof buf - len);
    if (n < 0) {
      if (errno == EINTR) continue;
      saved_errno = errno;
      goto out_close;
    }
    if (n == 0) break;
    len += (size_t)n;
  }
  if (len > KEYFILE_MAX) {
    why_f(why, why_size, "larger than %d bytes: not a key file", KEYFILE_MAX);
    rc = TERN_EKEYFILE;
  } else {
    rc = parse_keyfile(buf, len, kp, why, why_size);
  }

out_close:
  close(fd);
out:
  sodium_memzero(buf, sizeof buf);
  if (rc != 0) {
    sodium_memzero(kp, sizeof *kp);
    if (why && why_size && !why[0]) {
      if (saved_errno) why_f(why, why_size, "%s", strerror(saved_errno));
      else why_f(why, why_size, "%s", tern_strerror(rc));
    }
    errno = saved_errno;
  }
  return rc;
}

int tern_keypair_load(const char *path, tern_keypair *kp) { return tern_keypair_load_why(path, kp, NULL, 0); }
