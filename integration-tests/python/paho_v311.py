"""paho-mqtt speaking MQTT 3.1.1 to a core in local mode, walking the
normative statements a client sees: the sample device over mutual TLS
and other clients on the plain listener.

usage: paho_v311.py HOST TLS_PORT CA CERT KEY PLAIN_PORT
Prints each check as it passes; exits non-zero at the first that fails.
"""
import sys
import time

from paho_client import Client, check, setup

setup(sys.argv)


def connect(client, will=None):
    """CONNECT as 3.1.1; checks CONNACK 0, returns its flags."""
    flags, rc, _ = client.connect(will=will)
    check(rc == 0, f"{client.c._client_id.decode()} CONNACK 0")
    return flags


def granted(client, topic, qos):
    return [r.value for r in client.subscribe(topic, qos)]


dev = Client("sample-device", tls=True, v311=True)
connect(dev)
other = Client("v311-other", v311=True)
connect(other)

# Granted QoS is what was asked (MQTT-3.9.3). (paho checks filters itself,
# so the broker's 0x80 for a bad one is tested in the broker's own tests.)
check(granted(dev, "t/#", 2) == [2], "SUBACK grants QoS 2")

# Each QoS both ways; delivered at min(published, granted) (MQTT-3.8.4-6).
for q in (0, 1, 2):
    other.publish(f"t/q{q}", f"qos{q}".encode(), q)
    m = dev.message()
    check((m.topic, m.payload, m.qos) == (f"t/q{q}", f"qos{q}".encode(), q), f"QoS {q} delivered at QoS {q}")
check(granted(other, "u", 1) == [1], "SUBACK QoS 1")
dev.publish("u", b"capped", 2)
m = other.message()
check(m.qos == 1, "a QoS 2 message to a QoS 1 subscription arrives at QoS 1")

# Overlapping subscriptions: one copy, at the highest QoS (MQTT-3.3.5-1).
check(granted(dev, "t/+", 1) == [1], "overlapping subscription")
other.publish("t/o", b"once", 2)
m = dev.message()
check(m.payload == b"once" and m.qos == 2, "one copy at the highest granted QoS")
dev.nothing(0.5)

# `$` topics are not matched by a leading wildcard (MQTT-4.7.2-1).
check(granted(dev, "#", 0) == [0], "subscribe #")
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
r = Client("v311-retained", v311=True)
connect(r)
r.subscribe("r/#", 1)
m = r.message()
check(m.payload == b"new" and m.retain, "the last retained message, flagged retained")
other.publish("r/1", b"live", 1)
m = r.message()
check(m.payload == b"live" and not m.retain, "a live message is not flagged retained")
other.publish("r/1", b"", 1, retain=True)
r.close()
r = Client("v311-retained2", v311=True)
connect(r)
r.subscribe("r/#", 1)
r.nothing(0.5)
r.close()

# Unsubscribe stops delivery.
other.unsubscribe("u")
dev.publish("u", b"gone", 1)
other.nothing(0.5)

# Persistent session: subscriptions and QoS 1 messages kept while away;
# session present on return (MQTT-3.1.2-4/5, 3.2.2-2).
p = Client("v311-keeper", v311=True, clean=False)
connect(p)
p.subscribe("keep", 1)
p.close()
other.publish("keep", b"while away", 1)
p = Client("v311-keeper", v311=True, clean=False)
flags = connect(p)
check(flags.session_present, "session present")
check(p.message().payload == b"while away", "queued message delivered on return")
p.close()
p = Client("v311-keeper", v311=True, clean=True)
flags = connect(p)
check(not flags.session_present, "a clean session starts afresh")
p.close()

# Will: published when the client vanishes, not after DISCONNECT.
w = Client("v311-will", v311=True)
connect(w, will="t/will")
w.close()
dev.nothing(0.5)
w = Client("v311-will2", v311=True)
connect(w, will="t/will2")
w.vanish()
got = dev.message()
while got.topic != "t/will2":
    got = dev.message()
check(got.payload == b"gone", "will published when the client vanished")

# A second connection with the same client id takes the session over.
a = Client("v311-dup", v311=True)
connect(a)
b = Client("v311-dup", v311=True)
connect(b)
time.sleep(0.5)
check(not a.c.is_connected(), "the first connection was closed")
b.close()

other.close()
dev.close()
print("all MQTT 3.1.1 checks passed")
