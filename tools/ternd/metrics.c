/*
 * ternd's Prometheus endpoint (metrics.h): the snapshot the relay's loop
 * publishes, the HTTP server (libmicrohttpd, one internal thread for all
 * connections) and the text format.
 *
 * Why scraping costs the relay's loop nothing measurable: the loop's whole
 * share is ternd_metrics_publish after each tern_relay_service call, a
 * pthread_mutex_trylock and a copy of a few hundred bytes; it never waits
 * for the HTTP thread (a busy lock skips the publish, and the loop comes
 * back within 10 ms to publish again). Everything a scrape does, the HTTP
 * parsing, reading /proc, formatting and sending, runs on the HTTP thread,
 * which holds the lock only to copy the snapshot out. tests/metrics_cost.sh
 * measures the loop thread's CPU per message with and without a scraper
 * hammering the endpoint.
 */
#include "metrics.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

struct ternd_metrics {
  struct MHD_Daemon *daemon;
  uint16_t port;
  uint32_t max_peers;
  double start_time; /* process start, Unix seconds */
  uint64_t scrapes;  /* HTTP thread only */
  _Atomic uint64_t skipped; /* publishes skipped: a scrape held the lock */
  pthread_mutex_t mu;
  tern_relay_stats snap; /* under mu */
  ternd_push *push;      /* under mu; NULL: no push notifications */
};

/* When this process started, Unix seconds: its start in clock ticks after
 * boot (/proc/self/stat field 22) plus the boot time (/proc/stat btime). */
static double process_start_time(void) {
  char buf[2048];
  FILE *f = fopen("/proc/self/stat", "r");
  if (!f) return 0;
  size_t n = fread(buf, 1, sizeof(buf) - 1, f);
  fclose(f);
  buf[n] = 0;
  const char *p = strrchr(buf, ')'); /* the command name may hold spaces */
  unsigned long long ticks = 0;
  /* After ")": state is field 3, starttime field 22. */
  if (!p || sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d "
                          "%*d %*d %llu", &ticks) != 1)
    return 0;
  unsigned long long btime = 0;
  if (!(f = fopen("/proc/stat", "r"))) return 0;
  char line[256];
  while (fgets(line, sizeof(line), f))
    if (sscanf(line, "btime %llu", &btime) == 1) break;
  fclose(f);
  long hz = sysconf(_SC_CLK_TCK);
  return btime && hz > 0 ? (double)btime + (double)ticks / (double)hz : 0;
}

static void metric(FILE *f, const char *type, const char *name, const char *help, uint64_t v) {
  fprintf(f, "# HELP %s %s\n# TYPE %s %s\n%s %llu\n", name, help, name, type, name,
          (unsigned long long)v);
}

