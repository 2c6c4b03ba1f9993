#!/usr/bin/env bash
# A two-shard ClickHouse cluster for tests, on loopback: one ZooKeeper (the
# Debian package; ClickHouse 18.16 needs it for ON CLUSTER DDL) and two
# ClickHouse servers that both know the cluster `vigil` (one replica per
# shard).
#
#   scripts/clickhouse-cluster.sh start DIR   # prints the HTTP URL of node 1
#   scripts/clickhouse-cluster.sh stop DIR
set -euo pipefail

cmd=${1:?usage: clickhouse-cluster.sh start|stop DIR}
dir=${2:?usage: clickhouse-cluster.sh start|stop DIR}
here=$(cd "$(dirname "$0")" && pwd)

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

case "$cmd" in
start)
  if [ ! -f /usr/share/java/zookeeper.jar ]; then
    echo "clickhouse-cluster.sh: installing zookeeper (Debian package)" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends zookeeper >&2
  fi
  mkdir -p "$dir/zk/data"
  zk_port=$(free_port)
  cat > "$dir/zk/zoo.cfg" <<CFG
tickTime=2000
dataDir=$dir/zk/data
clientPort=$zk_port
clientPortAddress=127.0.0.1
admin.enableServer=false
4lw.commands.whitelist=ruok
CFG
  nohup java -cp "/etc/zookeeper/conf:/usr/share/java/*" -Dzookeeper.log.dir="$dir/zk" \
    org.apache.zookeeper.server.quorum.QuorumPeerMain "$dir/zk/zoo.cfg" > "$dir/zk/out.log" 2>&1 &
  echo $! > "$dir/zk/pid"
  for _ in $(seq 1 100); do
    if [ "$( (exec 3<>"/dev/tcp/127.0.0.1/$zk_port" && echo ruok >&3 && timeout 1 cat <&3) 2>/dev/null)" = imok ]; then
      break
    fi
    sleep 0.2
  done
  tcp1=$(free_port)
  tcp2=$(free_port)
  cat > "$dir/metrika.xml" <<XML
<yandex>
  <clickhouse_remote_servers>
    <vigil>
      <shard><replica><host>127.0.0.1</host><port>$tcp1</port></replica></shard>
      <shard><replica><host>127.0.0.1</host><port>$tcp2</port></replica></shard>
    </vigil>
  </clickhouse_remote_servers>
  <zookeeper-servers>
    <node><host>127.0.0.1</host><port>$zk_port</port></node>
  </zookeeper-servers>
</yandex>
XML
  export CLICKHOUSE_INCLUDE_FROM="$dir/metrika.xml"
  url1=$(CLICKHOUSE_TCP_PORT=$tcp1 "$here/clickhouse.sh" start "$dir/node1")
  CLICKHOUSE_TCP_PORT=$tcp2 "$here/clickhouse.sh" start "$dir/node2" >/dev/null
  echo "$url1"
  ;;
stop)
  for node in node1 node2; do
    [ -d "$dir/$node" ] && "$here/clickhouse.sh" stop "$dir/$node"
  done
  if [ -f "$dir/zk/pid" ]; then
    kill "$(cat "$dir/zk/pid")" 2>/dev/null || true
    rm -f "$dir/zk/pid"
  fi
  ;;
*)
  echo "usage: clickhouse-cluster.sh start|stop DIR" >&2
  exit 2
  ;;
esac
