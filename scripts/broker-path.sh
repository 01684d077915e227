#!/usr/bin/env bash
# The time a message spends inside a running broker, from its system
# calls: runs the load tool's QoS 1 (or 0) latency scenario (blocking clients)
# against one broker while `perf` records that broker's read, write and
# epoll_wait calls, then prints, over every message, the time from the
# `epoll_wait` return that brought its PUBLISH, and from the read that
# returned it, to the write that delivers it to the subscriber.
# Tracepoints on system calls only: the code in between runs undisturbed.
# Needs perf and the right to trace the broker (root, or
# kernel.perf_event_paranoid <= 1 for one's own processes) and a release
# build of verdant-bench.
# Usage: scripts/broker-path.sh HOST:PORT BROKER_PID [RUNS] [QOS (1, or 0)]
set -euo pipefail
cd "$(dirname "$0")/.."
addr=${1:?HOST:PORT of the broker}
pid=${2:?the broker process id}
runs=${3:-3}
qos=${4:-1}
case $qos in 0 | 1) ;; *) echo "QoS 0 or 1, not $qos" >&2; exit 1 ;; esac
command -v perf >/dev/null || { echo "perf missing" >&2; exit 1; }
data=$(mktemp)
trap 'rm -f "$data"' EXIT
events=()
for call in read recvfrom epoll_wait epoll_pwait; do events+=(-e "syscalls:sys_exit_$call"); done
for call in write writev sendto; do events+=(-e "syscalls:sys_enter_$call"); done
perf record -q "${events[@]}" -p "$pid" -o "$data" -- sleep 3600 2>/dev/null &
recorder=$!
sleep 0.5
target/release/verdant-bench mqtt --target "broker=$addr" \
    --only "latency at 1000 msg/s, QoS $qos" --runs "$runs" --quick --client probe 2>/dev/null |
    grep "all runs pooled" | awk -F'|' '{print "end to end: p50 " $8+0 " µs, p99 " $9+0 " µs"}'
kill -INT "$recorder"
wait "$recorder" 2>/dev/null || true
perf script --ns -i "$data" -F time,event,trace 2>/dev/null | python3 -c '
import re, sys

def size(trace):
    m = re.search(r"(count|len): (0x[0-9a-f]+)", trace)
    return int(m.group(2), 16) if m else None

woke = read = None
from_wake, from_read = [], []
for line in sys.stdin:
    m = re.match(r"\s*([\d.]+):\s+syscalls:(\S+):\s*(.*)", line)
    if not m:
        continue
    t, event, trace = float(m.group(1)) * 1e6, m.group(2), m.group(3).strip()
    if event.startswith("sys_exit_epoll"):
        woke, read = t, None
    elif event in ("sys_exit_read", "sys_exit_recvfrom"):
        # A PUBLISH of the scenario (64-byte payload); a read of its
        # header alone (Mosquitto reads in three) or an error is smaller.
        if trace.startswith("0x") and 16 < int(trace, 16) < 200:
            read = t
    elif read is not None and woke is not None:
        n = size(trace)
        if "vlen" in trace or (n is not None and n > 16):
            from_wake.append(t - woke)
            from_read.append(t - read)
            woke = read = None

def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]

if not from_read:
    sys.exit("no message seen: is the pid the broker serving that address?")
print(f"{len(from_read)} messages")
for name, xs in (("wake to delivery", from_wake), ("read to delivery", from_read)):
    print(f"{name}: p50 {pct(xs, .5):.1f} µs, p90 {pct(xs, .9):.1f} µs, p99 {pct(xs, .99):.1f} µs")
'
