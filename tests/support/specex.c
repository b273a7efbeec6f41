/* Reads the named hex examples out of the spec's Markdown files (specex.h). */
#include "specex.h"

#include <ctype.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tern_test.h"

static const char *spec_dir(void) {
  const char *d = getenv("TERN_SPEC_DIR");
  return d && *d ? d : TERN_TEST_SRCDIR "/spec";
}

/* Calls fn for each spec file's text until it returns non-zero. */
static int each_file(int (*fn)(void *ctx, const char *file, const char *text), void *ctx) {
  DIR *d = opendir(spec_dir());
  if (!d) return -1;
  struct dirent *e;
  int r = 0;
  char *names[64];
  int n = 0;
  while ((e = readdir(d)) && n < 64) {
    size_t len = strlen(e->d_name);
    if (len > 3 && !strcmp(e->d_name + len - 3, ".md")) names[n++] = strdup(e->d_name);
  }
  closedir(d);
  for (int i = 0; i < n; i++) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", spec_dir(), names[i]);
    char *text = tt_read_file(path);
    if (text && !r) r = fn(ctx, names[i], text);
    free(text);
    free(names[i]);
  }
  return r;
}

static int hexval(int c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

/* Appends the hex byte pairs of p[0..len) ("01 08 05 ..."): the count of
 * bytes, or -1 if something else is in there. */
static int hex_bytes(const char *p, size_t len, specex *ex) {
  int count = 0;
  size_t i = 0;
  while (i < len) {
    while (i < len && p[i] == ' ') i++;
    if (i >= len) break;
    if (i + 1 >= len || hexval(p[i]) < 0 || hexval(p[i + 1]) < 0 || (i + 2 < len && p[i + 2] != ' '))
      return -1;
    if (ex->n >= SPECEX_MAX) return -1;
    ex->b[ex->n++] = (uint8_t)(hexval(p[i]) << 4 | hexval(p[i + 1]));
    count++;
    i += 2;
  }
  return count;
}

/* The next line of a block: [*p, *end); advances *p past it. */
static int next_line(const char **p, const char **ls, const char **le) {
  if (!**p) return 0;
  *ls = *p;
  const char *nl = strchr(*p, '\n');
  *le = nl ? nl : *p + strlen(*p);
  *p = nl ? nl + 1 : *le;
  return 1;
}

/* An offset line "  0010  xx xx ...": its offset, and where the bytes start. */
static long offset_line(const char *ls, const char *le, const char **bytes) {
  const char *q = ls;
  while (q < le && *q == ' ') q++;
  if (le - q < 6) return -1;
  for (int k = 0; k < 4; k++)
    if (hexval(q[k]) < 0) return -1;
  if (q[4] != ' ' || q[5] != ' ') return -1;
  *bytes = q + 6;
  return strtol(q, NULL, 16);
}

/* The text of the fenced block that starts at or after p, or NULL. */
static const char *block_after(const char *p, const char **end) {
  const char *open = strstr(p, "```");
  if (!open) return NULL;
  const char *body = strchr(open, '\n');
  if (!body) return NULL;
  body++;
  const char *close = strstr(body, "```");
  if (!close) return NULL;
  *end = close;
  return body;
}

typedef struct finding {
  const char *name;
  specex *ex;
  int found;
  char why[256];
} finding;

/* Decodes the example the marker at m..mend (its words after "example")
 * names `want` in; 1 if it named it (and *ex is filled or why is set). */
static int decode(finding *f, const char *file, const char *words, const char *after) {
  char buf[512], lab[256];
  snprintf(buf, sizeof buf, "%s", words);
  const char *label = NULL, *l = strstr(words, "label=\"");
  int inline_ = 0, index = -1, k = 0;
  char *save = NULL;
  if (l) {
    const char *q = strchr(l + 7, '"');
    snprintf(lab, sizeof lab, "%.*s", q ? (int)(q - l - 7) : 0, l + 7);
    label = lab;
  }
  for (char *t = strtok_r(buf, " ", &save); t; t = strtok_r(NULL, " ", &save)) {
    if (!strncmp(t, "label=", 6)) break;
    if (!strcmp(t, "inline")) {
      inline_ = 1;
      continue;
    }
    if (!strcmp(t, f->name)) index = k;
    k++;
  }
  if (index < 0) return 0;
  if (f->found++) {
    snprintf(f->why, sizeof f->why, "example '%s' is named twice (again in %s)", f->name, file);
    return 1;
  }
  f->ex->n = 0;
  if (inline_) {
    const char *a = strchr(after, '`');
    const char *b = a ? strchr(a + 1, '`') : NULL;
    if (!b || hex_bytes(a + 1, (size_t)(b - a - 1), f->ex) <= 0)
      snprintf(f->why, sizeof f->why, "%s: example '%s': no `hex` span after its marker", file, f->name);
    return 1;
  }
  const char *end, *p = block_after(after, &end);
  if (!p) {
    snprintf(f->why, sizeof f->why, "%s: example '%s': no fenced block after its marker", file, f->name);
    return 1;
  }
  const char *ls, *le, *bytes;
  if (label) {
    int in = 0;
    while (p < end && next_line(&p, &ls, &le)) {
      const char *at = in ? NULL : strstr(ls, label);
      if (at && at < le) {
        in = 1;
        at += strlen(label);
        if (hex_bytes(at, (size_t)(le - at), f->ex) <= 0) break;
      } else if (in) {
        if (hex_bytes(ls, (size_t)(le - ls), f->ex) <= 0) break;
      }
    }
    if (!f->ex->n)
      snprintf(f->why, sizeof f->why, "%s: example '%s': no hex after \"%.100s\"", file, f->name, label);
    return 1;
  }
  int run = -1;
  long expect = 0;
  while (p < end && next_line(&p, &ls, &le)) {
    long off = offset_line(ls, le, &bytes);
    if (off < 0) continue;
    if (off == 0) run++;
    if (run != index) continue;
    if (off != expect || hex_bytes(bytes, (size_t)(le - bytes), f->ex) <= 0) {
      snprintf(f->why, sizeof f->why, "%s: example '%s': bad hex dump line at offset %04lx", file,
               f->name, off);
      f->ex->n = 0;
      return 1;
    }
    expect = (long)f->ex->n;
  }
  if (!f->ex->n)
    snprintf(f->why, sizeof f->why, "%s: example '%s': no hex dump run %d in its block", file, f->name,
             index + 1);
  return 1;
}

/* Calls fn with the words of each marker in `text` ("NAME ... " between
 * "<!-- example " and "-->") and the text after it. */
static void each_marker(const char *text, void (*fn)(void *ctx, const char *words, const char *after),
                        void *ctx) {
  for (const char *m = strstr(text, "<!-- example "); m; m = strstr(m + 1, "<!-- example ")) {
    const char *words = m + strlen("<!-- example ");
    const char *close = strstr(words, "-->");
    if (!close) break;
    char w[512];
    snprintf(w, sizeof w, "%.*s", (int)(close - words), words);
    fn(ctx, w, close + 3);
  }
}

typedef struct scan_ctx {
  finding *f;
  const char *file;
} scan_ctx;

static void scan_one(void *ctx, const char *words, const char *after) {
  scan_ctx *c = ctx;
  decode(c->f, c->file, words, after);
}

static int scan(void *ctx, const char *file, const char *text) {
  scan_ctx c = {ctx, file};
  each_marker(text, scan_one, &c);
  return 0;
}

int specex_load(const char *name, specex *ex, char *why, size_t cap) {
  finding f = {.name = name, .ex = ex};
  ex->n = 0;
  if (each_file(scan, &f) < 0) {
    snprintf(why, cap, "cannot read the spec directory %s", spec_dir());
    return -1;
  }
  if (!f.found) snprintf(f.why, sizeof f.why, "no example named '%s' in %s/*.md", name, spec_dir());
  if (f.why[0] || !ex->n) {
    snprintf(why, cap, "%s", f.why[0] ? f.why : "empty example");
    return -1;
  }
  return 0;
}

/* Appends the names a marker declares to the list in *ctx. */
static void list_one(void *ctx, const char *words, const char *after) {
  (void)after;
  char **out = ctx, w[512], *save = NULL;
  snprintf(w, sizeof w, "%s", words);
  for (char *t = strtok_r(w, " ", &save); t && *out; t = strtok_r(NULL, " ", &save)) {
    if (!strcmp(t, "inline") || !strncmp(t, "label=", 6)) break;
    size_t have = strlen(*out);
    char *n = realloc(*out, have + strlen(t) + 2);
    if (!n) {
      free(*out);
      *out = NULL;
      return;
    }
    snprintf(n + have, strlen(t) + 2, "%s\n", t);
    *out = n;
  }
}

static int list(void *ctx, const char *file, const char *text) {
  (void)file;
  each_marker(text, list_one, ctx);
  return *(char **)ctx ? 0 : 1;
}

char *specex_names(void) {
  char *out = calloc(1, 1);
  if (!out || each_file(list, &out) != 0) {
    free(out);
    return NULL;
  }
  return out;
}
