/* A simulated small disk for store tests: see simdisk.h. */
#include "simdisk.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define BLOCK 4096u

struct tt_simdisk {
  sqlite3_vfs vfs;
  sqlite3_vfs *real;
  char name[48];
  char path[4096];
  uint64_t bytes;
  uint64_t refused;
};

typedef struct sd_file {
  sqlite3_file base;
  tt_simdisk *d;
  sqlite3_file *real; /* follows this struct */
} sd_file;

static uint64_t blocks(uint64_t n) { return (n + BLOCK - 1) / BLOCK * BLOCK; }

static uint64_t used_by(const char *path, const char *suffix) {
  char p[4200];
  snprintf(p, sizeof p, "%s%s", path, suffix);
  struct stat st;
  return stat(p, &st) == 0 ? blocks((uint64_t)st.st_size) : 0;
}

uint64_t tt_simdisk_used(const tt_simdisk *d) {
  static const char *const suffixes[] = {"", "-wal", "-shm", "-journal", "-reserve"};
  uint64_t n = 0;
  for (size_t i = 0; i < sizeof suffixes / sizeof *suffixes; i++) n += used_by(d->path, suffixes[i]);
  return n;
}

uint64_t tt_simdisk_free_bytes(void *ctx) {
  const tt_simdisk *d = ctx;
  uint64_t used = tt_simdisk_used(d);
  return used >= d->bytes ? 0 : d->bytes - used;
}

uint64_t tt_simdisk_refused(const tt_simdisk *d) { return d->refused; }

const char *tt_simdisk_vfs(const tt_simdisk *d) { return d->name; }

/* ---- the file methods: all forwarded; writes that grow a file checked ---- */

#define REAL(f) (((sd_file *)(f))->real)

static int sd_close(sqlite3_file *f) {
  int rc = REAL(f)->pMethods ? REAL(f)->pMethods->xClose(REAL(f)) : SQLITE_OK;
  return rc;
}
static int sd_read(sqlite3_file *f, void *buf, int n, sqlite3_int64 off) {
  return REAL(f)->pMethods->xRead(REAL(f), buf, n, off);
}
static int sd_write(sqlite3_file *f, const void *buf, int n, sqlite3_int64 off) {
  sd_file *sf = (sd_file *)f;
  sqlite3_int64 size = 0;
  int rc = REAL(f)->pMethods->xFileSize(REAL(f), &size);
  if (rc != SQLITE_OK) return rc;
  uint64_t end = (uint64_t)off + (uint64_t)n;
  if (end > (uint64_t)size) {
    uint64_t grow = blocks(end) - blocks((uint64_t)size);
    if (grow && tt_simdisk_used(sf->d) + grow > sf->d->bytes) {
      sf->d->refused++;
      return SQLITE_FULL; /* what the unix VFS makes of ENOSPC */
    }
  }
  return REAL(f)->pMethods->xWrite(REAL(f), buf, n, off);
}
static int sd_truncate(sqlite3_file *f, sqlite3_int64 size) {
  return REAL(f)->pMethods->xTruncate(REAL(f), size);
}
static int sd_sync(sqlite3_file *f, int flags) { return REAL(f)->pMethods->xSync(REAL(f), flags); }
static int sd_file_size(sqlite3_file *f, sqlite3_int64 *size) {
  return REAL(f)->pMethods->xFileSize(REAL(f), size);
}
static int sd_lock(sqlite3_file *f, int l) { return REAL(f)->pMethods->xLock(REAL(f), l); }
static int sd_unlock(sqlite3_file *f, int l) { return REAL(f)->pMethods->xUnlock(REAL(f), l); }
static int sd_check_lock(sqlite3_file *f, int *out) {
  return REAL(f)->pMethods->xCheckReservedLock(REAL(f), out);
}
static int sd_file_control(sqlite3_file *f, int op, void *arg) {
  /* A size hint would let the file grow past the check. */
  if (op == SQLITE_FCNTL_SIZE_HINT || op == SQLITE_FCNTL_CHUNK_SIZE) return SQLITE_NOTFOUND;
  return REAL(f)->pMethods->xFileControl(REAL(f), op, arg);
}
static int sd_sector_size(sqlite3_file *f) { return REAL(f)->pMethods->xSectorSize(REAL(f)); }
static int sd_device_chars(sqlite3_file *f) {
  return REAL(f)->pMethods->xDeviceCharacteristics(REAL(f));
}
static int sd_shm_map(sqlite3_file *f, int pg, int sz, int extend, void volatile **pp) {
  return REAL(f)->pMethods->xShmMap(REAL(f), pg, sz, extend, pp);
}
static int sd_shm_lock(sqlite3_file *f, int off, int n, int flags) {
  return REAL(f)->pMethods->xShmLock(REAL(f), off, n, flags);
}
static void sd_shm_barrier(sqlite3_file *f) { REAL(f)->pMethods->xShmBarrier(REAL(f)); }
static int sd_shm_unmap(sqlite3_file *f, int del) {
  return REAL(f)->pMethods->xShmUnmap(REAL(f), del);
}
static int sd_fetch(sqlite3_file *f, sqlite3_int64 off, int n, void **pp) {
  *pp = NULL; /* no memory-mapped I/O: every write goes through sd_write */
  (void)f, (void)off, (void)n;
  return SQLITE_OK;
}
static int sd_unfetch(sqlite3_file *f, sqlite3_int64 off, void *p) {
  (void)f, (void)off, (void)p;
  return SQLITE_OK;
}

