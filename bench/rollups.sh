#!/usr/bin/env bash
# What dimension rollups cost ingest: `bench/run.sh`'s maximum case, in rounds, with
# dimension rollups off (`[rollups] dimensions = []`) and with the default dimensions,
# back to back, so a busy machine's drift shows in both.
# Usage: bench/rollups.sh [DURATION] [ROUNDS]   (default 30s, 2)
set -euo pipefail
cd "$(dirname "$0")/.."
duration="${1:-30s}"
rounds="${2:-2}"
# shellcheck source=bench/lib.sh
source bench/lib.sh
off=$(mktemp)
trap 'rm -f "$off"' EXIT
printf '[rollups]\ndimensions = []\n' >"$off"
for round in $(seq 1 "$rounds"); do
  BENCH_CONFIG="$off" run_case "round $round: max rate, dimension rollups off" --rate 0 --batch 1000 --concurrency 8 --duration "$duration" --json
  BENCH_CONFIG="" run_case "round $round: max rate, default dimension rollups" --rate 0 --batch 1000 --concurrency 8 --duration "$duration" --json
done
