"""A function that answers with what its configuration gave it: the
GREETING environment variable, and the process it runs in."""
import os


def handler(event, context):
    return {"greeting": os.environ.get("GREETING"), "pid": os.getpid()}
