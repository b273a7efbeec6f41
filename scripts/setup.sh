#!/usr/bin/env bash
# Installs the Debian packages tern needs to build, test and bench, if any are
# missing. Safe to run again: it installs nothing when everything is there.
set -euo pipefail

PACKAGES=(
  build-essential cmake pkg-config clang
  libsodium-dev libenet-dev libcriterion-dev libsqlite3-dev sqlite3 libc-ares-dev
  iproute2 nftables tcpdump conntrack tayga gnuplot-nox procps abigail-tools
  mosquitto libmosquitto-dev groff-base man-db
  nats-server libnats-dev
  libinih-dev libmicrohttpd-dev libsystemd-dev libcurl4-openssl-dev curl prometheus
  debhelper dpkg-dev fakeroot lintian
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#PACKAGES[@]} packages already installed"
  exit 0
fi

echo "setup: installing ${missing[*]}"
SUDO=
if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "setup: done"
