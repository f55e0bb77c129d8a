//! Planning against real git catalogs and real site trees: the upgrade's
//! file set, fixes on customised files, drift, detection of the example
//! sites, and a no-op plan of a 100,000-file site that reads nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::support::{
    Rng, content, generate_tree, git, read_tree, repo_root, run_in, sha256, stderr, stdout,
    write_files, write_tree,
};

/// A catalog git repo with releases 1.0.0 and 1.1.0 of the given trees.
fn catalog_with(
    dir: &Path,
    v1: &BTreeMap<String, Vec<u8>>,
    v2: &BTreeMap<String, Vec<u8>>,
    fixes: &[(&str, &str)],
) {
    write_tree(
        dir,
        &[("catalog.yaml", "product: acme\nchannels:\n  stable: {}\n")],
    );
    for (v, files, date) in [("1.0.0", v1, "2026-01-01"), ("1.1.0", v2, "2026-02-01")] {
        write_tree(
            dir,
            &[(
                &format!("releases/{v}.yaml"),
                &format!(
                    "version: {v}\nchannels: [stable]\nreleased: {date}T00:00:00Z\npayload:\n  tree: releases/{v}/\n"
                ),
            )],
        );
        write_files(&dir.join(format!("releases/{v}")), files);
    }
    write_tree(dir, fixes);
    git(dir, &["init", "-q", "-b", "main"]);
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-q", "-m", "catalog"]);
}

fn fleet(dir: &Path, site_extra: &str) {
    write_tree(
        dir,
        &[
            (
                "fleet.yaml",
                "catalogs:\n  acme:\n    source: ../catalog\n    ref: main\n",
            ),
            (
                "sites/s.yaml",
                &format!("site: s\nroot: ../site\nproduct: acme\nchannel: stable\n{site_extra}"),
            ),
        ],
    );
}

