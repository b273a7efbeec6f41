/*
 * ternctl: asks a running ternd through its admin socket (ternd
 * --admin-socket PATH): status, stats, sessions, kick, reload, drain,
 * remove-device. Sends one
 * request line, prints the answer (a table, or JSON with --json), and
 * exits 0, or 1 with ternd's or the socket's reason, or 2 for a bad
 * command line. The protocol is tools/ternd/admin.h's.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/time.h>
#include <unistd.h>

#include "tern/tern.h"

static void usage(FILE *f) {
  fprintf(f,
          "usage: ternctl [--socket PATH] [--json] [--timeout SEC] COMMAND [ARG...]\n"
          "\n"
          "Asks a running ternd through its admin socket (ternd --admin-socket PATH).\n"
          "\n"
          "Commands:\n"
          "  status                version, uptime, peers, listening addresses\n"
          "  stats                 the relay's counters\n"
          "  sessions              connected sessions: user, device key, address,\n"
          "                        transport, keepalive interval, RTT, age\n"
          "  kick USER [DEVICE]    disconnect USER's sessions, or only the device whose\n"
          "                        key starts with the hex digits DEVICE (as sessions\n"
          "                        shows it); the client is told its key is not allowed\n"
          "  remove-device KEY     forget a device (its 64-hex-digit key): its sessions\n"
          "                        closed, its cursor no longer holding its user's\n"
          "                        messages back (a lost phone)\n"
          "  reload                re-read the allow-list and revocation list (as SIGHUP)\n"
          "  drain                 drain and exit, as SIGTERM: no new sessions, clients\n"
          "                        told to reconnect (spread over --drain-spread), exit\n"
          "                        when all have gone or at --drain-deadline\n"
          "\n"
          "  --socket PATH         ternd's admin socket (default: $TERNCTL_SOCKET)\n"
          "  --json                answer as JSON (one object)\n"
          "  --timeout SEC         give up when ternd is silent for SEC seconds (default 10)\n"
          "  --version             print the version and exit\n"
          "  -h, --help            this text\n"
          "\n"
          "Exit status: 0 done, 1 ternd refused or could not be reached, 2 bad usage.\n");
}

/* Connects to ternd's socket, with `timeout_s` for every send and
 * receive. Says why not on stderr. */
static int connect_socket(const char *path, long timeout_s) {
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  if (strlen(path) >= sizeof(sa.sun_path)) {
    fprintf(stderr, "ternctl: socket path %s is too long\n", path);
    return -1;
  }
  memcpy(sa.sun_path, path, strlen(path) + 1);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    fprintf(stderr, "ternctl: socket: %s\n", strerror(errno));
    return -1;
  }
  struct timeval tv = {.tv_sec = timeout_s};
  (void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  (void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) return fd;
  int e = errno;
  close(fd);
  if (e == ENOENT)
    fprintf(stderr, "ternctl: no admin socket at %s: is ternd running with --admin-socket %s?\n",
            path, path);
  else if (e == EACCES || e == EPERM)
    fprintf(stderr, "ternctl: permission denied on %s: the socket is ternd's user's only "
                    "(mode 0600); run ternctl as that user\n", path);
  else if (e == ECONNREFUSED)
    fprintf(stderr, "ternctl: nothing answers on %s: ternd is not running (a stale socket?)\n", path);
  else
    fprintf(stderr, "ternctl: cannot connect to %s: %s\n", path, strerror(e));
  return -1;
}

