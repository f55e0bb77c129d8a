//! Property tests (proptest) of the planner and the converging engine, on
//! the real binary in temp dirs: random releases, local edits and fixes.
//!
//! * `apply` then `plan` plans nothing, and `rollback` then restores the
//!   exact tree the site had before the apply;
//! * the plan digest does not depend on the order files were created in
//!   (so on directory listing order).
//!
//! Each case spawns the binary a handful of times, so the case counts are
//! small (see `CASES`); the pure properties of the fix ops run thousands of
//! cases in `reconciler/fixops/proptests.rs`.

use std::collections::BTreeMap;

use proptest::prelude::*;

use crate::support::{fleet_with, read_tree, run_fleet, stderr, stdout, write_tree};

/// Cases per property here: each costs 4–6 runs of the binary.
const CASES: u32 = 12;

/// Paths a release may ship.
const PATHS: [&str; 6] = [
    "index.php",
    "lib/a.php",
    "lib/b.php",
    "app/search/results.php",
    "themes/t/search.php",
    "lib/deep/er/c.php",
];

/// Lines file contents are made of: some are what fixes look for.
const LINES: [&str; 7] = [
    "<?php",
    "echo $q;",
    "echo  $q;",
    "foo();",
    "bar();",
    "// local note",
    "echo esc($q);",
];

/// What fixes search and what they write.
const FINDS: [&str; 3] = ["echo $q;", "foo();", "bar();"];
const WITHS: [&str; 4] = ["echo esc($q);", "foo(); bar();", "print $q;", "baz();"];

fn content() -> impl Strategy<Value = String> {
    proptest::collection::vec(proptest::sample::select(&LINES[..]), 1..6)
        .prop_map(|lines| lines.join("\n") + "\n")
}

/// A release: some of [`PATHS`] with contents; `index.php` always.
fn release() -> impl Strategy<Value = BTreeMap<String, String>> {
    proptest::collection::btree_map(proptest::sample::select(&PATHS[..]), content(), 1..6)
        .prop_flat_map(|files| {
            content().prop_map(move |index| {
                let mut files: BTreeMap<String, String> = files
                    .iter()
                    .map(|(p, c)| ((*p).to_owned(), c.clone()))
                    .collect();
                files.insert("index.php".into(), index);
                files
            })
        })
}

#[derive(Debug, Clone)]
struct Scenario {
    /// 1.0.0, which the site is adopted at.
    base: BTreeMap<String, String>,
    /// 1.0.1, the upgrade on offer.
    next: BTreeMap<String, String>,
    /// Local edits of the site before adopting (`Some`) or after (`None`
    /// means the file is edited after adoption: drift).
    edits: Vec<(usize, String, bool)>,
    /// Replace fixes (find, with, loose).
    fixes: Vec<(usize, usize, bool)>,
    /// `drift: revert` (else preserve).
    revert: bool,
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (
        release(),
        release(),
        proptest::collection::vec((0..PATHS.len(), content(), any::<bool>()), 0..3),
        proptest::collection::vec((0..FINDS.len(), 0..WITHS.len(), any::<bool>()), 0..3),
        any::<bool>(),
    )
        .prop_map(|(base, next, edits, fixes, revert)| Scenario {
            base,
            next,
            edits,
            fixes,
            revert,
        })
}

/// Whether one fix writes what another looks for (`bar();` → `foo();
/// bar();` beside `foo();` → `print $q;`), the case of
/// [`fixes_that_undo_each_other_still_converge`]. The generator keeps such
/// pairs: the planner holds the second fix, so they converge too.
fn interfere(fixes: &[(usize, usize, bool)]) -> bool {
    let squash = |t: &str| t.split_whitespace().collect::<Vec<_>>().join(" ");
    fixes.iter().enumerate().any(|(i, (_, with, _))| {
        fixes
            .iter()
            .enumerate()
            .any(|(j, (find, _, _))| i != j && squash(WITHS[*with]).contains(&squash(FINDS[*find])))
    })
}

