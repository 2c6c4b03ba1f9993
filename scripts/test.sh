#!/usr/bin/env bash
# Runs every check CI runs: formatting, clippy (warnings are errors), and all
# test tiers (unit, integration, end-to-end) with the lock file enforced.
# Installs what the tests need first (scripts/install-deps.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh

# A private ClickHouse for the storage conformance suite, and a two-shard
# cluster (with ZooKeeper) for its cluster-mode backend; stopped on exit.
ch_dir=$(mktemp -d /tmp/vigil-clickhouse.XXXXXX)
cluster_dir=$(mktemp -d /tmp/vigil-clickhouse-cluster.XXXXXX)
trap 'scripts/clickhouse.sh stop "$ch_dir"; scripts/clickhouse-cluster.sh stop "$cluster_dir"; rm -rf "$ch_dir" "$cluster_dir"' EXIT
CLICKHOUSE_TEST_URL=$(scripts/clickhouse.sh start "$ch_dir")
CLICKHOUSE_CLUSTER_TEST_URL=$(scripts/clickhouse-cluster.sh start "$cluster_dir")
export CLICKHOUSE_TEST_URL CLICKHOUSE_CLUSTER_TEST_URL
echo "== ClickHouse for tests at $CLICKHOUSE_TEST_URL, cluster \"vigil\" at $CLICKHOUSE_CLUSTER_TEST_URL"

# A clean clone builds once: incremental caches only cost disk (they were
# 13 GB of a 50 GB target directory), so CI turns them off.
if [ "${CI:-}" = "true" ]; then
  export CARGO_INCREMENTAL=0
fi

start=$(date +%s)
echo "== helm lint, template, kubernetes-validate, invariants"
scripts/helm-check.sh
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --workspace --locked --no-fail-fast
echo "== ClickHouse SQL on a current engine (chdb)"
sql_dump="$ch_dir/sql.txt"
CLICKHOUSE_SQL_DUMP="$sql_dump" cargo test --locked -q -p vigil-storage --lib dump_sql >/dev/null
python3 scripts/check-modern-clickhouse.py "$sql_dump"
echo "== all checks passed in $(( $(date +%s) - start ))s"
