# shellcheck shell=bash
# procs.sh: waiting helpers shared by the bench scripts (run.sh,
# migrate.sh), sourced. Both are bounded.
#
#   wait_file FILE SECONDS [any]   0 once FILE is non-empty (with "any":
#                                  once it exists), 1 after SECONDS
#   stop_pid PID                   TERM, up to 3 s to go, then KILL; reaps it

wait_file() {
  local i
  for ((i = 0; i < $2 * 20; i++)); do [[ -s $1 || ( -e $1 && ${3:-} == any ) ]] && return 0; sleep 0.05; done
  return 1
}

stop_pid() {
  local pid=$1 i
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 60; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
