#!/usr/bin/env bash
# Two builds of Verdant's broker against each other, same machine, same
# run: a core from OLD (a directory holding another build's `verdant`, e.g.
# target/release of an older checkout) and one from this checkout's
# release build, each on its own loopback port, loaded alike by
# `verdant-bench mqtt` (runs interleaved), then stopped. For checking that
# a change of shape changed nothing else.
# With --routed both cores run in routed mode with the group of
# `verdant-bench group`; otherwise in local mode.
# Usage: scripts/bench-builds.sh OLD [--routed] [--runs N] [--quick] [--only TEXT]
set -euo pipefail
old=$(cd "$1" && pwd)
shift
mode=local
if [ "${1:-}" = "--routed" ]; then
    mode=routed
fi
cd "$(dirname "$0")/.."
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
cargo build --release --workspace --bins --locked >&2
[ -x "$old/verdant" ] || { echo "$old/verdant: no such executable" >&2; exit 1; }

tmp=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT

# start NAME BINARY PORT: a core under $tmp/NAME with its plain listener on PORT.
start() {
    local name=$1 bin=$2 port=$3
    mkdir -p "$tmp/$name/config/config.d"
    "$bin" init --print-default-config > "$tmp/$name/config/verdant.toml"
    cat > "$tmp/$name/config/config.d/50-bench.toml" <<CONF
[broker]
mode = "$mode"
max_queued_messages = 100000
[broker.tls]
enabled = false
[broker.tcp]
enabled = true
bind = "127.0.0.1:$port"
[lambda-runner]
ipc_port = 0
CONF
    if [ "$mode" = routed ]; then
        mkdir -p "$tmp/$name/deployments/bench"
        target/release/verdant-bench group > "$tmp/$name/deployments/bench/group.json"
        ln -s bench "$tmp/$name/deployments/current"
    fi
    VERDANT_LOG=warn "$bin" init --root "$tmp/$name" >/dev/null 2>&1 &
    pids+=($!)
    for _ in $(seq 100); do
        (echo > /dev/tcp/127.0.0.1/"$port") 2>/dev/null && return
        sleep 0.1
    done
    echo "$name did not start" >&2
    exit 1
}
OLD_PORT=${OLD_PORT:-18841}
NEW_PORT=${NEW_PORT:-18842}
start old "$old/verdant" "$OLD_PORT"
start new target/release/verdant "$NEW_PORT"
broker_pid() {
    target/release/verdantctl --root "$tmp/$1" status --output json |
        python3 -c 'import json, sys; print(next(s["pid"] for s in json.load(sys.stdin) if s["name"] == "broker"))'
}
target/release/verdant-bench mqtt --target "old=127.0.0.1:$OLD_PORT" --target "new=127.0.0.1:$NEW_PORT" \
    --pid "old=$(broker_pid old)" --pid "new=$(broker_pid new)" "$@"
