/* Keypairs, hex encoding, private key files and the tern-keygen tool. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tern/tern.h"
#include "tmpdir.h"

extern char **environ;

/* RFC 7748, section 6.1: Alice's X25519 private and public key. */
static const char rfc_secret_hex[] = "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a";
static const char rfc_public_hex[] = "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a";

static char dir[4096];

static void make_dir(void) { cr_assert_eq(tern__test_mkdtemp(dir, sizeof dir), 0, "mkdtemp: %s", strerror(errno)); }
static void remove_dir(void) { cr_assert_eq(tern__test_rmtree(dir), 0, "rmtree %s: %s", dir, strerror(errno)); }

TestSuite(keys, .init = make_dir, .fini = remove_dir);

/* dir + "/" + name, in a buffer that lives as long as the enclosing block. */
#define PATH_BUF 4200
#define in_dir(name) path_in_dir((char[PATH_BUF]){0}, name)
static const char *path_in_dir(char *buf, const char *name) {
  snprintf(buf, PATH_BUF, "%s/%s", dir, name);
  return buf;
}

static void write_file(const char *path, const char *content, size_t len, mode_t mode) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  cr_assert_geq(fd, 0, "open %s: %s", path, strerror(errno));
  cr_assert_eq(write(fd, content, len), (ssize_t)len);
  cr_assert_eq(fchmod(fd, mode), 0);
  cr_assert_eq(close(fd), 0);
}

static void write_text(const char *path, const char *content) { write_file(path, content, strlen(content), 0600); }

/* Reads a whole (small) file into buf, NUL terminated; returns its length. */
static size_t read_file(const char *path, char *buf, size_t size) {
  int fd = open(path, O_RDONLY);
  cr_assert_geq(fd, 0, "open %s: %s", path, strerror(errno));
  ssize_t n = read(fd, buf, size - 1);
  cr_assert_geq(n, 0);
  close(fd);
  buf[n] = '\0';
  return (size_t)n;
}

static mode_t file_mode(const char *path) {
  struct stat st;
  cr_assert_eq(stat(path, &st), 0, "stat %s: %s", path, strerror(errno));
  return st.st_mode & 07777;
}

static int count_entries(const char *path) {
  DIR *d = opendir(path);
  cr_assert_not_null(d);
  int n = 0;
  for (struct dirent *e; (e = readdir(d)) != NULL;)
    if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) n++;
  closedir(d);
  return n;
}

static int is_zero(const void *p, size_t n) {
  const uint8_t *b = p;
  for (size_t i = 0; i < n; i++)
    if (b[i] != 0) return 0;
  return 1;
}

static tern_keypair rfc_keypair(void) {
  tern_keypair kp;
  cr_assert_eq(tern_key_from_hex(rfc_secret_hex, kp.secret_key), 0);
  cr_assert_eq(tern_key_from_hex(rfc_public_hex, kp.public_key), 0);
  return kp;
}

static tern_keypair fresh_keypair(void) {
  tern_keypair kp;
  cr_assert_eq(tern_keypair_generate(&kp), 0);
  return kp;
}

/* Loads `path` expecting `want`, and checks that *kp is wiped on failure. */
static void expect_load(const char *path, int want) {
  tern_keypair kp;
  memset(&kp, 0xAA, sizeof kp);
  int rc = tern_keypair_load(path, &kp);
  cr_assert_eq(rc, want, "load %s: got %s, want %s", path, tern_errname(rc), tern_errname(want));
  if (want != 0) cr_assert(is_zero(&kp, sizeof kp), "keypair not zeroed after a failed load");
}

/* ---------------------------------------------------------------- hex */

Test(keys, hex_encodes_lowercase) {
  tern_keypair kp = rfc_keypair();
  char hex[TERN_KEY_HEX_BYTES];
  memset(hex, 'x', sizeof hex);
  tern_key_to_hex(kp.public_key, hex);
  cr_assert_str_eq(hex, rfc_public_hex);
  cr_assert_eq(kp.public_key[0], 0x85);
  cr_assert_eq(kp.public_key[31], 0x6a);
}

