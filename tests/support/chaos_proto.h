/*
 * What tests/chaos_client.c and tests/chaos_test.c agree on: the bodies the
 * client sends and the lines of its journal.
 *
 * Journal: an append-only text file per client, one line per write(2) with
 * O_APPEND. A SIGKILL cannot undo a write(2) that returned (the data is in
 * the page cache, which outlives the process), so the journal holds
 * everything the process did up to its last completed write; a last line
 * without its newline is ignored. No fsync: the test kills processes, it does
 * not cut the power.
 *
 *   B PID                  an incarnation begins
 *   W I TO K               about to call tern_client_send() for global
 *                          message number I, the K-th message to TO
 *   A I TO K CMID          tern_client_send() returned 0: accepted
 *   E I TO K ERR           tern_client_send() refused it (never expected)
 *   t                      about to call tern_client_next_event()
 *   n                      it returned 0 (nothing taken)
 *   R FROM SEQ LEN BODY    it handed over a message (the body has no spaces
 *                          at the start and no newline)
 *   S CMID / D CMID        SENT / DELIVERED taken
 *   F CMID ERR             FAILED taken
 *   C USER / X ERR         CONNECTED / DISCONNECTED taken
 *   Q                      everything sent and the outbox is empty
 *   Z                      clean exit after SIGTERM
 *
 * A killed incarnation whose journal ends in "W" may or may not have had
 * that message accepted; one that ends in "t" may have been handed a
 * message it never wrote down (tern counts a message as delivered when
 * tern_client_next_event() returns it). Every other message is accounted
 * for exactly.
 */
#ifndef TERN_TEST_CHAOS_PROTO_H
#define TERN_TEST_CHAOS_PROTO_H

#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* The body of the K-th message from FROM to TO: a readable header, then a
 * printable tail whose length and bytes follow from (from, to, k), so the
 * checker can tell a corrupted or misrouted body from the right one. */
static inline size_t chaos_body(char *buf, size_t cap, const char *from, const char *to,
                                unsigned k) {
  int n = snprintf(buf, cap, "%s>%s#%06u:", from, to, k);
  if (n < 0 || (size_t)n >= cap) return 0;
  uint32_t x = 2166136261u;
  for (const char *p = from; *p; p++) x = (x ^ (uint8_t)*p) * 16777619u;
  for (const char *p = to; *p; p++) x = (x ^ (uint8_t)*p) * 16777619u;
  x ^= k * 2654435761u;
  unsigned len = (x >> 7) % 240u;
  for (unsigned i = 0; i < len && (size_t)n + 1 < cap; i++) {
    x = x * 1103515245u + 12345u;
    buf[n++] = (char)(33 + (x >> 16) % 94); /* '!'..'~': no spaces, no newline */
  }
  buf[n] = 0;
  return (size_t)n;
}

#endif
