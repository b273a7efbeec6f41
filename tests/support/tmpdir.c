/* Scratch directories for tests that touch the file system. */
/* nftw() is an XSI function, beyond the project-wide _POSIX_C_SOURCE. */
#define _XOPEN_SOURCE 700
#include "tmpdir.h"

#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>

int tern__test_mkdtemp(char *dir, size_t size) {
  const char *base = getenv("TMPDIR");
  if (base == NULL || base[0] == '\0') base = "/tmp";
  int n = snprintf(dir, size, "%s/tern-test.XXXXXX", base);
  if (n < 0 || (size_t)n >= size) {
    errno = ENAMETOOLONG;
    return -1;
  }
  return mkdtemp(dir) != NULL ? 0 : -1;
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
  (void)st, (void)flag, (void)ftw;
  return remove(path);
}

int tern__test_rmtree(const char *dir) {
  /* Depth first so that directories are empty when their turn comes; do not
   * follow symbolic links out of the tree. */
  return nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}
