#!/usr/bin/env bash
# Kills real `sitekeeper apply` runs with SIGKILL at random instants, runs
# the next command (`status`, which recovers), and checks the oracle: the
# site is exactly the old tree or exactly the new one, nothing is left in
# staging or the journal, and the rollback points agree with the files
# (status reports no drift, and the version matches the tree).
#
#   tests/crash/kill-loop.sh N [SEED] [files|data]
#
# `data` makes the upgrade a migrating one (SPEC §6.6): the site keeps a
# SQLite database (captured with `data: {sqlite: …}`), 1.1.0 ships two
# migrations and a health check, and the oracle also compares the
# database: files and data are both old or both new, never mixed.
#
# CI runs it with a small N (tests/crash.rs, tests/data.rs); measure with
# N >= 500 (files) or N >= 300 (data).
set -euo pipefail
n=${1:?usage: kill-loop.sh N [SEED] [files|data]}
seed=${2:-1}
mode=${3:-files}
here=$(cd "$(dirname "$0")/../.." && pwd)
bin=${SITEKEEPER:-$here/target/debug/sitekeeper}
[ -x "$bin" ] || (cd "$here" && cargo build --quiet)
base_tmp=/dev/shm; [ -w "$base_tmp" ] || base_tmp=${TMPDIR:-/tmp}
work=$(mktemp -d "$base_tmp/sk-kill.XXXXXX")
trap 'rm -rf "$work"' EXIT
export NO_COLOR=1 SITEKEEPER_NOW=2026-11-20T10:00:00Z

# A catalog (git) with 1.0.0 and 1.1.0 of a 2,000-file tree, and a site at 1.0.0.
python3 - "$work" "$mode" <<'PY'
import os, random, sqlite3, sys
w, mode = sys.argv[1], sys.argv[2]
rng = random.Random(7)
def tree():
    files = {}
    dirs = ["app", "lib", "themes/default", "vendor/acme", "admin"]
    for n in range(2000):
        d = rng.choice(dirs)
        files[f"{d}/d{rng.randrange(30)}/f{n}.php"] = ("<?php // %d\n" % n + "x" * rng.randrange(50, 3000)).encode()
    return files
v1 = tree()
v2 = dict(v1)
for p in list(v1):
    r = rng.randrange(100)
    if r < 3: v2[p] = v1[p] + b"// changed in 1.1.0\n"
    elif r < 4: del v2[p]
for i in range(20): v2[f"lib/new/n{i}.php"] = b"<?php // new\n"
def write(root, files):
    for p, b in files.items():
        full = os.path.join(root, p); os.makedirs(os.path.dirname(full), exist_ok=True)
        open(full, "wb").write(b)
cat = os.path.join(w, "catalog")
migrate = ""
site_extra = ""
if mode == "data":
    # Two migrations, each a transaction of its own (a kill between them
    # leaves the database half migrated unless it is restored), and a
    # health check that needs the new schema.
    v2["bin/m1.py"] = b"import sqlite3, time\ndb = sqlite3.connect('db/site.sqlite3')\ndb.execute(\"ALTER TABLE notes ADD COLUMN tag TEXT DEFAULT 'x'\")\ndb.commit()\ntime.sleep(0.05)\nprint('m1')\n"
    v2["bin/m2.py"] = b"import sqlite3, time\ndb = sqlite3.connect('db/site.sqlite3')\ndb.execute('CREATE TABLE tags(name TEXT)')\ndb.execute(\"INSERT INTO tags VALUES ('new')\")\ndb.commit()\ntime.sleep(0.05)\nprint('m2')\n"
    v1["check.py"] = b"import sqlite3\nsqlite3.connect('db/site.sqlite3').execute('SELECT text FROM notes').fetchall()\n"
    v2["check.py"] = b"import sqlite3\nsqlite3.connect('db/site.sqlite3').execute('SELECT tag FROM notes, tags').fetchall()\n"
    migrate = "migrate: [[python3, bin/m1.py], [python3, bin/m2.py]]\n"
    site_extra = "policy: migrating\npaths: {preserve: [\"db/**\"]}\ndata: {sqlite: [db/site.sqlite3]}\nhealth: {command: [python3, check.py]}\n"
write(os.path.join(cat, "releases/1.0.0"), v1)
write(os.path.join(cat, "releases/1.1.0"), v2)
open(os.path.join(cat, "catalog.yaml"), "w").write("product: acme\nchannels:\n  stable: {}\n")
for v, d in [("1.0.0", "2026-01-01"), ("1.1.0", "2026-02-01")]:
    open(os.path.join(cat, f"releases/{v}.yaml"), "w").write(
        f"version: {v}\nchannels: [stable]\nreleased: {d}T00:00:00Z\npayload:\n  tree: releases/{v}/\n" + (migrate if v == "1.1.0" else ""))
