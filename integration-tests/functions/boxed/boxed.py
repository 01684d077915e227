"""A function in a GreengrassContainer: reports what it can see and do, or
allocates more memory than its MemorySize when asked."""
import json
import os
import socket

import greengrasssdk

iot = greengrasssdk.client("iot-data")


def handler(event, context):
    if "alloc_mb" in event:
        hog = b"x" * (event["alloc_mb"] << 20)
        iot.publish(topic="boxed/out", payload=json.dumps({"allocated": len(hog)}))
        return None
    report = {
        "uid": os.getuid(),
        "pid": os.getpid(),
        "hostname": socket.gethostname(),
        "root": sorted(os.listdir("/")),
        "cwd": os.getcwd(),
    }
    try:
        with open("/lambda/written", "w") as f:
            f.write("x")
        report["code_writable"] = True
    except OSError:
        report["code_writable"] = False
    with open("/tmp/scratch", "w") as f:
        report["tmp_writable"] = f.write("x") == 1
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("CapEff", "CapBnd", "CapPrm", "NoNewPrivs"):
                report[key] = value.strip()
    iot.publish(topic="boxed/out", payload=json.dumps(report))
    return None
