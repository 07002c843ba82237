#!/usr/bin/env bash
# Benchmark of the distributed pipeline on one machine: `ais ingest` → Kafka (Tansu,
# memory storage) → two `ais stream` → ClickHouse → `ais query`, every server and the
# load generator on the same machine. Prints:
#   1. ingest ack latency through Kafka at the seed rate (1,000,000 events/minute),
#   2. the end-to-end rate: events/s acknowledged at the maximum offered rate, and
#      events/s committed to ClickHouse by the stream, with the drain time after load,
#   3. freshness: from a 202 to the event being visible in `ais query` (probes sent
#      while the seed-rate load runs), p50/p99,
#   4. ClickHouse's own ceiling: a direct bulk insert of the same raw rows (Native
#      format over HTTP, no ais in between) beside the stream's write rate.
# Needs tansu and clickhouse-server (as `.ci/run` installs them).
# Usage: bench/distributed.sh [DURATION]   (default 30s)
set -euo pipefail
cd "$(dirname "$0")/.."
duration="${1:-30s}"
cargo build --release --locked -p ais >&2
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
ais="$target_dir/release/ais"

# shellcheck source=scripts/servers.sh
source scripts/servers.sh
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  stop_servers
}
trap cleanup EXIT
start_clickhouse
start_kafka
clickhouse="$AIS_TEST_CLICKHOUSE"
kafka="$AIS_TEST_KAFKA"
run_id="bench_$(date +%s)"
db_url="$clickhouse/?database=$run_id"
topic="ais-$run_id"

ch() { curl -fsS "$clickhouse/?database=$run_id" --data-binary "$1"; }

# start NAME ARGS…: starts an ais command, waits for its ready line, prints its HTTP address.
start() {
  local name=$1; shift
  local out; out=$(mktemp)
  RUST_LOG=warn "$ais" "$@" >"$out" 2>"$servers_dir/$name.log" &
  pids+=($!)
  for _ in $(seq 1 300); do grep -q ready "$out" && break; sleep 0.1; done
  python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline()).get("http",""))' "$out"
}

"$ais" migrate --kafka "$kafka" --topic "$topic" --clickhouse "$db_url" --partitions 6 >&2
ingest="http://$(start ingest ingest --kafka "$kafka" --topic "$topic" --listen 127.0.0.1:0 --otlp-grpc-listen off)"
start stream-1 stream --kafka "$kafka" --topic "$topic" --clickhouse "$db_url" --listen 127.0.0.1:0 >/dev/null
start stream-2 stream --kafka "$kafka" --topic "$topic" --clickhouse "$db_url" --listen 127.0.0.1:0 >/dev/null
query="http://$(start query query --clickhouse "$db_url" --listen 127.0.0.1:0)"

committed() { ch "SELECT sum(n) FROM (SELECT max(next_offset) AS n FROM rollups WHERE tenant = '' GROUP BY log_partition)"; }
# wait_committed N: seconds until the store holds N log records.
wait_committed() {
  local start; start=$(date +%s.%N)
  until [ "$(committed)" -ge "$1" ]; do sleep 0.1; done
  python3 -c "print(round($(date +%s.%N) - $start, 2))"
}

echo "== 1. seed rate through Kafka: ais loadgen --rate 16667 --batch 100 --concurrency 16 --duration $duration"
"$ais" loadgen --url "$ingest" --rate 16667 --batch 100 --concurrency 16 --duration "$duration" --json &
load=$!
# 3. Freshness probes while the seed-rate load runs: one event each, its own model.
python3 - "$ingest" "$query" <<'PY'
import json, sys, time, urllib.request
ingest, query = sys.argv[1], sys.argv[2]
run = int(time.time())
samples = []
for i in range(60):
    model = f"probe-{run}-{i}"
    body = json.dumps([{"timestamp": int(time.time() * 1000), "model": model, "latency_ms": 1}]).encode()
    request = urllib.request.Request(f"{ingest}/v1/events", body, {"content-type": "application/json"})
    urllib.request.urlopen(request).read()
    acked = time.time()
    while True:
        with urllib.request.urlopen(f"{query}/v1/query/summary?model={model}") as answer:
            if json.load(answer)["models"]:
                break
        time.sleep(0.01)
    samples.append(time.time() - acked)
    time.sleep(0.2)
samples.sort()
pick = lambda q: samples[min(len(samples) - 1, int(q * len(samples)))]
print(f"freshness (202 to visible in ais query, {len(samples)} probes at the seed rate): "
      f"p50 {pick(0.5) * 1000:.0f} ms, p99 {pick(0.99) * 1000:.0f} ms, max {samples[-1] * 1000:.0f} ms")
PY
wait $load
before=$(committed)

echo "== 2. end to end at the maximum rate: ais loadgen --rate 0 --batch 1000 --concurrency 8 --duration $duration"
start_s=$(date +%s.%N)
"$ais" loadgen --url "$ingest" --rate 0 --batch 1000 --concurrency 8 --duration "$duration" --json | tee "$servers_dir/max.json"
sent=$(python3 -c 'import json,sys; lines=[l for l in open(sys.argv[1]) if l.startswith("{")]; print(json.loads(lines[-1])["events_accepted"])' "$servers_dir/max.json")
load_end=$(date +%s.%N)
drain=$(wait_committed $((before + sent)))
end_s=$(date +%s.%N)
python3 -c "
sent=$sent; total=$end_s-$start_s; load=$load_end-$start_s
print(f'stream committed {sent:,} events in {total:.1f} s: {sent/total:,.0f} events/s end to end (load ran {load:.1f} s; drained {$drain} s after it stopped)')"

echo "== 4. ClickHouse ceiling: a direct bulk insert of the same raw rows"
rows=$(ch "SELECT count() FROM events")
ch "CREATE TABLE events_copy AS events" >/dev/null
ch "SELECT * FROM events FORMAT Native" >"$servers_dir/events.native"
copy_start=$(date +%s.%N)
curl -fsS "$clickhouse/?database=$run_id&query=INSERT%20INTO%20events_copy%20FORMAT%20Native" --data-binary @"$servers_dir/events.native"
copy_end=$(date +%s.%N)
python3 -c "print(f'direct insert of {$rows:,} rows ($(du -h "$servers_dir/events.native" | cut -f1) Native): {$rows/($copy_end-$copy_start):,.0f} rows/s')"
