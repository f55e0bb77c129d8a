//! `adopt` run several times at once on one site (issue 15, item 8): the
//! site lock is taken before the site is read, so exactly one records an
//! adopt point and a ledger record, and the others say it is already
//! adopted (exit 2), however their starts interleave.

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
