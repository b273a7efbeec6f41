/* Frame codec: bounded writers and readers, no allocation. */
#include "wire/frame.h"

#include <string.h>

/* Room reserved for a frame's length while its body is written. */
#define LEN_RESERVE 4
#define FRAME_BODY_MAX ((1u << 28) - 1)

void tern__wbuf_init(tern__wbuf *w, uint8_t *p, size_t cap) {
  w->p = p;
  w->len = 0;
  w->cap = cap;
  w->overflow = 0;
}

void tern__wbuf_bytes(tern__wbuf *w, const void *data, size_t n) {
  if (w->overflow || n > w->cap - w->len) {
    w->overflow = 1;
    return;
  }
  if (n) memcpy(w->p + w->len, data, n);
  w->len += n;
}

void tern__wbuf_u8(tern__wbuf *w, uint8_t v) { tern__wbuf_bytes(w, &v, 1); }

static size_t varint_encode(uint8_t out[TERN__VARINT_MAX], uint64_t v) {
  size_t n = 0;
  do {
    uint8_t b = (uint8_t)(v & 0x7f);
    v >>= 7;
    out[n++] = (uint8_t)(b | (v ? 0x80 : 0));
  } while (v);
  return n;
}

void tern__wbuf_varint(tern__wbuf *w, uint64_t v) {
  uint8_t tmp[TERN__VARINT_MAX];
  tern__wbuf_bytes(w, tmp, varint_encode(tmp, v));
}

void tern__wbuf_string(tern__wbuf *w, const void *s, size_t n) {
  tern__wbuf_varint(w, n);
  tern__wbuf_bytes(w, s, n);
}

size_t tern__frame_begin(tern__wbuf *w, uint8_t type) {
  tern__wbuf_u8(w, type);
  size_t mark = w->len;
  uint8_t zero[LEN_RESERVE] = {0};
  tern__wbuf_bytes(w, zero, LEN_RESERVE);
  return mark;
}

void tern__frame_end(tern__wbuf *w, size_t mark) {
  if (w->overflow) return;
  size_t body = w->len - mark - LEN_RESERVE;
  if (body > FRAME_BODY_MAX) {
    w->overflow = 1;
    return;
  }
  uint8_t tmp[TERN__VARINT_MAX];
  size_t n = varint_encode(tmp, body);
  /* n <= LEN_RESERVE because body < 2^28: close the gap after the length. */
  memmove(w->p + mark + n, w->p + mark + LEN_RESERVE, body);
  memcpy(w->p + mark, tmp, n);
  w->len -= LEN_RESERVE - n;
}

void tern__rbuf_init(tern__rbuf *r, const uint8_t *p, size_t len) {
  r->p = p;
  r->len = len;
  r->pos = 0;
  r->bad = 0;
}

uint8_t tern__rbuf_u8(tern__rbuf *r) {
  if (r->bad || r->pos >= r->len) {
    r->bad = 1;
    return 0;
  }
  return r->p[r->pos++];
}

uint64_t tern__rbuf_varint(tern__rbuf *r) {
  uint64_t v = 0;
  for (unsigned i = 0; i < TERN__VARINT_MAX; i++) {
    uint8_t b = tern__rbuf_u8(r);
    if (r->bad) return 0;
    /* The tenth byte may only carry the top bit of a 64-bit value. */
    if (i == TERN__VARINT_MAX - 1 && b > 1) break;
    v |= (uint64_t)(b & 0x7f) << (7 * i);
    if (!(b & 0x80)) {
      /* Minimal encoding only: a final zero byte after others is padding. */
      if (b == 0 && i > 0) break;
      return v;
    }
  }
  r->bad = 1;
  return 0;
}

void tern__rbuf_string(tern__rbuf *r, const uint8_t **s, size_t *n, size_t max) {
  uint64_t len = tern__rbuf_varint(r);
  *s = NULL;
  *n = 0;
  if (r->bad) return;
  if (len > max || len > r->len - r->pos) {
    r->bad = 1;
    return;
  }
  *s = r->p + r->pos;
  *n = (size_t)len;
  r->pos += (size_t)len;
}