Test(keys, hex_decodes_either_case_and_surrounding_whitespace) {
  uint8_t want[TERN_KEY_BYTES], got[TERN_KEY_BYTES];
  cr_assert_eq(tern_key_from_hex(rfc_public_hex, want), 0);

  char upper[TERN_KEY_HEX_BYTES];
  for (size_t i = 0; i < sizeof upper; i++) upper[i] = (char)(rfc_public_hex[i] >= 'a' ? rfc_public_hex[i] - 32 : rfc_public_hex[i]);
  cr_assert_eq(tern_key_from_hex(upper, got), 0);
  cr_assert_arr_eq(got, want, sizeof want);

  char padded[128];
  snprintf(padded, sizeof padded, " \t%s\r\n", rfc_public_hex);
  memset(got, 0, sizeof got);
  cr_assert_eq(tern_key_from_hex(padded, got), 0);
  cr_assert_arr_eq(got, want, sizeof want);
}

Test(keys, hex_refuses_wrong_length_and_non_hex) {
  char buf[160];
  const char *bad[] = {
      "",
      "   ",
      "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6",    /* 63 digits */
      "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a0",  /* 65 digits */
      "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e",     /* 62 digits */
      "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6g",   /* 'g' */
      "8520f0098930a754748b7ddcb43ef75a0dbf3a0d 6381af4eba4a98eaa9b4e6a",   /* inner space */
      "0x8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a", /* prefix */
      ("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a8520f0098930a754748b7ddcb43ef75a0dbf3a0d2638"
       "1af4eba4a98eaa9b4e6a"), /* two keys */
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    uint8_t key[TERN_KEY_BYTES];
    memset(key, 0xAA, sizeof key);
    snprintf(buf, sizeof buf, "%s", bad[i]);
    cr_assert_eq(tern_key_from_hex(bad[i], key), TERN_EINVAL, "accepted \"%s\"", buf);
    cr_assert(is_zero(key, sizeof key), "key not zeroed after refusing \"%s\"", buf);
  }
}

/* ------------------------------------------------------------- keypairs */

Test(keys, generate_gives_distinct_consistent_keypairs) {
  tern_keypair a = fresh_keypair(), b = fresh_keypair();
  cr_assert_arr_neq(a.secret_key, b.secret_key, TERN_KEY_BYTES);
  cr_assert_arr_neq(a.public_key, b.public_key, TERN_KEY_BYTES);
  /* Consistent: the file round trip re-derives the public key and would
   * refuse a mismatch. */
  const char *path = in_dir("a.key");
  cr_assert_eq(tern_keypair_save(path, &a, 0), 0);
  tern_keypair back;
  cr_assert_eq(tern_keypair_load(path, &back), 0);
  cr_assert_arr_eq(back.public_key, a.public_key, TERN_KEY_BYTES);
}

/* ------------------------------------------------------------ key files */

Test(keys, save_load_round_trip_with_mode_0600) {
  tern_keypair kp = fresh_keypair(), back;
  const char *path = in_dir("relay.key");
  cr_assert_eq(tern_keypair_save(path, &kp, 0), 0);
  cr_assert_eq(file_mode(path), 0600, "mode is %o", file_mode(path));
  cr_assert_eq(tern_keypair_load(path, &back), 0);
  cr_assert_arr_eq(back.secret_key, kp.secret_key, TERN_KEY_BYTES);
  cr_assert_arr_eq(back.public_key, kp.public_key, TERN_KEY_BYTES);
  cr_assert_eq(count_entries(dir), 1, "temporary files left behind");
}

Test(keys, mode_is_0600_whatever_the_umask) {
  tern_keypair kp = fresh_keypair();
  mode_t masks[] = {0, 0022, 0277};
  for (size_t i = 0; i < sizeof masks / sizeof masks[0]; i++) {
    char name[32];
    snprintf(name, sizeof name, "k%zu.key", i);
    const char *path = in_dir(name);
    mode_t old = umask(masks[i]);
    int rc = tern_keypair_save(path, &kp, 0);
    umask(old);
    cr_assert_eq(rc, 0);
    cr_assert_eq(file_mode(path), 0600, "umask %03o gave mode %o", masks[i], file_mode(path));
  }
}

