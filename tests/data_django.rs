//! Data in the rollback point (SPEC §6.6) with a real Django site on
//! SQLite: `data: {sqlite: [...]}`, a release's `migrate:` running Django's
//! own `manage.py migrate`, and a health check that renders `/` through
//! Django's whole request stack.
//!
//! The releases are built from `tests/fixtures/django/`: `common/` plus the
//! directories of every release up to the one built (1.0.0 has notes with a
//! text, 1.1.0 adds `pinned`, 1.2.0 renames `text` to `body` but forgot the
//! view, so its migration succeeds and its page fails). They need Python 3
//! with Django 5 (`.ci/run` installs it).

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::{
    NOW, fast_tempdir, read_tree, repo_root, run_fleet, sitekeeper, stderr, stdout, write_files,
    write_tree,
};

/// The site's name; its state is under `<dir>/state/notes/`.
const SITE: &str = "notes";

/// The database, relative to the site root.
const DB: &str = "db/site.sqlite3";

/// The releases: version, date, and whether its yaml runs Django's
/// migrations (1.0.0 is adopted as installed, so it has none).
const RELEASES: &[(&str, &str, bool)] = &[
    ("1.0.0", "2026-01-01", false),
    ("1.1.0", "2026-02-01", true),
    ("1.2.0", "2026-03-01", true),
];

/// The notes the site has when it is adopted.
const NOTES: &[&str] = &["buy milk", "call <Bob>", "renew the domain"];

/// Prints every SQL statement that recreates the database at argv[1].
const DUMP: &str = "import sqlite3, sys
for line in sqlite3.connect(sys.argv[1]).iterdump():
    print(line)
";

/// Creates `visits` with 20,000 rows of 200 random hex digits at argv[1],
/// in journal mode argv[2]: about 5 MB, so that copying it takes long
/// enough (tens of milliseconds) for the writer's inserts to land while it
/// is copied, and compressing it does not slow the test (zstd's C code is
/// unoptimised in debug builds: 20 MB took seconds).
const PREFILL: &str = "import sqlite3, sys
con = sqlite3.connect(sys.argv[1])
assert con.execute(f'PRAGMA journal_mode={sys.argv[2]}').fetchone()[0] == sys.argv[2]
con.execute('CREATE TABLE visits (id INTEGER PRIMARY KEY, at REAL NOT NULL, payload TEXT NOT NULL)')
con.execute('''WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000)
               INSERT INTO visits (at, payload) SELECT i, hex(randomblob(100)) FROM n''')
con.commit()
";

/// Prints `PRAGMA integrity_check`, then the row counts of `visits` and
/// `notes_note`, of the database at argv[1].
const INSPECT: &str = "import sqlite3, sys
con = sqlite3.connect(sys.argv[1])
print(con.execute('PRAGMA integrity_check').fetchone()[0])
print(con.execute('SELECT count(*) FROM visits').fetchone()[0])
print(con.execute('SELECT count(*) FROM notes_note').fetchone()[0])
";

fn fixtures() -> PathBuf {
    repo_root().join("tests/fixtures/django")
}

/// The files of release `version`: `common/`, then each release's own
/// directory in order, up to and including `version`'s.
fn release_tree(version: &str) -> BTreeMap<String, Vec<u8>> {
    let mut tree: BTreeMap<String, Vec<u8>> =
        read_tree(&fixtures().join("common")).into_iter().collect();
    for (v, _, _) in RELEASES {
        tree.extend(read_tree(&fixtures().join(v)));
        if *v == version {
            return tree;
        }
    }
    panic!("no release {version} in RELEASES");
}

/// Puts release `version` (its yaml and its tree) into the catalog.
fn publish(dir: &Path, version: &str) {
    let (_, date, migrates) = RELEASES
        .iter()
        .find(|(v, _, _)| *v == version)
        .expect("a known release");
    let migrate = if *migrates {
        "migrate: [[\"python3\", \"manage.py\", \"migrate\", \"--noinput\"]]\n"
    } else {
        ""
    };
    let yaml = format!(
        "version: {version}\nchannels: [stable]\nreleased: {date}T00:00:00Z\n\
         payload:\n  tree: releases/{version}/\n{migrate}"
    );
    let catalog = dir.join("catalog");
    write_tree(&catalog, &[(&format!("releases/{version}.yaml"), &yaml)]);
    write_files(
        &catalog.join(format!("releases/{version}")),
        &release_tree(version),
    );
}

