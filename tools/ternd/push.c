/* ternd's push notifier: the table of devices, its thread, libcurl. */
#include "push.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tern/tern.h"

/* One device the backend is to hear about. */
typedef struct entry {
  uint8_t dev[32];
  char user[TERN_USER_MAX + 1], sender[TERN_USER_MAX + 1];
  uint64_t waiting;
  int pending;            /* something to tell: a POST is due at due_ms */
  int in_flight;          /* a POST is on its way (easy) */
  int cancelled;          /* the device connected while it was */
  uint64_t due_ms;        /* the next POST, not before */
  uint64_t last_post_ms;  /* the last POST the backend took (0: none) */
  uint64_t first_fail_ms; /* the first failure since the last success (0: none) */
  unsigned attempt;       /* failures in a row */
  CURL *easy;
  char *body;             /* the POST's body while in flight */
  struct curl_slist *hdrs;
} entry;

struct ternd_push {
  ternd_push_config cfg;
  char *url, *secret;
  pthread_t thread;
  pthread_mutex_t mu;
  int stop;
  CURLM *multi;
  entry *e;               /* the table: e[0..n) */
  size_t n, cap;
  ternd_push_stats st;
  uint64_t full_log_ms, full_unlogged;   /* "table full" lines: one a minute */
  uint64_t fail_log_ms, fail_unlogged;   /* failure lines: one a minute */
  unsigned rng;
};

void ternd_push_config_default(ternd_push_config *cfg) {
  memset(cfg, 0, sizeof(*cfg));
  cfg->interval_s = 30;
  cfg->max_pending = 10000;
  cfg->timeout_ms = 10000;
  cfg->backoff_cap_s = 300;
  cfg->give_up_s = 3600;
}

static uint64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void say(ternd_push *p, int level, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void say(ternd_push *p, int level, const char *fmt, ...) {
  if (!p->cfg.log) return;
  char line[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof(line), fmt, ap);
  va_end(ap);
  p->cfg.log(p->cfg.log_ctx, level, line);
}

/* The device key as the log shows it: its first 8 hex digits. */
static void key_prefix(const uint8_t dev[32], char out[9]) {
  for (int i = 0; i < 4; i++) snprintf(out + 2 * i, 3, "%02x", dev[i]);
}

static entry *find(ternd_push *p, const uint8_t dev[32]) {
  for (size_t i = 0; i < p->n; i++)
    if (memcmp(p->e[i].dev, dev, 32) == 0) return &p->e[i];
  return NULL;
}

static void release_request(entry *e) {
  curl_slist_free_all(e->hdrs);
  free(e->body);
  e->hdrs = NULL;
  e->body = NULL;
  e->easy = NULL;
  e->in_flight = 0;
}

/* Removes e from the table (its request, if any, is already finished). */
static void drop(ternd_push *p, entry *e) {
  size_t i = (size_t)(e - p->e);
  p->e[i] = p->e[--p->n];
}

static void count_pending(ternd_push *p) {
  uint64_t k = 0;
  for (size_t i = 0; i < p->n; i++) k += p->e[i].pending || p->e[i].in_flight;
  p->st.pending = k;
}

/* ---- the relay's side ------------------------------------------------------ */

void ternd_push_event(void *ctx, int event, const char *user, const uint8_t dev[32],
                      const char *sender, uint64_t waiting) {
  ternd_push *p = ctx;
  pthread_mutex_lock(&p->mu);
  entry *e = find(p, dev);
  if (event == TERN_PUSH_CONNECTED) {
    /* Nothing to tell it now. A POST the backend took keeps the entry
     * until its interval is over: the next may not come sooner. */
    if (e && e->in_flight) {
      e->cancelled = 1;
      e->pending = 0;
    } else if (e && e->last_post_ms) {
      e->pending = 0;
      e->attempt = 0;
      e->first_fail_ms = 0;
    } else if (e) {
      drop(p, e);
    }
  } else if (event == TERN_PUSH_WAITING) {
    uint64_t now = mono_ms();
    if (!e) {
      size_t held = 0;
      for (size_t i = 0; i < p->n; i++) held += p->e[i].pending || p->e[i].in_flight;
      if (held >= p->cfg.max_pending || p->n >= 4ull * p->cfg.max_pending) {
        p->st.dropped_full++;
        p->full_unlogged++;
        if (now >= p->full_log_ms + 60000) {
          say(p, 1, "push: %llu notification(s) not queued: %u devices are pending already (--push-max-pending)",
              (unsigned long long)p->full_unlogged, p->cfg.max_pending);
          p->full_log_ms = now;
          p->full_unlogged = 0;
        }
        pthread_mutex_unlock(&p->mu);
        return;
      }
      if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 64;
        entry *ne = realloc(p->e, cap * sizeof(*ne));
        if (!ne) {
          p->st.dropped_full++;
          pthread_mutex_unlock(&p->mu);
          return;
        }
        p->e = ne;
        p->cap = cap;
      }
      e = &p->e[p->n++];
      memset(e, 0, sizeof(*e));
      memcpy(e->dev, dev, 32);
      e->due_ms = now;
    } else if (e->pending || e->in_flight) {
      p->st.coalesced++;
    }
    if (!e->pending && !e->attempt) {
      /* A new POST: one interval after the last the backend took. */
      uint64_t next = e->last_post_ms ? e->last_post_ms + p->cfg.interval_s * 1000ull : now;
      e->due_ms = next > now ? next : now;
    }
    e->cancelled = 0;
    e->pending = 1;
    e->waiting = waiting;
    snprintf(e->user, sizeof(e->user), "%s", user);
    snprintf(e->sender, sizeof(e->sender), "%s", sender);
  }
  count_pending(p);
  pthread_mutex_unlock(&p->mu);
  curl_multi_wakeup(p->multi);
}