/* The counters and gauges that are one field of tern_relay_stats each. */
#define F(field) offsetof(tern_relay_stats, field)
static const struct simple {
  const char *type, *name, *help;
  size_t off;
} simple[] = {
    {"gauge", "tern_relay_peers_connected", "Authenticated peers connected now.", F(peers_connected)},
    {"gauge", "tern_relay_peers_handshaking", "Peers connected that have not finished the handshake.",
     F(peers_handshaking)},
    {"counter", "tern_relay_handshakes_ok_total", "Handshakes completed.", F(handshakes_ok)},
    {"counter", "tern_relay_sessions_replaced_total",
     "Sessions closed because a newer one of the same device key connected.", F(sessions_replaced)},
    {"gauge", "tern_relay_draining", "1 while the relay drains (SIGTERM, ternctl drain), else 0.",
     F(draining)},
    {"gauge", "tern_relay_peers_held", "Peers of any state the relay still holds (a drain ends at 0).",
     F(peers_held)},
    {"counter", "tern_relay_packets_rejected_total", "Sealed packets that failed to open.",
     F(packets_rejected)},
    {"counter", "tern_relay_packets_replayed_total", "Sealed packets dropped by the replay window.",
     F(packets_replayed)},
    {"counter", "tern_relay_messages_stored_total",
     "Messages stored and acknowledged to their sender (counted at their commit).",
     F(messages_stored)},
    {"counter", "tern_relay_messages_early_total", "MSG frames that came inside handshake message 1.",
     F(messages_early)},
    {"counter", "tern_relay_messages_deduped_total", "Resent messages answered without storing again.",
     F(messages_deduped)},
    {"counter", "tern_relay_messages_delivered_total",
     "Messages acknowledged by a device of their recipient.", F(messages_delivered)},
    {"counter", "tern_relay_messages_refused_total",
     "Messages refused with FAILED: too big, unknown user, not allowed, over quota.",
     F(messages_refused)},
    {"counter", "tern_relay_messages_over_quota_total",
     "Messages refused with FAILED TERN_EQUOTA: a recipient's or sender's quota is held.",
     F(messages_over_quota)},
    {"counter", "tern_relay_messages_over_rate_total",
     "Messages answered BUSY TERN_ERATE (or ephemeral ones dropped): a device sent past its rate.",
     F(messages_over_rate)},
    {"counter", "tern_relay_deliver_budget_stalls_total",
     "Times a session's deliveries waited for the relay-wide delivery budget.",
     F(deliver_budget_stalls)},
    {"gauge", "tern_relay_deliver_bytes_unacked",
     "Bytes of deliveries sent to devices and not yet acknowledged, all sessions.",
     F(deliver_bytes_unacked)},
    {"counter", "tern_relay_resets_sent_total",
     "RESET datagrams sent at start to the sessions the previous run left recorded.", F(resets_sent)},
    {"counter", "tern_relay_messages_busy_total",
     "Messages answered BUSY (the store failed or is full; the sender retries).", F(messages_busy)},
    {"counter", "tern_relay_messages_out_of_order_total",
     "MSGs dropped unanswered: the message before them in their conversation is not stored (the client sends both again).",
     F(messages_out_of_order)},
    {"counter", "tern_relay_messages_stale_total",
     "MSGs dropped unanswered: below their device's settled floor (an old copy).", F(messages_stale)},
    {"counter", "tern_relay_messages_expired_total", "Messages dropped undelivered after the retention.",
     F(messages_expired)},
    {"counter", "tern_relay_store_errors_total", "Store operations or commits that failed.",
     F(store_errors)},
    {"counter", "tern_relay_probe_requests_total", "NAT-timeout probe requests that verified.",
     F(probe_requests)},
    {"counter", "tern_relay_probe_replies_total",
     "NAT-timeout probe replies sent after the silence asked for.", F(probe_replies)},
    {"counter", "tern_relay_probe_rejected_total", "Probe datagrams malformed, unknown or forged.",
     F(probe_rejected)},
    {"counter", "tern_relay_probe_limited_total", "Probe requests refused by the rate limits.",
     F(probe_limited)},
    {"counter", "tern_relay_connects_refused_full_total",
     "New connections refused with FULL: no free slot.", F(connects_refused_full)},
    {"counter", "tern_relay_cookies_sent_total",
     "COOKIEs sent to CONNECTs from addresses not yet shown to receive.", F(cookies_sent)},
    {"counter", "tern_relay_cookie_connects_total",
     "New connections admitted with a valid cookie.", F(cookie_connects)},
    {"counter", "tern_relay_cookies_bad_total",
     "CONNECTs dropped for a wrong or stale cookie.", F(cookies_bad)},
    {"counter", "tern_relay_sessions_moved_total",
     "Sessions that moved to a new address without a new handshake.", F(sessions_moved)},
    {"gauge", "tern_relay_cluster_connected",
     "1 while the cluster store is connected to a NATS server (0 also without a cluster store).",
     F(cluster_connected)},
    {"gauge", "tern_relay_cluster_log_position", "The cluster log entry this relay has applied.",
     F(cluster_position)},
    {"counter", "tern_relay_cluster_entries_published_total",
     "Entries (committed rounds) this relay appended to the cluster log.", F(cluster_published)},
    {"counter", "tern_relay_cluster_entries_applied_total",
     "Other relays' cluster log entries this relay applied.", F(cluster_applied)},
    {"counter", "tern_relay_cluster_entries_refused_total",
     "Cluster log entries refused because another relay's writes changed their answers.",
     F(cluster_refused)},
    {"counter", "tern_relay_cluster_publish_errors_total",
     "Appends to the cluster log that failed (no leader, no quorum, no connection).",
     F(cluster_publish_errors)},
    {"counter", "tern_relay_cluster_resyncs_total",
     "Times the replica went back to a snapshot: it had taken a log entry the log does not have.",
     F(cluster_resyncs)},
    {"counter", "tern_relay_cluster_acks_refuted_total",
     "Rounds the cluster acknowledged at a log entry that holds another relay's (rolled back).",
     F(cluster_acks_refuted)},
    {"counter", "tern_relay_tcp_accepted_total", "TCP connections accepted.", F(tcp_accepted)},
    {"gauge", "tern_relay_tcp_connections", "TCP connections open now.", F(tcp_connections)},
    {"counter", "tern_relay_received_bytes_total",
     "Bytes of tern packets and probe datagrams received, without ENet, UDP, TCP or IP headers.",
     F(bytes_received)},
    {"counter", "tern_relay_sent_bytes_total",
     "Bytes of tern packets and probe datagrams sent, without ENet, UDP, TCP or IP headers.",
     F(bytes_sent)},
};
#undef F

