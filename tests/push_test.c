/*
 * Push notifications for offline devices (issue 14, item 4; spec/push.md),
 * end to end: a real ternd with --push-url pointing at a small HTTP
 * receiver run by this test (libmicrohttpd, on 127.0.0.1), and tern
 * clients in this process. The receiver records every POST (its body and
 * its Authorization header) and answers with the status codes a test
 * scripts for it.
 */
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tern/tern.h"
#include "tern_test.h"

/* ---- the backend: an HTTP receiver -------------------------------------- */

#define MAX_POSTS 64

typedef struct post {
  char body[512];
  char auth[128];
  uint64_t at_ms;
} post;

typedef struct sink {
  struct MHD_Daemon *d;
  uint16_t port;
  pthread_mutex_t mu;
  post posts[MAX_POSTS];
  int n;
  int codes[MAX_POSTS]; /* the answer to the i-th POST (0: 200) */
} sink;

typedef struct upload {
  char buf[512];
  size_t len;
} upload;

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *data, size_t *size, void **state) {
  (void)url, (void)version;
  sink *s = cls;
  if (strcmp(method, "POST") != 0) return MHD_NO;
  upload *u = *state;
  if (!u) {
    *state = calloc(1, sizeof(upload));
    return *state ? MHD_YES : MHD_NO;
  }
  if (*size) {
    size_t k = *size < sizeof(u->buf) - 1 - u->len ? *size : sizeof(u->buf) - 1 - u->len;
    memcpy(u->buf + u->len, data, k);
    u->len += k;
    *size = 0;
    return MHD_YES;
  }
  pthread_mutex_lock(&s->mu);
  int code = 200;
  if (s->n < MAX_POSTS) {
    post *p = &s->posts[s->n];
    snprintf(p->body, sizeof p->body, "%.*s", (int)u->len, u->buf);
    const char *a = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
    snprintf(p->auth, sizeof p->auth, "%s", a ? a : "");
    p->at_ms = tt_now_ms();
    if (s->codes[s->n]) code = s->codes[s->n];
    s->n++;
  }
  pthread_mutex_unlock(&s->mu);
  free(u);
  *state = NULL;
  struct MHD_Response *r = MHD_create_response_from_buffer(3, "ok\n", MHD_RESPMEM_PERSISTENT);
  enum MHD_Result ret = MHD_queue_response(c, (unsigned)code, r);
  MHD_destroy_response(r);
  return ret;
}

static void sink_start(sink *s) {
  memset(s, 0, sizeof(*s));
  pthread_mutex_init(&s->mu, NULL);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  s->d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD, 0, NULL, NULL, on_request, s,
                          MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&a, MHD_OPTION_END);
  cr_assert_not_null(s->d, "cannot start the HTTP receiver");
  const union MHD_DaemonInfo *i = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
  s->port = i->port;
}

static int sink_count(sink *s) {
  pthread_mutex_lock(&s->mu);
  int n = s->n;
  pthread_mutex_unlock(&s->mu);
  return n;
}

static void sink_stop(sink *s) {
  MHD_stop_daemon(s->d);
  pthread_mutex_destroy(&s->mu);
}

/* ---- ternd and the clients --------------------------------------------- */

typedef struct world {
  char *dir;
  pid_t ternd;
  uint16_t port;
  uint8_t relay_pub[TERN_KEY_BYTES];
  char log[600];
  sink sk;
} world;

/* ternd --open with push to the receiver, every `interval` s at most, and
 * `extra` (may be NULL) as one more flag pair. */
static void world_start(world *w, const char *interval, const char *extra, const char *extra_val) {
  memset(w, 0, sizeof(*w));
  sink_start(&w->sk);
  w->dir = tt_tempdir();
  char key[600], portfile[600], data[600], secret[600], url[128];
  snprintf(key, sizeof key, "%s/relay.key", w->dir);
  snprintf(portfile, sizeof portfile, "%s/port", w->dir);
  snprintf(data, sizeof data, "%s/data", w->dir);
  snprintf(secret, sizeof secret, "%s/push.secret", w->dir);
  snprintf(w->log, sizeof w->log, "%s/ternd.log", w->dir);
  snprintf(url, sizeof url, "http://127.0.0.1:%u/push", w->sk.port);
  tt_write_file(secret, "s3cret-token\n");
  char *kg[] = {(char *)tt_tool("tern-keygen"), key, NULL};
  char *out = NULL;
  cr_assert_eq(tt_run(kg, NULL, &out, NULL, 10000), 0);
  cr_assert_eq(tern_key_from_hex(out, w->relay_pub), 0);
  free(out);
  char *argv[] = {(char *)tt_tool("ternd"), "--key", key, "--open", "--listen", "127.0.0.1:0",
                  "--port-file", portfile, "--data-dir", data, "--no-fsync", "--push-url", url,
                  "--push-secret", secret, "--push-interval", (char *)interval, (char *)extra,
                  (char *)extra_val, NULL};
  w->ternd = tt_spawn(argv, w->log);
  cr_assert_eq(tt_wait_file(portfile, 10000), 0, "ternd did not start:\n%s", tt_read_file(w->log));
  char *p = tt_read_file(portfile);
  w->port = (uint16_t)atoi(p);
  free(p);
}

