//! CI's smoke run of the benchmark harness (`bench/run --smoke`), so that
//! it cannot rot: it must complete against this build and write its table
//! with every row. No timing is asserted; the figures belong to the full
//! run (README "Performance").

use std::process::Command;

use crate::support::repo_root;

#[test]
fn the_benchmark_harness_runs_at_smoke_size_and_writes_every_row() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let out = tmp.path().join("results.md");
    let run = Command::new(repo_root().join("bench/run"))
        .arg("--smoke")
        .arg("--out")
        .arg(&out)
        .arg("--workdir")
        .arg(tmp.path().join("work"))
        // This test's binary, so the smoke needs no release build.
        .env("SITEKEEPER", env!("CARGO_BIN_EXE_sitekeeper"))
        .output()
        .expect("run bench/run (needs python3, git, rsync and strace: .ci/run installs them)");
    assert!(
        run.status.success(),
        "bench/run --smoke failed:\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let table = std::fs::read_to_string(&out).expect("bench/run wrote its table");
    assert!(table.contains(" cores ("), "no core count in:\n{table}");
    for row in [
        "| W1 | no-op `plan`",
        "| W1 | `read` calls on site files during that plan",
        "| W2 | upgrade `apply`",
        "| W2 | the same / `rsync -a --delete` (no fsync)",
        "| W3 | one fix over",
        "| W4 | `rollback` of W2",
        "| W4 | the same / `rsync -a --delete` from a copy",
        "| W5 | peak RSS of W1 `plan`",
        "| W5 | peak RSS of W2 `apply`",
        "| W5 | idle `watch`",
        "| W5 | the same, RSS",
        "| W1 | 100 files |",
        "| W1 | 300 files |",
        "| W3 | 2 sites x 30 files |",
        "| W3 | 4 sites x 30 files |",
    ] {
        assert!(table.contains(row), "no row {row:?} in:\n{table}");
    }
    // Issue 22: the comparison with Ansible at tiny size when
    // `ansible-playbook` is there, and a note saying it was skipped when not.
    let ansible = Command::new("ansible-playbook")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if ansible {
        assert!(
            table.contains("| W3 | the same / Ansible `replace`"),
            "{table}"
        );
    } else {
        assert!(table.contains("W3 against Ansible was skipped"), "{table}");
    }
    // A plan of an unchanged, adopted site reads no site file: the stat
    // cache vouches for every one (strace counted the reads).
    assert!(
        table.contains("during that plan (strace;") && table.contains("| 0 | | | 0 | yes |"),
        "{table}"
    );
}
