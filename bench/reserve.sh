#!/usr/bin/env bash
# Budget check-and-reserve latency: `ais serve` with a budget no run can fill, and
# `ais loadgen --format reserve` at a fixed rate (default 5,000 reservations/s) as the
# independent client (latency from each call's due time); then the server's own
# decision time per call (`ais_budget_decision_seconds`, handler start to answer).
# Usage: bench/reserve.sh [RATE] [DURATION]   (default 5000, 30s)
set -euo pipefail
cd "$(dirname "$0")/.."
rate="${1:-5000}"
duration="${2:-30s}"
# shellcheck source=bench/lib.sh
source bench/lib.sh
config=$(mktemp)
trap 'rm -f "$config"' EXIT
printf '[[budgets]]\ntenant = "default"\ndaily_usd = 1000000.0\n' >"$config"
BENCH_CONFIG="$config" BENCH_METRICS='^ais_budget_decision_seconds\{route="reserve",quantile=|^ais_budget_reservations_total' \
  run_case "reservations at $rate/s" --format reserve --rate "$rate" --concurrency 32 --duration "$duration" --json
