/* A strict recursive-descent JSON reader; see json.h for what it refuses. */
#include "json.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct parser {
  const char *p;
  size_t len;
  size_t pos;
  char *err;
  size_t err_len;
  int failed;
} parser;

static int error_at(parser *ps, const char *fmt, ...) {
  if (!ps->failed && ps->err && ps->err_len > 0) {
    char msg[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(ps->err, ps->err_len, "%s at byte %zu", msg, ps->pos);
  }
  ps->failed = 1;
  return -1;
}

static void skip_ws(parser *ps) {
  while (ps->pos < ps->len) {
    char c = ps->p[ps->pos];
    if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
    ps->pos++;
  }
}

static int peek(const parser *ps) {
  return ps->pos < ps->len ? (unsigned char)ps->p[ps->pos] : -1;
}

static int expect_word(parser *ps, const char *word) {
  size_t n = strlen(word);
  if (ps->len - ps->pos < n || memcmp(ps->p + ps->pos, word, n) != 0)
    return error_at(ps, "invalid literal");
  ps->pos += n;
  return 0;
}

/* A growable byte buffer for decoded strings. */
typedef struct buf {
  char *data;
  size_t len, cap;
} buf;

static int buf_put(buf *b, const char *s, size_t n) {
  if (b->len + n + 1 > b->cap) {
    size_t cap = b->cap ? b->cap * 2 : 32;
    while (cap < b->len + n + 1) cap *= 2;
    char *d = realloc(b->data, cap);
    if (!d) return -1;
    b->data = d;
    b->cap = cap;
  }
  memcpy(b->data + b->len, s, n);
  b->len += n;
  b->data[b->len] = '\0';
  return 0;
}

static int put_utf8(buf *b, uint32_t cp) {
  char out[4];
  size_t n;
  if (cp < 0x80) {
    out[0] = (char)cp;
    n = 1;
  } else if (cp < 0x800) {
    out[0] = (char)(0xc0 | (cp >> 6));
    out[1] = (char)(0x80 | (cp & 0x3f));
    n = 2;
  } else if (cp < 0x10000) {
    out[0] = (char)(0xe0 | (cp >> 12));
    out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
    out[2] = (char)(0x80 | (cp & 0x3f));
    n = 3;
  } else {
    out[0] = (char)(0xf0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    out[3] = (char)(0x80 | (cp & 0x3f));
    n = 4;
  }
  return buf_put(b, out, n);
}

static int read_hex4(parser *ps, uint32_t *out) {
  if (ps->len - ps->pos < 4) return error_at(ps, "truncated \\u escape");
  uint32_t v = 0;
  for (int i = 0; i < 4; i++) {
    char c = ps->p[ps->pos + (size_t)i];
    v <<= 4;
    if (c >= '0' && c <= '9') v |= (uint32_t)(c - '0');
    else if (c >= 'a' && c <= 'f') v |= (uint32_t)(c - 'a' + 10);
    else if (c >= 'A' && c <= 'F') v |= (uint32_t)(c - 'A' + 10);
    else return error_at(ps, "bad hex digit in \\u escape");
  }
  ps->pos += 4;
  *out = v;
  return 0;
}

/* An escape after the backslash, appended to b. */
static int parse_escape(parser *ps, buf *b) {
  int c = peek(ps);
  if (c < 0) return error_at(ps, "unterminated string");
  ps->pos++;
  const char *simple = NULL;
  switch (c) {
  case '"': simple = "\""; break;
  case '\\': simple = "\\"; break;
  case '/': simple = "/"; break;
  case 'b': simple = "\b"; break;
  case 'f': simple = "\f"; break;
  case 'n': simple = "\n"; break;
  case 'r': simple = "\r"; break;
  case 't': simple = "\t"; break;
  case 'u': break;
  default: return error_at(ps, "invalid escape");
  }
  if (simple) return buf_put(b, simple, 1) ? error_at(ps, "out of memory") : 0;

  uint32_t cp;
  if (read_hex4(ps, &cp)) return -1;
  if (cp >= 0xdc00 && cp <= 0xdfff) return error_at(ps, "lone low surrogate");
  if (cp >= 0xd800 && cp <= 0xdbff) {
    uint32_t lo;
    if (ps->len - ps->pos < 2 || ps->p[ps->pos] != '\\' || ps->p[ps->pos + 1] != 'u')
      return error_at(ps, "lone high surrogate");
    ps->pos += 2;
    if (read_hex4(ps, &lo)) return -1;
    if (lo < 0xdc00 || lo > 0xdfff) return error_at(ps, "bad surrogate pair");
    cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
  }
  return put_utf8(b, cp) ? error_at(ps, "out of memory") : 0;
}

/* A string starting at the opening quote; *out receives a malloc'd copy. */
static int parse_string(parser *ps, char **out, size_t *out_len) {
  buf b = {0};
  ps->pos++; /* the opening quote */
  for (;;) {
    int c = peek(ps);
    if (c < 0) {
      free(b.data);
      return error_at(ps, "unterminated string");
    }
    if (c == '"') {
      ps->pos++;
      break;
    }
    if (c < 0x20) {
      free(b.data);
      return error_at(ps, "control character in string");
    }
    if (c == '\\') {
      ps->pos++;
      if (parse_escape(ps, &b)) {
        free(b.data);
        return -1;
      }
      continue;
    }
    /* Copy a run of plain bytes at once. */
    size_t start = ps->pos;
    while (ps->pos < ps->len) {
      unsigned char d = (unsigned char)ps->p[ps->pos];
      if (d == '"' || d == '\\' || d < 0x20) break;
      ps->pos++;
    }
    if (buf_put(&b, ps->p + start, ps->pos - start)) {
      free(b.data);
      return error_at(ps, "out of memory");
    }
  }
  if (!b.data && buf_put(&b, "", 0)) return error_at(ps, "out of memory");
  *out = b.data;
  *out_len = b.len;
  return 0;
}

static int is_digit(int c) { return c >= '0' && c <= '9'; }

/* A number in the exact RFC 8259 grammar. */
static int parse_number(parser *ps, double *out) {
  size_t start = ps->pos;
  if (peek(ps) == '-') ps->pos++;
  if (peek(ps) == '0') {
    ps->pos++;
    if (is_digit(peek(ps))) return error_at(ps, "leading zero in number");
  } else if (is_digit(peek(ps))) {
    while (is_digit(peek(ps))) ps->pos++;
  } else {
    return error_at(ps, "invalid number");
  }
  if (peek(ps) == '.') {
    ps->pos++;
    if (!is_digit(peek(ps))) return error_at(ps, "digit expected after '.'");
    while (is_digit(peek(ps))) ps->pos++;
  }
  if (peek(ps) == 'e' || peek(ps) == 'E') {
    ps->pos++;
    if (peek(ps) == '+' || peek(ps) == '-') ps->pos++;
    if (!is_digit(peek(ps))) return error_at(ps, "digit expected in exponent");
    while (is_digit(peek(ps))) ps->pos++;
  }
  /* strtod needs a terminated copy: the input need not be terminated. */
  size_t n = ps->pos - start;
  char tmp[64];
  if (n >= sizeof tmp) return error_at(ps, "number too long");
  memcpy(tmp, ps->p + start, n);
  tmp[n] = '\0';
  *out = strtod(tmp, NULL);
  return 0;
}

static int parse_value(parser *ps, json_value *v, int depth);

/* Appends an item (and, for objects, its key) to an array or object. */
static json_value *push_item(json_value *v, char *key) {
  json_value *items = realloc(v->items, (v->count + 1) * sizeof *items);
  if (!items) return NULL;
  v->items = items;
  if (v->type == JSON_OBJECT) {
    char **keys = realloc(v->keys, (v->count + 1) * sizeof *keys);
    if (!keys) return NULL;
    v->keys = keys;
    keys[v->count] = key;
  }
  memset(&items[v->count], 0, sizeof items[v->count]);
  items[v->count].type = JSON_NULL;
  v->count++;
  return &items[v->count - 1];
}

static int parse_container(parser *ps, json_value *v, int depth) {
  int object = peek(ps) == '{';
  char close = object ? '}' : ']';
  v->type = object ? JSON_OBJECT : JSON_ARRAY;
  if (depth >= JSON_MAX_DEPTH) return error_at(ps, "nesting too deep");
  ps->pos++;
  skip_ws(ps);
  if (peek(ps) == close) {
    ps->pos++;
    return 0;
  }
  for (;;) {
    char *key = NULL;
    if (object) {
      size_t key_len;
      skip_ws(ps);
      if (peek(ps) != '"') return error_at(ps, "object key expected");
      if (parse_string(ps, &key, &key_len)) return -1;
      if (strlen(key) != key_len) {
        free(key);
        return error_at(ps, "NUL in object key");
      }
      for (size_t i = 0; i < v->count; i++)
        if (strcmp(v->keys[i], key) == 0) {
          free(key);
          return error_at(ps, "duplicate key");
        }
      skip_ws(ps);
      if (peek(ps) != ':') {
        free(key);
        return error_at(ps, "':' expected");
      }
      ps->pos++;
    }
    json_value *item = push_item(v, key);
    if (!item) {
      free(key);
      return error_at(ps, "out of memory");
    }
    if (parse_value(ps, item, depth + 1)) return -1;
    skip_ws(ps);
    int c = peek(ps);
    if (c == ',') {
      ps->pos++;
      continue;
    }
    if (c == close) {
      ps->pos++;
      return 0;
    }
    return error_at(ps, object ? "',' or '}' expected" : "',' or ']' expected");
  }
}

static int parse_value(parser *ps, json_value *v, int depth) {
  skip_ws(ps);
  int c = peek(ps);
  switch (c) {
  case '{':
  case '[':
    return parse_container(ps, v, depth);
  case '"':
    v->type = JSON_STRING;
    return parse_string(ps, &v->str, &v->str_len);
  case 't':
    v->type = JSON_BOOL;
    v->boolean = 1;
    return expect_word(ps, "true");
  case 'f':
    v->type = JSON_BOOL;
    return expect_word(ps, "false");
  case 'n':
    v->type = JSON_NULL;
    return expect_word(ps, "null");
  case -1:
    return error_at(ps, "value expected, found end of input");
  default:
    if (c == '-' || is_digit(c)) {
      v->type = JSON_NUMBER;
      return parse_number(ps, &v->number);
    }
    return error_at(ps, "unexpected character");
  }
}

static void free_children(json_value *v) {
  if (v->type == JSON_STRING) free(v->str);
  if (v->type == JSON_ARRAY || v->type == JSON_OBJECT) {
    for (size_t i = 0; i < v->count; i++) {
      free_children(&v->items[i]);
      if (v->keys) free(v->keys[i]);
    }
    free(v->items);
    free(v->keys);
  }
}

void json_free(json_value *v) {
  if (!v) return;
  free_children(v);
  free(v);
}

int json_parse(const char *text, size_t len, json_value **out, char *err, size_t err_len) {
  parser ps = {text, len, 0, err, err_len, 0};
  if (err && err_len > 0) err[0] = '\0';
  *out = NULL;
  json_value *root = calloc(1, sizeof *root);
  if (!root) return error_at(&ps, "out of memory");
  root->type = JSON_NULL;
  if (parse_value(&ps, root, 0) == 0) {
    skip_ws(&ps);
    if (ps.pos != ps.len) error_at(&ps, "trailing data after the value");
  }
  if (ps.failed) {
    json_free(root);
    return -1;
  }
  *out = root;
  return 0;
}

int json_parse_file(const char *path, json_value **out, char *err, size_t err_len) {
  *out = NULL;
  FILE *f = fopen(path, "rb");
  if (!f) {
    if (err) snprintf(err, err_len, "cannot open %s", path);
    return -1;
  }
  buf b = {0};
  char chunk[4096];
  size_t n;
  int rc = 0;
  while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
    if (buf_put(&b, chunk, n)) {
      rc = -1;
      break;
    }
  if (ferror(f)) rc = -1;
  fclose(f);
  if (rc != 0) {
    if (err) snprintf(err, err_len, "cannot read %s", path);
    free(b.data);
    return -1;
  }
  rc = json_parse(b.data ? b.data : "", b.len, out, err, err_len);
  free(b.data);
  return rc;
}

const json_value *json_get(const json_value *v, const char *key) {
  if (!v || v->type != JSON_OBJECT) return NULL;
  for (size_t i = 0; i < v->count; i++)
    if (strcmp(v->keys[i], key) == 0) return &v->items[i];
  return NULL;
}

const char *json_get_string(const json_value *v, const char *key) {
  const json_value *s = json_get(v, key);
  return s && s->type == JSON_STRING ? s->str : NULL;
}
