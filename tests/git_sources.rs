//! Catalogs and fleets read from git: a local repository at a ref, and a
//! repository fetched from a `file://` URL. Trees are read from objects,
//! so an uncommitted edit in a work tree must not be seen.

use std::path::Path;

use crate::support::{CATALOG, git, run_in, stderr, stdout, write_tree};

fn catalog_repo(dir: &Path) {
    write_tree(dir, CATALOG);
    git(dir, &["init", "-q", "-b", "main"]);
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-q", "-m", "catalog"]);
}

const SITE: (&str, &str) = (
    "sites/a.yaml",
    "site: a\nroot: /srv/a\nproduct: acme\nchannel: stable\n",
);

fn validate_json(fleet: &Path) -> serde_json::Value {
    let out = run_in(fleet, &["validate", "--format", "json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    serde_json::from_str(&stdout(&out)).unwrap()
}

#[test]
fn a_local_catalog_is_read_at_its_ref_not_from_the_work_tree() {
    let tmp = tempfile::tempdir().unwrap();
    let cat = tmp.path().join("catalog");
    catalog_repo(&cat);
    let head = git(&cat, &["rev-parse", "HEAD"]);
    // Break the work tree without committing: the commit is what counts.
    std::fs::write(cat.join("catalog.yaml"), "product: [broken\n").unwrap();
    let fleet = tmp.path().join("fleet");
    write_tree(
        &fleet,
        &[
            (
                "fleet.yaml",
                "catalogs:\n  acme:\n    source: ../catalog\n    ref: main\n",
            ),
            SITE,
        ],
    );
    let json = validate_json(&fleet);
    assert_eq!(json["summary"]["catalogs"][0]["commit"], head.as_str());
    assert_eq!(json["summary"]["catalogs"][0]["releases"], 1);
}

#[test]
fn a_ref_selects_a_branch_or_tag() {
    let tmp = tempfile::tempdir().unwrap();
    let cat = tmp.path().join("catalog");
    catalog_repo(&cat);
    git(&cat, &["tag", "v1"]);
    write_tree(
        &cat,
        &[
            (
                "releases/1.1.0.yaml",
                "version: 1.1.0\nchannels: [stable]\nreleased: 2026-02-01T00:00:00Z\npayload:\n  tree: releases/1.1.0/\n",
            ),
            ("releases/1.1.0/index.php", "<?php echo 'v1.1';\n"),
        ],
    );
    git(&cat, &["add", "-A"]);
    git(&cat, &["commit", "-q", "-m", "1.1.0"]);
    let fleet = tmp.path().join("fleet");
    for (r, releases) in [("main", 2), ("v1", 1)] {
        write_tree(
            &fleet,
            &[
                (
                    "fleet.yaml",
                    &format!("catalogs:\n  acme:\n    source: ../catalog\n    ref: {r}\n"),
                ),
                SITE,
            ],
        );
        assert_eq!(
            validate_json(&fleet)["summary"]["catalogs"][0]["releases"],
            releases,
            "ref {r}"
        );
    }
}

#[test]
fn an_unknown_ref_is_a_located_error() {
    let tmp = tempfile::tempdir().unwrap();
    catalog_repo(&tmp.path().join("catalog"));
    let fleet = tmp.path().join("fleet");
    write_tree(
        &fleet,
        &[
            (
                "fleet.yaml",
                "catalogs:\n  acme:\n    source: ../catalog\n    ref: nope\n",
            ),
            SITE,
        ],
    );
    let out = run_in(&fleet, &["validate"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.starts_with("fleet.yaml:3:13: cannot read the catalog:"),
        "{err}"
    );
    assert!(
        err.contains("no branch, tag or commit named \"nope\""),
        "{err}"
    );
}

#[test]
fn a_catalog_is_fetched_from_a_file_url() {
    let tmp = tempfile::tempdir().unwrap();
    let cat = tmp.path().join("catalog");
    catalog_repo(&cat);
    let bare = tmp.path().join("catalog.git");
    git(
        tmp.path(),
        &[
            "clone",
            "-q",
            "--bare",
            cat.to_str().unwrap(),
            bare.to_str().unwrap(),
        ],
    );
    let head = git(&cat, &["rev-parse", "HEAD"]);
    let url = format!("file://{}", bare.display());
    let fleet = tmp.path().join("fleet");
    write_tree(
        &fleet,
        &[
            (
                "fleet.yaml",
                &format!("catalogs:\n  acme:\n    source: {url}\n    ref: main\n"),
            ),
            SITE,
        ],
    );
    let json = validate_json(&fleet);
    assert_eq!(json["summary"]["catalogs"][0]["commit"], head.as_str());
}

#[test]
fn a_fleet_is_fetched_from_a_file_url() {
    let tmp = tempfile::tempdir().unwrap();
    let cat = tmp.path().join("catalog");
    catalog_repo(&cat);
    let fleet = tmp.path().join("fleet");
    let catalog_url = format!("file://{}", cat.display());
    write_tree(
        &fleet,
        &[
            (
                "fleet.yaml",
                &format!("catalogs:\n  acme:\n    source: {catalog_url}\n"),
            ),
            SITE,
        ],
    );
    git(&fleet, &["init", "-q", "-b", "main"]);
    git(&fleet, &["add", "-A"]);
    git(&fleet, &["commit", "-q", "-m", "fleet"]);
    let url = format!("file://{}", fleet.display());
    let out = run_in(
        tmp.path(),
        &["validate", "--fleet", &url, "--format", "json"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(json["summary"]["sites"], 1);

    // A broken file in the fetched fleet is reported with its URL and position.
    write_tree(
        &fleet,
        &[(
            "sites/b.yaml",
            "site: b\nroot: /srv/b\nproduct: acme\nchannel: nightly\n",
        )],
    );
    git(&fleet, &["add", "-A"]);
    git(&fleet, &["commit", "-q", "-m", "broken"]);
    let out = run_in(tmp.path(), &["validate", "--fleet", &url]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).starts_with(&format!("{url}:sites/b.yaml:4:10: ")),
        "{}",
        stderr(&out)
    );
}
