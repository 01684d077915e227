"""A Greengrass v1 function as users write them, with the real greengrasssdk:
for each message, records it in device a's shadow, asks the adder function
for a sum, and publishes what it saw to echo/out."""
import json
import os

import greengrasssdk

iot = greengrasssdk.client("iot-data")
functions = greengrasssdk.client("lambda")
ADDER = os.environ["ADDER_ARN"]


def handler(event, context):
    topic = context.client_context.custom["subject"]
    if event.get("fail"):
        raise ValueError("asked to fail")
    if "slow" in event:
        answer = functions.invoke(FunctionName=ADDER,
                                  Payload=json.dumps({"a": 0, "b": 0, "sleep": event["slow"]}))
        iot.publish(topic="echo/out", payload=json.dumps({
            "error": answer["FunctionError"], "body": answer["Payload"].decode()}))
        return None
    shadow = iot.update_thing_shadow(
        thingName="a", payload=json.dumps({"state": {"reported": {"last": event}}}))
    version = json.loads(shadow["payload"])["version"]
    current = json.loads(iot.get_thing_shadow(thingName="a")["payload"])
    assert current["version"] == version and current["state"]["reported"]["last"] == event, current
    # An Event invocation returns at once, with no result.
    fired = functions.invoke(FunctionName=ADDER, InvocationType="Event",
                             Payload=json.dumps({"a": 0, "b": 0}))
    assert fired == {"Payload": b"", "FunctionError": ""}, fired
    answer = functions.invoke(FunctionName=ADDER, InvocationType="RequestResponse",
                              Payload=json.dumps({"a": event["n"], "b": 100}))
    total = json.loads(answer["Payload"].read())["sum"]
    iot.publish(topic="echo/out", payload=json.dumps({
        "event": event,
        "subject": topic,
        "shadow_version": version,
        "sum": total,
        "uid": os.getuid(),
        "function": context.invoked_function_arn,
    }))
    return {"ok": True}
