/* ternd and tern-chat as real processes over loopback UDP. */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tern/tern.h"
#include "tern_test.h"

static uint64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

typedef struct relay_proc {
  char *dir;
  pid_t pid;
  char port[16];
  char pub[TERN_KEY_HEX_BYTES];
  char keyfile[512], allow[512], log[512];
} relay_proc;

static void keygen(const char *path, char pub[TERN_KEY_HEX_BYTES]) {
  char *argv[] = {(char *)tt_tool("tern-keygen"), (char *)path, NULL};
  char *out = NULL;
  cr_assert_eq(tt_run(argv, NULL, &out, NULL, 10000), 0);
  cr_assert_eq(strlen(out), 65, "one hex line: '%s'", out);
  memcpy(pub, out, 64);
  pub[64] = 0;
  free(out);
}

/* Starts ternd with an allow-list holding `allow_text`. */
static void relay_start(relay_proc *r, const char *allow_text) {
  memset(r, 0, sizeof(*r));
  r->dir = tt_tempdir();
  snprintf(r->keyfile, sizeof(r->keyfile), "%s/relay.key", r->dir);
  snprintf(r->allow, sizeof(r->allow), "%s/allow.txt", r->dir);
  snprintf(r->log, sizeof(r->log), "%s/ternd.log", r->dir);
  keygen(r->keyfile, r->pub);
  tt_write_file(r->allow, allow_text);
  char portfile[600];
  snprintf(portfile, sizeof(portfile), "%s/port", r->dir);
  char datadir[600];
  snprintf(datadir, sizeof(datadir), "%s/data", r->dir);
  char *argv[] = {(char *)tt_tool("ternd"), "--key", r->keyfile, "--allow", r->allow,
                  "--listen", "127.0.0.1:0", "--port-file", portfile, "--data-dir", datadir,
                  "--no-fsync", NULL};
  r->pid = tt_spawn(argv, r->log);
  cr_assert_eq(tt_wait_file(portfile, 10000), 0, "ternd did not start; log:\n%s",
               tt_read_file(r->log));
  char *p = tt_read_file(portfile);
  snprintf(r->port, sizeof(r->port), "%d", atoi(p));
  free(p);
}

static void relay_stop(relay_proc *r) {
  cr_assert_eq(tt_stop(r->pid, 5000), 0, "ternd exits 0 on SIGTERM");
  tt_rmtree(r->dir);
  free(r->dir);
}

/* A tern-chat process with a pipe to its stdin and stdout to a file. */
typedef struct chat_proc {
  pid_t pid;
  int in_fd;
  char out[600], err[600];
} chat_proc;