int main(int argc, char **argv) {
  const char *path = getenv("TERNCTL_SOCKET");
  int json = 0;
  long timeout_s = 10;
  static const struct option opts[] = {{"socket", required_argument, 0, 's'},
                                       {"json", no_argument, 0, 'j'},
                                       {"timeout", required_argument, 0, 't'},
                                       {"version", no_argument, 0, 'V'},
                                       {"help", no_argument, 0, 'h'},
                                       {0, 0, 0, 0}};
  int c;
  /* '+': options stop at the command, so its arguments are its own. */
  while ((c = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
    switch (c) {
      case 's': path = optarg; break;
      case 'j': json = 1; break;
      case 't': {
        char *end;
        timeout_s = strtol(optarg, &end, 10);
        if (*end || timeout_s < 1 || timeout_s > 3600) {
          fprintf(stderr, "ternctl: --timeout wants seconds from 1 to 3600, not '%s'\n", optarg);
          return 2;
        }
        break;
      }
      case 'V': printf("ternctl %s (libtern %s)\n", TERN_VERSION_STRING, tern_version()); return 0;
      case 'h': usage(stdout); return 0;
      default: usage(stderr); return 2;
    }
  }
  if (optind >= argc) {
    fprintf(stderr, "ternctl: no command given\n");
    usage(stderr);
    return 2;
  }
  static const char *const commands[] = {"status", "stats", "sessions", "kick", "reload", "drain",
                                         "remove-device"};
  const char *cmd = argv[optind];
  int known = 0;
  for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) known |= strcmp(cmd, commands[i]) == 0;
  if (!known) {
    fprintf(stderr, "ternctl: unknown command '%s' (status, stats, sessions, kick, reload, drain, "
                    "remove-device)\n", cmd);
    return 2;
  }
  int nargs = argc - optind - 1;
  int want_kick = strcmp(cmd, "kick") == 0, want_remove = strcmp(cmd, "remove-device") == 0;
  if ((want_kick && (nargs < 1 || nargs > 2)) || (want_remove && nargs != 1) ||
      (!want_kick && !want_remove && nargs != 0)) {
    fprintf(stderr, "ternctl: usage: %s\n",
            want_kick ? "kick USER [DEVICE]" : want_remove ? "remove-device DEVICE-KEY" : cmd);
    return 2;
  }
  if (!path || !path[0]) {
    fprintf(stderr, "ternctl: which socket? give --socket PATH (ternd's --admin-socket) or set "
                    "TERNCTL_SOCKET\n");
    return 2;
  }
  /* The request line: "FORMAT COMMAND [ARG...]". Arguments with spaces or
   * line breaks cannot be said in it (no user name has any). */
  char line[512];
  size_t len = (size_t)snprintf(line, sizeof(line), "%s", json ? "json" : "text");
  for (int i = optind; i < argc; i++) {
    if (strpbrk(argv[i], " \t\r\n") || !argv[i][0]) {
      fprintf(stderr, "ternctl: bad argument '%s'\n", argv[i]);
      return 2;
    }
    len += (size_t)snprintf(line + len, len < sizeof(line) ? sizeof(line) - len : 0, " %s", argv[i]);
  }
  if (len + 2 > sizeof(line)) {
    fprintf(stderr, "ternctl: arguments too long\n");
    return 2;
  }
  line[len++] = '\n';
  int fd = connect_socket(path, timeout_s);
  if (fd < 0) return 1;
  for (size_t off = 0; off < len;) {
    ssize_t n = send(fd, line + off, len - off, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      fprintf(stderr, "ternctl: cannot send to %s: %s\n", path, strerror(errno));
      close(fd);
      return 1;
    }
    off += (size_t)n;
  }
  /* The answer: "ok\n" then the output, or "error REASON\n"; ternd closes
   * the connection after it. */
  size_t cap = 4096, got = 0;
  char *buf = malloc(cap);
  int status = 1;
  for (;;) {
    if (!buf) {
      fprintf(stderr, "ternctl: out of memory\n");
      break;
    }
    if (got == cap) {
      char *bigger = realloc(buf, cap * 2);
      if (!bigger) {
        fprintf(stderr, "ternctl: out of memory\n");
        break;
      }
      buf = bigger;
      cap *= 2;
    }
    ssize_t n = recv(fd, buf + got, cap - got, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      fprintf(stderr, "ternctl: no answer from %s within %ld s\n", path, timeout_s);
      break;
    }
    if (n < 0) {
      fprintf(stderr, "ternctl: reading from %s: %s\n", path, strerror(errno));
      break;
    }
    if (n > 0) {
      got += (size_t)n;
      continue;
    }
    /* The whole answer is in. */
    if (got >= 3 && memcmp(buf, "ok\n", 3) == 0) {
      fwrite(buf + 3, 1, got - 3, stdout);
      status = fflush(stdout) == 0 ? 0 : 1;
    } else if (got >= 6 && memcmp(buf, "error ", 6) == 0) {
      fprintf(stderr, "ternctl: ternd: %.*s", (int)(got - 6), buf + 6);
      if (buf[got - 1] != '\n') fputc('\n', stderr);
    } else {
      fprintf(stderr, "ternctl: %s gave no answer ternctl understands (%zu bytes)\n", path, got);
    }
    break;
  }
  free(buf);
  close(fd);
  return status;
}
