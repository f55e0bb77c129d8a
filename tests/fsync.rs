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

#[test]
fn every_rename_is_fsynced_before_and_its_directory_after_and_the_ledger_is_last() {
    // No strace is a failure, not a skip: a test that passes without
    // looking would hide a broken fsync order.
    let version = std::process::Command::new("strace").arg("-V").output();
    assert!(
        version.as_ref().is_ok_and(|v| v.status.success()),
        "this test needs strace on the PATH ({version:?}); install it \
         (`apt-get install strace`, as .ci/run does)"
    );
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
    // With several threads strace splits a call in two lines
    // ("<unfinished ...>" and "<... name resumed>"); join them per thread.
    let mut pending: std::collections::HashMap<String, String> = Default::default();
    let mut calls: Vec<Call> = Vec::new();
    for line in std::fs::read_to_string(&trace).unwrap().lines() {
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
