"""An on-demand function invoked by another: returns a sum; sleeps past
its Timeout when asked."""
import time


def handler(event, context):
    if event.get("sleep"):
        time.sleep(event["sleep"])
    return {"sum": event["a"] + event["b"]}
