//! Data in the rollback point (SPEC §6.6), on a real SQLite database that
//! real migrations (Python's `sqlite3`) change: the snapshot before an
//! upgrade, the migrations' ledger records, the restore when the change
//! fails, the failure marker when a restore fails, `resolve`, `rollback
//! --data`, and every numbered step of snapshot, migrate and restore failed
//! by an error and by SIGKILL, after which files and data are both old or
//! both new, never mixed.
//!
//! The databases are compared by their contents (schema and rows), read
//! with rusqlite, so the oracle does not depend on SQLite's page layout.

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::support::{NOW, fast_tempdir, sitekeeper, stderr, stdout, write_tree};

/// The database under the site root.
const DB: &str = "db/site.sqlite3";

/// A scenario: a catalog with 1.0.0 and 1.1.0 (whose two migrations add a
/// column and a table), a fleet whose one site captures its SQLite
/// database, and the site adopted at 1.0.0 with 200 rows.
struct Scenario {
    dir: tempfile::TempDir,
}

/// How the 1.1.0 change ends.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Ending {
    /// Both migrations and the health check pass.
    Passes,
    /// The second migration changes the schema, then fails.
    MigrationFails,
    /// The migrations pass; the health check after them fails.
    HealthFails,
}

impl Scenario {
    fn new(ending: Ending, data: &str) -> Self {
        let dir = fast_tempdir();
        let root = dir.path();
        let second = match ending {
            Ending::MigrationFails => {
                "import sqlite3, sys\ndb = sqlite3.connect('db/site.sqlite3')\ndb.execute('CREATE TABLE tags(name TEXT)')\ndb.commit()\nprint('tags')\nsys.exit('the second migration failed')\n"
            }
            _ => {
                "import sqlite3\ndb = sqlite3.connect('db/site.sqlite3')\ndb.execute('CREATE TABLE tags(name TEXT)')\ndb.commit()\nprint('tags')\n"
            }
        };
        let check_new = match ending {
            Ending::HealthFails => "import sys\nsys.exit('the page is broken')\n",
            _ => {
                "import sqlite3\nsqlite3.connect('db/site.sqlite3').execute('SELECT tag FROM notes').fetchall()\n"
            }
        };
        write_tree(
            &root.join("catalog"),
            &[
                ("catalog.yaml", "product: acme\nchannels:\n  stable: {}\n"),
                (
                    "releases/1.0.0.yaml",
                    "version: 1.0.0\nchannels: [stable]\nreleased: 2026-01-01T00:00:00Z\npayload: {tree: releases/1.0.0/}\n",
                ),
                ("releases/1.0.0/VERSION", "1.0.0\n"),
                ("releases/1.0.0/app.php", "<?php // 1.0.0\n"),
                (
                    "releases/1.0.0/check.py",
                    "import sqlite3\nsqlite3.connect('db/site.sqlite3').execute('SELECT text FROM notes').fetchall()\n",
                ),
                (
                    "releases/1.1.0.yaml",
                    "version: 1.1.0\nchannels: [stable]\nreleased: 2026-02-01T00:00:00Z\npayload: {tree: releases/1.1.0/}\nmigrate:\n  - [python3, bin/m1.py]\n  - [python3, bin/m2.py]\nmigrate_lines: 2\n",
                ),
                ("releases/1.1.0/VERSION", "1.1.0\n"),
                ("releases/1.1.0/app.php", "<?php // 1.1.0\n"),
                (
                    "releases/1.1.0/bin/m1.py",
                    "import sqlite3\ndb = sqlite3.connect('db/site.sqlite3')\ndb.execute(\"ALTER TABLE notes ADD COLUMN tag TEXT DEFAULT 'x'\")\ndb.commit()\nprint('tag')\n",
                ),
                ("releases/1.1.0/bin/m2.py", second),
                ("releases/1.1.0/check.py", check_new),
            ],
        );
        write_tree(
            &root.join("fleet"),
            &[
                ("fleet.yaml", "catalogs:\n  acme: {source: ../catalog}\n"),
                (
                    "policies/migrating.yaml",
                    "policy: migrating\nextends: base\nallow_release_hooks: true\n",
                ),
                (
                    "sites/s.yaml",
                    &format!(
                        "site: s\nroot: ../site\nproduct: acme\nchannel: stable\npolicy: migrating\nopt_in: {{upgrades: minor}}\npaths: {{preserve: [\"db/**\"]}}\n{data}health: {{command: [python3, check.py]}}\n"
                    ),
                ),
            ],
        );
        let site = root.join("site");
        copy_dir(&root.join("catalog/releases/1.0.0"), &site);
        std::fs::create_dir_all(site.join("db")).unwrap();
        let db = rusqlite::Connection::open(site.join(DB)).unwrap();
        db.execute_batch("CREATE TABLE notes(text TEXT);").unwrap();
        for i in 0..200 {
            db.execute("INSERT INTO notes VALUES (?1)", [format!("note {i}")])
                .unwrap();
        }
        drop(db);
        let s = Self { dir };
        let out = s.run(&["adopt", "s", "--version", "1.0.0"]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        s
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    /// A copy of the whole scenario (catalog, fleet, site and state), made
    /// faster than a new one: no adoption runs.
    fn copy(&self) -> Self {
        let dir = fast_tempdir();
        let out = std::process::Command::new("cp")
            .arg("-a")
            .arg(format!("{}/.", self.root().display()))
            .arg(dir.path())
            .output()
            .expect("cp");
        assert!(out.status.success(), "{}", stderr(&out));
        Self { dir }
    }

    fn site(&self) -> PathBuf {
        self.root().join("site")
    }

    fn state(&self) -> PathBuf {
        self.root().join("state")
    }

    fn run(&self, args: &[&str]) -> Output {
        self.run_env(args, &[])
    }

    fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = sitekeeper(&self.state());
        cmd.current_dir(self.root().join("fleet"))
            .env("SITEKEEPER_NOW", NOW)
            .args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().expect("run sitekeeper")
    }

    /// The site's release, by its VERSION file.
    fn version(&self) -> String {
        std::fs::read_to_string(self.site().join("VERSION"))
            .unwrap()
            .trim()
            .to_owned()
    }

    fn dump(&self) -> String {
        dump(&self.site().join(DB))
    }

    fn ledger(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.state().join("s/ledger.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn records(&self, kind: &str) -> Vec<serde_json::Value> {
        self.ledger()
            .into_iter()
            .filter(|r| r["kind"] == kind)
            .collect()
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), dest).unwrap();
        }
    }
}

