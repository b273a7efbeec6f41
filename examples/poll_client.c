/*
 * examples/poll_client.c: a tern client in the app's own poll() loop.
 *
 *   poll_client HOST PORT RELAY_KEY_HEX KEY_FILE TO [MESSAGE]
 *
 * Connects to the relay at HOST:PORT (pinning its public key) as the device
 * in KEY_FILE (tern-keygen makes one), sends MESSAGE to user TO, or without
 * MESSAGE each line of standard input, and prints every event. Exits 0 once
 * the input has ended and the relay has stored everything sent; 1 if a
 * message failed or the relay refused this device; 2 on bad usage. The
 * client retries by itself while the relay cannot be reached: Ctrl-C ends it.
 */
#define _POSIX_C_SOURCE 200809L
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <tern/tern.h>

static int print_event(const tern_event *ev) { /* returns 1 if it is fatal */
  switch (ev->type) {
    case TERN_EV_CONNECTED: printf("connected as %s\n", ev->user); break;
    case TERN_EV_DISCONNECTED:
      printf("disconnected: %s; next try in %llu ms\n", tern_errname(ev->error),
             (unsigned long long)ev->retry_ms);
      return ev->error == TERN_ERELAYKEY || ev->error == TERN_EUNKNOWNKEY;
    case TERN_EV_MESSAGE:
      printf("message from %s: %.*s\n", ev->user, (int)ev->body_len, (const char *)ev->body);
      break;
    case TERN_EV_SENT: printf("sent %llu to %s\n", (unsigned long long)ev->cmid, ev->user); break;
    case TERN_EV_DELIVERED: printf("delivered %llu\n", (unsigned long long)ev->cmid); break;
    case TERN_EV_FAILED:
      printf("failed %llu: %s\n", (unsigned long long)ev->cmid, tern_strerror(ev->error));
      return 1;
    default: break; /* keepalive changes and retried errors: nothing to do */
  }
  return 0;
}

int main(int argc, char **argv) {
  if (argc != 6 && argc != 7) {
    fprintf(stderr, "usage: poll_client HOST PORT RELAY_KEY_HEX KEY_FILE TO [MESSAGE]\n");
    return 2;
  }
  tern_client_config cfg;
  tern_client_config_default(&cfg);
  cfg.relay_host = argv[1];
  cfg.relay_port = (uint16_t)atoi(argv[2]);
  if (tern_key_from_hex(argv[3], cfg.relay_public_key) != 0 ||
      tern_keypair_load(argv[4], &cfg.keypair) != 0) {
    fprintf(stderr, "poll_client: bad relay key or key file\n");
    return 2;
  }
  const char *to = argv[5];
  tern_client *c;
  int rc = tern_client_new(&c, &cfg);
  if (rc == 0) rc = tern_client_connect(c);
  if (rc != 0) {
    fprintf(stderr, "poll_client: %s\n", tern_strerror(rc));
    return 1;
  }
  int input_open = argc == 6, connected = 0, status = 0;
  if (argc == 7 && (rc = tern_client_send(c, to, argv[6], strlen(argv[6]), NULL)) != 0) {
    fprintf(stderr, "poll_client: send: %s\n", tern_strerror(rc));
    return 1;
  }
  /* Unbuffered, so that no line waits in stdio where poll() cannot see it. */
  setvbuf(stdin, NULL, _IONBF, 0);
  char *line = NULL;
  size_t cap = 0;

  while (input_open || !connected || tern_client_outbox_size(c) > 0) {
    /* stdin first, then what the client waits on: one descriptor with epoll
     * or kqueue, each of its sockets with the poll() backend (a few). */
    struct pollfd pf[64] = {{.fd = input_open ? STDIN_FILENO : -1, .events = POLLIN}};
    int nfd = tern_client_pollfds(c, pf + 1, 63);
    if (nfd < 0 || nfd > 63) {
      fprintf(stderr, "poll_client: %d descriptors to wait on\n", nfd);
      status = 1;
      break;
    }
    poll(pf, (nfds_t)(1 + nfd), tern_client_timeout_ms(c)); /* -1: nothing due without input */
    if (pf[0].revents) {
      ssize_t n = getline(&line, &cap, stdin);
      if (n < 0) input_open = 0;
      if (n > 0 && line[n - 1] == '\n') n--;
      if (n > 0 && tern_client_send(c, to, line, (size_t)n, NULL) != 0)
        fprintf(stderr, "poll_client: cannot send that line\n");
    }
    if (tern_client_service(c, 0) == TERN_EIO) { /* TERN_ENOMEM: call again */
      status = 1;
      break;
    }
    tern_event ev;
    while (tern_client_next_event(c, &ev) == 1) {
      connected |= ev.type == TERN_EV_CONNECTED;
      if (print_event(&ev)) status = 1;
    }
    if (status) break;
  }
  free(line);
  tern_client_free(c);
  return status;
}
