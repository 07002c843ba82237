# Shared by the benchmark scripts (source it after `cd` to the repository root): builds
# the release `ais` and defines `run_case NAME LOADGEN_ARGS…`, which starts `ais serve`
# on a fresh data dir, runs `ais loadgen` against it, reports how long the stream takes
# to commit everything acknowledged once the load stops, prints the group-commit
# metrics, the server's peak resident memory and the CPU it used per accepted event,
# and stops the server. BENCH_CONFIG
# names a config file for `ais serve`; BENCH_SERVE_ARGS, further flags for it;
# BENCH_METRICS, a pattern of further /metrics lines to print.
cargo build --release --locked -p ais >&2
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
ais="$target_dir/release/ais"

run_case() {
  local name="$1"; shift
  local data; data=$(mktemp -d)
  local ready; ready=$(mktemp)
  local config=(); [ -n "${BENCH_CONFIG:-}" ] && config=(--config "$BENCH_CONFIG")
  local extra=(); [ -n "${BENCH_SERVE_ARGS:-}" ] && read -r -a extra <<<"$BENCH_SERVE_ARGS"
  RUST_LOG=warn "$ais" serve --listen 127.0.0.1:0 --otlp-grpc-listen off --data-dir "$data" "${config[@]}" "${extra[@]}" >"$ready" &
  local server=$!
  for _ in $(seq 1 100); do grep -q ready "$ready" && break; sleep 0.1; done
  local url; url="http://$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["http"])' "$ready")"
  echo "== $name: ais loadgen $*"
  "$ais" loadgen --url "$url" "$@"
  # Freshness: how long until the stream has committed everything acknowledged.
  local start; start=$(date +%s.%N)
  until curl -fsS "$url/readyz" | grep -q '"lag_records":0'; do sleep 0.05; done
  echo "stream caught up $(python3 -c "import sys; print(round($(date +%s.%N)-$start,2))") s after load stopped"
  curl -fsS "$url/metrics" | grep -E '^ais_wal_group_commit_batches_(sum|count)|^ais_wal_fsync_seconds_(sum|count)' || true
  if [ -n "${BENCH_METRICS:-}" ]; then curl -fsS "$url/metrics" | grep -E "$BENCH_METRICS" || true; fi
  echo "server peak RSS: $(awk '/^VmHWM/ {printf "%.0f MiB", $2 / 1024}' /proc/$server/status)"
  # CPU the server used, every thread, from its start until caught up: steadier than a
  # rate on a busy machine (what else runs takes cores, not this process's work).
  local ticks; ticks=$(awk '{print $14 + $15}' /proc/$server/stat)
  local accepted; accepted=$(curl -fsS "$url/metrics" | awk '/^ais_ingest_events_total\{outcome="accepted"\}/ {sum += $2} END {printf "%d", sum}')
  python3 -c "import os,sys; t=int(sys.argv[1])/os.sysconf('SC_CLK_TCK'); n=int(sys.argv[2]); print(f'server CPU: {t:.2f} s, {t*1e6/max(n,1):.2f} µs per accepted event')" "$ticks" "$accepted"
  kill -TERM $server; wait $server || true
  rm -rf "$data" "$ready"
}
