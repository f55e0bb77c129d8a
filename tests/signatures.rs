//! Signed catalogs and fleets (SPEC §7), end to end: real keys made with
//! ssh-keygen, commits signed by real git, the real binary. A catalog
//! commit signed by a listed key converges; one signed by another key,
//! unsigned, tampered with, or not descending from the one last applied is
//! held with `untrusted_source`, and `apply` exits 3 with the site's files
//! and ledger untouched. A fleet fetched from git is trusted on first use
//! and keeps requiring signatures after that.

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::support::{CATALOG, git, read_tree, sitekeeper, stderr, stdout, write_tree};

const NOW: &str = "2026-11-20T10:00:00Z";

const RELEASE_101: &[(&str, &str)] = &[
    (
        "releases/1.0.1.yaml",
        "version: 1.0.1\nchannels: [stable]\nreleased: 2026-02-01T00:00:00Z\npayload:\n  tree: releases/1.0.1/\n",
    ),
    ("releases/1.0.1/index.php", "<?php echo 'v1.0.1';\n"),
];

/// Makes an ed25519 key pair `<dir>/<name>` (+ `.pub`) and returns the private key's path.
fn keygen(dir: &Path, name: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join(name);
    let out = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&path)
        .output()
        .expect("ssh-keygen (package openssh-client) must be installed");
    assert!(out.status.success(), "{}", stderr(&out));
    path
}

/// The public key line of a key made by [`keygen`].
fn public(key: &Path) -> String {
    std::fs::read_to_string(key.with_extension("pub"))
        .unwrap()
        .trim()
        .to_owned()
}

/// Commits everything in `repo`, signed with `key` (SSH) or unsigned.
fn commit(repo: &Path, key: Option<&Path>, message: &str) -> String {
    git(repo, &["add", "-A"]);
    match key {
        Some(key) => {
            let signing = format!("user.signingkey={}", key.display());
            git(
                repo,
                &[
                    "-c",
                    "gpg.format=ssh",
                    "-c",
                    &signing,
                    "commit",
                    "-q",
                    "-S",
                    "-m",
                    message,
                ],
            )
        }
        None => git(repo, &["commit", "-q", "-m", message]),
    };
    git(repo, &["rev-parse", "HEAD"])
}

/// A signed catalog (git, `ref: main`), a fleet naming Alice as its only
/// signer, and site `s` adopted at 1.0.0 at the first catalog commit.
struct World {
    dir: tempfile::TempDir,
    alice: PathBuf,
    mallory: PathBuf,
    /// The first catalog commit (1.0.0 only), signed by Alice.
    first: String,
}

impl World {
    fn new() -> Self {
        Self::with_signers(|alice| format!("alice@example.com namespaces=\"git\" {alice}\n"))
    }

    /// A world whose allowed signers file is `signers(alice's public key)`.
    fn with_signers(signers: impl Fn(&str) -> String) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys");
        let alice = keygen(&keys, "alice");
        let mallory = keygen(&keys, "mallory");
        let cat = dir.path().join("catalog");
        write_tree(&cat, CATALOG);
        git(&cat, &["init", "-q", "-b", "main"]);
        let first = commit(&cat, Some(&alice), "1.0.0");
        write_tree(
            &dir.path().join("fleet"),
            &[
                (
                    "fleet.yaml",
                    "catalogs:\n  acme:\n    source: ../catalog\n    ref: main\n    allowed_signers: keys/allowed_signers\n",
                ),
                ("keys/allowed_signers", &signers(&public(&alice))),
                (
                    "sites/s.yaml",
                    "site: s\nroot: ../site\nproduct: acme\nchannel: stable\nopt_in: {upgrades: patch}\n",
                ),
            ],
        );
        write_tree(
            &dir.path().join("site"),
            &[("index.php", "<?php echo 'hi';\n")],
        );
        let w = World {
            dir,
            alice,
            mallory,
            first,
        };
        let out = w.run(&["adopt", "s", "--version", "1.0.0"]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        w
    }

    fn catalog(&self) -> PathBuf {
        self.dir.path().join("catalog")
    }

