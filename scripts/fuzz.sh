#!/usr/bin/env bash
# The broker's cargo-fuzz targets (crates/broker/fuzz), each for a bounded
# time: `decode` (both versions' packet decoders), `topic` (validation and
# matching) and `index` (the subscription index against a scan of every
# filter). scripts/test.sh runs them for 20 s each; longer runs are
# recorded in docs/broker.md. Installs cargo-fuzz if it is missing.
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/../crates/broker/fuzz"
secs=${1:-20}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(decode topic index)

CARGO_FUZZ_VERSION=0.13.2
if ! cargo fuzz --version 2>/dev/null | grep -qx "cargo-fuzz $CARGO_FUZZ_VERSION"; then
    cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked >&2
fi

# cargo-fuzz passes rustc nightly flags (-Zsanitizer=address, ...). The
# machines this builds on have one stable toolchain and fetch no other;
# its rustc takes those flags when told it may (its standard library
# ships the sanitizer runtimes).
export RUSTC_BOOTSTRAP=1
cargo fuzz build >&2
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for t in "${targets[@]}"; do
    if cargo fuzz run "$t" -- -max_total_time="$secs" -max_len=4096 >"$log" 2>&1; then
        echo "fuzz $t: $(grep -E '^Done [0-9]+ runs' "$log" || tail -n 1 "$log")"
    else
        cat "$log" >&2
        echo "fuzz $t: FAILED (the input is under crates/broker/fuzz/artifacts/$t)" >&2
        exit 1
    fi
done
