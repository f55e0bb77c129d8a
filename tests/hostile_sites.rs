//! Site trees that try to lead sitekeeper out of the root: links to files
//! and directories outside, a FIFO, a socket, and a hard link to a file
//! outside. Adopting and planning must finish, read nothing outside, and
//! change nothing outside.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::{sha256, write_tree};

const SECRET: &str = "TOPSECRET-outside-the-root";

/// Runs `sitekeeper ARGS` with a deadline, so a hang fails the test instead of the suite.
fn run_with_deadline(dir: &Path, state: &Path, args: &[&str]) -> std::process::Output {
    let mut child = crate::support::sitekeeper(state)
        .current_dir(dir)
        .env("SITEKEEPER_NOW", "2026-11-20T10:00:00Z")
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("sitekeeper {args:?} hung (a FIFO was opened?)");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn tree_hashes(root: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(root).unwrap() {
        let p = e.unwrap().path();
        out.push((p.display().to_string(), sha256(&std::fs::read(&p).unwrap())));
    }
    out.sort();
    out
}

#[test]
fn links_out_fifos_sockets_and_hard_links_are_never_followed_or_written() {
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside");
    write_tree(
        &outside,
        &[
            ("secret.php", &format!("<?php // {SECRET}\n")),
            ("hard.php", "<?php echo 'shared inode';\n"),
        ],
    );
    let canary = tree_hashes(&outside);

    let site = tmp.path().join("site");
    write_tree(&site, &[("index.php", "<?php echo 'v1';\n")]);
    std::os::unix::fs::symlink(outside.join("secret.php"), site.join("out_file.php")).unwrap();
    std::os::unix::fs::symlink("../outside", site.join("out_dir")).unwrap();
    std::fs::hard_link(outside.join("hard.php"), site.join("hard.php")).unwrap();
    crate::support::mkfifo(&site.join("pipe.php"));
    let _socket = std::os::unix::net::UnixListener::bind(site.join("sock.php")).unwrap();

    write_tree(
        &tmp.path().join("catalog"),
        &[
            ("catalog.yaml", "product: acme\nchannels:\n  stable: {}\n"),
            (
                "releases/1.0.0.yaml",
                "version: 1.0.0\nchannels: [stable]\nreleased: 2026-01-01T00:00:00Z\npayload:\n  tree: releases/1.0.0/\n",
            ),
            ("releases/1.0.0/index.php", "<?php echo 'v1';\n"),
            ("releases/1.0.0/hard.php", "<?php echo 'shared inode';\n"),
            (
                "fixes/0001-everything.yaml",
                "id: 0001-everything\ntitle: t\nreason: r\nseverity: critical\napplies_to: \">=1.0.0\"\nops:\n  - replace:\n      files: [\"**/*.php\"]\n      find: \"<?php\"\n      with: \"<?php /* patched */\"\n      expect: any\n",
            ),
            (
                "fixes/0002-through-link.yaml",
                "id: 0002-through-link\ntitle: t\nreason: r\nseverity: critical\napplies_to: \">=1.0.0\"\nops:\n  - write: {path: out_dir/new.php, content: \"<?php\\n\"}\n",
            ),
        ],
    );
    let fleet = tmp.path().join("fleet");
    write_tree(
        &fleet,
        &[
            ("fleet.yaml", "catalogs:\n  acme:\n    source: ../catalog\n"),
            (
                "sites/s.yaml",
                "site: s\nroot: ../site\nproduct: acme\nchannel: stable\n",
            ),
        ],
    );
    let state = tmp.path().join("state");

    let out = run_with_deadline(&fleet, &state, &["adopt", "s", "--version", "1.0.0"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut shown = String::new();
    for format in ["json", "markdown", "human"] {
        let out = run_with_deadline(&fleet, &state, &["plan", "--format", format, "-v"]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        shown.push_str(&String::from_utf8_lossy(&out.stdout));
    }
    assert!(
        !shown.contains(SECRET),
        "a plan showed content from outside the root:\n{shown}"
    );
    assert!(
        shown.contains("hard.php"),
        "the hard-linked file is an ordinary managed file:\n{shown}"
    );
    assert!(
        !shown.contains("out_file.php\n") || !shown.contains("modify out_file.php"),
        "a link is never edited:\n{shown}"
    );

    // Nothing outside changed, and nothing outside was copied into the state.
    assert_eq!(tree_hashes(&outside), canary);
    let objects = Command::new("git")
        .args([
            "--git-dir",
            state.join("s/points.git").to_str().unwrap(),
            "cat-file",
            "--batch-all-objects",
            "--batch",
        ])
        .output()
        .unwrap();
    assert!(objects.status.success());
    assert!(
        !String::from_utf8_lossy(&objects.stdout).contains(SECRET),
        "outside content reached the rollback points"
    );
    let ledger = std::fs::read_to_string(state.join("s/ledger.jsonl")).unwrap();
    assert!(!ledger.contains(SECRET));
}

#[test]
fn the_inventory_records_links_and_reports_special_files() {
    let tmp = tempfile::tempdir().unwrap();
    let site = tmp.path().join("site");
    write_tree(&site, &[("a/index.php", "x")]);
    std::os::unix::fs::symlink("/etc", site.join("etc")).unwrap();
    crate::support::mkfifo(&site.join("a/pipe"));
    let root = sitekeeper::confined::Root::open(&site).unwrap();
    let inv = sitekeeper::inventory::scan(&root, &[], &Default::default(), None).unwrap();
    assert_eq!(
        inv.entries.get("etc"),
        Some(&sitekeeper::inventory::Entry::Symlink {
            target: "/etc".into()
        })
    );
    assert!(
        !inv.entries.keys().any(|k| k.starts_with("etc/")),
        "a linked directory is not descended"
    );
    assert_eq!(inv.specials.len(), 1);
    assert_eq!(inv.specials[0].path, "a/pipe");
}

#[test]
fn a_write_through_a_linked_directory_is_held() {
    let tmp = tempfile::tempdir().unwrap();
    let site = tmp.path().join("site");
    write_tree(&site, &[("index.php", "<?php\n")]);
    std::fs::create_dir_all(tmp.path().join("outside")).unwrap();
    std::os::unix::fs::symlink("../outside", site.join("lib")).unwrap();
    write_tree(
        &tmp.path().join("catalog"),
        &[
            ("catalog.yaml", "product: acme\nchannels:\n  stable: {}\n"),
            (
                "releases/1.0.0.yaml",
                "version: 1.0.0\nchannels: [stable]\nreleased: 2026-01-01T00:00:00Z\npayload:\n  tree: releases/1.0.0/\n",
            ),
            ("releases/1.0.0/index.php", "<?php\n"),
            (
                "fixes/0001-add.yaml",
                "id: 0001-add\ntitle: Add a helper\nreason: r\nseverity: critical\napplies_to: \">=1.0.0\"\nops:\n  - add: {path: lib/helper.php, content: \"<?php\\n\"}\n",
            ),
        ],
    );
    let fleet = tmp.path().join("fleet");
    write_tree(
        &fleet,
        &[
            ("fleet.yaml", "catalogs:\n  acme:\n    source: ../catalog\n"),
            (
                "sites/s.yaml",
                "site: s\nroot: ../site\nproduct: acme\nchannel: stable\n",
            ),
        ],
    );
    let state = tmp.path().join("state");
    let out = run_with_deadline(&fleet, &state, &["plan", "--format", "json"]);
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let held = &plan["sites"][0]["held"];
    assert!(
        held.as_array()
            .unwrap()
            .iter()
            .any(|h| h["item"] == "fix 0001-add" && h["code"] == "fix_conflict"),
        "{held:#}"
    );
    assert_eq!(plan["sites"][0]["actions"].as_array().unwrap().len(), 0);
}
