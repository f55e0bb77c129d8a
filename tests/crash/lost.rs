//! Lost unsynced writes (issue #7): a simulated crash after every
//! durability event (a file written, fsynced, created, renamed, removed, a
//! directory fsynced) of an apply, a rollback and a recovery, which first
//! loses what was not yet durable, as SQLite's crash tests do: all of it,
//! a random prefix of the directory changes with data cut at a random
//! length, or the data overwritten with noise (see
//! `reconciler/durability.rs` for the model). After the next command the
//! site is exactly old or new, and the points and ledger agree with it.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::{Layout, catalog, check, copy, each, full, run, scale, scenario, tree_hash};

pub(super) const VARIANTS: [&str; 3] = ["all", "prefix", "garbage"];

/// The durability events of a clean run.
fn events(dir: &Path, args: &[&str]) -> usize {
    let trace = dir.join("events");
    let out = run(
        dir,
        args,
        &[("SITEKEEPER_CRASH_TRACE", trace.to_str().unwrap())],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let n = std::fs::read_to_string(&trace).map_or(0, |t| t.lines().count());
    std::fs::remove_file(&trace).ok();
    n
}

#[test]
fn a_crash_that_loses_unsynced_writes_leaves_old_or_new() {
    lost_writes(Layout::InPlace, scale(if full() { 150 } else { 100 }));
}

/// The same with the symlink layout, whose every change copies the whole
/// tree: too many events for `cargo test`, run by `scripts/reliability`.
#[test]
#[ignore = "long: run by scripts/reliability"]
fn a_crash_that_loses_unsynced_writes_leaves_old_or_new_symlink_layout() {
    lost_writes(Layout::Symlink, scale(60));
}

fn lost_writes(layout: Layout, files: usize) {
    let cat = catalog(files);
    let base = scenario(cat.path(), layout);
    let old = tree_hash(&base.path().join("site"));
    let applied = copy(base.path());
    let apply_events = events(applied.path(), &["apply", "s"]);
    let new = tree_hash(&applied.path().join("site"));
    let rollback_events = events(copy(applied.path()).path(), &["rollback", "s"]);
    let crashed = copy(base.path());
    let out = run(
        crashed.path(),
        &["apply", "s"],
        &[
            ("SITEKEEPER_CRASH", &format!("{}:all", apply_events * 2 / 3)),
            (
                "SITEKEEPER_CRASH_DIR",
                crashed.path().join("kept").to_str().unwrap(),
            ),
        ],
    );
    assert!(!out.status.success(), "the simulated crash kills the run");
    std::fs::remove_dir_all(crashed.path().join("kept")).ok();
    let recovery_events = events(copy(crashed.path()).path(), &["status", "s"]);
    assert!(apply_events > 20 && recovery_events > 4);

    let runs = AtomicUsize::new(0);
    let phases: [(&str, &Path, &[&str], usize); 3] = [
        ("apply", base.path(), &["apply", "s"], apply_events),
        (
            "rollback",
            applied.path(),
            &["rollback", "s"],
            rollback_events,
        ),
        (
            "recovery",
            crashed.path(),
            &["status", "s"],
            recovery_events,
        ),
    ];
    for (phase, from, args, count) in phases {
        each(count, |k| {
            let variants: Vec<&str> = if full() {
                VARIANTS.to_vec()
            } else {
                vec![VARIANTS[k % VARIANTS.len()]]
            };
            for variant in variants {
                let what = format!("{phase} crash after event {k} losing {variant}");
                let c = copy(from);
                let kept = c.path().join("kept");
                let out = run(
                    c.path(),
                    args,
                    &[
                        ("SITEKEEPER_CRASH", &format!("{k}:{variant}")),
                        ("SITEKEEPER_CRASH_DIR", kept.to_str().unwrap()),
                    ],
                );
                assert_eq!(out.status.code(), None, "{what}: not killed");
                // The model's own copies of replaced files are not the site's.
                std::fs::remove_dir_all(&kept).ok();
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
        "lost writes ({layout:?}, {files} files): apply {apply_events} events, rollback {rollback_events}, recovery {recovery_events}; {} crashes, each old or new after the next command",
        runs.load(Ordering::Relaxed)
    );
}
