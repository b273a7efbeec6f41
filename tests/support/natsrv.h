/* nats-server processes for the cluster tests: a JetStream server on a
 * free loopback port with its store in a temporary directory, started and
 * killed by the test. A test calling nats_up() without nats-server
 * installed is skipped, saying so. */
#ifndef TERN_TEST_NATSRV_H
#define TERN_TEST_NATSRV_H

#include <sys/types.h>

typedef struct natsrv {
  pid_t pid;
  int port;
  char dir[64];   /* its store (JetStream) */
  char url[128];  /* nats://127.0.0.1:PORT */
} natsrv;

/* A free TCP port on 127.0.0.1. */
int nats_free_port(void);
/* Starts nats-server on 127.0.0.1:port (JetStream on if js, its store in
 * dir) and waits until it takes connections. */
pid_t nats_start(int port, const char *dir, int js);
/* SIGKILLs it and reaps it. */
void nats_kill(pid_t pid);
/* A JetStream server on a free port with a new directory. */
void nats_up(natsrv *sv);
/* Kills it and removes its directory. */
void nats_down(natsrv *sv);

#endif