void tern__rbuf_rest(tern__rbuf *r, const uint8_t **s, size_t *n) {
  if (r->bad) {
    *s = NULL;
    *n = 0;
    return;
  }
  *s = r->p + r->pos;
  *n = r->len - r->pos;
  r->pos = r->len;
}

int tern__frame_next(tern__rbuf *packet, uint8_t *type, tern__rbuf *body) {
  if (packet->bad) return TERN_EPROTO;
  if (packet->pos == packet->len) return 0;
  *type = tern__rbuf_u8(packet);
  const uint8_t *p;
  size_t n;
  tern__rbuf_string(packet, &p, &n, FRAME_BODY_MAX);
  if (packet->bad) return TERN_EPROTO;
  tern__rbuf_init(body, p, n);
  return 1;
}

/* ---- typed frames ------------------------------------------------------ */

void tern__fr_hello_write(tern__wbuf *w, const tern__fr_hello *f) {
  size_t m = tern__frame_begin(w, TERN__FR_HELLO);
  tern__wbuf_string(w, f->user, f->user_len);
  tern__wbuf_varint(w, f->ping_interval_ms);
  tern__wbuf_varint(w, f->time_us);
  if (f->token_len) tern__wbuf_string(w, f->token, f->token_len);
  tern__frame_end(w, m);
}

int tern__fr_hello_read(tern__rbuf *b, tern__fr_hello *f) {
  tern__rbuf_string(b, &f->user, &f->user_len, TERN_USER_MAX);
  f->ping_interval_ms = tern__rbuf_varint(b);
  f->time_us = tern__rbuf_varint(b);
  f->token = NULL;
  f->token_len = 0;
  if (!b->bad && b->pos < b->len) {
    tern__rbuf_string(b, &f->token, &f->token_len, TERN__HELLO_TOKEN_MAX);
    if (f->token_len == 0) b->bad = 1; /* present means not empty: one encoding */
  }
  return b->bad ? TERN_EPROTO : 0;
}

void tern__fr_welcome_write(tern__wbuf *w, const tern__fr_welcome *f) {
  size_t m = tern__frame_begin(w, TERN__FR_WELCOME);
  tern__wbuf_varint(w, f->status);
  tern__wbuf_string(w, f->user, f->user_len);
  tern__wbuf_varint(w, f->server_time_ms);
  tern__wbuf_string(w, f->reason, f->reason_len);
  if (f->retry_ms) tern__wbuf_varint(w, f->retry_ms);
  tern__frame_end(w, m);
}

int tern__fr_welcome_read(tern__rbuf *b, tern__fr_welcome *f) {
  f->status = tern__rbuf_varint(b);
  tern__rbuf_string(b, &f->user, &f->user_len, TERN_USER_MAX);
  f->server_time_ms = tern__rbuf_varint(b);
  tern__rbuf_string(b, &f->reason, &f->reason_len, 1024);
  /* retry_ms came later: a WELCOME that ends after reason has none. */
  f->retry_ms = 0;
  if (!b->bad && b->pos < b->len) {
    f->retry_ms = tern__rbuf_varint(b);
    if (f->retry_ms == 0) b->bad = 1; /* present means not 0: one encoding */
  }
  return b->bad ? TERN_EPROTO : 0;
}

void tern__fr_msg_write(tern__wbuf *w, uint8_t type, const tern__fr_msg *f) {
  size_t m = tern__frame_begin(w, type);
  if (type == TERN__FR_MSG) {
    tern__wbuf_varint(w, f->cmid);
    tern__wbuf_string(w, f->peer, f->peer_len);
    tern__wbuf_varint(w, f->flags);
    tern__wbuf_varint(w, f->prev_cmid);
  } else {
    tern__wbuf_varint(w, f->seq);
    tern__wbuf_varint(w, f->prev_seq);
    tern__wbuf_string(w, f->peer, f->peer_len);
    tern__wbuf_varint(w, f->ts);
    tern__wbuf_varint(w, f->flags);
    if (f->flags & (TERN__MSGF_CARBON | TERN__MSGF_GROUP)) tern__wbuf_string(w, f->to, f->to_len);
  }
  tern__wbuf_bytes(w, f->body, f->body_len);
  tern__frame_end(w, m);
}

