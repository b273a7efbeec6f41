/*
 * benchproto: the frames the bench relays and clients exchange, shared by
 * the TCP and ENet baselines so both carry exactly the same bytes.
 *
 * A frame is  type (1 byte) | name length (1 byte) | name | payload.
 *   BP_HELLO  client -> relay: name = the client's own name, no payload.
 *   BP_MSG    client -> relay: name = the recipient;
 *             relay -> client: name = the sender; payload = the message.
 * Over TCP each frame is sealed and length-prefixed (tcpsec.h); over ENet
 * one packet is one frame.
 *
 * A bench message (the payload of BP_MSG) starts with a fixed header and is
 * padded with zeros to the workload's size:
 *   kind (1) | pair (4) | seq (8) | send time (8, CLOCK_MONOTONIC ns)
 * all big-endian. kind BP_END carries in `seq` the number of data messages
 * the pair sent, so the receiver can count what was lost.
 */
#ifndef BENCH_BENCHPROTO_H
#define BENCH_BENCHPROTO_H

#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdint.h>

enum { BP_HELLO = 1, BP_MSG = 2 };
enum { BP_DATA = 1, BP_END = 2 };

#define BP_NAME_MAX 64
#define BP_MSG_HEADER 21
/* Largest payload a bench frame carries (the "big" workload uses 64 KiB). */
#define BP_PAYLOAD_MAX (1u << 20)
#define BP_FRAME_MAX (2 + BP_NAME_MAX + BP_PAYLOAD_MAX)

typedef struct bp_frame {
  uint8_t type;
  char name[BP_NAME_MAX + 1];
  const uint8_t *payload; /* points into the decoded buffer */
  size_t payload_len;
} bp_frame;

/* Writes a frame into out (capacity cap). Returns its length, or 0 if the
 * name is empty or too long or the frame does not fit. */
size_t bp_encode(uint8_t *out, size_t cap, uint8_t type, const char *name, const void *payload,
                 size_t len);

/* Parses a frame. Returns 0, or -1 if it is malformed. */
int bp_decode(const uint8_t *in, size_t len, bp_frame *f);

typedef struct bp_msg {
  uint8_t kind;
  uint32_t pair;
  uint64_t seq;
  int64_t sent_ns;
} bp_msg;

/* Writes a bench message of `size` bytes (at least BP_MSG_HEADER). */
void bp_msg_write(uint8_t *out, size_t size, const bp_msg *m);

/* Reads a bench message header. Returns 0, or -1 if too short or unknown. */
int bp_msg_read(const uint8_t *in, size_t len, bp_msg *m);

/* CLOCK_MONOTONIC in ns: shared by every namespace on the host, so a send
 * stamp taken in one namespace can be compared with a receive time in
 * another. */
int64_t bp_now_ns(void);

/* CLOCK_REALTIME in ns: also shared by every namespace. The relays stamp
 * when they accept a client's first message with it (tern's relay puts its
 * own in SERVER_ACK, in Unix ms), so the connect probe can compare the
 * relay's moment of acceptance with its own start. */
int64_t bp_unix_ns(void);

/* Accept log: a relay started with --accept-log FILE appends one line
 * "NAME UNIX_NS" when it accepts the first message of a client that has
 * named itself (flushed at once). Returns 0, or -1 if it cannot write. */
int bp_accept_log_write(FILE *f, const char *name, int64_t unix_ns);

/* Looks `name` up in an accept log. Returns 0 with *unix_ns set, or -1 if
 * the file or the name is not there (yet). */
int bp_accept_log_find(const char *path, const char *name, int64_t *unix_ns);

/* ENet channels the ENet baseline opens: 0 for control, the rest for
 * conversations. */
#define BP_ENET_CHANNELS 8

/* The ENet channel of the conversation between two names: the same in both
 * directions and on both hops, never 0. */
uint8_t bp_enet_channel(const char *a, const char *b);



/* ---- helpers shared by the bench programs' command lines and loops ---- */

struct sockaddr_in;

/* Parses "A.B.C.D:PORT". Returns 0 or -1. */
int bp_parse_addr(const char *s, struct sockaddr_in *out);

/* Installs SIGINT/SIGTERM handlers that set *flag (a relay's stop flag). */
void bp_on_stop_signals(volatile sig_atomic_t *flag);

/* User plus system CPU seconds this process has used. */
double bp_cpu_seconds(void);

#endif
