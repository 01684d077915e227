"""Abuses the discovery API with a valid device certificate: a huge request
line, and a request that never finishes (slowloris). Prints one line each:
"huge <first line of the answer, or 'closed'>" and "slow closed after <s>"
(or "slow still open" after 40 s).

usage: discovery_abuse.py HOST PORT CA CERT KEY
"""
import socket
import ssl
import sys
import time

host, port, ca, cert, key = sys.argv[1:6]
ctx = ssl.create_default_context(cafile=ca)
ctx.load_cert_chain(cert, key)


def connect():
    raw = socket.create_connection((host, int(port)), timeout=40)
    return ctx.wrap_socket(raw, server_hostname=host)


def first_line(s):
    data = b""
    try:
        while b"\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    except (ssl.SSLError, OSError):
        pass
    return data.split(b"\r\n")[0].decode(errors="replace") or "closed"


s = connect()
try:
    s.sendall(b"GET /greengrass/discover/thing/" + b"a" * 100000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
except (ssl.SSLError, OSError):
    pass
print("huge " + first_line(s), flush=True)
s.close()

s = connect()
start = time.monotonic()
s.sendall(b"GET /greengrass/discover/thing/sample-device HTTP/1.1\r\n")
try:
    got = s.recv(4096)
    print("slow closed after %.0f" % (time.monotonic() - start) if not got or b"408" in got or b"400" in got
          else "slow answered " + got.decode(errors="replace"), flush=True)
except socket.timeout:
    print("slow still open", flush=True)
except (ssl.SSLError, OSError):
    print("slow closed after %.0f" % (time.monotonic() - start), flush=True)
