//! `apply` end to end: concurrency, health checks with rollback and
//! quarantine, stale saved plans, and confinement while writing.

use crate::support::{
    NOW, fleet_with, read_tree, run_fleet as run, sitekeeper, stderr, stdout, write_tree,
};

/// A site on 1.0.0 with a 1.0.1 upgrade and a fix waiting; `health` goes into the site file.
fn setup(site_extra: &str) -> tempfile::TempDir {
    setup_with(site_extra, &[])
}

/// [`setup`], with more files in the fleet (a policy, say).
fn setup_with(site_extra: &str, fleet_files: &[(&str, &str)]) -> tempfile::TempDir {
    let site = format!(
        "site: s\nroot: ../site\nproduct: acme\nchannel: stable\nopt_in: {{upgrades: patch}}\n{site_extra}"
    );
    let mut files = vec![("sites/s.yaml", site.as_str())];
    files.extend_from_slice(fleet_files);
    let dir = fleet_with(&files);
    write_tree(
        &dir.path().join("catalog"),
        &[
            (
                "releases/1.0.1.yaml",
                "version: 1.0.1\nchannels: [stable]\nreleased: 2026-02-01T00:00:00Z\npayload:\n  tree: releases/1.0.1/\n",
            ),
            ("releases/1.0.1/index.php", "<?php echo 'v1.0.1';\n"),
            ("releases/1.0.1/lib/util.php", "<?php function util() {}\n"),
            (
                "fixes/0001-greet.yaml",
                "id: 0001-greet\ntitle: Greet\nreason: Politeness\nseverity: critical\napplies_to: \">=1.0.0\"\nops:\n  - replace: {files: [\"*.php\"], find: \"echo\", with: \"print\"}\n",
            ),
        ],
    );
    write_tree(
        &dir.path().join("site"),
        &[
            ("index.php", "<?php echo 'hi';\n"),
            ("uploads/cat.jpg", "\u{1}jpeg"),
        ],
    );
    let out = run(dir.path(), &["adopt", "s", "--version", "1.0.0"]);
    assert!(out.status.success(), "{}", stderr(&out));
    dir
}

#[test]
fn an_apply_converges_and_a_second_does_nothing() {
    let dir = setup("");
    let out = run(dir.path(), &["apply"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("s: 1.0.1, 2 file(s) changed, point 2"),
        "{}",
        stdout(&out)
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("site/index.php")).unwrap(),
        "<?php print 'v1.0.1';\n"
    );
    assert_eq!(
        std::fs::read(dir.path().join("site/uploads/cat.jpg")).unwrap(),
        b"\x01jpeg",
        "files in no release are never touched"
    );
    let ledger = std::fs::read_to_string(dir.path().join("state/s/ledger.jsonl")).unwrap();
    assert_eq!(ledger.lines().count(), 3, "adopt, upgrade, fix: {ledger}");
    // What a crash while saving a cache leaves; the next apply removes it.
    let torn = dir.path().join("state/s/.tmp-cache-statcache.bin.x1Y2z3");
    std::fs::write(&torn, b"half a cache").unwrap();
    let out = run(dir.path(), &["apply"]);
    assert!(!torn.exists(), "a cache's temp file was left behind");
    assert!(
        stdout(&out).contains("s: nothing to do"),
        "{}",
        stdout(&out)
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("state/s/ledger.jsonl")).unwrap(),
        ledger,
        "nothing to do writes nothing"
    );
}

