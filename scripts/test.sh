#!/usr/bin/env bash
# The project's test command: formatting, lints and the whole test suite, exactly as
# CI runs them. Installs nothing; needs a Rust toolchain, a C/C++ compiler and cmake
# (cargo builds SQLite, zstd and librdkafka from source), npm (the build bundles the
# dashboard's front-end from npm packages), and for the engine tests ClickHouse and
# Tansu (`.ci/run` installs both).
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in cargo cc c++ cmake; do
  command -v "$tool" >/dev/null || { echo "test: $tool is missing (install Rust from rustup.rs, a C/C++ compiler and cmake)" >&2; exit 1; }
done
echo '#include <curl/curl.h>' | cc -E - >/dev/null 2>&1 || { echo "test: curl's headers are missing: librdkafka's sources include them (apt-get install libcurl4-openssl-dev)" >&2; exit 1; }
command -v npm >/dev/null || { echo "test: npm is missing: the build bundles the dashboard from npm packages (apt-get install nodejs npm)" >&2; exit 1; }

# The real servers the engine tests talk to, started once for the whole run on free
# loopback ports (skipped when AIS_TEST_* already names one, or the server is not
# installed: those tests then say so, and fail under CI=true).
source scripts/servers.sh
trap stop_servers EXIT
start_clickhouse
start_kafka
start_redis

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== cargo test"
# One profile (dev, dependencies optimised) for the tests and the `ais` binary the
# integration tests start.
cargo test --workspace --locked

echo "== instructions per event of the hot path (callgrind), against bench/instructions.dev.baseline"
if command -v valgrind >/dev/null; then
  bench/instructions.sh
elif [ "${CI:-}" = true ]; then
  echo "test: valgrind is missing: the hot path's instruction counts are checked with it (apt-get install valgrind)" >&2
  exit 1
else
  echo "test: valgrind is missing, so the hot path's instruction counts are not checked (apt-get install valgrind)"
fi

target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
artifacts="${AIS_ARTIFACTS_DIR:-$target_dir/ais-artifacts}"
if [ -d "$artifacts" ]; then
  echo "== dashboard screenshots (headless Chromium): $artifacts"
  ls -1 "$artifacts"
fi
