#!/usr/bin/env bash
# OTLP protobuf ingest beside the native JSON path, at the batch size the OpenTelemetry
# SDK's batch span processor sends (512 spans per export), as fast as acks return.
# Each case starts `ais serve` (release) on a fresh data dir and prints loadgen's figures.
# Usage: bench/otlp.sh [DURATION] [BATCH]   (defaults 20s, 512)
set -euo pipefail
cd "$(dirname "$0")/.."
duration="${1:-20s}"
batch="${2:-512}"
cargo build --release --locked -p ais >&2
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
ais="$target_dir/release/ais"

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
  local start; start=$(date +%s.%N)
  until curl -fsS "$url/readyz" | grep -q '"lag_records":0'; do sleep 0.05; done
  echo "stream caught up $(python3 -c "import sys; print(round($(date +%s.%N)-$start,2))") s after load stopped"
  kill -TERM $server; wait $server || true
  rm -rf "$data" "$ready"
}

run_case "native JSON, batches of $batch" --format json --rate 0 --batch "$batch" --concurrency 8 --duration "$duration" --json
run_case "OTLP/HTTP protobuf, $batch spans per export" --format otlp --rate 0 --batch "$batch" --concurrency 8 --duration "$duration" --json
