"""paho-mqtt over WebSocket to a core in local mode.

usage: paho_ws.py HOST WS_PORT CA CERT KEY MODE [TCP_PORT]
MODE `wss`: the sample device over WebSocket with mutual TLS subscribes and
publishes; a second client on the plain TCP listener (TCP_PORT) is the
other end. MODE `ws`: two MQTT 5.0 clients over plain WebSocket.
Each exchange carries a 100 KiB message, more than one WebSocket frame
and read of the other side. Exits non-zero at the first failed check.
"""
import queue
import ssl
import sys

import paho.mqtt.client as mqtt

host, ws_port, ca, cert, key, mode = sys.argv[1:7]
tcp_port = sys.argv[7] if len(sys.argv) > 7 else None
WAIT = 20
BIG = bytes(range(256)) * 400


def check(cond, what):
    if not cond:
        sys.exit(f"FAILED: {what}")
    print(f"ok: {what}", flush=True)


def client(client_id, transport, port, tls=False, protocol=mqtt.MQTTv311, path="/mqtt"):
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol, transport=transport)
    if transport == "websockets":
        c.ws_set_options(path=path)
    if tls:
        c.tls_set(ca_certs=ca, certfile=cert, keyfile=key, tls_version=ssl.PROTOCOL_TLS_CLIENT)
    c.events = queue.Queue()
    c.on_connect = lambda c, u, flags, rc, props: c.events.put(("connack", rc))
    c.on_subscribe = lambda c, u, mid, rcs, props: c.events.put(("suback", rcs))
    c.on_message = lambda c, u, msg: c.events.put(("message", msg))
    c.connect(host, int(port))
    c.loop_start()
    kind, rc = c.events.get(timeout=WAIT)
    check(kind == "connack" and not rc.is_failure, f"{client_id} connected over {transport}: {rc}")
    return c


def expect(c, kind):
    got, value = c.events.get(timeout=WAIT)
    check(got == kind, f"{kind} arrived")
    return value


if mode == "wss":
    device = client("sample-device", "websockets", ws_port, tls=True)
    other = client("tcp-peer", "tcp", tcp_port)
else:
    device = client("ws-one", "websockets", ws_port, protocol=mqtt.MQTTv5)
    other = client("ws-two", "websockets", ws_port, protocol=mqtt.MQTTv5)

device.subscribe("ws/down", 1)
expect(device, "suback")
other.subscribe("ws/up", 1)
expect(other, "suback")
other.publish("ws/down", BIG, qos=1).wait_for_publish(WAIT)
m = expect(device, "message")
check(m.payload == BIG, "100 KiB message down, whole")
device.publish("ws/up", b"small " + BIG[:10], qos=1).wait_for_publish(WAIT)
m = expect(other, "message")
check(m.payload == b"small " + BIG[:10], "message up")
for c in (device, other):
    c.disconnect()
    c.loop_stop()
print("all WebSocket checks passed")
