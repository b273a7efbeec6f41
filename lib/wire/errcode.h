/*
 * Error codes on the wire (spec/wire.md §7): a TERN_E* code travels as its
 * magnitude, a varint from 1 to TERN__WIRE_ERR_MAX; 0 means none. One home
 * for both directions, used by every frame that carries one (WELCOME's
 * status, FAILED, BUSY, CLOSE). Header only; may include tern.h.
 */
#ifndef TERN_ERRCODE_H
#define TERN_ERRCODE_H

#include <stdint.h>

/* The largest magnitude a code may have on the wire. */
#define TERN__WIRE_ERR_MAX 64

/* The wire value of TERN_E* `code` (negative), or of its magnitude. */
static inline uint64_t tern__wire_err(int64_t code) {
  return code < 0 ? (uint64_t)-code : (uint64_t)code;
}

/* The TERN_E* code wire value `v` names, or `fallback` for 0 or a value
 * beyond any code (a newer peer's, or garbage). */
static inline int tern__wire_err_code(uint64_t v, int fallback) {
  return v > 0 && v <= TERN__WIRE_ERR_MAX ? -(int)v : fallback;
}

#endif
