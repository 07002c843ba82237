#!/usr/bin/env bash
# Where `ais serve`'s CPU goes per event under load: `ais loadgen` at the maximum rate
# (batches of 1,000, 8 connections), `perf record` (cpu-clock samples with DWARF
# call stacks) of the server for a window of the run, and each sample put in one stage
# by the frames on its stack (bench/profile_stages.py). Prints each stage's share and
# its nanoseconds of CPU per event acknowledged in the window.
#
# Usage: bench/profile.sh [DURATION_S] [WINDOW_S]   (default 25 and 10)
# Needs perf (linux-perf); sampling needs kernel.perf_event_paranoid ≤ 2 or root.
set -euo pipefail
cd "$(dirname "$0")/.."
duration="${1:-25}"
window="${2:-10}"
frequency=300
# shellcheck source=bench/lib.sh
source bench/lib.sh
command -v perf >/dev/null || { echo "profile: perf is missing (apt-get install linux-perf)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
data="$work/data"; ready="$work/ready"
RUST_LOG=warn "$ais" serve --listen 127.0.0.1:0 --otlp-grpc-listen off --data-dir "$data" >"$ready" &
server=$!
for _ in $(seq 1 100); do grep -q ready "$ready" && break; sleep 0.1; done
url="http://$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["http"])' "$ready")"
accepted() { curl -fsS "$url/metrics" | awk '/^ais_ingest_events_total\{outcome="accepted"\}/ {sum += $2} END {printf "%d", sum}'; }

"$ais" loadgen --url "$url" --rate 0 --batch 1000 --concurrency 8 --duration "${duration}s" >"$work/loadgen" 2>&1 &
loadgen=$!
# Past the start-up, into the steady state.
sleep $(( (duration - window) / 2 ))
before=$(accepted)
perf record -e cpu-clock -F "$frequency" --call-graph dwarf,32768 -p "$server" -o "$work/perf.data" \
  -- sleep "$window" 2>"$work/perf.log" >/dev/null
after=$(accepted)
wait "$loadgen"
kill -TERM "$server"; wait "$server" || true

perf script -i "$work/perf.data" -F comm,ip,sym --no-inline 2>/dev/null >"$work/stacks"
echo "== ais serve, ${window} s of a ${duration} s maximum-rate run: $(( (after - before) / window )) events/s accepted in the window"
python3 bench/profile_stages.py "$work/stacks" "$(( after - before ))" "$frequency"