Test(keys, file_format_is_as_specified) {
  tern_keypair kp = rfc_keypair();
  const char *path = in_dir("rfc.key");
  cr_assert_eq(tern_keypair_save(path, &kp, 0), 0);
  char text[1024];
  read_file(path, text, sizeof text);
  cr_assert_str_eq(text,
                   "# tern private key (X25519). Keep this file secret; share only the public key.\n"
                   "public: 8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a\n"
                   "secret: 77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a\n");
}

Test(keys, save_refuses_overwrite_without_force) {
  const char *path = in_dir("relay.key");
  static const char old[] = "not a key, but somebody's file\n";
  write_text(path, old);
  tern_keypair kp = fresh_keypair();
  cr_assert_eq(tern_keypair_save(path, &kp, 0), TERN_EEXIST);
  char now[256];
  size_t n = read_file(path, now, sizeof now);
  cr_assert_eq(n, strlen(old));
  cr_assert_str_eq(now, old);
  cr_assert_eq(count_entries(dir), 1, "temporary files left behind");
}

Test(keys, save_refuses_to_replace_a_dangling_symlink) {
  /* The link target does not exist yet; writing through or over the link
   * would both be an overwrite the caller did not ask for. */
  const char *path = in_dir("link.key");
  cr_assert_eq(symlink(in_dir("elsewhere"), path), 0);
  tern_keypair kp = fresh_keypair();
  cr_assert_eq(tern_keypair_save(path, &kp, 0), TERN_EEXIST);
  cr_assert_eq(access(in_dir("elsewhere"), F_OK), -1);
}

Test(keys, force_overwrites_and_fixes_the_mode) {
  const char *path = in_dir("relay.key");
  write_file(path, "old\n", 4, 0644);
  tern_keypair kp = fresh_keypair(), back;
  cr_assert_eq(tern_keypair_save(path, &kp, 1), 0);
  cr_assert_eq(file_mode(path), 0600, "mode is %o", file_mode(path));
  cr_assert_eq(tern_keypair_load(path, &back), 0);
  cr_assert_arr_eq(back.secret_key, kp.secret_key, TERN_KEY_BYTES);

  tern_keypair other = fresh_keypair();
  cr_assert_eq(tern_keypair_save(path, &other, 1), 0);
  cr_assert_eq(tern_keypair_load(path, &back), 0);
  cr_assert_arr_eq(back.secret_key, other.secret_key, TERN_KEY_BYTES);
  cr_assert_eq(count_entries(dir), 1, "temporary files left behind");
}

Test(keys, failed_forced_save_leaves_no_temporary_file) {
  /* rename() cannot replace a directory, so the forced save fails late,
   * after the temporary file was written. */
  const char *path = in_dir("taken");
  cr_assert_eq(mkdir(path, 0700), 0);
  tern_keypair kp = fresh_keypair();
  errno = 0;
  cr_assert_eq(tern_keypair_save(path, &kp, 1), TERN_EIO);
  cr_assert_eq(errno, EISDIR, "errno %s", strerror(errno));
  cr_assert_eq(count_entries(dir), 1, "temporary file left behind");
}

Test(keys, save_refuses_mismatched_keypair) {
  tern_keypair kp = fresh_keypair();
  kp.public_key[0] ^= 1;
  const char *path = in_dir("bad.key");
  cr_assert_eq(tern_keypair_save(path, &kp, 0), TERN_EINVAL);
  cr_assert_eq(count_entries(dir), 0);
}

Test(keys, save_into_missing_directory_is_eio) {
  tern_keypair kp = fresh_keypair();
  errno = 0;
  cr_assert_eq(tern_keypair_save(in_dir("no/such/dir.key"), &kp, 0), TERN_EIO);
  cr_assert_eq(errno, ENOENT);
}