int tern__fr_msg_read(tern__rbuf *b, uint8_t type, tern__fr_msg *f) {
  memset(f, 0, sizeof(*f));
  if (type == TERN__FR_MSG) {
    f->cmid = tern__rbuf_varint(b);
    tern__rbuf_string(b, &f->peer, &f->peer_len, TERN_USER_MAX);
    f->flags = tern__rbuf_varint(b);
    f->prev_cmid = tern__rbuf_varint(b);
  } else {
    f->seq = tern__rbuf_varint(b);
    f->prev_seq = tern__rbuf_varint(b);
    tern__rbuf_string(b, &f->peer, &f->peer_len, TERN_USER_MAX);
    f->ts = tern__rbuf_varint(b);
    f->flags = tern__rbuf_varint(b);
    uint64_t kinds = f->flags & (TERN__MSGF_CARBON | TERN__MSGF_GROUP);
    if (kinds == (TERN__MSGF_CARBON | TERN__MSGF_GROUP)) {
      b->bad = 1; /* a group message is no carbon */
    } else if (kinds) {
      tern__rbuf_string(b, &f->to, &f->to_len, TERN_USER_MAX);
      int ok = kinds == TERN__MSGF_GROUP ? tern__group_valid(f->to, f->to_len)
                                         : tern__user_valid(f->to, f->to_len);
      if (!b->bad && !ok) b->bad = 1;
    } else if (f->flags & TERN__MSGF_OWN) {
      b->bad = 1; /* OWN only with CARBON or GROUP */
    }
  }
  tern__rbuf_rest(b, &f->body, &f->body_len);
  /* A MSG may go to a group; a DELIVER is always from a user. */
  int peer_ok = tern__user_valid(f->peer, f->peer_len) ||
                (type == TERN__FR_MSG && tern__group_valid(f->peer, f->peer_len));
  if (b->bad || !peer_ok) return TERN_EPROTO;
  return 0;
}

void tern__fr_presence_write(tern__wbuf *w, const tern__fr_presence *f) {
  size_t m = tern__frame_begin(w, TERN__FR_PRESENCE);
  tern__wbuf_string(w, f->user, f->user_len);
  tern__wbuf_varint(w, f->online);
  tern__wbuf_varint(w, f->since_ms);
  tern__frame_end(w, m);
}

int tern__fr_presence_read(tern__rbuf *b, tern__fr_presence *f) {
  memset(f, 0, sizeof(*f));
  tern__rbuf_string(b, &f->user, &f->user_len, TERN_USER_MAX);
  f->online = tern__rbuf_varint(b);
  f->since_ms = tern__rbuf_varint(b);
  if (b->bad || f->online > 1 || !tern__user_valid(f->user, f->user_len)) return TERN_EPROTO;
  return 0;
}

void tern__fr_failed_write(tern__wbuf *w, uint8_t type, const tern__fr_failed *f) {
  size_t m = tern__frame_begin(w, type);
  tern__wbuf_varint(w, f->cmid);
  tern__wbuf_varint(w, f->error);
  tern__frame_end(w, m);
}

int tern__fr_failed_read(tern__rbuf *b, tern__fr_failed *f) {
  f->cmid = tern__rbuf_varint(b);
  f->error = tern__rbuf_varint(b);
  return b->bad ? TERN_EPROTO : 0;
}

void tern__fr_sack_write(tern__wbuf *w, const tern__fr_sack *f) {
  size_t m = tern__frame_begin(w, TERN__FR_SERVER_ACK);
  tern__wbuf_varint(w, f->cmid);
  tern__wbuf_varint(w, f->seq);
  tern__wbuf_varint(w, f->ts);
  tern__frame_end(w, m);
}

int tern__fr_sack_read(tern__rbuf *b, tern__fr_sack *f) {
  f->cmid = tern__rbuf_varint(b);
  f->seq = tern__rbuf_varint(b);
  f->ts = tern__rbuf_varint(b);
  return b->bad ? TERN_EPROTO : 0;
}

/* last | count | seq... : the body of DELIVERY_ACK and SYNC, and the tail
 * of GROUP_ACK. */
static void seqlist_fields(tern__wbuf *w, const tern__fr_seqlist *f) {
  tern__wbuf_varint(w, f->last);
  tern__wbuf_varint(w, f->n);
  for (size_t i = 0; i < f->n; i++) tern__wbuf_varint(w, f->seqs[i]);
}

