/*
 * When the copies of a small MSG or DELIVER leave (spec/wire.md §2,
 * "Copies"). Shared by the client core (MSG) and the relay core (DELIVER).
 * Sans-I/O: the caller passes the session's RTT and keeps the times.
 *
 * d is a fifth of the RTT, at least min_ms and at most max_ms (max_ms while
 * the RTT is unknown). Copy 1 leaves d / 2 after the reliable transmission
 * (at least 1 ms, so in a datagram of its own): it saves a message whose
 * transmission a random loss took, and one that arrived but waits in ENet's
 * channel behind a lost one (most of the messages that need a copy), at a
 * tenth of the RTT. Copy k >= 2 leaves (2k - 1) d after the transmission
 * (copy 2: 3 d, 60 ms at RTT 100 ms), after most bursts of losses that
 * took the transmission and copy 1 (bench/NOTES.md, round 5: copy 1 at
 * 1 ms lost too often with the transmission, copy 2 at 2 d was outlasted
 * too often). A session gets copy k only if (2k - 1) d is less than its
 * RTT: no copy leaves one RTT or more after the transmission (by then
 * ENet's retransmission has done its work), and on a fast link, loopback
 * or a LAN, where copies only cost, there are none below 6 ms and one
 * below 16.
 */
#ifndef TERN_COPIES_H
#define TERN_COPIES_H

#include <stdint.h>

/* d for a session whose RTT is rtt_ms (0: unknown). */
uint32_t tern__copy_delay(uint32_t rtt_ms, uint32_t min_ms, uint32_t max_ms);

/* How many of `count` copies a transmission gets: those with (2k - 1) d
 * below the RTT (all of them while the RTT is unknown). */
uint32_t tern__copies_before(uint32_t rtt_ms, uint32_t d_ms, uint32_t count);

/* When copy k (from 1) leaves, in ms after the transmission, for delay d. */
uint64_t tern__copy_at(uint32_t d_ms, uint32_t k);

#endif
