/*
 * A small, strict JSON reader for test vectors (RFC 8259). It builds a tree
 * that the caller frees with json_free(). Strict means: no trailing commas,
 * no comments, no leading zeros, no control characters in strings, no
 * duplicate keys in one object, nothing after the top-level value, and at
 * most JSON_MAX_DEPTH levels of nesting.
 */
#ifndef TERN_TEST_JSON_H
#define TERN_TEST_JSON_H

#include <stddef.h>

#define JSON_MAX_DEPTH 64

typedef enum json_type {
  JSON_NULL,
  JSON_BOOL,
  JSON_NUMBER,
  JSON_STRING,
  JSON_ARRAY,
  JSON_OBJECT,
} json_type;

typedef struct json_value json_value;

struct json_value {
  json_type type;
  int boolean;        /* JSON_BOOL */
  double number;      /* JSON_NUMBER */
  char *str;          /* JSON_STRING: UTF-8, NUL-terminated (may hold NULs) */
  size_t str_len;     /* JSON_STRING: bytes, without the terminator */
  json_value *items;  /* JSON_ARRAY / JSON_OBJECT: the elements or values */
  char **keys;        /* JSON_OBJECT: keys[i] names items[i] */
  size_t count;       /* JSON_ARRAY / JSON_OBJECT: number of items */
};

/* Parses text[0..len). On success *out owns a tree for json_free() and 0 is
 * returned. On failure *out is NULL, -1 is returned and, when err is not
 * NULL, err[0..err_len) describes the problem and its byte offset. */
int json_parse(const char *text, size_t len, json_value **out, char *err, size_t err_len);

/* Reads and parses a whole file; as json_parse(), with I/O errors in err. */
int json_parse_file(const char *path, json_value **out, char *err, size_t err_len);

/* Frees a tree from json_parse(); NULL is accepted. */
void json_free(json_value *v);

/* The value of `key` in an object, or NULL if v is not an object or has no
 * such key. */
const json_value *json_get(const json_value *v, const char *key);

/* The string of `key` in an object, or NULL if missing or not a string. */
const char *json_get_string(const json_value *v, const char *key);

#endif