#[test]
fn four_concurrent_applies_make_one_change() {
    let dir = setup("");
    let children: Vec<_> = (0..4)
        .map(|i| {
            let mut cmd = sitekeeper(&dir.path().join("state"));
            cmd.current_dir(dir.path().join("fleet"))
                .env("SITEKEEPER_NOW", NOW)
                .arg("apply");
            if i % 2 == 0 {
                cmd.arg("--no-wait");
            }
            cmd.stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            matches!(out.status.code(), Some(0) | Some(3)),
            "exit {:?}: {}",
            out.status.code(),
            stderr(&out)
        );
    }
    let ledger = std::fs::read_to_string(dir.path().join("state/s/ledger.jsonl")).unwrap();
    let upgrades = ledger
        .lines()
        .filter(|l| l.contains(r#""kind":"upgrade""#))
        .count();
    assert_eq!(upgrades, 1, "{ledger}");
    let out = run(dir.path(), &["history", "s", "--format", "json"]);
    let history: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(history.as_array().unwrap().len(), 2, "adopt and one apply");
}

#[test]
fn a_failing_health_check_rolls_back_and_quarantines() {
    // Healthy while index.php still says `echo`: the fix makes it unhealthy.
    let dir =
        setup("health:\n  command: [\"sh\", \"-c\", \"grep -q echo index.php\"]\n  timeout: 5s\n");
    let before = read_tree(&dir.path().join("site"));
    let out = run(dir.path(), &["apply"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("health check"), "{}", stderr(&out));
    assert_eq!(
        read_tree(&dir.path().join("site")),
        before,
        "byte-identical after the automatic rollback"
    );
    let ledger = std::fs::read_to_string(dir.path().join("state/s/ledger.jsonl")).unwrap();
    assert!(ledger.contains(r#""result":"rolled_back""#), "{ledger}");
    let hooks = std::fs::read_to_string(dir.path().join("state/s/hooks.log")).unwrap();
    assert!(
        hooks.contains("sh -c grep -q echo index.php FAILED"),
        "the health check's run is in the log: {hooks}"
    );
    let out = run(dir.path(), &["plan", "--format", "json"]);
    let plan: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let held: Vec<&str> = plan["sites"][0]["held"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["code"].as_str().unwrap())
        .collect();
    assert!(held.contains(&"quarantined"), "{held:?}");
    // The release and the fix the change carried are both quarantined.
    let out = run(dir.path(), &["status", "--format", "json"]);
    let status: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(
        status[0]["quarantined"],
        serde_json::json!(["release 1.0.1", "fix 0001-greet"]),
        "{status}"
    );
    // History tells the truth: the change's point failed its check.
    let out = run(dir.path(), &["history", "s", "--format", "json"]);
    let history: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let health: Vec<(&str, &str, &str)> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["kind"].as_str().unwrap(),
                p["health"].as_str().unwrap(),
                p["result"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        health,
        [
            ("rollback", "skipped", "ok"),
            ("apply", "failed", "rolled_back"),
            ("adopt", "skipped", "ok")
        ]
    );
    // An operator can try the release again on purpose; the fix, which
    // is what broke the check, stays quarantined, so the release lands.
    let out = run(dir.path(), &["apply", "--release", "1.0.1"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = run(dir.path(), &["status", "--format", "json"]);
    let status: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(
        status[0]["quarantined"],
        serde_json::json!(["fix 0001-greet"]),
        "a release that succeeded is no longer quarantined: {status}"
    );
    // Lifting the fix tries it again: still unhealthy, so rolled back.
    let out = run(dir.path(), &["apply", "--fix", "0001-greet"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "still unhealthy: {}",
        stderr(&out)
    );
    assert!(
        std::fs::read_to_string(dir.path().join("site/index.php"))
            .unwrap()
            .contains("echo"),
        "rolled back"
    );
}

#[test]
fn a_release_or_fix_named_on_the_command_line_is_applied_or_refused_with_its_reason() {
    let dir = setup("");
    // 1.1.0 is a minor step, above the site's `upgrades: patch`.
    write_tree(
        &dir.path().join("catalog"),
        &[
            (
                "releases/1.1.0.yaml",
                "version: 1.1.0\nchannels: [stable]\nreleased: 2026-03-01T00:00:00Z\npayload:\n  tree: releases/1.1.0/\n",
            ),
            ("releases/1.1.0/index.php", "<?php echo 'v1.1.0';\n"),
        ],
    );
    let site = || read_tree(&dir.path().join("site"));
    let ledger = || std::fs::read_to_string(dir.path().join("state/s/ledger.jsonl")).unwrap();
    // Refused with `says`, exit `code`, and the site and ledger as they were.
    let refused = |args: &[&str], code: i32, says: &str| {
        let (before, recorded) = (site(), ledger());
        let out = run(dir.path(), args);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
        assert_eq!(site(), before, "{args:?} changed the site");
        assert_eq!(ledger(), recorded, "{args:?} wrote a record");
    };
    // A typo is invalid input, named with what there is.
    refused(
        &["apply", "--release", "9.9.9"],
        2,
        "no release 9.9.9 in the catalog of acme (hint: the releases are 1.0.0, 1.0.1, 1.1.0)",
    );
    refused(
        &["apply", "--fix", "0009-nothing"],
        2,
        "no fix 0009-nothing in the catalog of acme (hint: the fixes are 0001-greet)",
    );
    // A real release a gate holds: refused with the gate's reason, and
    // not the rest of the plan (1.0.1 and the fix) instead.
    refused(
        &["apply", "--release", "1.1.0"],
        3,
        "s: release 1.1.0 is not applied: not_opted_in: 1.1.0 is a minor upgrade",
    );
    let out = run(dir.path(), &["apply"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let recorded = ledger();
    // An older release is no way back: that is what rollback is for.
    refused(
        &["apply", "--release", "1.0.0"],
        3,
        "s: release 1.0.0 is not applied: s runs 1.0.1, which is newer",
    );
    // What the site has already is nothing to do.
    for args in [
        &["apply", "--fix", "0001-greet"][..],
        &["apply", "--release", "1.0.1"],
    ] {
        let out = run(dir.path(), args);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        assert!(
            stdout(&out).contains("s: nothing to do"),
            "{}",
            stdout(&out)
        );
    }
    assert_eq!(ledger(), recorded);
}

#[test]
fn a_stale_saved_plan_is_refused_and_writes_nothing() {
    let dir = setup("");
    let plan_file = dir.path().join("plan.json");
    let out = run(dir.path(), &["plan", "--out", plan_file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    std::fs::write(
        dir.path().join("site/index.php"),
        "<?php echo 'edited by hand';\n",
    )
    .unwrap();
    let before = read_tree(&dir.path().join("site"));
    let ledger = std::fs::read_to_string(dir.path().join("state/s/ledger.jsonl")).unwrap();
    let out = run(
        dir.path(),
        &["apply", "--plan", plan_file.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("stale"), "{}", stderr(&out));
    assert_eq!(read_tree(&dir.path().join("site")), before);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("state/s/ledger.jsonl")).unwrap(),
        ledger
    );

    // A fresh plan applies exactly.
    let out = run(dir.path(), &["plan", "--out", plan_file.to_str().unwrap()]);
    assert!(out.status.success());
    let out = run(
        dir.path(),
        &["apply", "--plan", plan_file.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn apply_never_writes_through_links_or_hard_links_and_skips_fifos() {
    let dir = setup("");
    let outside = dir.path().join("outside");
    write_tree(
        &outside,
        &[
            ("victim.php", "<?php echo 'outside';\n"),
            ("hard.php", "<?php echo 'shared';\n"),
        ],
    );
    let site = dir.path().join("site");
    std::os::unix::fs::symlink(outside.join("victim.php"), site.join("linked.php")).unwrap();
    std::fs::hard_link(outside.join("hard.php"), site.join("hard.php")).unwrap();
    crate::support::mkfifo(&site.join("pipe.php"));
    let out = run(dir.path(), &["apply"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(outside.join("victim.php")).unwrap(),
        "<?php echo 'outside';\n"
    );
    assert_eq!(
        std::fs::read_to_string(outside.join("hard.php")).unwrap(),
        "<?php echo 'shared';\n",
        "the shared inode is untouched"
    );
    assert_eq!(
        std::fs::read_to_string(site.join("hard.php")).unwrap(),
        "<?php print 'shared';\n",
        "the site's own name got a new file"
    );
    assert!(
        std::fs::symlink_metadata(site.join("linked.php"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
}

#[test]
fn a_serialized_release_queues_behind_the_host_lock_and_reports_waiting() {
    let dir = setup("");
    write_tree(
        &dir.path().join("catalog"),
        &[(
            "releases/1.0.1.yaml",
            "version: 1.0.1\nchannels: [stable]\nreleased: 2026-02-01T00:00:00Z\nserialize: db-schema\npayload:\n  tree: releases/1.0.1/\n",
        )],
    );
    let locks = dir.path().join("state/locks");
    std::fs::create_dir_all(&locks).unwrap();
    // Another site's upgrade holds the host-wide lock.
    let mut holder = std::process::Command::new("flock")
        .arg("-o")
        .arg(locks.join("db-schema.lock"))
        .args(["sleep", "60"])
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let out = run(dir.path(), &["apply", "--no-wait"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("db-schema"), "{}", stderr(&out));

    let mut waiting = sitekeeper(&dir.path().join("state"));
    let waiting = waiting
        .current_dir(dir.path().join("fleet"))
        .env("SITEKEEPER_NOW", NOW)
        .arg("apply")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status_path = dir.path().join("state/s/status.json");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let phase = std::fs::read(&status_path)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .map(|v| v["phase"].clone());
        if phase == Some(serde_json::Value::from("waiting")) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "status.json never said waiting: {phase:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    holder.kill().unwrap();
    holder.wait().unwrap();
    let out = waiting.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let status: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&status_path).unwrap()).unwrap();
    assert_eq!(status["phase"], "done");
    assert_eq!(status["percent"], 100);
}

/// The points of `s` as `history --format json` shows them: (kind, health).
fn history_health(dir: &std::path::Path) -> Vec<(String, String)> {
    let out = run(dir, &["history", "s", "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let history: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    history
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["kind"].as_str().unwrap().to_owned(),
                p["health"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn retention_keeps_the_newest_healthy_point_through_failed_changes() {
    // Healthy while index.php still says `echo`: the fix breaks the check.
    let dir = setup_with(
        "policy: keep2\nhealth:\n  command: [\"sh\", \"-c\", \"grep -q echo index.php\"]\n  timeout: 5s\n",
        &[(
            "policies/keep2.yaml",
            "policy: keep2\nextends: base\nkeep_rollback_points: 2\n",
        )],
    );
    let before = read_tree(&dir.path().join("site"));
    // Three failed changes: the release with the fix, then the fix twice
    // more, lifted by hand each time.
    for args in [
        &["apply"][..],
        &["apply", "--fix", "0001-greet"],
        &["apply", "--fix", "0001-greet"],
    ] {
        let out = run(dir.path(), args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("rolled back"), "{}", stderr(&out));
    }
    assert_eq!(read_tree(&dir.path().join("site")), before);
    let points = history_health(dir.path());
    assert!(
        points.len() <= 3,
        "2 kept, and the newest healthy one if older: {points:?}"
    );
    assert_eq!(
        points[0],
        ("rollback".to_owned(), "skipped".to_owned()),
        "the newest point, the state the site is in, is kept: {points:?}"
    );
    assert!(
        points
            .iter()
            .filter(|(kind, _)| kind == "apply")
            .all(|(_, health)| health == "failed"),
        "never `passed` for a change whose check failed: {points:?}"
    );
}

#[test]
fn a_failed_preflight_refuses_and_writes_nothing() {
    let dir = setup("health:\n  command: [\"no-such-health-tool\", \"--check\"]\n");
    let state = dir.path().join("state/s");
    let ledger = std::fs::read_to_string(state.join("ledger.jsonl")).unwrap();
    let before = read_tree(&dir.path().join("site"));
    let out = run(dir.path(), &["apply"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("preflight") && stderr(&out).contains("no-such-health-tool"),
        "{}",
        stderr(&out)
    );
    assert_eq!(read_tree(&dir.path().join("site")), before);
    assert_eq!(
        std::fs::read_to_string(state.join("ledger.jsonl")).unwrap(),
        ledger,
        "no ledger record"
    );
    assert_eq!(history_health(dir.path()).len(), 1, "no point");
    assert!(
        !state.join("quarantine.json").exists(),
        "nothing quarantined"
    );
    // plan and status say the same.
    let out = run(dir.path(), &["plan", "--format", "json"]);
    let plan: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let site = &plan["sites"][0];
    assert_eq!(site["actions"], serde_json::json!([]), "{site}");
    assert!(
        site["held"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["code"] == "preflight" && h["item"] == "health.command"),
        "{site}"
    );
    let out = run(dir.path(), &["status", "--format", "json"]);
    let status: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(
        status[0]["preflight"][0]["check"], "health.command",
        "{status}"
    );
}

#[test]
fn a_damaged_quarantine_is_an_error_not_an_empty_one() {
    let dir = setup("");
    let state = dir.path().join("state/s");
    std::fs::write(state.join("quarantine.json"), "{\"releases\": [tru").unwrap();
    let before = read_tree(&dir.path().join("site"));
    let out = run(dir.path(), &["apply"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("quarantine"), "{}", stderr(&out));
    assert_eq!(
        read_tree(&dir.path().join("site")),
        before,
        "nothing applied"
    );
    let out = run(dir.path(), &["status"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
}

#[test]
fn a_check_that_failed_before_the_change_blames_nothing() {
    // The check fails whatever the files say: the fix lands, and history
    // records the check's verdict truthfully.
    let dir = setup("health:\n  command: [\"false\"]\n");
    let out = run(dir.path(), &["apply"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("site/index.php")).unwrap(),
        "<?php print 'v1.0.1';\n"
    );
    assert_eq!(
        history_health(dir.path())[0],
        ("apply".to_owned(), "failed".to_owned())
    );
    let ledger = std::fs::read_to_string(dir.path().join("state/s/ledger.jsonl")).unwrap();
    assert!(
        ledger.contains("it failed before the change too"),
        "{ledger}"
    );
    assert!(!dir.path().join("state/s/quarantine.json").exists());
}
