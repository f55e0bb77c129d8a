//! The bundled examples validate, every stock policy validates, and
//! `explain` and `validate` read as the snapshots say (insta).

use crate::support::{fleet_with, repo_root, run_in, stderr, stdout};

#[test]
fn the_example_fleet_validates() {
    let out = run_in(&repo_root(), &["validate", "--fleet", "examples/fleet"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    insta::assert_snapshot!(stdout(&out), @"valid: 6 sites, 1 fleet policy, 5 stock policies, 1 approvals file; catalogs: acme-cms (5 releases, 6 fixes), acme-notes (2 releases, 0 fixes)");
}

#[test]
fn every_stock_policy_validates_and_resolves() {
    let mut files = Vec::new();
    for name in [
        "base",
        "conservative",
        "security-only",
        "fast-track",
        "privacy-strict",
    ] {
        files.push((format!("sites/{name}.yaml"), format!("site: s-{name}\nroot: /srv/{name}\nproduct: acme\nchannel: stable\npolicy: {name}\n")));
    }
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let dir = fleet_with(&refs);
    let fleet = dir.path().join("fleet");
    let out = run_in(&fleet, &["validate"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for name in [
        "base",
        "conservative",
        "security-only",
        "fast-track",
        "privacy-strict",
    ] {
        let out = run_in(
            &fleet,
            &["explain", &format!("s-{name}"), "--format", "json"],
        );
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let json: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
        let chain: Vec<&str> = json["policy_chain"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            chain.last(),
            Some(&"base"),
            "{name} does not end in base: {chain:?}"
        );
        assert_eq!(chain[0], name);
    }
}

#[test]
fn explain_shows_provenance_of_every_setting() {
    let out = run_in(
        &repo_root(),
        &["explain", "shop-eu", "--fleet", "examples/fleet"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    insta::assert_snapshot!("explain_shop_eu", stdout(&out));
}

const CLAMPED: &[(&str, &str)] = &[
    (
        "sites/greedy.yaml",
        "site: greedy\nroot: /srv/greedy\nproduct: acme\nchannel: stable\npolicy: strict\nopt_in:\n  upgrades: major\n  vendor_access: true\n",
    ),
    (
        "policies/strict.yaml",
        "# Refines conservative: no reports at all.\npolicy: strict\nextends: conservative\nceilings:\n  status_reports: false\ndefaults:\n  hotfixes: all\n",
    ),
];

#[test]
fn explain_says_when_a_ceiling_clamps_an_opt_in() {
    let dir = fleet_with(CLAMPED);
    let out = run_in(&dir.path().join("fleet"), &["explain", "greedy"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("site asked for `major`, policy `conservative` (policies/conservative.yaml:10) caps it at `minor`"),
        "{text}"
    );
    assert!(text.contains("site asked for `true`, policy `conservative` (policies/conservative.yaml:13) forbids it"), "{text}");
    insta::assert_snapshot!("explain_clamped", text);
}

#[test]
fn explain_json_has_stable_keys() {
    let dir = fleet_with(CLAMPED);
    let out = run_in(
        &dir.path().join("fleet"),
        &["explain", "greedy", "--format", "json"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    insta::assert_snapshot!("explain_clamped_json", stdout(&out));
}

#[test]
fn explain_of_an_unknown_site_lists_the_sites() {
    let out = run_in(
        &repo_root(),
        &["explain", "nope", "--fleet", "examples/fleet"],
    );
    assert_eq!(out.status.code(), Some(2));
    insta::assert_snapshot!(stderr(&out), @r#"examples/fleet/sites/: there is no site named "nope" (hint: the sites are blog, intranet, notes, shop-eu, staging-a, staging-b)"#);
}

/// The CI examples are valid YAML, and the GitHub workflow uses only the
/// actions it is meant to, with inputs those actions declare (their
/// `action.yml`, as of the versions named).
#[test]
fn the_ci_examples_parse_and_use_only_declared_action_inputs() {
    let root = crate::support::repo_root().join("examples/ci");
    let known: &[(&str, &[&str])] = &[
        ("actions/checkout@v4", &["fetch-depth"]),
        ("actions/github-script@v7", &["script"]),
    ];
    let text = std::fs::read_to_string(root.join("github-sitekeeper-plan.yml")).unwrap();
    let workflow: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
    let mut used = Vec::new();
    for job in workflow["jobs"].as_object().unwrap().values() {
        for step in job["steps"].as_array().unwrap() {
            let Some(action) = step["uses"].as_str() else {
                assert!(step["run"].is_string(), "a step runs or uses: {step}");
                continue;
            };
            let (_, inputs) = known
                .iter()
                .find(|(name, _)| *name == action)
                .unwrap_or_else(|| panic!("{action} is not an action this workflow should use"));
            for input in step["with"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, _)| k)
            {
                assert!(
                    inputs.contains(&input.as_str()),
                    "{action} has no input {input}"
                );
            }
            used.push(action);
        }
    }
    assert_eq!(used, ["actions/checkout@v4", "actions/github-script@v7"]);
    let plan_step = text.contains("sitekeeper plan --changed-since");
    assert!(plan_step && text.contains("sitekeeper validate"), "{text}");

    let text = std::fs::read_to_string(root.join("gitlab-ci.yml")).unwrap();
    let job: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
    let script = job["sitekeeper-plan"]["script"].as_array().unwrap();
    assert!(script[0] == "sitekeeper validate", "{script:?}");
    assert!(
        script
            .iter()
            .any(|s| s.as_str().unwrap().contains("plan --changed-since")),
        "{script:?}"
    );
}

/// examples/README.md ("What the sites need") sorts the sites into those
/// that apply on a bare Debian machine and those that need more. The first
/// kind are adopted and applied here, on a copy, and their health check
/// passes; each of the others says in its site file what it needs.
#[test]
fn the_example_sites_apply_here_or_say_what_they_need() {
    let examples = repo_root().join("examples");
    let readme = std::fs::read_to_string(examples.join("README.md")).unwrap();
    let section = &readme[readme
        .find("## What the sites need")
        .expect("examples/README.md has a section \"What the sites need\"")..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |i| i + 3)];
    let rows: Vec<(&str, &str)> = section
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| site ") && !l.starts_with("| ---"))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            (cells[1], cells[cells.len() - 2])
        })
        .collect();
    let mut names: Vec<&str> = rows.iter().map(|(site, _)| *site).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "blog",
            "intranet",
            "notes",
            "shop-eu",
            "staging-a",
            "staging-b"
        ],
        "{section}"
    );

    let site_files: Vec<String> = std::fs::read_dir(examples.join("fleet/sites"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("examples");
    let cp = std::process::Command::new("cp")
        .arg("-a")
        .arg(&examples)
        .arg(&copy)
        .status()
        .unwrap();
    assert!(cp.success());
    let state = dir.path().join("state");
    let fleet = copy.join("fleet");
    let mut applied = 0;
    for (site, needs) in rows {
        if !needs.starts_with("nothing beyond a Debian base system") {
            // The site's own entry (in a file of several sites, the text up to
            // the next site) says what applying it needs.
            let text = site_files
                .iter()
                .find_map(|t| {
                    t.split_once(&format!("site: {site}\n"))
                        .map(|(_, rest)| rest)
                })
                .unwrap_or_else(|| panic!("no site file for {site}"));
            let own = text.split("site: ").next().unwrap();
            assert!(
                own.lines()
                    .any(|l| l.trim_start().starts_with('#') && l.to_lowercase().contains("needs")),
                "{site}: its site file says nothing about what it needs:\n{own}"
            );
            continue;
        }
        let run = |args: &[&str]| {
            let out = crate::support::sitekeeper(&state)
                .current_dir(&fleet)
                .args(args)
                .output()
                .unwrap();
            assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
            stdout(&out)
        };
        run(&["adopt", site, "--detect"]);
        run(&["apply", site]);
        let history: serde_json::Value =
            serde_json::from_str(&run(&["history", site, "--format", "json"])).unwrap();
        let newest = &history[0];
        assert_eq!(newest["kind"], "apply", "{site}: {history:#}");
        assert_eq!(newest["health"], "passed", "{site}: {history:#}");
        assert_ne!(
            newest["version"], history[1]["version"],
            "{site}: {history:#}"
        );
        applied += 1;
    }
    assert!(
        applied >= 2,
        "intranet and staging-a apply on a bare machine"
    );
    assert_eq!(
        std::fs::read_to_string(copy.join("sites/staging-a/uploads/upgrades.log")).unwrap(),
        "4.2.0 -> 5.0.0\n",
        "staging-a's post_apply hook ran with the versions"
    );
}
