//! A no-op plan of an adopted 100,000-file site reads no file contents:
//! the stat cache vouches for every file. Proven with the inventory's
//! read counter, not a timer.

use std::path::Path;

use sitekeeper::apply::adopt::adopt;
use sitekeeper::load::{LoadOptions, load};
use sitekeeper::observe::SiteContext;

use crate::support::{fleet_with, write_tree};

const FILES: usize = 100_000;

fn site_tree(root: &Path) {
    // 100 directories of 1,000 small files: uploads, caches, vendor code.
    for d in 0..FILES / 1_000 {
        let dir = root.join(format!("vendor/pkg{d}/src"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..1_000 {
            std::fs::write(dir.join(format!("f{f}.php")), format!("<?php // {d}/{f}\n")).unwrap();
        }
    }
    write_tree(root, &[("index.php", "<?php echo 'v1';\n")]);
}

#[test]
fn a_noop_plan_of_a_100k_file_site_reads_no_file_contents() {
    let tmp = fleet_with(&[(
        "sites/big.yaml",
        "site: big\nroot: ../site\nproduct: acme\nchannel: stable\n",
    )]);
    site_tree(&tmp.path().join("site"));
    // Files written within the file system's timestamp granularity of a
    // scan are hashed again next time (git's "racily clean"); let them age.
    std::thread::sleep(std::time::Duration::from_millis(2_100));

    let options = LoadOptions {
        fleet: tmp.path().join("fleet").display().to_string(),
        state_dir: Some(tmp.path().join("state")),
        git: Default::default(),
    };
    let (fleet, diags) = load(&options).unwrap();
    assert!(diags.is_empty(), "{diags:?}");
    let site = fleet.site("big").unwrap();
    let state = tmp.path().join("state");
    let now: jiff::Timestamp = "2026-11-20T10:00:00Z".parse().unwrap();

    let first = SiteContext::gather(&fleet, site, &state, None).unwrap();
    assert_eq!(first.inventory.stats.files, FILES + 1);
    assert_eq!(
        first.inventory.stats.hashed,
        FILES + 1,
        "a first scan reads everything"
    );
    adopt(&first, &"1.0.0".parse().unwrap(), now, "test").unwrap();
    drop(first);

    let second = SiteContext::gather(&fleet, site, &state, None).unwrap();
    let stats = &second.inventory.stats;
    assert_eq!(stats.files, FILES + 1);
    assert_eq!(stats.hashed, 0, "no file content read");
    assert_eq!(stats.bytes_read, 0);
    assert_eq!(stats.from_cache, FILES + 1);
    let plan = second.plan(now, None);
    assert!(!plan.has_changes(), "{plan:#?}");
    assert!(plan.drift.is_empty());

    // A scan that changed nothing writes nothing: the cache file is the
    // same file, untouched.
    let cache = state.join("big/index.bin");
    let stamp = |p: &Path| {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(p).unwrap();
        (m.ino(), m.mtime(), m.mtime_nsec())
    };
    let before = stamp(&cache);
    drop(SiteContext::gather(&fleet, site, &state, None).unwrap());
    assert_eq!(stamp(&cache), before, "a no-op scan rewrote the site index");

    // One changed file is read again, and only that one.
    std::fs::write(
        tmp.path().join("site/vendor/pkg7/src/f3.php"),
        "<?php // changed, longer\n",
    )
    .unwrap();
    let third = SiteContext::gather(&fleet, site, &state, None).unwrap();
    assert_eq!(third.inventory.stats.hashed, 1);
    assert_ne!(
        stamp(&cache),
        before,
        "a scan that hashed a file kept the old index"
    );
}
