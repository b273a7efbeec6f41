/* The one place the I/O shells (client, relay) read time. The session core
 * never calls these: time is passed to it. */
#ifndef TERN_CLOCK_H
#define TERN_CLOCK_H

#include <stdint.h>

/* Monotonic milliseconds (CLOCK_MONOTONIC). */
uint64_t tern__now_ms(void);
/* Wall-clock Unix milliseconds (CLOCK_REALTIME). */
uint64_t tern__wall_ms(void);

#endif