void tern__fr_seqlist_write(tern__wbuf *w, uint8_t type, const tern__fr_seqlist *f) {
  size_t m = tern__frame_begin(w, type);
  seqlist_fields(w, f);
  tern__frame_end(w, m);
}

int tern__fr_seqlist_read(tern__rbuf *b, tern__fr_seqlist *f) {
  f->last = tern__rbuf_varint(b);
  uint64_t n = tern__rbuf_varint(b);
  f->n = 0;
  if (b->bad || n > TERN__SEQLIST_MAX) return TERN_EPROTO;
  uint64_t prev = f->last;
  for (uint64_t i = 0; i < n; i++) {
    uint64_t v = tern__rbuf_varint(b);
    if (b->bad || v <= prev) return TERN_EPROTO;
    f->seqs[f->n++] = prev = v;
  }
  return 0;
}

void tern__fr_u64_write(tern__wbuf *w, uint8_t type, uint64_t v) {
  size_t m = tern__frame_begin(w, type);
  tern__wbuf_varint(w, v);
  tern__frame_end(w, m);
}

int tern__fr_u64_read(tern__rbuf *b, uint64_t *v) {
  *v = tern__rbuf_varint(b);
  return b->bad ? TERN_EPROTO : 0;
}

void tern__fr_notice_ack_write(tern__wbuf *w, uint64_t kind, uint64_t cmid) {
  size_t m = tern__frame_begin(w, TERN__FR_NOTICE_ACK);
  tern__wbuf_varint(w, kind);
  tern__wbuf_varint(w, cmid);
  tern__frame_end(w, m);
}

int tern__fr_notice_ack_read(tern__rbuf *b, uint64_t *kind, uint64_t *cmid) {
  *kind = tern__rbuf_varint(b);
  *cmid = tern__rbuf_varint(b);
  return b->bad ? TERN_EPROTO : 0;
}

void tern__fr_notice_ack_code_write(tern__wbuf *w, uint64_t kind, uint64_t cmid, uint64_t code) {
  size_t m = tern__frame_begin(w, TERN__FR_NOTICE_ACK);
  tern__wbuf_varint(w, kind);
  tern__wbuf_varint(w, cmid);
  tern__wbuf_varint(w, code);
  tern__frame_end(w, m);
}

int tern__fr_notice_ack_code_read(tern__rbuf *b, uint64_t *kind, uint64_t *cmid, int *has_code,
                                  uint64_t *code) {
  *kind = tern__rbuf_varint(b);
  *cmid = tern__rbuf_varint(b);
  *has_code = 0;
  *code = 0;
  if (!b->bad && b->pos < b->len) {
    *code = tern__rbuf_varint(b);
    *has_code = 1;
  }
  return b->bad ? TERN_EPROTO : 0;
}

void tern__fr_gack_write(tern__wbuf *w, uint8_t type, const tern__fr_gack *f) {
  size_t m = tern__frame_begin(w, type);
  tern__wbuf_string(w, f->group, f->group_len);
  if (type == TERN__FR_GROUP_ACK) seqlist_fields(w, &f->list);
  else tern__wbuf_varint(w, f->list.last);
  tern__frame_end(w, m);
}

int tern__fr_gack_read(tern__rbuf *b, uint8_t type, tern__fr_gack *f) {
  tern__rbuf_string(b, &f->group, &f->group_len, TERN_USER_MAX);
  if (b->bad || !tern__group_valid(f->group, f->group_len)) return TERN_EPROTO;
  if (type == TERN__FR_GROUP_ACK) return tern__fr_seqlist_read(b, &f->list);
  f->list.n = 0;
  f->list.last = tern__rbuf_varint(b);
  return b->bad ? TERN_EPROTO : 0;
}

void tern__fr_greceipt_write(tern__wbuf *w, const tern__fr_greceipt *f) {
  size_t m = tern__frame_begin(w, TERN__FR_GROUP_RECEIPT);
  tern__wbuf_varint(w, f->cmid);
  tern__wbuf_varint(w, f->got);
  tern__wbuf_varint(w, f->of);
  tern__frame_end(w, m);
}

