"""paho-mqtt speaking MQTT 5.0 to a core in local mode: the sample device
over mutual TLS subscribes, a second client on the plain listener
publishes. Checks what 5.0 adds: message properties forwarded unaltered,
topic aliases, reason codes, clean start with a session expiry interval,
and the will sent on a DISCONNECT with reason code 0x04.

usage: paho_v5.py HOST TLS_PORT CA CERT KEY PLAIN_PORT
Prints each check as it passes; exits non-zero at the first that fails.
"""
import queue
import sys
import time

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from paho_client import WAIT, Client, check, setup

setup(sys.argv)

sub = Client("sample-device", tls=True)
flags, rc, props = sub.connect()
check(rc == 0, f"device CONNACK over mTLS: {rc}")
check(props.TopicAliasMaximum == 64, "CONNACK Topic Alias Maximum 64")
rcs = sub.subscribe("v5/#", 2)
check([r.value for r in rcs] == [2], f"SUBACK grants QoS 2: {rcs}")

pub = Client("v5-publisher")
flags, rc, _ = pub.connect()
check(rc == 0, "publisher CONNACK")

# Properties arrive unaltered, user properties in order, duplicates kept.
p = Properties(PacketTypes.PUBLISH)
p.PayloadFormatIndicator = 1
p.MessageExpiryInterval = 60
p.ContentType = "text/plain"
p.ResponseTopic = "v5/resp"
p.CorrelationData = b"\x00abc"
p.UserProperty = [("k", "v"), ("k", "w"), ("z", "1")]
pub.publish("v5/req", b"request", 1, p)
m = sub.message()
check(m.topic == "v5/req" and m.payload == b"request", "message delivered")
mp = m.properties
check(mp.ResponseTopic == "v5/resp", "response topic forwarded")
check(mp.CorrelationData == b"\x00abc", "correlation data forwarded")
check(mp.ContentType == "text/plain", "content type forwarded")
check(mp.PayloadFormatIndicator == 1, "payload format indicator forwarded")
check(mp.UserProperty == [("k", "v"), ("k", "w"), ("z", "1")], f"user properties in order: {mp.UserProperty}")
check(0 < mp.MessageExpiryInterval <= 60, f"expiry interval counted down: {mp.MessageExpiryInterval}")

# A topic alias set with one PUBLISH and used alone by the next.
a = Properties(PacketTypes.PUBLISH)
a.TopicAlias = 3
pub.publish("v5/alias", b"first", 1, a)
pub.publish("", b"second", 1, a)
got = [sub.message(), sub.message()]
check([(g.topic, g.payload) for g in got] == [("v5/alias", b"first"), ("v5/alias", b"second")],
      "topic alias resolved")

# QoS 2 both ways.
pub.publish("v5/exact", b"two", 2)
m = sub.message()
check(m.topic == "v5/exact" and m.qos == 2, "QoS 2 delivered at QoS 2")

# A session kept by its expiry interval: clean start 0 finds it again.
later = Client("v5-later")
flags, rc, _ = later.connect(clean_start=True, expiry=300)
check(not flags.session_present, "new session")
later.subscribe("v5/later", 1)
later.close()
pub.publish("v5/later", b"while away", 1)
later = Client("v5-later")
flags, rc, _ = later.connect(clean_start=False, expiry=300)
check(flags.session_present, "session present after reconnecting")
m = later.message()
check(m.payload == b"while away", "message queued while away delivered")
later.close()
# Clean start discards it.
later = Client("v5-later")
flags, rc, _ = later.connect(clean_start=True, expiry=0)
check(not flags.session_present, "clean start discards the session")
later.close()

# DISCONNECT with reason 0x04 still publishes the will.
w = Client("v5-will")
w.connect(will="v5/will")
w.close(reason="Disconnect with will message")
m = sub.message_on("v5/will")
check(m.topic == "v5/will" and m.payload == b"gone", "will published on DISCONNECT 0x04")

# No local: the device's own message does not come back to a "no local"
# subscription; another client's does.
own = Client("v5-own")
own.connect()
own.subscribe("v5/own", 1, noLocal=True)
own.publish("v5/own", b"mine", 1)
pub.publish("v5/own", b"theirs", 1)
m = own.message()
check(m.payload == b"theirs", f"no local: own message not delivered (got {m.payload})")
own.close()