static void world_stop(world *w) {
  if (tt_stop(w->ternd, 5000) != 0) cr_assert_fail("ternd did not exit 0 on SIGTERM; its log:\n%s", tt_read_file(w->log));
  sink_stop(&w->sk);
  tt_rmtree(w->dir);
  free(w->dir);
}

static tern_client *client(world *w, const char *user, tern_keypair *kp) {
  tern_client_config cc;
  tern_client_config_default(&cc);
  cc.relay_host = "127.0.0.1";
  cc.relay_port = w->port;
  memcpy(cc.relay_public_key, w->relay_pub, TERN_KEY_BYTES);
  if (kp->public_key[0] == 0 && kp->public_key[1] == 0) cr_assert_eq(tern_keypair_generate(kp), 0);
  cc.keypair = *kp;
  cc.user = user;
  cc.keepalive_fixed_ms = 25000;
  tern_client *c;
  cr_assert_eq(tern_client_new(&c, &cc), 0);
  cr_assert_eq(tern_client_connect(c), 0);
  return c;
}

/* Services the clients until `c` has an event of `type` (1) or ms pass (0). */
static int until(tern_client **cs, int n, tern_client *c, tern_event_type type, int ms) {
  uint64_t end = tt_now_ms() + (uint64_t)ms;
  while (tt_now_ms() < end) {
    for (int i = 0; i < n; i++) {
      if (tern_client_service(cs[i], 10) < 0) continue;
      tern_event ev;
      while (tern_client_next_event(cs[i], &ev) == 1)
        if (cs[i] == c && ev.type == type) return 1;
    }
  }
  return 0;
}

static void pump(tern_client **cs, int n, int ms) {
  uint64_t end = tt_now_ms() + (uint64_t)ms;
  while (tt_now_ms() < end)
    for (int i = 0; i < n; i++) {
      if (tern_client_service(cs[i], 10) < 0) continue;
      tern_event ev;
      while (tern_client_next_event(cs[i], &ev) == 1) {}
    }
}

/* The device of `user` is known to the relay (it connected once) and is
 * now gone. */
static void was_here(world *w, const char *user, tern_keypair *kp) {
  tern_client *c = client(w, user, kp);
  cr_assert(until(&c, 1, c, TERN_EV_CONNECTED, 5000), "%s did not connect", user);
  tern_client_free(c);
  usleep(300 * 1000); /* the relay sees the disconnect */
}

/* ternd's log says `needle`. */
static void log_says(world *w, const char *needle) {
  char *log = tt_read_file(w->log);
  cr_assert(strstr(log, needle) != NULL, "the log lacks '%s':\n%s", needle, log);
  free(log);
}

static int wait_posts(world *w, tern_client **cs, int n, int want, int ms) {
  uint64_t end = tt_now_ms() + (uint64_t)ms;
  while (tt_now_ms() < end && sink_count(&w->sk) < want) pump(cs, n, 20);
  return sink_count(&w->sk);
}

/* The backend learns that a message waits for bob's device: who it is for,
 * which device, from whom, how many, with the bearer secret; never what it
 * says. */
Test(push, a_message_for_an_offline_device_notifies_the_backend_without_its_content, .timeout = 60) {
  world w;
  world_start(&w, "2", NULL, NULL);
  tern_keypair bob_kp = {0};
  was_here(&w, "bob", &bob_kp);
  tern_keypair alice_kp = {0};
  tern_client *a = client(&w, "alice", &alice_kp);
  cr_assert(until(&a, 1, a, TERN_EV_CONNECTED, 5000));
  cr_assert_eq(tern_client_send(a, "bob", "the-secret-plan", 15, NULL), 0);
  cr_assert(until(&a, 1, a, TERN_EV_SENT, 5000));
  cr_assert_eq(wait_posts(&w, &a, 1, 1, 5000), 1, "no POST for bob's device:\n%s", tt_read_file(w.log));
  char hex[TERN_KEY_HEX_BYTES], want[300];
  tern_key_to_hex(bob_kp.public_key, hex);
  snprintf(want, sizeof want, "{\"user\":\"bob\",\"device\":\"%s\",\"sender\":\"alice\",\"waiting\":1}", hex);
  post *p = &w.sk.posts[0];
  cr_assert_str_eq(p->body, want);
  cr_assert_str_eq(p->auth, "Bearer s3cret-token");
  cr_assert_null(strstr(p->body, "secret-plan"), "the content went to the backend");
  tern_client_free(a);
  world_stop(&w);
}

