#!/usr/bin/env bash
# Builds the Debian packages of tern (debian/: libtern0, libtern-dev, ternd)
# with dpkg-buildpackage in a copy of the tree, runs lintian on them,
# installs them with apt-get, checks what they installed (tools in /usr/bin,
# pkg-config and CMake for the library, the unit, the config, the man
# pages), runs the installed ternd on 127.0.0.1 with two tern-chat clients
# exchanging messages through it, and purges the packages again.
#
# Usage: scripts/package.sh [OUT_DIR]   (default: build/deb; the .debs,
# .changes, .buildinfo, the build log and lintian's output are left there)
# Needs root (it installs packages) and none of the three packages installed
# beforehand: it purges them at the end, and would not put back what was there.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
out=$(mkdir -p "${1:-$here/build/deb}" && cd "${1:-$here/build/deb}" && pwd)
pkgs=(libtern0 libtern-dev ternd)

die() { echo "package: FAILED: $*" >&2; exit 1; }
step() { printf '\n== %s (%ds)\n' "$*" "$SECONDS"; }
# present PKG: true if dpkg knows PKG in any state but never-installed or purged.
present() {
  local s
  s=$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null) || return 1
  case "$s" in "" | *" not-installed") return 1 ;; *) return 0 ;; esac
}

[ "$(id -u)" -eq 0 ] || die "run as root: the script installs and purges ${pkgs[*]}"
for p in "${pkgs[@]}"; do
  if present "$p"; then
    die "$p is installed (or its config files are); purge it first (this script purges what it installs)"
  fi
done

step "1. build dependencies (scripts/setup.sh)"
bash "$here/scripts/setup.sh"

# The package's version is the project's.
version=$(sed -n 's/^project(tern VERSION \([0-9.]*\).*/\1/p' "$here/CMakeLists.txt")
[ -n "$version" ] || die "no project(tern VERSION ...) in CMakeLists.txt"
deb_version=$(dpkg-parsechangelog -l "$here/debian/changelog" -S Version)
[ "$deb_version" = "$version" ] \
  || die "debian/changelog says $deb_version, CMakeLists.txt says $version: add a changelog entry (dch -v $version)"

