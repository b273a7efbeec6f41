#include "tern_test.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

char *tt_tempdir(void) {
  char tmpl[] = "/tmp/tern-test-XXXXXX";
  char *d = mkdtemp(tmpl);
  cr_assert_not_null(d, "mkdtemp: %s", strerror(errno));
  return strdup(d);
}

void tt_rmtree(const char *path) {
  if (!path || strncmp(path, "/tmp/tern-test-", 15) != 0) return;
  char cmd[512];
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", path);
  if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", path);
}

const char *tt_tool(const char *name) {
  static char buf[4][1024];
  static int slot;
  char *b = buf[slot++ % 4];
  if (strcmp(name, "ternd") == 0)
    snprintf(b, 1024, "%s/tools/ternd/ternd", TERN_TEST_BINDIR);
  else
    snprintf(b, 1024, "%s/tools/%s", TERN_TEST_BINDIR, name);
  return b;
}

uint64_t tt_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void tt_sleep_ms(unsigned ms) {
  struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

static void append(char **buf, size_t *len, const char *data, size_t n) {
  char *nb = realloc(*buf, *len + n + 1);
  cr_assert_not_null(nb);
  memcpy(nb + *len, data, n);
  *len += n;
  nb[*len] = 0;
  *buf = nb;
}

int tt_run(char *const argv[], const char *input, char **out, char **err, int timeout_ms) {
  int in_p[2], out_p[2], err_p[2];
  cr_assert(pipe(in_p) == 0 && pipe(out_p) == 0 && pipe(err_p) == 0);
  pid_t pid = fork();
  cr_assert(pid >= 0);
  if (pid == 0) {
    dup2(in_p[0], 0);
    dup2(out_p[1], 1);
    dup2(err_p[1], 2);
    close(in_p[1]);
    close(out_p[0]);
    close(err_p[0]);
    execv(argv[0], argv);
    _exit(127);
  }
  close(in_p[0]);
  close(out_p[1]);
  close(err_p[1]);
  if (input) {
    size_t n = strlen(input), off = 0;
    while (off < n) {
      ssize_t w = write(in_p[1], input + off, n - off);
      if (w <= 0) break;
      off += (size_t)w;
    }
  }
  close(in_p[1]);
  char *obuf = NULL, *ebuf = NULL;
  size_t olen = 0, elen = 0;
  append(&obuf, &olen, "", 0);
  append(&ebuf, &elen, "", 0);
  uint64_t end = tt_now_ms() + (uint64_t)timeout_ms;
  int open_fds = 2, timed_out = 0;
  while (open_fds > 0) {
    uint64_t now = tt_now_ms();
    if (now >= end) {
      timed_out = 1;
      break;
    }
    struct pollfd pf[2] = {{.fd = out_p[0], .events = POLLIN}, {.fd = err_p[0], .events = POLLIN}};
    if (poll(pf, 2, (int)(end - now)) <= 0) continue;
    for (int i = 0; i < 2; i++) {
      if (pf[i].fd < 0 || !(pf[i].revents & (POLLIN | POLLHUP))) continue;
      char tmp[4096];
      ssize_t n = read(pf[i].fd, tmp, sizeof(tmp));
      if (n <= 0) {
        close(pf[i].fd);
        if (i == 0) out_p[0] = -1;
        else err_p[0] = -1;
        open_fds--;
      } else if (i == 0) {
        append(&obuf, &olen, tmp, (size_t)n);
      } else {
        append(&ebuf, &elen, tmp, (size_t)n);
      }
    }
  }
  if (timed_out) kill(pid, SIGKILL);
  if (out_p[0] >= 0) close(out_p[0]);
  if (err_p[0] >= 0) close(err_p[0]);
  int st;
  waitpid(pid, &st, 0);
  if (out) *out = obuf;
  else free(obuf);
  if (err) *err = ebuf;
  else free(ebuf);
  if (timed_out) return -1;
  if (WIFSIGNALED(st)) return 128 + WTERMSIG(st);
  return WEXITSTATUS(st);
}

pid_t tt_spawn(char *const argv[], const char *log_path) { return tt_spawn_in_group(argv, log_path, -1); }

pid_t tt_spawn_in_group(char *const argv[], const char *log_path, pid_t group) {
  pid_t parent = getpid();
  pid_t pid = fork();
  cr_assert(pid >= 0);
  if (pid == 0) {
    if (group >= 0) {
      setpgid(0, group);
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (getppid() != parent) _exit(1);
    }
    int fd = open(log_path ? log_path : "/dev/null", O_WRONLY | O_CREAT | O_APPEND, 0644);
    int nul = open("/dev/null", O_RDONLY);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
    }
    if (nul >= 0) dup2(nul, 0);
    execv(argv[0], argv);
    _exit(127);
  }
  if (group >= 0) setpgid(pid, group); /* also here, so the child is in before we go on */
  return pid;
}

int tt_stop(pid_t pid, int timeout_ms) {
  kill(pid, SIGTERM);
  uint64_t end = tt_now_ms() + (uint64_t)timeout_ms;
  int st;
  while (tt_now_ms() < end) {
    pid_t w = waitpid(pid, &st, WNOHANG);
    if (w == pid) return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    usleep(10000);
  }
  kill(pid, SIGKILL);
  waitpid(pid, &st, 0);
  return -1;
}

char *tt_read_file(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  char *buf = NULL;
  size_t len = 0;
  char tmp[4096];
  size_t n;
  append(&buf, &len, "", 0);
  while ((n = fread(tmp, 1, sizeof(tmp), f)) > 0) append(&buf, &len, tmp, n);
  fclose(f);
  return buf;
}

int tt_wait_file(const char *path, int timeout_ms) {
  uint64_t end = tt_now_ms() + (uint64_t)timeout_ms;
  struct stat st;
  while (tt_now_ms() < end) {
    if (stat(path, &st) == 0 && st.st_size > 0) return 0;
    usleep(10000);
  }
  return -1;
}

void tt_write_file(const char *path, const char *data) {
  FILE *f = fopen(path, "w");
  cr_assert_not_null(f, "open %s: %s", path, strerror(errno));
  cr_assert(fputs(data, f) >= 0);
  cr_assert(fclose(f) == 0);
}
