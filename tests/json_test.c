/*
 * Tests of the strict JSON reader in tests/support: the vector tests trust
 * it, so it must read what RFC 8259 allows and refuse the rest.
 */
#include <criterion/criterion.h>

#include <string.h>

#include "json.h"

static json_value *parse_ok(const char *text) {
  json_value *v = NULL;
  char err[128];
  cr_assert_eq(json_parse(text, strlen(text), &v, err, sizeof err), 0, "%s: %s", text, err);
  cr_assert_not_null(v);
  return v;
}

Test(json, reads_the_vector_schema_shapes) {
  json_value *v = parse_ok(" {\"a\": [\"00ff\", {\"b\": \"\"}], \"n\": -1.5e2, \"t\": true,"
                           " \"f\": false, \"z\": null, \"e\": [], \"o\": {}} ");
  const json_value *a = json_get(v, "a");
  cr_assert(a && a->type == JSON_ARRAY && a->count == 2);
  cr_assert_str_eq(a->items[0].str, "00ff");
  cr_assert_str_eq(json_get_string(&a->items[1], "b"), "");
  cr_assert_eq(json_get(v, "n")->number, -150.0);
  cr_assert_eq(json_get(v, "t")->boolean, 1);
  cr_assert_eq(json_get(v, "f")->boolean, 0);
  cr_assert_eq(json_get(v, "z")->type, JSON_NULL);
  cr_assert_eq(json_get(v, "e")->count, 0);
  cr_assert_eq(json_get(v, "o")->type, JSON_OBJECT);
  cr_assert_null(json_get(v, "missing"));
  cr_assert_null(json_get_string(v, "n"));
  json_free(v);
}

Test(json, decodes_escapes_to_utf8) {
  json_value *v = parse_ok("\"a\\\"\\\\\\/\\n\\u00e9\\u20ac\\ud83d\\ude00\"");
  cr_assert_eq(v->type, JSON_STRING);
  const char want[] = "a\"\\/\n\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80";
  cr_assert_eq(v->str_len, sizeof want - 1);
  cr_assert_arr_eq(v->str, want, sizeof want - 1);
  json_free(v);
}

Test(json, refuses_what_rfc8259_does_not_allow) {
  const char *bad[] = {
    "",           "{",          "[1,]",        "{\"a\":1,}",     "{\"a\" 1}",
    "{a:1}",      "01",         "1.",          "-",              "1e",
    "+1",         "tru",        "nul",         "\"abc",          "\"\\x\"",
    "\"\\u12\"",  "\"\\ud800\"", "\"\\udc00\"", "\"a\nb\"",       "[1] [2]",
    "{\"a\":1,\"a\":2}",        "// c\n1",     "'s'",            "[1 2]",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    json_value *v = (json_value *)1;
    char err[128] = "";
    cr_assert_eq(json_parse(bad[i], strlen(bad[i]), &v, err, sizeof err), -1, "accepted: %s",
                 bad[i]);
    cr_assert_null(v);
    cr_assert_neq(err[0], '\0', "no error message for: %s", bad[i]);
  }
}

Test(json, limits_nesting_and_stops_at_len) {
  char deep[2 * JSON_MAX_DEPTH + 8];
  size_t n = 0;
  for (int i = 0; i <= JSON_MAX_DEPTH; i++) deep[n++] = '[';
  for (int i = 0; i <= JSON_MAX_DEPTH; i++) deep[n++] = ']';
  json_value *v = NULL;
  cr_assert_eq(json_parse(deep, n, &v, NULL, 0), -1);
  /* Only len bytes are read: "12" cut to one byte is the number 1. */
  cr_assert_eq(json_parse("12", 1, &v, NULL, 0), 0);
  cr_assert_eq(v->number, 1.0);
  json_free(v);
}