/// Runs `python3 ARGS` in `cwd` and returns its stdout; panics with its
/// output if it fails. These runs are the test's own (installing the site,
/// looking at the database), never sitekeeper's.
fn python(cwd: &Path, args: &[&str]) -> String {
    let out = Command::new("python3")
        .current_dir(cwd)
        .args(args)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("python3 runs (is Python 3 installed?)");
    assert!(
        out.status.success(),
        "python3 {args:?} failed in {}:\n{}{}",
        cwd.display(),
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

/// The whole database at `db` as SQL.
fn dump(db: &Path) -> String {
    python(Path::new("/"), &["-c", DUMP, &db.display().to_string()])
}

/// A notes site adopted at 1.0.0 under a fresh temp dir: `catalog/` with
/// `releases` published, `fleet/`, `site/` (installed the way an operator
/// does: the release's files, then `manage.py migrate`, then some notes),
/// and `state/`. `prepare` runs on the root after that, before the adoption.
fn adopted_site(releases: &[&str], prepare: impl FnOnce(&Path)) -> tempfile::TempDir {
    let dir = fast_tempdir();
    write_tree(
        &dir.path().join("catalog"),
        &[("catalog.yaml", "product: notes\nchannels:\n  stable: {}\n")],
    );
    for v in releases {
        publish(dir.path(), v);
    }
    write_tree(
        &dir.path().join("fleet"),
        &[
            (
                "fleet.yaml",
                "catalogs:\n  notes:\n    source: ../catalog\n",
            ),
            (
                "policies/migrating.yaml",
                "policy: migrating\nextends: base\nallow_release_hooks: true\n",
            ),
            (
                "sites/notes.yaml",
                "site: notes\nroot: ../site\nproduct: notes\nchannel: stable\npolicy: migrating\n\
                 opt_in: {upgrades: minor}\npaths: {preserve: [\"db/**\"]}\n\
                 health:\n  command: [\"python3\", \"manage.py\", \"check_page\"]\n  timeout: 60s\n\
                 data: {sqlite: [\"db/site.sqlite3\"]}\n",
            ),
        ],
    );
    let root = dir.path().join("site");
    write_files(&root, &release_tree("1.0.0"));
    // SQLite creates the file, not its directory.
    std::fs::create_dir_all(root.join("db")).expect("mkdir db");
    python(&root, &["manage.py", "migrate", "--noinput"]);
    add_notes(&root, "text=t", NOTES);
    prepare(&root);
    // The fixture itself works before sitekeeper is involved.
    assert!(page(&root).contains("call &lt;Bob&gt;"));
    let out = run_fleet(dir.path(), &["adopt", SITE, "--version", "1.0.0"]);
    assert_eq!(out.status.code(), Some(0), "adopt: {}", stderr(&out));
    dir
}

/// Adds notes through the site's own models; `fields` is the keyword
/// arguments of each, with `t` the note's text.
fn add_notes(root: &Path, fields: &str, texts: &[&str]) {
    let script = format!(
        "from notes.models import Note\nfor t in {texts:?}:\n    Note.objects.create({fields})\n"
    );
    python(root, &["manage.py", "shell", "-c", &script]);
}

/// `/` as the health check renders it; panics unless it answers 200.
fn page(root: &Path) -> String {
    python(root, &["manage.py", "check_page"])
}

/// The site's ledger records.
fn ledger(dir: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(dir.join("state").join(SITE).join("ledger.jsonl"))
        .expect("the site has a ledger");
    text.lines()
        .map(|l| serde_json::from_str(l).expect("a ledger line is JSON"))
        .collect()
}

/// The ledger records of `kind`.
fn records(ledger: &[serde_json::Value], kind: &str) -> Vec<serde_json::Value> {
    ledger
        .iter()
        .filter(|r| r["kind"] == kind)
        .cloned()
        .collect()
}

/// Whether a data snapshot belongs to each point, by `history SITE
/// --format json`.
fn data_by_point(dir: &Path) -> BTreeMap<u64, serde_json::Value> {
    let out = run_fleet(dir, &["history", SITE, "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "history: {}", stderr(&out));
    let list: Vec<serde_json::Value> =
        serde_json::from_str(&stdout(&out)).expect("history prints JSON");
    list.into_iter()
        .map(|p| {
            (
                p["point"].as_u64().expect("a point number"),
                p["data"].clone(),
            )
        })
        .collect()
}

/// The database in the data snapshot of `point`, copied (decompressed if
/// sitekeeper stored it as `.zst`) to `into/snapshot.sqlite3`, so that
/// opening it writes nothing into the state dir.
fn snapshot_db(dir: &Path, point: u64, into: &Path) -> PathBuf {
    let data = dir.join(format!("state/{SITE}/data/{point}"));
    assert!(data.is_dir(), "no data snapshot at {}", data.display());
    let dbs: Vec<(String, Vec<u8>)> = read_tree(&data)
        .into_iter()
        .map(|(name, bytes)| {
            if name.ends_with(".zst") {
                let raw = zstd::decode_all(&bytes[..]).expect("a valid zstd file");
                (name, raw)
            } else {
                (name, bytes)
            }
        })
        .filter(|(_, bytes)| bytes.starts_with(b"SQLite format 3\0"))
        .collect();
    let names: Vec<&str> = dbs.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        dbs.len(),
        1,
        "one SQLite database in {}: {names:?}",
        data.display()
    );
    let path = into.join("snapshot.sqlite3");
    std::fs::write(&path, &dbs[0].1).expect("write the copy");
    path
}

/// The site's files without its data (`db/`, a preserved path).
fn site_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    read_tree(&dir.join("site"))
        .into_iter()
        .filter(|(p, _)| !p.starts_with("db/"))
        .collect()
}

#[test]
fn a_migrating_upgrade_snapshots_the_database_then_converges() {
    let dir = adopted_site(&["1.0.0", "1.1.0"], |_| {});
    let root = dir.path().join("site");
    let before = dump(&root.join(DB));

    let out = run_fleet(dir.path(), &["apply"]);
    assert_eq!(out.status.code(), Some(0), "apply: {}", stderr(&out));

    let migrates = records(&ledger(dir.path()), "migrate");
    assert_eq!(migrates.len(), 1, "one migrate command ran: {migrates:?}");
    assert_eq!(migrates[0]["result"], "ok", "{migrates:?}");
    // Django really migrated the live database, and the page shows the
    // notes written before.
    assert!(dump(&root.join(DB)).contains("\"pinned\" bool NOT NULL"));
    assert!(page(&root).contains("<li>renew the domain</li>"));
    assert_eq!(
        site_files(dir.path()),
        release_tree("1.1.0").into_iter().collect::<Vec<_>>()
    );

    // The snapshot belongs to the point that was current when it was taken
    // (the adoption, which a rollback of this change returns to), and it
    // holds the database exactly as it was before the change.
    let data = data_by_point(dir.path());
    assert_eq!(data.get(&1), Some(&true.into()), "{data:?}");
    assert_eq!(data.get(&2), Some(&false.into()), "{data:?}");
    let copy = tempfile::tempdir().expect("temp dir");
    assert_eq!(dump(&snapshot_db(dir.path(), 1, copy.path())), before);
}

#[test]
fn a_migration_that_breaks_the_page_is_rolled_back_with_the_data() {
    let dir = adopted_site(&["1.0.0", "1.1.0"], |_| {});
    let root = dir.path().join("site");
    let out = run_fleet(dir.path(), &["apply"]);
    assert_eq!(out.status.code(), Some(0), "apply 1.1.0: {}", stderr(&out));
    // Written on 1.1.0, after its change: these must survive the next one.
    add_notes(&root, "text=t, pinned=True", &["pinned on 1.1.0"]);
    let before = dump(&root.join(DB));
    assert!(before.contains("pinned on 1.1.0"));

    publish(dir.path(), "1.2.0");
    let out = run_fleet(dir.path(), &["apply"]);
    assert_eq!(out.status.code(), Some(1), "apply 1.2.0: {}", stderr(&out));
    assert!(stderr(&out).contains("health check"), "{}", stderr(&out));

    let ledger = ledger(dir.path());
    let migrates = records(&ledger, "migrate");
    assert_eq!(migrates.len(), 2, "1.1.0's and 1.2.0's: {migrates:?}");
    assert!(
        migrates.iter().all(|m| m["result"] == "ok"),
        "1.2.0's migration itself succeeded: {migrates:?}"
    );
    let restores = records(&ledger, "restore");
    assert_eq!(restores.len(), 1, "{ledger:?}");
    assert_eq!(restores[0]["result"], "ok", "{restores:?}");

    // Everything is as before the change: the database byte for byte in
    // SQL (the rename undone, the rows written on 1.1.0 kept), the files
    // 1.1.0's, and the page renders again.
    assert_eq!(dump(&root.join(DB)), before);
    assert_eq!(
        site_files(dir.path()),
        release_tree("1.1.0").into_iter().collect::<Vec<_>>()
    );
    assert!(page(&root).contains("<li>[pinned] pinned on 1.1.0</li>"));

    let data = data_by_point(dir.path());
    assert_eq!(data.get(&2), Some(&true.into()), "1.1.0's point: {data:?}");
    let copy = tempfile::tempdir().expect("temp dir");
    assert_eq!(dump(&snapshot_db(dir.path(), 2, copy.path())), before);
}

/// A process inserting into the live database while the test runs,
/// stopped (and, if the test panics first, killed) when dropped.
struct Writer {
    child: std::process::Child,
    stop: PathBuf,
    /// Every `count N` it printed: rows committed, in order.
    counts: Arc<Mutex<Vec<u64>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Writer {
    /// Starts `writer.py` on `db` and waits until it has committed a row.
    fn start(db: &Path, scratch: &Path) -> Self {
        let stop = scratch.join("stop-writing");
        let mut child = Command::new("python3")
            .arg(fixtures().join("writer.py"))
            .arg(db)
            .arg(&stop)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3 runs");
        let counts = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().expect("piped");
        let seen = Arc::clone(&counts);
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if let Some(n) = line.strip_prefix("count ") {
                    seen.lock().unwrap().push(n.parse().expect("a count"));
                }
            }
        });
        let writer = Self {
            child,
            stop,
            counts,
            reader: Some(reader),
        };
        let until = Instant::now() + Duration::from_secs(30);
        while writer.counts().len() < 2 {
            assert!(Instant::now() < until, "the writer committed nothing");
            std::thread::sleep(Duration::from_millis(5));
        }
        writer
    }

    fn counts(&self) -> Vec<u64> {
        self.counts.lock().unwrap().clone()
    }

    /// Stops it; panics unless it exited 0. It exits 1 when `visits` ever
    /// held other than the rows it had committed, which is how the live
    /// database is checked to have only grown while sitekeeper worked.
    fn finish(mut self) {
        std::fs::write(&self.stop, "").expect("write the stop file");
        let until = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            assert!(Instant::now() < until, "the writer did not stop");
            std::thread::sleep(Duration::from_millis(10));
        };
        if let Some(reader) = self.reader.take() {
            reader.join().expect("the reader thread");
        }
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            std::io::Read::read_to_string(&mut e, &mut err).expect("read stderr");
        }
        assert!(status.success(), "the writer failed ({status}): {err}");
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `cmd`, killing it and failing after `limit`: a snapshot that
/// restarts at every write of a busy site would otherwise never end.
fn output_within(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    let until = Instant::now() + limit;
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > until {
            let _ = child.kill();
            let out = child.wait_with_output().expect("wait");
            panic!(
                "apply still ran after {limit:?} while the site was writing: {}",
                stderr(&out)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

/// Applies 1.1.0 while a writer inserts about every millisecond into a
/// 5 MB database in journal mode `mode`, and checks the snapshot is one
/// consistent state of it: intact, and holding every row committed before
/// the apply started and none committed after it ended.
fn snapshot_while_the_site_writes(mode: &str) {
    let dir = adopted_site(&["1.0.0", "1.1.0"], |root| {
        python(root, &["-c", PREFILL, DB, mode]);
    });
    let db = dir.path().join("site").join(DB);
    let scratch = tempfile::tempdir().expect("temp dir");
    let writer = Writer::start(&db, scratch.path());

    // Committed before the apply started.
    let first = *writer.counts().last().expect("a count");
    let mut cmd = sitekeeper(&dir.path().join("state"));
    cmd.current_dir(dir.path().join("fleet"))
        .env("SITEKEEPER_NOW", NOW)
        .arg("apply");
    let out = output_within(&mut cmd, Duration::from_secs(120));
    // Committed by the time it ended, and maybe a few more.
    let last: u64 = python(
        Path::new("/"),
        &[
            "-c",
            "import sqlite3, sys; print(sqlite3.connect(sys.argv[1], timeout=60).execute('SELECT count(*) FROM visits').fetchone()[0])",
            &db.display().to_string(),
        ],
    )
    .trim()
    .parse()
    .expect("a count");
    writer.finish();

    assert_eq!(out.status.code(), Some(0), "apply: {}", stderr(&out));
    assert!(
        last > first,
        "the writer kept writing through the apply ({first} rows before, {last} after)"
    );

    let copy = snapshot_db(dir.path(), 1, scratch.path());
    let inspected = python(
        Path::new("/"),
        &["-c", INSPECT, &copy.display().to_string()],
    );
    let lines: Vec<&str> = inspected.lines().collect();
    assert_eq!(lines[0], "ok", "PRAGMA integrity_check of the snapshot");
    let visits: u64 = lines[1].parse().expect("a count");
    assert!(
        (first..=last).contains(&visits),
        "the snapshot holds {visits} visits; {first} were committed before the apply, {last} after"
    );
    assert_eq!(lines[2], NOTES.len().to_string(), "the notes are all there");
}

#[test]
fn the_snapshot_is_consistent_while_the_site_writes_in_wal_mode() {
    snapshot_while_the_site_writes("wal");
}

#[test]
fn the_snapshot_is_consistent_while_the_site_writes_with_a_rollback_journal() {
    snapshot_while_the_site_writes("delete");
}
