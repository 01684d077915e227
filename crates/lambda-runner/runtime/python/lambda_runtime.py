"""Verdant's Python runtime loop for Greengrass v1 functions.

Run as: python3 -u lambda_runtime.py --handler=<module>.<function>, with the
function's code as the working directory. Imports the handler's module (its
top-level code runs now), tells the core it is initialized, then takes
work items one at a time: builds the event and the context, calls the
handler, and posts the result or the handled error.
"""
import base64
import importlib
import json
import logging
import os
import sys
import time
import traceback

from greengrass_common.env_vars import MY_FUNCTION_ARN
from greengrass_ipc_python_sdk.ipc_client import IPCClient, WorkItem


class ClientContext:
    def __init__(self, raw):
        self.client = raw.get("client")
        self.custom = raw.get("custom") or {}
        self.env = raw.get("env")


class Context:
    def __init__(self, invocation_id, client_context, deadline):
        parts = MY_FUNCTION_ARN.split(":")
        self.function_name = parts[6] if len(parts) > 6 else MY_FUNCTION_ARN
        self.function_version = parts[7] if len(parts) > 7 else "$LATEST"
        self.invoked_function_arn = MY_FUNCTION_ARN
        self.memory_limit_in_mb = int(os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "16"))
        self.aws_request_id = invocation_id
        self.log_group_name = "/aws/lambda/" + self.function_name
        self.log_stream_name = "verdant"
        self.identity = None
        self.client_context = client_context
        self._deadline = deadline

    def get_remaining_time_in_millis(self):
        return max(0, int((self._deadline - time.time()) * 1000))


def decode_client_context(header):
    if not header:
        return ClientContext({})
    try:
        return ClientContext(json.loads(base64.b64decode(header)))
    except (ValueError, TypeError):
        return ClientContext({})


def main():
    handler_arg = next((a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--handler=")), None)
    if not handler_arg or "." not in handler_arg:
        sys.stderr.write("lambda_runtime: --handler=<module>.<function> is required\n")
        return 2
    module_name, function_name = handler_arg.rsplit(".", 1)
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO"), stream=sys.stderr)
    sys.path.insert(0, os.getcwd())
    ipc = IPCClient()
    try:
        module = importlib.import_module(module_name)
        handler = getattr(module, function_name)
    except Exception as e:  # noqa: BLE001: any import failure is reported to the core
        traceback.print_exc()
        ipc.put_initialization_result(MY_FUNCTION_ARN, False, "{}({!r})".format(type(e).__name__, str(e)))
        return 1
    ipc.put_initialization_result(MY_FUNCTION_ARN, True)
    binary = os.environ.get("ENCODING_TYPE", "json") == "binary"
    timeout = float(os.environ.get("VERDANT_FUNCTION_TIMEOUT", "3"))
    while True:
        work = ipc.get_work(MY_FUNCTION_ARN)
        context = Context(work.invocation_id, decode_client_context(work.client_context), time.time() + timeout)
        try:
            if binary:
                event = work.payload
            else:
                event = json.loads(work.payload) if work.payload else None
            result = handler(event, context)
            if binary:
                body = result if isinstance(result, (bytes, bytearray)) else (b"" if result is None else str(result).encode())
            else:
                body = json.dumps(result).encode()
        except Exception as e:  # noqa: BLE001: the handler's error goes back to the caller
            traceback.print_exc()
            ipc.post_handler_err(MY_FUNCTION_ARN, work.invocation_id, "{}: {}".format(type(e).__name__, e))
            continue
        ipc.post_work_result(MY_FUNCTION_ARN, WorkItem(work.invocation_id, body, None))


if __name__ == "__main__":
    sys.exit(main())
