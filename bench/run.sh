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
# shellcheck source=bench/lib.sh
source bench/lib.sh
trace=../shared/data/azure-llm-inference-2023/AzureLLMInferenceTrace_code.csv

tracearg=(); [ -f "$trace" ] && tracearg=(--trace "$trace")
run_case "seed target 1M events/min, trace replay" --rate 16667 --batch 100 --concurrency 16 --duration "$duration" "${tracearg[@]}" --json
run_case "max rate, batches of 1000" --rate 0 --batch 1000 --concurrency 8 --duration "$duration" --json
run_case "paced below the max, batches of 1000" --rate "${SUSTAINED_RATE:-500000}" --batch 1000 --concurrency 16 --duration "$duration" --json
