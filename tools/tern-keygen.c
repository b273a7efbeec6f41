/*
 * tern-keygen: makes a static X25519 keypair for a relay or a device.
 *
 *   tern-keygen [--force] KEYFILE   write a new private key file (mode 0600)
 *   tern-keygen --show KEYFILE      print the public key of an existing file
 *
 * stdout carries exactly one line, the public key as 64 lowercase hex digits,
 * so that `pub=$(tern-keygen relay.key)` works; everything meant for a human
 * goes to stderr. Exit status: 0 done, 1 failed, 2 bad usage.
 *
 * There is no --public-only: stdout already holds nothing but the public key,
 * and --show gives it again from the file at any time.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "tern/tern.h"

static const char usage_text[] =
    "usage: tern-keygen [--force] KEYFILE\n"
    "       tern-keygen --show KEYFILE\n"
    "\n"
    "Writes a new X25519 private key to KEYFILE (mode 0600) and prints its\n"
    "public key as 64 hex digits on stdout. An existing KEYFILE is never\n"
    "replaced unless --force is given.\n"
    "\n"
    "  --force   replace KEYFILE if it exists\n"
    "  --show    print the public key of the existing KEYFILE; write nothing\n"
    "  --version print the version and exit\n"
    "  --help    print this help\n";

static int usage_error(const char *why) {
  fprintf(stderr, "tern-keygen: %s\n%s", why, usage_text);
  return 2;
}

/* Prints a failure of `what` on `path`, with the OS reason for TERN_EIO. */
static int fail(const char *what, const char *path, int err) {
  if (err == TERN_EIO)
    fprintf(stderr, "tern-keygen: cannot %s %s: %s (%s)\n", what, path, tern_strerror(err), strerror(errno));
  else
    fprintf(stderr, "tern-keygen: cannot %s %s: %s\n", what, path, tern_strerror(err));
  return 1;
}

static void print_public(const tern_keypair *kp) {
  char hex[TERN_KEY_HEX_BYTES];
  tern_key_to_hex(kp->public_key, hex);
  printf("%s\n", hex);
}

int main(int argc, char **argv) {
  int force = 0, show = 0;
  const char *path = NULL;
  int options_done = 0;

  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (!options_done && a[0] == '-' && a[1] != '\0') {
      if (strcmp(a, "--") == 0) options_done = 1;
      else if (strcmp(a, "--force") == 0) force = 1;
      else if (strcmp(a, "--show") == 0) show = 1;
      else if (strcmp(a, "--version") == 0) {
        printf("tern-keygen %s (libtern %s)\n", TERN_VERSION_STRING, tern_version());
        return 0;
      } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
        fputs(usage_text, stdout);
        return 0;
      } else {
        fprintf(stderr, "tern-keygen: unknown option '%s'\n%s", a, usage_text);
        return 2;
      }
    } else if (path == NULL) {
      path = a;
    } else {
      return usage_error("only one KEYFILE may be given");
    }
  }
  if (path == NULL) return usage_error("KEYFILE is missing");
  if (show && force) return usage_error("--show writes nothing, so --force makes no sense with it");

  tern_keypair kp;
  int rc;
  if (show) {
    char why[256];
    rc = tern_keypair_load_why(path, &kp, why, sizeof why);
    if (rc != 0) {
      fprintf(stderr, "tern-keygen: cannot read %s: %s\n", path, why);
      return 1;
    }
  } else {
    rc = tern_keypair_generate(&kp);
    if (rc != 0) return fail("make a key for", path, rc);
    rc = tern_keypair_save(path, &kp, force);
    if (rc != 0) {
      explicit_bzero(&kp, sizeof kp);
      return fail("write", path, rc);
    }
    fprintf(stderr, "tern-keygen: wrote private key to %s (mode 0600); public key (hex) follows\n", path);
  }
  print_public(&kp);
  explicit_bzero(&kp, sizeof kp);
  return fflush(stdout) == 0 ? 0 : 1;
}
