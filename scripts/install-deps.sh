#!/usr/bin/env bash
# Installs what building and testing Vigil needs on a fresh machine of this
# kind (Debian, root, Rust toolchain present). Idempotent: a second run only
# checks. Today nothing beyond the Rust toolchain is needed: protobuf code is
# generated with the pure-Rust protox compiler, storage is embedded redb.
# Later tiers add their servers here (clang for eBPF, ClickHouse, Chromium,
# an OpenID provider), each started by the tests on loopback.
set -euo pipefail

need() { command -v "$1" >/dev/null 2>&1; }

if ! need cargo; then
  echo "install-deps: cargo not found; install the Rust toolchain (rustup) first" >&2
  exit 1
fi
for component in rustfmt clippy; do
  if ! rustup component list --installed 2>/dev/null | grep -q "^${component}"; then
    rustup component add "$component"
  fi
done
# curl: the end-to-end tests ping the heartbeat monitor with it, as cron jobs do.
if ! need curl; then
  apt-get update -qq && apt-get install -y -qq --no-install-recommends curl
fi
echo "install-deps: toolchain ready ($(rustc --version))"
