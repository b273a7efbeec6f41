/*
 * tern's ENet platform layer (enet_platform.c): the functions of ENet's
 * unix.c, defined by libtern so that ENet's protocol code reaches tern's
 * virtual sockets (dispatch.h). What ENet needs from the rest of tern:
 */
#ifndef TERN_ENET_PLATFORM_H
#define TERN_ENET_PLATFORM_H

#include <stddef.h>
#include <stdint.h>

/* 1 if the datagram is an ENet CONNECT (the first datagram of a new
 * connection), judged from its header and first command. */
int tern__enet_is_connect(const uint8_t *data, size_t len);

#endif
