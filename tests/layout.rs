//! The `symlink` layout (SPEC §6.3): the site root is a link to a release
//! directory, a change builds a new directory beside it and swaps the link
//! by one rename, so a reader never sees a mixed tree; old release
//! directories go with the points that named them.

use std::io::Read;
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::support::{run_fleet as run, stderr, write_tree};

/// Files of every release, each holding the release's version.
const FILES: usize = 12;

/// The files of release `v`: `VERSION` and `FILES` more in two
/// directories, every one saying `v`.
fn release_files(v: &str) -> Vec<(String, String)> {
    let mut out = vec![("VERSION".to_owned(), format!("{v}\n"))];
    for i in 0..FILES {
        let dir = if i % 2 == 0 { "app" } else { "lib/deep" };
        out.push((format!("{dir}/f{i}.php"), format!("<?php // {v}\n")));
    }
    out
}

/// A catalog of releases 1.0.0 to 1.0.`last`, a site pinned with `version`
/// whose root `site` links to `releases/initial` (1.0.0), adopted.
fn setup(last: u32, keep: u32) -> tempfile::TempDir {
    let dir = crate::support::fast_tempdir();
    let cat = dir.path().join("catalog");
    write_tree(
        &cat,
        &[("catalog.yaml", "product: acme\nchannels:\n  stable: {}\n")],
    );
    for n in 0..=last {
        let v = format!("1.0.{n}");
        write_tree(
            &cat,
            &[(
                &format!("releases/{v}.yaml"),
                &format!(
                    "version: {v}\nchannels: [stable]\nreleased: 2026-01-01T00:00:00Z\npayload:\n  tree: releases/{v}/\n"
                ),
            )],
        );
        for (path, text) in release_files(&v) {
            write_tree(&cat.join(format!("releases/{v}")), &[(&path, &text)]);
        }
    }
    write_tree(
        &dir.path().join("fleet"),
        &[
            ("fleet.yaml", "catalogs:\n  acme:\n    source: ../catalog\n"),
            (
                "policies/short.yaml",
                &format!("policy: short\nextends: base\nkeep_rollback_points: {keep}\n"),
            ),
        ],
    );
    pin(dir.path(), "1.0.0");
    for (path, text) in release_files("1.0.0") {
        write_tree(&dir.path().join("releases/initial"), &[(&path, &text)]);
    }
    write_tree(
        &dir.path().join("releases/initial"),
        &[("uploads/cat.jpg", "jpeg")],
    );
    std::os::unix::fs::symlink("releases/initial", dir.path().join("site")).unwrap();
    let out = run(dir.path(), &["adopt", "s", "--version", "1.0.0"]);
    assert!(out.status.success(), "{}", stderr(&out));
    dir
}

/// Pins the site to `version`: the next apply upgrades to it.
fn pin(dir: &Path, version: &str) {
    write_tree(
        &dir.join("fleet"),
        &[(
            "sites/s.yaml",
            &format!(
                "site: s\nroot: ../site\nproduct: acme\nchannel: stable\nversion: \"={version}\"\npolicy: short\nlayout: symlink\nopt_in: {{upgrades: patch}}\n"
            ),
        )],
    );
}

/// Reads every release file the way a web server serves one request: the
/// root resolved once, every file opened relative to it. Returns the
/// versions seen, or the error.
fn read_once(site: &Path) -> std::io::Result<Vec<String>> {
    let root = std::fs::File::open(site)?;
    let mut seen = Vec::new();
    for (path, _) in release_files("x") {
        let fd = rustix::fs::openat(
            root.as_fd(),
            path.as_str(),
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )?;
        let mut text = String::new();
        std::fs::File::from(fd).read_to_string(&mut text)?;
        let version = text
            .trim()
            .trim_start_matches("<?php // ")
            .trim()
            .to_owned();
        seen.push(version);
    }
    Ok(seen)
}

