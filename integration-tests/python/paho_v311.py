"""paho-mqtt speaking MQTT 3.1.1 to a core in local mode, walking the
normative statements a client sees: the sample device over mutual TLS
and other clients on the plain listener.

usage: paho_v311.py HOST TLS_PORT CA CERT KEY PLAIN_PORT
Prints each check as it passes; exits non-zero at the first that fails.
"""
import queue
import ssl
import sys
import time

import paho.mqtt.client as mqtt

host, tls_port, ca, cert, key, plain_port = sys.argv[1:7]
WAIT = 20


def check(cond, what):
    if not cond:
        sys.exit(f"FAILED: {what}")
    print(f"ok: {what}", flush=True)


class Client:
    def __init__(self, client_id, tls=False, clean=True):
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                             protocol=mqtt.MQTTv311, clean_session=clean)
        if tls:
            self.c.tls_set(ca_certs=ca, certfile=cert, keyfile=key, tls_version=ssl.PROTOCOL_TLS_CLIENT)
        self.port = int(tls_port if tls else plain_port)
        self.events = queue.Queue()
        self.messages = queue.Queue()
        self.c.on_connect = lambda c, u, flags, rc, p: self.events.put(("connack", flags, rc))
        self.c.on_subscribe = lambda c, u, mid, rcs, p: self.events.put(("suback", rcs))
        self.c.on_unsubscribe = lambda c, u, mid, rcs, p: self.events.put(("unsuback", rcs))
        self.c.on_message = lambda c, u, m: self.messages.put(m)

    def connect(self, will=None):
        if will:
            self.c.will_set(will, b"gone", qos=1)
        self.c.connect(host, self.port, keepalive=30)
        self.c.loop_start()
        kind, flags, rc = self.events.get(timeout=WAIT)
        check(kind == "connack" and rc == 0, f"{self.c._client_id.decode()} CONNACK 0")
        return flags

    def subscribe(self, topic, qos):
        self.c.subscribe(topic, qos)
        kind, rcs = self.events.get(timeout=WAIT)
        return [r.value for r in rcs]

    def unsubscribe(self, topic):
        self.c.unsubscribe(topic)
        kind, _ = self.events.get(timeout=WAIT)
        check(kind == "unsuback", "UNSUBACK")

    def publish(self, topic, payload, qos, retain=False):
        info = self.c.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(WAIT)
        check(info.is_published(), f"PUBLISH {topic} QoS {qos} completed")

    def message(self, timeout=WAIT):
        return self.messages.get(timeout=timeout)

    def nothing(self, seconds):
        try:
            m = self.messages.get(timeout=seconds)
        except queue.Empty:
            return True
        sys.exit(f"FAILED: unexpected message on {m.topic}: {m.payload!r}")

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()

    def vanish(self):
        self.c.loop_stop()
        self.c.socket().close()


dev = Client("sample-device", tls=True)
dev.connect()
other = Client("v311-other")
other.connect()

# Granted QoS is what was asked (MQTT-3.9.3). (paho checks filters itself,
# so the broker's 0x80 for a bad one is tested in the broker's own tests.)
check(dev.subscribe("t/#", 2) == [2], "SUBACK grants QoS 2")

# Each QoS both ways; delivered at min(published, granted) (MQTT-3.8.4-6).
for q in (0, 1, 2):
    other.publish(f"t/q{q}", f"qos{q}".encode(), q)
    m = dev.message()
    check((m.topic, m.payload, m.qos) == (f"t/q{q}", f"qos{q}".encode(), q), f"QoS {q} delivered at QoS {q}")
check(other.subscribe("u", 1) == [1], "SUBACK QoS 1")
dev.publish("u", b"capped", 2)
m = other.message()
check(m.qos == 1, "a QoS 2 message to a QoS 1 subscription arrives at QoS 1")

# Overlapping subscriptions: one copy, at the highest QoS (MQTT-3.3.5-1).
check(dev.subscribe("t/+", 1) == [1], "overlapping subscription")
other.publish("t/o", b"once", 2)
m = dev.message()
check(m.payload == b"once" and m.qos == 2, "one copy at the highest granted QoS")
dev.nothing(0.5)

# `$` topics are not matched by a leading wildcard (MQTT-4.7.2-1).
check(dev.subscribe("#", 0) == [0], "subscribe #")
other.publish("$SYS/x", b"dollar", 1)
other.publish("t/after", b"after", 1)
got = [dev.message().topic]
while got[-1] != "t/after":
    got.append(dev.message().topic)
check("$SYS/x" not in got, f"# does not match a $ topic: {got}")
dev.unsubscribe("#")

# Retained: the last one is sent on subscribe with the retain flag; an
# empty retained message clears it (MQTT-3.3.1-5/6/10).
other.publish("r/1", b"old", 1, retain=True)
other.publish("r/1", b"new", 1, retain=True)
r = Client("v311-retained")
r.connect()
r.subscribe("r/#", 1)
m = r.message()
check(m.payload == b"new" and m.retain, "the last retained message, flagged retained")
other.publish("r/1", b"live", 1)
m = r.message()
check(m.payload == b"live" and not m.retain, "a live message is not flagged retained")
other.publish("r/1", b"", 1, retain=True)
r.close()
r = Client("v311-retained2")
r.connect()
r.subscribe("r/#", 1)
r.nothing(0.5)
r.close()

# Unsubscribe stops delivery.
other.unsubscribe("u")
dev.publish("u", b"gone", 1)
other.nothing(0.5)

# Persistent session: subscriptions and QoS 1 messages kept while away;
# session present on return (MQTT-3.1.2-4/5, 3.2.2-2).
p = Client("v311-keeper", clean=False)
p.connect()
p.subscribe("keep", 1)
p.close()
other.publish("keep", b"while away", 1)
p = Client("v311-keeper", clean=False)
flags = p.connect()
check(flags.session_present, "session present")
check(p.message().payload == b"while away", "queued message delivered on return")
p.close()
p = Client("v311-keeper", clean=True)
flags = p.connect()
check(not flags.session_present, "a clean session starts afresh")
p.close()

# Will: published when the client vanishes, not after DISCONNECT.
w = Client("v311-will")
w.connect(will="t/will")
w.close()
dev.nothing(0.5)
w = Client("v311-will2")
w.connect(will="t/will2")
w.vanish()
got = dev.message()
while got.topic != "t/will2":
    got = dev.message()
check(got.payload == b"gone", "will published when the client vanished")

# A second connection with the same client id takes the session over.
a = Client("v311-dup")
a.connect()
b = Client("v311-dup")
b.connect()
time.sleep(0.5)
check(not a.c.is_connected(), "the first connection was closed")
b.close()

other.close()
dev.close()
print("all MQTT 3.1.1 checks passed")
