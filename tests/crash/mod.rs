//! Crash safety (SPEC §6.1): for every numbered step of an apply, a
//! rollback and a recovery, fail it (an injected error, and a real exit by
//! SIGKILL), run the next command, and check the oracle: the site is
//! exactly the old tree or exactly the new one (paths, modes, contents),
//! the ledger and the points agree with it, and no temporary file remains.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

use sitekeeper::model::hash::BlobId;
use sitekeeper::store::{SiteState, SnapshotEntry};

mod batch;
mod compound;
mod disk_full;
mod faults;
mod lost;

use crate::support::{
    Rng, content, fast_tempdir, generate_tree, git, sitekeeper, write_files, write_tree,
};

const NOW: &str = "2026-11-20T10:00:00Z";

/// A git catalog (1.0.0 → 1.1.0 changing ~1.5% of `files` files, plus two
/// fixes), shared read-only by every copy of the scenario.
fn catalog(files: usize) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let mut v1 = generate_tree(11, files);
    // A directory the upgrade removes whole.
    v1.insert(
        "lib/old/gone.php".into(),
        b"<?php // gone in 1.1.0\n".to_vec(),
    );
    let mut v2 = v1.clone();
    v2.remove("lib/old/gone.php");
    let mut rng = Rng(5);
    for p in v1.keys() {
        match rng.below(200) {
            0 | 1 => {
                v2.insert(p.clone(), content(&mut rng, p.ends_with(".png")));
            }
            2 => {
                v2.remove(p);
            }
            _ => {}
        }
    }
    v2.insert(
        "lib/new/added.php".into(),
        b"<?php // new in 1.1.0\n".to_vec(),
    );
    v2.insert("bin/run.sh".into(), b"#!/bin/sh\necho run\n".to_vec());
    let cat = tmp.path().join("catalog");
    write_tree(
        &cat,
        &[("catalog.yaml", "product: acme\nchannels:\n  stable: {}\n")],
    );
    for (v, files, date) in [("1.0.0", &v1, "2026-01-01"), ("1.1.0", &v2, "2026-02-01")] {
        write_tree(
            &cat,
            &[(
                &format!("releases/{v}.yaml"),
                &format!(
                    "version: {v}\nchannels: [stable]\nreleased: {date}T00:00:00Z\npayload:\n  tree: releases/{v}/\n"
                ),
            )],
        );
        write_files(&cat.join(format!("releases/{v}")), files);
    }
    write_tree(
        &cat,
        &[
            (
                "fixes/0001-index.yaml",
                "id: 0001-index\ntitle: t\nreason: r\nseverity: critical\napplies_to: \">=1.0.0\"\nops:\n  - write: {path: index.php, content: \"<?php echo 'fixed';\\n\"}\n",
            ),
            (
                "fixes/0002-theme.yaml",
                "id: 0002-theme\ntitle: t\nreason: r\nseverity: critical\napplies_to: \">=1.0.0\"\nops:\n  - add: {path: themes/custom/extra.css, content: \"body{}\\n\"}\n  - delete: {files: [\"themes/default/d1/*.css\"]}\n",
            ),
        ],
    );
    let status = std::process::Command::new("chmod")
        .arg("755")
        .arg(cat.join("releases/1.1.0/bin/run.sh"))
        .status()
        .unwrap();
    assert!(status.success());
    git(&cat, &["init", "-q", "-b", "main"]);
    git(&cat, &["add", "-A"]);
    git(&cat, &["commit", "-q", "-m", "catalog"]);
    write_files(&tmp.path().join("v1"), &v1);
    tmp
}

/// The site's layout (SPEC §6.3).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Layout {
    InPlace,
    /// `site` links to `releases/initial`.
    Symlink,
}

/// A fleet naming `catalog` and a site adopted at 1.0.0, under one small
/// directory that tests copy for every run.
fn scenario(catalog: &Path, layout: Layout) -> tempfile::TempDir {
    scenario_with(catalog, layout, "")
}

