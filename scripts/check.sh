#!/usr/bin/env bash
# Formatting and lints, as CI checks them; fails on the first problem.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
