//! Opt-in status reports (SPEC §7): a site that did not opt in sends
//! nothing, ever (the report repository stays empty and is not even
//! contacted); opted-in sites send exactly the fields their opt-ins allow;
//! a policy ceiling beats the site; an unchanged status makes no commit;
//! hosts racing on one branch all land. The report repository is a real
//! bare repository made with the `git` binary, local or behind `git daemon`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Barrier};

use serde_json::{Value, json};
use sitekeeper::load::{Fleet, LoadOptions, load};
use sitekeeper::model::fleet::Reports;
use sitekeeper::watch::publish::report::{
    Committer, Published, ReportError, ReportInput, publish, publish_for_fleet,
};

use crate::support::{GitDaemon, fleet_with, git, run_fleet as run, stderr, write_tree};

/// A fleet whose `fleet.yaml` sends reports to `../target.git` (an empty
/// bare repository), with site `shop` (its file gets `site_extra`) adopted
/// at 1.0.0 by the binary. A 1.0.1 release waits, for sites that take it;
/// policy `no-reports` forbids status reports.
fn setup(site_extra: &str) -> tempfile::TempDir {
    let dir = fleet_with(&[
        (
            "fleet.yaml",
            "catalogs:\n  acme:\n    source: ../catalog\nreports:\n  git: ../target.git\n  branch: status\n",
        ),
        (
            "policies/no-reports.yaml",
            "policy: no-reports\nextends: base\nceilings:\n  status_reports: false\n",
        ),
        (
            "sites/shop.yaml",
            &format!(
                "site: shop\nroot: ../site\nproduct: acme\nchannel: stable\nlabels: {{url: \"https://shop.example.com/\"}}\n{site_extra}"
            ),
        ),
    ]);
    write_tree(
        &dir.path().join("catalog"),
        &[
            (
                "releases/1.0.1.yaml",
                "version: 1.0.1\nchannels: [stable]\nreleased: 2026-02-01T00:00:00Z\npayload:\n  tree: releases/1.0.1/\n",
            ),
            ("releases/1.0.1/index.php", "<?php echo 'v1.0.1';\n"),
        ],
    );
    write_tree(
        &dir.path().join("site"),
        &[("index.php", "<?php echo 'hi';\n")],
    );
    git(dir.path(), &["init", "-q", "--bare", "target.git"]);
    let out = run(dir.path(), &["adopt", "shop", "--version", "1.0.0"]);
    assert!(out.status.success(), "{}", stderr(&out));
    dir
}

fn load_fleet(dir: &Path) -> Fleet {
    let (fleet, diags) = load(&LoadOptions {
        fleet: dir.join("fleet").display().to_string(),
        state_dir: Some(dir.join("state")),
        git: Default::default(),
    })
    .unwrap();
    assert!(diags.is_empty(), "{diags:?}");
    fleet
}

/// What the daemon will do after a reconcile: read the status from the
/// state dir and publish for the whole fleet.
fn publish_fleet(dir: &Path) -> Result<Option<Published>, ReportError> {
    let fleet = load_fleet(dir);
    let state = dir.join("state");
    let statuses: BTreeMap<String, ReportInput> = fleet
        .sites
        .iter()
        .map(|s| {
            let name = s.site.to_string();
            (name.clone(), ReportInput::read(&state, &name).unwrap())
        })
        .collect();
    publish_for_fleet(&fleet, &state, &statuses, &Default::default())
}

