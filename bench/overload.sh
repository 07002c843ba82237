#!/usr/bin/env bash
# `ais serve` offered more than it can take: the maximum rate first (batches of 1,000,
# 8 connections: what it sustains), then paced open-loop load at 3× and 10× that rate
# (up to 1,024 requests outstanding; latency from each batch's due time), with the
# adaptive admission limit on (the default, `--admission-target-ms 50`) and off
# (`--admission-target-ms 0`, the fixed counts alone). For each: the answers by status,
# the accepted requests' ack latency, events accepted per second (goodput) and the
# server's peak RSS. The load generator sends prebuilt bodies (`--prebuilt`: copies of
# a pool written before the run, ids and timestamps stamped in place), so that it keeps
# its own schedule at 10× on the same cores as the server.
# Usage: bench/overload.sh [DURATION] [SUSTAINABLE_EVENTS_PER_S]
#   (default 20s; without the rate, the maximum-rate run measures it)
set -euo pipefail
cd "$(dirname "$0")/.."
duration="${1:-20s}"
# shellcheck source=bench/lib.sh
source bench/lib.sh
sustainable="${2:-}"
if [ -z "$sustainable" ]; then
  out=$(mktemp)
  run_case "maximum rate, batches of 1000" --prebuilt --rate 0 --batch 1000 --concurrency 8 --duration "$duration" --json | tee "$out"
  sustainable=$(grep '^{' "$out" | python3 -c 'import json,sys; print(int(json.loads(sys.stdin.readline())["events_per_s"]))')
  rm -f "$out"
fi
echo "== sustainable: $sustainable events/s"
for times in 3 10; do
  rate=$(( sustainable * times ))
  BENCH_SERVE_ARGS="" run_case "${times}× ($rate events/s), adaptive admission (the default, 50 ms)" --prebuilt --rate "$rate" --batch 1000 --concurrency 1024 --duration "$duration" --json
  BENCH_SERVE_ARGS="--admission-target-ms 0" run_case "${times}× ($rate events/s), fixed counts only" --prebuilt --rate "$rate" --batch 1000 --concurrency 1024 --duration "$duration" --json
done
