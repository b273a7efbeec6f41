/* A small simulated disk for store tests: an SQLite VFS over the default one
 * that refuses (SQLITE_FULL, as a real full disk does) any write that would
 * take the files of one database past a size, the way a tmpfs of that size
 * would. What it counts is the sum of the database's files as they are on
 * the real disk, each rounded up to 4 KiB blocks: PATH, PATH-wal, PATH-shm,
 * PATH-journal and PATH-reserve (the relay store's disk reserve, which the
 * store creates itself; tern__rstore_config.disk_free makes it ask this disk
 * for room). Deterministic, and needs no root. */
#ifndef TERN_TEST_SIMDISK_H
#define TERN_TEST_SIMDISK_H

#include <stdint.h>

typedef struct tt_simdisk tt_simdisk;

/* Registers a VFS for the database at `path` on a disk of `bytes`.
 * tt_simdisk_vfs() is its name for tern__rstore_config.vfs. NULL on
 * failure. */
tt_simdisk *tt_simdisk_new(const char *path, uint64_t bytes);
/* Unregisters it; every connection using it must be closed. */
void tt_simdisk_free(tt_simdisk *d);
const char *tt_simdisk_vfs(const tt_simdisk *d);
/* Bytes in use and free now; writes refused so far. */
uint64_t tt_simdisk_used(const tt_simdisk *d);
uint64_t tt_simdisk_free_bytes(void *d); /* the shape of tern__rstore_config.disk_free */
uint64_t tt_simdisk_refused(const tt_simdisk *d);

#endif
