/*
 * The relay's side of migration (sans-I/O): a table of live sessions by
 * path id, and the rule that moves one to a new address (spec/wire.md §11,
 * docs/socket-layer.md "Migration"):
 *
 *   - a CHALLENGE that opens under the session's key and carries a counter
 *     above every one seen makes its source the session's candidate path
 *     and draws a RESPONSE to it, within 3x the bytes that address sent
 *     (QUIC's anti-amplification rule); a forged or replayed one gets
 *     nothing;
 *   - a CONFIRM from the candidate that echoes the relay's challenge moves
 *     the session there; until then the old path stays current.
 *
 * Random challenges come from the caller. Not thread-safe.
 */
#ifndef TERN_MIGRATE_H
#define TERN_MIGRATE_H

#include <stddef.h>
#include <stdint.h>

#include "io/addr.h"
#include "wire/path.h"

typedef struct tern__mig tern__mig;

typedef struct tern__mig_stats {
  uint64_t challenges;   /* authentic CHALLENGEs */
  uint64_t moves;        /* sessions moved after a CONFIRM */
  uint64_t rejected;     /* malformed, unknown id, forged, replayed */
  uint64_t over_budget;  /* RESPONSEs not sent: the 3x limit */
} tern__mig_stats;

int tern__mig_new(tern__mig **out);
void tern__mig_free(tern__mig *m);

/* Registers a session: datagrams naming keys->id are about handle/gen.
 * Returns 0, TERN_EEXIST (the id is taken), TERN_ENOMEM. */
int tern__mig_add(tern__mig *m, uint32_t handle, uint16_t gen, const tern__path_keys *keys);
/* The session ended. */
void tern__mig_remove(tern__mig *m, uint32_t handle, uint16_t gen);

enum { TERN__MIG_NONE = 0, TERN__MIG_ANSWER = 1, TERN__MIG_MOVE = 2 };

/* A path datagram from `from`. `rnd` is 8 fresh random bytes (the relay's
 * challenge, if one is made). Returns TERN__MIG_NONE (dropped),
 * TERN__MIG_ANSWER (send out[0..*out_len) to `from`), or TERN__MIG_MOVE
 * (the session in *handle and *gen now lives at `from`). */
int tern__mig_input(tern__mig *m, const tern__addr *from, const uint8_t *data, size_t len,
                    const uint8_t rnd[8], uint8_t *out, size_t *out_len, uint32_t *handle,
                    uint16_t *gen);

void tern__mig_stats_get(const tern__mig *m, tern__mig_stats *st);

#endif
