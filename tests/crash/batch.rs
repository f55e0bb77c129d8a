//! Crash safety of a group commit (issue 22, item 3): one `apply` over
//! several sites, whose transactions share their barriers, is failed at
//! every numbered step of the batch (an injected error, and SIGKILL) and
//! crashed after every durability event losing what was not durable;
//! after the next command every site is exactly old or new, with a
//! ledger and points that agree, and nothing left behind, in both
//! barrier modes (`syncfs`, and the fsync pass).

use std::path::Path;

use super::{catalog, check_site, copy, each, full, run, scale, trace_steps, tree_hash};
use crate::support::{fast_tempdir, git, write_tree};

/// Sites in the batch.
const SITES: usize = 3;

/// A fleet of [`SITES`] sites (`s1`…, roots `site1`…), each adopted at
/// 1.0.0 from `catalog`, with its own state.
fn batch_scenario(catalog: &Path) -> tempfile::TempDir {
    let tmp = fast_tempdir();
    let mut files = vec![(
        "fleet.yaml".to_owned(),
        format!(
            "catalogs:\n  acme:\n    source: {}\n    ref: main\n",
            catalog.join("catalog").display()
        ),
    )];
    for i in 1..=SITES {
        let status = std::process::Command::new("cp")
            .arg("-a")
            .arg(catalog.join("v1"))
            .arg(tmp.path().join(format!("site{i}")))
            .status()
            .unwrap();
        assert!(status.success());
        files.push((
            format!("sites/s{i}.yaml"),
            format!(
                "site: s{i}\nroot: ../site{i}\nproduct: acme\nchannel: stable\nopt_in: {{upgrades: minor}}\n"
            ),
        ));
    }
    let files: Vec<(&str, &str)> = files
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    write_tree(&tmp.path().join("fleet"), &files);
    for i in 1..=SITES {
        let out = run(
            tmp.path(),
            &["adopt", &format!("s{i}"), "--version", "1.0.0"],
            &[],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let repo = format!("state/s{i}/points.git");
        git(tmp.path(), &["--git-dir", &repo, "repack", "-adq"]);
        git(tmp.path(), &["--git-dir", &repo, "prune-packed"]);
    }
    tmp
}

/// The oracle for every site, and no group-commit temporary in any
/// `points.git` (the shared check skips those repositories).
fn check_all(
    dir: &Path,
    old: &std::collections::BTreeMap<String, String>,
    new: &std::collections::BTreeMap<String, String>,
    what: &str,
) {
    for i in 1..=SITES {
        check_site(
            dir,
            &format!("s{i}"),
            &format!("site{i}"),
            old,
            new,
            &format!("{what}, site s{i}"),
        );
        let repo = dir.join(format!("state/s{i}/points.git"));
        for sub in [repo.clone(), repo.join("objects/pack")] {
            for e in std::fs::read_dir(&sub).unwrap() {
                let name = e.unwrap().file_name().to_string_lossy().into_owned();
                assert!(
                    !name.contains("_sk_"),
                    "{what}: {} left in {}",
                    name,
                    sub.display()
                );
            }
        }
    }
}

/// The same apply with each barrier mode.
const MODES: [&str; 2] = ["syncfs", "fsync"];

#[test]
fn every_step_of_a_batch_failed_two_ways_leaves_each_site_old_or_new() {
    let cat = catalog(scale(if full() { 300 } else { 50 }));
    let base = batch_scenario(cat.path());
    let old = tree_hash(&base.path().join("site1"));
    for mode in MODES {
        let env = [("SITEKEEPER_GROUP_SYNC", mode)];
        let clean = copy(base.path());
        let trace = {
            let t = clean.path().join("trace");
            let out = run(
                clean.path(),
                &["apply", "--jobs", "1"],
                &[("SITEKEEPER_FAILPOINT_TRACE", t.to_str().unwrap()), env[0]],
            );
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let text = std::fs::read_to_string(&t).unwrap();
            std::fs::remove_file(&t).ok();
            text.lines()
                .map(|l| l.split_once(' ').map_or(l, |(_, n)| n).to_owned())
                .collect::<Vec<_>>()
        };
        let new = tree_hash(&clean.path().join("site1"));
        assert_ne!(old, new);
        check_all(clean.path(), &old, &new, &format!("{mode}: clean batch"));
        for i in 2..=SITES {
            assert_eq!(
                tree_hash(&clean.path().join(format!("site{i}"))),
                new,
                "site{i} converged"
            );
        }
        // One barrier per phase for the whole batch, not one per site.
        let barriers = trace.iter().filter(|s| s.starts_with("group: ")).count();
        assert_eq!(barriers, 6, "{mode}: the batch's barriers: {trace:?}");
        let steps = trace.len();
        each(steps, |n| {
            // `cargo test` fails each step once per mode, by error in one
            // and by SIGKILL in the other, so every step of the batch is
            // killed once; `SITEKEEPER_CRASH_FULL=1` does both in each.
            let hows: Vec<&str> = if full() {
                vec!["error", "kill"]
            } else if (n + usize::from(mode == "fsync")) % 2 == 0 {
                vec!["error"]
            } else {
                vec!["kill"]
            };
            for how in hows {
                let what = format!("{mode}: batch failpoint {n}:{how} ({})", trace[n - 1]);
                let c = copy(base.path());
                let out = run(
                    c.path(),
                    &["apply", "--jobs", "1"],
                    &[("SITEKEEPER_FAILPOINT", &format!("{n}:{how}")), env[0]],
                );
                assert!(!out.status.success(), "{what}: apply succeeded");
                let next = run(c.path(), &["status"], &[]);
                assert!(
                    next.status.success(),
                    "{what}, then status: {}",
                    String::from_utf8_lossy(&next.stderr)
                );
                check_all(c.path(), &old, &new, &what);
            }
        });
        eprintln!(
            "group commit ({mode}): {steps} steps over {SITES} sites, each failed by error and by SIGKILL"
        );
    }
    // The trace of the syncfs run is the same as a clean single-site
    // apply's steps plus the barriers: a single site is not batched.
    let single = copy(base.path());
    let steps = trace_steps(single.path(), &["apply", "s1"]);
    assert!(
        !steps.iter().any(|s| s.starts_with("group: ")),
        "one site converges alone: {steps:?}"
    );
}

#[test]
fn a_crash_that_loses_unsynced_writes_in_a_batch_leaves_each_site_old_or_new() {
    let cat = catalog(scale(50));
    let base = batch_scenario(cat.path());
    let old = tree_hash(&base.path().join("site1"));
    for mode in MODES {
        let env = ("SITEKEEPER_GROUP_SYNC", mode);
        let clean = copy(base.path());
        let events = {
            let t = clean.path().join("events");
            let out = run(
                clean.path(),
                &["apply", "--jobs", "1"],
                &[("SITEKEEPER_CRASH_TRACE", t.to_str().unwrap()), env],
            );
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let text = std::fs::read_to_string(&t).unwrap();
            std::fs::remove_file(&t).ok();
            text.lines().map(str::to_owned).collect::<Vec<_>>()
        };
        if mode == "syncfs" {
            assert!(
                events.iter().any(|e| e.contains(" syncfs ")),
                "the batch synced whole file systems: {events:?}"
            );
        }
        let new = tree_hash(&clean.path().join("site1"));
        each(events.len(), |k| {
            let variants: Vec<&str> = if full() {
                super::lost::VARIANTS.to_vec()
            } else {
                vec![super::lost::VARIANTS[k % super::lost::VARIANTS.len()]]
            };
            for variant in variants {
                let what = format!(
                    "{mode}: batch crash after event {k} ({}) losing {variant}",
                    events[k - 1]
                );
                let c = copy(base.path());
                let kept = c.path().join("kept");
                let out = run(
                    c.path(),
                    &["apply", "--jobs", "1"],
                    &[
                        ("SITEKEEPER_CRASH", &format!("{k}:{variant}")),
                        ("SITEKEEPER_CRASH_DIR", kept.to_str().unwrap()),
                        env,
                    ],
                );
                assert_eq!(out.status.code(), None, "{what}: not killed");
                std::fs::remove_dir_all(&kept).ok();
                let next = run(c.path(), &["status"], &[]);
                assert!(
                    next.status.success(),
                    "{what}, then status: {}",
                    String::from_utf8_lossy(&next.stderr)
                );
                check_all(c.path(), &old, &new, &what);
            }
        });
        eprintln!(
            "lost writes in a batch ({mode}): {} events over {SITES} sites",
            events.len()
        );
    }
}
