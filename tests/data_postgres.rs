//! Data in the rollback point (SPEC §6.6) with a real PostgreSQL server:
//! the site's `data:` `snapshot`/`restore` commands are `pg_dump` and
//! `pg_restore`, a release's `migrate:` changes the schema and then fails,
//! and a restore that fails leaves the failure marker until `resolve`.
//!
//! The commands, exactly as these tests run them (BIN is the server's own
//! `bin` directory, `/usr/lib/postgresql/<major>/bin` on Debian, so that
//! the client tools match the server; SOCK is the server's socket
//! directory):
//!
//! ```yaml
//! data:
//!   snapshot: ["sh", "-c", "BIN/pg_dump -h SOCK -U postgres -Fc shop > \"$SITEKEEPER_DATA_FILE\""]
//!   restore: ["sh", "-c", "BIN/pg_restore -h SOCK -U postgres --clean --if-exists -d shop \"$SITEKEEPER_DATA_FILE\""]
//! ```
//!
//! Each test starts its own server (`initdb --auth=trust`, then `pg_ctl
//! start`) in a temp dir, listening on a Unix socket only, so tests never
//! share a port. The tests run as root and `initdb` refuses root, so the
//! server runs as Debian's `postgres` user (the `postgresql` package, which
//! `.ci/run` installs); sitekeeper and the client tools stay root and reach
//! it as role `postgres` through the socket.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{read_tree, run_fleet, stderr, stdout, write_tree};

/// The site's name; its state is under `<dir>/state/shop/`.
const SITE: &str = "shop";

/// The server's `bin` directory: the newest `/usr/lib/postgresql/*/bin`
/// (Debian's layout), else what `pg_config --bindir` says.
fn pg_bin() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((major, bin))
        })
        .collect();
    found.sort();
    if let Some((_, bin)) = found.pop() {
        return bin;
    }
    let out = Command::new("pg_config").arg("--bindir").output();
    match out {
        Ok(out) if out.status.success() => PathBuf::from(stdout(&out).trim()),
        _ => panic!("no PostgreSQL server found (install Debian's postgresql, as .ci/run does)"),
    }
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// A PostgreSQL server of its own in a temp dir, on a Unix socket only;
/// stopped when dropped, its process group killed if it lingers.
struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    postmaster: Option<u32>,
}

impl Postgres {
    fn start() -> Self {
        let bin = pg_bin();
        let dir = tempfile::tempdir().expect("temp dir");
        let mut pg = Self {
            dir,
            bin,
            postmaster: None,
        };
        std::fs::create_dir(pg.sock()).expect("mkdir sock");
        if is_root() {
            // The server's user must own its data dir and socket dir, and
            // be able to enter the temp dir they are in.
            let status = Command::new("chown")
                .args(["-R", "postgres:"])
                .arg(pg.dir.path())
                .status()
                .expect("chown runs");
            assert!(
                status.success(),
                "chown to postgres (is postgresql installed?)"
            );
        }
        pg.as_server(
            "initdb",
            &[
                "-D",
                &pg.data().display().to_string(),
                "--auth=trust",
                "-U",
                "postgres",
                "--no-sync",
                "--no-locale",
                "-E",
                "UTF8",
            ],
        );
        pg.as_server(
            "pg_ctl",
            &[
                "-D",
                &pg.data().display().to_string(),
                "-o",
                &format!(
                    "-k {} -c listen_addresses='' -c fsync=off",
                    pg.sock().display()
                ),
                "-l",
                &pg.dir.path().join("server.log").display().to_string(),
                "-w",
                "start",
            ],
        );
        // pg_ctl starts the server in a session of its own: its pid is its
        // process group, which Drop kills if a stop leaves anything behind.
        let pidfile =
            std::fs::read_to_string(pg.data().join("postmaster.pid")).expect("postmaster.pid");
        pg.postmaster = pidfile.lines().next().and_then(|l| l.trim().parse().ok());
        assert!(pg.postmaster.is_some(), "a pid in postmaster.pid");
        pg
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The socket directory (`-h` for the clients).
    fn sock(&self) -> PathBuf {
        self.dir.path().join("sock")
    }

    /// The absolute path of client tool `name`.
    fn tool(&self, name: &str) -> String {
        self.bin.join(name).display().to_string()
    }

    /// Runs the server's tool `name` as the server's user.
    fn as_server(&self, name: &str, args: &[&str]) {
        let mut cmd = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(self.bin.join(name));
            c
        } else {
            Command::new(self.bin.join(name))
        };
        let out = cmd
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .expect("the server's tools run");
        assert!(
            out.status.success(),
            "{name} {args:?}: {}{}{}",
            stdout(&out),
            stderr(&out),
            std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
        );
    }

