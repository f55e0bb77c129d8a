#!/usr/bin/env python3
"""Regenerates the seed corpora in fuzz/corpus/ from examples/ and
tests/fixtures/ (run from the repository root). The corpora are committed;
this script only documents where they came from."""
import gzip, hashlib, io, pathlib, subprocess, tarfile, zipfile

ROOT = pathlib.Path(".")
OUT = ROOT / "fuzz" / "corpus"
MAX = 16 * 1024  # libFuzzer's -max_len for these targets; bigger seeds are skipped


def put(target, data):
    d = OUT / target
    d.mkdir(parents=True, exist_ok=True)
    (d / hashlib.sha1(data).hexdigest()).write_bytes(data)


def yaml_kind(path):
    parts = path.parts
    name = path.name
    if not name.endswith((".yaml", ".yml")):
        return None
    if name == "fleet.yaml":
        return 0
    if "sites" in parts:
        return 1
    if "policies" in parts:
        return 2
    if "approvals" in parts:
        return 3
    if name == "catalog.yaml":
        return 4
    if "releases" in parts:
        return 5
    if "fixes" in parts:
        return 6
    return None


for base in [ROOT / "examples", ROOT / "tests" / "fixtures", ROOT / "policies"]:
    for p in sorted(base.rglob("*")):
        if not p.is_file() or p.stat().st_size > MAX:
            continue
        kind = 2 if base.name == "policies" and p.suffix == ".yaml" else yaml_kind(p)
        if kind is not None:
            put("yaml", bytes([kind]) + p.read_bytes())
        if p.suffix == ".php":
            put("fix_ops", p.read_bytes())

# Times and durations at and past the ends of the clock (issue 15: a long
# min_release_age overflowed `released + age` in the planner and panicked).
# The harness plans every valid fleet at both ends of the clock, so these
# meet every gate's arithmetic: release dates, ring delays, soak and notice
# intervals, timeouts, windows and approval times.
SITE = "site: shop\nroot: ../site\nproduct: acme-cms\nchannel: stable\npolicy: local\n"
DIGEST = '"sha256:' + "0" * 64 + '"'
for kind, text in [
    (5, "version: 1.0.0\nchannels: [stable]\nreleased: 9999-12-30T22:00:00Z\npayload: {tree: releases/1.0.0/}\n"),
    (5, "version: 1.0.0\nchannels: [stable]\nreleased: -009999-01-02T01:59:59Z\npayload: {tree: releases/1.0.0/}\n"),
    (5, "version: 1.0.0\nchannels: [stable]\nreleased: 9999-12-31T00:00:00Z\npayload: {tree: releases/1.0.0/}\n"),
    (5, "version: 1.0.0\nchannels: [stable]\nreleased: -009999-01-01T00:00:00Z\nurgency: security\npayload: {tree: releases/1.0.0/}\n"),
    (4, "product: acme-cms\nchannels: {stable: {}}\nrings: {0: 0h, 1: 36525d}\n"),
    (4, "product: acme-cms\nchannels: {stable: {}}\nrings: {0: 0h, 1: 7000000d}\n"),
    (4, "product: acme-cms\nchannels: {stable: {}}\nrings: {0: 7304484d 175307616h, 1: 99999999999999999999s}\n"),
    (2, "policy: local\nextends: base\ndefaults: {upgrades: patch}\nmin_release_age: 7000000d\nnotify_interval: 7000000d\n"),
    (2, "policy: local\nextends: base\ndefaults: {upgrades: patch}\nmin_release_age: 36525d\nnotify_interval: 36525d\n"),
    (2, "policy: local\nextends: base\ndefaults: {upgrades: major}\nmin_release_age: 876600h\nnotify_interval: 1y\n"),
    (1, SITE + "health: {command: [\"true\"], timeout: 7000000d}\nhooks: {timeout: 1000000000d}\n"),
    (1, SITE + "health: {command: [\"true\"], timeout: 36525d}\nhooks: {post_apply: [[\"true\"]], timeout: 36525d}\nwindow: {start: \"23:00\", end: \"14:00\", tz: Etc/GMT+12}\n"),
    (1, SITE + "window: {days: [sun], start: \"23:59\", end: \"00:00\", tz: Pacific/Kiritimati}\nopt_in: {upgrades: major}\n"),
    (3, "approved:\n  - plan_digest: " + DIGEST + "\n    by: alice\n    at: 9999-12-30T22:00:00Z\n  - plan_digest: " + DIGEST + "\n    by: bob\n    at: -009999-01-02T01:59:59Z\n"),
    (3, "approved:\n  - plan_digest: " + DIGEST + "\n    by: alice\n    at: 9999-12-31T00:00:00Z\n"),
]:
    put("yaml", bytes([kind]) + text.encode())

# Archives: a small tree with a nested file, an executable and an inner link.
def tar_bytes():
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as t:
        for name, data, mode in [("app-1/index.php", b"<?php echo 1;\n", 0o644),
                                 ("app-1/bin/run", b"#!/bin/sh\n", 0o755)]:
            i = tarfile.TarInfo(name); i.size = len(data); i.mode = mode
            t.addfile(i, io.BytesIO(data))
        i = tarfile.TarInfo("app-1/current"); i.type = tarfile.SYMTYPE; i.linkname = "bin"
        t.addfile(i)
        i = tarfile.TarInfo("app-1/bin/up"); i.type = tarfile.SYMTYPE; i.linkname = "../index.php"
        t.addfile(i)
    return buf.getvalue()

tar = tar_bytes()
put("archive", bytes([0, 1]) + tar)
put("archive", bytes([1, 1]) + gzip.compress(tar, mtime=0))
put("archive", bytes([1, 1]) + (ROOT / "examples/catalog/artifacts/acme-cms-5.0.0.tar.gz").read_bytes())
z = io.BytesIO()
with zipfile.ZipFile(z, "w") as w:
    w.writestr("app-1/index.php", "<?php echo 1;\n")
    info = zipfile.ZipInfo("app-1/current")
    info.external_attr = (0o120777 << 16)
    w.writestr(info, "index.php")
put("archive", bytes([2, 1]) + z.getvalue())
zst = subprocess.run(["zstd", "-q", "-c"], input=tar, capture_output=True, check=True).stdout
put("archive", bytes([3, 1]) + zst)

# Plans: arbitrary bytes decode into plans of every size.
for n, size in enumerate([16, 64, 256, 1024, 4096]):
    put("render", hashlib.shake_256(b"render%d" % n).digest(size))
