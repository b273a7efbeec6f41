/*
 * Channel numbers and disconnect codes: the parts of the wire that both
 * sans-I/O cores (client/, relay/) and the link (io/link.c) name. A header
 * of constants only, so the cores need no I/O header to get them.
 * spec/wire.md, "Channels" and "Disconnect codes".
 */
#ifndef TERN_CHANNELS_H
#define TERN_CHANNELS_H

/* ENet channels (spec/wire.md, "Channels"). */
enum {
  TERN__CH_CONTROL = 0,  /* handshake, control frames; reliable */
  TERN__CH_CHAT0 = 1,    /* chat: a conversation hashes onto one of 4 */
  TERN__CH_CHAT_COUNT = 4,
  TERN__CH_SIGNAL = 5,   /* unreliable signals (typing, presence) */
  TERN__CH_BULK = 6,     /* reserved for large payloads; unused */
  TERN__CH_COPY = 7,     /* second copies of small messages; unsequenced */
  TERN__CH_COUNT = 8,
};

/* ENet disconnect codes: the 32-bit `data` of an ENet disconnect. They are
 * not authenticated (ENet's header is not), so a client trusts them only as
 * hints, and only where no authenticated answer could exist. */
enum {
  TERN__DISC_NONE = 0,
  TERN__DISC_GOODBYE = 1,        /* the peer asked to close */
  TERN__DISC_HELLO_UNREADABLE = 2, /* relay: message 1 did not open */
  TERN__DISC_REFUSED = 3,        /* relay: key refused (see WELCOME) */
  TERN__DISC_HS_TIMEOUT = 4,     /* relay: handshake not finished in time */
  TERN__DISC_PROTOCOL = 5,       /* malformed data */
  TERN__DISC_VERSION = 6,        /* unsupported protocol version */
  TERN__DISC_SHUTDOWN = 7,       /* relay shutting down */
  TERN__DISC_NONCE = 8,          /* send limit reached: reconnect */
  TERN__DISC_REVOKED = 9,        /* relay: key no longer allowed */
  TERN__DISC_STALE = 10,         /* relay: HELLO timestamp not fresh (a replay?) */
};

#endif