Test(keys, load_accepts_hand_written_variants) {
  uint8_t want[TERN_KEY_BYTES];
  cr_assert_eq(tern_key_from_hex(rfc_public_hex, want), 0);
  const char *variants[] = {
      /* secret only: the public key is derived */
      "secret: 77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a\n",
      /* CRLF, upper case, comments, blank lines, no final newline */
      "# mine\r\n\r\npublic: 8520F0098930A754748B7DDCB43EF75A0DBF3A0D26381AF4EBA4A98EAA9B4E6A\r\n"
      "  # indented comment\r\nsecret:77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a",
      /* secret before public */
      "secret: 77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a\n"
      "public: 8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a\n",
  };
  for (size_t i = 0; i < sizeof variants / sizeof variants[0]; i++) {
    const char *path = in_dir("v.key");
    write_text(path, variants[i]);
    tern_keypair kp;
    cr_assert_eq(tern_keypair_load(path, &kp), 0, "variant %zu refused", i);
    cr_assert_arr_eq(kp.public_key, want, sizeof want, "variant %zu: wrong public key", i);
  }
}

Test(keys, load_refuses_malformed_files) {
  const char *bad[] = {
      "",
      "# only a comment\n",
      /* truncated hex */
      "secret: 77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2\n",
      /* bad characters */
      "secret: 77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2z\n",
      /* a public key that belongs to another secret */
      "public: de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f\n"
      "secret: 77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a\n",
      /* a public key line that is not a key */
      "public: nope\n"
      "secret: 77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a\n",
      /* public key only */
      "public: 8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a\n",
      /* two secrets */
      "secret: 77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a\n"
      "secret: 5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb\n",
      /* unknown field */
      "secret: 77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a\nuser: alice\n",
      /* a bare hex line without a name */
      "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a\n",
      /* field names are case sensitive */
      "Secret: 77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a\n",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    char name[32];
    snprintf(name, sizeof name, "bad%zu.key", i);
    const char *path = in_dir(name);
    write_text(path, bad[i]);
    expect_load(path, TERN_EKEYFILE);
  }
}

Test(keys, load_refuses_embedded_nul_and_oversized_files) {
  static const char with_nul[] =
      "secret: 77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a\0garbage\n";
  const char *path = in_dir("nul.key");
  write_file(path, with_nul, sizeof with_nul - 1, 0600);
  expect_load(path, TERN_EKEYFILE);

  /* A valid key followed by 8 KiB of comment. */
  char big[8192 + 128];
  int n = snprintf(big, sizeof big, "secret: %s\n", rfc_secret_hex);
  memset(big + n, '#', sizeof big - (size_t)n - 1);
  big[sizeof big - 1] = '\n';
  path = in_dir("big.key");
  write_file(path, big, sizeof big, 0600);
  expect_load(path, TERN_EKEYFILE);
}

Test(keys, load_refuses_files_others_can_access) {
  tern_keypair kp = fresh_keypair();
  const char *path = in_dir("relay.key");
  cr_assert_eq(tern_keypair_save(path, &kp, 0), 0);
  mode_t modes[] = {0644, 0640, 0604, 0620, 0602};
  for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++) {
    cr_assert_eq(chmod(path, modes[i]), 0);
    expect_load(path, TERN_EKEYFILE);
  }
  cr_assert_eq(chmod(path, 0400), 0);
  expect_load(path, 0);
}

Test(keys, load_refuses_a_directory) { expect_load(dir, TERN_EKEYFILE); }

Test(keys, load_of_missing_file_is_enoent) { expect_load(in_dir("missing.key"), TERN_ENOENT); }

/* Issue 13 item 5: a refused key file says which check failed. */
static void expect_why(const char *path, int want, const char *says) {
  tern_keypair kp;
  char why[256];
  int rc = tern_keypair_load_why(path, &kp, why, sizeof why);
  cr_assert_eq(rc, want, "load %s: got %s", path, tern_errname(rc));
  cr_assert(strstr(why, says) != NULL, "load %s: reason '%s' lacks '%s'", path, why, says);
}