/* A device that is connected gets its messages, not a notification. */
Test(push, nothing_is_sent_for_a_device_that_is_online, .timeout = 60) {
  world w;
  world_start(&w, "1", NULL, NULL);
  tern_keypair ka = {0}, kb = {0};
  tern_client *cs[2] = {client(&w, "alice", &ka), client(&w, "bob", &kb)};
  cr_assert(until(cs, 2, cs[0], TERN_EV_CONNECTED, 5000));
  cr_assert(until(cs, 2, cs[1], TERN_EV_CONNECTED, 5000));
  for (int i = 0; i < 5; i++) cr_assert_eq(tern_client_send(cs[0], "bob", "hi", 2, NULL), 0);
  pump(cs, 2, 2500);
  cr_assert_eq(sink_count(&w.sk), 0, "%d POSTs for a device that is online", sink_count(&w.sk));
  tern_client_free(cs[0]);
  tern_client_free(cs[1]);
  world_stop(&w);
}

/* A burst to an offline device: one POST at once, then one more when the
 * interval (2 s) ends, with the count at that time; nothing after. */
Test(push, a_burst_is_coalesced_into_one_post_per_interval, .timeout = 60) {
  world w;
  world_start(&w, "2", NULL, NULL);
  tern_keypair bob_kp = {0};
  was_here(&w, "bob", &bob_kp);
  tern_keypair alice_kp = {0};
  tern_client *a = client(&w, "alice", &alice_kp);
  cr_assert(until(&a, 1, a, TERN_EV_CONNECTED, 5000));
  for (int i = 0; i < 12; i++) {
    char body[8];
    snprintf(body, sizeof body, "m%d", i);
    cr_assert_eq(tern_client_send(a, "bob", body, strlen(body), NULL), 0);
    pump(&a, 1, 50);
  }
  pump(&a, 1, 5000);
  /* Two POSTs when the sends take their 0.6 s; a third only if a loaded
   * machine spread them past the interval. Never two within one. */
  int n = sink_count(&w.sk);
  cr_assert(n == 2 || n == 3, "%d POSTs for 12 messages in 0.6 s with a 2 s interval", n);
  cr_assert(strstr(w.sk.posts[n - 1].body, "\"waiting\":12}") != NULL, "the last POST: %s",
            w.sk.posts[n - 1].body);
  for (int k = 1; k < n; k++) {
    uint64_t gap = w.sk.posts[k].at_ms - w.sk.posts[k - 1].at_ms;
    cr_assert(gap >= 1900 && gap <= 4000, "POST %d came %llu ms after the one before", k + 1,
              (unsigned long long)gap);
  }
  tern_client_free(a);
  world_stop(&w);
}

/* A failing backend (503, 503, then 200) is tried again, after about 1 s
 * and then 2 s, and the POST that gets through carries the current count.
 * A backend that refuses (400) is not tried again. */
