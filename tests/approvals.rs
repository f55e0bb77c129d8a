//! Approvals end to end (SPEC §2.1, §3 `approve`): a policy that requires
//! approval holds a plan until its digest is listed in
//! `approvals/<site>.yaml`; `approve` writes that file; an approval of an
//! older plan no longer applies once the site or the catalog moved, and the
//! plan says why. Real binary, real files.

use std::path::Path;

use crate::support::{NOW, fleet_with, read_tree, run_fleet as run, stderr, stdout, write_tree};

const POLICY: &str = "policy: reviewed\nextends: base\nrequire_approval: [hotfix, patch]\n";

fn site_file(name: &str) -> String {
    format!(
        "site: {name}\nroot: ../site-{name}\nproduct: acme\nchannel: stable\npolicy: reviewed\nopt_in: {{upgrades: patch}}\n"
    )
}

/// Sites on 1.0.0, adopted, with a 1.0.1 patch and a critical fix waiting,
/// under a policy that requires approval of hot fixes and patches.
fn setup(names: &[&str]) -> tempfile::TempDir {
    let sites: Vec<(String, String)> = names
        .iter()
        .map(|n| (format!("sites/{n}.yaml"), site_file(n)))
        .collect();
    let mut files: Vec<(&str, &str)> = vec![("policies/reviewed.yaml", POLICY)];
    files.extend(sites.iter().map(|(p, c)| (p.as_str(), c.as_str())));
    let dir = fleet_with(&files);
    write_tree(
        &dir.path().join("catalog"),
        &[
            (
                "releases/1.0.1.yaml",
                "version: 1.0.1\nchannels: [stable]\nreleased: 2026-02-01T00:00:00Z\npayload:\n  tree: releases/1.0.1/\n",
            ),
            ("releases/1.0.1/index.php", "<?php echo 'v1.0.1';\n"),
            ("releases/1.0.1/lib/util.php", "<?php function util() {}\n"),
            (
                "fixes/0001-greet.yaml",
                "id: 0001-greet\ntitle: Greet\nreason: Politeness\nseverity: critical\napplies_to: \">=1.0.0\"\nops:\n  - replace: {files: [\"*.php\"], find: \"echo\", with: \"print\"}\n",
            ),
        ],
    );
    for n in names {
        write_tree(
            &dir.path().join(format!("site-{n}")),
            &[("index.php", "<?php echo 'hi';\n")],
        );
        let out = run(dir.path(), &["adopt", n, "--version", "1.0.0"]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    dir
}

/// The JSON plan of one site.
fn plan(dir: &Path, site: &str) -> serde_json::Value {
    let out = run(dir, &["plan", site, "--format", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let plan: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    plan["sites"][0].clone()
}

fn digest(site_plan: &serde_json::Value) -> String {
    site_plan["plan_digest"].as_str().unwrap().to_owned()
}

/// The held item with `approval_required`, if any.
fn approval_hold(site_plan: &serde_json::Value) -> Option<serde_json::Value> {
    site_plan["held"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["code"] == "approval_required")
        .cloned()
}

fn ledger(dir: &Path, site: &str) -> String {
    std::fs::read_to_string(dir.join(format!("state/{site}/ledger.jsonl"))).unwrap()
}

#[test]
fn without_an_approval_apply_refuses_with_exit_3_and_writes_nothing() {
    let dir = setup(&["s"]);
    let p = plan(dir.path(), "s");
    let d = digest(&p);
    let hold = approval_hold(&p).expect("held with approval_required");
    let reason = hold["reason"].as_str().unwrap();
    assert!(reason.contains(&d), "names the digest: {reason}");
    assert!(
        reason.contains("approvals/s.yaml"),
        "names the file: {reason}"
    );
    assert!(
        reason.contains("hotfix and patch"),
        "names the levels: {reason}"
    );
    assert_eq!(
        p["actions"].as_array().unwrap().len(),
        2,
        "reviewers see what would be done"
    );

    let before = read_tree(&dir.path().join("site-s"));
    let ledger_before = ledger(dir.path(), "s");
    let out = run(dir.path(), &["apply"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("approvals/s.yaml"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        read_tree(&dir.path().join("site-s")),
        before,
        "byte-identical"
    );
    assert_eq!(ledger(dir.path(), "s"), ledger_before, "ledger unchanged");
}

#[test]
fn approving_the_digest_lets_apply_converge() {
    let dir = setup(&["s"]);
    let d = digest(&plan(dir.path(), "s"));
    let out = run(
        dir.path(),
        &["approve", "s", "--digest", &d, "--by", "alice"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        !stderr(&out).contains("warning"),
        "the digest is the current plan's: {}",
        stderr(&out)
    );
    let file = std::fs::read_to_string(dir.path().join("fleet/approvals/s.yaml")).unwrap();
    assert!(file.contains(&format!("plan_digest: \"{d}\"")), "{file}");
    assert!(file.contains("by: \"alice\""), "{file}");
    assert!(
        file.contains(&format!("at: {NOW}")),
        "SITEKEEPER_NOW: {file}"
    );
    let out = run(dir.path(), &["validate"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    // Approving again adds nothing.
    let out = run(dir.path(), &["approve", "s", "--digest", &d, "--by", "bob"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("already approves"),
        "{}",
        stdout(&out)
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("fleet/approvals/s.yaml")).unwrap(),
        file
    );

    assert!(approval_hold(&plan(dir.path(), "s")).is_none());
    let out = run(dir.path(), &["apply"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("site-s/index.php")).unwrap(),
        "<?php print 'v1.0.1';\n"
    );
    let ledger = ledger(dir.path(), "s");
    assert!(
        ledger.contains(&d),
        "the ledger records the approved digest: {ledger}"
    );
}

#[test]
fn one_approve_covers_every_site_with_that_digest() {
    let dir = setup(&["a", "b"]);
    let (pa, pb) = (plan(dir.path(), "a"), plan(dir.path(), "b"));
    let d = digest(&pa);
    assert_eq!(d, digest(&pb), "sites in the same state share a digest");
    let out = run(
        dir.path(),
        &["approve", "a", "b", "--digest", &d, "--by", "alice"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for site in ["a", "b"] {
        let file = std::fs::read_to_string(dir.path().join(format!("fleet/approvals/{site}.yaml")))
            .unwrap();
        assert!(file.contains(&d), "{site}: {file}");
    }
    let out = run(dir.path(), &["apply"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for site in ["a", "b"] {
        assert_eq!(
            std::fs::read_to_string(dir.path().join(format!("site-{site}/index.php"))).unwrap(),
            "<?php print 'v1.0.1';\n",
            "{site}"
        );
    }
}

#[test]
fn after_drift_the_old_approval_does_not_apply_and_the_plan_says_why() {
    let dir = setup(&["s"]);
    let old = digest(&plan(dir.path(), "s"));
    let out = run(
        dir.path(),
        &["approve", "s", "--digest", &old, "--by", "alice"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    // Someone edits a managed file on the server after the review.
    std::fs::write(
        dir.path().join("site-s/index.php"),
        "<?php echo 'hi'; // local\n",
    )
    .unwrap();
    let p = plan(dir.path(), "s");
    let new = digest(&p);
    assert_ne!(new, old);
    let hold = approval_hold(&p).expect("the old approval does not apply");
    let reason = hold["reason"].as_str().unwrap();
    for words in [
        format!("approvals/s.yaml approves {old}"),
        format!("by alice at {NOW}"),
        "the plan changed since it was approved".to_owned(),
        "drifted".to_owned(),
        "index.php".to_owned(),
        "that approval does not apply".to_owned(),
        format!("The plan's digest is now {new}"),
    ] {
        assert!(reason.contains(&words), "{words:?} missing from: {reason}");
    }

    let before = read_tree(&dir.path().join("site-s"));
    let out = run(dir.path(), &["apply"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("does not apply"), "{}", stderr(&out));
    assert_eq!(read_tree(&dir.path().join("site-s")), before);

    // Approving the new plan appends it; the old entry stays as history.
    let out = run(
        dir.path(),
        &["approve", "s", "--digest", &new, "--by", "bob"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let file = std::fs::read_to_string(dir.path().join("fleet/approvals/s.yaml")).unwrap();
    assert!(file.contains(&old) && file.contains(&new), "{file}");
    let out = run(dir.path(), &["apply"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn when_the_catalog_moves_the_plan_says_so() {
    let dir = setup(&["s"]);
    let old = digest(&plan(dir.path(), "s"));
    let out = run(
        dir.path(),
        &["approve", "s", "--digest", &old, "--by", "alice"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    write_tree(
        &dir.path().join("catalog"),
        &[
            (
                "releases/1.0.2.yaml",
                "version: 1.0.2\nchannels: [stable]\nreleased: 2026-03-01T00:00:00Z\npayload:\n  tree: releases/1.0.2/\n",
            ),
            ("releases/1.0.2/index.php", "<?php echo 'v1.0.2';\n"),
        ],
    );
    let p = plan(dir.path(), "s");
    assert_eq!(p["to_version"], "1.0.2");
    let reason = approval_hold(&p).expect("held")["reason"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        reason.contains(&format!("approves {old}"))
            && reason.contains("the catalog or the site's files moved"),
        "{reason}"
    );
    let out = run(dir.path(), &["apply"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
}

#[test]
fn approve_refuses_bad_input_with_exit_2_and_writes_nothing() {
    let dir = setup(&["s"]);
    let d = digest(&plan(dir.path(), "s"));
    let approvals = dir.path().join("fleet/approvals");

    let out = run(
        dir.path(),
        &["approve", "s", "--digest", "sha256:abc", "--by", "alice"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--digest: \"sha256:abc\" is not a plan digest")
            && stderr(&out).contains("hint:"),
        "{}",
        stderr(&out)
    );

    // One unknown site among known ones: nothing is written for any.
    let out = run(
        dir.path(),
        &["approve", "s", "nope", "--digest", &d, "--by", "alice"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("sites/: there is no site named \"nope\"")
            && stderr(&out).contains("(hint: the sites are s)"),
        "{}",
        stderr(&out)
    );

    let out = run(dir.path(), &["approve", "s", "--digest", &d, "--by", " "]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(!approvals.exists(), "nothing was written");

    let out = run(
        dir.path(),
        &[
            "approve",
            "s",
            "--digest",
            &d,
            "--by",
            "alice",
            "--fleet",
            "https://git.example.com/ops/fleet.git",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("git URL"), "{}", stderr(&out));
    assert!(!approvals.exists(), "nothing was written");
}

#[test]
fn approve_appends_to_a_hand_written_file_and_warns_about_another_digest() {
    let dir = setup(&["s"]);
    let other = format!("sha256:{}", "ab".repeat(32));
    let written = format!(
        "# Approved in PR 7.\napproved:\n  - plan_digest: \"{other}\"  # the 1.0.1 rollout\n    by: carol\n    at: 2026-11-01T00:00:00Z\n"
    );
    write_tree(
        &dir.path().join("fleet"),
        &[("approvals/s.yaml", written.as_str())],
    );
    let d = digest(&plan(dir.path(), "s"));
    let out = run(
        dir.path(),
        &["approve", "s", "--digest", &d, "--by", "alice"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let file = std::fs::read_to_string(dir.path().join("fleet/approvals/s.yaml")).unwrap();
    assert!(
        file.starts_with(&written),
        "comments and entries kept: {file}"
    );
    assert!(file.contains(&d), "{file}");
    let out = run(dir.path(), &["validate"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    // A digest that is not the site's plan is written, with a warning.
    let stray = format!("sha256:{}", "cd".repeat(32));
    let out = run(
        dir.path(),
        &["approve", "s", "--digest", &stray, "--by", "alice"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!(
            "warning: s: its plan here has digest {d}, not {stray}"
        )),
        "{}",
        stderr(&out)
    );
}

#[test]
fn watch_leaves_an_unapproved_plan_alone_and_applies_it_once_approved() {
    use std::time::Duration;

    use crate::watch::{Watch, get, until};

    let dir = setup(&["s"]);
    let d = digest(&plan(dir.path(), "s"));
    let before = read_tree(&dir.path().join("site-s"));
    let ledger_before = ledger(dir.path(), "s");
    let watch = Watch::start(dir.path(), &["--interval", "1s"]);
    let status = || get(&watch.url("/status")).1;
    until(
        Duration::from_secs(30),
        "a reconcile of s reporting approval_required",
        &|| watch.log(),
        || status().contains("approval_required"),
    );
    // Some more turns of the timer: still nothing written.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(read_tree(&dir.path().join("site-s")), before);
    assert_eq!(ledger(dir.path(), "s"), ledger_before);

    let out = run(
        dir.path(),
        &["approve", "s", "--digest", &d, "--by", "alice"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    until(
        Duration::from_secs(30),
        "the approved plan applied by watch",
        &|| watch.log(),
        || {
            std::fs::read_to_string(dir.path().join("site-s/index.php")).unwrap_or_default()
                == "<?php print 'v1.0.1';\n"
        },
    );
}
