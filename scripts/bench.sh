#!/usr/bin/env bash
# Storage benchmarks with their peers: installs VictoriaMetrics (Debian) and
# starts a private ClickHouse, then runs `cargo bench -p vigil-storage`.
# Figures are printed; nothing is asserted. Env is passed through (SERIES,
# SAMPLES, BATCH, WRITERS).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
if ! command -v victoria-metrics >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends victoria-metrics
fi
ch_dir=$(mktemp -d /tmp/vigil-clickhouse.XXXXXX)
trap 'scripts/clickhouse.sh stop "$ch_dir"; rm -rf "$ch_dir"' EXIT
CLICKHOUSE_TEST_URL=$(scripts/clickhouse.sh start "$ch_dir")
export CLICKHOUSE_TEST_URL
cargo bench --locked -p vigil-storage --bench metrics
