/*
 * ternd and systemd's notify protocol, without systemd: the test is the
 * service manager. It listens on a unix datagram socket, starts ternd with
 * NOTIFY_SOCKET naming it (and WATCHDOG_USEC), and checks what arrives and
 * when: STATUS= while starting, READY=1 only once the store exists and
 * ternd has logged that it listens, WATCHDOG=1 at half the watchdog
 * interval, STOPPING=1 on SIGTERM.
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <poll.h>

#include "tern/tern.h"
#include "tern_test.h"

/* One datagram from ternd, or "" after timeout_ms. */
static void recv_msg(int fd, char *buf, size_t cap, int timeout_ms) {
  buf[0] = 0;
  struct pollfd p = {.fd = fd, .events = POLLIN};
  if (poll(&p, 1, timeout_ms) != 1) return;
  ssize_t n = recv(fd, buf, cap - 1, 0);
  buf[n > 0 ? n : 0] = 0;
}

/* A temp dir with a relay key in it; the paths of the key and of a log. */
static char *relay_dir(char key[600], char log[600]) {
  char *dir = tt_tempdir();
  snprintf(key, 600, "%s/relay.key", dir);
  snprintf(log, 600, "%s/ternd.log", dir);
  char *kg[] = {(char *)tt_tool("tern-keygen"), key, NULL};
  cr_assert_eq(tt_run(kg, NULL, NULL, NULL, 10000), 0);
  return dir;
}

Test(notify, ready_after_store_and_socket_then_status_watchdog_stopping, .timeout = 60) {
  char sock[600], key[600], log[600], data[600], store[700];
  char *dir = relay_dir(key, log);
  snprintf(sock, sizeof(sock), "%s/notify", dir);
  snprintf(data, sizeof(data), "%s/data", dir);
  snprintf(store, sizeof(store), "%s/relay.db", data);

  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  cr_assert(fd >= 0);
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  cr_assert(strlen(sock) < sizeof(sa.sun_path));
  strcpy(sa.sun_path, sock);
  cr_assert_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);

  setenv("NOTIFY_SOCKET", sock, 1);
  setenv("WATCHDOG_USEC", "400000", 1); /* pings every 200 ms */
  char *argv[] = {(char *)tt_tool("ternd"), "--key", key, "--open", "--listen", "127.0.0.1:0",
                  "--data-dir", data, "--no-fsync", NULL};
  pid_t pid = tt_spawn(argv, log);
  unsetenv("NOTIFY_SOCKET");
  unsetenv("WATCHDOG_USEC");

  /* Up to READY=1: STATUS lines only, and READY finds the store and the
   * listening line already there. */
  char msg[1024];
  int statuses = 0, ready = 0;
  for (int i = 0; i < 20 && !ready; i++) {
    recv_msg(fd, msg, sizeof(msg), 10000);
    cr_assert(msg[0], "ternd sent nothing (READY expected); log:\n%s", tt_read_file(log));
    if (strncmp(msg, "READY=1\n", 8) == 0) {
      ready = 1;
      struct stat st;
      cr_assert_eq(stat(store, &st), 0, "READY before the store %s exists", store);
      char *text = tt_read_file(log);
      cr_assert(strstr(text, "listening on 127.0.0.1:"), "READY before the listening line:\n%s", text);
      free(text);
      cr_assert(strstr(msg, "STATUS=serving on 127.0.0.1:"), "READY carries a status: %s", msg);
    } else {
      cr_assert(strncmp(msg, "STATUS=", 7) == 0, "before READY, only STATUS: '%s'", msg);
      statuses++;
    }
  }
  cr_assert(ready);
  cr_assert_geq(statuses, 1, "a STATUS= line while starting");

  /* The watchdog: WATCHDOG=1 about every 200 ms from the service loop. */
  int pings = 0;
  uint64_t t0 = tt_now_ms();
  while (tt_now_ms() - t0 < 1000) {
    recv_msg(fd, msg, sizeof(msg), 500);
    if (strcmp(msg, "WATCHDOG=1") == 0) pings++;
  }
  cr_assert(pings >= 3 && pings <= 7, "%d WATCHDOG=1 in 1 s, want about 5", pings);

  /* SIGTERM: STOPPING=1 before it exits 0. */
  kill(pid, SIGTERM);
  int stopping = 0;
  for (int i = 0; i < 20 && !stopping; i++) {
    recv_msg(fd, msg, sizeof(msg), 5000);
    if (!msg[0]) break;
    stopping = strncmp(msg, "STOPPING=1", 10) == 0;
  }
  cr_assert(stopping, "STOPPING=1 on SIGTERM");
  cr_assert_eq(tt_stop(pid, 5000), 0, "ternd exits 0");
  close(fd);
  tt_rmtree(dir);
  free(dir);
}

/* Without NOTIFY_SOCKET ternd runs as before, and its log says where its
 * settings came from, which version it is, and where it listens. */
Test(notify, start_log_names_version_settings_and_addresses, .timeout = 60) {
  char key[600], log[600], conf[600], port[600], text[2048];
  char *dir = relay_dir(key, log);
  snprintf(conf, sizeof(conf), "%s/ternd.conf", dir);
  snprintf(port, sizeof(port), "%s/port", dir);
  snprintf(text, sizeof(text), "key = %s\nopen = true\nlisten = 127.0.0.1:1\ndata-dir = %s/data\n"
           "metrics = 127.0.0.1:0\n", key, dir);
  tt_write_file(conf, text);
  /* --listen on the command line overrides the file's port 1. */
  char *argv[] = {(char *)tt_tool("ternd"), "--config", conf, "--listen", "127.0.0.1:0",
                  "--port-file", port, NULL};
  pid_t pid = tt_spawn(argv, log);
  cr_assert_eq(tt_wait_file(port, 10000), 0, "ternd did not start:\n%s", tt_read_file(log));
  char *p = tt_read_file(port), *l = tt_read_file(log);
  char want[700];
  snprintf(want, sizeof(want), "ternd %s (libtern %s) starting; settings from %s and the command line",
           TERN_VERSION_STRING, tern_version(), conf);
  cr_assert(strstr(l, want), "want '%s' in:\n%s", want, l);
  snprintf(want, sizeof(want), "listening on 127.0.0.1:%d (UDP)", atoi(p));
  cr_assert(strstr(l, want), "want '%s' in:\n%s", want, l);
  cr_assert(strstr(l, "metrics on http://127.0.0.1:"), "the metrics address is logged:\n%s", l);
  free(p);
  free(l);
  cr_assert_eq(tt_stop(pid, 5000), 0);
  tt_rmtree(dir);
  free(dir);
}
