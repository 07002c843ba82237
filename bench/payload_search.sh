#!/usr/bin/env bash
# Payload search over one hour at the seed rate (1,000,000 events a minute): `ais serve`
# with capture on (`[payloads] enabled = true`, every built-in redaction rule) takes the
# hour's events, each with a 2 KiB prompt and a 1 KiB response, backfilled by
# `ais loadgen --backfill` (sent as fast as the server acks, stamped across the past
# hour), then answers searches over that hour. Each search runs 3 times; the median
# latency is printed with the answer's status and size.
# Usage: bench/payload_search.sh [SPAN] [RATE]   (default 1h 16667)
set -euo pipefail
cd "$(dirname "$0")/.."
span="${1:-1h}"
rate="${2:-16667}"
# shellcheck source=bench/lib.sh
source bench/lib.sh
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
printf '[payloads]\nenabled = true\n' >"$work/on.toml"
data="$work/data"
RUST_LOG=error "$ais" serve --listen 127.0.0.1:0 --otlp-grpc-listen off --data-dir "$data" --config "$work/on.toml" >"$work/ready" &
server=$!
trap 'kill -TERM $server 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 1 100); do grep -q ready "$work/ready" && break; sleep 0.1; done
url="http://$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["http"])' "$work/ready")"

end=$(date -u +%s)
echo "== backfill: ais loadgen --backfill $span --rate $rate --batch 1000 --concurrency 8 --input-bytes 2048 --output-bytes 1024"
"$ais" loadgen --url "$url" --backfill "$span" --rate "$rate" --batch 1000 --concurrency 8 \
  --input-bytes 2048 --output-bytes 1024 --json >"$work/loadgen"
grep -E "^(loadgen|throughput|non-2xx|backfill)" "$work/loadgen"
accepted=$(grep '^{' "$work/loadgen" | python3 -c 'import json,sys; print(json.loads(sys.stdin.readline())["events_accepted"])')
until curl -fsS "$url/readyz" | grep -q '"lag_records":0'; do sleep 0.5; done
bytes=$(du -sb "$data/events" | cut -f1)
echo "raw events on disk: $bytes bytes for $accepted events, $(( bytes / accepted )) bytes per event"

iso() { date -u -d "@$1" +%Y-%m-%dT%H:%M:%SZ; }
# The span in seconds (1h, 30m, 90s), and a minute's margin on either side of it.
span_s() { case "$1" in *h) echo $(( ${1%h} * 3600 )) ;; *m) echo $(( ${1%m} * 60 )) ;; *s) echo "${1%s}" ;; *) echo "$1" ;; esac; }
hour="from=$(iso $(( end - $(span_s "$span") - 60 )))&to=$(iso $(( end + 60 )))"
search() {
  local what="$1" query="$2" times=() code="" answer=""
  for _ in 1 2 3; do
    local out; out=$(curl -s -o "$work/answer" -w '%{http_code} %{time_total}' "$url/v1/events?$query")
    code="${out% *}"; times+=("${out#* }")
  done
  answer=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print("%d events" % len(d["events"]) if "events" in d else d.get("error", d))' "$work/answer" | cut -c1-160)
  printf '%s: HTTP %s, median %s ms of 3; %s\n' "$what" "$code" \
    "$(printf '%s\n' "${times[@]}" | sort -g | sed -n 2p | python3 -c 'print(round(float(input()) * 1000, 1))')" "$answer"
}
echo "== searches over the span ($span at $rate events/s)"
search "a term in every payload, first 100, the whole span" "$hour&q=summarize&limit=100&include=payloads"
search "a redacted address (its placeholder), first 100, the whole span" "$hour&q=%5BEMAIL%5D&limit=100"
search "a term in every payload, one user's calls over the span, first 100" "$hour&q=summarize&user_id=user-42&limit=100"
search "a term in no payload, the whole span" "$hour&q=no-such-text"
search "a term in no payload, one model's failed calls over the span" "$hour&q=no-such-text&status=error&model=gpt-4o"
search "a term in no payload, one user's calls over the span" "$hour&q=no-such-text&user_id=user-42"
echo "server peak RSS: $(awk '/^VmHWM/ {printf "%.0f MiB", $2 / 1024}' /proc/$server/status)"
