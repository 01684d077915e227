"""What the paho-mqtt conformance scripts share: `check`, and a client of
either version with its events in queues. The scripts take
HOST TLS_PORT CA CERT KEY PLAIN_PORT; `setup` reads them."""
import queue
import ssl
import sys

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

WAIT = 20
ARGS = {}


def setup(argv):
    """Reads HOST TLS_PORT CA CERT KEY PLAIN_PORT."""
    keys = ("host", "tls_port", "ca", "cert", "key", "plain_port")
    ARGS.update(zip(keys, argv[1:7]))


def check(cond, what):
    if not cond:
        sys.exit(f"FAILED: {what}")
    print(f"ok: {what}", flush=True)


class Client:
    """A paho client (5.0, or 3.1.1 with `v311`) with its events in queues:
    the sample device over mutual TLS with `tls`, else on the plain port."""

    def __init__(self, client_id, tls=False, v311=False, clean=True):
        self.v311 = v311
        if v311:
            self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                 protocol=mqtt.MQTTv311, clean_session=clean)
        else:
            self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        if tls:
            self.c.tls_set(ca_certs=ARGS["ca"], certfile=ARGS["cert"], keyfile=ARGS["key"],
                           tls_version=ssl.PROTOCOL_TLS_CLIENT)
        self.port = int(ARGS["tls_port"] if tls else ARGS["plain_port"])
        self.connack = queue.Queue()
        self.messages = queue.Queue()
        self.subacks = queue.Queue()
        self.unsubacks = queue.Queue()
        self.c.on_connect = lambda c, u, flags, rc, props: self.connack.put((flags, rc, props))
        self.c.on_message = lambda c, u, msg: self.messages.put(msg)
        self.c.on_subscribe = lambda c, u, mid, rcs, props: self.subacks.put(rcs)
        self.c.on_unsubscribe = lambda c, u, mid, rcs, props: self.unsubacks.put(rcs)

    def connect(self, clean_start=True, expiry=None, will=None, will_delay=None, max_packet=None):
        """CONNECT; returns (flags, reason code, properties) of CONNACK."""
        if self.v311:
            if will:
                self.c.will_set(will, b"gone", qos=1)
            self.c.connect(ARGS["host"], self.port, keepalive=30)
            self.c.loop_start()
            return self.connack.get(timeout=WAIT)
        props = Properties(PacketTypes.CONNECT)
        if max_packet is not None:
            props.MaximumPacketSize = max_packet
        if expiry is not None:
            props.SessionExpiryInterval = expiry
        if will:
            will_props = Properties(PacketTypes.WILLMESSAGE)
            if will_delay is not None:
                will_props.WillDelayInterval = will_delay
            self.c.will_set(will, b"gone", qos=1, properties=will_props)
        self.c.connect(ARGS["host"], self.port, clean_start=clean_start, properties=props)
        self.c.loop_start()
        return self.connack.get(timeout=WAIT)

    def subscribe(self, topic, qos, **options):
        """SUBSCRIBE; returns SUBACK's reason codes."""
        if options:
            self.c.subscribe(topic, options=SubscribeOptions(qos=qos, **options))
        else:
            self.c.subscribe(topic, qos)
        return self.subacks.get(timeout=WAIT)

    def unsubscribe(self, topic):
        self.c.unsubscribe(topic)
        self.unsubacks.get(timeout=WAIT)

    def publish(self, topic, payload, qos, props=None, retain=False):
        info = self.c.publish(topic, payload, qos=qos, properties=props, retain=retain)
        info.wait_for_publish(WAIT)
        check(info.is_published(), f"PUBLISH {topic} QoS {qos} completed")

    def message(self, timeout=WAIT):
        return self.messages.get(timeout=timeout)

    def message_on(self, topic):
        """The next message on `topic`, past others."""
        while True:
            m = self.message()
            if m.topic == topic:
                return m

    def nothing(self, seconds):
        """No message for `seconds`."""
        try:
            m = self.messages.get(timeout=seconds)
        except queue.Empty:
            return
        sys.exit(f"FAILED: unexpected message on {m.topic}: {m.payload!r}")

    def vanish(self):
        """Drops the connection without DISCONNECT."""
        self.c.loop_stop()
        self.c.socket().close()

    def close(self, reason=None):
        if reason is None:
            self.c.disconnect()
        else:
            self.c.disconnect(reasoncode=ReasonCode(PacketTypes.DISCONNECT, reason))
        self.c.loop_stop()
