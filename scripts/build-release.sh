#!/usr/bin/env bash
# Builds the `ais` binary: the one build command of the container image (Dockerfile,
# profile release) and of CI (.ci/run, profile dev: an optimised build takes longer
# than CI can spend on two cores, so CI runs the same command on the profile its tests
# use).
#
#   scripts/build-release.sh [PROFILE] [OUT_DIR]
#
# PROFILE is a cargo profile (release, the default, or dev). With OUT_DIR the binary is
# copied to OUT_DIR/ais. Either way the binary must answer --version, and its path is
# the last line printed. Honours CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."

profile="${1:-release}"
out_dir="${2:-}"

for tool in cargo cc c++ cmake npm; do
  command -v "$tool" >/dev/null || { echo "build-release: $tool is missing (Rust, a C/C++ compiler, cmake and npm build ais)" >&2; exit 1; }
done

# The dashboard's npm packages, from the lockfile (crates/serve/build.rs bundles them).
(
  cd crates/serve/dashboard
  [ node_modules/.package-lock.json -nt package-lock.json ] \
    || npm ci --no-audit --no-fund --loglevel=error
)

cargo build --profile "$profile" --locked -p ais

target_dir="${CARGO_TARGET_DIR:-target}"
# Cargo names the dev profile's directory "debug".
[ "$profile" = dev ] && profile_dir=debug || profile_dir="$profile"
binary="$target_dir/$profile_dir/ais"
"$binary" --version >/dev/null || { echo "build-release: $binary does not run" >&2; exit 1; }

if [ -n "$out_dir" ]; then
  mkdir -p "$out_dir"
  cp "$binary" "$out_dir/ais"
  binary="$out_dir/ais"
fi
echo "$binary"
