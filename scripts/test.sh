#!/usr/bin/env bash
# The whole test suite, as CI runs it: install test dependencies, check
# formatting and lints, then every unit, crate and end-to-end test.
set -euo pipefail
cd "$(dirname "$0")/.."

VERDANT_GRPCURL=$(scripts/test-deps.sh)
export VERDANT_GRPCURL

scripts/check.sh
# The end-to-end tests run the daemons' binaries, which `cargo test` alone
# does not build.
cargo build --workspace --bins --locked
cargo test --workspace --locked
# The broker's fuzz targets, a bounded run each (cargo-fuzz).
scripts/fuzz.sh 20
