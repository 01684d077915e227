#!/usr/bin/env python3
"""Makes, signs and packs a repository of Verdant releases in The Update
Framework's format (TUF 1.0, with python-tuf's Metadata API), for cores to
update from (docs/updates.md).

    update-repo.py keys KEYS                      # four ed25519 keys, 0600
    update-repo.py init REPO --keys KEYS          # an empty repository
    update-repo.py add REPO --keys KEYS --executable target/release/verdant \\
        --version 0.2.0 [--arch x86_64] [--os linux] [--min-version 0.1.0] [--stamp]
    update-repo.py timestamp REPO --keys KEYS     # a fresh timestamp (run often)
    update-repo.py rotate-root REPO --keys KEYS --new-root-key NEW.pem
    update-repo.py pack REPO FILE.tar             # one file for sites with no network

KEYS holds root.pem, targets.pem, snapshot.pem and timestamp.pem. Keep
root.pem offline: it is needed only by `init` and `rotate-root`. A core
trusts the repository's first root (REPO/metadata/1.root.json, copied to
the core's config/update-root.json); every later root must be signed by
the previous one. Each release is two targets: a manifest
`verdant-<version>-<arch>.json` ({"version", "arch", "os", "min_version",
"executable"}) and the executable `verdant-<version>-<arch>`. Snapshots
are consistent (metadata and targets named by version and hash), so a
static HTTPS server or a directory serves a repository as it is.

`--stamp` writes the version into (a copy of) the executable, in the
field `verdant --version` reads, so one build can be published as the
release it becomes; without it, the executable must already say it.
"""

import argparse
import hashlib
import json
import os
import sys
import tarfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