static void format_relay(FILE *f, const tern_relay_stats *s, const ternd_metrics *m) {
  for (size_t i = 0; i < sizeof(simple) / sizeof(simple[0]); i++) {
    uint64_t v;
    memcpy(&v, (const char *)s + simple[i].off, sizeof(v));
    metric(f, simple[i].type, simple[i].name, simple[i].help, v);
  }
  metric(f, "gauge", "tern_relay_max_peers", "Simultaneous peers allowed (--max-peers).",
         m->max_peers);
  uint64_t known = s->hs_failed_version + s->hs_failed_unreadable + s->hs_failed_protocol +
                   s->hs_failed_refused + s->hs_failed_timeout + s->hs_failed_draining;
  const struct {
    const char *reason;
    uint64_t n;
  } fails[] = {{"version", s->hs_failed_version},   {"unreadable", s->hs_failed_unreadable},
               {"protocol", s->hs_failed_protocol}, {"refused", s->hs_failed_refused},
               {"timeout", s->hs_failed_timeout},   {"draining", s->hs_failed_draining},
               {"store", s->handshakes_failed > known ? s->handshakes_failed - known : 0}};
  fprintf(f, "# HELP tern_relay_handshakes_failed_total Handshakes that failed, by reason: "
             "version (unsupported), unreadable (message 1 does not open: another relay key "
             "pinned, or garbage), protocol (malformed), refused (key not allowed), timeout, "
             "draining (the relay takes no new session), store (the store failed on connect).\n"
             "# TYPE tern_relay_handshakes_failed_total counter\n");
  for (size_t i = 0; i < sizeof(fails) / sizeof(fails[0]); i++)
    fprintf(f, "tern_relay_handshakes_failed_total{reason=\"%s\"} %llu\n", fails[i].reason,
            (unsigned long long)fails[i].n);
  static const uint64_t bounds[TERN_RELAY_COMMIT_BUCKETS] = TERN_RELAY_COMMIT_BOUNDS_US;
  fprintf(f, "# HELP tern_relay_store_commit_seconds Time of the store's group commits that "
             "stored, delivered, deduped or expired messages, or failed.\n"
             "# TYPE tern_relay_store_commit_seconds histogram\n");
  for (int i = 0; i < TERN_RELAY_COMMIT_BUCKETS; i++)
    fprintf(f, "tern_relay_store_commit_seconds_bucket{le=\"%g\"} %llu\n", (double)bounds[i] / 1e6,
            (unsigned long long)s->store_commit_le_us[i]);
  fprintf(f,
          "tern_relay_store_commit_seconds_bucket{le=\"+Inf\"} %llu\n"
          "tern_relay_store_commit_seconds_sum %.6f\n"
          "tern_relay_store_commit_seconds_count %llu\n",
          (unsigned long long)s->store_commits, (double)s->store_commit_us / 1e6,
          (unsigned long long)s->store_commits);
}

