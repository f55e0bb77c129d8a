//! fsync discipline, observed from outside: a real `apply` runs under
//! `strace`, and the order of its fsync and rename system calls is checked.
//! Every replaced file was fsynced (staged) before its rename, its
//! directory is fsynced after the rename and before the commit point, the
//! point's ref is fsynced, and the ledger is written last.

use std::path::Path;

use crate::support::{fleet_with, sitekeeper, stderr, write_tree};

/// One traced call: its name and its arguments as strace printed them.
struct Call {
    name: String,
    args: String,
}

/// The `<path>` strace (`-y`) prints after each file descriptor argument.
fn fd_paths(args: &str) -> Vec<String> {
    args.split('<')
        .skip(1)
        .filter_map(|s| s.split_once('>').map(|(p, _)| p.to_owned()))
        .collect()
}

/// The quoted strings among the arguments (the names of a rename).
fn quoted(args: &str) -> Vec<String> {
    args.split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

/// The calls that succeeded in strace's output `trace`, in order.
fn parse(trace: &Path) -> Vec<Call> {
    // With several threads strace splits a call in two lines
    // ("<unfinished ...>" and "<... name resumed>"); join them per thread.
    let mut pending: std::collections::HashMap<String, String> = Default::default();
    let mut calls: Vec<Call> = Vec::new();
    for line in std::fs::read_to_string(trace).unwrap().lines() {
        let Some((pid, rest)) = line.split_once(' ') else {
            continue;
        };
        let rest = rest.trim_start();
        if let Some(head) = rest.strip_suffix("<unfinished ...>") {
            pending.insert(pid.to_owned(), head.trim_end().to_owned());
            continue;
        }
        let whole = match rest.split_once("resumed>") {
            Some((_, tail)) if rest.starts_with("<...") => match pending.remove(pid) {
                Some(head) => format!("{head}{tail}"),
                None => continue,
            },
            _ => rest.to_owned(),
        };
        // Only calls that succeeded (strace pads before " = 0").
        if whole
            .rsplit_once(" = ")
            .is_none_or(|(_, rc)| rc.trim() != "0")
        {
            continue;
        }
        if let Some((name, args)) = whole.split_once('(') {
            calls.push(Call {
                name: name.to_owned(),
                args: args.to_owned(),
            });
        }
    }
    calls
}

/// Runs `sitekeeper ARGS` in `d/fleet` under strace, tracing `calls`.
fn traced(d: &Path, args: &[&str], calls: &str, env: &[(&str, &str)]) -> Vec<Call> {
    let trace = d.join("trace");
    let mut cmd = std::process::Command::new("strace");
    cmd.args(["-f", "-y", "-qq", "-s", "256", "-o"])
        .arg(&trace)
        .args(["-e", &format!("trace={calls}")])
        .arg(env!("CARGO_BIN_EXE_sitekeeper"))
        .args(["--state-dir", d.join("state").to_str().unwrap()])
        .args(args)
        .current_dir(d.join("fleet"))
        .env("SITEKEEPER_NOW", "2026-11-20T10:00:00Z");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let calls = parse(&trace);
    std::fs::remove_file(&trace).ok();
    calls
}

/// Fails the test when strace is missing: a test that passes without
/// looking would hide a broken fsync order.
fn need_strace() {
    let version = std::process::Command::new("strace").arg("-V").output();
    assert!(
        version.as_ref().is_ok_and(|v| v.status.success()),
        "this test needs strace on the PATH ({version:?}); install it \
         (`apt-get install strace`, as .ci/run does)"
    );
}

#[test]
fn every_rename_is_fsynced_before_and_its_directory_after_and_the_ledger_is_last() {
    // No strace is a failure, not a skip.
    need_strace();
    let dir = fleet_with(&[(
        "sites/s.yaml",
        "site: s\nroot: ../site\nproduct: acme\nchannel: stable\nopt_in: {upgrades: patch}\n",
    )]);
    let d = dir.path();
    write_tree(
        &d.join("catalog"),
        &[
            (
                "releases/1.0.1.yaml",
                "version: 1.0.1\nchannels: [stable]\nreleased: 2026-02-01T00:00:00Z\npayload:\n  tree: releases/1.0.1/\n",
            ),
            ("releases/1.0.1/index.php", "<?php echo 'v1.0.1';\n"),
            ("releases/1.0.1/lib/util.php", "<?php function util() {}\n"),
        ],
    );
    write_tree(&d.join("site"), &[("index.php", "<?php echo 'hi';\n")]);
    let run = |args: &[&str]| {
        sitekeeper(&d.join("state"))
            .current_dir(d.join("fleet"))
            .env("SITEKEEPER_NOW", "2026-11-20T10:00:00Z")
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["adopt", "s", "--version", "1.0.0"]);
    assert!(out.status.success(), "{}", stderr(&out));

    let trace = d.join("trace");
    let out = std::process::Command::new("strace")
        .args(["-f", "-y", "-qq", "-s", "256", "-o"])
        .arg(&trace)
        .args(["-e", "trace=fsync,fdatasync,rename,renameat,renameat2"])
        .arg(env!("CARGO_BIN_EXE_sitekeeper"))
        .args(["--state-dir", d.join("state").to_str().unwrap()])
        .args(["apply", "s"])
        .current_dir(d.join("fleet"))
        .env("SITEKEEPER_NOW", "2026-11-20T10:00:00Z")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let calls = parse(&trace);
    let site = std::fs::canonicalize(d.join("site")).unwrap();
    let site = site.to_str().unwrap();
    let is_fsync = |c: &Call| c.name == "fsync" || c.name == "fdatasync";
    let fsynced_at = |path: &str, from: usize, to: usize| {
        calls[from..to]
            .iter()
            .position(|c| is_fsync(c) && fd_paths(&c.args).first().is_some_and(|p| p == path))
            .map(|i| i + from)
    };
    let point_ref = calls
        .iter()
        .position(|c| {
            is_fsync(c)
                && fd_paths(&c.args)
                    .first()
                    .is_some_and(|p| p.contains("points.git/refs/points/"))
        })
        .expect("the point's ref is fsynced: the commit step is durable");
    let ledger = calls
        .iter()
        .rposition(|c| {
            is_fsync(c)
                && fd_paths(&c.args)
                    .first()
                    .is_some_and(|p| p.ends_with("ledger.jsonl"))
        })
        .expect("the ledger is fsynced");
    assert!(
        ledger > point_ref,
        "the ledger is written after the commit point"
    );

    let mut renames = 0;
    for (i, c) in calls.iter().enumerate() {
        if !c.name.starts_with("rename") {
            continue;
        }
        let dirs = fd_paths(&c.args);
        let names = quoted(&c.args);
        let (Some(from_dir), Some(to_dir)) = (dirs.first(), dirs.get(1)) else {
            continue;
        };
        if !from_dir.ends_with(".sitekeeper-stage") || !to_dir.starts_with(site) {
            continue;
        }
        renames += 1;
        let staged = format!("{from_dir}/{}", names[0]);
        assert!(
            fsynced_at(&staged, 0, i).is_some(),
            "{staged} was renamed to {to_dir}/{} without an fsync before",
            names[1]
        );
        assert!(
            fsynced_at(to_dir, i + 1, point_ref).is_some(),
            "{to_dir} was not fsynced after the rename of {} and before the commit point",
            names[1]
        );
        assert!(i < ledger, "a file was replaced after the ledger record");
    }
    assert_eq!(
        renames, 2,
        "index.php and lib/util.php were replaced by rename"
    );
    assert!(
        Path::new(&format!("{site}/lib/util.php")).exists(),
        "the apply really happened"
    );
}

/// Sites of the group-commit test.
const GROUP: usize = 3;

/// A fleet of [`GROUP`] sites adopted at 1.0.0, with 1.0.1 to upgrade to.
fn group_fleet() -> tempfile::TempDir {
    let sites: Vec<(String, String)> = (1..=GROUP)
        .map(|i| {
            (
                format!("sites/s{i}.yaml"),
                format!("site: s{i}\nroot: ../site{i}\nproduct: acme\nchannel: stable\nopt_in: {{upgrades: patch}}\n"),
            )
        })
        .collect();
    let files: Vec<(&str, &str)> = sites
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let dir = fleet_with(&files);
    let d = dir.path();
    write_tree(
        &d.join("catalog"),
        &[
            (
                "releases/1.0.1.yaml",
                "version: 1.0.1\nchannels: [stable]\nreleased: 2026-02-01T00:00:00Z\npayload:\n  tree: releases/1.0.1/\n",
            ),
            ("releases/1.0.1/index.php", "<?php echo 'v1.0.1';\n"),
            ("releases/1.0.1/lib/util.php", "<?php function util() {}\n"),
            ("releases/1.0.1/lib/more.php", "<?php function more() {}\n"),
        ],
    );
    for i in 1..=GROUP {
        write_tree(
            &d.join(format!("site{i}")),
            &[("index.php", "<?php echo 'hi';\n")],
        );
        let out = sitekeeper(&d.join("state"))
            .current_dir(d.join("fleet"))
            .env("SITEKEEPER_NOW", "2026-11-20T10:00:00Z")
            .args(["adopt", &format!("s{i}"), "--version", "1.0.0"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    }
    dir
}

/// Where a site's calls of interest are in a traced group commit.
struct SiteCalls {
    journal: usize,
    first_rename: usize,
    last_rename: usize,
    point_ref: usize,
}

fn site_calls(calls: &[Call], site: &str, state: &str) -> SiteCalls {
    let target = |c: &Call| quoted(&c.args).last().cloned().unwrap_or_default();
    let is_rename = |c: &Call| c.name.starts_with("rename");
    let journal = calls
        .iter()
        .position(|c| is_rename(c) && target(c).ends_with(&format!("{state}/journal/txn.json")))
        .expect("the journal is renamed into place");
    let renames: Vec<usize> = calls
        .iter()
        .enumerate()
        .filter(|(_, c)| {
            let dirs = fd_paths(&c.args);
            is_rename(c)
                && dirs
                    .first()
                    .is_some_and(|d| d.ends_with(".sitekeeper-stage"))
                && dirs.get(1).is_some_and(|d| d.starts_with(site))
        })
        .map(|(i, _)| i)
        .collect();
    assert_eq!(renames.len(), 3, "{site}: three files replaced by rename");
    let point_ref = calls
        .iter()
        .position(|c| {
            is_rename(c) && target(c).contains(&format!("{state}/points.git/refs/points/"))
        })
        .expect("the point's ref is renamed into place: the commit step");
    SiteCalls {
        journal,
        first_rename: renames[0],
        last_rename: renames[renames.len() - 1],
        point_ref,
    }
}

/// A group commit (`apply` over several sites) keeps the order a single
/// site's fsyncs give, with whole-file-system syncs (or an fsync pass)
/// between its phases: the journal is durable before any file of its
/// site is renamed, the renames before the point's ref, and the staged
/// files are not fsynced one by one. The fsync pass mode fsyncs each
/// staged file before its rename and each directory after.
#[test]
fn a_group_commit_syncs_between_its_phases() {
    need_strace();
    let trace = "fsync,fdatasync,syncfs,rename,renameat,renameat2";
    for mode in ["syncfs", "fsync"] {
        let dir = group_fleet();
        let d = dir.path();
        let calls = traced(
            d,
            &["apply", "--jobs", "2"],
            trace,
            &[("SITEKEEPER_GROUP_SYNC", mode)],
        );
        let is_fsync = |c: &Call| c.name == "fsync" || c.name == "fdatasync";
        let syncfs_between =
            |a: usize, b: usize| calls[a + 1..b].iter().any(|c| c.name == "syncfs");
        let fsynced_between = |path: &str, a: usize, b: usize| {
            calls[a + 1..b]
                .iter()
                .any(|c| is_fsync(c) && fd_paths(&c.args).first().is_some_and(|p| p == path))
        };
        let state = std::fs::canonicalize(d.join("state")).unwrap();
        let fsyncs = calls.iter().filter(|c| is_fsync(c)).count();
        let syncfs = calls.iter().filter(|c| c.name == "syncfs").count();
        eprintln!(
            "group commit ({mode}) over {GROUP} sites of 3 files: {fsyncs} fsync, {syncfs} syncfs"
        );
        for i in 1..=GROUP {
            let site = std::fs::canonicalize(d.join(format!("site{i}"))).unwrap();
            let site = site.to_str().unwrap();
            let st = format!("{}/s{i}", state.display());
            let c = site_calls(&calls, site, &st);
            assert!(c.journal < c.first_rename && c.last_rename < c.point_ref);
            match mode {
                "syncfs" => {
                    assert!(
                        syncfs_between(c.journal, c.first_rename),
                        "s{i}: the journal is made durable before the first rename"
                    );
                    assert!(
                        syncfs_between(c.last_rename, c.point_ref),
                        "s{i}: the renames are made durable before the commit step"
                    );
                    assert!(
                        syncfs_between(c.point_ref, calls.len()),
                        "s{i}: the commit step is made durable"
                    );
                }
                _ => {
                    let journal_dir = format!("{st}/journal");
                    assert!(
                        fsynced_between(&journal_dir, c.journal, c.first_rename),
                        "s{i}: the journal's directory is fsynced before the first rename"
                    );
                    assert!(
                        fsynced_between(site, c.last_rename, c.point_ref),
                        "s{i}: the site's directory is fsynced before the commit step"
                    );
                    assert!(
                        fsynced_between(
                            &format!("{st}/points.git/refs/points"),
                            c.point_ref,
                            calls.len()
                        ),
                        "s{i}: the commit step is fsynced"
                    );
                    assert!(
                        fsynced_between(&format!("{site}/.sitekeeper-stage/0"), 0, c.first_rename),
                        "s{i}: a staged file is fsynced before the renames"
                    );
                }
            }
        }
        if mode == "syncfs" {
            assert_eq!(
                syncfs, 6,
                "one syncfs per phase: the sites and the state share a file system"
            );
            // No site's staged files, journal, pack, ref or ledger are
            // fsynced one by one; what is left is the parent of the one
            // directory (`lib/`) each site's upgrade creates, which
            // creating a directory fsyncs at once.
            assert!(
                !calls.iter().any(|c| is_fsync(c)
                    && fd_paths(&c.args)
                        .first()
                        .is_some_and(|p| p.contains(".sitekeeper-stage"))),
                "staged files are covered by syncfs"
            );
            assert!(fsyncs <= GROUP, "{fsyncs} fsyncs for {GROUP} sites");
        }
        for i in 1..=GROUP {
            assert!(
                d.join(format!("site{i}/lib/more.php")).exists(),
                "site{i} upgraded"
            );
        }
    }
}
