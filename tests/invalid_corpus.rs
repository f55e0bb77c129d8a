//! The invalid-input corpus: each directory under `tests/fixtures/invalid/`
//! is a fleet that `validate` must refuse with exit 2 and exactly the
//! diagnostics in its `expected` file (file:line:col, message, hint).
//!
//! A case is `<case>/fleet/` (run with `--fleet .` from inside it), an
//! optional `<case>/catalog/`, and `<case>/expected`. Directories whose names
//! start with `_` are shared material (such as `_catalog/`), not cases.

use std::path::Path;

use crate::support::{repo_root, run_in, stderr};

#[test]
fn every_invalid_case_exits_2_with_its_exact_diagnostics() {
    let corpus = repo_root().join("tests/fixtures/invalid");
    let mut cases: Vec<_> = std::fs::read_dir(&corpus)
        .expect("corpus dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            p.is_dir()
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('_'))
        })
        .collect();
    cases.sort();
    assert!(
        cases.len() >= 25,
        "the corpus should hold at least 25 cases, found {}",
        cases.len()
    );
    let mut failures = Vec::new();
    for case in &cases {
        if let Err(why) = check_case(case) {
            failures.push(format!(
                "{}: {why}",
                case.file_name().unwrap_or_default().to_string_lossy()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}

fn check_case(case: &Path) -> Result<(), String> {
    let expected = std::fs::read_to_string(case.join("expected"))
        .map_err(|e| format!("no expected file: {e}"))?;
    let out = run_in(&case.join("fleet"), &["validate", "--fleet", "."]);
    let code = out.status.code();
    let got = stderr(&out);
    if code != Some(2) {
        return Err(format!("exit code {code:?}, expected 2; stderr:\n{got}"));
    }
    if got.trim_end() != expected.trim_end() {
        return Err(format!(
            "stderr differs.\n--- expected\n{}\n--- got\n{}",
            expected.trim_end(),
            got.trim_end()
        ));
    }
    Ok(())
}
