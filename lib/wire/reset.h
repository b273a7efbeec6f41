/*
 * The RESET datagram (spec/wire.md §14): what a relay that restarted sends,
 * outside ENet, to each address whose session it had recorded, so that an
 * idle client learns at once that its session is gone. It carries the
 * session's reset token: 16 bytes the relay derives from its static key and
 * the session's HELLO (device key, timestamp), and gave the client inside
 * the sealed session (frame RESET_TOKEN, §6.15). Only the relay and that
 * client know it, and each session has its own, so a forged or replayed
 * RESET does not match a live session's token and is ignored.
 */
#ifndef TERN_RESET_H
#define TERN_RESET_H

#include <stddef.h>
#include <stdint.h>

#define TERN__RESET_TOKEN_BYTES 16
#define TERN__RESET_BYTES (5 + TERN__RESET_TOKEN_BYTES)

/* The token of the session opened by the HELLO of device key `dev` with
 * timestamp `time_us`, for the relay whose static private key is relay_sk:
 * BLAKE2b-128 keyed with BLAKE2b-256(key = relay_sk, "tern reset v1"),
 * of dev || time_us (8 bytes, big-endian). */
void tern__reset_token(const uint8_t relay_sk[32], const uint8_t dev[32], uint64_t time_us,
                       uint8_t out[TERN__RESET_TOKEN_BYTES]);

/* Writes a RESET carrying token into out[TERN__RESET_BYTES]. */
void tern__reset_write(uint8_t out[TERN__RESET_BYTES], const uint8_t token[TERN__RESET_TOKEN_BYTES]);

/* 1 with the token copied out if data is a RESET of a version this code
 * reads, else 0. */
int tern__reset_parse(const uint8_t *data, size_t len, uint8_t token[TERN__RESET_TOKEN_BYTES]);

#endif
