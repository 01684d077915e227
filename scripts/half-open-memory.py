#!/usr/bin/env python3
"""A broker's resident memory with N half-open connections (TCP connected,
no TLS handshake or CONNECT finished), then after they close.

Usage: scripts/half-open-memory.py BROKER_PID PORT N
"""
import socket, subprocess, sys, time
pid = int(sys.argv[1]); port = int(sys.argv[2]); n = int(sys.argv[3])
def rss():
    for l in open(f"/proc/{pid}/status"):
        if l.startswith("VmRSS"): return int(l.split()[1])
print("idle", rss())
socks = []
for i in range(n):
    s = socket.create_connection(("127.0.0.1", port)); socks.append(s)
    if i % 100 == 0: s.send(b"\x16\x03\x01\x00\x05hello")  # a partial TLS record on some
time.sleep(2)
print("with", n, "half-open", rss())
for s in socks: s.close()
prev = 0
for t in (1, 3, 6, 10):
    time.sleep(t - prev); prev = t
    print("after close +%ds" % t, rss())
