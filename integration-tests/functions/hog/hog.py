"""An on-demand function in a GreengrassContainer: answers at once, or
first allocates as many MiB as asked (beyond its MemorySize, the kernel
kills it)."""


def handler(event, context):
    mb = event.get("alloc_mb", 0) if isinstance(event, dict) else 0
    # Written, not just reserved: every page counts against the limit.
    hog = b"x" * (mb << 20)
    return {"allocated": len(hog)}
