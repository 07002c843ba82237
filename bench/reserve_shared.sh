#!/usr/bin/env bash
# Budget check-and-reserve latency in the distributed pipeline: `ais query` with the
# holds shared in Redis and the spend read from ClickHouse's usage ledger, a budget no
# run can fill, and `ais loadgen --format reserve` at a fixed rate (default 5,000/s) as
# the independent client; then the server's own decision time per call
# (`ais_budget_decision_seconds`: handler start to answer, the Redis script included).
# Needs a ClickHouse, a Redis and a Kafka-API broker (for `ais migrate`):
# AIS_TEST_CLICKHOUSE, AIS_TEST_REDIS and AIS_TEST_KAFKA, as the tests name them.
# Usage: bench/reserve_shared.sh [RATE] [DURATION] [SERVERS]   (default 5000, 30s, 1)
set -euo pipefail
cd "$(dirname "$0")/.."
rate="${1:-5000}"
duration="${2:-30s}"
servers="${3:-1}"
: "${AIS_TEST_CLICKHOUSE:?a ClickHouse HTTP URL}" "${AIS_TEST_REDIS:?a Redis URL}" "${AIS_TEST_KAFKA:?a Kafka bootstrap address}"
cargo build --release --locked -p ais >&2
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
ais="$target_dir/release/ais"
unique="bench_reserve_$$"
clickhouse="$AIS_TEST_CLICKHOUSE/?database=$unique"
config=$(mktemp)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -f "$config" "$config".ready.*
}
trap cleanup EXIT
printf '[[budgets]]\ntenant = "default"\ndaily_usd = 1000000.0\n' >"$config"
RUST_LOG=warn "$ais" migrate --kafka "$AIS_TEST_KAFKA" --topic "ais-bench-$unique" --clickhouse "$clickhouse" --partitions 1 >/dev/null
urls=()
for n in $(seq 1 "$servers"); do
  ready="$config.ready.$n"
  RUST_LOG=warn "$ais" query --clickhouse "$clickhouse" --redis "$AIS_TEST_REDIS" --config "$config" --listen 127.0.0.1:0 >"$ready" &
  pids+=($!)
  for _ in $(seq 1 100); do grep -q ready "$ready" && break; sleep 0.1; done
  urls+=("http://$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["http"])' "$ready")")
done
# One client per server, the rate split between them.
per_server=$((rate / servers))
echo "== $servers × ais query (holds in Redis), ais loadgen --format reserve --rate $per_server each for $duration"
loads=()
for url in "${urls[@]}"; do
  "$ais" loadgen --url "$url" --format reserve --rate "$per_server" --concurrency 32 --duration "$duration" --json &
  loads+=($!)
done
for load in "${loads[@]}"; do wait "$load"; done
for url in "${urls[@]}"; do
  echo "-- $url"
  curl -fsS "$url/metrics" | grep -E '^ais_budget_decision_seconds\{route="reserve",quantile=|^ais_budget_reservations_total' || true
done
