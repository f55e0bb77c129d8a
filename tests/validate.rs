//! `validate` over whole fleets: every error in one run, JSON output, and
//! checks that read catalog files (payloads, archive checksums).

use crate::support::{fleet_with, run_in, stderr, stdout, write_tree};

#[test]
fn validate_reports_every_error_in_one_run() {
    let dir = fleet_with(&[
        (
            "sites/a.yaml",
            "site: a\nroot: /srv/a\nproduct: acme\nchannel: nightly\n",
        ),
        (
            "sites/b.yaml",
            "site: b\nroot: /srv/b\nproduct: acme\nchannel: stable\nopt_in:\n  upgrades: everything\n",
        ),
        (
            "sites/c.yaml",
            "- site: a\n  root: /srv/c\n  product: widget\n  channel: stable\n  policy: lenient\n",
        ),
        ("policies/loop1.yaml", "policy: loop1\nextends: loop2\n"),
        ("policies/loop2.yaml", "policy: loop2\nextends: loop1\n"),
    ]);
    let out = run_in(&dir.path().join("fleet"), &["validate"]);
    assert_eq!(out.status.code(), Some(2));
    insta::assert_snapshot!("validate_many_errors", stderr(&out));
}

#[test]
fn validate_json_lists_errors_with_positions() {
    let dir = fleet_with(&[(
        "sites/b.yaml",
        "site: b\nroot: /srv/b\nproduct: acme\nchannel: nightly\n",
    )]);
    let out = run_in(&dir.path().join("fleet"), &["validate", "--format", "json"]);
    assert_eq!(out.status.code(), Some(2));
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(json["valid"], false);
    assert_eq!(json["errors"][0]["file"], "sites/b.yaml");
    assert_eq!(json["errors"][0]["line"], 4);
    assert_eq!(json["errors"][0]["column"], 10);
    assert_eq!(json["errors"][0]["hint"], "the channels are stable");
}

#[test]
fn an_archive_whose_checksum_differs_is_refused() {
    let dir = fleet_with(&[(
        "sites/a.yaml",
        "site: a\nroot: /srv/a\nproduct: acme\nchannel: stable\n",
    )]);
    let cat = dir.path().join("catalog");
    write_tree(
        &cat,
        &[
            ("artifacts/acme-2.0.0.tar.gz", "not really an archive"),
            (
                "releases/2.0.0.yaml",
                "version: 2.0.0\nchannels: [stable]\nreleased: 2026-02-01T00:00:00Z\npayload:\n  archive: artifacts/acme-2.0.0.tar.gz\n  sha256: 0000000000000000000000000000000000000000000000000000000000000000\n",
            ),
        ],
    );
    let out = run_in(&dir.path().join("fleet"), &["validate"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.starts_with("../catalog/releases/2.0.0.yaml:6:11: the archive artifacts/acme-2.0.0.tar.gz has SHA-256 "),
        "{err}"
    );
    // sha256 of "not really an archive"
    assert!(err.contains("484703de5611317b"), "{err}");
}
