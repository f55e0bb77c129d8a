//! The bundled examples validate, every stock policy validates, and
//! `explain` and `validate` read as the snapshots say (insta).

use crate::support::{fleet_with, repo_root, run_in, stderr, stdout};

#[test]
fn the_example_fleet_validates() {
    let out = run_in(&repo_root(), &["validate", "--fleet", "examples/fleet"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    insta::assert_snapshot!(stdout(&out), @"valid: 5 sites, 1 fleet policy, 5 stock policies, 1 approvals file; catalogs: acme-cms (5 releases, 6 fixes)");
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
    insta::assert_snapshot!(stderr(&out), @r#"examples/fleet/sites/: there is no site named "nope" (hint: the sites are blog, intranet, shop-eu, staging-a, staging-b)"#);
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
