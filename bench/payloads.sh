#!/usr/bin/env bash
# Payload capture's cost at ingest: `ais serve` at the maximum rate (batches of 1,000,
# 8 connections) with every event carrying a 2 KiB `input` and a 1 KiB `output` (an
# e-mail address and a phone number in each KiB), capture off (the fields are dropped
# at ingest) and on (`[payloads] enabled = true`: every built-in redaction rule, every
# payload kept). Prints the accepted and visible rates, the raw-event bytes on disk
# per event, and the latency of payload searches over the run's events.
# Usage: bench/payloads.sh [DURATION]   (default 20s)
set -euo pipefail
cd "$(dirname "$0")/.."
duration="${1:-20s}"
# shellcheck source=bench/lib.sh
source bench/lib.sh
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
printf '' >"$work/off.toml"
printf '[payloads]\nenabled = true\n' >"$work/on.toml"

for capture in off on; do
  data="$work/data-$capture"; ready="$work/ready-$capture"
  RUST_LOG=warn "$ais" serve --listen 127.0.0.1:0 --otlp-grpc-listen off --data-dir "$data" --config "$work/$capture.toml" >"$ready" &
  server=$!
  for _ in $(seq 1 100); do grep -q ready "$ready" && break; sleep 0.1; done
  url="http://$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["http"])' "$ready")"
  echo "== capture $capture: ais loadgen --rate 0 --batch 1000 --concurrency 8 --duration $duration --input-bytes 2048 --output-bytes 1024"
  from=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  "$ais" loadgen --url "$url" --rate 0 --batch 1000 --concurrency 8 --duration "$duration" \
    --input-bytes 2048 --output-bytes 1024 --json >"$work/loadgen"
  grep -E '^(throughput|ack latency|non-2xx)' "$work/loadgen"
  accepted=$(grep '^{' "$work/loadgen" | python3 -c 'import json,sys; print(json.loads(sys.stdin.readline())["events_accepted"])')
  start=$(date +%s.%N)
  until curl -fsS "$url/readyz" | grep -q '"lag_records":0'; do sleep 0.05; done
  echo "stream caught up $(python3 -c "print(round($(date +%s.%N)-$start,2))") s after load stopped"
  to=$(date -u -d '+1 minute' +%Y-%m-%dT%H:%M:%SZ)
  bytes=$(du -sb "$data/events" | cut -f1)
  echo "raw events on disk: $bytes bytes for $accepted events, $(( bytes / accepted )) bytes per event"
  if [ "$capture" = on ]; then
    search() {
      local what="$1" query="$2"
      local out; out=$(curl -s -o "$work/answer" -w '%{http_code} %{time_total}' "$url/v1/events?$query")
      echo "search, $what: HTTP ${out% *} in $(python3 -c "print(round(${out#* } * 1000, 1))") ms, $(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(len(d.get("events", [])), "events" if "events" in d else d)' "$work/answer" 2>/dev/null | cut -c1-160)"
    }
    search "a term in every payload, first 100" "from=$from&to=$to&q=summarize&limit=100&include=payloads"
    search "a redacted address (stored as its placeholder)" "from=$from&to=$to&q=jane.doe"
    search "a term in no payload, the whole run" "from=$from&to=$to&q=no-such-text"
    search "a term in no payload, the failed calls" "from=$from&to=$to&q=no-such-text&status=error"
  fi
  echo "server peak RSS: $(awk '/^VmHWM/ {printf "%.0f MiB", $2 / 1024}' /proc/$server/status)"
  kill -TERM "$server"; wait "$server" || true
done
