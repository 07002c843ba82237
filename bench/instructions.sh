#!/usr/bin/env bash
# Instructions per event of the single-node hot path's stages (JSON decode, wire encode,
# the stream's roll-up, the raw-event columns, Parquet encode: the `stage_…` functions
# of crates/stream/examples/hot_path.rs), counted by callgrind. The counts are the same
# for the same build and inputs whatever else the machine runs (within 0.5% here: hash
# seeds differ per run), so a change that adds work per event shows without a quiet
# machine.
#
# Usage: bench/instructions.sh [--update] [--release]
#   Compares each stage with bench/instructions.<profile>.baseline and fails when one
#   costs more than TOLERANCE_PERCENT (5) above it. --update writes the baseline
#   instead (after a change that is meant to cost more, or that made a stage cheaper,
#   or after a toolchain or dependency update, which moves every count). The test
#   command checks the dev profile, the one it builds; --release measures the
#   optimised build, for bench/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."

update=false
profile=dev
for arg in "$@"; do
  case "$arg" in
    --update) update=true ;;
    --release) profile=release ;;
    *) echo "usage: bench/instructions.sh [--update] [--release]" >&2; exit 2 ;;
  esac
done
events=5000
tolerance=5
baseline="bench/instructions.$profile.baseline"

command -v valgrind >/dev/null || { echo "instructions: valgrind is missing (apt-get install valgrind)" >&2; exit 1; }
cargo_profile=(); [ "$profile" = release ] && cargo_profile=(--release)
cargo build -q --locked "${cargo_profile[@]}" -p ais-stream --example hot_path
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
binary="$target_dir/$([ "$profile" = release ] && echo release || echo debug)/examples/hot_path"

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
valgrind --tool=callgrind --callgrind-out-file="$out/callgrind.out" "$binary" "$events" >"$out/stdout" 2>"$out/stderr" \
  || { cat "$out/stderr" >&2; exit 1; }
callgrind_annotate --inclusive=yes "$out/callgrind.out" >"$out/annotated"

python3 - "$out/annotated" "$baseline" "$events" "$tolerance" "$update" <<'EOF'
import re, sys
annotated, baseline_path, events, tolerance, update = sys.argv[1:]
events, tolerance, update = int(events), float(tolerance), update == "true"
# "  252,714,154 (24.32%)  …/hot_path.rs:hot_path::stage_decode_json [binary]": the
# function's inclusive count (its callees' included).
pattern = re.compile(r"^\s*([\d,]+) \([^)]*\)\s+\S*hot_path\.rs:hot_path::stage_(\w+) \[")
counts = {}
for line in open(annotated):
    match = pattern.match(line)
    if match and match.group(2) not in counts:
        counts[match.group(2)] = int(match.group(1).replace(",", "")) / events
stages = ["decode_json", "wire_encode", "roll_up", "raw_columns", "parquet_encode"]
missing = [stage for stage in stages if stage not in counts]
if missing:
    sys.exit(f"instructions: no count for {', '.join(missing)} in callgrind's output")
if update:
    with open(baseline_path, "w") as file:
        file.write(f"# instructions per event, {events} events (bench/instructions.sh --update)\n")
        for stage in stages:
            file.write(f"{stage} {counts[stage]:.0f}\n")
    print(f"instructions: wrote {baseline_path}")
baseline = {}
try:
    for line in open(baseline_path):
        if line.strip() and not line.startswith("#"):
            stage, value = line.split()
            baseline[stage] = float(value)
except FileNotFoundError:
    sys.exit(f"instructions: {baseline_path} is missing; make it with bench/instructions.sh --update")
failed = []
print(f"{'stage':>16} {'instr/event':>12} {'baseline':>10} {'change':>8}")
for stage in stages + ["total"]:
    now = sum(counts.values()) if stage == "total" else counts[stage]
    before = sum(baseline.get(s, 0) for s in stages) if stage == "total" else baseline.get(stage)
    if not before:
        sys.exit(f"instructions: {baseline_path} has no {stage}")
    change = (now / before - 1) * 100
    print(f"{stage:>16} {now:12.0f} {before:10.0f} {change:+7.1f}%")
    if stage != "total" and change > tolerance:
        failed.append(f"{stage} {change:+.1f}%")
if failed:
    sys.exit(f"instructions: over the baseline by more than {tolerance:.0f}%: {', '.join(failed)} "
             "(if meant, bench/instructions.sh --update, and say why in the commit)")
cheaper = [s for s in stages if counts[s] < baseline[s] * (1 - tolerance / 100)]
if cheaper:
    print(f"instructions: cheaper than the baseline: {', '.join(cheaper)}; "
          "bench/instructions.sh --update keeps the gain")
EOF
