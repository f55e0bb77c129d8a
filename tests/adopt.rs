//! `adopt` run several times at once on one site (issue 15, item 8): the
//! site lock is taken before the site is read, so exactly one records an
//! adopt point and a ledger record, and the others say it is already
//! adopted (exit 2), however their starts interleave. And many sites
//! adopted by one process (issue 22, item 4).

use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::{NOW, fleet_with, generate_tree, sitekeeper, stderr, stdout, write_files};

/// Concurrent adopts per round.
const ADOPTS: usize = 4;

/// Starts `ADOPTS` adopts of site `s` together and returns their outputs.
fn adopt_together(dir: &std::path::Path) -> Vec<Output> {
    let children: Vec<_> = (0..ADOPTS)
        .map(|_| {
            sitekeeper(&dir.join("state"))
                .current_dir(dir.join("fleet"))
                .env("SITEKEEPER_NOW", NOW)
                .args(["adopt", "s", "--version", "1.0.0"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("the binary runs")
        })
        .collect();
    let started = Instant::now();
    children
        .into_iter()
        .map(|mut child| {
            // A hang fails the test instead of stalling the suite.
            while child.try_wait().expect("wait").is_none() {
                if started.elapsed() > Duration::from_secs(120) {
                    let _ = child.kill();
                    panic!("an adopt hung");
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            child.wait_with_output().expect("output")
        })
        .collect()
}

#[test]
fn concurrent_adopts_record_one_adopt_point() {
    for round in 0..10 {
        let tmp = fleet_with(&[(
            "sites/s.yaml",
            "site: s\nroot: ../site\nproduct: acme\nchannel: stable\n",
        )]);
        let dir = tmp.path();
        // Enough files that reading the site takes a while, which is the
        // window the two checks used to fall into.
        write_files(&dir.join("site"), &generate_tree(round, 300));

        let outs = adopt_together(dir);
        let codes: Vec<Option<i32>> = outs.iter().map(|o| o.status.code()).collect();
        let adopted = codes.iter().filter(|c| **c == Some(0)).count();
        assert_eq!(adopted, 1, "round {round}: exits {codes:?}");
        for out in outs.iter().filter(|o| o.status.code() != Some(0)) {
            assert_eq!(out.status.code(), Some(2), "round {round}: {}", stderr(out));
            assert!(
                stderr(out).contains("s is already adopted (point 1)"),
                "round {round}: {}",
                stderr(out)
            );
        }

        let out = sitekeeper(&dir.join("state"))
            .current_dir(dir.join("fleet"))
            .env("SITEKEEPER_NOW", NOW)
            .args(["history", "s", "--format", "json"])
            .output()
            .expect("the binary runs");
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let history: serde_json::Value =
            serde_json::from_str(&stdout(&out)).expect("history is JSON");
        let points = history.as_array().expect("a list");
        assert_eq!(points.len(), 1, "round {round}: {history:#}");
        assert_eq!(points[0]["kind"], "adopt");

        let ledger = std::fs::read_to_string(dir.join("state/s/ledger.jsonl")).expect("a ledger");
        let adopts = ledger
            .lines()
            .filter(|l| l.contains(r#""kind":"adopt""#))
            .count();
        assert_eq!(adopts, 1, "round {round}: {ledger}");
        assert_eq!(ledger.lines().count(), 1, "round {round}: {ledger}");
    }
}

/// `adopt --all --detect` adopts every site of the fleet in one process,
/// each at the release it resembles; run again, it skips them all; a
/// named site that is adopted already is still refused (exit 2); and a
/// site that cannot be adopted does not stop the others.
#[test]
fn one_process_adopts_many_sites_and_skips_adopted_ones() {
    let sites: Vec<(String, String)> = (0..6)
        .map(|n| {
            (
                format!("sites/s{n}.yaml"),
                format!("site: s{n}\nroot: ../site-{n}\nproduct: acme\nchannel: stable\n"),
            )
        })
        .collect();
    let files: Vec<(&str, &str)> = sites
        .iter()
        .map(|(p, t)| (p.as_str(), t.as_str()))
        .collect();
    let tmp = fleet_with(&files);
    let dir = tmp.path();
    for n in 0..5 {
        write_files(
            &dir.join(format!("site-{n}")),
            &[("index.php".to_owned(), b"<?php echo 'hi';\n".to_vec())].into(),
        );
    }
    // s5's root does not exist.
    let adopt = |args: &[&str]| {
        sitekeeper(&dir.join("state"))
            .current_dir(dir.join("fleet"))
            .env("SITEKEEPER_NOW", NOW)
            .arg("adopt")
            .args(args)
            .output()
            .expect("the binary runs")
    };

    let out = adopt(&["--all", "--detect", "--jobs", "2"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    for n in 0..5 {
        assert!(
            stdout(&out).contains(&format!("adopted s{n} at 1.0.0: point 1")),
            "{}",
            stdout(&out)
        );
        assert!(dir.join(format!("state/s{n}/ledger.jsonl")).exists());
    }
    assert!(
        stderr(&out).contains("error: s5: its root ./../site-5 cannot be opened"),
        "{}",
        stderr(&out)
    );
    assert!(stdout(&out).contains("5 sites adopted, 0 already adopted"));

    std::fs::create_dir(dir.join("site-5")).expect("mkdir");
    let out = adopt(&["--all", "--version", "1.0.0"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("1 site adopted, 5 already adopted"),
        "{}",
        stdout(&out)
    );

    let out = adopt(&["s1", "s2", "--version", "1.0.0"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("s1 is already adopted (point 1)"));
    assert!(stderr(&out).contains("s2 is already adopted (point 1)"));
    for n in 0..6 {
        let ledger = std::fs::read_to_string(dir.join(format!("state/s{n}/ledger.jsonl")))
            .expect("a ledger");
        assert_eq!(ledger.lines().count(), 1, "s{n}: {ledger}");
    }
}
