//! `sitekeeper check` (SPEC §3, §4.2): newer releases classified with their
//! reasons and whether policy applies them automatically; plain output under
//! CI; and the daemon's upgrade notices (once per release, silenced by
//! `SITEKEEPER_NO_NOTICES`) in its log, `/metrics` and `/status`.

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use crate::support::{free_port, sitekeeper, stderr, stdout, wait_for_port, write_tree};
use crate::watch::{get, until};

fn release(version: &str, extra: &str) -> (String, String) {
    (
        format!("releases/{version}.yaml"),
        format!(
            "version: {version}\nchannels: [stable]\nreleased: 2026-01-01T00:00:00Z\npayload:\n  tree: releases/{version}/\n{extra}"
        ),
    )
}

/// A catalog with 1.2.0 (installed) and, newer on `stable`: a patch, a
/// minor, a major, a pre-release and a yanked patch; plus a fleet of
/// `shop` (takes patches), `capped` (asks for minor, its policy caps at
/// patch), both adopted at 1.2.0, and `fresh` (never adopted).
fn fleet() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let cat = dir.path().join("catalog");
    write_tree(
        &cat,
        &[("catalog.yaml", "product: acme\nchannels:\n  stable: {}\n")],
    );
    for (v, extra) in [
        ("1.2.0", ""),
        ("1.2.1", ""),
        ("1.2.2", "yanked: true\n"),
        ("1.3.0", ""),
        ("1.4.0-beta.1", ""),
        ("2.0.0", ""),
    ] {
        let (path, yaml) = release(v, extra);
        write_tree(
            &cat,
            &[
                (path.as_str(), yaml.as_str()),
                (
                    &format!("releases/{v}/index.php"),
                    &format!("<?php echo '{v}';\n"),
                ),
            ],
        );
    }
    let site = |name: &str, more: &str| {
        format!("site: {name}\nroot: ../site-{name}\nproduct: acme\nchannel: stable\n{more}")
    };
    write_tree(
        &dir.path().join("fleet"),
        &[
            ("fleet.yaml", "catalogs:\n  acme:\n    source: ../catalog\n"),
            (
                "sites/shop.yaml",
                &site("shop", "opt_in: {upgrades: patch}\n"),
            ),
            (
                "sites/capped.yaml",
                &site("capped", "policy: careful\nopt_in: {upgrades: minor}\n"),
            ),
            ("sites/fresh.yaml", &site("fresh", "")),
            (
                "policies/careful.yaml",
                "policy: careful\nextends: base\nceilings: {upgrades: patch}\n",
            ),
        ],
    );
    for name in ["shop", "capped", "fresh"] {
        write_tree(
            &dir.path().join(format!("site-{name}")),
            &[("index.php", "<?php echo '1.2.0';\n")],
        );
    }
    for name in ["shop", "capped"] {
        let out = sitekeeper(&dir.path().join("state"))
            .current_dir(dir.path().join("fleet"))
            .args(["adopt", name, "--version", "1.2.0"])
            .output()
            .expect("run adopt");
        assert!(out.status.success(), "{}", stderr(&out));
    }
    dir
}

fn check(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = sitekeeper(&dir.join("state"));
    cmd.current_dir(dir.join("fleet"))
        .env("SITEKEEPER_NOW", "2026-11-01T00:00:00Z")
        .arg("check")
        .args(args)
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run check")
}