/// Every commit reachable from any ref of the bare repository `repo`.
fn commits(repo: &Path) -> usize {
    let out = Command::new("git")
        .arg("--git-dir")
        .arg(repo)
        .args(["log", "--all", "--format=%H"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).lines().count()
}

/// `status/<site>.json` at the tip of branch `status` of `repo`, as text.
fn report_text(repo: &Path, site: &str) -> String {
    let out = Command::new("git")
        .arg("--git-dir")
        .arg(repo)
        .args(["show", &format!("status:status/{site}.json")])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    String::from_utf8(out.stdout).unwrap()
}

fn report_json(repo: &Path, site: &str) -> Value {
    serde_json::from_str(&report_text(repo, site)).unwrap()
}

fn keys(v: &Value) -> Vec<&str> {
    v.as_object().unwrap().keys().map(String::as_str).collect()
}

#[test]
fn with_every_opt_in_off_the_report_repository_receives_nothing() {
    let dir = setup(
        "opt_in: {status_reports: false, error_reports: false, public_listing: false, upgrades: patch}\n",
    );
    // An end-to-end run: an apply (an upgrade) and a status, then what the
    // daemon does after each reconcile.
    let out = run(dir.path(), &["apply"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = run(dir.path(), &["status"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let published = publish_fleet(dir.path()).unwrap().unwrap();
    assert_eq!(published, Published::default());
    assert_eq!(published.attempts, 0, "the repository was not contacted");

    let target = dir.path().join("target.git");
    assert_eq!(commits(&target), 0, "no commit at all");
    assert_eq!(git(&target, &["for-each-ref"]), "", "not even a ref");
    assert!(
        !dir.path().join("state/cache/reports").exists(),
        "nothing was cloned or fetched"
    );

    // Not contacted, proven: a target that does not exist is no error.
    let fleet_yaml = dir.path().join("fleet/fleet.yaml");
    std::fs::write(
        &fleet_yaml,
        "catalogs:\n  acme:\n    source: ../catalog\nreports:\n  git: git://127.0.0.1:9/nowhere.git\n",
    )
    .unwrap();
    assert_eq!(
        publish_fleet(dir.path()).unwrap(),
        Some(Published::default())
    );
}

#[test]
fn error_reports_and_public_listing_alone_send_nothing() {
    let dir = setup("opt_in: {error_reports: true, public_listing: true}\n");
    assert_eq!(
        publish_fleet(dir.path()).unwrap(),
        Some(Published::default())
    );
    assert_eq!(commits(&dir.path().join("target.git")), 0);
}

#[test]
fn status_reports_alone_send_site_version_fixes_and_health_only() {
    let dir = setup("opt_in: {status_reports: true}\n");
    let fleet = load_fleet(dir.path());
    let mut status = ReportInput::read(&dir.path().join("state"), "shop").unwrap();
    // There is an error and a URL to leak; neither may go out.
    status.error = Some("disk full at /srv/secret".into());
    let statuses = BTreeMap::from([("shop".to_owned(), status)]);
    let published = publish_for_fleet(
        &fleet,
        &dir.path().join("state"),
        &statuses,
        &Default::default(),
    )
    .unwrap()
    .unwrap();
    assert_eq!(published.changed, ["shop"]);
    let target = dir.path().join("target.git");
    assert_eq!(commits(&target), 1);
    let text = report_text(&target, "shop");
    assert_eq!(
        text,
        "{\n  \"fixes\": [],\n  \"health\": \"skipped\",\n  \"site\": \"shop\",\n  \"version\": \"1.0.0\"\n}\n",
        "exactly the allowed fields, keys sorted, trailing newline"
    );
    assert_eq!(
        git(&target, &["ls-tree", "-r", "--name-only", "status"]),
        "status/shop.json",
        "nothing else is written"
    );
    assert_eq!(
        git(
            &target,
            &["log", "-1", "--format=%an <%ae>|%cn <%ce>", "status"]
        ),
        "sitekeeper <sitekeeper@localhost>|sitekeeper <sitekeeper@localhost>",
        "commits name no host or user"
    );
}

#[test]
fn error_reports_add_the_error_of_a_failed_change() {
    // The upgrade fails its health check and is rolled back: a real error.
    let dir = setup(
        "opt_in: {status_reports: true, error_reports: true, upgrades: patch}\nhealth:\n  command: [\"sh\", \"-c\", \"grep -q hi index.php\"]\n  timeout: 5s\n",
    );
    let before = publish_fleet(dir.path()).unwrap().unwrap();
    let target = dir.path().join("target.git");
    let report = report_json(&target, "shop");
    assert_eq!(
        keys(&report),
        ["fixes", "health", "site", "version"],
        "no error yet, so no error key"
    );
    assert!(before.commit.is_some());

    let out = run(dir.path(), &["apply"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    publish_fleet(dir.path()).unwrap().unwrap();
    let report = report_json(&target, "shop");
    assert_eq!(
        keys(&report),
        ["error", "fixes", "health", "site", "version"]
    );
    assert!(
        report["error"].as_str().unwrap().contains("health check"),
        "{report}"
    );
    assert_eq!(report["health"], "failed");
    assert_eq!(report["version"], "1.0.0", "rolled back");
    assert!(report.get("url").is_none());
}

#[test]
fn public_listing_adds_the_url() {
    let dir = setup(
        "opt_in: {status_reports: true, error_reports: true, public_listing: true}\nhealth:\n  http: http://127.0.0.1:8080/healthz\n",
    );
    publish_fleet(dir.path()).unwrap().unwrap();
    let report = report_json(&dir.path().join("target.git"), "shop");
    assert_eq!(
        keys(&report),
        ["fixes", "health", "site", "url", "version"],
        "no error, so no error key"
    );
    assert_eq!(
        report["url"], "https://shop.example.com/",
        "the url label, not the loopback health URL"
    );
}

#[test]
fn a_policy_ceiling_forbidding_reports_beats_the_site() {
    for policy in ["privacy-strict", "no-reports"] {
        let dir = setup(&format!(
            "policy: {policy}\nopt_in: {{status_reports: true, error_reports: true, public_listing: true}}\n"
        ));
        let out = run(dir.path(), &["explain", "shop"]);
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("forbids it"),
            "{policy}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert_eq!(
            publish_fleet(dir.path()).unwrap(),
            Some(Published::default()),
            "{policy}"
        );
        assert_eq!(commits(&dir.path().join("target.git")), 0, "{policy}");
        assert!(!dir.path().join("state/cache/reports").exists());
    }
}

#[test]
fn the_same_status_twice_makes_one_commit() {
    let dir = setup("opt_in: {status_reports: true, upgrades: patch}\n");
    let target = dir.path().join("target.git");
    let first = publish_fleet(dir.path()).unwrap().unwrap();
    assert!(first.commit.is_some());
    let second = publish_fleet(dir.path()).unwrap().unwrap();
    assert_eq!(second.commit, None, "{second:?}");
    assert!(second.changed.is_empty());
    assert_eq!(second.attempts, 1, "it did look");
    assert_eq!(commits(&target), 1, "no empty commit");

    // A real change is published again, on top of the first.
    let out = run(dir.path(), &["apply"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let third = publish_fleet(dir.path()).unwrap().unwrap();
    assert!(third.commit.is_some());
    assert_eq!(commits(&target), 2);
    assert_eq!(report_json(&target, "shop")["version"], "1.0.1");
    assert_eq!(
        git(&target, &["rev-parse", "status~1"]),
        first.commit.unwrap()
    );
}

#[test]
fn a_local_target_must_be_a_bare_repository() {
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path().join("work");
    std::fs::create_dir(&work).unwrap();
    git(&work, &["init", "-q"]);
    let reports = Reports {
        git: work.display().to_string(),
        branch: None,
    };
    let body = vec![("shop".to_owned(), json!({"site": "shop"}))];
    let err = publish(
        &reports,
        &body,
        &tmp.path().join("state"),
        &Committer::default(),
        &Default::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("is not a bare git repository"), "{err}");
    assert!(err.contains("git init --bare"), "{err}");
}

/// `hosts` publishers, each with its own state dir (its own clone) and its
/// own site, publish a new status at the same instant, `rounds` times.
/// Every round, every report must land: nothing lost, one commit each.
/// Returns the attempts of every publish.
fn race(url: &str, repo: &Path, state_root: &Path, hosts: usize, rounds: usize) -> Vec<u32> {
    let mut attempts = Vec::new();
    let before = commits(repo);
    for round in 0..rounds {
        let barrier = Arc::new(Barrier::new(hosts));
        let threads: Vec<_> = (0..hosts)
            .map(|h| {
                let barrier = barrier.clone();
                let reports = Reports {
                    git: url.to_owned(),
                    branch: Some("status".into()),
                };
                let state = state_root.join(format!("host{h}"));
                std::thread::spawn(move || {
                    let body = json!({"site": format!("site{h}"), "version": format!("1.0.{round}"),
                                      "fixes": [], "health": "passed"});
                    barrier.wait();
                    publish(
                        &reports,
                        &[(format!("site{h}"), body)],
                        &state,
                        &Committer::default(),
                        &Default::default(),
                    )
                })
            })
            .collect();
        for t in threads {
            let published = t.join().unwrap().unwrap();
            assert_eq!(published.changed.len(), 1, "{published:?}");
            attempts.push(published.attempts);
        }
        for h in 0..hosts {
            assert_eq!(
                report_json(repo, &format!("site{h}"))["version"],
                format!("1.0.{round}"),
                "round {round}: host {h}'s report was lost"
            );
        }
        assert_eq!(
            commits(repo),
            before + hosts * (round + 1),
            "one commit per publish"
        );
    }
    attempts
}

#[test]
fn hosts_racing_on_a_local_repository_all_land() {
    let tmp = tempfile::tempdir().unwrap();
    git(tmp.path(), &["init", "-q", "--bare", "target.git"]);
    let repo = tmp.path().join("target.git");
    let url = format!("file://{}", repo.display());
    let mut attempts = Vec::new();
    // Rounds until some push lost a race and was retried (the first round
    // nearly always has one: four hosts start from one empty branch).
    for _ in 0..10 {
        attempts.extend(race(&url, &repo, tmp.path(), 4, 3));
        if attempts.iter().any(|&a| a > 1) {
            break;
        }
    }
    assert!(
        attempts.iter().any(|&a| a > 1),
        "no race was provoked: {attempts:?}"
    );
}

#[test]
fn hosts_racing_through_git_daemon_all_land() {
    let tmp = tempfile::tempdir().unwrap();
    let base: PathBuf = tmp.path().join("srv");
    std::fs::create_dir(&base).unwrap();
    git(&base, &["init", "-q", "--bare", "target.git"]);
    let repo = base.join("target.git");
    let daemon = GitDaemon::start_writable(&base);
    let url = daemon.url("target.git");
    let mut attempts = Vec::new();
    for _ in 0..10 {
        attempts.extend(race(&url, &repo, tmp.path(), 4, 3));
        if attempts.iter().any(|&a| a > 1) {
            break;
        }
    }
    assert!(
        attempts.iter().any(|&a| a > 1),
        "no race was provoked: {attempts:?}"
    );
    // The same status again changes nothing and pushes nothing.
    let before = commits(&repo);
    let again = publish(
        &Reports {
            git: url.clone(),
            branch: Some("status".into()),
        },
        &[("site0".into(), report_json(&repo, "site0"))],
        &tmp.path().join("host0"),
        &Committer::default(),
        &Default::default(),
    )
    .unwrap();
    assert_eq!(again.commit, None);
    assert_eq!(commits(&repo), before);
}
