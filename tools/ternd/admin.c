/*
 * ternd's admin socket (admin.h): the listening Unix socket, the
 * connections with their bounded buffers and deadlines, the request line
 * and the answer. Every descriptor is non-blocking and only read or written
 * when poll says so, so a client that is slow, silent or never reads its
 * answer costs the relay's loop nothing but its slot, until its deadline.
 */
#define _GNU_SOURCE /* accept4, struct ucred */
#include "admin.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

typedef struct admin_conn {
  int fd;               /* -1: a free slot */
  uint64_t deadline_ms; /* closed at this time, whatever it is doing */
  char in[ADMIN_LINE_MAX];
  size_t in_len;
  char *out;            /* the answer, once the request is read */
  size_t out_len, out_pos;
} admin_conn;

struct ternd_admin {
  int fd;
  char *path;
  admin_cmd_fn fn;
  void *ctx;
  admin_conn conns[ADMIN_MAX_CONNS];
};

int ternd_admin_open(ternd_admin **out, const char *path, admin_cmd_fn fn, void *ctx, char *err,
                     size_t cap) {
  *out = NULL;
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  if (strlen(path) >= sizeof(sa.sun_path)) {
    snprintf(err, cap, "path longer than %zu bytes", sizeof(sa.sun_path) - 1);
    return -1;
  }
  memcpy(sa.sun_path, path, strlen(path) + 1);
  struct stat st;
  if (lstat(path, &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      snprintf(err, cap, "%s exists and is not a socket", path);
      return -1;
    }
    /* A socket someone answers on is in use; one nobody answers on was
     * left by a ternd that did not exit cleanly. */
    int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (probe >= 0 && connect(probe, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
      close(probe);
      snprintf(err, cap, "%s is in use (another ternd?)", path);
      return -1;
    }
    if (probe >= 0) close(probe);
    if (unlink(path) != 0) {
      snprintf(err, cap, "cannot remove the stale socket %s: %s", path, strerror(errno));
      return -1;
    }
  }
  ternd_admin *a = calloc(1, sizeof(*a));
  if (!a || !(a->path = strdup(path))) {
    free(a);
    snprintf(err, cap, "out of memory");
    return -1;
  }
  for (int i = 0; i < ADMIN_MAX_CONNS; i++) a->conns[i].fd = -1;
  a->fn = fn;
  a->ctx = ctx;
  a->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (a->fd < 0) {
    snprintf(err, cap, "socket: %s", strerror(errno));
    free(a->path);
    free(a);
    return -1;
  }
  /* Owner only from the first moment (the umask), and whatever the umask
   * did (the chmod). */
  mode_t old = umask(0177);
  int rc = bind(a->fd, (struct sockaddr *)&sa, sizeof(sa));
  int bind_errno = errno;
  umask(old);
  if (rc != 0) {
    snprintf(err, cap, "cannot bind %s: %s", path, strerror(bind_errno));
    close(a->fd);
    free(a->path);
    free(a);
    return -1;
  }
  if (chmod(path, 0600) != 0 || listen(a->fd, 16) != 0) {
    snprintf(err, cap, "cannot serve %s: %s", path, strerror(errno));
    ternd_admin_close(a);
    return -1;
  }
  *out = a;
  return 0;
}

static void conn_close(admin_conn *c) {
  if (c->fd >= 0) close(c->fd);
  free(c->out);
  memset(c, 0, sizeof(*c));
  c->fd = -1;
}

/* Writes what the socket takes now; closes the connection once all is out
 * or the client is gone. */
static void conn_write(admin_conn *c) {
  while (c->out_pos < c->out_len) {
    ssize_t n = send(c->fd, c->out + c->out_pos, c->out_len - c->out_pos, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      c->out_pos += (size_t)n;
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
    break; /* the client went away */
  }
  conn_close(c);
}

static void set_answer(admin_conn *c, char *text, size_t len) {
  free(c->out);
  c->out = text;
  c->out_len = len;
  c->out_pos = 0;
}

static void answer_error(admin_conn *c, const char *why) {
  char *text = NULL;
  int n = asprintf(&text, "error %s\n", why);
  if (n < 0) {
    conn_close(c);
    return;
  }
  set_answer(c, text, (size_t)n);
  conn_write(c);
}

/* The request line is in c->in (NUL-terminated): the reason it is bad,
 * or NULL after the answer is made. */
static const char *run_request(ternd_admin *a, admin_conn *c) {
  static char *argv[ADMIN_ARGS_MAX]; /* the loop's thread only */
  int argc = 0;
  char *save = NULL;
  for (char *t = strtok_r(c->in, " \t\r", &save); t; t = strtok_r(NULL, " \t\r", &save)) {
    if (argc == ADMIN_ARGS_MAX) return "too many arguments";
    argv[argc++] = t;
  }
  if (argc < 2 || (strcmp(argv[0], "text") != 0 && strcmp(argv[0], "json") != 0))
    return "bad request: want 'text|json COMMAND [ARG...]'";
  char *text = NULL;
  size_t len = 0;
  FILE *out = open_memstream(&text, &len);
  if (!out) return "out of memory";
  static char err[256]; /* the loop's thread only */
  err[0] = 0;
  fputs("ok\n", out);
  int rc = a->fn(a->ctx, argc - 1, argv + 1, strcmp(argv[0], "json") == 0, out, err, sizeof(err));
  if (fclose(out) != 0 || !text || rc != 0) {
    free(text);
    return rc != 0 ? (err[0] ? err : "failed") : "out of memory";
  }
  if (len > ADMIN_OUT_MAX) {
    static const char cut[] = "\n(answer cut: longer than the admin socket's limit)\n";
    memcpy(text + ADMIN_OUT_MAX - sizeof(cut) + 1, cut, sizeof(cut) - 1);
    len = ADMIN_OUT_MAX;
  }
  set_answer(c, text, len);
  conn_write(c);
  return NULL;
}

/* Reads what has come; once the line is complete, answers it. */
static void conn_read(ternd_admin *a, admin_conn *c) {
  for (;;) {
    size_t room = sizeof(c->in) - 1 - c->in_len;
    if (room == 0) {
      answer_error(c, "request longer than the limit");
      return;
    }
    ssize_t n = recv(c->fd, c->in + c->in_len, room, MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
    if (n <= 0) { /* gone before its line was complete */
      conn_close(c);
      return;
    }
    c->in_len += (size_t)n;
    c->in[c->in_len] = 0;
    char *nl = memchr(c->in, '\n', c->in_len);
    if (nl) {
      *nl = 0;
      const char *bad = run_request(a, c);
      if (bad) answer_error(c, bad);
      return;
    }
  }
}

/* Only ternd's own user (or root) gets an answer: the socket's mode says
 * so already; this holds if someone loosens it. */
static int peer_allowed(int fd) {
  struct ucred cred;
  socklen_t len = sizeof(cred);
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return 0;
  return cred.uid == 0 || cred.uid == geteuid();
}

static void accept_all(ternd_admin *a, uint64_t now_ms) {
  for (;;) {
    int fd = accept4(a->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return; /* EAGAIN, or an error the next poll shows again */
    admin_conn *c = NULL;
    for (int i = 0; i < ADMIN_MAX_CONNS && !c; i++)
      if (a->conns[i].fd < 0) c = &a->conns[i];
    const char *refuse = !c ? "error busy: too many admin connections\n"
                         : !peer_allowed(fd) ? "error permission denied\n" : NULL;
    if (refuse) {
      (void)send(fd, refuse, strlen(refuse), MSG_NOSIGNAL | MSG_DONTWAIT);
      close(fd);
      continue;
    }
    c->fd = fd;
    c->deadline_ms = now_ms + ADMIN_DEADLINE_MS;
  }
}

int ternd_admin_pollfds(const ternd_admin *a, struct pollfd *pf, int max) {
  int n = 0;
  if (n < max) pf[n++] = (struct pollfd){.fd = a->fd, .events = POLLIN};
  for (int i = 0; i < ADMIN_MAX_CONNS && n < max; i++) {
    const admin_conn *c = &a->conns[i];
    if (c->fd >= 0) pf[n++] = (struct pollfd){.fd = c->fd, .events = c->out ? POLLOUT : POLLIN};
  }
  return n;
}

int ternd_admin_timeout(const ternd_admin *a, uint64_t now_ms) {
  int best = -1;
  for (int i = 0; i < ADMIN_MAX_CONNS; i++) {
    const admin_conn *c = &a->conns[i];
    if (c->fd < 0) continue;
    int t = now_ms >= c->deadline_ms ? 0 : (int)(c->deadline_ms - now_ms);
    if (best < 0 || t < best) best = t;
  }
  return best;
}

void ternd_admin_handle(ternd_admin *a, const struct pollfd *pf, int n, uint64_t now_ms) {
  for (int k = 0; k < n; k++) {
    if (!pf[k].revents) continue;
    if (pf[k].fd == a->fd) {
      accept_all(a, now_ms);
      continue;
    }
    for (int i = 0; i < ADMIN_MAX_CONNS; i++) {
      admin_conn *c = &a->conns[i];
      if (c->fd != pf[k].fd) continue;
      if (c->out) conn_write(c);
      else conn_read(a, c);
      break;
    }
  }
  for (int i = 0; i < ADMIN_MAX_CONNS; i++)
    if (a->conns[i].fd >= 0 && now_ms >= a->conns[i].deadline_ms) conn_close(&a->conns[i]);
}

void ternd_admin_close(ternd_admin *a) {
  if (!a) return;
  for (int i = 0; i < ADMIN_MAX_CONNS; i++) conn_close(&a->conns[i]);
  if (a->fd >= 0) close(a->fd);
  unlink(a->path);
  free(a->path);
  free(a);
}
