/*
 * tern-token: the backend's side of backend tokens (spec/tokens.md), for
 * tests and small deployments: makes the backend's Ed25519 key, mints
 * tokens with it, and reads tokens back.
 *
 *   tern-token keygen OUT      OUT (0600: secret and public key) and
 *                              OUT.pub (the public key, for ternd)
 *   tern-token mint --key FILE --user U --device-key HEX --ttl SECONDS [--id HEX]
 *   tern-token show TOKEN|@FILE [--key PUBHEX|FILE]
 *
 * stdout carries what a script wants (the public key, the token, the
 * fields); the rest goes to stderr. Exit status: 0 done, 1 failed (show:
 * invalid or expired), 2 bad usage.
 *
 * Key file (OUT), lines ending in '\n'; '#' starts a comment:
 *   token-public: <64 hex digits, the Ed25519 public key>
 *   token-secret: <64 hex digits, the 32-byte Ed25519 seed>
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "tern/tern.h"

static const char usage_text[] =
    "usage: tern-token keygen OUT\n"
    "       tern-token mint --key FILE --user USER --device-key HEX --ttl SECONDS [--id HEX]\n"
    "       tern-token show TOKEN|@FILE [--key PUBHEX|FILE]\n"
    "\n"
    "Backend tokens (spec/tokens.md): the app backend's Ed25519-signed word that a\n"
    "device key belongs to a user until a time; ternd --token-key admits them.\n"
    "\n"
    "  keygen OUT         write a new backend key to OUT (mode 0600) and its public\n"
    "                     key to OUT.pub (for ternd --token-key); print the public\n"
    "                     key as 64 hex digits. Existing files are never replaced\n"
    "  mint               print a token (base64url) signed with the key file\n"
    "    --key FILE       the backend key file from keygen\n"
    "    --user USER      the user the device is (1-64 bytes, no spaces or '@')\n"
    "    --device-key HEX the device's public key, 64 hex digits (tern-keygen)\n"
    "    --ttl SECONDS    valid for this long from now (0: already expired)\n"
    "    --id HEX         token id, 32 hex digits (default: random); what\n"
    "                     ternd --revoked names to refuse this token alone\n"
    "  show TOKEN|@FILE   print a token's fields and whether it has expired;\n"
    "                     exit 1 if it is malformed or expired\n"
    "    --key PUBHEX|FILE  also check its signature with this public key\n"
    "  --version          print the version and exit\n"
    "  --help             print this help\n";

static int usage_error(const char *why) {
  fprintf(stderr, "tern-token: %s\n%s", why, usage_text);
  return 2;
}

static void to_hex(const uint8_t *p, size_t n, char *out) {
  for (size_t i = 0; i < n; i++) snprintf(out + 2 * i, 3, "%02x", p[i]);
}

/* Exactly 2*n hex digits into out. 0 or -1. */
static int from_hex(const char *s, uint8_t *out, size_t n) {
  if (strlen(s) != 2 * n) return -1;
  for (size_t i = 0; i < n; i++) {
    unsigned v;
    if (sscanf(s + 2 * i, "%2x", &v) != 1 || !strchr("0123456789abcdefABCDEF", s[2 * i]) ||
        !strchr("0123456789abcdefABCDEF", s[2 * i + 1]))
      return -1;
    out[i] = (uint8_t)v;
  }
  return 0;
}

/* Writes `text` to `path` with `mode`, atomically and never over an
 * existing file: a temporary file is linked into place (link fails if
 * `path` exists, even one that appears meanwhile). 0 or -1 with errno. */
static int write_new(const char *path, const char *text, mode_t mode) {
  char tmp[4200];
  snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid());
  int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (fd < 0) return -1;
  size_t n = strlen(text);
  int ok = write(fd, text, n) == (ssize_t)n && fsync(fd) == 0;
  if (close(fd) != 0) ok = 0;
  if (ok && link(tmp, path) != 0) ok = 0;
  int saved = errno;
  unlink(tmp);
  errno = saved;
  return ok ? 0 : -1;
}

/* Reads a key file: the public key, and the seed if the file holds it
 * (*has_seed). A file others may read is refused when it holds the seed. */