tmp=$(mktemp -d /tmp/tern-package.XXXXXX)
ternd_pid=
chat_pids=()
installed=0
cleanup() {
  local rc=$?
  for p in $ternd_pid "${chat_pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in $ternd_pid "${chat_pids[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ "$installed" = 1 ]; then
    echo "package: purging ${pkgs[*]} after a failure" >&2
    DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq "${pkgs[@]}" >/dev/null 2>&1 || true
  fi
  rm -rf "$tmp"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step "2. dpkg-buildpackage -us -uc -b in a copy of the tree ($tmp/tern-$version)"
# dpkg-buildpackage writes into the parent of the source tree, and leaves
# obj-*/ and debian/ build products in it: a copy keeps the worktree clean.
# The copy holds the files git knows of, committed or not (no build dirs).
src="$tmp/tern-$version"
mkdir -p "$src"
if git -C "$here" rev-parse --git-dir >/dev/null 2>&1; then
  git -C "$here" ls-files -z --cached --others --exclude-standard \
    | (cd "$here" && xargs -0 sh -c 'for f; do [ -e "$f" ] && printf "%s\0" "$f"; done' sh) \
    | tar -C "$here" --null -T - -cf - | tar -C "$src" -xf -
else
  tar -C "$here" --exclude='./build*' -cf - . | tar -C "$src" -xf -
fi
rm -f "$out"/*.deb "$out"/*.changes "$out"/*.buildinfo
build_start=$SECONDS
(cd "$src" && DEB_BUILD_OPTIONS="parallel=2${DEB_BUILD_OPTIONS:+ $DEB_BUILD_OPTIONS}" \
  dpkg-buildpackage -us -uc -b) >"$out/build.log" 2>&1 \
  || { tail -40 "$out/build.log" >&2; die "dpkg-buildpackage failed (log: $out/build.log)"; }
echo "built in $((SECONDS - build_start)) s (log: $out/build.log)"
cp "$tmp"/*.deb "$tmp"/*.changes "$tmp"/*.buildinfo "$out"/
changes="$out/tern_${version}_$(dpkg --print-architecture).changes"
[ -f "$changes" ] || die "no $changes"
for p in "${pkgs[@]}"; do
  ls "$out/${p}_${version}_"*.deb >/dev/null 2>&1 || die "no ${p}_${version} package built"
done
ls -l "$out"/*.deb

step "3. lintian (fails on errors and warnings)"
# lintian says it should not run as root; that line is the only one dropped.
lintian --fail-on error,warning --info "$changes" 2> >(grep -v 'running with root privileges' >&2) \
  | tee "$out/lintian.txt" || die "lintian found problems (above; $out/lintian.txt)"
echo "lintian: $(wc -l <"$out/lintian.txt") lines at the default level"

step "4. apt-get install ${pkgs[*]}"
debs=()
for p in "${pkgs[@]}"; do debs+=("$(ls "$out/${p}_${version}_"*.deb)"); done
installed=1
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${debs[@]}" >"$tmp/install.log" 2>&1 \
  || { cat "$tmp/install.log" >&2; die "apt-get install failed"; }
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status} ${Version}\n' "$p" | grep -q "install ok installed $version" \
    || die "$p $version is not installed after apt-get install"
done
echo "installed: ${pkgs[*]} $version"

step "5. what the packages installed"
for t in ternd tern-chat tern-keygen tern-token ternctl; do
  [ "$(command -v "$t")" = "/usr/bin/$t" ] || die "$t is not /usr/bin/$t (found: $(command -v "$t" || echo nothing))"
  v=$("/usr/bin/$t" --version) || die "/usr/bin/$t --version failed"
  case "$v" in *"$version"*) ;; *) die "/usr/bin/$t --version says '$v', expected $version";; esac
  echo "/usr/bin/$t --version: $v"
done
# The tools find the library in the system's path, not by a RUNPATH.
if readelf -d /usr/bin/ternd | grep -qE 'RPATH|RUNPATH'; then die "/usr/bin/ternd has a RUNPATH"; fi
ldd /usr/bin/ternd | grep -qE "libtern.so.0 => (/usr)?/lib/" || die "ternd does not load libtern.so.0 from the system library path"

pc=$(pkg-config --modversion tern) || die "pkg-config does not find tern"
[ "$pc" = "$version" ] || die "pkg-config --modversion tern says $pc, expected $version"
echo "pkg-config --modversion tern: $pc"
# A program built against the installed headers: shared and static via
# pkg-config, shared via CMake's find_package(tern).
mkdir -p "$tmp/dev"
cat >"$tmp/dev/v.c" <<'EOF'
#include <stdio.h>
#include <string.h>
#include <tern/tern.h>
int main(void) {
  printf("%s\n", tern_version());
  return strcmp(tern_version(), TERN_VERSION_STRING) != 0;
}
EOF
# shellcheck disable=SC2046
cc -o "$tmp/dev/v-shared" "$tmp/dev/v.c" $(pkg-config --cflags --libs tern) || die "cc with pkg-config tern failed"
# shellcheck disable=SC2046
cc -static-libgcc -o "$tmp/dev/v-static" "$tmp/dev/v.c" $(pkg-config --cflags tern) \
  /usr/lib/"$(dpkg-architecture -qDEB_HOST_MULTIARCH)"/libtern.a $(pkg-config --static --libs tern | sed 's/-ltern//') \
  || die "linking the static libtern.a with pkg-config --static failed"
cat >"$tmp/dev/CMakeLists.txt" <<'EOF'
cmake_minimum_required(VERSION 3.25)
project(v LANGUAGES C)
find_package(tern REQUIRED)
add_executable(v-cmake v.c)
target_link_libraries(v-cmake PRIVATE tern::tern)
EOF
cmake -S "$tmp/dev" -B "$tmp/dev/b" >"$tmp/dev/cmake.log" 2>&1 && cmake --build "$tmp/dev/b" >>"$tmp/dev/cmake.log" 2>&1 \
  || { cat "$tmp/dev/cmake.log" >&2; die "find_package(tern) and tern::tern failed"; }
for b in "$tmp/dev/v-shared" "$tmp/dev/v-static" "$tmp/dev/b/v-cmake"; do
  [ "$("$b")" = "$version" ] || die "$(basename "$b") prints $("$b" || true), expected $version"
done
echo "libtern-dev: built and ran programs with pkg-config (shared, static) and find_package(tern)"
if nm -D /usr/lib/"$(dpkg-architecture -qDEB_HOST_MULTIARCH)"/libtern.so.0 | grep -q ' tern__'; then
  die "libtern.so.0 exports internal tern__ symbols"
fi

unit=/lib/systemd/system/ternd.service
[ -f "$unit" ] || die "no $unit"
grep -q '^ExecStart=/usr/bin/ternd --config /etc/tern/ternd.conf' "$unit" || die "$unit does not run /usr/bin/ternd with /etc/tern/ternd.conf"
if command -v systemd-analyze >/dev/null; then
  systemd-analyze verify "$unit" || die "systemd-analyze verify $unit failed"
  echo "$unit: systemd-analyze verify OK"
fi
for f in /etc/tern/ternd.conf /etc/tern/allow.txt; do
  [ -f "$f" ] || die "no $f"
  dpkg-query -W -f='${Conffiles}\n' ternd | grep -q " $f " || die "$f is not a conffile of ternd"
done
# The shipped config and (empty) allow-list are valid as they are: only
# the key and the store, made by the unit in /var/lib/ternd, are put elsewhere.
/usr/bin/tern-keygen "$tmp/check.key" >/dev/null 2>&1
/usr/bin/ternd --check-config --config /etc/tern/ternd.conf --key "$tmp/check.key" \
  --data-dir "$tmp/check-data" >"$tmp/check.out" 2>&1 \
  || { cat "$tmp/check.out" >&2; die "ternd --check-config rejects the shipped /etc/tern/ternd.conf"; }
tail -1 "$tmp/check.out"

for m in /usr/share/man/man8/ternd.8.gz /usr/share/man/man1/tern-chat.1.gz /usr/share/man/man1/tern-keygen.1.gz /usr/share/man/man1/tern-token.1.gz /usr/share/man/man1/ternctl.1.gz; do
  dpkg -L ternd | grep -qx "$m" || die "ternd does not ship $m"
done
if [ -f /usr/share/man/man8/ternd.8.gz ]; then
  [ "$(man -w ternd)" = /usr/share/man/man8/ternd.8.gz ] || die "man -w ternd does not find the packaged page"
  MANWIDTH=80 man ternd 2>"$tmp/man.err" | grep -q -- '--config' || die "man ternd does not render (or lacks --config)"
  [ ! -s "$tmp/man.err" ] || { cat "$tmp/man.err" >&2; die "man ternd warns"; }
  echo "man ternd: renders ($(MANWIDTH=80 man ternd 2>/dev/null | wc -l) lines)"
else
  # Slim images tell dpkg not to unpack man pages (path-exclude).
  grep -rqs 'path-exclude=*/usr/share/man' /etc/dpkg/dpkg.cfg.d/ \
    || die "ternd lists /usr/share/man/man8/ternd.8.gz but it is not on disk"
  echo "man ternd: skipped, dpkg excludes /usr/share/man on this machine (the package ships the pages)"
fi

# Under systemd the postinst enabled and started ternd.service (with the
# shipped config: nobody allowed yet); elsewhere (containers) it cannot.
if [ -d /run/systemd/system ]; then
  systemctl is-enabled --quiet ternd.service || die "ternd.service is not enabled after install"
  for _ in $(seq 50); do systemctl is-active --quiet ternd.service && break; sleep 0.2; done
  systemctl is-active --quiet ternd.service || { systemctl status ternd.service >&2 || true; die "ternd.service is not active after install"; }
  [ -f /var/lib/ternd/relay.key ] || die "ternd.service did not make /var/lib/ternd/relay.key"
  echo "ternd.service: enabled and active under systemd"
else
  echo "ternd.service: not started (no systemd running here; the postinst starts it where there is)"
fi

step "6. the installed ternd on 127.0.0.1, alice and bob exchanging messages through it"
run="$tmp/run"
mkdir -p "$run"
cd "$run"
relay_pub=$(/usr/bin/tern-keygen relay.key 2>/dev/null)
alice_pub=$(/usr/bin/tern-keygen alice.key 2>/dev/null)
bob_pub=$(/usr/bin/tern-keygen bob.key 2>/dev/null)
printf '%s alice\n%s bob\n' "$alice_pub" "$bob_pub" >allow.txt
/usr/bin/ternd --key relay.key --allow allow.txt --listen 127.0.0.1:0 --port-file port \
  --data-dir data >ternd.log 2>&1 &
ternd_pid=$!
for _ in $(seq 100); do [ -s port ] && break; kill -0 "$ternd_pid" 2>/dev/null || break; sleep 0.05; done
[ -s port ] || { cat ternd.log >&2; die "ternd did not start listening within 5 s"; }
port=$(cat port)
echo "ternd (pid $ternd_pid) on 127.0.0.1:$port"
chat() { # chat NAME INPUT: NAME's tern-chat sends INPUT and waits for one message
  printf '%s\n' "$2" | timeout 60 /usr/bin/tern-chat --relay 127.0.0.1:"$port" --relay-key "$relay_pub" \
    --key "$1.key" --state "$1.state" --expect 1 --linger 20 >"$1.out" 2>"$1.err"
}
chat bob '@alice hello alice, bob here' &
chat_pids=($!)
chat alice '@bob hello bob, alice here' &
chat_pids+=($!)
rc=0
for p in "${chat_pids[@]}"; do wait "$p" || rc=$?; done
chat_pids=()
sed 's/^/  alice| /' alice.out
sed 's/^/  bob| /' bob.out
[ "$rc" -eq 0 ] || { cat alice.err bob.err ternd.log >&2; die "a tern-chat exited $rc"; }
grep -q '^recv bob .*hello alice, bob here' alice.out || { cat alice.err >&2; die "alice did not receive bob's message"; }
grep -q '^recv alice .*hello bob, alice here' bob.out || { cat bob.err >&2; die "bob did not receive alice's message"; }
grep -q '^delivered ' alice.out || die "alice got no delivery receipt"
grep -q '^delivered ' bob.out || die "bob got no delivery receipt"
kill -TERM "$ternd_pid"
for _ in $(seq 100); do kill -0 "$ternd_pid" 2>/dev/null || break; sleep 0.1; done
kill -0 "$ternd_pid" 2>/dev/null && die "ternd did not exit within 10 s of SIGTERM"
wait "$ternd_pid" || die "ternd exited $? on SIGTERM"
ternd_pid=
sed 's/^/  ternd| /' ternd.log
cd /

step "7. apt-get purge ${pkgs[*]}"
DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq "${pkgs[@]}" >"$tmp/purge.log" 2>&1 \
  || { cat "$tmp/purge.log" >&2; die "apt-get purge failed"; }
installed=0
for p in "${pkgs[@]}"; do
  if present "$p"; then die "$p is still installed (or its config files are) after purge"; fi
done
for f in /usr/bin/ternd /usr/bin/tern-chat /usr/bin/tern-keygen /usr/bin/tern-token /usr/bin/ternctl /etc/tern /lib/systemd/system/ternd.service \
         /usr/include/tern /var/lib/ternd; do
  [ ! -e "$f" ] || die "$f is left after purge"
done
echo "purged; nothing left"

echo
echo "package: OK: tern $version packages built, lintian-clean, installed, run and purged in ${SECONDS} s (packages in $out)"
