#include "natsrv.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tern_test.h"

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
  pid_t pid = fork();
  cr_assert(pid >= 0);
  if (pid == 0) {
    char p[16];
    snprintf(p, sizeof p, "%d", port);
    if (!freopen("/dev/null", "w", stdout) || !freopen("/dev/null", "w", stderr)) _exit(126);
    if (js)
      execlp("nats-server", "nats-server", "-a", "127.0.0.1", "-p", p, "-js", "-sd", dir, (char *)NULL);
    else
      execlp("nats-server", "nats-server", "-a", "127.0.0.1", "-p", p, (char *)NULL);
    _exit(127);
  }
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
}

void nats_up(natsrv *sv) {
  sv->port = nats_free_port();
  snprintf(sv->dir, sizeof sv->dir, "/tmp/tern-nats-XXXXXX");
  cr_assert(mkdtemp(sv->dir));
  snprintf(sv->url, sizeof sv->url, "nats://127.0.0.1:%d", sv->port);
  sv->pid = nats_start(sv->port, sv->dir, 1);
}

void nats_down(natsrv *sv) {
  nats_kill(sv->pid);
  tt_rmtree(sv->dir);
}