/// [`scenario`], with `site_extra` added to the site file.
fn scenario_with(catalog: &Path, layout: Layout, site_extra: &str) -> tempfile::TempDir {
    let tmp = fast_tempdir();
    let tree = match layout {
        Layout::InPlace => tmp.path().join("site"),
        Layout::Symlink => tmp.path().join("releases/initial"),
    };
    std::fs::create_dir_all(tree.parent().unwrap()).unwrap();
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(catalog.join("v1"))
        .arg(&tree)
        .status()
        .unwrap();
    assert!(status.success());
    let extra = match layout {
        Layout::InPlace => "",
        Layout::Symlink => {
            std::os::unix::fs::symlink("releases/initial", tmp.path().join("site")).unwrap();
            "layout: symlink\n"
        }
    };
    write_tree(
        &tmp.path().join("fleet"),
        &[
            (
                "fleet.yaml",
                &format!(
                    "catalogs:\n  acme:\n    source: {}\n    ref: main\n",
                    catalog.join("catalog").display()
                ),
            ),
            (
                "sites/s.yaml",
                &format!(
                    "site: s\nroot: ../site\nproduct: acme\nchannel: stable\nopt_in: {{upgrades: minor}}\n{extra}{site_extra}"
                ),
            ),
        ],
    );
    let out = run(tmp.path(), &["adopt", "s", "--version", "1.0.0"], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Packed, the rollback points copy in a few files instead of thousands.
    git(
        tmp.path(),
        &["--git-dir", "state/s/points.git", "repack", "-adq"],
    );
    git(
        tmp.path(),
        &["--git-dir", "state/s/points.git", "prune-packed"],
    );
    tmp
}

fn run(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = sitekeeper(&dir.join("state"));
    cmd.current_dir(dir.join("fleet"))
        .env("SITEKEEPER_NOW", NOW)
        .args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn copy(from: &Path) -> tempfile::TempDir {
    let to = fast_tempdir();
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", from.display()))
        .arg(to.path())
        .status()
        .unwrap();
    assert!(status.success());
    to
}

/// Paths, kinds, modes and contents of a tree.
fn tree_hash(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for e in std::fs::read_dir(root.join(&rel)).unwrap() {
            let e = e.unwrap();
            let r = rel.join(e.file_name());
            let meta = std::fs::symlink_metadata(e.path()).unwrap();
            let key = r.display().to_string();
            if meta.is_dir() {
                out.insert(key, "dir".into());
                stack.push(r);
            } else if meta.file_type().is_symlink() {
                out.insert(
                    key,
                    format!("link {}", std::fs::read_link(e.path()).unwrap().display()),
                );
            } else {
                let mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o7777;
                out.insert(
                    key,
                    format!(
                        "{mode:o} {}",
                        crate::support::sha256(&std::fs::read(e.path()).unwrap())
                    ),
                );
            }
        }
    }
    out
}

/// Steps of a clean run, from its trace.
fn count_steps(dir: &Path, args: &[&str]) -> usize {
    trace_steps(dir, args).len()
}

/// The names of the steps of a clean run, in order.
fn trace_steps(dir: &Path, args: &[&str]) -> Vec<String> {
    let trace = dir.join("trace");
    let out = run(
        dir,
        args,
        &[("SITEKEEPER_FAILPOINT_TRACE", trace.to_str().unwrap())],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let names = std::fs::read_to_string(&trace)
        .map(|t| {
            t.lines()
                .map(|l| l.split_once(' ').map_or(l, |(_, name)| name).to_owned())
                .collect()
        })
        .unwrap_or_default();
    std::fs::remove_file(&trace).ok();
    names
}

/// The oracle: old or new tree, no leftovers, points and ledger agree.
fn check(dir: &Path, old: &BTreeMap<String, String>, new: &BTreeMap<String, String>, what: &str) {
    check_site(dir, "s", "site", old, new, what);
}

/// [`check`] of site `name` whose root is `dir/root`.
fn check_site(
    dir: &Path,
    name: &str,
    root: &str,
    old: &BTreeMap<String, String>,
    new: &BTreeMap<String, String>,
    what: &str,
) {
    let site = dir.join(root);
    let now = tree_hash(&site);
    assert!(
        now == *old || now == *new,
        "{what}: the tree is neither old nor new"
    );
    assert!(
        !site.join(".sitekeeper-stage").exists(),
        "{what}: staging left behind"
    );
    let journal: Vec<_> = std::fs::read_dir(dir.join(format!("state/{name}/journal")))
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(
        journal.is_empty(),
        "{what}: journal left behind: {journal:?}"
    );
    leftovers(dir, what);
    let state = SiteState::new(&dir.join("state"), name);
    let points = state.points().unwrap();
    if std::fs::symlink_metadata(&site)
        .unwrap()
        .file_type()
        .is_symlink()
    {
        // Release directories: exactly those the points name (the current
        // one among them), plus the operator's first one.
        let mut named: Vec<String> = points
            .list()
            .unwrap()
            .into_iter()
            .filter_map(|n| points.meta(n).unwrap().release_dir)
            .collect();
        named.push("initial".into());
        named.sort();
        named.dedup();
        let mut dirs: Vec<String> = std::fs::read_dir(dir.join("releases"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        dirs.sort();
        assert_eq!(dirs, named, "{what}: release directories");
    }
    let latest = points.latest().unwrap().unwrap();
    for (path, entry) in points.snapshot(latest).unwrap() {
        let p = site.join(&path);
        let meta = std::fs::symlink_metadata(&p)
            .unwrap_or_else(|_| panic!("{what}: point {latest} has {path}, the site does not"));
        let bytes = if meta.file_type().is_symlink() {
            std::fs::read_link(&p)
                .unwrap()
                .into_os_string()
                .into_encoded_bytes()
        } else {
            std::fs::read(&p).unwrap()
        };
        assert_eq!(
            BlobId::of(&bytes),
            entry.blob(),
            "{what}: {path} differs from point {latest}"
        );
        if let SnapshotEntry::File { mode, .. } = entry {
            assert_eq!(
                std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o7777,
                mode,
                "{what}: {path} mode"
            );
        }
    }
    let meta = points.meta(latest).unwrap();
    let ledger = state.ledger().read().unwrap();
    if meta.txn.is_some() {
        assert!(
            ledger.iter().any(|r| r.point == Some(latest)),
            "{what}: point {latest} has no ledger record"
        );
    }
    let new_state = now == *new;
    assert_eq!(
        meta.version == "1.1.0",
        new_state,
        "{what}: the latest point's version does not match the tree"
    );
}

/// No temporary file, stage or swap link anywhere sitekeeper writes.
fn leftovers(dir: &Path, what: &str) {
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            assert!(
                !(name.starts_with(".tmp") || name.contains(".sitekeeper-")),
                "{what}: {} left behind",
                e.path().display()
            );
            let ft = e.file_type().unwrap();
            if ft.is_dir() && name != "points.git" && name != "cache" {
                stack.push(e.path());
            }
        }
    }
}

/// `files` times `SITEKEEPER_CRASH_SCALE` (default 1): the size of the
/// crash tests' trees, raised for a large run (`scripts/reliability`).
fn scale(files: usize) -> usize {
    let factor: f64 = std::env::var("SITEKEEPER_CRASH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    ((files as f64 * factor) as usize).max(50)
}

/// Whether to run every case of a matrix, not a rotation through it
/// (`SITEKEEPER_CRASH_FULL=1`, set by `scripts/reliability`).
fn full() -> bool {
    std::env::var_os("SITEKEEPER_CRASH_FULL").is_some_and(|v| v == "1")
}

/// Runs `f(n)` for n in 1..=count on two threads.
fn each(count: usize, f: impl Fn(usize) + Sync) {
    std::thread::scope(|s| {
        for t in 0..2 {
            let f = &f;
            s.spawn(move || {
                for n in (1..=count).filter(|n| n % 2 == t) {
                    f(n);
                }
            });
        }
    });
}

#[test]
fn every_apply_and_rollback_failpoint_two_ways_and_every_recovery_step() {
    every_failpoint(Layout::InPlace);
}

#[test]
fn every_failpoint_of_the_symlink_layout_two_ways() {
    every_failpoint(Layout::Symlink);
}

fn every_failpoint(layout: Layout) {
    // The symlink layout copies the whole tree on every run; a smaller
    // tree keeps its many runs quick without removing a step.
    // `cargo test` uses a smaller tree than the large run: the steps are
    // the same kinds, fewer of them.
    let cat = catalog(match (layout, full()) {
        (Layout::InPlace, true) => scale(2_000),
        (Layout::InPlace, false) => scale(600),
        (Layout::Symlink, true) => scale(500),
        (Layout::Symlink, false) => scale(200),
    });
    let base = scenario(cat.path(), layout);
    let old = tree_hash(&base.path().join("site"));
    let clean = copy(base.path());
    let trace = trace_steps(clean.path(), &["apply", "s"]);
    let steps = trace.len();
    let new = tree_hash(&clean.path().join("site"));
    assert_ne!(old, new);
    assert!(
        new.get("bin/run.sh").is_some_and(|h| h.starts_with("755 ")),
        "modes are part of the state"
    );
    assert!(steps > 20, "a realistic change has many steps: {steps}");

    // Apply: fail at every step, by error and by SIGKILL; then the next command recovers.
    each(steps, |n| {
        for how in ["error", "kill"] {
            let c = copy(base.path());
            let out = run(
                c.path(),
                &["apply", "s"],
                &[("SITEKEEPER_FAILPOINT", &format!("{n}:{how}"))],
            );
            assert!(
                !out.status.success(),
                "apply with failpoint {n}:{how} succeeded"
            );
            let next = run(c.path(), &["status", "s"], &[]);
            assert!(
                next.status.success(),
                "{}",
                String::from_utf8_lossy(&next.stderr)
            );
            check(c.path(), &old, &new, &format!("apply failpoint {n}:{how}"));
        }
    });

    // Rollback of the applied change: the same at each of its steps.
    let rb_steps = count_steps(copy(clean.path()).path(), &["rollback", "s"]);
    each(rb_steps, |n| {
        for how in ["error", "kill"] {
            let c = copy(clean.path());
            let out = run(
                c.path(),
                &["rollback", "s"],
                &[("SITEKEEPER_FAILPOINT", &format!("{n}:{how}"))],
            );
            assert!(
                !out.status.success(),
                "rollback with failpoint {n}:{how} succeeded"
            );
            let next = run(c.path(), &["status", "s"], &[]);
            assert!(
                next.status.success(),
                "{}",
                String::from_utf8_lossy(&next.stderr)
            );
            let now = tree_hash(&c.path().join("site"));
            assert!(
                now == old || now == new,
                "rollback failpoint {n}:{how}: mixed tree"
            );
            assert!(!c.path().join("state/s/journal/txn.json").exists());
            leftovers(c.path(), &format!("rollback failpoint {n}:{how}"));
        }
    });

    // Recovery interrupted: kill an apply halfway through its renames (in
    // place) or just after its swap (symlink), then kill the recovery at
    // each of its own steps, then recover for good.
    let crash_at = match layout {
        Layout::InPlace => steps * 2 / 3,
        Layout::Symlink => {
            1 + trace
                .iter()
                .position(|s| s == "fsync link dir")
                .expect("a swap step")
        }
    };
    let crashed = copy(base.path());
    let out = run(
        crashed.path(),
        &["apply", "s"],
        &[("SITEKEEPER_FAILPOINT", &format!("{crash_at}:kill"))],
    );
    assert!(!out.status.success());
    let rec_steps = count_steps(copy(crashed.path()).path(), &["status", "s"]);
    assert!(rec_steps > 4, "recovery has steps: {rec_steps}");
    eprintln!(
        "failpoints ({layout:?}): apply {steps} steps, rollback {rb_steps}, recovery {rec_steps}; each failed by error and by SIGKILL"
    );
    each(rec_steps, |m| {
        let c = copy(crashed.path());
        let out = run(
            c.path(),
            &["status", "s"],
            &[("SITEKEEPER_FAILPOINT", &format!("{m}:kill"))],
        );
        assert!(
            !out.status.success(),
            "recovery with failpoint {m} survived"
        );
        let next = run(c.path(), &["status", "s"], &[]);
        assert!(
            next.status.success(),
            "{}",
            String::from_utf8_lossy(&next.stderr)
        );
        check(c.path(), &old, &new, &format!("recovery failpoint {m}"));
    });
}

/// The real-kill loop, with a small count (measure with `tests/crash/kill-loop.sh 500`).
#[test]
fn real_kills_at_random_instants_leave_old_or_new() {
    let script = crate::support::repo_root().join("tests/crash/kill-loop.sh");
    let out = std::process::Command::new(script)
        .args(["8", "3"])
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