    /// Runs client tool `name` with ARGS (as root, like sitekeeper), with
    /// the connection options first; returns its stdout.
    fn client(&self, name: &str, args: &[&str]) -> String {
        let out = Command::new(self.tool(name))
            .arg("-h")
            .arg(self.sock())
            .args(["-U", "postgres"])
            .args(args)
            .output()
            .expect("the client tools run");
        assert!(out.status.success(), "{name} {args:?}: {}", stderr(&out));
        stdout(&out)
    }

    /// Runs `sql` in database `db` (stopping at the first error); returns
    /// the rows unaligned, `|` between columns.
    fn psql(&self, db: &str, sql: &str) -> String {
        self.client(
            "psql",
            &[
                "-X",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                db,
                "-c",
                sql,
            ],
        )
    }

    /// What the shop's data is: its schema, every row, and where its id
    /// sequence stands (a migration's INSERT moves it; a restore must put
    /// it back).
    fn shop(&self) -> Shop {
        // pg_dump since 17.6/16.10/15.14 wraps a plain dump in `\restrict
        // KEY` … `\unrestrict KEY` with a random KEY per run (against
        // CVE-2025-8714); those lines say nothing about the schema.
        let schema = self
            .client("pg_dump", &["--schema-only", "shop"])
            .lines()
            .filter(|l| !l.starts_with("\\restrict ") && !l.starts_with("\\unrestrict "))
            .collect::<Vec<_>>()
            .join("\n");
        Shop {
            schema,
            rows: self.psql("shop", "SELECT * FROM items ORDER BY id"),
            sequence: self.psql("shop", "SELECT last_value, is_called FROM items_id_seq"),
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let Some(pid) = self.postmaster else { return };
        let mut stop = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]);
            c.arg(self.bin.join("pg_ctl"));
            c
        } else {
            Command::new(self.bin.join("pg_ctl"))
        };
        let _ = stop
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "stop"])
            .output();
        // Only if it is still our server (a pid can be reused).
        let ours = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|c| String::from_utf8_lossy(&c).contains(&*self.data().to_string_lossy()))
            .unwrap_or(false);
        if ours && let Some(group) = rustix::process::Pid::from_raw(pid as i32) {
            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
        }
    }
}

/// The shop database's content, compared before and after a change.
#[derive(Debug, PartialEq)]
struct Shop {
    schema: String,
    rows: String,
    sequence: String,
}

/// A fresh shop: database `shop` with three items.
fn shop_database(pg: &Postgres) {
    pg.psql("postgres", "CREATE DATABASE shop");
    pg.psql(
        "shop",
        "CREATE TABLE items (id serial PRIMARY KEY, name text NOT NULL, price_cents integer NOT NULL);
         INSERT INTO items (name, price_cents) VALUES ('tea', 350), ('cup', 900), ('kettle', 3100);",
    );
}

/// A command as YAML: JSON's arrays of strings are YAML flow sequences,
/// and JSON's escapes are YAML's, so quotes and `$` need no care.
fn yaml(argv: &[&str]) -> String {
    serde_json::to_string(argv).expect("JSON")
}