Test(keys, load_says_which_check_failed) {
  char good[256], text[512];
  snprintf(good, sizeof good, "secret: %s\n", rfc_secret_hex);
  const char *p = in_dir("k");
  write_file(p, good, strlen(good), 0644);
  expect_why(p, TERN_EKEYFILE, "mode 0644: group or others may read or write it");
  expect_why(dir, TERN_EKEYFILE, "not a regular file");
  expect_why(in_dir("missing.key"), TERN_ENOENT, "No such file");
  static char big[5000];
  memset(big, '#', sizeof big);
  write_file(p, big, sizeof big, 0600);
  expect_why(p, TERN_EKEYFILE, "larger than 4096 bytes");
  write_text(p, "# a comment\nhello world\n");
  expect_why(p, TERN_EKEYFILE, "line 2 is not 'public: HEX', 'secret: HEX'");
  write_text(p, "\nsecret: 1234\n");
  expect_why(p, TERN_EKEYFILE, "line 2: the secret key is not 64 hex digits");
  snprintf(text, sizeof text, "%s%s", good, good);
  write_text(p, text);
  expect_why(p, TERN_EKEYFILE, "line 2: a second 'secret:' line");
  snprintf(text, sizeof text, "public: %s\n", rfc_public_hex);
  write_text(p, text);
  expect_why(p, TERN_EKEYFILE, "no 'secret:' line");
  snprintf(text, sizeof text, "public: %s\n%s", rfc_secret_hex, good);
  write_text(p, text);
  expect_why(p, TERN_EKEYFILE, "is not the public key of its secret key");
  write_text(p, good);
  tern_keypair kp;
  char why[256] = "x";
  cr_assert_eq(tern_keypair_load_why(p, &kp, why, sizeof why), 0);
  cr_assert_str_eq(why, "", "a good file leaves no reason");
}

/* ---------------------------------------------------------- tern-keygen */

typedef struct {
  int status; /* exit status, or -1 if it did not exit normally */
  char out[4096];
  char err[4096];
} run_result;

