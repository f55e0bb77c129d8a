//! Replays the committed fuzz corpora (`fuzz/corpus/<target>/`) and every
//! crash found so far (`fuzz/regressions/<target>/`) through the harnesses
//! the cargo-fuzz targets run (`sitekeeper::fuzzing`), so that the targets
//! keep building and every fixed crash stays fixed, without nightly.

use std::path::Path;

use sitekeeper::fuzzing;

/// Runs `harness` on every file under `fuzz/{corpus,regressions}/<target>`
/// and returns how many there were; a panic fails the test with the file named.
fn replay(target: &str, harness: fn(&[u8])) -> usize {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut count = 0;
    for set in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(set).join(target)) else {
            continue;
        };
        let mut paths: Vec<_> = entries.flatten().map(|e| e.path()).collect();
        paths.sort();
        for path in paths {
            let bytes = std::fs::read(&path).unwrap();
            let outcome = std::panic::catch_unwind(|| harness(&bytes));
            assert!(outcome.is_ok(), "{} fails its harness", path.display());
            count += 1;
        }
    }
    count
}

#[test]
fn yaml_corpus_replays() {
    assert!(replay("yaml", fuzzing::yaml) >= 7, "a seed per file kind");
}

#[test]
fn fix_ops_corpus_replays() {
    assert!(replay("fix_ops", fuzzing::fix_ops) > 0);
}

#[test]
fn archive_corpus_replays() {
    assert!(
        replay("archive", fuzzing::archive) >= 4,
        "a seed per archive type"
    );
}

#[test]
fn render_corpus_replays() {
    assert!(replay("render", fuzzing::render) > 0);
}
