/*
 * enet_idle: an idle raw-ENet client, for bench/keepalive.sh.
 *
 *   enet_idle --relay IP:PORT [--duration S]
 *
 * Connects with ENet's default settings (a ping every 500 ms when nothing
 * else is received, from both sides) and then sends nothing of its own for
 * S seconds (default 600): what an app on raw ENet costs an idle phone.
 * Prints one line when connected and one when done.
 */
#include <enet/enet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
  const char *relay = NULL;
  double duration = 600;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--relay") && i + 1 < argc) relay = argv[++i];
    else if (!strcmp(argv[i], "--duration") && i + 1 < argc) duration = atof(argv[++i]);
    else {
      fprintf(stderr, "usage: enet_idle --relay IP:PORT [--duration S]\n");
      return 2;
    }
  }
  char host[64];
  const char *colon = relay ? strrchr(relay, ':') : NULL;
  if (!colon || (size_t)(colon - relay) >= sizeof(host) || duration <= 0) {
    fprintf(stderr, "enet_idle: --relay IP:PORT required, --duration > 0\n");
    return 2;
  }
  memcpy(host, relay, (size_t)(colon - relay));
  host[colon - relay] = 0;
  if (enet_initialize() != 0) return 1;
  ENetHost *h = enet_host_create(NULL, 1, 8, 0, 0);
  ENetAddress a;
  if (!h || enet_address_set_host_ip(&a, host) != 0) {
    fprintf(stderr, "enet_idle: cannot create a host or parse %s\n", host);
    return 1;
  }
  a.port = (enet_uint16)atoi(colon + 1);
  ENetPeer *p = enet_host_connect(h, &a, 8, 0);
  double start = now_s(), connected = 0;
  ENetEvent e;
  while (now_s() - start < 10 + duration && (connected == 0 || now_s() - connected < duration)) {
    if (enet_host_service(h, &e, 100) <= 0) continue;
    if (e.type == ENET_EVENT_TYPE_CONNECT) {
      connected = now_s();
      printf("enet_idle: connected\n");
      fflush(stdout);
    } else if (e.type == ENET_EVENT_TYPE_RECEIVE) {
      enet_packet_destroy(e.packet);
    } else if (e.type == ENET_EVENT_TYPE_DISCONNECT) {
      fprintf(stderr, "enet_idle: disconnected\n");
      return 1;
    }
  }
  if (!connected) {
    fprintf(stderr, "enet_idle: could not connect to %s\n", relay);
    return 1;
  }
  enet_peer_disconnect_now(p, 0);
  enet_host_destroy(h);
  printf("enet_idle: done\n");
  return 0;
}
