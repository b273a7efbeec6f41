/*
 * When the copies of a small MSG or DELIVER leave (spec/wire.md §2,
 * "Copies"). Shared by the client core (MSG) and the relay core (DELIVER).
 * Sans-I/O: the caller passes the session's RTT and keeps the times.
 *
 * Copy k (from 1) leaves (2k - 1) d after the reliable transmission, where
 * d is a fifth of the RTT, at least min_ms and at most max_ms (max_ms while
 * the RTT is unknown). A copy that would leave one RTT or more after the
 * transmission is not sent: by then ENet's retransmission (about one RTT)
 * has done its work, and on a fast link (loopback, a LAN) copies only cost.
 */
#ifndef TERN_COPIES_H
#define TERN_COPIES_H

#include <stdint.h>

/* d for a session whose RTT is rtt_ms (0: unknown). */
uint32_t tern__copy_delay(uint32_t rtt_ms, uint32_t min_ms, uint32_t max_ms);

/* How many of `count` copies spaced as above leave less than one RTT after
 * the transmission (all of them while the RTT is unknown). */
uint32_t tern__copies_before(uint32_t rtt_ms, uint32_t d_ms, uint32_t count);

#endif
