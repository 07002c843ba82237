#!/usr/bin/env bash
# Quick start: build `ais`, run `ais serve --demo` on embedded storage (the pipeline fed
# with synthetic traffic for several models, replaying the Azure LLM inference trace's
# arrival shape when it is found), show what it computed, and keep serving until Ctrl-C.
#   AIS_LISTEN (default 127.0.0.1:8080) and AIS_DATA_DIR (default ./ais-data) apply.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v cc >/dev/null || need_apt+=(build-essential)
command -v c++ >/dev/null || need_apt+=(g++)
command -v cmake >/dev/null || need_apt+=(cmake)
command -v curl >/dev/null || need_apt+=(curl)
# librdkafka's sources include curl's header (its OIDC support) whatever it is built with.
echo '#include <curl/curl.h>' | cc -E - >/dev/null 2>&1 || need_apt+=(libcurl4-openssl-dev)
# The dashboard is bundled from npm packages when ais is built.
command -v npm >/dev/null || need_apt+=(nodejs npm)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "quickstart: installing ${need_apt[*]}" >&2
  sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -q && $sudo_cmd apt-get install -y -q --no-install-recommends "${need_apt[@]}"
fi
command -v cargo >/dev/null || { echo "quickstart: install Rust first (https://rustup.rs)" >&2; exit 1; }

echo "quickstart: building ais (release; the first build takes a few minutes)" >&2
cargo build --release --locked -p ais
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
ais="$target_dir/release/ais"

listen="${AIS_LISTEN:-127.0.0.1:8080}"
ready_file=$(mktemp)
# Warnings and errors only: the demo's alerts are in the dashboard and the API, and the
# terminal keeps the summary below (RUST_LOG=info shows the server's progress).
RUST_LOG="${RUST_LOG:-warn}" "$ais" serve --demo --listen "$listen" >"$ready_file" &
server=$!
trap 'kill -TERM $server 2>/dev/null; wait $server 2>/dev/null; rm -f "$ready_file"' EXIT INT TERM
for _ in $(seq 1 100); do
  grep -q '"ready":true' "$ready_file" 2>/dev/null && break
  kill -0 $server 2>/dev/null || { echo "quickstart: ais serve did not start" >&2; exit 1; }
  sleep 0.1
done
url="http://$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["http"])' "$ready_file")"

# Without keys the demo writes tenant "default"; with AIS_API_KEYS set, tenant "demo".
auth=()
[ -n "${AIS_API_KEY:-}" ] && auth=(-H "authorization: Bearer $AIS_API_KEY")
echo "quickstart: ais serve --demo is sending the last 90 minutes of synthetic traffic, then live traffic" >&2
for _ in $(seq 1 300); do
  models=$(curl -fsS "${auth[@]}" "$url/v1/query/summary" 2>/dev/null \
    | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["models"]))' 2>/dev/null || echo 0)
  [ "$models" -gt 0 ] && break
  sleep 0.2
done
sleep 2

echo
echo "== per-model summary of the last hour: curl $url/v1/query/summary"
curl -fsS "${auth[@]}" "$url/v1/query/summary" | python3 -m json.tool
alerts=$(curl -fsS "${auth[@]}" "$url/v1/anomalies" 2>/dev/null | python3 -c '
import json, sys
found = json.load(sys.stdin)["anomalies"]
firing = sum(1 for anomaly in found if anomaly.get("state") == "firing")
print(f"{len(found)} anomalies detected so far, {firing} firing")' 2>/dev/null || echo "none read yet")
echo
echo "== alerts: $alerts (listed in the dashboard and by curl $url/v1/anomalies)"
cat <<MSG

ais serve --demo is running at $url (data in ${AIS_DATA_DIR:-./ais-data}).
  Dashboard:        $url/
  Live table:       $ais top --url $url
  Anomalies:        curl '$url/v1/anomalies'
  A time series:    curl '$url/v1/query/timeseries?metric=latency_p99'
  Its own metrics:  curl $url/metrics
Ctrl-C stops it (gracefully: everything acknowledged is kept).
MSG
wait $server