write(os.path.join(w, "base/site"), v1)
os.makedirs(os.path.join(w, "base/fleet/sites"))
os.makedirs(os.path.join(w, "base/fleet/policies"))
open(os.path.join(w, "base/fleet/fleet.yaml"), "w").write(f"catalogs:\n  acme:\n    source: {cat}\n    ref: main\n")
open(os.path.join(w, "base/fleet/policies/migrating.yaml"), "w").write(
    "policy: migrating\nextends: base\nallow_release_hooks: true\n")
open(os.path.join(w, "base/fleet/sites/s.yaml"), "w").write(
    "site: s\nroot: ../site\nproduct: acme\nchannel: stable\nopt_in: {upgrades: minor}\n" + site_extra)
if mode == "data":
    os.makedirs(os.path.join(w, "base/site/db"))
    db = sqlite3.connect(os.path.join(w, "base/site/db/site.sqlite3"))
    db.execute("CREATE TABLE notes(text TEXT)")
    db.executemany("INSERT INTO notes VALUES (?)", [(f"note {i}",) for i in range(500)])
    db.commit()
PY
git -C "$work/catalog" init -q -b main
git -C "$work/catalog" -c user.name=t -c user.email=t@t add -A
git -C "$work/catalog" -c user.name=t -c user.email=t@t commit -qm catalog
(cd "$work/base/fleet" && SITEKEEPER_STATE_DIR="$work/base/state" "$bin" adopt s --version 1.0.0 -q)

treehash() { (cd "$1" && find . -path ./.sitekeeper-stage -prune -o -path ./db -prune -o -print0 | sort -z | xargs -0 stat -c '%n %F %a' | sha256sum; find . -type f -not -path './.sitekeeper-stage/*' -not -path './db/*' -print0 | sort -z | xargs -0 sha256sum | sha256sum) | sha256sum | cut -c1-16; }
# The database by its contents (schema and rows), not its pages.
dbhash() {
  [ -f "$1/db/site.sqlite3" ] || { echo none; return; }
  python3 -c 'import sqlite3, sys, hashlib; print(hashlib.sha256("\n".join(sqlite3.connect(sys.argv[1]).iterdump()).encode()).hexdigest()[:16])' "$1/db/site.sqlite3"
}
old=$(treehash "$work/base/site"); olddb=$(dbhash "$work/base/site")
cp -a "$work/base" "$work/clean"
start=$(date +%s%N)
(cd "$work/clean/fleet" && SITEKEEPER_STATE_DIR="$work/clean/state" "$bin" apply -q)
took_ms=$(( ($(date +%s%N) - start) / 1000000 ))
new=$(treehash "$work/clean/site"); newdb=$(dbhash "$work/clean/site")
[ "$old" != "$new" ] || { echo "the upgrade changed nothing"; exit 1; }
[ "$mode" != data ] || [ "$olddb" != "$newdb" ] || { echo "the migrations changed nothing"; exit 1; }

RANDOM=$seed
olds=0; news=0; mixed=0
for i in $(seq 1 "$n"); do
  rm -rf "$work/run"; cp -a "$work/base" "$work/run"
  delay=$(( RANDOM % (took_ms + 20) ))
  (cd "$work/run/fleet" && exec env SITEKEEPER_STATE_DIR="$work/run/state" "$bin" apply -q) >/dev/null 2>&1 &
  pid=$!
  python3 -c "import time; time.sleep($delay/1000)"
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  status=$(cd "$work/run/fleet" && SITEKEEPER_STATE_DIR="$work/run/state" "$bin" status s --format json)
  now=$(treehash "$work/run/site"); nowdb=$(dbhash "$work/run/site")
  ok=1
  [ -e "$work/run/state/s/journal/change.json" ] && ok=0
  [ -e "$work/run/state/s/failure.json" ] && ok=0
  [ -e "$work/run/site/.sitekeeper-stage" ] && ok=0
  [ -e "$work/run/state/s/journal/txn.json" ] && ok=0
  drift=$(python3 -c 'import json,sys; print(len(json.load(sys.stdin)[0]["drift"]))' <<<"$status")
  version=$(python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["version"])' <<<"$status")
  [ "$drift" = 0 ] || ok=0
  if [ "$now" = "$old" ] && [ "$nowdb" = "$olddb" ] && [ "$version" = 1.0.0 ] && [ $ok = 1 ]; then olds=$((olds+1))
  elif [ "$now" = "$new" ] && [ "$nowdb" = "$newdb" ] && [ "$version" = 1.1.0 ] && [ $ok = 1 ]; then news=$((news+1))
  else mixed=$((mixed+1)); echo "run $i (kill after ${delay} ms): tree $now, data $nowdb, version $version, drift $drift, leftovers and marker ok=$ok"; fi
done
echo "kill-loop ($mode): $n runs (apply takes ${took_ms} ms): $olds old, $news new, $mixed mixed"
[ "$mixed" = 0 ]