# Retain handling 2 sends no retained message at subscribe; retain as
# published keeps the flag on live messages.
pub.publish("v5/kept", b"old", 1, retain=True)
rap = Client("v5-rap")
rap.connect()
rap.subscribe("v5/kept", 1, retainHandling=2, retainAsPublished=True)
pub.publish("v5/kept", b"live", 1, retain=True)
m = rap.message()
check(m.payload == b"live", f"retain handling 2: nothing at subscribe (got {m.payload})")
check(m.retain, "retain as published: the live message keeps its retain flag")
rap.close()
plain = Client("v5-plain")
plain.connect()
plain.subscribe("v5/kept", 1)
m = plain.message()
check(m.payload == b"live" and m.retain, "retain handling 0: the retained message at subscribe")
pub.publish("v5/kept", b"again", 1, retain=True)
m = plain.message()
check(m.payload == b"again" and not m.retain, "without retain as published the flag is cleared")
plain.close()

# Nothing larger than the client's Maximum Packet Size is sent to it; a
# QoS 1 message dropped so does not block the ones behind it.
small = Client("v5-small")
small.connect(max_packet=128)
small.subscribe("v5/size", 1)
pub.publish("v5/size", b"x" * 500, 1)
pub.publish("v5/size", b"fits", 1)
m = small.message()
check(m.payload == b"fits", f"an oversized message is not sent (got {len(m.payload)} bytes)")
small.close()

# Subscription identifiers: each delivery names the receiver's matching
# subscriptions.
ids = Client("v5-ids")
ids.connect()
for topic, sid in (("v5/sid/#", 42), ("v5/sid/+", 43)):
    sp = Properties(PacketTypes.SUBSCRIBE)
    sp.SubscriptionIdentifier = sid
    ids.c.subscribe(topic, 1, properties=sp)
    ids.subacks.get(timeout=WAIT)
pub.publish("v5/sid/x", b"both", 1)
m = ids.message()
check(sorted(m.properties.SubscriptionIdentifier) == [42, 43], f"subscription identifiers: {m.properties.SubscriptionIdentifier}")
pub.publish("v5/sid/x/y", b"one", 1)
m = ids.message()
check(m.properties.SubscriptionIdentifier == [42], f"only the matching one: {m.properties.SubscriptionIdentifier}")
ids.close()

# A shared subscription: its members, 5.0 and 3.1.1 alike, take turns;
# every message goes to exactly one of them.
workers = [Client("v5-worker"), Client("v311-worker", v311=True)]
for w in workers:
    w.connect()
    w.subscribe("$share/workers/v5/job/+", 1)
for i in range(10):
    pub.publish(f"v5/job/{i}", str(i).encode(), 1)
got = {}
for w in workers:
    got[w] = []
deadline = time.monotonic() + WAIT
while sum(len(v) for v in got.values()) < 10:
    check(time.monotonic() < deadline, "ten messages reach the group")
    for w in workers:
        try:
            got[w].append(w.messages.get(timeout=0.2).payload)
        except queue.Empty:
            pass
everything = sorted(int(p) for v in got.values() for p in v)
check(everything == list(range(10)), f"each message to one member: {everything}")
check(all(len(v) == 5 for v in got.values()), f"members take turns: {[len(v) for v in got.values()]}")
for w in workers:
    w.close()

# A session kept for 2 s is gone after that.
exp = Client("v5-expiry")
exp.connect(clean_start=True, expiry=2)
exp.subscribe("v5/exp", 1)
exp.close()
time.sleep(3.5)
exp = Client("v5-expiry")
flags, rc, _ = exp.connect(clean_start=False, expiry=2)
check(not flags.session_present, "the session ended after its expiry interval")
exp.close()

# A will with a 2 s delay waits that long after the client vanished.
d = Client("v5-delay")
d.connect(expiry=30, will="v5/delayed", will_delay=2)
start = time.monotonic()
d.vanish()
m = sub.message_on("v5/delayed")
waited = time.monotonic() - start
check(waited >= 1.5, f"delayed will published after its delay ({waited:.1f} s)")

pub.close()
sub.close()
print("all MQTT 5.0 checks passed")
