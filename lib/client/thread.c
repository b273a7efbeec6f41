/*
 * Thread mode (tern.h, tern_client_start): the client runs on a thread of
 * its own, which services it and hands every event to the app's callback;
 * tern_client_stop() ends the thread and joins it. The poll mode stays: a
 * client is in one mode at a time. Events are copied for apps that hand
 * them to another thread or queue (tern_event_dup).
 */
#include "client/client_impl.h"

/* How long the thread waits in one service call at most: the bound on how
 * late it notices a stop that found no wake-up (the stop also wakes it). */
#define THREAD_WAIT_MS 1000

static void *run(void *arg) {
  tern_client *c = arg;
  while (!atomic_load(&c->th_stop)) {
    int rc = tern_client_service(c, THREAD_WAIT_MS);
    if (rc < 0 && rc != TERN_ENOMEM) {
      pthread_mutex_lock(&c->mu);
      cl_log(c, 0, "the client thread's service failed: %s", tern_strerror(rc));
      pthread_mutex_unlock(&c->mu);
      usleep(100 * 1000); /* not a busy loop on a broken socket */
    }
    tern_event ev;
    while (!atomic_load(&c->th_stop) && tern_client_next_event(c, &ev) == 1) c->th_fn(c->th_ctx, &ev);
  }
  return NULL;
}

int tern_client_start(tern_client *c, tern_event_fn on_event, void *ctx) {
  pthread_mutex_lock(&c->mu);
  int rc = 0;
  if (c->th_on) {
    rc = TERN_EINVAL;
  } else {
    c->th_fn = on_event;
    c->th_ctx = ctx;
    atomic_store(&c->th_stop, 0);
    if (pthread_create(&c->th, NULL, run, c) != 0) rc = TERN_ERESOURCE;
    else c->th_on = 1;
  }
  pthread_mutex_unlock(&c->mu);
  return rc;
}

int tern__cl_thread_stop(tern_client *c) {
  pthread_mutex_lock(&c->mu);
  int on = c->th_on, self = on && pthread_equal(pthread_self(), c->th);
  pthread_mutex_unlock(&c->mu);
  if (!on || self) return TERN_EINVAL;
  atomic_store(&c->th_stop, 1);
  tern__wake_signal(&c->wake); /* out of its wait at once */
  pthread_join(c->th, NULL);
  pthread_mutex_lock(&c->mu);
  c->th_on = 0;
  pthread_mutex_unlock(&c->mu);
  return 0;
}

int tern_client_stop(tern_client *c) { return tern__cl_thread_stop(c); }

int tern__cl_thread_other(tern_client *c) {
  return c->th_on && !pthread_equal(pthread_self(), c->th);
}

int tern_event_dup(const tern_event *ev, tern_event **out) {
  *out = NULL;
  size_t ulen = ev->user ? strlen(ev->user) : 0;
  tern_event *e = malloc(sizeof(*e) + ulen + 1 + ev->body_len);
  if (!e) return TERN_ENOMEM;
  *e = *ev;
  char *user = (char *)(e + 1);
  memcpy(user, ev->user ? ev->user : "", ulen + 1);
  e->user = user;
  uint8_t *body = (uint8_t *)user + ulen + 1;
  if (ev->body_len) memcpy(body, ev->body, ev->body_len);
  e->body = ev->body_len ? body : NULL;
  *out = e;
  return 0;
}

void tern_event_free(tern_event *ev) { free(ev); }
