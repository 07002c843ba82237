#!/usr/bin/env bash
# The project's test command: formatting, lints and the whole test suite, exactly as
# CI runs them. Installs nothing that is already there; needs a Rust toolchain (the C
# parts — SQLite, zstd — are built by cargo with the machine's C compiler) and npm (the
# build bundles the dashboard's front-end from npm packages).
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in cargo cc; do
  command -v "$tool" >/dev/null || { echo "test: $tool is missing (install Rust from rustup.rs and a C compiler)" >&2; exit 1; }
done
command -v npm >/dev/null || { echo "test: npm is missing: the build bundles the dashboard from npm packages (apt-get install nodejs npm)" >&2; exit 1; }

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== cargo test"
# One profile (dev, dependencies optimised) for the tests and the `ais` binary the
# integration tests start.
cargo test --workspace --locked

target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
artifacts="${AIS_ARTIFACTS_DIR:-$target_dir/ais-artifacts}"
if [ -d "$artifacts" ]; then
  echo "== dashboard screenshots (headless Chromium): $artifacts"
  ls -1 "$artifacts"
fi
