"""A function that answers with what its configuration gave it: the
GREETING environment variable, and the process it runs in. Asked to, it
first waits until a file exists."""
import os
import time


def handler(event, context):
    wait_for = event.get("wait_for")
    while wait_for and not os.path.exists(wait_for):
        time.sleep(0.05)
    return {"greeting": os.environ.get("GREETING"), "pid": os.getpid()}
