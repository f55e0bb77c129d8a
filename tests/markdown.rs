//! Markdown plans for pull requests (SPEC §4.5): sites in the same state
//! share one collapsible section (a plan class) with the digest to approve,
//! and a plan too large for a comment degrades into per-file summaries
//! instead of failing to post.

use std::fmt::Write as _;
use std::path::Path;

use crate::support::{NOW, run_fleet as run, stderr, stdout, write_tree};

/// GitHub's limit on a comment's length.
const GITHUB_COMMENT_LIMIT: usize = 65_536;

fn release(cat: &Path, v: &str, files: &[(&str, &str)]) {
    write_tree(
        cat,
        &[(
            &format!("releases/{v}.yaml"),
            &format!(
                "version: {v}\nchannels: [stable]\nreleased: 2026-01-01T00:00:00Z\npayload:\n  tree: releases/{v}/\n"
            ),
        )],
    );
    for (path, text) in files {
        write_tree(&cat.join(format!("releases/{v}")), &[(path, text)]);
    }
}

#[test]
fn two_hundred_sites_in_three_states_render_as_three_plan_classes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cat = d.join("catalog");
    write_tree(
        &cat,
        &[("catalog.yaml", "product: acme\nchannels:\n  stable: {}\n")],
    );
    let v100 = [
        ("index.php", "<?php echo 'v1.0.0';\n"),
        ("lib/search.php", "<?php\necho $q;\n"),
    ];
    release(&cat, "1.0.0", &v100);
    release(
        &cat,
        "1.0.1",
        &[
            ("index.php", "<?php echo 'v1.0.1';\n"),
            ("lib/search.php", "<?php\necho $q;\n"),
        ],
    );
    write_tree(
        &cat,
        &[(
            "fixes/0001-escape-search.yaml",
            "id: 0001-escape-search\ntitle: Escape the search term\nreason: XSS in the search page\nseverity: critical\napplies_to: \">=1.0.0\"\nops:\n  - replace: {files: [\"lib/*.php\"], find: \"echo $q;\", with: \"echo htmlspecialchars($q);\"}\n",
        )],
    );
    // Three groups: upgrade and fix (120), fix only (50), nothing (30).
    let groups = [
        ("a", 120, "{upgrades: patch, hotfixes: all}"),
        ("b", 50, "{upgrades: none, hotfixes: all}"),
        ("c", 30, "{upgrades: none, hotfixes: none}"),
    ];
    write_tree(
        &d.join("fleet"),
        &[("fleet.yaml", "catalogs:\n  acme:\n    source: ../catalog\n")],
    );
    let mut names = Vec::new();
    for (group, count, opt_in) in groups {
        let mut list = String::new();
        for n in 1..=count {
            let name = format!("{group}{n:03}");
            let _ = write!(
                list,
                "- site: {name}\n  root: ../sites/{name}\n  product: acme\n  channel: stable\n  opt_in: {opt_in}\n"
            );
            write_tree(&d.join("sites").join(&name), &v100);
            names.push(name);
        }
        write_tree(&d.join("fleet"), &[(&format!("sites/{group}.yaml"), &list)]);
    }
    // Adopted through the library: 200 processes would each load the
    // 200-site fleet again.
    let (fleet, diags) = sitekeeper::load::load(&sitekeeper::load::LoadOptions {
        fleet: d.join("fleet").display().to_string(),
        state_dir: Some(d.join("state")),
        git: Default::default(),
    })
    .unwrap();
    assert!(diags.is_empty(), "{diags:?}");
    let version: sitekeeper::model::values::Version = "1.0.0".parse().unwrap();
    let now: jiff::Timestamp = NOW.parse().unwrap();
    for name in &names {
        let site = fleet.site(name).unwrap();
        let ctx =
            sitekeeper::observe::SiteContext::gather(&fleet, site, &d.join("state"), None).unwrap();
        sitekeeper::apply::adopt::adopt(&ctx, &version, now, "cli").unwrap();
    }

    let out = run(d, &["plan", "--format", "markdown"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let md = stdout(&out);
    assert_eq!(
        md.matches("<details>").count(),
        3,
        "three plan classes:\n{md}"
    );
    assert!(
        md.contains("**170 sites change, 30 unchanged, 110 held, 0 failed**"),
        "{md}"
    );
    assert!(md.contains("120 sites: same plan (1.0.0 → 1.0.1)"), "{md}");
    assert!(md.contains("50 sites: same plan (1.0.0)"), "{md}");
    assert!(
        md.contains("30 sites: same plan (1.0.0, no changes)"),
        "{md}"
    );
    assert!(md.len() < GITHUB_COMMENT_LIMIT, "{} characters", md.len());
    insta::assert_snapshot!("markdown_200_sites_3_classes", md);
}

#[test]
fn a_plan_too_large_for_a_comment_degrades_into_file_summaries() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cat = d.join("catalog");
    write_tree(
        &cat,
        &[("catalog.yaml", "product: acme\nchannels:\n  stable: {}\n")],
    );
    // 300 text files of 2 KiB, every line of which 1.0.1 changes: about
    // 1.2 MB of diff, twenty times what a comment holds.
    let file = |v: &str, i: usize| -> String {
        (0..64)
            .map(|l| format!("<?php // {v} file {i} line {l:02} ............\n"))
            .collect()
    };
    for v in ["1.0.0", "1.0.1"] {
        let files: Vec<(String, String)> = (0..300)
            .map(|i| (format!("lib/f{i:03}.php"), file(v, i)))
            .collect();
        let refs: Vec<(&str, &str)> = files
            .iter()
            .map(|(p, t)| (p.as_str(), t.as_str()))
            .collect();
        release(&cat, v, &refs);
        if v == "1.0.0" {
            write_tree(&d.join("site"), &refs);
        }
    }
    write_tree(
        &d.join("fleet"),
        &[
            ("fleet.yaml", "catalogs:\n  acme:\n    source: ../catalog\n"),
            (
                "sites/s.yaml",
                "site: s\nroot: ../site\nproduct: acme\nchannel: stable\nopt_in: {upgrades: patch}\n",
            ),
        ],
    );
    let out = run(d, &["adopt", "s", "--version", "1.0.0"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run(d, &["plan", "--format", "markdown"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let md = stdout(&out);
    assert!(
        md.len() <= sitekeeper::plan::render::MARKDOWN_LIMIT,
        "{} characters",
        md.len()
    );
    assert!(md.contains("```diff"), "the diffs that fit are shown");
    assert!(
        md.contains("- `lib/f299.php` (modify): 2,"),
        "a file whose diff does not fit has a summary line:\n{}",
        &md[md.len().saturating_sub(2_000)..]
    );
    assert!(
        md.contains("shown as one-line summaries") && md.contains("--format json"),
        "the closing note says what was shortened"
    );
    let diffs = md.matches("```diff").count();
    let lines = md.matches("(modify): ").count();
    assert_eq!(
        diffs + lines,
        300,
        "every file is either a diff or a summary line"
    );
}