int tern__fr_greceipt_read(tern__rbuf *b, tern__fr_greceipt *f) {
  f->cmid = tern__rbuf_varint(b);
  f->got = tern__rbuf_varint(b);
  f->of = tern__rbuf_varint(b);
  return b->bad || f->got > f->of || f->of > UINT32_MAX ? TERN_EPROTO : 0;
}

void tern__fr_close_write(tern__wbuf *w, uint64_t reason) { tern__fr_u64_write(w, TERN__FR_CLOSE, reason); }

int tern__fr_close_read(tern__rbuf *b, uint64_t *reason) {
  *reason = tern__rbuf_varint(b);
  return b->bad ? TERN_EPROTO : 0;
}

void tern__fr_keepalive_write(tern__wbuf *w, const tern__fr_keepalive *f) {
  size_t m = tern__frame_begin(w, TERN__FR_KEEPALIVE);
  tern__wbuf_varint(w, f->interval_ms);
  tern__wbuf_varint(w, f->flags);
  tern__frame_end(w, m);
}

int tern__fr_keepalive_read(tern__rbuf *b, tern__fr_keepalive *f) {
  f->interval_ms = tern__rbuf_varint(b);
  f->flags = tern__rbuf_varint(b);
  return b->bad ? TERN_EPROTO : 0;
}

void tern__fr_probe_key_write(tern__wbuf *w, const tern__fr_probe_key *f) {
  size_t m = tern__frame_begin(w, TERN__FR_PROBE_KEY);
  tern__wbuf_string(w, f->id, sizeof(f->id));
  tern__wbuf_string(w, f->key, sizeof(f->key));
  tern__frame_end(w, m);
}

int tern__fr_probe_key_read(tern__rbuf *b, tern__fr_probe_key *f) {
  const uint8_t *id, *key;
  size_t idn, keyn;
  tern__rbuf_string(b, &id, &idn, sizeof(f->id));
  tern__rbuf_string(b, &key, &keyn, sizeof(f->key));
  if (b->bad || idn != sizeof(f->id) || keyn != sizeof(f->key)) return TERN_EPROTO;
  memcpy(f->id, id, sizeof(f->id));
  memcpy(f->key, key, sizeof(f->key));
  return 0;
}

void tern__fr_reset_token_write(tern__wbuf *w, const uint8_t token[16]) {
  size_t m = tern__frame_begin(w, TERN__FR_RESET_TOKEN);
  tern__wbuf_string(w, token, 16);
  tern__frame_end(w, m);
}

int tern__fr_reset_token_read(tern__rbuf *b, uint8_t token[16]) {
  const uint8_t *t;
  size_t n;
  tern__rbuf_string(b, &t, &n, 16);
  if (b->bad || n != 16) return TERN_EPROTO;
  memcpy(token, t, 16);
  return 0;
}

int tern__user_valid(const uint8_t *name, size_t len) {
  if (len == 0 || len > TERN_USER_MAX) return 0;
  for (size_t i = 0; i < len; i++) {
    uint8_t c = name[i];
    if (c <= 0x20 || c == 0x7f || c == '@') return 0;
  }
  return 1;
}

int tern__group_valid(const uint8_t *name, size_t len) {
  return len >= 2 && len <= TERN_USER_MAX && name[0] == '@' && tern__user_valid(name + 1, len - 1);
}

/* FNV-1a, 32 bits. */
static uint32_t fnv1a(uint32_t h, const uint8_t *p, size_t n) {
  for (size_t i = 0; i < n; i++) {
    h ^= p[i];
    h *= 16777619u;
  }
  return h;
}

uint8_t tern__chat_channel(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen) {
  /* Order the pair so that a->b and b->a hash alike. */
  size_t m = alen < blen ? alen : blen;
  int c = memcmp(a, b, m);
  if (c > 0 || (c == 0 && alen > blen)) {
    const uint8_t *tp = a;
    a = b;
    b = tp;
    size_t tn = alen;
    alen = blen;
    blen = tn;
  }
  uint32_t h = fnv1a(2166136261u, a, alen);
  h = fnv1a(h, (const uint8_t *)"\n", 1);
  h = fnv1a(h, b, blen);
  return (uint8_t)(1 + h % 4); /* TERN__CH_CHAT0 .. +TERN__CH_CHAT_COUNT-1 */
}
