#!/usr/bin/env bash
# The project's test command: formatting, lints and the whole test suite, exactly as
# CI runs them. Installs nothing that is already there; needs only a Rust toolchain
# (the C parts — SQLite, zstd — are built by cargo with the machine's C compiler).
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in cargo cc; do
  command -v "$tool" >/dev/null || { echo "test: $tool is missing (install Rust from rustup.rs and a C compiler)" >&2; exit 1; }
done

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== cargo test"
# One profile (dev, dependencies optimised) for the tests and the `ais` binary the
# integration tests start.
cargo test --workspace --locked