/* Runs tern-keygen with `args` (NULL terminated), capturing stdout/stderr. */
static run_result run_keygen(const char *const *args) {
  static const char bin[] = TERN_TEST_BINDIR "/tools/tern-keygen";
  char *argv[16] = {(char *)bin};
  size_t argc = 1;
  for (; args[argc - 1] != NULL; argc++) argv[argc] = (char *)args[argc - 1];
  argv[argc] = NULL;

  const char *out_path = in_dir(".stdout"), *err_path = in_dir(".stderr");
  posix_spawn_file_actions_t fa;
  cr_assert_eq(posix_spawn_file_actions_init(&fa), 0);
  cr_assert_eq(posix_spawn_file_actions_addopen(&fa, 1, out_path, O_WRONLY | O_CREAT | O_TRUNC, 0600), 0);
  cr_assert_eq(posix_spawn_file_actions_addopen(&fa, 2, err_path, O_WRONLY | O_CREAT | O_TRUNC, 0600), 0);
  pid_t pid;
  int rc = posix_spawn(&pid, bin, &fa, NULL, argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  cr_assert_eq(rc, 0, "spawn %s: %s", bin, strerror(rc));
  int ws;
  cr_assert_eq(waitpid(pid, &ws, 0), pid);

  run_result r;
  r.status = WIFEXITED(ws) ? WEXITSTATUS(ws) : -1;
  read_file(out_path, r.out, sizeof r.out);
  read_file(err_path, r.err, sizeof r.err);
  unlink(out_path);
  unlink(err_path);
  return r;
}

/* True if s is exactly 64 lowercase hex digits and a newline. */
static int is_hex_line(const char *s) {
  if (strlen(s) != 65 || s[64] != '\n') return 0;
  for (int i = 0; i < 64; i++)
    if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return 0;
  return 1;
}

Test(keys, keygen_writes_key_and_prints_public_key) {
  const char *path = in_dir("relay.key");
  run_result r = run_keygen((const char *[]){path, NULL});
  cr_assert_eq(r.status, 0, "stderr: %s", r.err);
  cr_assert(is_hex_line(r.out), "stdout is not one hex line: \"%s\"", r.out);
  cr_assert(strstr(r.err, "wrote private key") != NULL, "stderr: %s", r.err);
  cr_assert_eq(file_mode(path), 0600);

  tern_keypair kp;
  cr_assert_eq(tern_keypair_load(path, &kp), 0);
  char hex[TERN_KEY_HEX_BYTES];
  tern_key_to_hex(kp.public_key, hex);
  cr_assert_eq(strncmp(r.out, hex, 64), 0, "printed %.64s, file holds %s", r.out, hex);
}

Test(keys, keygen_refuses_overwrite_without_force) {
  const char *path = in_dir("relay.key");
  run_result first = run_keygen((const char *[]){path, NULL});
  cr_assert_eq(first.status, 0);
  char before[1024], after[1024];
  read_file(path, before, sizeof before);

  run_result again = run_keygen((const char *[]){path, NULL});
  cr_assert_eq(again.status, 1);
  cr_assert_str_eq(again.out, "");
  cr_assert(strstr(again.err, "--force") != NULL, "stderr does not mention --force: %s", again.err);
  read_file(path, after, sizeof after);
  cr_assert_str_eq(after, before);

  run_result forced = run_keygen((const char *[]){"--force", path, NULL});
  cr_assert_eq(forced.status, 0, "stderr: %s", forced.err);
  cr_assert(is_hex_line(forced.out));
  cr_assert_str_neq(forced.out, first.out, "--force did not make a new key");
  read_file(path, after, sizeof after);
  cr_assert_str_neq(after, before);
}

Test(keys, keygen_show_prints_the_files_public_key) {
  const char *path = in_dir("relay.key");
  tern_keypair kp = rfc_keypair();
  cr_assert_eq(tern_keypair_save(path, &kp, 0), 0);
  run_result r = run_keygen((const char *[]){"--show", path, NULL});
  cr_assert_eq(r.status, 0, "stderr: %s", r.err);
  char want[80];
  snprintf(want, sizeof want, "%s\n", rfc_public_hex);
  cr_assert_str_eq(r.out, want);

  r = run_keygen((const char *[]){"--show", in_dir("missing.key"), NULL});
  cr_assert_eq(r.status, 1);
  cr_assert_str_eq(r.out, "");
  cr_assert(strstr(r.err, "No such file or directory") != NULL, "stderr: %s", r.err);

  cr_assert_eq(chmod(path, 0644), 0);
  r = run_keygen((const char *[]){"--show", path, NULL});
  cr_assert_eq(r.status, 1);
  cr_assert_str_eq(r.out, "");
  cr_assert(strstr(r.err, "mode 0644: group or others may read or write it") != NULL, "stderr: %s", r.err);
}

Test(keys, keygen_help_and_usage_errors) {
  run_result r = run_keygen((const char *[]){"--help", NULL});
  cr_assert_eq(r.status, 0);
  cr_assert(strstr(r.out, "usage: tern-keygen") != NULL, "stdout: %s", r.out);

  const char *const *bad[] = {
      (const char *[]){NULL},
      (const char *[]){"--frobnicate", in_dir("a.key"), NULL},
      (const char *[]){in_dir("a.key"), in_dir("b.key"), NULL},
      (const char *[]){"--show", "--force", in_dir("a.key"), NULL},
      (const char *[]){"--force", NULL},
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    r = run_keygen(bad[i]);
    cr_assert_eq(r.status, 2, "case %zu: status %d", i, r.status);
    cr_assert_str_eq(r.out, "", "case %zu", i);
    cr_assert(strstr(r.err, "usage: tern-keygen") != NULL, "case %zu: stderr: %s", i, r.err);
  }
  cr_assert_eq(count_entries(dir), 0, "a usage error wrote a file");
}

Test(keys, keygen_double_dash_allows_dash_file_names) {
  const char *old = getcwd(NULL, 0);
  cr_assert_not_null(old);
  cr_assert_eq(chdir(dir), 0);
  run_result r = run_keygen((const char *[]){"--", "-odd.key", NULL});
  cr_assert_eq(chdir(old), 0);
  free((void *)old);
  cr_assert_eq(r.status, 0, "stderr: %s", r.err);
  cr_assert_eq(file_mode(in_dir("-odd.key")), 0600);
}