fn plan_json(fleet: &Path, state: &Path) -> serde_json::Value {
    let out = crate::support::sitekeeper(state)
        .current_dir(fleet)
        .env("SITEKEEPER_NOW", "2026-11-20T10:00:00Z")
        .args(["plan", "--format", "json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    serde_json::from_str(&stdout(&out)).unwrap()
}

fn adopt(fleet: &Path, state: &Path, version: &str) {
    let out = crate::support::sitekeeper(state)
        .current_dir(fleet)
        .args(["adopt", "s", "--version", version])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

/// The upgrade plans exactly the files whose content differs between the
/// two payloads, with the right operation and hashes.
#[test]
fn an_upgrade_plans_exactly_the_files_that_differ() {
    let tmp = tempfile::tempdir().unwrap();
    let v1 = generate_tree(7, 3_000);
    let mut v2 = v1.clone();
    let mut rng = Rng(99);
    let paths: Vec<String> = v1.keys().cloned().collect();
    for p in &paths {
        match rng.below(100) {
            0..5 => {
                let binary = p.ends_with(".png");
                v2.insert(p.clone(), content(&mut rng, binary));
            }
            5 => {
                v2.remove(p);
            }
            _ => {}
        }
    }
    for n in 0..30 {
        v2.insert(
            format!("app/new/d{}/added{n}.php", n % 4),
            content(&mut rng, false),
        );
    }
    catalog_with(&tmp.path().join("catalog"), &v1, &v2, &[]);
    write_files(&tmp.path().join("site"), &v1);
    let fleet_dir = tmp.path().join("fleet");
    fleet(&fleet_dir, "opt_in:\n  upgrades: minor\n");
    let state = tmp.path().join("state");
    adopt(&fleet_dir, &state, "1.0.0");

    let plan = plan_json(&fleet_dir, &state);
    let site = &plan["sites"][0];
    assert_eq!(site["from_version"], "1.0.0");
    assert_eq!(site["to_version"], "1.1.0");
    let actions = site["actions"].as_array().unwrap();
    assert_eq!(actions.len(), 1, "{actions:#?}");
    let planned: BTreeMap<String, (String, serde_json::Value, serde_json::Value)> =
        actions[0]["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                (
                    f["path"].as_str().unwrap().to_owned(),
                    (
                        f["op"].as_str().unwrap().to_owned(),
                        f["before"].clone(),
                        f["after"].clone(),
                    ),
                )
            })
            .collect();
    let mut expected = BTreeMap::new();
    let all: BTreeSet<&String> = v1.keys().chain(v2.keys()).collect();
    for p in all {
        let (a, b) = (v1.get(p), v2.get(p));
        if a == b {
            continue;
        }
        let op = match (a, b) {
            (None, Some(_)) => "add",
            (Some(_), None) => "delete",
            _ => "modify",
        };
        let h = |x: Option<&Vec<u8>>| {
            x.map_or(serde_json::Value::Null, |b| {
                serde_json::Value::from(sha256(b))
            })
        };
        expected.insert(p.clone(), (op.to_owned(), h(a), h(b)));
    }
    assert!(
        expected.len() > 150,
        "the generated change is realistic: {}",
        expected.len()
    );
    assert_eq!(planned, expected);
}

/// A `replace` whose `find` was rewrapped on the site still matches, and
/// the result equals the hand-made expected file byte for byte.
#[test]
fn a_fix_lands_on_a_customised_file() {
    let tmp = tempfile::tempdir().unwrap();
    let original = "<?php\nfunction show($q) {\n    echo 'Results for ' . $q;\n}\n";
    let customised = "<?php\n// Agency theme\nfunction show($q) {\n    echo 'Results for '\n        . $q;\n    echo '<hr>';\n}\n";
    let expected = "<?php\n// Agency theme\nfunction show($q) {\n    echo 'Results for ' . htmlspecialchars($q);\n    echo '<hr>';\n}\n";
    let v1: BTreeMap<String, Vec<u8>> = [(
        "themes/default/search.php".to_owned(),
        original.as_bytes().to_vec(),
    )]
    .into();
    let fix = (
        "fixes/0001-escape.yaml",
        "id: 0001-escape\ntitle: Escape\nreason: XSS\nseverity: critical\napplies_to: \">=1.0.0\"\nops:\n  - replace:\n      files: [\"themes/*/search.php\"]\n      find: \"echo 'Results for ' . $q;\"\n      with: \"echo 'Results for ' . htmlspecialchars($q);\"\n",
    );
    catalog_with(&tmp.path().join("catalog"), &v1, &v1, &[fix]);
    write_tree(
        &tmp.path().join("site"),
        &[
            ("themes/default/search.php", original),
            ("themes/agency/search.php", customised),
        ],
    );
    let fleet_dir = tmp.path().join("fleet");
    fleet(&fleet_dir, "");
    let state = tmp.path().join("state");
    adopt(&fleet_dir, &state, "1.0.0");
    let plan = plan_json(&fleet_dir, &state);
    let action = &plan["sites"][0]["actions"][0];
    assert_eq!(action["kind"], "fix");
    let files: BTreeMap<&str, &serde_json::Value> = action["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["path"].as_str().unwrap(), &f["after"]))
        .collect();
    assert_eq!(
        files["themes/agency/search.php"],
        &serde_json::Value::from(sha256(expected.as_bytes()))
    );
    assert!(files.contains_key("themes/default/search.php"));
}

/// `adopt --detect` names the release each example site runs.
#[test]
fn detection_names_the_release_of_each_example_site() {
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("examples");
    let status = std::process::Command::new("cp")
        .args(["-r"])
        .arg(repo_root().join("examples"))
        .arg(&copy)
        .status()
        .unwrap();
    assert!(status.success());
    let state = tmp.path().join("state");
    for (site, version) in [
        ("shop-eu", "4.2.0"),
        ("blog", "4.1.3"),
        ("intranet", "4.2.0"),
        ("staging-a", "4.2.0"),
        ("staging-b", "5.0.0"),
    ] {
        let out = crate::support::sitekeeper(&state)
            .current_dir(copy.join("fleet"))
            .args(["adopt", site, "--detect"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{site}: {}", stderr(&out));
        let text = stdout(&out);
        assert!(
            text.starts_with(&format!("{site}: looks like {version}: ")),
            "{text}"
        );
        assert!(
            text.contains(&format!("adopted {site} at {version}: point 1")),
            "{text}"
        );
    }
    // Adopted, the shop's plan carries the fixes and no `not_adopted`.
    let out = run_in(
        &copy.join("fleet"),
        &[
            "--state-dir",
            state.to_str().unwrap(),
            "plan",
            "shop-eu",
            "--format",
            "json",
        ],
    );
    let plan: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let held: Vec<&str> = plan["sites"][0]["held"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["code"].as_str().unwrap())
        .collect();
    assert!(!held.contains(&"not_adopted"), "{held:?}");
    let mut fixes: Vec<String> = plan["sites"][0]["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["id"].as_str().unwrap().to_owned())
        .collect();
    // The shop's hooks call its production host's maintenance script: on
    // a machine without it the preflight holds the same fixes (SPEC §6.7).
    fixes.extend(
        plan["sites"][0]["held"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|h| h["code"] == "preflight")
            .filter_map(|h| h["item"].as_str()?.strip_prefix("fix "))
            .map(str::to_owned),
    );
    assert_eq!(
        fixes,
        ["0001-escape-search-term", "0004-disable-web-installer"]
    );

    // status and history read the state back; a local edit shows as drift.
    let fleet = copy.join("fleet");
    std::fs::write(
        copy.join("sites/shop-eu/index.php"),
        "<?php // edited on the server\n",
    )
    .unwrap();
    let st = state.to_str().unwrap();
    let out = run_in(
        &fleet,
        &["--state-dir", st, "status", "shop-eu", "--format", "json"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let status: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(status[0]["version"], "4.2.0");
    assert_eq!(status[0]["point"], 1);
    assert_eq!(status[0]["drift"], serde_json::json!(["index.php"]));
    // Pending, or held by the preflight where the shop's host tools are
    // missing; status names the check either way.
    let preflight = status[0]["preflight"].as_array().unwrap().len();
    assert_eq!(status[0]["pending"], if preflight == 0 { 2 } else { 0 });
    if preflight > 0 {
        assert_eq!(status[0]["preflight"][0]["check"], "hooks.pre_apply[0]");
    }
    assert_eq!(status[0]["last_result"], "ok");
    let out = run_in(
        &fleet,
        &["--state-dir", st, "history", "shop-eu", "--format", "json"],
    );
    let history: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(history.as_array().unwrap().len(), 1);
    assert_eq!(history[0]["kind"], "adopt");
    assert_eq!(history[0]["version"], "4.2.0");
    assert_eq!(history[0]["commit"].as_str().unwrap().len(), 40);
    let out = run_in(
        &fleet,
        &["--state-dir", st, "adopt", "shop-eu", "--version", "4.2.0"],
    );
    assert_eq!(out.status.code(), Some(2), "adopting twice is refused");
}

/// Two plans of the same state give the same digest, and a plan writes
/// nothing to the site.
#[test]
fn plans_are_reproducible_and_write_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let v1 = generate_tree(3, 200);
    let mut v2 = v1.clone();
    v2.insert("lib/new.php".into(), b"<?php\n".to_vec());
    catalog_with(&tmp.path().join("catalog"), &v1, &v2, &[]);
    write_files(&tmp.path().join("site"), &v1);
    let fleet_dir = tmp.path().join("fleet");
    fleet(&fleet_dir, "opt_in:\n  upgrades: patch\n");
    let state = tmp.path().join("state");
    adopt(&fleet_dir, &state, "1.0.0");
    let site_before = read_tree(&tmp.path().join("site"));
    let a = plan_json(&fleet_dir, &state);
    let b = plan_json(&fleet_dir, &state);
    assert_eq!(a, b);
    assert_eq!(
        a["sites"][0]["to_version"], "1.0.0",
        "1.1.0 is a minor upgrade and the site takes patches"
    );
    assert_eq!(a["sites"][0]["held"][0]["code"], "not_opted_in");
    assert_eq!(read_tree(&tmp.path().join("site")), site_before);
}
