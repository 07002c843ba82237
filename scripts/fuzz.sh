#!/usr/bin/env bash
# Fuzzes every decoder of untrusted bytes for SECONDS each (default 30) on the stable
# toolchain, in a build of its own (fuzz/ is a separate workspace). The corpus grows in
# FUZZ_CORPUS_DIR (default /var/tmp/ais-fuzz-corpus) between runs, seeded from the
# checked-in fuzz/corpus. A crash fails the run and leaves fuzz/artifacts/TARGET/crash-*;
# reproduce with: cd fuzz && cargo fuzz run --sanitizer none TARGET artifacts/TARGET/crash-…
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${1:-30}"
corpus_root="${FUZZ_CORPUS_DIR:-/var/tmp/ais-fuzz-corpus}"
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-/var/tmp/ais-fuzz-target}"

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked

# This clone's builds only: older clones' copies of our crates out (see the script).
python3 ../scripts/ci/prune_target.py "$CARGO_TARGET_DIR" . ..

# --sanitizer none: the stable toolchain has no sanitizers; panics, overflow and
# debug assertions are still caught.
cargo fuzz build --sanitizer none --debug-assertions

for target in $(cargo fuzz list); do
  corpus="$corpus_root/$target"
  mkdir -p "$corpus"
  dict=()
  case "$target" in
    json_body|ndjson_body|event_fields|compressed_body) dict=(-dict=dict/json.dict) ;;
    otlp_json|otlp_protobuf|otlp_spans) dict=(-dict=dict/otlp.dict) ;;
  esac
  echo "== fuzz $target for ${seconds}s"
  seeds=()
  [ -d "corpus/$target" ] && seeds=("corpus/$target")
  log="$CARGO_TARGET_DIR/fuzz-$target.log"
  status=0
  cargo fuzz run --sanitizer none --debug-assertions "$target" "$corpus" "${seeds[@]}" -- \
    -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=2048 -print_final_stats=1 "${dict[@]}" \
    >"$log" 2>&1 || status=$?
  grep -E "^(#[0-9]+ +DONE|stat::number_of_executed_units|==[0-9]+== ERROR|SUMMARY)|panicked" "$log" || true
  if [ "$status" -ne 0 ]; then
    tail -40 "$log" >&2
    echo "fuzz: $target failed (exit $status); inputs in fuzz/artifacts/$target" >&2
    exit 1
  fi
done
echo "fuzz: every target ran ${seconds}s without a crash"