Test(push, a_failing_backend_is_retried_with_backoff_and_a_refusal_is_dropped, .timeout = 60) {
  world w;
  world_start(&w, "1", NULL, NULL);
  w.sk.codes[0] = 503;
  w.sk.codes[1] = 503;
  tern_keypair bob_kp = {0}, carol_kp = {0};
  was_here(&w, "bob", &bob_kp);
  tern_keypair alice_kp = {0};
  tern_client *a = client(&w, "alice", &alice_kp);
  cr_assert(until(&a, 1, a, TERN_EV_CONNECTED, 5000));
  cr_assert_eq(tern_client_send(a, "bob", "one", 3, NULL), 0);
  cr_assert_eq(wait_posts(&w, &a, 1, 1, 5000), 1);
  cr_assert_eq(tern_client_send(a, "bob", "two", 3, NULL), 0);
  cr_assert_eq(wait_posts(&w, &a, 1, 3, 8000), 3, "%d POSTs:\n%s", sink_count(&w.sk), tt_read_file(w.log));
  uint64_t g1 = w.sk.posts[1].at_ms - w.sk.posts[0].at_ms, g2 = w.sk.posts[2].at_ms - w.sk.posts[1].at_ms;
  /* 1 s and 2 s, +-20 %, plus what a loaded machine adds. */
  cr_assert(g1 >= 750 && g1 <= 2500, "first retry after %llu ms", (unsigned long long)g1);
  cr_assert(g2 >= 1550 && g2 <= 4000, "second retry after %llu ms", (unsigned long long)g2);
  cr_assert(strstr(w.sk.posts[2].body, "\"waiting\":2}") != NULL, "%s", w.sk.posts[2].body);
  pump(&a, 1, 1500);
  cr_assert_eq(sink_count(&w.sk), 3, "more POSTs after one got through");
  /* carol's device: the backend says 400, once; nothing more. */
  w.sk.codes[3] = 400;
  was_here(&w, "carol", &carol_kp);
  cr_assert_eq(tern_client_send(a, "carol", "hello", 5, NULL), 0);
  cr_assert_eq(wait_posts(&w, &a, 1, 4, 5000), 4);
  pump(&a, 1, 2500);
  cr_assert_eq(sink_count(&w.sk), 4, "a refused notification was sent again");
  log_says(&w, "refused the notification for carol");
  tern_client_free(a);
  world_stop(&w);
}

/* The memory bound: with --push-max-pending 2 and a backend that keeps
 * failing, two devices are held (and retried) and the others' events are
 * dropped, counted and logged; nothing is queued for them. */
Test(push, the_pending_devices_are_bounded, .timeout = 60) {
  world w;
  world_start(&w, "1", "--push-max-pending", "2");
  for (int i = 0; i < MAX_POSTS; i++) w.sk.codes[i] = 503;
  const char *users[] = {"bob", "carol", "dave", "erin"};
  tern_keypair kp[4];
  memset(kp, 0, sizeof kp);
  for (int i = 0; i < 4; i++) was_here(&w, users[i], &kp[i]);
  tern_keypair alice_kp = {0};
  tern_client *a = client(&w, "alice", &alice_kp);
  cr_assert(until(&a, 1, a, TERN_EV_CONNECTED, 5000));
  for (int i = 0; i < 4; i++) cr_assert_eq(tern_client_send(a, users[i], "x", 1, NULL), 0);
  pump(&a, 1, 4000); /* first tries, and retries after 1 and 2 s */
  int n = sink_count(&w.sk), seen[4] = {0};
  cr_assert(n >= 4, "%d POSTs", n);
  for (int k = 0; k < n; k++)
    for (int i = 0; i < 4; i++) {
      char want[32];
      snprintf(want, sizeof want, "{\"user\":\"%s\"", users[i]);
      if (strncmp(w.sk.posts[k].body, want, strlen(want)) == 0) seen[i] = 1;
    }
  cr_assert_eq(seen[0] + seen[1] + seen[2] + seen[3], 2, "POSTs for %d devices, bound 2",
               seen[0] + seen[1] + seen[2] + seen[3]);
  log_says(&w, "notification(s) not queued: 2 devices are pending");
  tern_client_free(a);
  world_stop(&w);
}

/* A session that ends while messages wait for its device (delivered to it
 * but not acknowledged: the app was gone) leaves the device notified. */
Test(push, a_device_that_leaves_with_messages_unacknowledged_is_notified, .timeout = 60) {
  world w;
  world_start(&w, "1", NULL, NULL);
  tern_keypair ka = {0}, kb = {0};
  tern_client *a = client(&w, "alice", &ka), *b = client(&w, "bob", &kb);
  tern_client *both[2] = {a, b};
  cr_assert(until(both, 2, a, TERN_EV_CONNECTED, 5000));
  cr_assert(until(both, 2, b, TERN_EV_CONNECTED, 5000));
  /* From here bob's client is not serviced: it takes in nothing. */
  cr_assert_eq(tern_client_send(a, "bob", "are you there", 13, NULL), 0);
  cr_assert(until(&a, 1, a, TERN_EV_SENT, 5000));
  pump(&a, 1, 500);
  cr_assert_eq(sink_count(&w.sk), 0, "a POST while bob's session was open");
  tern_client_free(b);
  cr_assert_eq(wait_posts(&w, &a, 1, 1, 15000), 1, "no POST after bob left:\n%s", tt_read_file(w.log));
  cr_assert(strstr(w.sk.posts[0].body, "\"user\":\"bob\"") && strstr(w.sk.posts[0].body, "\"waiting\":1}"),
            "%s", w.sk.posts[0].body);
  tern_client_free(a);
  world_stop(&w);
}

