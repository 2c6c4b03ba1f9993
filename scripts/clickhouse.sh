#!/usr/bin/env bash
# A private ClickHouse server for tests, on loopback, in its own directory.
#
#   scripts/clickhouse.sh start DIR   # installs if needed, starts, prints the HTTP URL
#   scripts/clickhouse.sh stop DIR
#   scripts/clickhouse.sh resume DIR  # starts a stopped server again: same data, same ports
#
# CLICKHOUSE_HTTP_PORT / CLICKHOUSE_TCP_PORT choose the ports;
# CLICKHOUSE_INCLUDE_FROM names a substitutions file (see clickhouse-cluster.sh).
#
# Debian's clickhouse-server (18.16) is the one these machines can install;
# its packaging cannot start services (policy-rc.d), so we run the binary
# ourselves with a copy of its config pointed at DIR and at free ports.
set -euo pipefail

cmd=${1:?usage: clickhouse.sh start|stop|resume DIR}
dir=${2:?usage: clickhouse.sh start|stop DIR}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

launch() {
  nohup clickhouse-server --config-file="$dir/config.xml" > "$dir/log/stdout.log" 2>&1 &
  echo $! > "$dir/pid"
  url=$(cat "$dir/url")
  for _ in $(seq 1 200); do
    if curl -fsS "$url/ping" >/dev/null 2>&1; then
      echo "$url"
      exit 0
    fi
    if ! kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
      echo "clickhouse.sh: server exited; see $dir/log" >&2
      tail -20 "$dir/log/server.err.log" >&2 || true
      exit 1
    fi
    sleep 0.1
  done
  echo "clickhouse.sh: server did not answer on $url within 20 s" >&2
  exit 1
}

case "$cmd" in
start)
  if ! command -v clickhouse-server >/dev/null 2>&1; then
    echo "clickhouse.sh: installing clickhouse-server (Debian package)" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends clickhouse-server clickhouse-client >&2
  fi
  mkdir -p "$dir/data" "$dir/tmp" "$dir/user_files" "$dir/format_schemas" "$dir/log"
  http_port=${CLICKHOUSE_HTTP_PORT:-$(free_port)}
  tcp_port=${CLICKHOUSE_TCP_PORT:-$(free_port)}
  inter_port=$(free_port)
  sed -e "s#<log>.*</log>#<log>$dir/log/server.log</log>#" \
      -e "s#<errorlog>.*</errorlog>#<errorlog>$dir/log/server.err.log</errorlog>#" \
      -e "s#<http_port>8123</http_port>#<http_port>$http_port</http_port>#" \
      -e "s#<tcp_port>9000</tcp_port>#<tcp_port>$tcp_port</tcp_port>#" \
      -e "s#<interserver_http_port>9009</interserver_http_port>#<interserver_http_port>$inter_port</interserver_http_port>#" \
      -e "s#<listen_host>::1</listen_host>##" \
      -e "s#<path>/var/lib/clickhouse/</path>#<path>$dir/data/</path>#" \
      -e "s#<tmp_path>/var/lib/clickhouse/tmp/</tmp_path>#<tmp_path>$dir/tmp/</tmp_path>#" \
      -e "s#<user_files_path>/var/lib/clickhouse/user_files/</user_files_path>#<user_files_path>$dir/user_files/</user_files_path>#" \
      -e "s#<format_schema_path>/var/lib/clickhouse/format_schemas/</format_schema_path>#<format_schema_path>$dir/format_schemas/</format_schema_path>#" \
      /etc/clickhouse-server/config.xml > "$dir/config.xml"
  if [ -n "${CLICKHOUSE_INCLUDE_FROM:-}" ]; then
    # substitutions (clusters, ZooKeeper) for scripts/clickhouse-cluster.sh
    sed -i "s#<yandex>#<yandex><include_from>$CLICKHOUSE_INCLUDE_FROM</include_from>#" "$dir/config.xml"
  fi
  cp /etc/clickhouse-server/users.xml "$dir/users.xml"
  sed -i "s#<users_config>users.xml</users_config>#<users_config>$dir/users.xml</users_config>#" "$dir/config.xml"
  echo "http://127.0.0.1:$http_port" > "$dir/url"
  launch
  ;;
resume)
  [ -f "$dir/config.xml" ] || { echo "clickhouse.sh: no server was started in $dir" >&2; exit 1; }
  launch
  ;;
stop)
  if [ -f "$dir/pid" ]; then
    kill "$(cat "$dir/pid")" 2>/dev/null || true
    for _ in $(seq 1 100); do
      kill -0 "$(cat "$dir/pid")" 2>/dev/null || break
      sleep 0.1
    done
    kill -9 "$(cat "$dir/pid")" 2>/dev/null || true
    rm -f "$dir/pid"
  fi
  ;;
*)
  echo "usage: clickhouse.sh start|stop|resume DIR" >&2
  exit 2
  ;;
esac
