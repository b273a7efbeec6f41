/*
 * ternctl: asks a running ternd through its admin socket (ternd
 * --admin-socket PATH): status, stats, sessions, kick, reload, drain,
 * remove-device, group-set, group-show. Sends one
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
          "  group-set @GROUP [USER...]\n"
          "                        make USERs the members of the group (the backend's word:\n"
          "                        spec/messages.md section 14); who leaves gets nothing sent\n"
          "                        after this, who joins nothing from before; '-' as the\n"
          "                        only USER reads them from stdin, one a line; none empties it\n"
          "  group-show @GROUP     the group's members, one a line\n"
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
                                         "remove-device", "group-set", "group-show"};
  const char *cmd = argv[optind];
  int known = 0;
  for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) known |= strcmp(cmd, commands[i]) == 0;
  if (!known) {
    fprintf(stderr, "ternctl: unknown command '%s' (status, stats, sessions, kick, reload, drain, "
                    "remove-device, group-set, group-show)\n", cmd);
    return 2;
  }
  int nargs = argc - optind - 1;
  int want_kick = strcmp(cmd, "kick") == 0, want_remove = strcmp(cmd, "remove-device") == 0;
  int want_gset = strcmp(cmd, "group-set") == 0, want_gshow = strcmp(cmd, "group-show") == 0;
  if ((want_kick && (nargs < 1 || nargs > 2)) || (want_remove && nargs != 1) ||
      (want_gset && nargs < 1) || (want_gshow && nargs != 1) ||
      (!want_kick && !want_remove && !want_gset && !want_gshow && nargs != 0)) {
    fprintf(stderr, "ternctl: usage: %s\n",
            want_kick     ? "kick USER [DEVICE]"
            : want_remove ? "remove-device DEVICE-KEY"
            : want_gset   ? "group-set @GROUP [USER...|-]"
            : want_gshow  ? "group-show @GROUP"
                          : cmd);
    return 2;
  }
  if (!path || !path[0]) {
    fprintf(stderr, "ternctl: which socket? give --socket PATH (ternd's --admin-socket) or set "
                    "TERNCTL_SOCKET\n");
    return 2;
  }
  /* The request line: "FORMAT COMMAND [ARG...]". Arguments with spaces or
   * line breaks cannot be said in it (no user name has any). */
  /* group-set @G -: the members from stdin, one a line. */
  char **args = argv + optind;
  int nargv = argc - optind;
  char *stdin_text = NULL;
  char **from_stdin = NULL;
  if (want_gset && nargs == 2 && strcmp(args[2], "-") == 0) {
    size_t tcap = 0;
    FILE *mem = open_memstream(&stdin_text, &tcap);
    char chunk[4096];
    size_t k;
    while (mem && (k = fread(chunk, 1, sizeof(chunk), stdin)) > 0) fwrite(chunk, 1, k, mem);
    if (!mem || fclose(mem) != 0 || !(from_stdin = calloc(2 + TERN_GROUP_MEMBERS_MAX + 1, sizeof(char *)))) {
      fprintf(stderr, "ternctl: out of memory\n");
      return 1;
    }
    from_stdin[0] = args[0];
    from_stdin[1] = args[1];
    nargv = 2;
    char *save = NULL;
    for (char *t = strtok_r(stdin_text, "\r\n", &save); t; t = strtok_r(NULL, "\r\n", &save)) {
      if (!t[0]) continue;
      if (nargv == 2 + TERN_GROUP_MEMBERS_MAX) {
        fprintf(stderr, "ternctl: more than %d members\n", TERN_GROUP_MEMBERS_MAX);
        return 2;
      }
      from_stdin[nargv++] = t;
    }
    args = from_stdin;
  }
  /* One line: the admin socket takes up to 72 KiB (tools/ternd/admin.h). */
  size_t linecap = 73728;
  char *line = malloc(linecap);
  if (!line) {
    fprintf(stderr, "ternctl: out of memory\n");
    return 1;
  }
  size_t len = (size_t)snprintf(line, linecap, "%s", json ? "json" : "text");
  for (int i = 0; i < nargv; i++) {
    if (strpbrk(args[i], " \t\r\n") || !args[i][0]) {
      fprintf(stderr, "ternctl: bad argument '%s'\n", args[i]);
      return 2;
    }
    len += (size_t)snprintf(line + len, len < linecap ? linecap - len : 0, " %s", args[i]);
  }
  free(from_stdin);
  if (len + 2 > linecap) {
    fprintf(stderr, "ternctl: arguments too long\n");
    return 2;
  }
  line[len++] = '\n';
  free(stdin_text); /* the line holds copies */
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
  free(line);
  close(fd);
  return status;
}
