/*
 * The poller (lib/os/poller.h), against whichever backend this build has
 * (TERN_POLLER: epoll, kqueue or poll): interest added, changed and taken
 * away, readable and writable, a nested child, a timeout honoured, a
 * wake-up (lib/os/wake.h) from another thread, and more descriptors than
 * select()'s FD_SETSIZE.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "os/poller.h"
#include "os/sock.h"
#include "os/wake.h"
#include "tern/tern.h"

static long long mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void make_pipe(int fds[2]) { cr_assert_eq(tern__os_pipe(fds), 0, "pipe: %s", strerror(errno)); }

static void put_byte(int fd) { cr_assert_eq(write(fd, "x", 1), 1); }

/* Waits once (timeout ms) and expects exactly one event: tag with events. */
static void expect_one(tern__poller *p, int timeout, uint64_t tag, unsigned events) {
  tern__poll_event ev[8];
  int n = tern__poller_wait(p, ev, 8, timeout);
  cr_assert_eq(n, 1, "%s: %d events, wanted 1 (tag %llu)", tern__poller_backend(), n,
               (unsigned long long)tag);
  cr_assert_eq(ev[0].tag, tag, "tag %llu, wanted %llu", (unsigned long long)ev[0].tag,
               (unsigned long long)tag);
  cr_assert_eq(ev[0].events, events, "events %u, wanted %u", ev[0].events, events);
}

static void expect_none(tern__poller *p) {
  tern__poll_event ev[8];
  int n = tern__poller_wait(p, ev, 8, 0);
  cr_assert_eq(n, 0, "%s: %d events, wanted none (first tag %llu)", tern__poller_backend(), n,
               n > 0 ? (unsigned long long)ev[0].tag : 0ull);
}

Test(poller, add_mod_del_and_level_triggered_reads) {
  tern__poller *p;
  cr_assert_eq(tern__poller_new(&p), 0);
  int pf[2];
  make_pipe(pf);
  cr_assert_eq(tern__poller_add(p, pf[0], TERN__POLL_IN, 41), 0);
  cr_assert_eq(tern__poller_add(p, pf[0], TERN__POLL_IN, 41), TERN_EEXIST);
  cr_assert_eq(tern__poller_add(p, -1, TERN__POLL_IN, 1), TERN_EINVAL);
  expect_none(p);
  put_byte(pf[1]);
  expect_one(p, 1000, 41, TERN__POLL_IN);
  /* Level-triggered: still readable until read. */
  expect_one(p, 0, 41, TERN__POLL_IN);
  /* Registered but not watched: nothing. */
  cr_assert_eq(tern__poller_mod(p, pf[0], 0, 41), 0);
  expect_none(p);
  /* Watched again, under a new tag. */
  cr_assert_eq(tern__poller_mod(p, pf[0], TERN__POLL_IN, 42), 0);
  expect_one(p, 0, 42, TERN__POLL_IN);
  char b;
  cr_assert_eq(read(pf[0], &b, 1), 1);
  expect_none(p);
  put_byte(pf[1]);
  cr_assert_eq(tern__poller_del(p, pf[0]), 0);
  expect_none(p);
  cr_assert_eq(tern__poller_del(p, pf[0]), TERN_ENOENT);
  cr_assert_eq(tern__poller_mod(p, pf[0], TERN__POLL_IN, 1), TERN_ENOENT);
  /* In again after it left. */
  cr_assert_eq(tern__poller_add(p, pf[0], TERN__POLL_IN, 43), 0);
  expect_one(p, 0, 43, TERN__POLL_IN);
  /* The other end closed: still readable (the read then says 0). */
  cr_assert_eq(read(pf[0], &b, 1), 1);
  close(pf[1]);
  expect_one(p, 1000, 43, TERN__POLL_IN);
  cr_assert_eq(tern__poller_del(p, pf[0]), 0);
  close(pf[0]);
  tern__poller_free(p);
}

Test(poller, writable_and_both_at_once) {
  tern__poller *p;
  cr_assert_eq(tern__poller_new(&p), 0);
  int sv[2];
  cr_assert_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  cr_assert_eq(tern__os_fdflags(sv[0], 1), 0);
  cr_assert_eq(tern__os_fdflags(sv[1], 1), 0);
  cr_assert_eq(tern__poller_add(p, sv[0], TERN__POLL_OUT, 7), 0);
  expect_one(p, 1000, 7, TERN__POLL_OUT);
  /* Fill the socket until it would block: no longer writable. */
  static char junk[65536];
  while (write(sv[0], junk, sizeof(junk)) > 0) {
  }
  cr_assert(errno == EAGAIN || errno == EWOULDBLOCK);
  expect_none(p);
  /* Reading and writing watched, input waiting: one event, both bits once
   * the other side drained. */
  cr_assert_eq(write(sv[1], "y", 1), 1);
  cr_assert_eq(tern__poller_mod(p, sv[0], TERN__POLL_IN | TERN__POLL_OUT, 8), 0);
  expect_one(p, 1000, 8, TERN__POLL_IN);
  char buf[65536];
  for (int i = 0; i < 64; i++)
    if (read(sv[1], buf, sizeof(buf)) <= 0) break;
  expect_one(p, 1000, 8, TERN__POLL_IN | TERN__POLL_OUT);
  cr_assert_eq(tern__poller_del(p, sv[0]), 0);
  close(sv[0]);
  close(sv[1]);
  tern__poller_free(p);
}

