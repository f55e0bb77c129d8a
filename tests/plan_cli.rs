//! `plan` on the command line: the README's main command on the bundled
//! examples (snapshots of the human and Markdown renderings), `--out` and
//! `--detailed-exitcode`.

use crate::support::{fleet_with, repo_root, sitekeeper, stderr, stdout};

fn plan(dir: &std::path::Path, state: &std::path::Path, args: &[&str]) -> std::process::Output {
    sitekeeper(state)
        .current_dir(dir)
        .env("SITEKEEPER_NOW", "2026-11-20T10:00:00Z")
        .arg("plan")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn the_example_fleet_plans_without_setup() {
    let state = tempfile::tempdir().unwrap();
    let out = plan(&repo_root(), state.path(), &["--fleet", "examples/fleet"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    insta::assert_snapshot!("plan_examples_human", stdout(&out));
    let out = plan(
        &repo_root(),
        state.path(),
        &["--fleet", "examples/fleet", "--format", "markdown"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let md = stdout(&out);
    assert!(md.len() < 65_536);
    assert!(
        md.contains("```diff\n--- a/themes/custom/search.php"),
        "the theme override gets the fix:\n{md}"
    );
    insta::assert_snapshot!("plan_examples_markdown", md);
}

#[test]
fn out_writes_the_json_plan_and_the_exit_code_says_whether_anything_changes() {
    let dir = fleet_with(&[(
        "sites/a.yaml",
        "site: a\nroot: ../site\nproduct: acme\nchannel: stable\n",
    )]);
    crate::support::write_tree(
        &dir.path().join("site"),
        &[("index.php", "<?php echo 'hi';\n")],
    );
    let state = dir.path().join("state");
    let fleet = dir.path().join("fleet");
    let file = dir.path().join("plan.json");
    let out = plan(
        &fleet,
        &state,
        &[
            "--format",
            "json",
            "--out",
            file.to_str().unwrap(),
            "--detailed-exitcode",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "no changes: {}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), stdout(&out));
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert!(json["plan_id"].as_str().unwrap().starts_with("sha256:"));
    assert_eq!(json["sites"][0]["held"][0]["code"], "not_adopted");

    // A fix for the site: now something would change.
    crate::support::write_tree(
        &dir.path().join("catalog"),
        &[(
            "fixes/0001-greet.yaml",
            "id: 0001-greet\ntitle: Greet\nreason: Politeness\nseverity: critical\napplies_to: \">=1.0.0\"\nops:\n  - replace: {files: [index.php], find: \"'hi'\", with: \"'hello'\"}\n",
        )],
    );
    let out = plan(&fleet, &state, &["--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("fix 0001-greet: Politeness (1 file)"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn a_missing_root_fails_the_site_with_exit_1() {
    let dir = fleet_with(&[(
        "sites/a.yaml",
        "site: a\nroot: /nonexistent/site\nproduct: acme\nchannel: stable\n",
    )]);
    let out = plan(&dir.path().join("fleet"), &dir.path().join("state"), &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("a: its root /nonexistent/site cannot be opened"),
        "{}",
        stderr(&out)
    );
}