/// `(version, class, automatic, held code)` of a site in the JSON.
fn rows(json: &serde_json::Value, site: &str) -> Vec<(String, String, bool, Option<String>)> {
    let s = json
        .as_array()
        .expect("a list")
        .iter()
        .find(|s| s["site"] == site)
        .unwrap_or_else(|| panic!("no {site} in {json}"));
    s["available"]
        .as_array()
        .expect("available")
        .iter()
        .map(|u| {
            (
                u["version"].as_str().expect("version").to_owned(),
                u["class"].as_str().expect("class").to_owned(),
                u["automatic"].as_bool().expect("automatic"),
                u["held"]["code"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

fn row(
    v: &str,
    class: &str,
    auto: bool,
    code: Option<&str>,
) -> (String, String, bool, Option<String>) {
    (v.into(), class.into(), auto, code.map(str::to_owned))
}

#[test]
fn check_classifies_each_newer_release_and_says_whether_it_applies_automatically() {
    let dir = fleet();
    let out = check(dir.path(), &["--format", "json"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    // Newest first; the yanked 1.2.2 is not offered at all.
    assert_eq!(
        rows(&json, "shop"),
        vec![
            row("2.0.0", "questionable", false, Some("major_upgrade")),
            row("1.4.0-beta.1", "ineligible", false, Some("prerelease")),
            row("1.3.0", "eligible", false, Some("not_opted_in")),
            row("1.2.1", "eligible", true, None),
        ]
    );
    assert_eq!(
        rows(&json, "capped")[2],
        row("1.3.0", "eligible", false, Some("policy_ceiling"))
    );
    let shop = &json.as_array().expect("list")[2];
    assert_eq!(shop["site"], "shop");
    assert_eq!(shop["version"], "1.2.0");
    let reasons: Vec<&str> = shop["available"]
        .as_array()
        .expect("available")
        .iter()
        .map(|u| u["reason"].as_str().expect("reason"))
        .collect();
    assert_eq!(reasons[0], "a new major: 1 → 2");
    assert!(
        reasons[1].starts_with("a pre-release the channel does not offer"),
        "{reasons:?}"
    );
    assert_eq!(reasons[2], "same major 1, a minor step");
    assert_eq!(reasons[3], "same major 1, a patch step");
    assert!(shop["available"][3]["held"].is_null());
    assert!(
        shop["available"][0]["held"]["reason"]
            .as_str()
            .expect("held reason")
            .contains("upgrades: major")
    );
    // The same in a pull-request comment.
    let md = check(dir.path(), &["shop", "--format", "markdown"], &[]);
    let md = stdout(&md);
    assert!(
        md.contains("| shop | 1.2.0 | 1.2.1 | eligible | same major 1, a patch step | yes |"),
        "{md}"
    );
    assert!(
        md.contains(
            "| shop | 1.2.0 | 2.0.0 | questionable | a new major: 1 → 2 | no: `major_upgrade` "
        ),
        "{md}"
    );
    // A site never adopted is listed, with nothing to compare.
    let fresh = &json.as_array().expect("list")[1];
    assert_eq!(fresh["site"], "fresh");
    assert!(fresh["version"].is_null());
    assert_eq!(fresh["available"], serde_json::json!([]));
}

#[test]
fn check_follows_the_policy_gates_of_the_planner() {
    let dir = fleet();
    // Soak time in the site's policy holds even the patch; the planner agrees.
    write_tree(
        &dir.path().join("fleet"),
        &[
            (
                "policies/careful.yaml",
                "policy: careful\nextends: base\nceilings: {upgrades: patch}\nmin_release_age: 400d\n",
            ),
            (
                "sites/capped.yaml",
                "site: capped\nroot: ../site-capped\nproduct: acme\nchannel: stable\npolicy: careful\nopt_in: {upgrades: patch}\n",
            ),
        ],
    );
    let out = check(dir.path(), &["capped", "--format", "json"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        json.as_array().map(Vec::len),
        Some(1),
        "only the named site"
    );
    assert_eq!(
        rows(&json, "capped")[3],
        row("1.2.1", "eligible", false, Some("soak_time"))
    );
}

#[test]
fn check_holds_a_release_for_approval_until_its_plan_is_approved() {
    let dir = fleet();
    write_tree(
        &dir.path().join("fleet"),
        &[
            (
                "policies/approving.yaml",
                "policy: approving\nextends: base\nrequire_approval: [patch]\n",
            ),
            (
                "sites/capped.yaml",
                "site: capped\nroot: ../site-capped\nproduct: acme\nchannel: stable\npolicy: approving\nopt_in: {upgrades: patch}\n",
            ),
        ],
    );
    let patch = |out: &std::process::Output| -> serde_json::Value {
        assert_eq!(out.status.code(), Some(0), "{}", stderr(out));
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        json[0]["available"][3].clone()
    };
    let held = patch(&check(dir.path(), &["capped", "--format", "json"], &[]));
    assert_eq!(held["version"], "1.2.1");
    assert_eq!(held["automatic"], false);
    assert_eq!(held["held"]["code"], "approval_required");
    let reason = held["held"]["reason"].as_str().expect("reason");
    let digest = reason
        .split_whitespace()
        .find(|w| w.starts_with("sha256:"))
        .unwrap_or_else(|| panic!("no digest in {reason}"));
    write_tree(
        &dir.path().join("fleet"),
        &[(
            "approvals/capped.yaml",
            &format!(
                "approved:\n  - plan_digest: \"{digest}\"\n    by: alice\n    at: 2026-11-01T00:00:00Z\n"
            ),
        )],
    );
    let approved = patch(&check(dir.path(), &["capped", "--format", "json"], &[]));
    assert_eq!(approved["automatic"], true, "{approved}");
    assert!(approved["held"].is_null());
}

#[test]
fn check_prints_plain_text_under_ci() {
    let dir = fleet();
    let coloured = check(dir.path(), &["shop", "--color", "always"], &[]);
    assert_eq!(coloured.status.code(), Some(0), "{}", stderr(&coloured));
    assert!(stdout(&coloured).contains('\x1b'), "{}", stdout(&coloured));
    let out = check(
        dir.path(),
        &["shop", "--color", "always"],
        &[("CI", "true")],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(!text.contains('\x1b'), "{text:?}");
    assert!(text.starts_with("shop  1.2.0\n"), "{text}");
    assert!(
        text.contains(
            "  1.2.1  eligible  same major 1, a patch step\n      applies automatically\n"
        ),
        "{text}"
    );
    assert!(
        text.contains("  2.0.0  questionable  a new major: 1 → 2\n      held (major_upgrade): "),
        "{text}"
    );
}

/// A running `sitekeeper watch --interval 1s` over `dir`, with `env`.
struct Daemon {
    child: Child,
    port: u16,
    log: std::path::PathBuf,
}

impl Daemon {
    fn start(dir: &Path, env: &[(&str, &str)]) -> Self {
        let port = free_port();
        let log = dir.join("watch.log");
        let mut cmd = sitekeeper(&dir.join("state"));
        cmd.current_dir(dir.join("fleet"))
            .args([
                "watch",
                "--interval",
                "1s",
                "--listen",
                &format!("127.0.0.1:{port}"),
            ])
            .env("SITEKEEPER_LOG", "sitekeeper=debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("start watch");
        wait_for_port(port, Duration::from_secs(20));
        Self { child, port, log }
    }

    fn get(&self, path: &str) -> String {
        get(&format!("http://127.0.0.1:{}{path}", self.port)).1
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Reconciles of `site` so far, whatever their result.
    fn reconciles(&self, site: &str) -> u64 {
        let label = format!("site=\"{site}\"");
        self.get("/metrics")
            .lines()
            .filter(|l| l.starts_with("sitekeeper_reconciles_total{") && l.contains(&label))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }

    fn notices(&self, site: &str) -> Vec<serde_json::Value> {
        let status: serde_json::Value =
            serde_json::from_str(&self.get("/status")).expect("status json");
        let sites = status["sites"]
            .as_array()
            .or(status.as_array())
            .cloned()
            .unwrap_or_default();
        sites
            .iter()
            .find(|s| s["site"] == site)
            .and_then(|s| s["notices"].as_array().cloned())
            .unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Only `shop` in the fleet, so the daemon has one site to look at.
fn one_site_fleet() -> tempfile::TempDir {
    let dir = fleet();
    for gone in ["capped", "fresh"] {
        std::fs::remove_file(dir.path().join(format!("fleet/sites/{gone}.yaml"))).expect("rm");
    }
    dir
}

#[test]
fn watch_notifies_each_held_release_once_in_log_metrics_and_status() {
    let dir = one_site_fleet();
    let d = Daemon::start(dir.path(), &[]);
    let log = || d.log();
    until(Duration::from_secs(60), "three reconciles", &log, || {
        d.reconciles("shop") >= 3
    });
    let text = d.log();
    // shop takes patches: 1.2.1 is applied; 1.3.0, 1.4.0-beta.1 and 2.0.0
    // will not be, each notified exactly once over several reconciles.
    let notices: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("upgrade available"))
        .collect();
    assert_eq!(notices.len(), 3, "{text}");
    for v in ["1.3.0", "1.4.0-beta.1", "2.0.0"] {
        assert_eq!(
            notices
                .iter()
                .filter(|l| l.contains(&format!("version={v} ")))
                .count(),
            1,
            "{v}: {text}"
        );
    }
    let metrics = d.get("/metrics");
    assert!(
        metrics.contains("sitekeeper_upgrade_notices_total{site=\"shop\",class=\"eligible\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics
            .contains("sitekeeper_upgrade_notices_total{site=\"shop\",class=\"questionable\"} 1"),
        "{metrics}"
    );
    let shown = d.notices("shop");
    let versions: Vec<&str> = shown.iter().filter_map(|n| n["version"].as_str()).collect();
    assert_eq!(versions, ["2.0.0", "1.4.0-beta.1", "1.3.0"], "{shown:?}");
    assert_eq!(shown[0]["installed"], "1.2.1");
    assert_eq!(shown[0]["held"]["code"], "major_upgrade");
}

#[test]
fn watch_sends_no_notices_with_the_opt_out() {
    let dir = one_site_fleet();
    let d = Daemon::start(dir.path(), &[("SITEKEEPER_NO_NOTICES", "1")]);
    let log = || d.log();
    until(Duration::from_secs(60), "three reconciles", &log, || {
        d.reconciles("shop") >= 3
    });
    let text = d.log();
    assert!(!text.contains("upgrade available"), "{text}");
    assert!(text.contains("converged"), "the daemon did work: {text}");
    assert!(
        !d.get("/metrics")
            .contains("sitekeeper_upgrade_notices_total{")
    );
    assert!(d.notices("shop").is_empty());
    assert!(!dir.path().join("state/shop/notices.json").exists());
}
