/*
 * ternd's settings: their defaults, the command line and the config file
 * (INI syntax, read with libinih). Every long flag that takes part in the
 * relay's setup is also a key of the file, under the same name; a flag
 * given on the command line overrides the file. Errors name where they
 * come from: "--listen: ..." or "FILE:LINE: key 'listen': ...".
 *
 * Owns: the ternd_opts strings (freed by ternd_opts_free), the usage text.
 */
#ifndef TERND_OPTIONS_H
#define TERND_OPTIONS_H

#include <stdint.h>
#include <stdio.h>

#include "tern/tern.h"

typedef struct ternd_opts {
  char *config_path;      /* --config FILE, or NULL: flags only */
  int check_only;         /* --check-config: validate, print, exit */
  char *key_path;         /* --key */
  char *allow_path;       /* --allow, or NULL */
  int open_mode;          /* --open */
  char *token_key;        /* --token-key HEX|FILE, or NULL */
  char *revoked_path;     /* --revoked FILE, or NULL */
  char *port_file;        /* --port-file, or NULL */
  char *data_dir;         /* --data-dir */
  char *store_url;        /* --store nats://..., or NULL: DATA_DIR/relay.db */
  long tcp_port;          /* --listen-tcp, -1: none */
  char host[256];         /* --listen's host part (cfg.port has its port) */
  int metrics_on;         /* --metrics given */
  char metrics_host[256]; /* --metrics HOST (an IP literal) */
  uint16_t metrics_port;
  char *admin_path;       /* --admin-socket, or NULL */
  char *push_url;         /* --push-url URL, or NULL: no push notifications */
  char *push_secret_path; /* --push-secret FILE, or NULL */
  uint32_t push_interval_s;  /* --push-interval (30) */
  uint32_t push_max_pending; /* --push-max-pending (10000) */
  int presence;           /* --presence: tell contacts who is online */
  uint32_t drain_deadline_s; /* --drain-deadline: a drain ends after this (20) */
  uint32_t drain_spread_s;   /* --drain-spread: the clients' delays span this (10) */
  int verbosity;          /* 0 error, 1 warning, 2 info (default), 3 debug */
  int flags_used;         /* settings given on the command line */
  int file_keys;          /* keys read from the config file */
  /* Where each setting came from, by key (options.c): 0 default, -1 the
   * command line, N > 0 line N of the config file. */
#define TERND_MAX_KEYS 48
  int source[TERND_MAX_KEYS];
  tern_relay_config cfg;  /* the relay's fields (bind_host, store and key are set by main) */
} ternd_opts;

/* What ternd_opts_parse decided. */
enum {
  TERND_RUN = 0,      /* start the relay */
  TERND_EXIT_OK = 1,  /* --help, --version, or --check-config that passed */
  TERND_EXIT_BAD = 2, /* a bad command line (exit status 2) */
  TERND_EXIT_FILE = 3 /* a bad config file (exit status 2, or 1 under --check-config) */
};

/* Fills *o from the defaults, then the config file named by --config (if
 * any), then the other flags. Prints --help/--version to stdout and errors
 * to stderr. Returns one of the values above; *o is to be freed with
 * ternd_opts_free whatever it returns. */
int ternd_opts_parse(ternd_opts *o, int argc, char **argv);
void ternd_opts_free(ternd_opts *o);

/* Writes every setting as a config-file line ("key = value  # source"),
 * for --check-config. */
void ternd_opts_print(const ternd_opts *o, FILE *f);

/* Splits "HOST:PORT" ("[V6]:PORT" too; an empty host is "::"). Returns 0,
 * or -1 if it is not that. */
int ternd_split_hostport(const char *s, char *host, size_t cap, uint16_t *port);

#endif
