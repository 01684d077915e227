"""Reports what a function sees of a model resource at `path`: whether it
is there, the text of `file` in it, and whether it can write there."""
import os


def handler(event, context):
    path = event["path"]
    report = {"exists": os.path.isdir(path)}
    if not report["exists"]:
        return report
    try:
        report["files"] = sorted(os.listdir(path))
    except OSError as e:
        report["files"] = e.strerror
        return report
    try:
        with open(os.path.join(path, event["file"])) as f:
            report["text"] = f.read()
    except OSError as e:
        report["text"] = "cannot read: " + e.strerror
    try:
        with open(os.path.join(path, "written-by-function"), "w") as f:
            f.write("x")
        report["write"] = "written"
    except OSError as e:
        report["write"] = e.strerror
    return report
