/* Helpers shared by tests: temp dirs, spawning tools, loopback relays. */
#ifndef TERN_TEST_H
#define TERN_TEST_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Monotonic milliseconds (CLOCK_MONOTONIC), for test deadlines. */
uint64_t tt_now_ms(void);

/* Sleeps ms milliseconds (all of them: an interrupted sleep goes on). */
void tt_sleep_ms(unsigned ms);

/* Creates a fresh temporary directory; returns a malloc'd path. */
char *tt_tempdir(void);

/* Removes a directory tree made by tt_tempdir(). */
void tt_rmtree(const char *path);

/* Path of a built tool, e.g. tt_tool("ternd") -> ".../tools/ternd/ternd". */
const char *tt_tool(const char *name);

/* Runs argv with stdin from `input` (may be NULL), capturing stdout and
 * stderr into malloc'd strings (may be NULL to discard). Waits at most
 * timeout_ms, then kills it. Returns the exit status, or -1 on timeout,
 * 128+signal if killed by a signal. */
int tt_run(char *const argv[], const char *input, char **out, char **err, int timeout_ms);

/* Starts argv in the background with stdout/stderr going to `log_path`.
 * Returns the pid. */
pid_t tt_spawn(char *const argv[], const char *log_path);

/* As tt_spawn, with the child in process group `group` (0: a group of its
 * own; -1: the caller's, as tt_spawn) and killed when the caller dies. */
pid_t tt_spawn_in_group(char *const argv[], const char *log_path, pid_t group);

/* Sends SIGTERM, waits up to timeout_ms, then SIGKILL. Returns exit status. */
int tt_stop(pid_t pid, int timeout_ms);

/* Reads a whole file into a malloc'd NUL-terminated string, or NULL. */
char *tt_read_file(const char *path);

/* Waits until `path` exists and is non-empty, up to timeout_ms. 0 on success. */
int tt_wait_file(const char *path, int timeout_ms);

/* Writes `data` to `path`; aborts the test on failure. */
void tt_write_file(const char *path, const char *data);

#endif