/* ---- the notifier's thread ------------------------------------------------- */

/* JSON string contents: quotes, backslashes and control characters escaped. */
static void json_str(char *out, size_t cap, const char *s) {
  size_t k = 0;
  for (; *s && k + 7 < cap; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\') out[k++] = '\\', out[k++] = (char)c;
    else if (c < 0x20) k += (size_t)snprintf(out + k, cap - k, "\\u%04x", c);
    else out[k++] = (char)c;
  }
  out[k] = 0;
}

static size_t discard(char *ptr, size_t size, size_t n, void *ctx) {
  (void)ptr;
  (void)ctx;
  return size * n;
}

/* Starts e's POST with what it says now. Called with the lock held. */
static int start_post(ternd_push *p, entry *e) {
  char user[6 * TERN_USER_MAX + 1], sender[6 * TERN_USER_MAX + 1], hex[65];
  json_str(user, sizeof(user), e->user);
  json_str(sender, sizeof(sender), e->sender);
  for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", e->dev[i]);
  size_t cap = strlen(user) + strlen(sender) + 160;
  e->body = malloc(cap);
  e->easy = curl_easy_init();
  if (!e->body || !e->easy) goto fail;
  snprintf(e->body, cap, "{\"user\":\"%s\",\"device\":\"%s\",\"sender\":\"%s\",\"waiting\":%llu}", user,
           hex, sender, (unsigned long long)e->waiting);
  e->hdrs = curl_slist_append(NULL, "Content-Type: application/json");
  if (e->hdrs && p->secret) {
    size_t n = strlen(p->secret) + 32;
    char *auth = malloc(n);
    if (auth) {
      snprintf(auth, n, "Authorization: Bearer %s", p->secret);
      struct curl_slist *h = curl_slist_append(e->hdrs, auth);
      if (h) e->hdrs = h;
      free(auth);
    }
  }
  if (!e->hdrs) goto fail;
  curl_easy_setopt(e->easy, CURLOPT_URL, p->url);
  curl_easy_setopt(e->easy, CURLOPT_POSTFIELDS, e->body);
  curl_easy_setopt(e->easy, CURLOPT_HTTPHEADER, e->hdrs);
  curl_easy_setopt(e->easy, CURLOPT_TIMEOUT_MS, (long)p->cfg.timeout_ms);
  curl_easy_setopt(e->easy, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e->easy, CURLOPT_WRITEFUNCTION, discard);
  curl_easy_setopt(e->easy, CURLOPT_PROTOCOLS_STR, "http,https");
  /* Found again by its key when done: the table's entries move. */
  uint8_t *key = malloc(32);
  if (!key) goto fail;
  memcpy(key, e->dev, 32);
  curl_easy_setopt(e->easy, CURLOPT_PRIVATE, key);
  if (curl_multi_add_handle(p->multi, e->easy) != CURLM_OK) {
    free(key);
    goto fail;
  }
  e->in_flight = 1;
  e->pending = 0;
  return 0;
fail:
  if (e->easy) curl_easy_cleanup(e->easy);
  release_request(e);
  return -1;
}

