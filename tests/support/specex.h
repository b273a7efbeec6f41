/*
 * The hex examples of the spec's Markdown files (spec/NAME.md), read from the
 * spec itself, so that the spec and the code cannot drift apart unnoticed
 * (tests/spec_examples_test.c).
 *
 * An example is named by an HTML comment in the Markdown, which readers of
 * the rendered spec do not see:
 *   <!-- example NAME [NAME ...] -->   the fenced block that follows: its
 *       hex dump lines ("  0000  01 08 ..."), one example per run of lines
 *       starting at offset 0000, named in order;
 *   <!-- example NAME label="TEXT" --> in the fenced block that follows,
 *       the hex bytes after TEXT on its line and on the lines under it that
 *       hold nothing but hex bytes;
 *   <!-- example NAME inline -->       the first `...` span after it.
 * The spec directory is TERN_SPEC_DIR from the environment, or the source
 * tree's spec/.
 */
#ifndef TERN_TEST_SPECEX_H
#define TERN_TEST_SPECEX_H

#include <stddef.h>
#include <stdint.h>

#define SPECEX_MAX 512

typedef struct specex {
  uint8_t b[SPECEX_MAX];
  size_t n;
} specex;

/* Finds example `name` in the spec files and decodes it into *ex. Returns 0,
 * or -1 with the reason in why[0..cap) (no such example, two of that name,
 * no hex where the marker points, over SPECEX_MAX bytes). */
int specex_load(const char *name, specex *ex, char *why, size_t cap);

/* Every name the spec's markers declare, one per line, in a malloc'd
 * string (NULL if the spec cannot be read). */
char *specex_names(void);

#endif
