#!/usr/bin/env bash
# Builds every binary and starts a development core under verdant-init
# (`verdant init`: one executable holds init and every daemon), in
# the foreground, rooted at $VERDANT_ROOT (default ./var). The first start
# writes a default config, development certificates and a sample group.
# Extra arguments go to verdant init (e.g. --root /tmp/core). Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --workspace --bins --locked
exec target/release/verdant init "$@"
