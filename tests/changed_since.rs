//! `plan --changed-since REV` on a real fleet git repo with a `main` branch
//! and a pull-request branch, beside two real catalog repos: exactly the
//! sites a site, policy, `extends`-chain or catalog change can affect are
//! planned, removed sites are listed, and a bad REV or a fleet outside git
//! is refused with exit 2.

use std::path::{Path, PathBuf};

use crate::support::{CATALOG, fleet_with, git, sitekeeper, stderr, stdout, write_tree};

/// A fix every site takes, so that a full plan has changes (exit 4).
const FIX: (&str, &str) = (
    "fixes/0001-greet.yaml",
    "id: 0001-greet\ntitle: Greet\nreason: Politeness\nseverity: critical\napplies_to: \">=1.0.0\"\nops:\n  - replace: {files: [index.php], find: \"'hi'\", with: \"'hello'\"}\n",
);

fn site(name: &str, product: &str, policy: Option<&str>) -> String {
    let policy = policy.map(|p| format!("policy: {p}\n")).unwrap_or_default();
    format!("site: {name}\nroot: ../www/{name}\nproduct: {product}\nchannel: stable\n{policy}")
}

/// A workspace: `catalog/` (acme) and `other/` (other), both git repos on
/// `main` tagged `base`, and `fleet/`, a git repo whose `main` holds
///
/// * a (acme, policy strict → house → stock base), b (acme, policy house),
///   c (acme, stock base), d (other, stock conservative),
/// * e (acme) and f (other) in one multi-site file,
///
/// checked out on a new branch `pr`.
struct Workspace {
    _tmp: tempfile::TempDir,
    root: PathBuf,
}

impl Workspace {
    fn new() -> Self {
        let tmp = tempfile::tempdir().expect("temp dir");
        let root = tmp.path().to_owned();
        for (dir, product) in [("catalog", "acme"), ("other", "other")] {
            let cat = root.join(dir);
            write_tree(&cat, CATALOG);
            write_tree(&cat, &[FIX]);
            let yaml = format!("product: {product}\nchannels:\n  stable: {{}}\n");
            write_tree(&cat, &[("catalog.yaml", &yaml)]);
            commit_all(&cat, "catalog", true);
            git(&cat, &["tag", "base"]);
        }
        for name in ["a", "b", "c", "d", "e", "f"] {
            write_tree(
                &root.join("www").join(name),
                &[("index.php", "<?php echo 'hi';\n")],
            );
        }
        let pair = format!(
            "- {}\n- {}",
            site("e", "acme", None).replace('\n', "\n  ").trim_end(),
            site("f", "other", None).replace('\n', "\n  ").trim_end()
        );
        let fleet = root.join("fleet");
        write_tree(
            &fleet,
            &[
                (
                    "fleet.yaml",
                    "catalogs:\n  acme:\n    source: ../catalog\n    ref: main\n  other:\n    source: ../other\n    ref: main\n",
                ),
                ("sites/a.yaml", &site("a", "acme", Some("strict"))),
                ("sites/b.yaml", &site("b", "acme", Some("house"))),
                ("sites/c.yaml", &site("c", "acme", None)),
                ("sites/d.yaml", &site("d", "other", Some("conservative"))),
                ("sites/pair.yaml", &pair),
                (
                    "policies/house.yaml",
                    "policy: house\nextends: base\nkeep_rollback_points: 5\n",
                ),
                (
                    "policies/strict.yaml",
                    "policy: strict\nextends: house\nkeep_rollback_points: 3\n",
                ),
            ],
        );
        commit_all(&fleet, "fleet", true);
        git(&fleet, &["checkout", "-q", "-b", "pr"]);
        Self { _tmp: tmp, root }
    }

    fn fleet(&self) -> PathBuf {
        self.root.join("fleet")
    }

    /// Writes `files` into the fleet and commits them on `pr`.
    fn change(&self, files: &[(&str, &str)]) {
        write_tree(&self.fleet(), files);
        commit_all(&self.fleet(), "change", false);
    }

