//! I/O faults (issue #7): every step of an apply, a rollback and a recovery
//! meets each error a disk gives (EIO, ENOSPC, EDQUOT, EACCES, EROFS), once
//! (the next try succeeds) and persistently (every later step fails, the
//! undo included). The command must fail with exit 1 and say the error in
//! plain words; the next command must leave the site exactly old or new,
//! with the points and ledger agreeing and no temporary file left.
//!
//! `cargo test` gives each step two of the ten cases, rotating, so every
//! kind meets every phase; `scripts/reliability` runs all ten at every step
//! (`SITEKEEPER_CRASH_FULL=1`) on a larger tree.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::{
    Layout, catalog, check, copy, count_steps, each, full, run, scale, scenario, tree_hash,
};

/// Each fault, and the words the message must use for it.
const FAULTS: [(&str, &str); 5] = [
    ("eio", "input/output error"),
    ("enospc", "the file system is full"),
    ("edquot", "disk quota"),
    ("eacces", "permission denied"),
    ("erofs", "read-only"),
];

/// The cases for step `n`: (fault, persistent).
fn cases(n: usize) -> Vec<(usize, bool)> {
    if full() {
        (0..FAULTS.len())
            .flat_map(|k| [(k, false), (k, true)])
            .collect()
    } else {
        vec![(n % FAULTS.len(), false), ((n + 2) % FAULTS.len(), true)]
    }
}

#[test]
fn every_step_meets_every_disk_error_once_and_persistently() {
    disk_faults(Layout::InPlace, scale(if full() { 200 } else { 100 }));
}

/// The same with the symlink layout, whose every change copies the whole
/// tree: too many events for `cargo test`, run by `scripts/reliability`.
#[test]
#[ignore = "long: run by scripts/reliability"]
fn every_step_meets_every_disk_error_once_and_persistently_symlink_layout() {
    disk_faults(Layout::Symlink, scale(60));
}

fn disk_faults(layout: Layout, files: usize) {
    let cat = catalog(files);
    let base = scenario(cat.path(), layout);
    let old = tree_hash(&base.path().join("site"));
    let applied = copy(base.path());
    let apply_steps = count_steps(applied.path(), &["apply", "s"]);
    let new = tree_hash(&applied.path().join("site"));
    assert_ne!(old, new);
    let rollback_steps = count_steps(copy(applied.path()).path(), &["rollback", "s"]);
    // A recovery to fault: an apply killed two thirds of the way through.
    let crashed = copy(base.path());
    let out = run(
        crashed.path(),
        &["apply", "s"],
        &[(
            "SITEKEEPER_FAILPOINT",
            &format!("{}:kill", apply_steps * 2 / 3),
        )],
    );
    assert!(!out.status.success());
    let recovery_steps = count_steps(copy(crashed.path()).path(), &["status", "s"]);

    let runs = AtomicUsize::new(0);
    let phases: [(&str, &Path, &[&str], usize); 3] = [
        ("apply", base.path(), &["apply", "s"], apply_steps),
        (
            "rollback",
            applied.path(),
            &["rollback", "s"],
            rollback_steps,
        ),
        ("recovery", crashed.path(), &["status", "s"], recovery_steps),
    ];
    for (phase, from, args, steps) in phases {
        each(steps, |n| {
            for (k, persistent) in cases(n) {
                let (fault, words) = FAULTS[k];
                let spec = format!("{n}:{fault}{}", if persistent { "+" } else { "" });
                let what = format!("{phase} at {spec}");
                let c = copy(from);
                let out = run(c.path(), args, &[("SITEKEEPER_FAILPOINT", &spec)]);
                let stderr = String::from_utf8_lossy(&out.stderr);
                assert_eq!(out.status.code(), Some(1), "{what}: {stderr}");
                assert!(
                    stderr.contains(words),
                    "{what}: not in plain words: {stderr}"
                );
                let next = run(c.path(), &["status", "s"], &[]);
                assert!(
                    next.status.success(),
                    "{what}, then status: {}",
                    String::from_utf8_lossy(&next.stderr)
                );
                check(c.path(), &old, &new, &what);
                runs.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    eprintln!(
        "disk faults ({layout:?}, {files} files): apply {apply_steps} steps, rollback {rollback_steps}, recovery {recovery_steps}; {} cases, each old or new after the next command",
        runs.load(Ordering::Relaxed)
    );
}
