"""The AWS IoT Device SDK for Python's shadow client (AWSIoTPythonSDK
1.6.2), unmodified, against the core's shadow service over mutual TLS.
The SDK hands a reply to its callback only when the reply carries the
request's clientToken; otherwise the callback gets "timeout".

usage: awsiot_shadow.py HOST PORT CA CERT KEY THING [MODE]
MODE "flow" (the default): update desired (and the delta it causes), get,
update reported, delete, get after delete.
MODE "rejections": one request per rejection the SDK can cause (404, 400,
409, 413) on a thing with no shadow yet.
MODE "full-disk": an update, then the line "fill" on stdout; after a line
on stdin (the disk under the shadow store is full), another update.
Prints one JSON object: {"results": {step: {"status", "payload", "token"}},
"deltas": [...]}.
"""
import json
import sys
import threading

from AWSIoTPythonSDK.MQTTLib import AWSIoTMQTTShadowClient

host, port, ca, cert, key, thing = sys.argv[1:7]
mode = sys.argv[7] if len(sys.argv) > 7 else "flow"
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
        results[name] = {"status": status, "payload": body, "token": token}
        done.set()

    call(callback)
    if not done.wait(30):
        results[name] = {"status": "no answer", "payload": None, "token": None}


def update(name, document):
    step(name, lambda cb: shadow.shadowUpdate(json.dumps(document), cb, 10))


if mode == "flow":
    shadow.shadowRegisterDeltaCallback(on_delta)
    update("update", {"state": {"desired": {"color": "red"}}})
    delta_seen.wait(15)
    step("get", lambda cb: shadow.shadowGet(cb, 10))
    update("report", {"state": {"reported": {"color": "red"}}})
    update("conflict", {"state": {"reported": {"color": "blue"}}, "version": 1})
    step("delete", lambda cb: shadow.shadowDelete(cb, 10))
    step("get_after_delete", lambda cb: shadow.shadowGet(cb, 10))
elif mode == "rejections":
    step("get_missing", lambda cb: shadow.shadowGet(cb, 10))
    step("delete_missing", lambda cb: shadow.shadowDelete(cb, 10))
    update("no_state", {"desired": {"on": True}})
    update("state_not_object", {"state": "on"})
    update("desired_not_object", {"state": {"desired": [1]}})
    update("invalid_node", {"state": {"wanted": {"on": True}}})
    update("version_not_number", {"state": {"desired": {"on": True}}, "version": "1"})
    nested = {"on": True}
    for level in range(7):
        nested = {"l%d" % level: nested}
    update("too_deep", {"state": {"desired": nested}})
    update("conflict", {"state": {"desired": {"on": True}}, "version": 3})
    update("too_large", {"state": {"reported": {"log": "x" * 9000}}})
elif mode == "full-disk":
    update("stored", {"state": {"reported": {"k": 1}}})
    print("fill", flush=True)
    sys.stdin.readline()
    update("disk_full", {"state": {"reported": {"k": 2}}})
else:
    sys.exit("unknown mode " + mode)
print(json.dumps({"results": results, "deltas": deltas}), flush=True)
client.disconnect()
