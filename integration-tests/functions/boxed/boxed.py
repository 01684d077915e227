"""A function in a GreengrassContainer: reports what it can see and do, or
allocates more memory than its MemorySize when asked."""
import errno
import json
import os
import signal
import socket

import greengrasssdk

iot = greengrasssdk.client("iot-data")


def escape():
    """What a function tries to get out of its container."""
    report = {}
    try:
        with open("/etc/shadow") as f:
            f.read()
        report["shadow_readable"] = True
    except OSError:
        report["shadow_readable"] = False
    report["pids_seen"] = len([p for p in os.listdir("/proc") if p.isdigit()])
    report["written"] = []
    for path in ["/x", "/usr/x", "/etc/x", "/lambda/x", "/runtime/x", "/proc/x", "/tmp/x"]:
        try:
            with open(path, "w") as f:
                f.write("x")
            report["written"].append(path)
        except OSError:
            pass
    try:
        os.setuid(0)
        report["became_root"] = True
    except OSError:
        report["became_root"] = False
    kids = []
    try:
        while len(kids) < 10000:
            pid = os.fork()
            if pid == 0:
                # Small processes, so the pids limit is met before memory's.
                try:
                    os.execv("/bin/sleep", ["sleep", "60"])
                finally:
                    os._exit(1)
            kids.append(pid)
        report["fork_error"] = None
    except OSError as e:
        report["fork_error"] = errno.errorcode.get(e.errno)
    finally:
        for pid in kids:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    report["forked"] = len(kids)
    return report


def handler(event, context):
    if "escape" in event:
        iot.publish(topic="boxed/out", payload=json.dumps(escape()))
        return None
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
    # Granted resources: a volume (read-write) and a device (read-only),
    # and /sys (AccessSysfs).
    with open("/data/shared/hello", "w") as f:
        f.write("from the container")
    report["device"] = os.path.exists("/dev/full")
    try:
        with open("/dev/full", "w") as f:
            f.write("x")
        report["device_error"] = None
    except OSError as e:
        # EPERM when opening for writing: granted read-only.
        report["device_error"] = errno.errorcode.get(e.errno)
    report["sysfs"] = os.path.isdir("/sys/class")
    report["groups"] = sorted(os.getgroups())
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("CapEff", "CapBnd", "CapPrm", "NoNewPrivs"):
                report[key] = value.strip()
    iot.publish(topic="boxed/out", payload=json.dumps(report))
    return None
