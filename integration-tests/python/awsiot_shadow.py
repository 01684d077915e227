"""The AWS IoT Device SDK for Python's shadow client (AWSIoTPythonSDK
1.6.2), unmodified, against the core's shadow service over mutual TLS:
update desired (and the delta it causes), get, update reported, delete,
get after delete.

usage: awsiot_shadow.py HOST PORT CA CERT KEY THING
Prints one JSON object: {"results": {step: {"status", "payload"}}, "deltas": [...]}.
"""
import json
import sys
import threading

from AWSIoTPythonSDK.MQTTLib import AWSIoTMQTTShadowClient

host, port, ca, cert, key, thing = sys.argv[1:7]
client = AWSIoTMQTTShadowClient(thing)
client.configureEndpoint(host, int(port))
client.configureCredentials(ca, key, cert)
client.configureConnectDisconnectTimeout(20)
client.configureMQTTOperationTimeout(10)
if not client.connect():
    sys.exit("connect failed")
shadow = client.createShadowHandlerWithName(thing, True)

results = {}
deltas = []
delta_seen = threading.Event()


def on_delta(payload, status, token):
    deltas.append(json.loads(payload))
    delta_seen.set()


def step(name, call):
    done = threading.Event()

    def callback(payload, status, token):
        try:
            body = json.loads(payload)
        except (TypeError, ValueError):
            body = payload
        results[name] = {"status": status, "payload": body}
        done.set()

    call(callback)
    if not done.wait(30):
        results[name] = {"status": "no answer", "payload": None}


shadow.shadowRegisterDeltaCallback(on_delta)
step("update", lambda cb: shadow.shadowUpdate(
    json.dumps({"state": {"desired": {"color": "red"}}}), cb, 10))
delta_seen.wait(15)
step("get", lambda cb: shadow.shadowGet(cb, 10))
step("report", lambda cb: shadow.shadowUpdate(
    json.dumps({"state": {"reported": {"color": "red"}}}), cb, 10))
step("conflict", lambda cb: shadow.shadowUpdate(
    json.dumps({"state": {"reported": {"color": "blue"}}, "version": 1}), cb, 10))
step("delete", lambda cb: shadow.shadowDelete(cb, 10))
step("get_after_delete", lambda cb: shadow.shadowGet(cb, 10))
print(json.dumps({"results": results, "deltas": deltas}))
client.disconnect()