/* A failed attempt: again after 1, 2, 4 ... s (at most backoff_cap_s,
 * +-20 %, or the backend's Retry-After within the cap), until give_up_s. */
static void failed(ternd_push *p, entry *e, uint64_t now, long retry_after_s, const char *why) {
  p->st.failed++;
  if (!e->first_fail_ms) e->first_fail_ms = now;
  p->fail_unlogged++;
  char kp[9];
  key_prefix(e->dev, kp);
  if (now >= p->fail_log_ms + 60000) {
    say(p, 1, "push: POST for %s device %s... failed (%s); %llu failure(s) in the last minute; retrying",
        e->user, kp, why, (unsigned long long)p->fail_unlogged);
    p->fail_log_ms = now;
    p->fail_unlogged = 0;
  }
  if (e->cancelled) {
    drop(p, e);
    return;
  }
  if (now - e->first_fail_ms >= p->cfg.give_up_s * 1000ull) {
    p->st.dropped_expired++;
    say(p, 1, "push: giving up on %s device %s...: its POSTs failed for %u s", e->user, kp,
        p->cfg.give_up_s);
    drop(p, e);
    return;
  }
  uint64_t wait = 1000ull << (e->attempt < 20 ? e->attempt : 20);
  uint64_t cap = p->cfg.backoff_cap_s * 1000ull;
  if (wait > cap) wait = cap;
  p->rng = p->rng * 1103515245u + 12345u;
  wait = wait * (80 + (p->rng >> 16) % 41) / 100;
  if (retry_after_s > 0) {
    uint64_t ra = (uint64_t)retry_after_s * 1000ull;
    wait = ra < cap ? ra : cap;
  }
  e->attempt++;
  e->pending = 1; /* with the count it has when it goes */
  e->due_ms = now + wait;
  p->st.retried++;
}

static void finished(ternd_push *p, CURLMsg *m, uint64_t now) {
  /* m belongs to the handle: everything is read from it before cleanup. */
  CURL *easy = m->easy_handle;
  CURLcode result = m->data.result;
  char *key = NULL;
  curl_easy_getinfo(easy, CURLINFO_PRIVATE, &key);
  entry *e = key ? find(p, (const uint8_t *)key) : NULL;
  free(key);
  long code = 0;
  curl_off_t retry_after = 0;
  curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &code);
  curl_easy_getinfo(easy, CURLINFO_RETRY_AFTER, &retry_after);
  curl_multi_remove_handle(p->multi, easy);
  curl_easy_cleanup(easy);
  if (!e) return;
  release_request(e);
  char why[96];
  if (result != CURLE_OK) {
    snprintf(why, sizeof(why), "%s", curl_easy_strerror(result));
    failed(p, e, now, 0, why);
  } else if (code >= 200 && code < 300) {
    p->st.sent++;
    e->last_post_ms = now;
    e->first_fail_ms = 0;
    e->attempt = 0;
    if (e->cancelled) drop(p, e);
    else if (e->pending) e->due_ms = now + p->cfg.interval_s * 1000ull;
  } else if (code >= 500 || code == 429) {
    snprintf(why, sizeof(why), "HTTP %ld", code);
    failed(p, e, now, (long)retry_after, why);
  } else {
    p->st.failed++;
    p->st.dropped_4xx++;
    char kp[9];
    key_prefix(e->dev, kp);
    say(p, 1, "push: the backend refused the notification for %s device %s... (HTTP %ld); dropped",
        e->user, kp, code);
    drop(p, e);
  }
}

