#include "natsrv.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tern_test.h"

/* Servers started and not yet killed, and the stores of nats_up(): a
 * test that fails (a Criterion assertion ends its worker) leaves neither
 * behind; the worker's exit kills and removes them (a worker that dies
 * without exiting takes its servers with it: PR_SET_PDEATHSIG below, and
 * leaves its store directory in /tmp). */
static pid_t live[16];
static char dirs[8][64];

static void leftovers(void) {
  for (size_t i = 0; i < sizeof live / sizeof live[0]; i++)
    if (live[i] > 0) {
      kill(live[i], SIGKILL);
      waitpid(live[i], NULL, 0);
      live[i] = 0;
    }
  for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++)
    if (dirs[i][0]) {
      tt_rmtree(dirs[i]);
      dirs[i][0] = 0;
    }
}

static void track(pid_t pid, int on) {
  static int registered;
  if (!registered) registered = atexit(leftovers) == 0;
  for (size_t i = 0; i < sizeof live / sizeof live[0]; i++)
    if (on ? live[i] <= 0 : live[i] == pid) {
      live[i] = on ? pid : 0;
      return;
    }
}

static void track_dir(const char *dir, int on) {
  for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++)
    if (on ? !dirs[i][0] : !strcmp(dirs[i], dir)) {
      if (on) snprintf(dirs[i], sizeof dirs[i], "%s", dir);
      else dirs[i][0] = 0;
      return;
    }
}

int nats_free_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
  socklen_t l = sizeof a;
  getsockname(fd, (struct sockaddr *)&a, &l);
  close(fd);
  return ntohs(a.sin_port);
}

static int port_open(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  int ok = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
  close(fd);
  return ok;
}

pid_t nats_start(int port, const char *dir, int js) {
  if (system("command -v nats-server >/dev/null 2>&1") != 0)
    cr_skip_test("nats-server is not installed (scripts/setup.sh installs it)");
  pid_t parent = getpid();
  pid_t pid = fork();
  cr_assert(pid >= 0);
  if (pid == 0) {
    /* A worker killed by a signal (a crash, ctest's timeout) runs no
     * atexit: the server goes with it instead of holding its port. */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent) _exit(126);
    char p[16];
    snprintf(p, sizeof p, "%d", port);
    if (!freopen("/dev/null", "w", stdout) || !freopen("/dev/null", "w", stderr)) _exit(126);
    if (js)
      execlp("nats-server", "nats-server", "-a", "127.0.0.1", "-p", p, "-js", "-sd", dir, (char *)NULL);
    else
      execlp("nats-server", "nats-server", "-a", "127.0.0.1", "-p", p, (char *)NULL);
    _exit(127);
  }
  track(pid, 1);
  for (int i = 0; i < 100 && !port_open(port); i++) {
    struct timespec ts = {0, 50 * 1000000};
    nanosleep(&ts, NULL);
  }
  cr_assert(port_open(port), "nats-server did not start on port %d", port);
  return pid;
}

void nats_kill(pid_t pid) {
  kill(pid, SIGKILL);
  waitpid(pid, NULL, 0);
  track(pid, 0);
}

void nats_up(natsrv *sv) {
  sv->port = nats_free_port();
  snprintf(sv->dir, sizeof sv->dir, "/tmp/tern-test-nats-XXXXXX");
  cr_assert(mkdtemp(sv->dir));
  track_dir(sv->dir, 1);
  snprintf(sv->url, sizeof sv->url, "nats://127.0.0.1:%d", sv->port);
  sv->pid = nats_start(sv->port, sv->dir, 1);
}

void nats_down(natsrv *sv) {
  nats_kill(sv->pid);
  tt_rmtree(sv->dir);
  track_dir(sv->dir, 0);
}
