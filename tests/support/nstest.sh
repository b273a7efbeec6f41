# nstest.sh: what the namespace tests share (sourced; NSTEST names the test).
#   nstest_need BUILD BIN...   the test's programs exist, or FAIL
#   skip WHY                   exit 77 (ctest: skipped), or FAIL under CI=true
#   nstest_can_netns           root and network namespaces, or skip
#   fail WHAT                  report a failure and count it in FAILS
#   wait_for FILE REGEX SECS   0 as soon as a line of FILE matches
#   field LINE NAME            the word after NAME in a talk_client summary
FAILS=0

skip() {
  if [[ ${CI:-} == true ]]; then echo "$NSTEST: FAIL: CI=true but $1" >&2; exit 1; fi
  echo "$NSTEST: SKIP: $1" >&2
  exit 77
}

nstest_need() {
  local f
  for f in "$@"; do [[ -x $f ]] || { echo "$NSTEST: FAIL: missing $f" >&2; exit 1; }; done
}

nstest_can_netns() {
  [[ $(id -u) -eq 0 ]] || skip "needs root (network namespaces)"
  ip netns add "nsprobe$$" 2>/dev/null || skip "cannot create network namespaces"
  ip netns del "nsprobe$$"
}

fail() { echo "$NSTEST: FAIL: $*" >&2; FAILS=$((FAILS + 1)); }

wait_for() {
  local end=$(( $(date +%s) + $3 ))
  while (( $(date +%s) <= end )); do
    grep -Eq "$2" "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

field() { awk -v k="$2" '{ for (i = 1; i < NF; i++) if ($i == k) print $(i + 1) }' <<<"$1"; }