/// A database's schema and rows, in a stable order.
fn dump(path: &Path) -> String {
    let db =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let mut out = String::new();
    let tables: Vec<(String, String)> = db
        .prepare("SELECT name, sql FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for (name, sql) in tables {
        out.push_str(&sql);
        out.push('\n');
        let mut stmt = db
            .prepare(&format!("SELECT * FROM \"{name}\" ORDER BY rowid"))
            .unwrap();
        let n = stmt.column_count();
        let rows = stmt
            .query_map([], |r| {
                (0..n)
                    .map(|i| {
                        r.get::<_, rusqlite::types::Value>(i)
                            .map(|v| format!("{v:?}"))
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .unwrap();
        for row in rows {
            out.push_str(&row.unwrap().join("|"));
            out.push('\n');
        }
    }
    out
}

const SQLITE: &str = "data: {sqlite: [\"db/site.sqlite3\"]}\n";

#[test]
fn an_upgrade_with_migrations_snapshots_first_and_records_each_migration() {
    let s = Scenario::new(Ending::Passes, SQLITE);
    let out = s.run(&["apply"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(s.version(), "1.1.0");
    assert!(s.dump().contains("tag TEXT DEFAULT 'x'"), "{}", s.dump());
    let migrations = s.records("migrate");
    assert_eq!(migrations.len(), 2, "{migrations:#?}");
    for (n, r) in migrations.iter().enumerate() {
        assert_eq!(r["result"], "ok");
        assert_eq!(r["id"], format!("1.1.0/migrate/{}", n + 1));
        assert_eq!(r["point"], 2);
    }
    let snapshot = s.records("snapshot");
    assert_eq!(snapshot.len(), 1);
    assert_eq!(
        snapshot[0]["point"], 1,
        "the snapshot belongs to the point the change started from"
    );
    let history: serde_json::Value =
        serde_json::from_str(&stdout(&s.run(&["history", "s", "--format", "json"]))).unwrap();
    let data: Vec<(u64, bool)> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["point"].as_u64().unwrap(), p["data"].as_bool().unwrap()))
        .collect();
    assert_eq!(data, vec![(2, false), (1, true)]);
    // The snapshot holds the database as it was: 200 rows, no `tag`.
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(s.state().join("s/data/1/manifest.json")).unwrap())
            .unwrap();
    let file = &manifest["files"][0];
    assert_eq!(file["source"]["path"], DB);
    let stored = s
        .state()
        .join("s/data/1")
        .join(file["name"].as_str().unwrap());
    let copy = s.root().join("copy.sqlite3");
    if file["compression"] == "zstd" {
        let bytes = zstd::decode_all(std::fs::File::open(&stored).unwrap()).unwrap();
        std::fs::write(&copy, bytes).unwrap();
    } else {
        std::fs::copy(&stored, &copy).unwrap();
    }
    let old = dump(&copy);
    assert!(!old.contains("tag"), "{old}");
    assert_eq!(old.lines().count(), 201);
    // Nothing of the open change is left.
    assert!(!s.state().join("s/journal/change.json").exists());
}

#[test]
fn a_failed_migration_rolls_back_the_files_and_restores_the_data() {
    for ending in [Ending::MigrationFails, Ending::HealthFails] {
        let s = Scenario::new(ending, SQLITE);
        let before = s.dump();
        let out = s.run(&["apply"]);
        assert_eq!(out.status.code(), Some(1), "{ending:?}: {}", stderr(&out));
        assert_eq!(s.version(), "1.0.0", "{ending:?}");
        assert_eq!(
            s.dump(),
            before,
            "{ending:?}: the data is as before the change"
        );
        let restore = s.records("restore");
        assert_eq!(restore.len(), 1, "{ending:?}");
        assert_eq!(restore[0]["result"], "ok");
        let results: Vec<String> = s
            .records("migrate")
            .iter()
            .map(|r| r["result"].as_str().unwrap().to_owned())
            .collect();
        match ending {
            Ending::MigrationFails => {
                assert_eq!(results, ["ok", "failed"]);
                let failed = &s.records("migrate")[1];
                assert!(
                    failed["error"]
                        .as_str()
                        .unwrap()
                        .contains("the second migration failed"),
                    "{failed}"
                );
            }
            _ => assert_eq!(results, ["ok", "ok"]),
        }
        assert!(!s.state().join("s/failure.json").exists());
        // The release is quarantined: the next apply changes nothing.
        let out = s.run(&["apply"]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert_eq!(s.version(), "1.0.0");
    }
}

/// A `snapshot`/`restore` pair whose restore always fails.
const FAILING_RESTORE: &str = "data:\n  snapshot: [sh, -c, 'cp db/site.sqlite3 \"$SITEKEEPER_DATA_FILE\"']\n  restore: [sh, -c, 'echo the restore failed >&2; exit 3']\n";

#[test]
fn a_restore_that_fails_leaves_the_failure_marker_until_resolved() {
    let s = Scenario::new(Ending::MigrationFails, FAILING_RESTORE);
    let out = s.run(&["apply"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("resolve s --by"), "{}", stderr(&out));
    let marker: serde_json::Value =
        serde_json::from_slice(&std::fs::read(s.state().join("s/failure.json")).unwrap()).unwrap();
    assert!(
        marker["error"]
            .as_str()
            .unwrap()
            .contains("the restore failed"),
        "{marker}"
    );
    assert!(
        marker["snapshot"].as_str().unwrap().ends_with("data/1"),
        "{marker}"
    );

    let plan: serde_json::Value =
        serde_json::from_str(&stdout(&s.run(&["plan", "--format", "json"]))).unwrap();
    let held = &plan["sites"][0]["held"];
    assert_eq!(held[0]["code"], "failure_marker", "{plan}");
    let out = s.run(&["apply", "--release", "1.1.0"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let out = s.run(&["rollback", "s", "--to", "1"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let status: serde_json::Value =
        serde_json::from_str(&stdout(&s.run(&["status", "--format", "json"]))).unwrap();
    assert!(status[0]["failure"]["what"].is_string(), "{status}");

    let out = s.run(&["resolve", "s", "--by", "alice"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!s.state().join("s/failure.json").exists());
    let resolve = s.records("resolve");
    assert_eq!(resolve.len(), 1);
    assert_eq!(resolve[0]["by"]["user"], "alice");
    let status: serde_json::Value =
        serde_json::from_str(&stdout(&s.run(&["status", "--format", "json"]))).unwrap();
    assert!(status[0]["failure"].is_null(), "{status}");
    let out = s.run(&["resolve", "s", "--by", "alice"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        stdout(&out).contains("no failure marker"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn rollback_touches_data_only_with_data() {
    let s = Scenario::new(Ending::Passes, SQLITE);
    let before = s.dump();
    assert_eq!(s.run(&["apply"]).status.code(), Some(0));
    let migrated = s.dump();
    assert_ne!(migrated, before);

    let out = s.run(&["rollback", "s", "--to", "1"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(s.version(), "1.0.0");
    assert_eq!(s.dump(), migrated, "without --data the data stays");
    assert!(
        stdout(&out).contains("data was left as it is"),
        "{}",
        stdout(&out)
    );

    let out = s.run(&["rollback", "s", "--to", "1", "--data"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(s.dump(), before, "with --data the point's data is back");
    assert_eq!(s.records("restore").len(), 1);

    let out = s.run(&["rollback", "s", "--to", "2", "--data"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "point 2 has no snapshot: {}",
        stderr(&out)
    );
}

/// The steps of an apply of `s`, as the failpoints number them.
fn steps(ending: Ending) -> Vec<String> {
    let s = Scenario::new(ending, SQLITE);
    let trace = s.root().join("trace");
    let out = s.run_env(
        &["apply"],
        &[("SITEKEEPER_FAILPOINT_TRACE", trace.to_str().unwrap())],
    );
    assert!(matches!(out.status.code(), Some(0 | 1)), "{}", stderr(&out));
    std::fs::read_to_string(trace)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Every step of an apply of a migrating upgrade (and of one whose
/// migration fails, through its rollback and restore) failed by an
/// error and by SIGKILL; after the next command, files and data are both
/// old or both new (new only once migrations and health passed), or the
/// failure marker says the data needs an operator.
///
/// Under `cargo test` the steps of the data (snapshot, migrate, restore,
/// the change record) are each failed both ways, and the files
/// transaction's steps, which `crash::faults` covers one by one, every
/// third; `SITEKEEPER_CRASH_FULL=1` fails every step both ways.
#[test]
fn every_step_of_snapshot_migrate_and_restore_failed_leaves_files_and_data_together() {
    let full = std::env::var_os("SITEKEEPER_CRASH_FULL").is_some();
    let data_step = |what: &str| {
        ["snapshot", "migrate", "restore", "change record"]
            .iter()
            .any(|w| what.ends_with(w))
    };
    let mut runs = 0;
    for ending in [Ending::Passes, Ending::MigrationFails] {
        let all = steps(ending);
        let pristine = Scenario::new(ending, SQLITE);
        for (i, what) in all.iter().enumerate() {
            let n = i + 1;
            let hows: &[&str] = if full || data_step(what) {
                &["error", "kill"]
            } else if n % 3 == 0 {
                &["kill"]
            } else if n % 3 == 1 {
                &["error"]
            } else {
                &[]
            };
            for how in hows {
                let s = pristine.copy();
                let old = s.dump();
                let failpoint = format!("{n}:{how}");
                let out = s.run_env(&["apply"], &[("SITEKEEPER_FAILPOINT", &failpoint)]);
                assert!(
                    !stderr(&out).contains("panicked"),
                    "{failpoint} {what}: {}",
                    stderr(&out)
                );
                // The next command recovers.
                let next = s.run(&["status"]);
                assert!(!stderr(&next).contains("panicked"), "{}", stderr(&next));
                let marker = s.state().join("s/failure.json").exists();
                let version = s.version();
                let data = s.dump();
                let new_data = data.contains("CREATE TABLE tags");
                let context = format!(
                    "{ending:?} step {failpoint} ({what}): version {version}, marker {marker}\n{}\n{}",
                    stderr(&out),
                    stderr(&next)
                );
                match version.as_str() {
                    "1.0.0" if !marker => assert_eq!(data, old, "{context}"),
                    "1.0.0" => {}
                    "1.1.0" => {
                        assert!(new_data, "{context}");
                        assert_eq!(ending, Ending::Passes, "{context}");
                    }
                    v => panic!("version {v}: {context}"),
                }
                assert!(
                    !s.state().join("s/journal/change.json").exists()
                        && !s.state().join("s/journal/txn.json").exists(),
                    "{context}"
                );
                runs += 1;
            }
        }
    }
    eprintln!("data crash: {runs} failed runs, files and data together after each");
}

/// Real SIGKILLs at random instants of a migrating upgrade, with a small
/// count (measure with `tests/crash/kill-loop.sh 300 SEED data`).
#[test]
fn real_kills_of_a_migrating_upgrade_leave_files_and_data_together() {
    let script = crate::support::repo_root().join("tests/crash/kill-loop.sh");
    let out = std::process::Command::new(script)
        .args(["6", "5", "data"])
        .env("SITEKEEPER", crate::support::bin())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("0 mixed"), "{text}");
}

/// The example `notes` site (examples/README.md) upgrades as documented:
/// a snapshot of its database, the migration, the health check.
#[test]
fn the_example_notes_site_upgrades_with_its_migration() {
    let dir = fast_tempdir();
    let copy = dir.path().join("examples");
    let cp = std::process::Command::new("cp")
        .arg("-a")
        .arg(crate::support::repo_root().join("examples"))
        .arg(&copy)
        .status()
        .unwrap();
    assert!(cp.success());
    let state = dir.path().join("state");
    let run = |args: &[&str]| {
        let out = sitekeeper(&state)
            .current_dir(copy.join("fleet"))
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        stdout(&out)
    };
    run(&["adopt", "notes", "--detect"]);
    run(&["apply", "notes"]);
    let app = copy.join("sites/notes");
    assert_eq!(
        std::fs::read_to_string(app.join("VERSION")).unwrap(),
        "1.1.0\n"
    );
    assert!(dump(&app.join("db/notes.sqlite3")).contains("pinned"));
    let history: serde_json::Value =
        serde_json::from_str(&run(&["history", "notes", "--format", "json"])).unwrap();
    assert_eq!(history[0]["health"], "passed", "{history}");
    assert_eq!(history[1]["data"], true, "{history}");
    let ledger = std::fs::read_to_string(state.join("notes/ledger.jsonl")).unwrap();
    assert!(ledger.contains("\"kind\":\"migrate\""), "{ledger}");
}

/// Retention (SPEC §6.2) drops a data snapshot with its point, and never
/// the newest snapshot.
#[test]
fn retention_removes_snapshots_with_their_points_but_never_the_newest() {
    let s = Scenario::new(Ending::Passes, SQLITE);
    let policy = s.root().join("fleet/policies/migrating.yaml");
    let text = std::fs::read_to_string(&policy).unwrap();
    std::fs::write(&policy, format!("{text}keep_rollback_points: 2\n")).unwrap();
    let ok = |args: &[&str]| {
        let out = s.run(args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
    };
    ok(&["apply"]); // point 2; snapshot of point 1
    ok(&["rollback", "s", "--to", "1", "--data"]); // point 3, data back
    ok(&["apply"]); // point 4; snapshot of point 3
    let points: Vec<u64> = serde_json::from_str::<serde_json::Value>(&stdout(
        &s.run(&["history", "s", "--format", "json"]),
    ))
    .unwrap()
    .as_array()
    .unwrap()
    .iter()
    .map(|p| p["point"].as_u64().unwrap())
    .collect();
    assert_eq!(points, vec![4, 3], "two points are kept");
    let mut snapshots: Vec<String> = std::fs::read_dir(s.state().join("s/data"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    snapshots.sort();
    assert_eq!(
        snapshots,
        vec!["3".to_owned()],
        "point 1's snapshot went with it"
    );
}