from cryptography.hazmat.primitives.serialization import load_pem_private_key
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import (
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer

ROLES = ("root", "targets", "snapshot", "timestamp")
# How long each role's metadata is valid by default (days).
EXPIRES = {"root": 365, "targets": 90, "snapshot": 14, "timestamp": 1}


def fail(message):
    print(f"update-repo: {message}", file=sys.stderr)
    sys.exit(1)


def signer(keys, role):
    path = Path(keys) / f"{role}.pem"
    try:
        return CryptoSigner(load_pem_private_key(path.read_bytes(), None))
    except FileNotFoundError:
        fail(f"{path}: no such key (update-repo.py keys {keys})")


def expiry(args, role):
    if getattr(args, "expires", None):
        return datetime.fromisoformat(args.expires.replace("Z", "+00:00"))
    days = getattr(args, "expires_days", None)
    days = EXPIRES[role] if days is None else days
    return datetime.now(timezone.utc).replace(microsecond=0) + timedelta(days=days)


def write(repo, md, name):
    out = Path(repo) / "metadata" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    md.to_file(str(out), JSONSerializer(compact=False))


def load(repo, name):
    return Metadata.from_file(str(Path(repo) / "metadata" / name))


def latest_root(repo):
    n = 1
    while (Path(repo) / "metadata" / f"{n + 1}.root.json").exists():
        n += 1
    return load(repo, f"{n}.root.json")


def cmd_keys(args):
    d = Path(args.keys)
    d.mkdir(parents=True, exist_ok=True)
    os.chmod(d, 0o700)
    for role in ROLES:
        path = d / f"{role}.pem"
        if path.exists():
            fail(f"{path} exists; not replaced")
        s = CryptoSigner.generate_ed25519()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(s.private_bytes)
    print(f"keys in {d}: keep root.pem offline")


def publish(args, targets):
    """Signs `targets` (one version up), then a snapshot and a timestamp
    naming it."""
    repo = args.repo
    targets.signed.expires = expiry(args, "targets")
    targets.signatures.clear()
    targets.sign(signer(args.keys, "targets"))
    write(repo, targets, f"{targets.signed.version}.targets.json")
    snapshot = load(repo, "timestamp.json").signed.snapshot_meta.version
    snap = load(repo, f"{snapshot}.snapshot.json")
    snap.signed.version += 1
    snap.signed.meta["targets.json"] = MetaFile(version=targets.signed.version)
    snap.signed.expires = expiry(args, "snapshot")
    snap.signatures.clear()
    snap.sign(signer(args.keys, "snapshot"))
    write(repo, snap, f"{snap.signed.version}.snapshot.json")
    stamp(args, snap.signed.version)


def stamp(args, snapshot_version):
    ts_path = Path(args.repo) / "metadata" / "timestamp.json"
    ts = Metadata.from_file(str(ts_path)) if ts_path.exists() else None
    version = ts.signed.version + 1 if ts else 1
    md = Metadata(
        Timestamp(
            version=version,
            expires=expiry(args, "timestamp"),
            snapshot_meta=MetaFile(version=snapshot_version),
        )
    )
    md.sign(signer(args.keys, "timestamp"))
    write(args.repo, md, "timestamp.json")


def cmd_init(args):
    if (Path(args.repo) / "metadata" / "1.root.json").exists():
        fail(f"{args.repo} already has a root")
    root = Root(expires=expiry(args, "root"), consistent_snapshot=True)
    for role in ROLES:
        root.add_key(signer(args.keys, role).public_key, role)
    md = Metadata(root)
    md.sign(signer(args.keys, "root"))
    write(args.repo, md, "1.root.json")
    targets = Metadata(Targets(version=1, expires=expiry(args, "targets")))
    targets.sign(signer(args.keys, "targets"))
    write(args.repo, targets, "1.targets.json")
    snap = Metadata(
        Snapshot(version=1, expires=expiry(args, "snapshot"),
                 meta={"targets.json": MetaFile(version=1)})
    )
    snap.sign(signer(args.keys, "snapshot"))
    write(args.repo, snap, "1.snapshot.json")
    stamp(args, 1)
    (Path(args.repo) / "targets").mkdir(exist_ok=True)
    print(f"repository in {args.repo}; a core trusts {args.repo}/metadata/1.root.json")


# The field a verdant executable reads its version from (verdant_common::version).
STAMP_MARKER = b"\0VERDANT-VERSION-" + b"STAMP:\0"
STAMP_FIELD = 32


def stamped(exe, version):
    """The bytes of `exe` with `version` in its version field."""
    data = bytearray(Path(exe).read_bytes())
    at = data.find(STAMP_MARKER)
    if at < 0 or data.find(STAMP_MARKER, at + 1) >= 0:
        fail(f"{exe}: not one version field in it (not a verdant executable?)")
    v = version.encode()
    if len(v) >= STAMP_FIELD:
        fail(f"{version}: longer than {STAMP_FIELD - 1} bytes")
    start = at + len(STAMP_MARKER)
    data[start:start + STAMP_FIELD] = v + b"\0" * (STAMP_FIELD - len(v))
    return bytes(data)


def add_target(repo, name, local):
    target = TargetFile.from_file(name, str(local), ["sha256"])
    digest = target.hashes["sha256"]
    out = Path(repo) / "targets" / f"{digest}.{name}"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(Path(local).read_bytes())
    return target


def cmd_add(args):
    repo = args.repo
    exe = Path(args.executable)
    if not exe.is_file():
        fail(f"{exe}: no such file")
    base = f"verdant-{args.version}-{args.arch}"
    manifest = {
        "version": args.version,
        "arch": args.arch,
        "os": args.os,
        "min_version": args.min_version,
        "executable": base,
    }
    if args.stamp:
        copy = Path(repo) / f".{base}"
        copy.write_bytes(stamped(exe, args.version))
        exe = copy
    manifest_path = Path(repo) / f".{base}.json"
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    snapshot = load(repo, "timestamp.json").signed.snapshot_meta.version
    current = load(repo, f"{snapshot}.snapshot.json").signed.meta["targets.json"].version
    targets = load(repo, f"{current}.targets.json")
    targets.signed.version += 1
    targets.signed.targets[base] = add_target(repo, base, exe)
    targets.signed.targets[f"{base}.json"] = add_target(repo, f"{base}.json", manifest_path)
    manifest_path.unlink()
    if args.stamp:
        exe.unlink()
    publish(args, targets)
    print(f"{base}: published (targets version {targets.signed.version})")


def cmd_timestamp(args):
    snapshot = load(args.repo, "timestamp.json").signed.snapshot_meta.version
    stamp(args, snapshot)


def cmd_rotate_root(args):
    old = latest_root(args.repo)
    new_key = CryptoSigner(load_pem_private_key(Path(args.new_root_key).read_bytes(), None))
    root = old.signed
    root.version += 1
    root.expires = expiry(args, "root")
    for keyid in list(root.roles["root"].keyids):
        root.revoke_key(keyid, "root")
    root.add_key(new_key.public_key, "root")
    md = Metadata(root)
    # Signed by the old root key and the new one.
    md.sign(signer(args.keys, "root"), append=True)
    md.sign(new_key, append=True)
    write(args.repo, md, f"{root.version}.root.json")
    print(f"root version {root.version}: replace {args.keys}/root.pem with {args.new_root_key}")


def cmd_pack(args):
    repo = Path(args.repo)
    with tarfile.open(args.file, "w") as tar:
        for sub in ("metadata", "targets"):
            tar.add(repo / sub, arcname=sub)
    digest = hashlib.sha256(Path(args.file).read_bytes()).hexdigest()
    print(f"{args.file} (sha256 {digest})")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    def common(name, repo=True):
        c = sub.add_parser(name)
        if repo:
            c.add_argument("repo")
        c.add_argument("--keys", required=name != "pack")
        c.add_argument("--expires-days", type=int)
        c.add_argument("--expires", help="an ISO 8601 date (tests: one in the past)")
        return c

    c = sub.add_parser("keys")
    c.add_argument("keys")
    c.set_defaults(func=cmd_keys)
    common("init").set_defaults(func=cmd_init)
    c = common("add")
    c.add_argument("--executable", required=True)
    c.add_argument("--version", required=True)
    c.add_argument("--arch", default=os.uname().machine)
    c.add_argument("--os", default="linux")
    c.add_argument("--min-version", default="0.0.0")
    c.add_argument("--stamp", action="store_true",
                   help="write --version into the executable's version field")
    c.set_defaults(func=cmd_add)
    common("timestamp").set_defaults(func=cmd_timestamp)
    c = common("rotate-root")
    c.add_argument("--new-root-key", required=True)
    c.set_defaults(func=cmd_rotate_root)
    c = sub.add_parser("pack")
    c.add_argument("repo")
    c.add_argument("file")
    c.set_defaults(func=cmd_pack)
    args = p.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
