#!/usr/bin/env bash
# The broker against Debian's Mosquitto, same machine, same run: starts a
# Mosquitto and a whole Verdant core (broker plain listener) on loopback
# ports, runs `verdant-bench mqtt` against both, and stops them.
# With --routed the core runs in routed mode (its default) with the group of
# `verdant-bench group`: every message is delivered by the subscription
# table, against Mosquitto delivering it directly.
# With --tls (local mode) the load reaches both brokers over mutual TLS,
# every client presenting the sample device's certificate: Verdant's TLS
# listener, and Mosquitto listening with TLS on the core's certificate and
# group CA (TLS 1.3 both, which the client prefers).
# BROKER_CONFIG adds lines to the core's [broker] section, e.g.
# BROKER_CONFIG='qos0_when_full = "hold-publishers"'.
# Usage: scripts/bench-broker.sh [--routed | --tls] [--runs N] [--quick] [--storm-only]
set -euo pipefail
mode=local
tls=no
if [ "${1:-}" = "--routed" ]; then
    # Passed on: the load tool then uses the group's client ids.
    mode=routed
elif [ "${1:-}" = "--tls" ]; then
    tls=yes
    shift
fi
cd "$(dirname "$0")/.."
# A thousand clients and their brokers need file descriptors.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
command -v mosquitto >/dev/null || { echo "mosquitto missing: scripts/test-deps.sh installs it" >&2; exit 1; }
cargo build --release --workspace --bins --locked >&2

tmp=$(mktemp -d)
MOSQ_PORT=${MOSQ_PORT:-18830}
VERDANT_PORT=${VERDANT_PORT:-18831}
VERDANT_TLS_PORT=${VERDANT_TLS_PORT:-18832}
cleanup() {
    [ -n "${mosq:-}" ] && kill "$mosq" 2>/dev/null || true
    [ -n "${core:-}" ] && kill "$core" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT

mkdir -p "$tmp/core/config/config.d"
target/release/verdant init --print-default-config > "$tmp/core/config/verdant.toml"
cat > "$tmp/core/config/config.d/50-bench.toml" <<CONF
[broker]
# local: the broker alone, as a plain broker; routed: by the group's table.
mode = "$mode"
max_queued_messages = 100000
# Over TLS every load client presents the one sample device.
require_client_id_match = $([ "$tls" = yes ] && echo false || echo true)
${BROKER_CONFIG:-}
[broker.tls]
bind = "127.0.0.1:$VERDANT_TLS_PORT"
[broker.tcp]
enabled = true
bind = "127.0.0.1:$VERDANT_PORT"
CONF
if [ "$mode" = routed ]; then
    mkdir -p "$tmp/core/deployments/bench"
    target/release/verdant-bench group > "$tmp/core/deployments/bench/group.json"
    ln -s bench "$tmp/core/deployments/current"
fi
VERDANT_LOG=warn target/release/verdant init --root "$tmp/core" >/dev/null 2>&1 &
core=$!

wait_port() {
    for _ in $(seq 100); do
        (echo > /dev/tcp/127.0.0.1/$1) 2>/dev/null && return
        sleep 0.1
    done
}
wait_port "$VERDANT_PORT"
wait_port "$VERDANT_TLS_PORT"
# Mosquitto tuned as a latency-minded user would (Nagle off, like Verdant),
# with queues large enough not to drop by policy; with --tls on the
# certificates the core made on its first start.
cat > "$tmp/mosquitto.conf" <<CONF
listener $MOSQ_PORT 127.0.0.1
allow_anonymous true
set_tcp_nodelay true
persistence false
max_queued_messages 100000
log_dest none
CONF
certs="$tmp/core/config/certs"
if [ "$tls" = yes ]; then
    cat >> "$tmp/mosquitto.conf" <<CONF
cafile $certs/group-ca.pem
certfile $certs/server.pem
keyfile $certs/server.key
require_certificate true
# Started as root, Mosquitto would read the key as its own user, which
# cannot enter this script's private temp directory.
user $(id -un)
CONF
fi
mosquitto -c "$tmp/mosquitto.conf" &
mosq=$!
wait_port "$MOSQ_PORT"
# This core's broker (not another core's on the machine).
broker=$(target/release/verdantctl --root "$tmp/core" status --output json |
    python3 -c 'import json, sys; print(next(s["pid"] for s in json.load(sys.stdin) if s["name"] == "broker"))')
verdant=(--target "verdant=127.0.0.1:$VERDANT_PORT")
if [ "$tls" = yes ]; then
    device="$certs/group-ca.pem,$certs/devices/sample-device.pem,$certs/devices/sample-device.key"
    verdant=(--target "verdant=127.0.0.1:$VERDANT_TLS_PORT" --tls "verdant=$device" --tls "mosquitto=$device")
fi
target/release/verdant-bench mqtt --target "mosquitto=127.0.0.1:$MOSQ_PORT" "${verdant[@]}" \
    --pid "mosquitto=$mosq" --pid "verdant=$broker" "$@"
echo
echo "idle after the run: mosquitto RSS $(ps -o rss= -p "$mosq") KiB; verdant-broker RSS $(ps -o rss= -p "$broker") KiB"