static const sqlite3_io_methods sd_methods = {
    3,           sd_close,       sd_read,        sd_write,          sd_truncate,
    sd_sync,     sd_file_size,   sd_lock,        sd_unlock,         sd_check_lock,
    sd_file_control, sd_sector_size, sd_device_chars, sd_shm_map,   sd_shm_lock,
    sd_shm_barrier, sd_shm_unmap, sd_fetch,      sd_unfetch,
};

/* ---- the VFS: opens wrap the real file; everything else is forwarded ---- */

static int sd_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *f, int flags, int *out_flags) {
  tt_simdisk *d = (tt_simdisk *)vfs;
  sd_file *sf = (sd_file *)f;
  sf->d = d;
  sf->real = (sqlite3_file *)(sf + 1);
  int rc = d->real->xOpen(d->real, name, sf->real, flags, out_flags);
  /* SQLite calls xClose only if pMethods is set. */
  f->pMethods = sf->real->pMethods ? &sd_methods : NULL;
  return rc;
}
static int sd_delete(sqlite3_vfs *vfs, const char *name, int sync) {
  tt_simdisk *d = (tt_simdisk *)vfs;
  return d->real->xDelete(d->real, name, sync);
}
static int sd_access(sqlite3_vfs *vfs, const char *name, int flags, int *out) {
  tt_simdisk *d = (tt_simdisk *)vfs;
  return d->real->xAccess(d->real, name, flags, out);
}
static int sd_full_pathname(sqlite3_vfs *vfs, const char *name, int n, char *out) {
  tt_simdisk *d = (tt_simdisk *)vfs;
  return d->real->xFullPathname(d->real, name, n, out);
}
static void *sd_dlopen(sqlite3_vfs *vfs, const char *name) {
  tt_simdisk *d = (tt_simdisk *)vfs;
  return d->real->xDlOpen(d->real, name);
}
static void sd_dlerror(sqlite3_vfs *vfs, int n, char *out) {
  tt_simdisk *d = (tt_simdisk *)vfs;
  d->real->xDlError(d->real, n, out);
}
static void (*sd_dlsym(sqlite3_vfs *vfs, void *h, const char *sym))(void) {
  tt_simdisk *d = (tt_simdisk *)vfs;
  return d->real->xDlSym(d->real, h, sym);
}
static void sd_dlclose(sqlite3_vfs *vfs, void *h) {
  tt_simdisk *d = (tt_simdisk *)vfs;
  d->real->xDlClose(d->real, h);
}
static int sd_randomness(sqlite3_vfs *vfs, int n, char *out) {
  tt_simdisk *d = (tt_simdisk *)vfs;
  return d->real->xRandomness(d->real, n, out);
}
static int sd_sleep(sqlite3_vfs *vfs, int us) {
  tt_simdisk *d = (tt_simdisk *)vfs;
  return d->real->xSleep(d->real, us);
}
static int sd_current_time(sqlite3_vfs *vfs, double *out) {
  tt_simdisk *d = (tt_simdisk *)vfs;
  return d->real->xCurrentTime(d->real, out);
}
static int sd_last_error(sqlite3_vfs *vfs, int n, char *out) {
  tt_simdisk *d = (tt_simdisk *)vfs;
  return d->real->xGetLastError ? d->real->xGetLastError(d->real, n, out) : 0;
}
static int sd_current_time64(sqlite3_vfs *vfs, sqlite3_int64 *out) {
  tt_simdisk *d = (tt_simdisk *)vfs;
  return d->real->xCurrentTimeInt64(d->real, out);
}

tt_simdisk *tt_simdisk_new(const char *path, uint64_t bytes) {
  sqlite3_initialize();
  tt_simdisk *d = calloc(1, sizeof *d);
  if (!d) return NULL;
  d->real = sqlite3_vfs_find(NULL);
  if (!d->real || d->real->iVersion < 2) {
    free(d);
    return NULL;
  }
  snprintf(d->name, sizeof d->name, "simdisk-%p", (void *)d);
  snprintf(d->path, sizeof d->path, "%s", path);
  d->bytes = bytes;
  d->vfs.iVersion = 2;
  d->vfs.szOsFile = (int)sizeof(sd_file) + d->real->szOsFile;
  d->vfs.mxPathname = d->real->mxPathname;
  d->vfs.zName = d->name;
  d->vfs.xOpen = sd_open;
  d->vfs.xDelete = sd_delete;
  d->vfs.xAccess = sd_access;
  d->vfs.xFullPathname = sd_full_pathname;
  d->vfs.xDlOpen = sd_dlopen;
  d->vfs.xDlError = sd_dlerror;
  d->vfs.xDlSym = sd_dlsym;
  d->vfs.xDlClose = sd_dlclose;
  d->vfs.xRandomness = sd_randomness;
  d->vfs.xSleep = sd_sleep;
  d->vfs.xCurrentTime = sd_current_time;
  d->vfs.xGetLastError = sd_last_error;
  d->vfs.xCurrentTimeInt64 = sd_current_time64;
  if (sqlite3_vfs_register(&d->vfs, 0) != SQLITE_OK) {
    free(d);
    return NULL;
  }
  return d;
}

void tt_simdisk_free(tt_simdisk *d) {
  if (!d) return;
  sqlite3_vfs_unregister(&d->vfs);
  free(d);
}
