#!/usr/bin/env bash
# OTLP protobuf ingest beside the native JSON path, at the batch size the OpenTelemetry
# SDK's batch span processor sends (512 spans per export), as fast as acks return.
# Each case starts `ais serve` (release) on a fresh data dir and prints loadgen's figures.
# Usage: bench/otlp.sh [DURATION] [BATCH]   (defaults 20s, 512)
set -euo pipefail
cd "$(dirname "$0")/.."
duration="${1:-20s}"
batch="${2:-512}"
# shellcheck source=bench/lib.sh
source bench/lib.sh

run_case "native JSON, batches of $batch" --format json --rate 0 --batch "$batch" --concurrency 8 --duration "$duration" --json
run_case "OTLP/HTTP protobuf, $batch spans per export" --format otlp --rate 0 --batch "$batch" --concurrency 8 --duration "$duration" --json