/// Writes the fleet, catalog and site (`site/`, not yet adopted) of `s`.
fn setup(s: &Scenario) -> tempfile::TempDir {
    let drift = if s.revert { "revert" } else { "preserve" };
    let dir = fleet_with(&[(
        "sites/s.yaml",
        &format!(
            "site: s\nroot: ../site\nproduct: acme\nchannel: stable\nopt_in: {{upgrades: patch, hotfixes: all}}\ndrift: {drift}\n"
        ),
    )]);
    let cat = dir.path().join("catalog");
    let _ = std::fs::remove_dir_all(cat.join("releases/1.0.0"));
    let tree = |v: &str, files: &BTreeMap<String, String>| -> Vec<(String, String)> {
        files
            .iter()
            .map(|(p, c)| (format!("releases/{v}/{p}"), c.clone()))
            .collect()
    };
    let mut files = tree("1.0.0", &s.base);
    // 1.0.1 always changes index.php, so most cases have an upgrade to plan.
    let mut next = s.next.clone();
    if let Some(index) = next.get_mut("index.php") {
        index.push_str("// 1.0.1\n");
    }
    files.extend(tree("1.0.1", &next));
    files.push((
        "releases/1.0.1.yaml".into(),
        "version: 1.0.1\nchannels: [stable]\nreleased: 2026-02-01T00:00:00Z\npayload:\n  tree: releases/1.0.1/\n".into(),
    ));
    for (n, (find, with, loose)) in s.fixes.iter().enumerate() {
        let id = format!("{:04}-fix", n + 1);
        let whitespace = if *loose { "loose" } else { "exact" };
        files.push((
            format!("fixes/{id}.yaml"),
            format!(
                "id: {id}\ntitle: Fix {n}\nreason: Because {n}\nseverity: critical\napplies_to: \">=1.0.0\"\nops:\n  - replace: {{files: [\"*.php\", \"**/*.php\"], find: {:?}, with: {:?}, whitespace: {whitespace}, expect: any}}\n",
                FINDS[*find], WITHS[*with]
            ),
        ));
    }
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, c)| (p.as_str(), c.as_str()))
        .collect();
    write_tree(&cat, &refs);

    let site = dir.path().join("site");
    let base: Vec<(&str, &str)> = s
        .base
        .iter()
        .map(|(p, c)| (p.as_str(), c.as_str()))
        .collect();
    write_tree(&site, &base);
    write_tree(&site, &[("uploads/photo.txt", "not in any release\n")]);
    for (path, text, before) in &s.edits {
        if *before {
            write_tree(&site, &[(PATHS[*path], text)]);
        }
    }
    dir
}

/// Adopts site `name` (root `root`) at 1.0.0, then makes the edits of `s`
/// that come after adoption (drift).
fn adopt(dir: &std::path::Path, s: &Scenario, name: &str, root: &str) {
    let out = run_fleet(dir, &["adopt", name, "--version", "1.0.0"]);
    assert!(out.status.success(), "adopt {name}: {}", stderr(&out));
    for (path, text, before) in &s.edits {
        if !*before {
            write_tree(&dir.join(root), &[(PATHS[*path], text)]);
        }
    }
}