/* spec/push.md, "Metrics". */
static void format_push(FILE *f, ternd_push *p) {
  ternd_push_stats ps;
  ternd_push_get_stats(p, &ps);
  metric(f, "counter", "tern_push_sent_total", "Push POSTs the backend took (2xx).", ps.sent);
  metric(f, "counter", "tern_push_failed_total",
         "Push POSTs that failed (no answer, 5xx, 429, or another 4xx).", ps.failed);
  metric(f, "counter", "tern_push_retried_total", "Failed push POSTs scheduled again.", ps.retried);
  metric(f, "counter", "tern_push_coalesced_total",
         "Push events folded into a POST already due for the device.", ps.coalesced);
  metric(f, "gauge", "tern_push_pending", "Devices with a push POST due, in flight or retrying.",
         ps.pending);
  fprintf(f, "# HELP tern_push_dropped_total Push notifications dropped: the backend refused "
             "(4xx), the pending table was full, or the POSTs failed for an hour.\n"
             "# TYPE tern_push_dropped_total counter\n"
             "tern_push_dropped_total{reason=\"4xx\"} %llu\n"
             "tern_push_dropped_total{reason=\"full\"} %llu\n"
             "tern_push_dropped_total{reason=\"expired\"} %llu\n",
          (unsigned long long)ps.dropped_4xx, (unsigned long long)ps.dropped_full,
          (unsigned long long)ps.dropped_expired);
}

void ternd_metrics_set_push(ternd_metrics *m, ternd_push *p) {
  pthread_mutex_lock(&m->mu);
  m->push = p;
  pthread_mutex_unlock(&m->mu);
}

