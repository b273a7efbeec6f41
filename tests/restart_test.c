/* Idle clients learn of a relay restart at once (issue 13, finding 9):
 * real ternd processes, SIGKILLed and started again on the same store,
 * and in-process clients whose keepalive is far longer than the test. A
 * restarted relay sends each session the previous run recorded a RESET
 * carrying that session's token (spec/wire.md §14); a RESET with any other
 * token (forged, or an earlier session's, replayed) changes nothing. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "loop.h"
#include "tern/tern.h"
#include "tern_test.h"
#include "wire/reset.h"

#define IDLE_KEEPALIVE_MS 120000 /* far longer than the test */

typedef struct relayd {
  char *dir;
  char key[600], allow[600], data[600], log[600], db[700];
  tern_keypair kp;
  pid_t pid;
  uint16_t port;
  int starts;
} relayd;

static void sleep_ms(long ms) {
  struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

/* Starts ternd on relayd's store: on an ephemeral port the first time, on
 * the same port after that. */
static void relayd_start(relayd *d) {
  char listen[64], portfile[700];
  snprintf(listen, sizeof(listen), "127.0.0.1:%u", d->port);
  for (int attempt = 0;; attempt++) {
    snprintf(portfile, sizeof(portfile), "%s/port.%d", d->dir, d->starts++);
    char *argv[] = {(char *)tt_tool("ternd"), "--key", d->key, "--allow", d->allow, "--listen", listen,
                    "--port-file", portfile, "--data-dir", d->data, "-v", NULL};
    d->pid = tt_spawn(argv, d->log);
    if (tt_wait_file(portfile, 10000) == 0) break;
    kill(d->pid, SIGKILL); /* the port can be busy for a moment after a kill */
    waitpid(d->pid, NULL, 0);
    cr_assert_lt(attempt, 5, "ternd does not start; log:\n%s", tt_read_file(d->log));
    sleep_ms(100);
  }
  char *p = tt_read_file(portfile);
  uint16_t port = (uint16_t)atoi(p);
  free(p);
  if (!d->port) d->port = port;
  cr_assert_eq(port, d->port, "ternd came back on the same port");
}

static void relayd_kill9(relayd *d) {
  kill(d->pid, SIGKILL);
  waitpid(d->pid, NULL, 0);
  d->pid = 0;
}

/* A store directory, the relay's key and an allow file for `n` users,
 * whose keypairs go to kps[]. */
static void relayd_setup(relayd *d, const char *const *users, tern_keypair *kps, size_t n) {
  memset(d, 0, sizeof(*d));
  d->dir = tt_tempdir();
  snprintf(d->key, sizeof(d->key), "%s/relay.key", d->dir);
  snprintf(d->allow, sizeof(d->allow), "%s/allow.txt", d->dir);
  snprintf(d->data, sizeof(d->data), "%s/data", d->dir);
  snprintf(d->log, sizeof(d->log), "%s/ternd.log", d->dir);
  snprintf(d->db, sizeof(d->db), "%s/relay.db", d->data);
  cr_assert_eq(tern_keypair_generate(&d->kp), 0);
  cr_assert_eq(tern_keypair_save(d->key, &d->kp, 0), 0);
  char allow[1024] = "";
  for (size_t i = 0; i < n; i++) {
    cr_assert_eq(tern_keypair_generate(&kps[i]), 0);
    char pub[TERN_KEY_HEX_BYTES];
    tern_key_to_hex(kps[i].public_key, pub);
    size_t k = strlen(allow);
    snprintf(allow + k, sizeof(allow) - k, "%s %s\n", pub, users[i]);
  }
  tt_write_file(d->allow, allow);
}

static void relayd_teardown(relayd *d) {
  if (d->pid) relayd_kill9(d);
  tt_rmtree(d->dir);
  free(d->dir);
}

static size_t add_idle_client(loop *l, const relayd *d, const char *user, const tern_keypair *kp) {
  tern_client_config cfg;
  tern_client_config_default(&cfg);
  cfg.relay_host = "127.0.0.1";
  cfg.relay_port = d->port;
  memcpy(cfg.relay_public_key, d->kp.public_key, TERN_KEY_BYTES);
  cfg.keypair = *kp;
  cfg.user = user;
  cfg.keepalive_fixed_ms = IDLE_KEEPALIVE_MS;
  return loop_add_client(l, &cfg);
}

/* Pumps the clients for ms milliseconds. */
static void pump_for(loop *l, int ms) {
  uint64_t end = tt_now_ms() + (uint64_t)ms;
  while (tt_now_ms() < end) {
    loop_pump(l);
    sleep_ms(2);
  }
}

/* The reset row the store holds for device key `dev`: 1 with its HELLO
 * timestamp and the port of its address, 0 if none. */
static int store_row(const relayd *d, const uint8_t dev[32], uint64_t *time_us, uint16_t *port) {
  sqlite3 *db;
  cr_assert_eq(sqlite3_open_v2(d->db, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
  sqlite3_stmt *q;
  cr_assert_eq(sqlite3_prepare_v2(db, "SELECT time_us, addr FROM resets WHERE dev = ?1", -1, &q, NULL),
               SQLITE_OK, "%s", sqlite3_errmsg(db));
  sqlite3_bind_blob(q, 1, dev, 32, SQLITE_STATIC);
  int found = sqlite3_step(q) == SQLITE_ROW;
  if (found) {
    *time_us = (uint64_t)sqlite3_column_int64(q, 0);
    const uint8_t *a = sqlite3_column_blob(q, 1);
    cr_assert_eq(sqlite3_column_bytes(q, 1), 18);
    *port = (uint16_t)(a[16] << 8 | a[17]);
  }
  sqlite3_finalize(q);
  sqlite3_close(db);
  return found;
}

static int count_rows(const relayd *d) {
  sqlite3 *db;
  cr_assert_eq(sqlite3_open_v2(d->db, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
  sqlite3_stmt *q;
  cr_assert_eq(sqlite3_prepare_v2(db, "SELECT count(*) FROM resets", -1, &q, NULL), SQLITE_OK);
  cr_assert_eq(sqlite3_step(q), SQLITE_ROW);
  int n = sqlite3_column_int(q, 0);
  sqlite3_finalize(q);
  sqlite3_close(db);
  return n;
}

Test(restart, an_idle_client_learns_of_a_restart_at_once, .timeout = 60) {
  static const char *const users[] = {"rx", "tx"};
  tern_keypair kps[2];
  relayd d;
  relayd_setup(&d, users, kps, 2);
  relayd_start(&d);
  loop l = {0};
  size_t rx = add_idle_client(&l, &d, "rx", &kps[0]);
  size_t tx = add_idle_client(&l, &d, "tx", &kps[1]);
  loop_event ev;
  cr_assert(loop_wait(&l, rx, TERN_EV_CONNECTED, 5000, &ev), "rx did not connect");
  cr_assert(loop_wait(&l, tx, TERN_EV_CONNECTED, 5000, &ev), "tx did not connect");
  pump_for(&l, 300); /* the RESET_TOKEN frames arrive; then both are idle */

  relayd_kill9(&d);
  uint64_t t, tt;
  uint16_t p;
  cr_assert(store_row(&d, kps[0].public_key, &t, &p), "rx's reset row survives the kill -9");
  cr_assert(store_row(&d, kps[1].public_key, &tt, &p), "tx's reset row survives the kill -9");
  relayd_start(&d);
  uint64_t t0 = tt_now_ms();
  uint64_t cmid;
  cr_assert_eq(tern_client_send(l.clients[tx], "rx", "after the restart", 17, &cmid), 0);
  /* Told by the relay (TERN_ERESET), not found out later by other means
   * (one run with the relay's RESETs switched off: 1.7 s) or by a
   * keepalive going unanswered (up to IDLE_KEEPALIVE_MS). */
  cr_assert(loop_wait(&l, rx, TERN_EV_DISCONNECTED, 2000, &ev), "rx did not learn of the restart");
  cr_assert_eq(ev.error, TERN_ERESET, "rx's reason: %s", tern_errname(ev.error));
  cr_assert(loop_wait(&l, rx, TERN_EV_MESSAGE, 20000, &ev), "rx never got the message");
  uint64_t took = tt_now_ms() - t0;
  cr_log_info("an idle receiver got a message sent right after kill -9 and restart in %llu ms\n",
              (unsigned long long)took);
  printf("restart: idle receiver got the message %llu ms after the restart\n", (unsigned long long)took);
  cr_assert_str_eq(ev.user, "tx");
  cr_assert_lt(took, 1000, "the receiver waited %llu ms", (unsigned long long)took);
  cr_assert_eq(count_rows(&d), 2, "the old rows are gone; the new sessions have theirs");
  /* The RESET's second copy (sent against loss) finds rx's new session,
   * whose token it does not carry: ignored. */
  pump_for(&l, 600);
  tern_client_stats st;
  tern_client_get_stats(l.clients[rx], &st);
  cr_assert_eq(st.resets_ignored, 1);
  cr_assert_eq(st.connects, 2, "rx's new session stands");
  char *log = tt_read_file(d.log);
  cr_assert(strstr(log, "telling 2 session(s) of the previous run"), "ternd log:\n%s", log);
  free(log);
  loop_stop(&l);
  relayd_teardown(&d);
}

/* Sends a RESET datagram carrying token from 127.0.0.1:from_port (the
 * relay's port, free after its kill) to 127.0.0.1:to_port. */
static void send_reset_from(uint16_t from_port, uint16_t to_port, const uint8_t token[16]) {
  int s = socket(AF_INET, SOCK_DGRAM, 0);
  cr_assert_geq(s, 0);
  int one = 1;
  setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(from_port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  cr_assert_eq(bind(s, (struct sockaddr *)&a, sizeof(a)), 0, "bind the relay's port");
  uint8_t out[TERN__RESET_BYTES];
  tern__reset_write(out, token);
  a.sin_port = htons(to_port);
  cr_assert_eq(sendto(s, out, sizeof(out), 0, (struct sockaddr *)&a, sizeof(a)), (ssize_t)sizeof(out));
  close(s);
}

/* Returns 1 if client i reported DISCONNECTED within ms (its error in *err). */
static int disconnected_within(loop *l, size_t i, int ms, int *err) {
  loop_event ev;
  if (!loop_wait(l, i, TERN_EV_DISCONNECTED, ms, &ev)) return 0;
  *err = ev.error;
  return 1;
}

/* ternd and one idle client "rx" (its keypair in kps[0]), connected and
 * settled: its session's row is in the store. */
static size_t start_with_rx(relayd *d, tern_keypair kps[1], loop *l) {
  static const char *const users[] = {"rx"};
  relayd_setup(d, users, kps, 1);
  relayd_start(d);
  size_t rx = add_idle_client(l, d, "rx", &kps[0]);
  loop_event ev;
  cr_assert(loop_wait(l, rx, TERN_EV_CONNECTED, 5000, &ev), "rx did not connect");
  pump_for(l, 300);
  return rx;
}

Test(restart, forged_and_replayed_resets_are_ignored, .timeout = 60) {
  tern_keypair kps[1];
  relayd d;
  loop l = {0};
  size_t rx = start_with_rx(&d, kps, &l);
  loop_event ev;
  uint64_t t1;
  uint16_t port1;
  cr_assert(store_row(&d, kps[0].public_key, &t1, &port1));
  uint8_t token1[16];
  tern__reset_token(d.kp.secret_key, kps[0].public_key, t1, token1);

  /* Session 1 ends by a real restart; session 2 opens. */
  relayd_kill9(&d);
  relayd_start(&d);
  int err = 0;
  cr_assert(disconnected_within(&l, rx, 2000, &err), "rx did not learn of the restart");
  cr_assert_eq(err, TERN_ERESET, "reason %s", tern_errname(err));
  cr_assert(loop_wait(&l, rx, TERN_EV_CONNECTED, 3000, &ev), "rx did not reconnect");
  pump_for(&l, 300);
  uint64_t t2;
  uint16_t port2;
  cr_assert(store_row(&d, kps[0].public_key, &t2, &port2));
  cr_assert_neq(t2, t1);
  relayd_kill9(&d); /* the relay's port is free: a forger may send from it */

  /* Forged (a token of random bytes) and replayed (session 1's): ignored. */
  uint8_t forged[16];
  for (int i = 0; i < 16; i++) forged[i] = (uint8_t)(rand() & 0xff);
  send_reset_from(d.port, port2, forged);
  send_reset_from(d.port, port2, token1);
  cr_assert_not(disconnected_within(&l, rx, 500, &err), "a forged or replayed RESET ended the session (%s)",
                tern_errname(err));
  tern_client_stats st;
  tern_client_get_stats(l.clients[rx], &st);
  cr_assert_eq(st.resets_ignored, 3, "these two, and the second copy of the restart's RESET");
  /* The same datagram from another source: ignored as well. */
  uint8_t token2[16];
  tern__reset_token(d.kp.secret_key, kps[0].public_key, t2, token2);
  send_reset_from(0, port2, token2);
  cr_assert_not(disconnected_within(&l, rx, 300, &err), "a RESET from another address ended the session");
  /* Session 2's own token from the relay's address ends it. */
  send_reset_from(d.port, port2, token2);
  cr_assert(disconnected_within(&l, rx, 1000, &err), "the right RESET did not end the session");
  cr_assert_eq(err, TERN_ERESET);
  loop_stop(&l);
  relayd_teardown(&d);
}

/* A session that moved to a new address (spec/wire.md §11) gets its RESET
 * there: the move rewrites its row. */
Test(restart, a_moved_session_gets_its_reset_at_its_new_address, .timeout = 60) {
  tern_keypair kps[1];
  relayd d;
  loop l = {0};
  size_t rx = start_with_rx(&d, kps, &l);
  tern_client_network_changed(l.clients[rx]);
  tern_client_stats st = {0};
  uint64_t end = tt_now_ms() + 5000;
  while (st.migrations == 0 && tt_now_ms() < end) {
    pump_for(&l, 20);
    tern_client_get_stats(l.clients[rx], &st);
  }
  cr_assert_eq(st.migrations, 1, "the session did not move");
  pump_for(&l, 300);
  relayd_kill9(&d);
  uint64_t t;
  uint16_t port;
  cr_assert(store_row(&d, kps[0].public_key, &t, &port));
  char *log = tt_read_file(d.log);
  char at[32];
  snprintf(at, sizeof(at), "127.0.0.1:%u (same session)", port);
  cr_assert(strstr(log, at), "the row's port %u is not where the session moved; log:\n%s", port, log);
  free(log);
  relayd_start(&d);
  int err = 0;
  cr_assert(disconnected_within(&l, rx, 2000, &err), "the moved session did not learn of the restart");
  cr_assert_eq(err, TERN_ERESET, "reason %s", tern_errname(err));
  loop_stop(&l);
  relayd_teardown(&d);
}

/* What a start sends for the rows the previous run left (spec/wire.md
 * §14): two RESETs per row, each with the row's token, the second at least
 * 300 ms after the first; paced (256 every 10 ms: seen on the second
 * copies, since the first batch goes out before ternd writes its port
 * file, while this test is not reading yet); no more; the rows cleared. 600 rows, written into the store as a previous
 * run would have, all pointing at one socket of this test. */
#define ROWS 600
Test(restart, a_start_sends_two_paced_resets_per_recorded_session, .timeout = 60) {
  static const char *const users[] = {"rx"};
  tern_keypair kps[1];
  relayd d;
  relayd_setup(&d, users, kps, 1);
  relayd_start(&d); /* creates the store */
  relayd_kill9(&d);

  int s = socket(AF_INET, SOCK_DGRAM, 0);
  cr_assert_geq(s, 0);
  int big = 8 << 20;
  (void)setsockopt(s, SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof(big)); /* root: past rmem_max */
  (void)setsockopt(s, SOL_SOCKET, SO_RCVBUF, &big, sizeof(big));
  struct sockaddr_in a = {.sin_family = AF_INET};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t alen = sizeof(a);
  cr_assert_eq(bind(s, (struct sockaddr *)&a, sizeof(a)), 0);
  cr_assert_eq(getsockname(s, (struct sockaddr *)&a, &alen), 0);
  uint16_t port = ntohs(a.sin_port);

  sqlite3 *db;
  cr_assert_eq(sqlite3_open(d.db, &db), SQLITE_OK);
  sqlite3_stmt *q;
  cr_assert_eq(sqlite3_prepare_v2(db, "INSERT INTO resets(dev, time_us, addr) VALUES(?1, ?2, ?3)", -1, &q, NULL),
               SQLITE_OK, "%s", sqlite3_errmsg(db));
  uint8_t addr[18] = {0};
  addr[10] = addr[11] = 0xff;
  addr[12] = 127;
  addr[15] = 1;
  addr[16] = (uint8_t)(port >> 8);
  addr[17] = (uint8_t)port;
  static uint8_t tokens[ROWS][16];
  cr_assert_eq(sqlite3_exec(db, "BEGIN", NULL, NULL, NULL), SQLITE_OK);
  for (int i = 0; i < ROWS; i++) {
    uint8_t dev[32] = {0};
    dev[0] = (uint8_t)i;
    dev[1] = (uint8_t)(i >> 8);
    uint64_t t = 1700000000000000ull + (uint64_t)i;
    tern__reset_token(d.kp.secret_key, dev, t, tokens[i]);
    sqlite3_bind_blob(q, 1, dev, 32, SQLITE_TRANSIENT);
    sqlite3_bind_int64(q, 2, (sqlite3_int64)t);
    sqlite3_bind_blob(q, 3, addr, 18, SQLITE_TRANSIENT);
    cr_assert_eq(sqlite3_step(q), SQLITE_DONE);
    sqlite3_reset(q);
  }
  cr_assert_eq(sqlite3_exec(db, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
  sqlite3_finalize(q);
  sqlite3_close(db);

  relayd_start(&d);
  static uint64_t first_ms[ROWS], second_ms[ROWS];
  memset(first_ms, 0, sizeof(first_ms));
  memset(second_ms, 0, sizeof(second_ms));
  struct timeval tv = {.tv_sec = 0, .tv_usec = 200000};
  setsockopt(s, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  long got = 0, other = 0;
  uint64_t end = tt_now_ms() + 5000;
  while (tt_now_ms() < end) {
    uint8_t buf[64], token[16];
    ssize_t n = recv(s, buf, sizeof(buf), 0);
    if (n < 0) {
      if (got >= 2 * ROWS) break; /* quiet after all: nothing more comes */
      continue;
    }
    uint64_t now = tt_now_ms();
    int i = -1;
    if (tern__reset_parse(buf, (size_t)n, token))
      for (int k = 0; k < ROWS && i < 0; k++)
        if (!memcmp(token, tokens[k], 16)) i = k;
    if (i < 0) {
      other++;
      continue;
    }
    got++;
    if (!first_ms[i]) first_ms[i] = now;
    else if (!second_ms[i]) second_ms[i] = now;
    else other++; /* a third copy */
  }
  close(s);
  uint64_t lo = UINT64_MAX, hi = 0, gap_min = UINT64_MAX;
  for (int i = 0; i < ROWS; i++) {
    cr_assert(first_ms[i] && second_ms[i], "row %d got %s", i, first_ms[i] ? "one RESET" : "none");
    if (second_ms[i] < lo) lo = second_ms[i];
    if (second_ms[i] > hi) hi = second_ms[i];
    if (second_ms[i] - first_ms[i] < gap_min) gap_min = second_ms[i] - first_ms[i];
  }
  printf("restart: %d rows: %ld RESETs, second copies over %llu ms, each >= %llu ms after its first\n", ROWS,
         got, (unsigned long long)(hi - lo), (unsigned long long)gap_min);
  cr_assert_eq(got, 2 * ROWS);
  cr_assert_eq(other, 0, "datagrams that are not one of the rows' RESETs, or a third copy");
  cr_assert_geq(hi - lo, 15, "the copies were not paced (%llu ms)", (unsigned long long)(hi - lo));
  cr_assert_geq(gap_min, 290, "a second copy %llu ms after its first", (unsigned long long)gap_min);
  relayd_kill9(&d);
  cr_assert_eq(count_rows(&d), 0, "the rows are cleared after use");
  relayd_teardown(&d);
}