Test(poller, nested_child_is_one_event_with_its_tag) {
  tern__poller *parent, *child, *grandchild;
  cr_assert_eq(tern__poller_new(&parent), 0);
  cr_assert_eq(tern__poller_new(&child), 0);
  cr_assert_eq(tern__poller_new(&grandchild), 0);
  int a[2], b[2], c[2], own[2];
  make_pipe(a);
  make_pipe(b);
  make_pipe(c);
  make_pipe(own);
  cr_assert_eq(tern__poller_add(child, a[0], TERN__POLL_IN, 100), 0);
  cr_assert_eq(tern__poller_add(child, b[0], TERN__POLL_IN, 101), 0);
  cr_assert_eq(tern__poller_add(grandchild, c[0], TERN__POLL_IN, 200), 0);
  cr_assert_eq(tern__poller_add(parent, own[0], TERN__POLL_IN, 1), 0);
  cr_assert_eq(tern__poller_nest(child, grandchild, 150), 0);
  cr_assert_eq(tern__poller_nest(parent, child, 9), 0);
  expect_none(parent);
  /* Both of the child's descriptors ready: the parent reports the child
   * once, and the child itself reports each. */
  put_byte(a[1]);
  put_byte(b[1]);
  expect_one(parent, 1000, 9, TERN__POLL_IN);
  tern__poll_event ev[8];
  int n = tern__poller_wait(child, ev, 8, 0);
  cr_assert_eq(n, 2);
  cr_assert((ev[0].tag == 100 && ev[1].tag == 101) || (ev[0].tag == 101 && ev[1].tag == 100));
  char x;
  cr_assert_eq(read(a[0], &x, 1), 1);
  cr_assert_eq(read(b[0], &x, 1), 1);
  expect_none(parent);
  /* Two levels down: still the child's tag at the top. */
  put_byte(c[1]);
  expect_one(parent, 1000, 9, TERN__POLL_IN);
  expect_one(child, 0, 150, TERN__POLL_IN);
  expect_one(grandchild, 0, 200, TERN__POLL_IN);
  /* The parent's own descriptor beside the child. */
  put_byte(own[1]);
  n = tern__poller_wait(parent, ev, 8, 0);
  cr_assert_eq(n, 2);
  cr_assert_eq(ev[0].tag + ev[1].tag, 1 + 9);
  /* What an app polls itself: poll() on the entries sees the same. */
  struct pollfd fds[8];
  size_t k = tern__poller_pollfds(parent, fds, 8);
  cr_assert(k >= 1 && k <= 8);
  if (tern__poller_fd(parent) >= 0) cr_assert(k == 1 && fds[0].fd == tern__poller_fd(parent));
  else cr_assert_eq(k, 4, "own pipe, the child's two, the grandchild's one (%zu)", k);
  cr_assert_geq(poll(fds, (nfds_t)k, 0), 1);
  cr_assert_eq(tern__poller_pollfds(parent, NULL, 0), k);
  /* Taken out: the child no longer shows. */
  cr_assert_eq(read(own[0], &x, 1), 1);
  tern__poller_unnest(parent, child);
  expect_none(parent);
  expect_one(child, 0, 150, TERN__POLL_IN);
  tern__poller_unnest(child, grandchild);
  tern__poller_free(grandchild);
  tern__poller_free(child);
  tern__poller_free(parent);
  int *all[] = {a, b, c, own};
  for (int i = 0; i < 4; i++) {
    close(all[i][0]);
    close(all[i][1]);
  }
}

Test(poller, timeout_is_honoured) {
  tern__poller *p;
  cr_assert_eq(tern__poller_new(&p), 0);
  int pf[2];
  make_pipe(pf);
  cr_assert_eq(tern__poller_add(p, pf[0], TERN__POLL_IN, 1), 0);
  tern__poll_event ev[4];
  long long t0 = mono_ms();
  cr_assert_eq(tern__poller_wait(p, ev, 4, 300), 0);
  long long took = mono_ms() - t0;
  cr_assert(took >= 295 && took < 1500, "a 300 ms wait took %lld ms", took);
  t0 = mono_ms();
  cr_assert_eq(tern__poller_wait(p, ev, 4, 0), 0);
  cr_assert(mono_ms() - t0 < 100, "a wait of 0 returns at once");
  close(pf[0]);
  close(pf[1]);
  tern__poller_free(p);
}

static void *wake_later(void *arg) {
  struct timespec ts = {0, 150 * 1000000};
  nanosleep(&ts, NULL);
  tern__wake_signal(arg);
  return NULL;
}

