#!/usr/bin/env bash
# Ingest benchmark of `ais serve` with durable acks, load from `ais loadgen` on the same
# machine. Prints loadgen's figures for:
#   1. the seed target: 1,000,000 events/minute (16,667 events/s) for DURATION,
#   2. the maximum rate with batches of 1,000 events (as fast as acks return),
#   3. a paced rate just below it (SUSTAINED_RATE, default 500,000/s): sustained means
#      the stream's lag stays bounded and drains within 10 s after the load stops.
# Usage: bench/run.sh [DURATION]   (default 60s)
set -euo pipefail
cd "$(dirname "$0")/.."
duration="${1:-60s}"
cargo build --release --locked -p ais >&2
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
ais="$target_dir/release/ais"
trace=../shared/data/azure-llm-inference-2023/AzureLLMInferenceTrace_code.csv

run_case() {
  local name="$1"; shift
  local data; data=$(mktemp -d)
  local ready; ready=$(mktemp)
  RUST_LOG=warn "$ais" serve --listen 127.0.0.1:0 --otlp-grpc-listen off --data-dir "$data" >"$ready" &
  local server=$!
  for _ in $(seq 1 100); do grep -q ready "$ready" && break; sleep 0.1; done
  local url; url="http://$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["http"])' "$ready")"
  echo "== $name: ais loadgen $*" 
  "$ais" loadgen --url "$url" "$@"
  # Freshness: how long until the stream has committed everything acknowledged.
  local start; start=$(date +%s.%N)
  until curl -fsS "$url/readyz" | grep -q '"lag_records":0'; do sleep 0.05; done
  echo "stream caught up $(python3 -c "import sys; print(round($(date +%s.%N)-$start,2))") s after load stopped"
  curl -fsS "$url/metrics" | grep -E '^ais_wal_group_commit_batches_(sum|count)|^ais_wal_fsync_seconds_(sum|count)' || true
  kill -TERM $server; wait $server || true
  rm -rf "$data" "$ready"
}

tracearg=(); [ -f "$trace" ] && tracearg=(--trace "$trace")
run_case "seed target 1M events/min, trace replay" --rate 16667 --batch 100 --concurrency 16 --duration "$duration" "${tracearg[@]}" --json
run_case "max rate, batches of 1000" --rate 0 --batch 1000 --concurrency 8 --duration "$duration" --json
run_case "paced below the max, batches of 1000" --rate "${SUSTAINED_RATE:-500000}" --batch 1000 --concurrency 16 --duration "$duration" --json