    /// `sitekeeper --fleet fleet plan ARGS`, run from the workspace.
    fn plan(&self, args: &[&str]) -> std::process::Output {
        sitekeeper(&self.root.join("state"))
            .current_dir(&self.root)
            .env("SITEKEEPER_NOW", "2026-11-20T10:00:00Z")
            .args(["--fleet", "fleet", "plan"])
            .args(args)
            .output()
            .expect("run sitekeeper")
    }

    /// The planned and removed sites of `plan --format json ARGS`, which
    /// must exit with `code`.
    fn selected(&self, args: &[&str], code: i32) -> (Vec<String>, Vec<String>) {
        let mut all = vec!["--format", "json"];
        all.extend_from_slice(args);
        let out = self.plan(&all);
        assert_eq!(
            out.status.code(),
            Some(code),
            "plan {args:?}:\n{}{}",
            stdout(&out),
            stderr(&out)
        );
        let json: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("JSON");
        let names = |key: &str, inner: Option<&str>| -> Vec<String> {
            json[key]
                .as_array()
                .unwrap_or_else(|| panic!("{key} is a list: {json}"))
                .iter()
                .map(|v| match inner {
                    Some(k) => v[k].as_str().expect("a name").to_owned(),
                    None => v.as_str().expect("a name").to_owned(),
                })
                .collect()
        };
        (names("sites", Some("site")), names("removed", None))
    }
}

fn commit_all(dir: &Path, message: &str, init: bool) {
    if init {
        git(dir, &["init", "-q", "-b", "main"]);
    }
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-q", "--allow-empty", "-m", message]);
}

#[test]
fn changed_since_a_site_file_edit_selects_exactly_that_site() {
    let ws = Workspace::new();
    ws.change(&[(
        "sites/b.yaml",
        &format!(
            "{}labels: {{env: staging}}\n",
            site("b", "acme", Some("house"))
        ),
    )]);
    assert_eq!(
        ws.selected(&["--changed-since", "main"], 0),
        (vec!["b".to_owned()], vec![])
    );

    // One site of a multi-site file: that site only, not its neighbour.
    let pair = std::fs::read_to_string(ws.fleet().join("sites/pair.yaml")).unwrap();
    let edited = pair.replacen("root: ../www/e", "root: ../www/e\n  ring: 2", 1);
    assert_ne!(pair, edited);
    ws.change(&[("sites/pair.yaml", &edited)]);
    let (sites, _) = ws.selected(&["--changed-since", "main"], 0);
    assert_eq!(sites, ["b", "e"]);
    // Compared with the previous commit of the branch, only e changed.
    let (sites, _) = ws.selected(&["--changed-since", "HEAD~1"], 0);
    assert_eq!(sites, ["e"]);
}

#[test]
fn changed_since_a_policy_edit_selects_exactly_the_sites_using_it() {
    let ws = Workspace::new();
    // Not committed: the head is the work tree as --fleet loads it.
    write_tree(
        &ws.fleet(),
        &[(
            "policies/strict.yaml",
            "policy: strict\nextends: house\nkeep_rollback_points: 4\n",
        )],
    );
    let (sites, removed) = ws.selected(&["--changed-since", "main"], 0);
    assert_eq!(sites, ["a"]);
    assert!(removed.is_empty());

    // Named sites are intersected with the affected ones.
    let (sites, _) = ws.selected(&["a", "c", "--changed-since", "main"], 0);
    assert_eq!(sites, ["a"]);
    let (sites, _) = ws.selected(&["c", "--changed-since", "main"], 0);
    assert!(sites.is_empty(), "{sites:?}");
}