static void *run(void *arg) {
  ternd_push *p = arg;
  pthread_mutex_lock(&p->mu);
  while (!p->stop) {
    uint64_t now = mono_ms(), next = now + 60000;
    for (size_t i = 0; i < p->n;) {
      entry *e = &p->e[i];
      if (e->pending && !e->in_flight && e->due_ms <= now && start_post(p, e) != 0) {
        e->due_ms = now + 1000; /* no memory now: a second later */
      }
      /* Sent, nothing new, interval over: the device's slot is free. */
      if (!e->pending && !e->in_flight && e->last_post_ms &&
          now >= e->last_post_ms + p->cfg.interval_s * 1000ull) {
        drop(p, e);
        continue;
      }
      if (e->pending && !e->in_flight && e->due_ms < next) next = e->due_ms;
      if (!e->pending && !e->in_flight && e->last_post_ms) {
        uint64_t free_at = e->last_post_ms + p->cfg.interval_s * 1000ull;
        if (free_at < next) next = free_at;
      }
      i++;
    }
    count_pending(p);
    pthread_mutex_unlock(&p->mu);
    int running = 0;
    curl_multi_perform(p->multi, &running);
    long curl_ms = -1;
    curl_multi_timeout(p->multi, &curl_ms);
    uint64_t wait = next > now ? next - now : 0;
    if (curl_ms >= 0 && (uint64_t)curl_ms < wait) wait = (uint64_t)curl_ms;
    if (wait > 1000) wait = 1000;
    curl_multi_poll(p->multi, NULL, 0, (int)wait, NULL);
    curl_multi_perform(p->multi, &running);
    pthread_mutex_lock(&p->mu);
    CURLMsg *m;
    int left;
    now = mono_ms();
    while ((m = curl_multi_info_read(p->multi, &left)))
      if (m->msg == CURLMSG_DONE) finished(p, m, now);
  }
  pthread_mutex_unlock(&p->mu);
  return NULL;
}

int ternd_push_start(ternd_push **out, const ternd_push_config *cfg, char *err, size_t cap) {
  *out = NULL;
  if (!cfg->url || (strncmp(cfg->url, "http://", 7) != 0 && strncmp(cfg->url, "https://", 8) != 0)) {
    snprintf(err, cap, "the push URL must start with http:// or https://");
    return -1;
  }
  if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
    snprintf(err, cap, "libcurl did not initialise");
    return -1;
  }
  ternd_push *p = calloc(1, sizeof(*p));
  if (!p) {
    snprintf(err, cap, "out of memory");
    return -1;
  }
  p->cfg = *cfg;
  if (!p->cfg.interval_s) p->cfg.interval_s = 1;
  if (!p->cfg.max_pending) p->cfg.max_pending = 1;
  p->url = strdup(cfg->url);
  p->secret = cfg->secret ? strdup(cfg->secret) : NULL;
  p->multi = curl_multi_init();
  p->rng = (unsigned)mono_ms();
  pthread_mutex_init(&p->mu, NULL);
  if (!p->url || (cfg->secret && !p->secret) || !p->multi) {
    snprintf(err, cap, "out of memory");
    goto fail;
  }
  if (pthread_create(&p->thread, NULL, run, p) != 0) {
    snprintf(err, cap, "cannot start the push thread");
    goto fail;
  }
  *out = p;
  return 0;
fail:
  if (p->multi) curl_multi_cleanup(p->multi);
  pthread_mutex_destroy(&p->mu);
  free(p->url);
  free(p->secret);
  free(p);
  curl_global_cleanup();
  return -1;
}

int ternd_push_set_secret(ternd_push *p, const char *secret) {
  char *s = secret ? strdup(secret) : NULL;
  if (secret && !s) return -1;
  pthread_mutex_lock(&p->mu);
  free(p->secret);
  p->secret = s;
  pthread_mutex_unlock(&p->mu);
  return 0;
}

void ternd_push_get_stats(ternd_push *p, ternd_push_stats *st) {
  pthread_mutex_lock(&p->mu);
  *st = p->st;
  pthread_mutex_unlock(&p->mu);
}

void ternd_push_stop(ternd_push *p) {
  if (!p) return;
  pthread_mutex_lock(&p->mu);
  p->stop = 1;
  pthread_mutex_unlock(&p->mu);
  curl_multi_wakeup(p->multi);
  pthread_join(p->thread, NULL);
  for (size_t i = 0; i < p->n; i++) {
    if (p->e[i].easy) {
      char *key = NULL;
      curl_easy_getinfo(p->e[i].easy, CURLINFO_PRIVATE, &key);
      free(key);
      curl_multi_remove_handle(p->multi, p->e[i].easy);
      curl_easy_cleanup(p->e[i].easy);
    }
    release_request(&p->e[i]);
  }
  curl_multi_cleanup(p->multi);
  pthread_mutex_destroy(&p->mu);
  free(p->e);
  free(p->url);
  free(p->secret);
  free(p);
  curl_global_cleanup();
}
