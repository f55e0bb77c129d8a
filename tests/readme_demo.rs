//! The README's demo ("Try it") runs as written: the block after the
//! `<!-- demo: … -->` marker is run unchanged with `sh -e`, from the
//! repository root, with the freshly built `sitekeeper` first on `PATH`, and
//! does what its comments promise (intranet adopted at 4.2.0, upgraded to
//! 4.2.16, recorded, rolled back to 4.2.0).

use crate::support::{bin, repo_root, sitekeeper, stderr, stdout};
use std::process::Command;

const MARKER: &str = "<!-- demo: tested by tests/readme_demo.rs";

/// The lines of the one fenced `sh` block right after the marker.
fn demo_block(readme: &str) -> String {
    assert_eq!(
        readme.matches(MARKER).count(),
        1,
        "README.md must have exactly one demo marker `{MARKER} …`"
    );
    let after = &readme[readme.find(MARKER).unwrap()..];
    let mut lines = after.lines().skip(1).skip_while(|l| l.trim().is_empty());
    assert_eq!(
        lines.next(),
        Some("```sh"),
        "the demo marker must be followed by a ```sh block"
    );
    let mut block = String::new();
    for line in lines.by_ref() {
        if line == "```" {
            return block;
        }
        block.push_str(line);
        block.push('\n');
    }
    panic!("the README's demo block is not closed");
}

/// Finds each needle in `text` after the previous one, so the test checks
/// that things happened in the order the demo says.
fn assert_in_order(text: &str, needles: &[&str]) {
    let mut at = 0;
    for needle in needles {
        match text[at..].find(needle) {
            Some(i) => at += i + needle.len(),
            None => panic!("{needle:?} missing (or out of order) in the demo's output:\n{text}"),
        }
    }
}

#[test]
fn the_readme_demo_runs_and_upgrades_then_rolls_back_intranet() {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let block = demo_block(&readme);
    // The demo runs the binary the README puts on PATH, never a build.
    assert!(!block.contains("cargo"), "{block}");
    for step in [
        "adopt intranet",
        "apply intranet",
        "history intranet",
        "rollback intranet",
    ] {
        assert!(
            block.contains(&format!("sitekeeper {step}")),
            "{step}: {block}"
        );
    }

    let dir = tempfile::tempdir().unwrap();
    let path_dir = dir.path().join("bin");
    let tmp = dir.path().join("tmp");
    std::fs::create_dir_all(&path_dir).unwrap();
    std::fs::create_dir_all(&tmp).unwrap();
    std::os::unix::fs::symlink(bin(), path_dir.join("sitekeeper")).unwrap();
    let path = format!(
        "{}:{}",
        path_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );

    let mut sh = Command::new("sh");
    sh.arg("-e")
        .arg("-c")
        .arg(&block)
        .current_dir(repo_root())
        .env("PATH", &path)
        .env("TMPDIR", &tmp)
        .env("NO_COLOR", "1");
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("SITEKEEPER_") {
            sh.env_remove(key);
        }
    }
    let out = sh.output().unwrap();
    let text = stdout(&out);
    assert!(
        out.status.success(),
        "the README's demo failed ({}):\n{text}\n{}",
        out.status,
        stderr(&out)
    );
    assert_in_order(
        &text,
        &[
            "valid: 6 sites",
            "6 sites change, 0 unchanged, ",
            " held, 0 failed\n",
            "adopted intranet at 4.2.0",
            "intranet  4.2.0 → 4.2.16",
            "intranet: 4.2.16,",
            "\n4.2.16\n",
            "point 2 ",
            "point 1 ",
            "intranet  4.2.16  point 2  fixes [0004-disable-web-installer]  drift 0  pending 0",
            "intranet: 4.2.0,",
            "\n4.2.0\n",
            "intranet  4.2.0  point 3",
        ],
    );

    // The demo worked on its own copy, in the temp dir it was given.
    let copies: Vec<_> = std::fs::read_dir(&tmp).unwrap().collect();
    assert_eq!(copies.len(), 1, "{copies:?}");
    let demo = copies.into_iter().next().unwrap().unwrap().path();
    let version = |root: &std::path::Path| {
        std::fs::read_to_string(root.join("sites/intranet/VERSION")).unwrap()
    };
    assert_eq!(version(&demo), "4.2.0\n");
    assert_eq!(version(&repo_root().join("examples")), "4.2.0\n");

    // What history keeps: adopt at 4.2.0, the upgrade to 4.2.16 whose health
    // check passed, and the rollback to 4.2.0, newest first.
    let out = sitekeeper(&demo.join("state"))
        .current_dir(demo.join("fleet"))
        .args(["history", "intranet", "--format", "json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let history: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let points: Vec<_> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["point"].as_u64().unwrap(),
                p["kind"].as_str().unwrap().to_owned(),
                p["version"].as_str().unwrap().to_owned(),
                p["health"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected: Vec<(u64, String, String, String)> = [
        // An operator's rollback is checked too, and the check passes.
        (3, "rollback", "4.2.0", "passed"),
        (2, "apply", "4.2.16", "passed"),
        (1, "adopt", "4.2.0", "skipped"),
    ]
    .iter()
    .map(|&(n, k, v, h)| (n, k.to_owned(), v.to_owned(), h.to_owned()))
    .collect();
    assert_eq!(points, expected, "{history:#}");
    assert_eq!(
        history[1]["fixes"],
        serde_json::json!(["0004-disable-web-installer"])
    );
}
