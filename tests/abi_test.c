/*
 * Structs that can grow (tern.h, "ABI and growing structs"): configs come
 * in at the caller's struct_size, filled structs go out at the caller's
 * size. The public functions are called as a program built against an
 * older or a newer header would call them.
 */
#include <criterion/criterion.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "base/abi.h"
#include "tern/tern.h"

/* A library's config at two versions: v2 added a field at the end. */
typedef struct cfg_v1 {
  size_t struct_size;
  uint32_t a;
  const char *name;
} cfg_v1;

typedef struct cfg_v2 {
  size_t struct_size;
  uint32_t a;
  const char *name;
  uint32_t added; /* new in v2, default 7 */
} cfg_v2;

static void v2_default(cfg_v2 *c) {
  memset(c, 0, sizeof *c);
  c->struct_size = sizeof *c;
  c->a = 1;
  c->added = 7;
}

/* A v1 program's config reaches a v2 library: its fields are taken, the
 * field it does not know has its default. */
Test(abi, an_older_config_keeps_its_fields_and_gets_defaults_for_the_rest) {
  cfg_v1 old = {.struct_size = sizeof(cfg_v1), .a = 42, .name = "old"};
  cfg_v2 full;
  v2_default(&full);
  const char *why = "unset";
  cr_assert_eq(tern__abi_config_in(&full, sizeof full, sizeof(cfg_v1), &old, old.struct_size, &why), 0);
  cr_assert_null(why);
  cr_assert_eq(full.a, 42);
  cr_assert_str_eq(full.name, "old");
  cr_assert_eq(full.added, 7, "the field the old program never saw has its default");
}

/* A v2 program's config reaches a v1 library: fine while the new field is
 * zero (unused), refused when set, since v1 cannot honour it. */
Test(abi, a_newer_config_is_taken_only_if_its_new_fields_are_unset) {
  cfg_v2 newer;
  v2_default(&newer);
  newer.added = 0;
  newer.a = 5;
  cfg_v1 full = {.struct_size = sizeof(cfg_v1), .a = 1};
  const char *why = NULL;
  cr_assert_eq(tern__abi_config_in(&full, sizeof full, sizeof full, &newer, sizeof newer, &why), 0);
  cr_assert_eq(full.a, 5);
  newer.added = 3;
  cr_assert_eq(tern__abi_config_in(&full, sizeof full, sizeof full, &newer, sizeof newer, &why), TERN_EINVAL);
  cr_assert(strstr(why, "does not know"), "%s", why);
}

static void client_cfg(tern_client_config *c) {
  tern_client_config_default(c);
  c->relay_host = "127.0.0.1";
  c->relay_port = 9; /* nothing is sent before tern_client_connect() */
  cr_assert_eq(tern_keypair_generate(&c->keypair), 0);
}

Test(abi, client_new_checks_struct_size) {
  tern_client_config c;
  tern_client *cl = NULL;
  client_cfg(&c);
  cr_assert_eq(c.struct_size, sizeof c, "set by _default");
  cr_assert_eq(tern_client_new(&cl, &c), 0);
  tern_client_free(cl);

  c.struct_size = 0;
  cr_assert_eq(tern_client_new(&cl, &c), TERN_EINVAL, "a config that never went through _default");
  cr_assert_null(cl);
  c.struct_size = offsetof(tern_client_config, user);
  cr_assert_eq(tern_client_new(&cl, &c), TERN_EINVAL, "smaller than the first layout");

  /* A program built against a newer header: its config is larger. */
  struct {
    tern_client_config c;
    uint64_t newer_field;
  } bigger;
  memset(&bigger, 0, sizeof bigger);
  client_cfg(&bigger.c);
  bigger.c.struct_size = sizeof bigger;
  cr_assert_eq(tern_client_new(&cl, &bigger.c), 0, "newer fields left unset: fine");
  tern_client_free(cl);
  cl = NULL;
  bigger.newer_field = 1;
  cr_assert_eq(tern_client_new(&cl, &bigger.c), TERN_EINVAL, "a newer field set: refused");
  cr_assert_null(cl);
}

typedef struct logged {
  char line[256];
} logged;

static void keep_line(void *ctx, int level, const char *line) {
  (void)level;
  snprintf(((logged *)ctx)->line, sizeof(((logged *)ctx)->line), "%s", line);
}

Test(abi, relay_new_checks_struct_size_and_says_why) {
  tern_relay_config r;
  tern_relay *relay = NULL;
  logged log = {""};
  tern_relay_config_default(&r);
  cr_assert_eq(r.struct_size, sizeof r);
  r.bind_host = "127.0.0.1";
  r.port = 0;
  r.log = keep_line;
  r.log_ctx = &log;
  cr_assert_eq(tern_keypair_generate(&r.keypair), 0);
  struct {
    tern_relay_config r;
    uint32_t newer_field;
  } bigger;
  memset(&bigger, 0, sizeof bigger);
  bigger.r = r;
  bigger.r.struct_size = sizeof bigger;
  bigger.newer_field = 9;
  cr_assert_eq(tern_relay_new(&relay, &bigger.r), TERN_EINVAL);
  cr_assert(strstr(log.line, "does not know"), "the relay's log says why: '%s'", log.line);
  bigger.newer_field = 0;
  cr_assert_eq(tern_relay_new(&relay, &bigger.r), 0);
  tern_relay_free(relay);
}

/* Filled structs go out at the caller's size: an older program's smaller
 * struct is filled exactly (nothing written past it), a newer program's
 * larger one is zero past what this library knows. */
Test(abi, filled_structs_respect_the_callers_size) {
  tern_relay_config r;
  tern_relay *relay = NULL;
  tern_relay_config_default(&r);
  r.bind_host = "127.0.0.1";
  r.port = 0;
  cr_assert_eq(tern_keypair_generate(&r.keypair), 0);
  cr_assert_eq(tern_relay_new(&relay, &r), 0);
  size_t old = offsetof(tern_relay_stats, packets_rejected);
  unsigned char buf[sizeof(tern_relay_stats) + 32];
  memset(buf, 0x5a, sizeof buf);
  tern_relay_get_stats_sized(relay, (tern_relay_stats *)(void *)buf, old);
  for (size_t i = old; i < sizeof buf; i++) cr_assert_eq(buf[i], 0x5a, "byte %zu written past the caller's size", i);
  tern_relay_get_stats_sized(relay, (tern_relay_stats *)(void *)buf, sizeof buf);
  for (size_t i = sizeof(tern_relay_stats); i < sizeof buf; i++) cr_assert_eq(buf[i], 0, "a newer field reads 0");
  tern_relay_free(relay);

  tern_client_config c;
  tern_client *cl = NULL;
  client_cfg(&c);
  cr_assert_eq(tern_client_new(&cl, &c), 0);
  tern_client_stats st;
  memset(&st, 0xff, sizeof st);
  tern_client_get_stats(cl, &st);
  cr_assert_eq(st.connects, 0, "the macro passes the full size");
  tern_keepalive_info ki;
  memset(&ki, 0xff, sizeof ki);
  tern_client_keepalive(cl, &ki);
  cr_assert_eq(ki.keepalives, 0);
  tern_event ev;
  cr_assert_eq(tern_client_next_event(cl, &ev), 0, "no event yet");
  tern_client_free(cl);
}
