#!/usr/bin/env bash
# What the usage ledger's per-user and per-attribute scopes cost ingest: `bench/run.sh`'s
# maximum case, in rounds, with usage counted per tenant and model only
# (`[usage] user_id = false`) and with it also per user and per `attr.feature`, back to
# back, so a busy machine's drift shows in both. (The load generator's events carry
# 10,000 users and no attributes: the attribute scope holds them all in its `null`
# group.)
# Usage: bench/usage.sh [DURATION] [ROUNDS]   (default 30s, 2)
set -euo pipefail
cd "$(dirname "$0")/.."
duration="${1:-30s}"
rounds="${2:-2}"
# shellcheck source=bench/lib.sh
source bench/lib.sh
off=$(mktemp)
on=$(mktemp)
trap 'rm -f "$off" "$on"' EXIT
printf '[usage]\nuser_id = false\n' >"$off"
printf '[usage]\nuser_id = true\nattributes = ["feature"]\n' >"$on"
for round in $(seq 1 "$rounds"); do
  BENCH_CONFIG="$off" run_case "round $round: max rate, usage per tenant and model" --rate 0 --batch 1000 --concurrency 8 --duration "$duration" --json
  BENCH_CONFIG="$on" run_case "round $round: max rate, usage also per user and attr.feature" --rate 0 --batch 1000 --concurrency 8 --duration "$duration" --json
done