    fn site(&self) -> PathBuf {
        self.dir.path().join("site")
    }

    fn ledger(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("state/s/ledger.jsonl")).unwrap()
    }

    fn run(&self, args: &[&str]) -> Output {
        sitekeeper(&self.dir.path().join("state"))
            .current_dir(self.dir.path().join("fleet"))
            .env("SITEKEEPER_NOW", NOW)
            .args(args)
            .output()
            .unwrap()
    }

    /// Publishes release 1.0.1 as a new catalog commit, signed by `key`.
    fn publish_101(&self, key: Option<&Path>) -> String {
        write_tree(&self.catalog(), RELEASE_101);
        commit(&self.catalog(), key, "1.0.1")
    }

    fn plan(&self) -> serde_json::Value {
        let out = self.run(&["plan", "--format", "json"]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        serde_json::from_str(&stdout(&out)).unwrap()
    }

    fn status(&self) -> serde_json::Value {
        let out = self.run(&["status", "--format", "json"]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        serde_json::from_str(&stdout(&out)).unwrap()
    }

    /// Asserts that the plan holds everything with `untrusted_source` for a
    /// reason containing `why`, and that `apply` exits 3 leaving the site's
    /// files and ledger exactly as they were.
    fn refuses(&self, why: &str) {
        let plan = self.plan();
        let site = &plan["sites"][0];
        assert_eq!(site["actions"], serde_json::json!([]), "{site:#}");
        let held = site["held"].as_array().unwrap();
        assert_eq!(held[0]["item"], "source", "{site:#}");
        assert_eq!(held[0]["code"], "untrusted_source", "{site:#}");
        let reason = held[0]["reason"].as_str().unwrap();
        assert!(reason.contains(why), "{reason:?} should contain {why:?}");
        assert!(
            held.iter().all(|h| h["code"] == "untrusted_source"),
            "{site:#}"
        );
        let status = self.status();
        assert_eq!(status[0]["catalog_trust"]["state"], "untrusted");
        assert_eq!(status[0]["catalog_trust"]["reason"], reason);

        let files = read_tree(&self.site());
        let ledger = self.ledger();
        let out = self.run(&["apply"]);
        assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
        assert!(
            stderr(&out).contains(&format!("refused: s: {reason}")),
            "{}",
            stderr(&out)
        );
        assert_eq!(read_tree(&self.site()), files, "apply changed the site");
        assert_eq!(self.ledger(), ledger, "apply wrote the ledger");
    }

    /// Applies and asserts the site converged to 1.0.1.
    fn converges(&self) {
        let out = self.run(&["apply"]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert_eq!(
            std::fs::read_to_string(self.site().join("index.php")).unwrap(),
            "<?php echo 'v1.0.1';\n"
        );
    }
}

#[test]
fn a_commit_signed_by_an_allowed_key_converges() {
    let w = World::new();
    let head = w.publish_101(Some(&w.alice));
    let plan = w.plan();
    let site = &plan["sites"][0];
    assert_eq!(site["to_version"], "1.0.1", "{site:#}");
    assert_eq!(site["held"], serde_json::json!([]), "{site:#}");
    let trust = &w.status()[0]["catalog_trust"];
    assert_eq!(trust["state"], "trusted", "{trust}");
    assert_eq!(trust["signer"], "alice@example.com");
    assert_eq!(trust["commit"], head.as_str());
    assert!(trust["key"].as_str().unwrap().starts_with("SHA256:"));
    w.converges();
    assert_eq!(
        w.ledger().lines().count(),
        2,
        "adopt and upgrade: {}",
        w.ledger()
    );
}

#[test]
fn a_commit_signed_by_another_key_changes_nothing() {
    let w = World::new();
    w.publish_101(Some(&w.mallory));
    w.refuses("which the allowed signers file does not list");
}

#[test]
fn an_unsigned_commit_changes_nothing() {
    let w = World::new();
    let head = w.publish_101(None);
    w.refuses(&format!(
        "commit {} of the catalog acme is not signed, and keys/allowed_signers requires a signature by a listed key",
        &head[..12]
    ));
}

#[test]
fn a_tampered_commit_changes_nothing() {
    let w = World::new();
    let cat = w.catalog();
    w.publish_101(Some(&w.alice));
    // Keep Alice's signature, but point the commit at another tree whose
    // 1.0.1 ships a back door: the signed bytes no longer match.
    write_tree(
        &cat,
        &[("releases/1.0.1/index.php", "<?php eval($_GET['x']);\n")],
    );
    git(&cat, &["add", "-A"]);
    let evil_tree = git(&cat, &["write-tree"]);
    let raw = git(&cat, &["cat-file", "commit", "HEAD"]);
    let signed_tree = git(&cat, &["rev-parse", "HEAD^{tree}"]);
    let forged = raw.replacen(
        &format!("tree {signed_tree}"),
        &format!("tree {evil_tree}"),
        1,
    ) + "\n";
    assert!(forged.contains("-----BEGIN SSH SIGNATURE-----"), "{forged}");
    std::fs::write(cat.join("forged"), forged).unwrap();
    let id = git(&cat, &["hash-object", "-t", "commit", "-w", "forged"]);
    std::fs::remove_file(cat.join("forged")).unwrap();
    git(&cat, &["update-ref", "refs/heads/main", &id]);
    w.refuses("does not match its content: the commit was changed after it was signed");
    assert!(
        !read_tree(&w.site())
            .iter()
            .any(|(_, b)| b.starts_with(b"<?php eval"))
    );
}

#[test]
fn a_catalog_reset_to_an_older_signed_commit_changes_nothing() {
    let w = World::new();
    let applied = w.publish_101(Some(&w.alice));
    w.converges();
    // The older commit is validly signed: only its ancestry gives it away.
    git(&w.catalog(), &["update-ref", "refs/heads/main", &w.first]);
    w.refuses(&format!(
        "commit {} of the catalog acme is not a descendant of {} applied at point 2",
        &w.first[..12],
        &applied[..12]
    ));
}

#[test]
fn a_forced_push_of_unrelated_signed_history_changes_nothing() {
    let w = World::new();
    let cat = w.catalog();
    // A new root commit (signed by Alice) that would upgrade the site.
    git(&cat, &["checkout", "-q", "--orphan", "rewrite"]);
    write_tree(&cat, RELEASE_101);
    let unrelated = commit(&cat, Some(&w.alice), "rewritten history");
    git(&cat, &["update-ref", "refs/heads/main", &unrelated]);
    w.refuses(&format!(
        "commit {} of the catalog acme is not a descendant of {} applied at point 1",
        &unrelated[..12],
        &w.first[..12]
    ));
}

#[test]
fn a_rollback_does_not_lower_the_downgrade_mark() {
    let w = World::new();
    let applied = w.publish_101(Some(&w.alice));
    w.converges();
    let out = w.run(&["rollback", "s"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(w.site().join("index.php")).unwrap(),
        "<?php echo 'hi';\n"
    );
    // The site runs 1.0.0 again, but it has seen the newer catalog commit.
    git(&w.catalog(), &["update-ref", "refs/heads/main", &w.first]);
    w.refuses(&format!(
        "is not a descendant of {} applied at point 2",
        &applied[..12]
    ));
}

#[test]
fn a_key_past_its_valid_before_changes_nothing() {
    let w = World::new();
    // Git checks validity at the commit's time, which is now: after 2020.
    std::fs::write(
        w.dir.path().join("fleet/keys/allowed_signers"),
        format!(
            "alice@example.com valid-before=\"20200101Z\" {}\n",
            public(&w.alice)
        ),
    )
    .unwrap();
    w.publish_101(Some(&w.alice));
    w.refuses("whose key was valid only until 2020-01-01T00:00:00Z, but the commit was made at");
}

#[test]
fn a_key_listed_for_other_namespaces_changes_nothing() {
    let w = World::new();
    let signers = w.dir.path().join("fleet/keys/allowed_signers");
    std::fs::write(
        &signers,
        format!(
            "alice@example.com namespaces=\"file\" {}\n",
            public(&w.alice)
        ),
    )
    .unwrap();
    w.publish_101(Some(&w.alice));
    w.refuses("whose key may sign only in the namespaces \"file\", not \"git\"");
}

#[test]
fn adoption_at_an_untrusted_commit_is_refused() {
    let w = World::new();
    let fleet = w.dir.path().join("fleet");
    write_tree(
        &fleet,
        &[(
            "sites/t.yaml",
            "site: t\nroot: ../site-t\nproduct: acme\nchannel: stable\n",
        )],
    );
    write_tree(
        &w.dir.path().join("site-t"),
        &[("index.php", "<?php echo 'hi';\n")],
    );
    w.publish_101(None);
    let out = w.run(&["adopt", "t", "--version", "1.0.0"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("refused: t: commit "),
        "{}",
        stderr(&out)
    );
    assert!(!w.dir.path().join("state/t/points.git").exists());
}

#[test]
fn a_bad_allowed_signers_file_is_reported_with_file_line_and_column() {
    let w = World::new();
    let alice = public(&w.alice);
    let b64 = alice.split(' ').nth(1).unwrap();
    std::fs::write(
        w.dir.path().join("fleet/keys/allowed_signers"),
        format!(
            "# release keys\n\
             alice@example.com namespaces=\"git\" {alice}\n\
             bob@example.com cert-authority {alice}\n\
             carol@example.com namespace=\"git\" {alice}\n\
             dave@example.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5\n\
             erin@example.com valid-after=\"2026-01-01\" {alice}\n\
             frank@example.com ssh-ed448 {b64}\n"
        ),
    )
    .unwrap();
    for args in [&["validate"][..], &["plan"], &["apply"]] {
        let out = w.run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert_eq!(
            stderr(&out),
            "keys/allowed_signers:3:17: cert-authority lines are not supported: sitekeeper checks signatures against listed keys only (hint: list each signer's own public key instead)\n\
             keys/allowed_signers:4:19: \"namespace\" is not an option of an allowed signers file (hint: the options are namespaces=\"git\", valid-after=\"YYYYMMDD\" and valid-before=\"YYYYMMDD\")\n\
             keys/allowed_signers:5:30: this is not a valid ssh-ed25519 key: its base64 text is damaged or cut short\n\
             keys/allowed_signers:6:30: \"2026-01-01\" is not a time (hint: write YYYYMMDD, YYYYMMDDHHMM or YYYYMMDDHHMMSS, with a trailing Z for UTC)\n\
             keys/allowed_signers:7:19: \"ssh-ed448\" is not a key type sitekeeper can verify (hint: the key types are ssh-ed25519, ecdsa-sha2-nistp256, ssh-rsa and their sk- variants)\n\
             5 errors\n",
            "{args:?}"
        );
    }
}

#[test]
fn allowed_signers_needs_a_git_catalog() {
    let w = World::new();
    std::fs::write(
        w.dir.path().join("fleet/fleet.yaml"),
        "catalogs:\n  acme:\n    source: ../catalog\n    allowed_signers: keys/allowed_signers\n",
    )
    .unwrap();
    let out = w.run(&["validate"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_eq!(
        stderr(&out),
        "fleet.yaml:4:22: allowed_signers needs a git catalog, but ../catalog is read as a plain directory, which has no commits to sign (hint: set `ref:` to read a local git repository at a branch, tag or commit, or remove allowed_signers)\n"
    );
}

/// A fleet repo (git, signed by Alice, naming its own signers) and a plain
/// catalog directory with 1.0.0 and 1.0.1; site `s` (absolute root) is
/// adopted at 1.0.0 through the fleet's `file://` URL.
struct FleetWorld {
    dir: tempfile::TempDir,
    alice: PathBuf,
    mallory: PathBuf,
    url: String,
}

impl FleetWorld {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys");
        let alice = keygen(&keys, "alice");
        let mallory = keygen(&keys, "mallory");
        let cat = dir.path().join("catalog");
        write_tree(&cat, CATALOG);
        write_tree(&cat, RELEASE_101);
        let site = dir.path().join("site");
        write_tree(&site, &[("index.php", "<?php echo 'hi';\n")]);
        let fleet = dir.path().join("fleet");
        write_tree(
            &fleet,
            &[
                (
                    "fleet.yaml",
                    &format!(
                        "allowed_signers: keys/allowed_signers\ncatalogs:\n  acme:\n    source: {}\n",
                        cat.display()
                    ),
                ),
                (
                    "keys/allowed_signers",
                    &format!("alice@example.com {}\n", public(&alice)),
                ),
                (
                    "sites/s.yaml",
                    &format!(
                        "site: s\nroot: {}\nproduct: acme\nchannel: stable\nopt_in: {{upgrades: none}}\n",
                        site.display()
                    ),
                ),
            ],
        );
        git(&fleet, &["init", "-q", "-b", "main"]);
        commit(&fleet, Some(&alice), "fleet");
        let w = FleetWorld {
            url: format!("file://{}", fleet.display()),
            dir,
            alice,
            mallory,
        };
        let out = w.run(&["adopt", "s", "--version", "1.0.0"]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        w
    }

    fn fleet(&self) -> PathBuf {
        self.dir.path().join("fleet")
    }

    fn run(&self, args: &[&str]) -> Output {
        sitekeeper(&self.dir.path().join("state"))
            .current_dir(self.dir.path())
            .env("SITEKEEPER_NOW", NOW)
            .args(args)
            .args(["--fleet", &self.url])
            .output()
            .unwrap()
    }

    /// A fleet commit that opts the site into patch upgrades, with
    /// `fleet.yaml` replaced by `fleet_yaml` when given.
    fn push(&self, key: Option<&Path>, fleet_yaml: Option<&str>) -> String {
        let fleet = self.fleet();
        let site = std::fs::read_to_string(fleet.join("sites/s.yaml"))
            .unwrap()
            .replace("upgrades: none", "upgrades: patch");
        std::fs::write(fleet.join("sites/s.yaml"), site).unwrap();
        if let Some(text) = fleet_yaml {
            std::fs::write(fleet.join("fleet.yaml"), text).unwrap();
        }
        commit(&fleet, key, "change")
    }

    fn refuses(&self, why: &str) {
        let out = self.run(&["plan", "--format", "json"]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let plan: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
        let held = &plan["sites"][0]["held"][0];
        assert_eq!(held["code"], "untrusted_source", "{plan:#}");
        assert!(
            held["reason"].as_str().unwrap().contains(why),
            "{held} should contain {why:?}"
        );
        let site = self.dir.path().join("site");
        let ledger = self.dir.path().join("state/s/ledger.jsonl");
        let (files, lines) = (read_tree(&site), std::fs::read_to_string(&ledger).unwrap());
        let out = self.run(&["apply"]);
        assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
        assert!(stderr(&out).contains(why), "{}", stderr(&out));
        assert_eq!(read_tree(&site), files);
        assert_eq!(std::fs::read_to_string(&ledger).unwrap(), lines);
    }
}

#[test]
fn a_signed_fleet_is_trusted_on_first_use_and_then_stays_required() {
    let w = FleetWorld::new();
    let out = w.run(&["status", "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let status: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(status[0]["fleet_trust"]["state"], "trusted", "{status:#}");
    assert_eq!(status[0]["fleet_trust"]["signer"], "alice@example.com");

    // A pushed, unsigned commit that simply drops the requirement.
    let cat = w.dir.path().join("catalog");
    let unsigned = w.push(
        None,
        Some(&format!(
            "catalogs:\n  acme:\n    source: {}\n",
            cat.display()
        )),
    );
    w.refuses(&format!(
        "commit {} of the fleet repo is not signed",
        &unsigned[..12]
    ));

    // Signed by another key, which it also lists as the fleet's signer.
    std::fs::write(
        w.fleet().join("keys/allowed_signers"),
        format!("mallory@example.com {}\n", public(&w.mallory)),
    )
    .unwrap();
    w.push(
        Some(&w.mallory),
        Some(&format!(
            "allowed_signers: keys/allowed_signers\ncatalogs:\n  acme:\n    source: {}\n",
            cat.display()
        )),
    );
    w.refuses("which the allowed signers file does not list");

    // Alice signs again (restoring her key): the fleet is trusted and applies.
    std::fs::write(
        w.fleet().join("keys/allowed_signers"),
        format!("alice@example.com {}\n", public(&w.alice)),
    )
    .unwrap();
    w.push(Some(&w.alice), None);
    let out = w.run(&["apply"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(w.dir.path().join("site/index.php")).unwrap(),
        "<?php echo 'v1.0.1';\n"
    );
}

#[test]
fn a_fleet_rewound_to_an_older_signed_commit_changes_nothing() {
    let w = FleetWorld::new();
    let first = git(&w.fleet(), &["rev-parse", "HEAD"]);
    let second = w.push(Some(&w.alice), None);
    let out = w.run(&["validate"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    git(&w.fleet(), &["update-ref", "refs/heads/main", &first]);
    w.refuses(&format!(
        "fleet commit {} is not a descendant of {}, the last trusted fleet commit",
        &first[..12],
        &second[..12]
    ));
}

#[test]
fn a_fleet_first_seen_unsigned_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let alice = keygen(&dir.path().join("keys"), "alice");
    let fleet = dir.path().join("fleet");
    write_tree(
        &fleet,
        &[
            ("fleet.yaml", "allowed_signers: keys/allowed_signers\n"),
            (
                "keys/allowed_signers",
                &format!("alice@example.com {}\n", public(&alice)),
            ),
        ],
    );
    git(&fleet, &["init", "-q", "-b", "main"]);
    let head = commit(&fleet, None, "fleet");
    let out = sitekeeper(&dir.path().join("state"))
        .current_dir(dir.path())
        .args(["validate", "--format", "json", "--fleet"])
        .arg(format!("file://{}", fleet.display()))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(
        json["summary"]["fleet_trust"]["state"], "untrusted",
        "{json:#}"
    );
    assert!(
        json["summary"]["fleet_trust"]["reason"]
            .as_str()
            .unwrap()
            .starts_with(&format!(
                "commit {} of the fleet repo is not signed",
                &head[..12]
            )),
        "{json:#}"
    );
    assert!(
        !dir.path().join("state/trust").exists(),
        "an untrusted head is not recorded"
    );
}

#[test]
fn watch_keeps_running_on_an_untrusted_commit_reports_it_and_converges_once_signed() {
    use crate::watch::{Watch, get, until};
    use std::time::Duration;
    let w = World::new();
    w.publish_101(Some(&w.mallory));
    let before = read_tree(&w.site());
    let mut watch = Watch::start(w.dir.path(), &["--interval", "1s"]);
    let log = || watch.log();
    let trust = |state: &str| {
        let (_, body) = get(&watch.url("/status"));
        let list: serde_json::Value = serde_json::from_str(&body).unwrap();
        list[0]["catalog_trust"]["state"] == state
    };
    until(
        Duration::from_secs(10),
        "an untrusted verdict in /status",
        &log,
        || trust("untrusted"),
    );
    let (_, metrics) = get(&watch.url("/metrics"));
    assert!(
        metrics.contains("sitekeeper_catalog_trusted{product=\"acme\"} 0"),
        "{metrics}"
    );
    assert!(watch.log().contains("not trusted"), "{}", watch.log());
    // It keeps running through several timer turns, and changes nothing.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(get(&watch.url("/healthz")).0, 200);
    assert_eq!(
        read_tree(&w.site()),
        before,
        "an untrusted commit changed the site"
    );

    // Alice signs the next commit: the site converges on the timer.
    write_tree(&w.catalog(), &[("releases/1.0.1/extra.txt", "signed\n")]);
    commit(&w.catalog(), Some(&w.alice), "1.0.1, signed");
    until(
        Duration::from_secs(10),
        "convergence once signed",
        &log,
        || {
            std::fs::read_to_string(w.site().join("index.php"))
                .is_ok_and(|t| t == "<?php echo 'v1.0.1';\n")
        },
    );
    until(
        Duration::from_secs(5),
        "a trusted verdict in /status",
        &log,
        || trust("trusted"),
    );
    assert_eq!(watch.terminate(Duration::from_secs(10)), Some(0));
}