/// A fleet whose site `shop` is adopted at 1.0.0, with 1.1.0 waiting:
/// 1.1.0's migration adds a column and a row, then its second step fails
/// (exit 3). `restore` is the site's restore command.
fn adopted_shop(pg: &Postgres, restore: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let sock = pg.sock().display().to_string();
    let snapshot = format!(
        "{} -h {sock} -U postgres -Fc shop > \"$SITEKEEPER_DATA_FILE\"",
        pg.tool("pg_dump")
    );
    let alter = [
        &*pg.tool("psql"),
        "-X",
        "-v",
        "ON_ERROR_STOP=1",
        "-h",
        &sock,
        "-U",
        "postgres",
        "-d",
        "shop",
        "-c",
        "ALTER TABLE items ADD COLUMN sku text; INSERT INTO items (name, price_cents, sku) VALUES ('teapot', 2400, 'TP-1');",
    ];
    let release_110 = format!(
        "version: 1.1.0\nchannels: [stable]\nreleased: 2026-02-01T00:00:00Z\n\
         payload:\n  tree: releases/1.1.0/\nmigrate:\n  - {}\n  - {}\n",
        yaml(&alter),
        yaml(&[
            "sh",
            "-c",
            "echo 'reindexing items: out of disk' >&2; exit 3"
        ]),
    );
    let site = format!(
        "site: shop\nroot: ../site\nproduct: shop\nchannel: stable\npolicy: migrating\n\
         opt_in: {{upgrades: minor}}\ndata:\n  snapshot: {}\n  restore: {}\n",
        yaml(&["sh", "-c", &snapshot]),
        yaml(restore),
    );
    write_tree(
        &dir.path().join("catalog"),
        &[
            ("catalog.yaml", "product: shop\nchannels:\n  stable: {}\n"),
            (
                "releases/1.0.0.yaml",
                "version: 1.0.0\nchannels: [stable]\nreleased: 2026-01-01T00:00:00Z\npayload:\n  tree: releases/1.0.0/\n",
            ),
            ("releases/1.0.0/index.php", "<?php echo 'shop 1.0.0';\n"),
            ("releases/1.1.0.yaml", &release_110),
            ("releases/1.1.0/index.php", "<?php echo 'shop 1.1.0';\n"),
            (
                "releases/1.1.0/lib/sku.php",
                "<?php function sku($i) { return $i['sku']; }\n",
            ),
        ],
    );
    write_tree(
        &dir.path().join("fleet"),
        &[
            ("fleet.yaml", "catalogs:\n  shop:\n    source: ../catalog\n"),
            (
                "policies/migrating.yaml",
                "policy: migrating\nextends: base\nallow_release_hooks: true\n",
            ),
            ("sites/shop.yaml", &site),
        ],
    );
    write_tree(
        &dir.path().join("site"),
        &[("index.php", "<?php echo 'shop 1.0.0';\n")],
    );
    let out = run_fleet(dir.path(), &["adopt", SITE, "--version", "1.0.0"]);
    assert_eq!(out.status.code(), Some(0), "adopt: {}", stderr(&out));
    dir
}

/// The site's ledger records.
fn ledger(dir: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(dir.join("state").join(SITE).join("ledger.jsonl"))
        .expect("the site has a ledger");
    text.lines()
        .map(|l| serde_json::from_str(l).expect("a ledger line is JSON"))
        .collect()
}

/// The `result` of each ledger record of `kind`, in order.
fn results(ledger: &[serde_json::Value], kind: &str) -> Vec<String> {
    ledger
        .iter()
        .filter(|r| r["kind"] == kind)
        .map(|r| r["result"].as_str().unwrap_or("(none)").to_owned())
        .collect()
}

/// A pg_dump archive's content (decompressed if sitekeeper stored it as
/// `.zst`), or `None` if `bytes` is not one.
fn archive(name: &str, bytes: Vec<u8>) -> Option<Vec<u8>> {
    let raw = if name.ends_with(".zst") {
        zstd::decode_all(&bytes[..]).expect("a valid zstd file")
    } else {
        bytes
    };
    // pg_dump's custom format starts with this magic.
    raw.starts_with(b"PGDMP").then_some(raw)
}

/// The codes `plan --format json` holds the site with.
fn held_codes(dir: &Path) -> Vec<String> {
    let out = run_fleet(dir, &["plan", "--format", "json"]);
    let plan: serde_json::Value = serde_json::from_str(&stdout(&out))
        .unwrap_or_else(|e| panic!("plan prints JSON ({e}): {}{}", stdout(&out), stderr(&out)));
    plan["sites"][0]["held"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|h| h["code"].as_str().map(str::to_owned))
        .collect()
}

/// Every string in a JSON value.
fn strings(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::String(s) => out.push(s.clone()),
        serde_json::Value::Array(a) => a.iter().for_each(|v| strings(v, out)),
        serde_json::Value::Object(o) => o.values().for_each(|v| strings(v, out)),
        _ => {}
    }
}

/// The pg_dump archive that the failure marker at `marker` names (as any
/// string in it: absolute, or relative to the site's state or the state
/// dir; the file or its directory), decompressed if stored as `.zst`.
fn snapshot_named_in(marker: &Path) -> Vec<u8> {
    let text = std::fs::read_to_string(marker).expect("the failure marker exists");
    let json: serde_json::Value = serde_json::from_str(&text).expect("the marker is JSON");
    let mut named = Vec::new();
    strings(&json, &mut named);
    let state = marker.parent().expect("the site's state");
    let state_dir = state.parent().expect("the state dir");
    named
        .iter()
        // Joining an absolute path gives that path.
        .flat_map(|s| [state.join(s), state_dir.join(s)])
        .filter(|p| p.starts_with(state.join("data")) && p.exists())
        .flat_map(|p| {
            if p.is_dir() {
                read_tree(&p)
            } else {
                let bytes = std::fs::read(&p).expect("read the snapshot");
                vec![(p.display().to_string(), bytes)]
            }
        })
        .find_map(|(name, bytes)| archive(&name, bytes))
        .unwrap_or_else(|| panic!("the marker names no pg_dump snapshot: {text}"))
}