fn release_dirs(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join("releases"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_reader_never_sees_a_mixed_tree_during_100_upgrades() {
    let dir = setup(100, 3);
    let site = dir.path().join("site");
    let stop = AtomicBool::new(false);
    let reads = AtomicU64::new(0);
    let failures: std::sync::Mutex<Vec<String>> = Default::default();
    std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                match read_once(&site) {
                    Ok(seen) => {
                        if seen.iter().any(|v| *v != seen[0]) {
                            failures.lock().unwrap().push(format!("mixed: {seen:?}"));
                        }
                    }
                    Err(e) => failures.lock().unwrap().push(format!("read failed: {e}")),
                }
                reads.fetch_add(1, Ordering::Relaxed);
            }
        });
        for n in 1..=100 {
            let v = format!("1.0.{n}");
            pin(dir.path(), &v);
            let out = run(dir.path(), &["apply", "s"]);
            assert_eq!(out.status.code(), Some(0), "{v}: {}", stderr(&out));
            assert_eq!(
                std::fs::read_to_string(site.join("VERSION")).unwrap(),
                format!("{v}\n")
            );
        }
        stop.store(true, Ordering::Relaxed);
    });
    let failures = failures.into_inner().unwrap();
    let reads = reads.into_inner();
    assert!(
        failures.is_empty(),
        "{} of {reads} reads: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(reads >= 100, "the reader ran alongside: {reads} reads");
    eprintln!("symlink layout: 100 upgrades, {reads} consistent reads, 0 mixed");

    // Files in no release were carried over; retention pruned the old
    // release directories: the operator's first one stays, and ours are
    // the ones the 3 kept points name.
    assert_eq!(
        std::fs::read(site.join("uploads/cat.jpg")).unwrap(),
        b"jpeg"
    );
    let dirs = release_dirs(dir.path());
    assert!(dirs.contains(&"initial".to_owned()), "{dirs:?}");
    assert_eq!(dirs.len(), 4, "initial + one per kept point: {dirs:?}");
    let target = std::fs::read_link(&site).unwrap();
    assert!(
        target.starts_with("releases") && target.to_string_lossy().contains("s@1.0.100@"),
        "the link stays relative and names the release: {}",
        target.display()
    );

    // A rollback is a change like any other: a new directory, one swap.
    let out = run(dir.path(), &["rollback", "s"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(site.join("VERSION")).unwrap(),
        "1.0.99\n"
    );
    assert_ne!(std::fs::read_link(&site).unwrap(), target);
    assert_eq!(release_dirs(dir.path()).len(), 4);
}

#[test]
fn a_symlink_layout_whose_root_is_a_directory_is_refused_and_unchanged() {
    let dir = setup(1, 3);
    let site = dir.path().join("site");
    // Replace the link by the directory itself.
    std::fs::remove_file(&site).unwrap();
    std::fs::rename(dir.path().join("releases/initial"), &site).unwrap();
    pin(dir.path(), "1.0.1");
    let before = crate::support::read_tree(&site);
    let out = run(dir.path(), &["apply", "s"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("is not a symbolic link") && stderr(&out).contains("hint:"),
        "{}",
        stderr(&out)
    );
    assert_eq!(crate::support::read_tree(&site), before, "nothing changed");
    let ledger = std::fs::read_to_string(dir.path().join("state/s/ledger.jsonl")).unwrap();
    assert_eq!(ledger.lines().count(), 1, "only the adoption: {ledger}");
}

#[test]
fn a_failing_health_check_swaps_back_to_a_tree_equal_to_before() {
    let dir = setup(1, 5);
    let site = dir.path().join("site");
    pin(dir.path(), "1.0.1");
    let yaml = dir.path().join("fleet/sites/s.yaml");
    let mut text = std::fs::read_to_string(&yaml).unwrap();
    text.push_str("health: {command: [\"grep\", \"-q\", \"1.0.0\", \"VERSION\"], timeout: 5s}\n");
    std::fs::write(&yaml, text).unwrap();
    let before = crate::support::read_tree(&site);
    let out = run(dir.path(), &["apply", "s"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        crate::support::read_tree(&site),
        before,
        "byte-identical to before"
    );
    let out = run(dir.path(), &["plan", "s", "--format", "json"]);
    assert!(crate::support::stdout(&out).contains("quarantined"));
}