fn points(dir: &std::path::Path) -> usize {
    let out = run_fleet(dir, &["history", "s", "--format", "json"]);
    let history: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("history JSON");
    history.as_array().map_or(0, Vec::len)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, ..ProptestConfig::default() })]

    /// `apply(plan(x))` then `plan` plans nothing; `rollback` after the
    /// apply restores the exact tree (local files included).
    #[test]
    fn apply_converges_and_rollback_restores(s in scenario()) {
        let dir = setup(&s);
        adopt(dir.path(), &s, "s", "site");
        let site = dir.path().join("site");
        let before = read_tree(&site);
        let points_before = points(dir.path());

        let out = run_fleet(dir.path(), &["apply"]);
        prop_assert_eq!(out.status.code(), Some(0), "apply: {}{}", stdout(&out), stderr(&out));
        let out = run_fleet(dir.path(), &["plan", "--detailed-exitcode", "--format", "json"]);
        prop_assert_eq!(
            out.status.code(),
            Some(0),
            "plan after apply still has changes: {}{}",
            stdout(&out),
            stderr(&out)
        );

        if points(dir.path()) > points_before {
            let out = run_fleet(dir.path(), &["rollback", "s"]);
            prop_assert_eq!(out.status.code(), Some(0), "rollback: {}{}", stdout(&out), stderr(&out));
            prop_assert_eq!(read_tree(&site), before, "rollback did not restore the tree");
        } else {
            prop_assert_eq!(read_tree(&site), before, "an apply with no point changed files");
        }
    }

    /// Two sites with the same files, created in different orders (so
    /// listed in different orders), have the same plan and digest.
    #[test]
    fn plan_digest_ignores_file_creation_order(
        s in scenario(),
        extra in proptest::collection::btree_map("[a-z]{1,6}", content(), 1..12),
        order in any::<u64>(),
    ) {
        let dir = setup(&s);
        // A second site of the same fleet: the same files, written in another order.
        write_tree(
            &dir.path().join("fleet"),
            &[(
                "sites/t.yaml",
                &std::fs::read_to_string(dir.path().join("fleet/sites/s.yaml"))
                    .unwrap()
                    .replace("site: s\nroot: ../site", "site: t\nroot: ../site-t"),
            )],
        );
        let site = dir.path().join("site");
        let mut files: Vec<(String, String)> = read_tree(&site)
            .into_iter()
            .map(|(p, c)| (p, String::from_utf8_lossy(&c).into_owned()))
            .collect();
        for (name, text) in &extra {
            files.push((format!("lib/x/{name}.php"), text.clone()));
        }
        // A deterministic shuffle (xorshift) from the case's seed.
        let mut state = order | 1;
        let mut shuffled = files.clone();
        for i in (1..shuffled.len()).rev() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            shuffled.swap(i, (state % (i as u64 + 1)) as usize);
        }
        let write = |root: &std::path::Path, files: &[(String, String)]| {
            let refs: Vec<(&str, &str)> =
                files.iter().map(|(p, c)| (p.as_str(), c.as_str())).collect();
            write_tree(root, &refs);
        };
        // site/ holds the release files already; its extra files go in in
        // reverse order, site-t/ gets everything shuffled.
        let mut reversed = files.clone();
        reversed.reverse();
        write(&site, &reversed);
        write(&dir.path().join("site-t"), &shuffled);
        adopt(dir.path(), &s, "s", "site");
        adopt(dir.path(), &s, "t", "site-t");

        let out = run_fleet(dir.path(), &["plan", "--format", "json"]);
        let plan: serde_json::Value = serde_json::from_str(&stdout(&out))
            .map_err(|e| TestCaseError::fail(format!("{e}: {}{}", stdout(&out), stderr(&out))))?;
        let sites = plan["sites"].as_array().cloned().unwrap_or_default();
        prop_assert_eq!(sites.len(), 2);
        prop_assert!(
            sites[0]["actions"].as_array().is_some(),
            "no actions list: {}",
            stdout(&out)
        );
        prop_assert_eq!(&sites[0]["actions"], &sites[1]["actions"]);
        prop_assert_eq!(&sites[0]["plan_digest"], &sites[1]["plan_digest"]);
    }
}

/// The minimal case proptest found: fix 1 turns `foo();` into `print $q;`,
/// fix 2 turns `bar();` into `foo(); bar();`. Each apply re-created what
/// the other looks for, so `plan` after `apply` was never empty. The
/// planner now holds the fix that undoes an earlier one (`fix_conflict`).
#[test]
fn fixes_that_undo_each_other_still_converge() {
    let s = Scenario {
        base: [("index.php".to_owned(), "foo();\n".to_owned())].into(),
        next: [
            ("index.php".to_owned(), "echo $q;\n".to_owned()),
            ("lib/a.php".to_owned(), "bar();\n".to_owned()),
        ]
        .into(),
        edits: vec![],
        fixes: vec![(1, 2, false), (2, 1, false)],
        revert: false,
    };
    assert!(interfere(&s.fixes));
    let dir = setup(&s);
    adopt(dir.path(), &s, "s", "site");
    let out = run_fleet(dir.path(), &["apply"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = run_fleet(dir.path(), &["plan", "--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("fix_conflict") && stdout(&out).contains("never settle"),
        "the fix that undoes the other is held, and says why: {}",
        stdout(&out)
    );
}