/* A message to a group (spec/messages.md §14) notifies the backend for each
 * member device that is offline, with the member as the user and the
 * sender; not for a member that is online, nor for the sender's own
 * devices. */
Test(push, a_group_message_notifies_each_offline_member_device, .timeout = 60) {
  char sock[108];
  snprintf(sock, sizeof sock, "/tmp/tern-push-admin-%d.sock", (int)getpid());
  world w;
  world_start(&w, "2", "--admin-socket", sock);
  tern_keypair bob_kp = {0}, alice_kp = {0}, carol_kp = {0}, alice2_kp = {0};
  was_here(&w, "bob", &bob_kp);
  was_here(&w, "alice", &alice2_kp); /* alice's other device, offline too */
  char *gs[] = {(char *)tt_tool("ternctl"), "--socket", sock, "group-set", "@team", "alice", "bob", "carol",
                NULL};
  char *out = NULL;
  cr_assert_eq(tt_run(gs, NULL, &out, NULL, 10000), 0, "ternctl group-set failed");
  free(out);
  tern_client *cs[2] = {client(&w, "alice", &alice_kp), client(&w, "carol", &carol_kp)};
  cr_assert(until(cs, 2, cs[0], TERN_EV_CONNECTED, 5000));
  cr_assert(until(cs, 2, cs[1], TERN_EV_CONNECTED, 5000));
  cr_assert_eq(tern_client_send(cs[0], "@team", "hi team", 7, NULL), 0);
  cr_assert(until(cs, 2, cs[0], TERN_EV_SENT, 5000));
  cr_assert_eq(wait_posts(&w, cs, 2, 1, 5000), 1, "no POST for bob's device:\n%s", tt_read_file(w.log));
  pump(cs, 2, 1000);
  cr_assert_eq(sink_count(&w.sk), 1, "only bob's device: carol is online, alice sent it");
  char hex[TERN_KEY_HEX_BYTES], want[300];
  tern_key_to_hex(bob_kp.public_key, hex);
  snprintf(want, sizeof want, "{\"user\":\"bob\",\"device\":\"%s\",\"sender\":\"alice\",\"waiting\":1}", hex);
  cr_assert_str_eq(w.sk.posts[0].body, want);
  tern_client_free(cs[0]);
  tern_client_free(cs[1]);
  world_stop(&w);
}

/* A session that ends while its group's messages wait for it (delivered
 * but not acknowledged) leaves the device notified, with the group as the
 * sender. */
Test(push, a_device_that_leaves_with_group_messages_unacknowledged_is_notified, .timeout = 60) {
  char sock[108];
  snprintf(sock, sizeof sock, "/tmp/tern-push-admin-%d.sock", (int)getpid());
  world w;
  world_start(&w, "1", "--admin-socket", sock);
  char *gs[] = {(char *)tt_tool("ternctl"), "--socket", sock, "group-set", "@team", "alice", "bob", NULL};
  char *out = NULL;
  cr_assert_eq(tt_run(gs, NULL, &out, NULL, 10000), 0, "ternctl group-set failed");
  free(out);
  tern_keypair ka = {0}, kb = {0};
  tern_client *a = client(&w, "alice", &ka), *b = client(&w, "bob", &kb);
  tern_client *both[2] = {a, b};
  cr_assert(until(both, 2, a, TERN_EV_CONNECTED, 5000));
  cr_assert(until(both, 2, b, TERN_EV_CONNECTED, 5000));
  pump(both, 2, 300); /* bob's session has its GROUP_FLOOR */
  /* From here bob's client is not serviced: it takes in nothing. */
  cr_assert_eq(tern_client_send(a, "@team", "meeting now", 11, NULL), 0);
  cr_assert(until(&a, 1, a, TERN_EV_SENT, 5000));
  pump(&a, 1, 500);
  cr_assert_eq(sink_count(&w.sk), 0, "a POST while bob's session was open");
  tern_client_free(b);
  cr_assert_eq(wait_posts(&w, &a, 1, 1, 15000), 1, "no POST after bob left:\n%s", tt_read_file(w.log));
  char hex[TERN_KEY_HEX_BYTES], want[300];
  tern_key_to_hex(kb.public_key, hex);
  snprintf(want, sizeof want, "{\"user\":\"bob\",\"device\":\"%s\",\"sender\":\"@team\",\"waiting\":1}", hex);
  cr_assert_str_eq(w.sk.posts[0].body, want);
  tern_client_free(a);
  world_stop(&w);
}