static int read_key_file(const char *path, uint8_t pub[32], uint8_t seed[32], int *has_seed) {
  FILE *f = fopen(path, "r");
  if (!f) {
    fprintf(stderr, "tern-token: cannot read %s: %s\n", path, strerror(errno));
    return -1;
  }
  char line[512];
  int has_pub = 0, lineno = 0, bad = 0;
  *has_seed = 0;
  while (!bad && fgets(line, sizeof(line), f)) {
    lineno++;
    char *p = line + strspn(line, " \t");
    p[strcspn(p, "\r\n")] = 0;
    if (!*p || *p == '#') continue;
    char *v = strchr(p, ':');
    if (!v) {
      bad = 1;
      break;
    }
    *v++ = 0;
    v += strspn(v, " \t");
    v[strcspn(v, " \t")] = 0;
    if (strcmp(p, "token-public") == 0 && !has_pub && from_hex(v, pub, 32) == 0) has_pub = 1;
    else if (strcmp(p, "token-secret") == 0 && !*has_seed && from_hex(v, seed, 32) == 0) *has_seed = 1;
    else bad = 1;
  }
  struct stat st;
  int loose = fstat(fileno(f), &st) == 0 && (st.st_mode & 077);
  fclose(f);
  if (bad || (!has_pub && !*has_seed)) {
    fprintf(stderr, "tern-token: %s: line %d: expected 'token-public: HEX' and 'token-secret: HEX'\n",
            path, lineno);
    return -1;
  }
  if (*has_seed) {
    if (loose) {
      fprintf(stderr, "tern-token: %s holds the backend's secret and others may read it "
              "(chmod 600 it)\n", path);
      return -1;
    }
    uint8_t derived[32];
    if (tern_token_public_key(seed, derived) != 0 || (has_pub && memcmp(derived, pub, 32) != 0)) {
      fprintf(stderr, "tern-token: %s: token-public is not the public key of token-secret\n", path);
      return -1;
    }
    memcpy(pub, derived, 32);
  }
  return 0;
}

static int cmd_keygen(int argc, char **argv) {
  if (argc != 2) return usage_error("keygen takes one file name");
  const char *out = argv[1];
  uint8_t seed[32], pub[32];
  if (getrandom(seed, sizeof(seed), 0) != (ssize_t)sizeof(seed) || tern_token_public_key(seed, pub) != 0) {
    fprintf(stderr, "tern-token: cannot make a key: %s\n", strerror(errno));
    return 1;
  }
  char ph[65], sh[65], text[400], pubtext[200], pubpath[4200];
  to_hex(pub, 32, ph);
  to_hex(seed, 32, sh);
  explicit_bzero(seed, sizeof(seed));
  snprintf(text, sizeof(text),
           "# tern backend token key (Ed25519). Keep this file secret; give relays only the "
           "public key.\ntoken-public: %s\ntoken-secret: %s\n", ph, sh);
  snprintf(pubtext, sizeof(pubtext), "# tern backend token public key (ternd --token-key)\n"
           "token-public: %s\n", ph);
  snprintf(pubpath, sizeof(pubpath), "%s.pub", out);
  int rc = 0;
  if (access(pubpath, F_OK) == 0) {
    errno = EEXIST;
    rc = -1;
  }
  const char *failed = pubpath;
  if (rc == 0) {
    failed = out;
    rc = write_new(out, text, 0600);
  }
  if (rc == 0) {
    failed = pubpath;
    rc = write_new(pubpath, pubtext, 0644);
    if (rc) unlink(out); /* both or neither */
  }
  explicit_bzero(text, sizeof(text));
  explicit_bzero(sh, sizeof(sh));
  if (rc) {
    fprintf(stderr, "tern-token: cannot write %s: %s\n", failed, strerror(errno));
    return 1;
  }
  fprintf(stderr, "tern-token: wrote the backend key to %s (mode 0600) and its public key to %s\n",
          out, pubpath);
  printf("%s\n", ph);
  return fflush(stdout) == 0 ? 0 : 1;
}