static void format_process(FILE *f, const ternd_metrics *m) {
  struct rusage ru;
  if (getrusage(RUSAGE_SELF, &ru) == 0)
    fprintf(f,
            "# HELP process_cpu_seconds_total User and system CPU time spent, seconds.\n"
            "# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total %.6f\n",
            (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
                (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6);
  unsigned long long vm = 0, rss = 0;
  FILE *sf = fopen("/proc/self/statm", "r");
  if (sf) {
    if (fscanf(sf, "%llu %llu", &vm, &rss) == 2) {
      unsigned long long page = (unsigned long long)sysconf(_SC_PAGESIZE);
      metric(f, "gauge", "process_resident_memory_bytes", "Resident memory size, bytes.", rss * page);
      metric(f, "gauge", "process_virtual_memory_bytes", "Virtual memory size, bytes.", vm * page);
    }
    fclose(sf);
  }
  DIR *d = opendir("/proc/self/fd");
  if (d) {
    uint64_t n = 0;
    for (struct dirent *e; (e = readdir(d));)
      if (e->d_name[0] != '.') n++;
    closedir(d);
    metric(f, "gauge", "process_open_fds", "Open file descriptors.", n > 0 ? n - 1 : 0); /* not the DIR's */
  }
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
    metric(f, "gauge", "process_max_fds", "Maximum open file descriptors.", rl.rlim_cur);
  if (m->start_time > 0)
    fprintf(f,
            "# HELP process_start_time_seconds Start time of the process, Unix seconds.\n"
            "# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds %.2f\n",
            m->start_time);
  fprintf(f,
          "# HELP ternd_build_info The versions of ternd and of the libtern it runs on.\n"
          "# TYPE ternd_build_info gauge\nternd_build_info{version=\"%s\",libtern=\"%s\"} 1\n",
          TERN_VERSION_STRING, tern_version());
  metric(f, "counter", "ternd_metrics_scrapes_total", "Requests for /metrics served.", m->scrapes);
  metric(f, "counter", "ternd_metrics_publishes_skipped_total",
         "Snapshots the relay's loop did not publish because a scrape was copying the last one "
         "(it publishes again within 10 ms).",
         atomic_load_explicit(&m->skipped, memory_order_relaxed));
}

static enum MHD_Result reply(struct MHD_Connection *c, unsigned code, const char *type, char *body,
                             size_t len) {
  struct MHD_Response *r = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
  if (!r) {
    free(body);
    return MHD_NO;
  }
  (void)MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
  enum MHD_Result rc = MHD_queue_response(c, code, r);
  MHD_destroy_response(r);
  return rc;
}

static enum MHD_Result reply_text(struct MHD_Connection *c, unsigned code, const char *text) {
  return reply(c, code, "text/plain; charset=utf-8", strdup(text), strlen(text));
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **req_cls) {
  (void)version;
  (void)upload;
  (void)upload_size;
  (void)req_cls;
  ternd_metrics *m = cls;
  if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
    return reply_text(c, MHD_HTTP_METHOD_NOT_ALLOWED, "GET or HEAD only\n");
  if (strcmp(url, "/metrics") != 0)
    return reply_text(c, MHD_HTTP_NOT_FOUND, "ternd serves /metrics only\n");
  tern_relay_stats s;
  pthread_mutex_lock(&m->mu);
  s = m->snap;
  ternd_push *push = m->push;
  pthread_mutex_unlock(&m->mu);
  m->scrapes++;
  char *body = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&body, &len);
  if (!f) return MHD_NO;
  format_relay(f, &s, m);
  if (push) format_push(f, push);
  format_process(f, m);
  if (fclose(f) != 0) {
    free(body);
    return MHD_NO;
  }
  return reply(c, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", body, len);
}

int ternd_metrics_start(ternd_metrics **out, const char *ip, uint16_t port, uint32_t max_peers,
                        char *err, size_t cap) {
  *out = NULL;
  struct sockaddr_storage ss;
  memset(&ss, 0, sizeof(ss));
  unsigned flags = MHD_USE_AUTO_INTERNAL_THREAD;
  struct sockaddr_in *v4 = (struct sockaddr_in *)&ss;
  struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&ss;
  if (inet_pton(AF_INET, ip, &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(port);
  } else if (inet_pton(AF_INET6, ip, &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(port);
    flags |= MHD_USE_IPv6;
  } else {
    snprintf(err, cap, "'%s' is not an IP address", ip);
    return -1;
  }
  ternd_metrics *m = calloc(1, sizeof(*m));
  if (!m) {
    snprintf(err, cap, "out of memory");
    return -1;
  }
  pthread_mutex_init(&m->mu, NULL);
  m->max_peers = max_peers;
  m->start_time = process_start_time();
  m->daemon = MHD_start_daemon(flags, port, NULL, NULL, on_request, m, MHD_OPTION_SOCK_ADDR,
                               (const struct sockaddr *)&ss, MHD_OPTION_CONNECTION_LIMIT,
                               (unsigned)32, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)10,
                               MHD_OPTION_END);
  if (!m->daemon) {
    snprintf(err, cap, "cannot serve HTTP on that address (in use, or not this machine's)");
    pthread_mutex_destroy(&m->mu);
    free(m);
    return -1;
  }
  const union MHD_DaemonInfo *info = MHD_get_daemon_info(m->daemon, MHD_DAEMON_INFO_BIND_PORT);
  m->port = info ? info->port : port;
  *out = m;
  return 0;
}

uint16_t ternd_metrics_port(const ternd_metrics *m) { return m->port; }

int ternd_metrics_publish(ternd_metrics *m, const tern_relay_stats *st) {
  if (pthread_mutex_trylock(&m->mu) != 0) {
    atomic_fetch_add_explicit(&m->skipped, 1, memory_order_relaxed);
    return 1;
  }
  m->snap = *st;
  pthread_mutex_unlock(&m->mu);
  return 0;
}

void ternd_metrics_stop(ternd_metrics *m) {
  if (!m) return;
  MHD_stop_daemon(m->daemon);
  pthread_mutex_destroy(&m->mu);
  free(m);
}
