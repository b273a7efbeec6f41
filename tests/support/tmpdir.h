/* Scratch directories for tests that touch the file system. */
#ifndef TERN_TEST_TMPDIR_H
#define TERN_TEST_TMPDIR_H

#include <stddef.h>

/* Creates a fresh private directory under $TMPDIR (or /tmp) and writes its
 * path into dir[0..size). Returns 0, or -1 with errno set. */
int tern__test_mkdtemp(char *dir, size_t size);

/* Removes `dir` and everything below it. Returns 0, or -1 with errno set. */
int tern__test_rmtree(const char *dir);

#endif