Test(poller, wake_from_another_thread_ends_a_wait) {
  tern__poller *p;
  cr_assert_eq(tern__poller_new(&p), 0);
  tern__wake w;
  cr_assert_eq(tern__wake_open(&w), 0);
  cr_assert_eq(tern__poller_add(p, w.rfd, TERN__POLL_IN, 5), 0);
  pthread_t th;
  long long t0 = mono_ms();
  cr_assert_eq(pthread_create(&th, NULL, wake_later, &w), 0);
  expect_one(p, 10000, 5, TERN__POLL_IN);
  long long took = mono_ms() - t0;
  cr_assert(took >= 100 && took < 5000, "woken after %lld ms", took);
  pthread_join(th, NULL);
  /* Many signals, one drain: quiet again. */
  for (int i = 0; i < 1000; i++) tern__wake_signal(&w);
  expect_one(p, 0, 5, TERN__POLL_IN);
  tern__wake_drain(&w);
  expect_none(p);
  cr_assert_eq(tern__poller_del(p, w.rfd), 0);
  tern__wake_close(&w);
  tern__poller_free(p);
}

/* 2,000 pipes: 4,000 descriptors, past select()'s FD_SETSIZE (1,024), in
 * one poller; the two that are ready are found, and only they. */
Test(poller, two_thousand_pipes) {
  enum { N = 2000 };
  struct rlimit rl;
  cr_assert_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
  if (rl.rlim_cur < 2 * N + 64) {
    rl.rlim_cur = rl.rlim_max < 2 * N + 64 ? rl.rlim_max : 2 * N + 64;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur < 2 * N + 64)
      cr_skip_test("RLIMIT_NOFILE cannot reach %d", 2 * N + 64);
  }
  tern__poller *p;
  cr_assert_eq(tern__poller_new(&p), 0);
  static int fds[N][2];
  for (int i = 0; i < N; i++) {
    make_pipe(fds[i]);
    cr_assert_eq(tern__poller_add(p, fds[i][0], TERN__POLL_IN, (uint64_t)i + 1000), 0);
  }
  cr_assert_geq(fds[N - 1][0], 1024);
  expect_none(p);
  put_byte(fds[N - 1][1]);
  put_byte(fds[1500][1]);
  tern__poll_event ev[8];
  int n = tern__poller_wait(p, ev, 8, 1000);
  cr_assert_eq(n, 2);
  cr_assert_eq(ev[0].tag + ev[1].tag, (N - 1 + 1000) + (1500 + 1000));
  /* Half of them taken out (the rest move in the poll() backend's array):
   * what is left is still found. */
  for (int i = 0; i < N; i += 2) cr_assert_eq(tern__poller_del(p, fds[i][0]), 0);
  char x;
  cr_assert_eq(read(fds[1500][0], &x, 1), 1);
  expect_one(p, 0, N - 1 + 1000, TERN__POLL_IN);
  put_byte(fds[1001][1]);
  put_byte(fds[1000][1]); /* not watched any more */
  n = tern__poller_wait(p, ev, 8, 1000);
  cr_assert_eq(n, 2);
  cr_assert_eq(ev[0].tag + ev[1].tag, (N - 1 + 1000) + (1001 + 1000));
  for (int i = 0; i < N; i++) {
    if (i % 2) cr_assert_eq(tern__poller_del(p, fds[i][0]), 0);
    close(fds[i][0]);
    close(fds[i][1]);
  }
  tern__poller_free(p);
}

Test(poller, sockets_are_non_blocking_and_close_on_exec) {
  int fd = tern__os_socket(AF_INET, SOCK_DGRAM);
  cr_assert_geq(fd, 0);
  cr_assert(fcntl(fd, F_GETFL) & O_NONBLOCK);
  cr_assert(fcntl(fd, F_GETFD) & FD_CLOEXEC);
  close(fd);
  int l = tern__os_socket(AF_INET, SOCK_STREAM);
  struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t sl = sizeof(sin);
  cr_assert_eq(bind(l, (struct sockaddr *)&sin, sizeof(sin)), 0);
  cr_assert_eq(listen(l, 4), 0);
  cr_assert_eq(getsockname(l, (struct sockaddr *)&sin, &sl), 0);
  cr_assert_eq(tern__os_accept(l, NULL, NULL), -1, "nothing to accept: would block");
  cr_assert(errno == EAGAIN || errno == EWOULDBLOCK);
  int c = tern__os_socket(AF_INET, SOCK_STREAM);
  int r = connect(c, (struct sockaddr *)&sin, sizeof(sin));
  cr_assert(r == 0 || errno == EINPROGRESS);
  tern__poller *p;
  cr_assert_eq(tern__poller_new(&p), 0);
  cr_assert_eq(tern__poller_add(p, l, TERN__POLL_IN, 3), 0);
  expect_one(p, 2000, 3, TERN__POLL_IN);
  int a = tern__os_accept(l, NULL, NULL);
  cr_assert_geq(a, 0);
  cr_assert(fcntl(a, F_GETFL) & O_NONBLOCK);
  cr_assert(fcntl(a, F_GETFD) & FD_CLOEXEC);
  cr_assert_eq(tern__poller_del(p, l), 0);
  tern__poller_free(p);
  close(a);
  close(c);
  close(l);
}