#[test]
fn changed_since_a_base_policy_edit_selects_the_sites_whose_chain_extends_it() {
    let ws = Workspace::new();
    ws.change(&[(
        "policies/house.yaml",
        "policy: house\nextends: base\nkeep_rollback_points: 7\n",
    )]);
    // b uses house; a uses strict, which extends house; c, d, e, f do not.
    let (sites, _) = ws.selected(&["--changed-since", "main"], 0);
    assert_eq!(sites, ["a", "b"]);
    let out = ws.plan(&["--changed-since", "main"]);
    assert!(
        stdout(&out).contains("Affected: a (policy house); b (policy house).")
            && stdout(&out).contains("Changed since main: 4 unaffected sites not planned."),
        "{}",
        stdout(&out)
    );
}

#[test]
fn changed_since_a_moved_catalog_with_catalog_base_selects_every_site_of_its_product() {
    let ws = Workspace::new();
    let cat = ws.root.join("catalog");
    write_tree(
        &cat,
        &[(
            "fixes/0002-more.yaml",
            "id: 0002-more\ntitle: More\nreason: More politeness\nseverity: critical\napplies_to: \">=1.0.0\"\nops:\n  - replace: {files: [index.php], find: \"echo\", with: \"print\"}\n",
        )],
    );
    commit_all(&cat, "a new fix", false);
    // A commit that changes no file in the other catalog is no move.
    commit_all(&ws.root.join("other"), "empty", false);

    // Without --catalog-base, a catalog that moved is not considered.
    assert_eq!(ws.selected(&["--changed-since", "main"], 0).0.len(), 0);

    let acme = ["a", "b", "c", "e"];
    let (sites, _) = ws.selected(&["--changed-since", "main", "--catalog-base", "base"], 0);
    assert_eq!(sites, acme);

    let old = git(&cat, &["rev-parse", "base"]);
    let one = format!("acme={old}");
    let (sites, _) = ws.selected(&["--changed-since", "main", "--catalog-base", &one], 0);
    assert_eq!(sites, acme);
    // Only the other catalog compared: it did not move.
    let (sites, _) = ws.selected(
        &["--changed-since", "main", "--catalog-base", "other=base"],
        0,
    );
    assert!(sites.is_empty(), "{sites:?}");

    // A base the catalogs do not hold is refused, naming it.
    let out = ws.plan(&["--changed-since", "main", "--catalog-base", "nope"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("\"nope\""), "{}", stderr(&out));
}

#[test]
fn changed_since_a_removed_site_is_listed_as_removed() {
    let ws = Workspace::new();
    git(&ws.fleet(), &["rm", "-q", "sites/c.yaml"]);
    commit_all(&ws.fleet(), "remove c", false);
    let (sites, removed) = ws.selected(&["--changed-since", "main"], 0);
    assert!(sites.is_empty(), "{sites:?}");
    assert_eq!(removed, ["c"]);

    let out = ws.plan(&["--changed-since", "main"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("Removed since main: c (nothing is planned for them)."),
        "{}",
        stdout(&out)
    );
    let out = ws.plan(&["--changed-since", "main", "--format", "markdown"]);
    assert!(
        stdout(&out).contains("**Removed since `main`:** `c`"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn changed_since_no_change_selects_nothing_and_no_pending_changes() {
    let ws = Workspace::new();
    // Every site has a fix pending: a full plan says so with exit 4.
    let out = ws.plan(&["--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));

    commit_all(&ws.fleet(), "nothing", false);
    let (sites, removed) = ws.selected(&["--changed-since", "main", "--detailed-exitcode"], 0);
    assert!(sites.is_empty(), "{sites:?}");
    assert!(removed.is_empty(), "{removed:?}");

    // The same for an affected site has its pending fix: exit 4.
    ws.change(&[(
        "sites/c.yaml",
        &format!("{}ring: 0\n", site("c", "acme", None)),
    )]);
    let (sites, _) = ws.selected(&["--changed-since", "main", "--detailed-exitcode"], 4);
    assert_eq!(sites, ["c"]);
}

#[test]
fn changed_since_a_bad_rev_or_a_fleet_outside_git_exits_2() {
    let ws = Workspace::new();
    let out = ws.plan(&["--changed-since", "no-such-branch"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("\"no-such-branch\""),
        "names the REV: {}",
        stderr(&out)
    );

    let dir = fleet_with(&[(
        "sites/a.yaml",
        "site: a\nroot: /srv/a\nproduct: acme\nchannel: stable\n",
    )]);
    let out = sitekeeper(&dir.path().join("state"))
        .current_dir(dir.path())
        .args(["--fleet", "fleet", "plan", "--changed-since", "main"])
        .output()
        .expect("run sitekeeper");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("the fleet is not in a git work tree")
            && stderr(&out).contains("hint: --changed-since compares with a commit"),
        "{}",
        stderr(&out)
    );

    // --catalog-base only means something with --changed-since.
    let out = ws.plan(&["--catalog-base", "base"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[test]
fn changed_since_works_for_a_fleet_in_a_subdirectory_of_its_repository() {
    // One repository holding fleet/ and catalog/ (a plain directory catalog).
    let dir = fleet_with(&[
        ("sites/a.yaml", &site("a", "acme", None)),
        ("sites/b.yaml", &site("b", "acme", None)),
    ]);
    for name in ["a", "b"] {
        write_tree(
            &dir.path().join("www").join(name),
            &[("index.php", "<?php echo 'hi';\n")],
        );
    }
    commit_all(dir.path(), "mono", true);
    git(dir.path(), &["checkout", "-q", "-b", "pr"]);
    write_tree(
        &dir.path().join("fleet"),
        &[(
            "sites/b.yaml",
            &format!("{}ring: 2\n", site("b", "acme", None)),
        )],
    );
    let out = sitekeeper(&dir.path().join("state"))
        .current_dir(dir.path())
        .args(["--fleet", "fleet", "plan", "--format", "json"])
        .args(["--changed-since", "main"])
        .output()
        .expect("run sitekeeper");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("JSON");
    let sites: Vec<&str> = json["sites"]
        .as_array()
        .expect("sites")
        .iter()
        .filter_map(|s| s["site"].as_str())
        .collect();
    assert_eq!(sites, ["b"]);
}

#[test]
fn changed_since_works_for_a_fleet_fetched_from_a_git_url() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let root = tmp.path();
    let cat = root.join("catalog");
    write_tree(&cat, CATALOG);
    commit_all(&cat, "catalog", true);
    let www = root.join("www");
    for name in ["a", "b"] {
        write_tree(&www.join(name), &[("index.php", "<?php echo 'hi';\n")]);
    }
    let fleet = root.join("fleet");
    let fleet_yaml = format!(
        "catalogs:\n  acme:\n    source: {}\n    ref: main\n",
        cat.display()
    );
    // A root each: two sites may not share one (SPEC §3).
    let site = |name: &str, extra: &str| {
        format!(
            "site: {name}\nroot: {}\nproduct: acme\nchannel: stable\n{extra}",
            www.join(name).display()
        )
    };
    write_tree(
        &fleet,
        &[
            ("fleet.yaml", &fleet_yaml),
            ("sites/a.yaml", &site("a", "")),
            ("sites/b.yaml", &site("b", "")),
        ],
    );
    commit_all(&fleet, "fleet", true);
    // The remote's HEAD is the pull-request branch; main is fetched beside it.
    git(&fleet, &["checkout", "-q", "-b", "pr"]);
    write_tree(&fleet, &[("sites/a.yaml", &site("a", "ring: 0\n"))]);
    commit_all(&fleet, "a to ring 0", false);
    let url = format!("file://{}", fleet.display());
    let out = sitekeeper(&root.join("state"))
        .current_dir(root)
        .args(["--fleet", &url, "plan", "--format", "json"])
        .args(["--changed-since", "main"])
        .output()
        .expect("run sitekeeper");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("JSON");
    let sites: Vec<&str> = json["sites"]
        .as_array()
        .expect("sites")
        .iter()
        .filter_map(|s| s["site"].as_str())
        .collect();
    assert_eq!(sites, ["a"]);
    assert_eq!(
        json["changed_since"]["commit"].as_str(),
        Some(git(&fleet, &["rev-parse", "main"]).as_str())
    );
}
