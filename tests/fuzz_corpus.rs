//! Replays the committed fuzz corpora (`fuzz/corpus/<target>/`) and every
//! crash found so far (`fuzz/regressions/<target>/`) through the harnesses
//! the cargo-fuzz targets run (`sitekeeper::fuzzing`), so that the targets
//! keep building and every fixed crash stays fixed, without nightly.
//! `sitekeeper::fuzzing` exists only with the `fuzzing` feature, which the
//! package's dev-dependency on itself turns on for `cargo test`.

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

/// The `fix_ops` crash in `fuzz/regressions/fix_ops/nul-in-with`: a `with`
/// holding a NUL made the fixed file binary, so the next plan held the fix
/// it had just applied. The loader now refuses such a fix, for `replace`
/// and `regex` alike.
#[test]
fn a_nul_in_with_is_refused_by_the_loader() {
    for op in [
        r#"replace: {files: ["*.php"], find: "a", with: "b\0c"}"#,
        r#"regex: {files: ["*.php"], pattern: "a", with: "b\0c"}"#,
    ] {
        let yaml = format!(
            "id: 0001-x\ntitle: t\nreason: r\nseverity: critical\napplies_to: \">=1.0.0\"\nops:\n  - {op}\n"
        );
        let (fix, _) =
            sitekeeper::load::yaml::parse::<sitekeeper::model::Fix>("f.yaml", yaml.as_bytes())
                .expect("the YAML itself is valid");
        let problems = fix.problems();
        assert!(
            problems
                .iter()
                .any(|p| p.message.contains("NUL") && p.path.ends_with(".with")),
            "{op}: {problems:?}"
        );
    }
}