#[test]
fn a_failed_migration_is_undone_by_the_sites_pg_restore() {
    let pg = Postgres::start();
    shop_database(&pg);
    let dir = adopted_shop(
        &pg,
        &[
            "sh",
            "-c",
            &format!(
                "{} -h {} -U postgres --clean --if-exists -d shop \"$SITEKEEPER_DATA_FILE\"",
                pg.tool("pg_restore"),
                pg.sock().display()
            ),
        ],
    );
    let before = pg.shop();
    let files = read_tree(&dir.path().join("site"));

    let out = run_fleet(dir.path(), &["apply"]);
    assert_eq!(out.status.code(), Some(1), "apply: {}", stderr(&out));

    let ledger = ledger(dir.path());
    assert_eq!(
        results(&ledger, "migrate"),
        ["ok", "failed"],
        "the ALTER ran, the second step failed: {ledger:?}"
    );
    assert_eq!(results(&ledger, "restore"), ["ok"], "{ledger:?}");
    // The column, the row and the sequence's step are all undone.
    assert_eq!(pg.shop(), before);
    assert_eq!(read_tree(&dir.path().join("site")), files);

    // The dump the restore came from is kept with the adoption's point.
    let data = dir.path().join(format!("state/{SITE}/data/1"));
    let dumps = read_tree(&data)
        .into_iter()
        .filter_map(|(name, bytes)| archive(&name, bytes))
        .count();
    assert_eq!(dumps, 1, "one pg_dump archive under {}", data.display());
}

#[test]
fn a_failed_restore_leaves_a_failure_marker_until_an_operator_resolves_it() {
    let pg = Postgres::start();
    shop_database(&pg);
    let dir = adopted_shop(&pg, &["false"]);
    let before = pg.shop();
    let state = dir.path().join("state").join(SITE);

    let out = run_fleet(dir.path(), &["apply"]);
    assert!(!out.status.success(), "apply: {}", stderr(&out));
    assert_ne!(
        out.status.code(),
        Some(2),
        "not an input error: {}",
        stderr(&out)
    );
    assert_ne!(pg.shop(), before, "nothing restored the database");
    let ledger_after = std::fs::read_to_string(state.join("ledger.jsonl")).expect("ledger");
    let records = ledger(dir.path());
    assert_eq!(results(&records, "restore"), ["failed"], "{records:?}");

    // The marker says where the snapshot is, for a restore by hand.
    let marker = state.join("failure.json");
    let snapshot = snapshot_named_in(&marker);

    // Until resolved, nothing changes the site.
    assert!(
        held_codes(dir.path()).contains(&"failure_marker".to_owned()),
        "plan holds the site"
    );
    let files = read_tree(&dir.path().join("site"));
    let shop = pg.shop();
    let out = run_fleet(dir.path(), &["apply"]);
    assert_eq!(out.status.code(), Some(3), "apply: {}", stderr(&out));
    assert_eq!(read_tree(&dir.path().join("site")), files);
    assert_eq!(pg.shop(), shop);
    assert_eq!(
        std::fs::read_to_string(state.join("ledger.jsonl")).expect("ledger"),
        ledger_after,
        "a refused apply writes nothing"
    );

    // The operator restores the named snapshot by hand…
    let copy = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(copy.path(), snapshot).expect("write the copy");
    pg.client(
        "pg_restore",
        &[
            "--clean",
            "--if-exists",
            "-d",
            "shop",
            &copy.path().display().to_string(),
        ],
    );
    assert_eq!(
        pg.shop(),
        before,
        "the snapshot is the state before the change"
    );

    // …and says so.
    let out = run_fleet(dir.path(), &["resolve", SITE, "--by", "alice"]);
    assert_eq!(out.status.code(), Some(0), "resolve: {}", stderr(&out));
    assert!(!marker.exists(), "resolve removes the marker");
    let records = ledger(dir.path());
    let last = records.last().expect("a record");
    assert_eq!(last["kind"], "resolve", "{last}");
    assert!(
        last.to_string().contains("alice"),
        "the record names who resolved it: {last}"
    );
    assert!(
        !held_codes(dir.path()).contains(&"failure_marker".to_owned()),
        "plan no longer holds the site for the marker"
    );
}