static int cmd_mint(int argc, char **argv) {
  const char *key = NULL, *user = NULL, *dev = NULL, *ttl = NULL, *id_hex = NULL;
  for (int i = 1; i < argc; i++) {
    const char **slot = strcmp(argv[i], "--key") == 0          ? &key
                        : strcmp(argv[i], "--user") == 0       ? &user
                        : strcmp(argv[i], "--device-key") == 0 ? &dev
                        : strcmp(argv[i], "--ttl") == 0        ? &ttl
                        : strcmp(argv[i], "--id") == 0         ? &id_hex
                                                               : NULL;
    if (!slot) {
      fprintf(stderr, "tern-token: mint: unknown argument '%s'\n%s", argv[i], usage_text);
      return 2;
    }
    if (i + 1 >= argc) return usage_error("an option of mint lacks its value");
    *slot = argv[++i];
  }
  if (!key || !user || !dev || !ttl) return usage_error("mint needs --key, --user, --device-key and --ttl");
  uint8_t device[TERN_KEY_BYTES], id[TERN_TOKEN_ID_BYTES], pub[32], seed[32];
  if (tern_key_from_hex(dev, device) != 0) return usage_error("--device-key wants 64 hex digits");
  char *end;
  errno = 0;
  long long t = strtoll(ttl, &end, 10);
  if (errno || !*ttl || *end || t < 0) return usage_error("--ttl wants a number of seconds >= 0");
  if (id_hex && from_hex(id_hex, id, sizeof(id)) != 0) return usage_error("--id wants 32 hex digits");
  if (!id_hex && getrandom(id, sizeof(id), 0) != (ssize_t)sizeof(id)) {
    fprintf(stderr, "tern-token: no random token id: %s\n", strerror(errno));
    return 1;
  }
  int has_seed;
  if (read_key_file(key, pub, seed, &has_seed) != 0) return 1;
  if (!has_seed) {
    fprintf(stderr, "tern-token: %s holds no token-secret: only the backend's key file can mint\n", key);
    return 1;
  }
  char out[TERN_TOKEN_TEXT_MAX];
  int rc = tern_token_mint(seed, user, device, (uint64_t)time(NULL) + (uint64_t)t, id, out);
  explicit_bzero(seed, sizeof(seed));
  if (rc == TERN_EINVAL) return usage_error("--user wants a user name: 1-64 bytes, no spaces or '@'");
  if (rc) {
    fprintf(stderr, "tern-token: cannot mint: %s\n", tern_strerror(rc));
    return 1;
  }
  printf("%s\n", out);
  return fflush(stdout) == 0 ? 0 : 1;
}

static int cmd_show(int argc, char **argv) {
  const char *tok = NULL, *key = NULL;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--key") == 0) {
      if (i + 1 >= argc) return usage_error("--key lacks its value");
      key = argv[++i];
    } else if (!tok) {
      tok = argv[i];
    } else {
      return usage_error("show takes one token");
    }
  }
  if (!tok) return usage_error("show needs a token (or @FILE)");
  char text[TERN_TOKEN_TEXT_MAX + 64] = "";
  if (tok[0] == '@') {
    FILE *f = fopen(tok + 1, "r");
    if (!f) {
      fprintf(stderr, "tern-token: cannot read %s: %s\n", tok + 1, strerror(errno));
      return 1;
    }
    size_t n = fread(text, 1, sizeof(text) - 1, f);
    text[n] = 0;
    fclose(f);
    tok = text;
  }
  uint8_t pub[32], seed[32];
  int has_seed = 0;
  if (key && tern_key_from_hex(key, pub) != 0 && read_key_file(key, pub, seed, &has_seed) != 0) return 1;
  explicit_bzero(seed, sizeof(seed));
  tern_token_info info;
  int rc = tern_token_decode(tok, key ? pub : NULL, &info);
  if (rc) {
    fprintf(stderr, "tern-token: %s\n", tern_strerror(rc));
    return 1;
  }
  char dh[65], ih[33], when[64];
  to_hex(info.device_key, 32, dh);
  to_hex(info.id, 16, ih);
  time_t e = (time_t)info.expiry_s;
  struct tm tm;
  if (gmtime_r(&e, &tm)) strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
  else snprintf(when, sizeof(when), "?");
  uint64_t now = (uint64_t)time(NULL);
  int expired = now >= info.expiry_s;
  printf("user        %s\n", info.user);
  printf("device key  %s\n", dh);
  printf("expiry      %" PRIu64 " (%s)\n", info.expiry_s, when);
  printf("token id    %s\n", ih);
  printf("signature   %s\n", key ? "verified with the given key" : "not checked (no --key)");
  if (expired) printf("status      expired %" PRIu64 " s ago\n", now - info.expiry_s);
  else printf("status      valid for %" PRIu64 " s more\n", info.expiry_s - now);
  fflush(stdout);
  return expired ? 1 : 0;
}

int main(int argc, char **argv) {
  if (argc < 2) return usage_error("a command is missing");
  const char *cmd = argv[1];
  if (strcmp(cmd, "--version") == 0) {
    printf("tern-token %s (libtern %s)\n", TERN_VERSION_STRING, tern_version());
    return 0;
  }
  if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
    fputs(usage_text, stdout);
    return 0;
  }
  if (strcmp(cmd, "keygen") == 0) return cmd_keygen(argc - 1, argv + 1);
  if (strcmp(cmd, "mint") == 0) return cmd_mint(argc - 1, argv + 1);
  if (strcmp(cmd, "show") == 0) return cmd_show(argc - 1, argv + 1);
  fprintf(stderr, "tern-token: unknown command '%s'\n%s", cmd, usage_text);
  return 2;
}
