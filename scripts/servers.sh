# Shared test servers, started once per test run on loopback: sourced by
# scripts/test.sh. Each start_* function starts a server whose binary is installed and
# whose address variable is not already set, waits until it answers, and exports the
# address the tests read:
#   AIS_TEST_CLICKHOUSE  http://127.0.0.1:PORT   (ClickHouse HTTP interface)
#   AIS_TEST_KAFKA       127.0.0.1:PORT          (Tansu, a Kafka-API broker, memory storage)
# Servers live in one temporary directory and are stopped by stop_servers (test.sh
# calls it on exit). Tests that stop a server (drills) start their own instead.

servers_dir=""
server_pids=()

# A free loopback TCP port (the kernel picks it; a race with another process binding
# it before the server does is possible but harmless: the server then fails to start
# and the run says so).
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

ensure_servers_dir() {
  [ -n "$servers_dir" ] || servers_dir=$(mktemp -d "${TMPDIR:-/tmp}/ais-test-servers.XXXXXX")
}

# wait_until DESCRIPTION PID COMMAND...: polls COMMAND for up to 30 s.
wait_until() {
  local what=$1 pid=$2
  shift 2
  for _ in $(seq 1 300); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    kill -0 "$pid" 2>/dev/null || { echo "servers: $what exited during start-up; its log:" >&2; cat "$servers_dir/$what.log" >&2; return 1; }
    sleep 0.1
  done
  echo "servers: $what did not become ready in 30 s" >&2
  return 1
}

start_clickhouse() {
  [ -z "${AIS_TEST_CLICKHOUSE:-}" ] || return 0
  command -v clickhouse-server >/dev/null || { echo "servers: clickhouse-server is not installed; ClickHouse tests will say so" >&2; return 0; }
  ensure_servers_dir
  local dir="$servers_dir/clickhouse" http tcp
  mkdir -p "$dir"
  http=$(free_port); tcp=$(free_port)
  sed "s|@DIR@|$dir|g" "$(dirname "${BASH_SOURCE[0]}")/ci/clickhouse-config.xml" >"$dir/config.xml"
  cp "$(dirname "${BASH_SOURCE[0]}")/ci/clickhouse-users.xml" "$dir/users.xml"
  clickhouse-server --config-file="$dir/config.xml" -- --http_port="$http" --tcp_port="$tcp" \
    >"$servers_dir/clickhouse.log" 2>&1 &
  server_pids+=($!)
  wait_until clickhouse $! curl -fsS "http://127.0.0.1:$http/ping"
  export AIS_TEST_CLICKHOUSE="http://127.0.0.1:$http"
  echo "servers: ClickHouse at $AIS_TEST_CLICKHOUSE" >&2
}

start_kafka() {
  [ -z "${AIS_TEST_KAFKA:-}" ] || return 0
  command -v tansu >/dev/null || { echo "servers: tansu is not installed; Kafka tests will say so" >&2; return 0; }
  ensure_servers_dir
  local dir="$servers_dir/tansu" port
  mkdir -p "$dir"
  port=$(free_port)
  # Tansu reads a .env in its working directory: it runs in an empty one.
  (cd "$dir" && exec tansu broker --listener-url "tcp://127.0.0.1:$port" \
    --advertised-listener-url "tcp://127.0.0.1:$port" --storage-engine memory://tansu/) \
    >"$servers_dir/tansu.log" 2>&1 &
  server_pids+=($!)
  wait_until tansu $! bash -c "exec 3<>/dev/tcp/127.0.0.1/$port"
  export AIS_TEST_KAFKA="127.0.0.1:$port"
  # Tansu reports partition end offsets per batch, not per record (see the log tests).
  export AIS_TEST_KAFKA_IS_TANSU=1
  echo "servers: Tansu (Kafka API) at $AIS_TEST_KAFKA" >&2
}

# Redis for the overflow tests, with the durability the overflow requires (AOF, fsync
# on every write). Tests isolate themselves by key (one topic each).
start_redis() {
  [ -z "${AIS_TEST_REDIS:-}" ] || return 0
  command -v redis-server >/dev/null || { echo "servers: redis-server is not installed; Redis tests will say so" >&2; return 0; }
  ensure_servers_dir
  local dir="$servers_dir/redis" port
  mkdir -p "$dir"
  port=$(free_port)
  redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" --appendonly yes \
    --appendfsync always --save "" >"$servers_dir/redis.log" 2>&1 &
  server_pids+=($!)
  wait_until redis $! redis-cli -p "$port" ping
  export AIS_TEST_REDIS="redis://127.0.0.1:$port"
  echo "servers: Redis at $AIS_TEST_REDIS" >&2
}

stop_servers() {
  local pid
  for pid in "${server_pids[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${server_pids[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  server_pids=()
  [ -z "$servers_dir" ] || rm -rf "$servers_dir"
}
