//! The site index (`index.bin`): `apply` and `rollback` record what they
//! wrote, so the next command reads no content and walks no point's trees,
//! and it agrees with a scan from nothing; a damaged index is only a miss.

use std::path::Path;

use sitekeeper::inventory::PointFiles;
use sitekeeper::load::{Fleet, LoadOptions, load};
use sitekeeper::observe::SiteContext;

use crate::support::{fleet_with, run_fleet as run, stderr, write_tree};

/// Files 1.0.1 changes besides `index.php`: enough that the change's
/// staging takes longer than a clock tick, so the files it staged first
/// are older than its journal, as they are on any real change.
const CHANGED: usize = 40;

fn setup() -> tempfile::TempDir {
    let dir = fleet_with(&[(
        "sites/s.yaml",
        "site: s\nroot: ../site\nproduct: acme\nchannel: stable\nopt_in: {upgrades: patch}\n",
    )]);
    let old: Vec<(String, String)> = (0..CHANGED)
        .map(|i| (format!("lib/f{i}.php"), format!("<?php // {i} v1.0.0\n")))
        .collect();
    let new: Vec<(String, String)> = (0..CHANGED)
        .map(|i| (format!("lib/f{i}.php"), format!("<?php // {i} v1.0.1\n")))
        .collect();
    let in_release = |v: &str, files: &[(String, String)]| -> Vec<(String, String)> {
        files
            .iter()
            .map(|(p, c)| (format!("releases/{v}/{p}"), c.clone()))
            .collect()
    };
    let mut catalog = in_release("1.0.0", &old);
    catalog.extend(in_release("1.0.1", &new));
    catalog.push((
        "releases/1.0.1.yaml".into(),
        "version: 1.0.1\nchannels: [stable]\nreleased: 2026-02-01T00:00:00Z\npayload:\n  tree: releases/1.0.1/\n".into(),
    ));
    catalog.push((
        "releases/1.0.1/index.php".into(),
        "<?php echo 'v1.0.1';\n".into(),
    ));
    let refs: Vec<(&str, &str)> = catalog
        .iter()
        .map(|(p, c)| (p.as_str(), c.as_str()))
        .collect();
    write_tree(&dir.path().join("catalog"), &refs);
    let mut site: Vec<(&str, &str)> = old.iter().map(|(p, c)| (p.as_str(), c.as_str())).collect();
    site.push(("index.php", "<?php echo 'hi';\n"));
    site.push(("uploads/cat.jpg", "\u{1}jpeg"));
    write_tree(&dir.path().join("site"), &site);
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

    // An upgrade writes 41 files; the index learns them. A file staged in
    // the same clock tick as the journal is not vouched for (it cannot be
    // told from a later write), so a few may be read again, never most.
    let written = CHANGED + 1;
    let out = run(d, &["apply"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let fine = fine_ctime(d);
    let expected = from_nothing(d);
    let (hashed, mapped, digest, entries) = gather(d);
    assert!(mapped, "the new point's list was not recorded");
    assert_eq!(
        (digest, entries),
        expected,
        "the index disagrees with a scan"
    );
    if fine {
        assert!(
            hashed < written / 4,
            "{hashed} of the {written} files the change wrote were read again"
        );
    } else {
        assert!(hashed <= written);
    }

    // A rollback puts the old contents back; their hashes are known too.
    let out = run(d, &["rollback", "s"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let expected = from_nothing(d);
    let (hashed, mapped, digest, entries) = gather(d);
    assert!(mapped, "the rollback point's list was not recorded");
    assert_eq!(
        (digest, entries),
        expected,
        "the index disagrees with a scan"
    );
    if fine {
        assert!(
            hashed < written / 4,
            "{hashed} of the {written} restored files were read again"
        );
    } else {
        assert!(hashed <= written);
    }
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
        assert_eq!(hashed, CHANGED + 2, "a damaged index vouched for files");
        assert_eq!((d2, e2), (digest.clone(), entries.clone()));
    }
    // The two caches the index replaced go once an index is written.
    std::fs::write(d.join("state/s/statcache.bin"), b"old").unwrap();
    std::fs::write(d.join("state/s/index.bin"), b"x").unwrap();
    gather(d);
    assert!(!d.join("state/s/statcache.bin").exists());
}
