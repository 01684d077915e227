"""Hello world, as Greengrass's own first function: pinned, it publishes a
greeting on hello/world every five seconds from the moment it starts, and
answers an invocation with one."""
import json
import threading
import time

import greengrasssdk

iot = greengrasssdk.client("iot-data")


def greet_forever():
    n = 0
    while True:
        n += 1
        iot.publish(topic="hello/world",
                    payload=json.dumps({"message": "Hello world from a Verdant core", "n": n}))
        time.sleep(5)


# A pinned function's module runs once, when the core starts it.
threading.Thread(target=greet_forever, daemon=True).start()


def handler(event, context):
    return {"message": "Hello world from a Verdant core"}