static void chat_start(chat_proc *c, relay_proc *r, const char *key, const char *name,
                       const char *expect) {
  char relay[64];
  snprintf(relay, sizeof(relay), "127.0.0.1:%s", r->port);
  snprintf(c->out, sizeof(c->out), "%s/%s.out", r->dir, name);
  snprintf(c->err, sizeof(c->err), "%s/%s.err", r->dir, name);
  int p[2];
  cr_assert_eq(pipe(p), 0);
  c->pid = fork();
  cr_assert_geq(c->pid, 0);
  if (c->pid == 0) {
    int fd = open(c->out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int efd = open(c->err, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    dup2(p[0], 0);
    dup2(fd, 1);
    dup2(efd, 2);
    close(p[1]);
    execl(tt_tool("tern-chat"), "tern-chat", "--relay", relay, "--relay-key", r->pub, "--key", key,
          "--expect", expect, "--linger", "60", (char *)NULL);
    _exit(127);
  }
  close(p[0]);
  c->in_fd = p[1];
}

/* Waits until the chat's status output (stderr) contains `needle`. */
static int chat_wait_for(chat_proc *c, const char *needle, int timeout_ms) {
  uint64_t end = now_ms() + (uint64_t)timeout_ms;
  while (now_ms() < end) {
    char *s = tt_read_file(c->err);
    int found = s && strstr(s, needle);
    free(s);
    if (found) return 1;
    usleep(20000);
  }
  return 0;
}

static int chat_wait_exit(chat_proc *c, int timeout_ms) {
  uint64_t end = now_ms() + (uint64_t)timeout_ms;
  int st;
  while (now_ms() < end) {
    if (waitpid(c->pid, &st, WNOHANG) == c->pid) return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    usleep(20000);
  }
  kill(c->pid, SIGKILL);
  waitpid(c->pid, &st, 0);
  return -2;
}

/* Message i: its number, then a pseudo-random printable tail of varying
 * length (0..299), so every byte position and many sizes are checked. */
static void make_message(char *buf, size_t cap, unsigned from, unsigned i) {
  int n = snprintf(buf, cap, "m%u-%05u ", from, i);
  unsigned len = (i * 37u + from * 11u) % 300u;
  uint32_t x = i * 2654435761u + from;
  for (unsigned k = 0; k < len && (size_t)n + 1 < cap; k++) {
    x = x * 1103515245u + 12345u;
    buf[n++] = (char)(33 + (x >> 16) % 94); /* '!'..'~' */
  }
  buf[n] = 0;
}

static void write_all(int fd, const char *s, size_t n) {
  while (n) {
    ssize_t w = write(fd, s, n);
    cr_assert_gt(w, 0, "write: %s", strerror(errno));
    s += w;
    n -= (size_t)w;
  }
}

#define N_MESSAGES 10000

Test(ternd, two_processes_exchange_10000_messages_each_way_byte_exact, .timeout = 300) {
  signal(SIGPIPE, SIG_IGN);
  char dir_keys[2][600], pub[2][TERN_KEY_HEX_BYTES];
  char *kdir = tt_tempdir();
  for (int k = 0; k < 2; k++) {
    snprintf(dir_keys[k], sizeof(dir_keys[k]), "%s/c%d.key", kdir, k);
    keygen(dir_keys[k], pub[k]);
  }
  char allow[400];
  snprintf(allow, sizeof(allow), "%s alice\n%s bob\n", pub[0], pub[1]);
  relay_proc r;
  relay_start(&r, allow);
  chat_proc alice, bob;
  chat_start(&alice, &r, dir_keys[0], "alice", "10000");
  chat_start(&bob, &r, dir_keys[1], "bob", "10000");
  cr_assert(chat_wait_for(&alice, "connected as alice\n", 10000));
  cr_assert(chat_wait_for(&bob, "connected as bob\n", 10000));

  /* Both send at once: A->B and B->A interleave on the relay. */
  size_t cap = (size_t)N_MESSAGES * 330;
  char *in_a = malloc(cap), *in_b = malloc(cap);
  size_t la = 0, lb = 0;
  char msg[400];
  for (unsigned i = 0; i < N_MESSAGES; i++) {
    make_message(msg, sizeof(msg), 0, i);
    la += (size_t)snprintf(in_a + la, cap - la, "@bob %s\n", msg);
    make_message(msg, sizeof(msg), 1, i);
    lb += (size_t)snprintf(in_b + lb, cap - lb, "@alice %s\n", msg);
  }
  uint64_t t0 = now_ms();
  write_all(alice.in_fd, in_a, la);
  write_all(bob.in_fd, in_b, lb);
  close(alice.in_fd);
  close(bob.in_fd);
  cr_assert_eq(chat_wait_exit(&alice, 120000), 0);
  cr_assert_eq(chat_wait_exit(&bob, 120000), 0);
  uint64_t took = now_ms() - t0;

  /* Each side's output: N recv lines in order, each byte-identical to what
   * the other side sent, with inbox seqs 1..N; and a sent line for each of
   * its own messages. */
  for (int side = 0; side < 2; side++) {
    char *out = tt_read_file(side == 0 ? alice.out : bob.out);
    cr_assert_not_null(out);
    char *save = NULL, *line = strtok_r(out, "\n", &save);
    unsigned got = 0, sent = 0;
    for (; line; line = strtok_r(NULL, "\n", &save)) {
      if (strncmp(line, "sent ", 5) == 0) sent++;
      if (strncmp(line, "recv ", 5) != 0) continue;
      char want[500];
      make_message(msg, sizeof(msg), (unsigned)(1 - side), got);
      snprintf(want, sizeof(want), "recv %s %u %s", side == 0 ? "bob" : "alice", got + 1, msg);
      cr_assert_str_eq(line, want, "side %d message %u differs", side, got);
      got++;
    }
    cr_assert_eq(got, N_MESSAGES, "side %d received %u of %u", side, got, N_MESSAGES);
    cr_assert_eq(sent, N_MESSAGES, "side %d: %u of its messages were server-acked", side, sent);
    cr_assert_null(strstr(out, "failed"), "no message was refused");
    free(out);
  }
  cr_log_info("20000 messages (10000 each way) in %llu ms", (unsigned long long)took);
  free(in_a);
  free(in_b);
  relay_stop(&r);
  tt_rmtree(kdir);
  free(kdir);
}

Test(ternd, allow_list_reloads_on_sighup_and_bad_file_keeps_old_list, .timeout = 120) {
  char *kdir = tt_tempdir();
  char key[600], pub[TERN_KEY_HEX_BYTES];
  snprintf(key, sizeof(key), "%s/dev.key", kdir);
  keygen(key, pub);
  relay_proc r;
  relay_start(&r, "# nobody yet\n");

  /* Not listed: refused. */
  char relay[64];
  snprintf(relay, sizeof(relay), "127.0.0.1:%s", r.port);
  char *argv[] = {(char *)tt_tool("tern-chat"), "--relay", relay, "--relay-key", r.pub,
                  "--key", key, "--linger", "10", NULL};
  char *out = NULL, *err = NULL;
  cr_assert_eq(tt_run(argv, "", &out, &err, 20000), 1);
  cr_assert(strstr(err, "(TERN_EUNKNOWNKEY)"), "got: %s", err);
  free(out);
  free(err);

  /* Listed and reloaded: accepted under the listed name. */
  char line[200];
  snprintf(line, sizeof(line), "%s carol\n", pub);
  tt_write_file(r.allow, line);
  kill(r.pid, SIGHUP);
  uint64_t end = now_ms() + 5000;
  int reloaded = 0;
  while (!reloaded && now_ms() < end) {
    char *log = tt_read_file(r.log);
    reloaded = log && strstr(log, "allow-list reloaded: 1 keys");
    free(log);
    usleep(20000);
  }
  cr_assert(reloaded, "ternd logs the reload");
  int st = tt_run(argv, "", &out, &err, 20000);
  cr_assert_eq(st, 0, "exit %d; stderr: %s", st, err);
  cr_assert(strstr(err, "connected as carol"), "got: %s", err);
  free(out);
  free(err);

  /* A broken file: ternd says so and keeps carol. */
  tt_write_file(r.allow, "this is not a key line\n");
  kill(r.pid, SIGHUP);
  end = now_ms() + 5000;
  int complained = 0;
  while (!complained && now_ms() < end) {
    char *log = tt_read_file(r.log);
    complained = log && strstr(log, "reload failed, keeping the old list") && strstr(log, "line 1");
    free(log);
    usleep(20000);
  }
  cr_assert(complained, "ternd reports the bad line");
  cr_assert_eq(tt_run(argv, "", &out, &err, 20000), 0);
  cr_assert(strstr(err, "connected as carol"), "old list still in force; got: %s", err);
  free(out);
  free(err);
  relay_stop(&r);
  tt_rmtree(kdir);
  free(kdir);
}

Test(ternd, refuses_bad_command_lines_and_missing_files) {
  char *dir = tt_tempdir();
  char key[600], pub[TERN_KEY_HEX_BYTES];
  snprintf(key, sizeof(key), "%s/relay.key", dir);
  keygen(key, pub);
  char *err = NULL;
  char *no_mode[] = {(char *)tt_tool("ternd"), "--key", key, NULL};
  cr_assert_eq(tt_run(no_mode, NULL, NULL, &err, 5000), 2);
  cr_assert(strstr(err, "exactly one of --allow or --open"), "got: %s", err);
  free(err);
  char *no_list[] = {(char *)tt_tool("ternd"), "--key", key, "--allow", "/nonexistent/list",
                     NULL};
  cr_assert_eq(tt_run(no_list, NULL, NULL, &err, 5000), 1);
  cr_assert(strstr(err, "cannot load allow-list"), "got: %s", err);
  free(err);
  char *no_key[] = {(char *)tt_tool("ternd"), "--key", "/nonexistent/key", "--open", NULL};
  cr_assert_eq(tt_run(no_key, NULL, NULL, &err, 5000), 1);
  cr_assert(strstr(err, "cannot load relay key"), "got: %s", err);
  free(err);
  char *bad_listen[] = {(char *)tt_tool("ternd"), "--key", key, "--open", "--listen", "nope", NULL};
  cr_assert_eq(tt_run(bad_listen, NULL, NULL, &err, 5000), 2);
  free(err);
  tt_rmtree(dir);
  free(dir);
}

/* On a terminal, tern-chat shows incoming messages and ticks its own: one
 * when the relay has the message, two when the recipient does. */
Test(ternd, interactive_chat_shows_ticks, .timeout = 60) {
  char *kdir = tt_tempdir();
  char akey[600], bkey[600], apub[TERN_KEY_HEX_BYTES], bpub[TERN_KEY_HEX_BYTES];
  snprintf(akey, sizeof(akey), "%s/a.key", kdir);
  snprintf(bkey, sizeof(bkey), "%s/b.key", kdir);
  keygen(akey, apub);
  keygen(bkey, bpub);
  char allow[400];
  snprintf(allow, sizeof(allow), "%s alice\n%s bob\n", apub, bpub);
  relay_proc r;
  relay_start(&r, allow);
  chat_proc bob;
  chat_start(&bob, &r, bkey, "bob", "1");
  close(bob.in_fd); /* bob only listens: --expect 1 ends him */
  cr_assert(chat_wait_for(&bob, "connected as bob\n", 10000));

  char relay[64];
  snprintf(relay, sizeof(relay), "127.0.0.1:%s", r.port);
  int master;
  pid_t pid = forkpty(&master, NULL, NULL, NULL);
  cr_assert_geq(pid, 0);
  if (pid == 0) {
    execl(tt_tool("tern-chat"), "tern-chat", "--relay", relay, "--relay-key", r.pub, "--key", akey,
          (char *)NULL);
    _exit(127);
  }
  const char *line = "@bob hello from a terminal\n";
  cr_assert_eq(write(master, line, strlen(line)), (ssize_t)strlen(line));
  char screen[8192] = "";
  size_t len = 0;
  uint64_t end = now_ms() + 20000;
  while (now_ms() < end && !strstr(screen, "\u2713\u2713 delivered")) {
    struct pollfd pf = {.fd = master, .events = POLLIN};
    if (poll(&pf, 1, 100) > 0) {
      ssize_t n = read(master, screen + len, sizeof(screen) - 1 - len);
      if (n > 0) len += (size_t)n;
      screen[len] = 0;
    }
  }
  cr_assert(strstr(screen, "\u2713 sent"), "one tick when the relay has it; screen:\n%s", screen);
  cr_assert(strstr(screen, "\u2713\u2713 delivered"), "two when bob has it; screen:\n%s", screen);
  cr_assert_null(strstr(screen, "sent "), "no scripted output on a terminal");
  cr_assert_eq(write(master, "\x04", 1), 1); /* Ctrl-D: end of input */
  int st = -1;
  for (int i = 0; i < 100 && waitpid(pid, &st, WNOHANG) == 0; i++) usleep(50000);
  if (waitpid(pid, &st, WNOHANG) == 0) kill(pid, SIGKILL);
  close(master);
  cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "exits 0 at end of input");
  cr_assert_eq(chat_wait_exit(&bob, 20000), 0);
  char *out = tt_read_file(bob.out);
  cr_assert(strstr(out, "recv alice 1 hello from a terminal"), "bob got: %s", out);
  free(out);
  relay_stop(&r);
  tt_rmtree(kdir);
  free(kdir);
}
