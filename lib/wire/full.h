/*
 * The FULL datagram (spec/wire.md §10): what a relay with no free
 * connection slot answers to an ENet CONNECT, outside ENet, so that a
 * client is told to come back later instead of hearing nothing. It is not
 * authenticated (no session exists yet): a client takes it as a hint, only
 * while its own connect to that address is pending.
 */
#ifndef TERN_FULL_H
#define TERN_FULL_H

#include <stddef.h>
#include <stdint.h>

#define TERN__FULL_BYTES 10
#define TERN__FULL_RETRY_MAX_MS 600000u /* a client waits at most this long for a hint */

/* Writes a FULL asking to retry after retry_ms into out[TERN__FULL_BYTES]. */
void tern__full_write(uint8_t out[TERN__FULL_BYTES], uint32_t retry_ms);

/* 1 with *retry_ms (capped at TERN__FULL_RETRY_MAX_MS) if data is a FULL
 * datagram of a version this code reads, else 0. */
int tern__full_parse(const uint8_t *data, size_t len, uint32_t *retry_ms);

#endif
