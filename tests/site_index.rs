//! The site index (`index.bin`): `apply` and `rollback` record what they
//! wrote, so the next command reads no content and walks no point's trees,
//! and it agrees with a scan from nothing; a damaged index is only a miss.

use std::path::Path;

use sitekeeper::inventory::PointFiles;
use sitekeeper::load::{Fleet, LoadOptions, load};
use sitekeeper::observe::SiteContext;

use crate::support::{fleet_with, run_fleet as run, stderr, write_tree};

fn setup() -> tempfile::TempDir {
    let dir = fleet_with(&[(
        "sites/s.yaml",
        "site: s\nroot: ../site\nproduct: acme\nchannel: stable\nopt_in: {upgrades: patch}\n",
    )]);
    write_tree(
        &dir.path().join("catalog"),
        &[
            (
                "releases/1.0.1.yaml",
                "version: 1.0.1\nchannels: [stable]\nreleased: 2026-02-01T00:00:00Z\npayload:\n  tree: releases/1.0.1/\n",
            ),
            ("releases/1.0.1/index.php", "<?php echo 'v1.0.1';\n"),
            ("releases/1.0.1/lib/util.php", "<?php function util() {}\n"),
        ],
    );
    write_tree(
        &dir.path().join("site"),
        &[
            ("index.php", "<?php echo 'hi';\n"),
            ("uploads/cat.jpg", "\u{1}jpeg"),
        ],
    );
    // Files younger than the racy window are hashed again; let them age.
    std::thread::sleep(std::time::Duration::from_millis(2_100));
    let out = run(dir.path(), &["adopt", "s", "--version", "1.0.0"]);
    assert!(out.status.success(), "{}", stderr(&out));
    dir
}

fn fleet(dir: &Path) -> Fleet {
    let options = LoadOptions {
        fleet: dir.join("fleet").display().to_string(),
        state_dir: Some(dir.join("state")),
        git: Default::default(),
    };
    let (fleet, diags) = load(&options).unwrap();
    assert!(diags.is_empty(), "{diags:?}");
    fleet
}

/// Gathers the site: (files hashed, whether the point's list was read in
/// place from the index, the plan's digest, the inventory as a list).
fn gather(dir: &Path) -> (usize, bool, String, Vec<(String, String)>) {
    let fleet = fleet(dir);
    let site = fleet.site("s").unwrap();
    let ctx = SiteContext::gather(&fleet, site, &dir.join("state"), None).unwrap();
    let mapped = matches!(
        ctx.installed.as_ref().map(|i| &i.snapshot),
        Some(PointFiles::Mapped(_))
    );
    let now = "2026-11-20T10:00:00Z".parse().unwrap();
    let digest = ctx.plan(now, None).plan_digest;
    let entries = ctx
        .inventory
        .entries
        .iter()
        .map(|(p, e)| (p.clone(), e.hash().to_string()))
        .collect();
    (ctx.inventory.stats.hashed, mapped, digest, entries)
}

/// What a scan from nothing says: the index removed first.
fn from_nothing(dir: &Path) -> (String, Vec<(String, String)>) {
    let index = dir.join("state/s/index.bin");
    let saved = std::fs::read(&index).unwrap();
    std::fs::remove_file(&index).unwrap();
    let (_, mapped, digest, entries) = gather(dir);
    assert!(!mapped, "no index, yet the point's list was mapped");
    std::fs::write(&index, saved).unwrap();
    (digest, entries)
}

fn fine_ctime(dir: &Path) -> bool {
    sitekeeper::confined::Root::open(&dir.join("site"))
        .unwrap()
        .fine_ctime()
}

#[test]
fn apply_and_rollback_record_what_they_wrote() {
    let dir = setup();
    let d = dir.path();
    // The first plan after adoption walks the point once and writes the
    // index; the next reads both sides from it.
    let (_, mapped, _, _) = gather(d);
    assert!(!mapped, "no index yet");
    assert!(d.join("state/s/index.bin").exists());
    let (hashed, mapped, _, _) = gather(d);
    assert_eq!(hashed, 0);
    assert!(mapped, "the point's list was not read from the index");

    // An upgrade writes two files; the index learns them.
    let out = run(d, &["apply"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let fine = fine_ctime(d);
    let expected = (from_nothing(d), if fine { 0 } else { 2 });
    let (hashed, mapped, digest, entries) = gather(d);
    assert!(mapped, "the new point's list was not recorded");
    assert_eq!(
        (digest, entries),
        expected.0,
        "the index disagrees with a scan"
    );
    assert_eq!(
        hashed, expected.1,
        "files the change wrote were read again (fine ctime: {fine})"
    );

    // A rollback puts the old contents back; their hashes are known too.
    let out = run(d, &["rollback", "s"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let expected = (from_nothing(d), if fine { 0 } else { 2 });
    let (hashed, mapped, digest, entries) = gather(d);
    assert!(mapped, "the rollback point's list was not recorded");
    assert_eq!(
        (digest, entries),
        expected.0,
        "the index disagrees with a scan"
    );
    assert_eq!(hashed, expected.1, "restored files were read again");
}

#[test]
fn a_damaged_or_foreign_index_is_a_miss_not_an_error() {
    let dir = setup();
    let d = dir.path();
    let (_, _, digest, entries) = gather(d);
    let index = d.join("state/s/index.bin");
    let good = std::fs::read(&index).unwrap();
    let mut flipped = good.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x40;
    for bad in [
        flipped,
        good[..good.len() / 3].to_vec(),
        b"not an index at all".to_vec(),
        Vec::new(),
    ] {
        std::fs::write(&index, &bad).unwrap();
        let (hashed, mapped, d2, e2) = gather(d);
        assert!(!mapped, "a damaged index's point list was used");
        assert_eq!(hashed, 2, "a damaged index vouched for files");
        assert_eq!((d2, e2), (digest.clone(), entries.clone()));
    }
    // The two caches the index replaced go once an index is written.
    std::fs::write(d.join("state/s/statcache.bin"), b"old").unwrap();
    std::fs::write(d.join("state/s/index.bin"), b"x").unwrap();
    gather(d);
    assert!(!d.join("state/s/statcache.bin").exists());
}
