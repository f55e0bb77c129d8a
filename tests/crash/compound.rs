//! Compound failures (issue #7): a crash while something else is already
//! being undone. An apply fails at step A and its own undo is killed at
//! each later step; an apply whose health check fails is killed at each
//! step, its automatic rollback included; a killed rollback's recovery is
//! killed at each of its steps. After the next command the site is exactly
//! old or new, and the points and ledger agree with it.

use std::path::Path;

use super::{
    Layout, catalog, check, copy, count_steps, each, full, run, scale, scenario_with, trace_steps,
    tree_hash,
};

/// The step names of a run that is expected to fail, from its trace.
fn trace_failing(dir: &Path, args: &[&str], failpoint: Option<&str>) -> Vec<String> {
    let trace = dir.join("trace");
    let mut env = vec![("SITEKEEPER_FAILPOINT_TRACE", trace.to_str().unwrap())];
    if let Some(f) = failpoint {
        env.push(("SITEKEEPER_FAILPOINT", f));
    }
    let out = run(dir, args, &env);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let names = std::fs::read_to_string(&trace)
        .unwrap()
        .lines()
        .map(|l| l.split_once(' ').map_or(l, |(_, n)| n).to_owned())
        .collect();
    std::fs::remove_file(&trace).unwrap();
    names
}

/// Kills the run at every step of `steps` (with the failpoints `extra`
/// also set), runs `status`, and checks the oracle.
fn kill_each(
    from: &Path,
    args: &[&str],
    extra: Option<&str>,
    steps: std::ops::RangeInclusive<usize>,
    old: &std::collections::BTreeMap<String, String>,
    new: &std::collections::BTreeMap<String, String>,
    what: &str,
) {
    let first = *steps.start();
    each(steps.count(), |i| {
        let n = first + i - 1;
        let spec = match extra {
            Some(e) => format!("{e},{n}:kill"),
            None => format!("{n}:kill"),
        };
        let c = copy(from);
        let out = run(c.path(), args, &[("SITEKEEPER_FAILPOINT", &spec)]);
        assert!(!out.status.success(), "{what} {spec}: survived");
        let next = run(c.path(), &["status", "s"], &[]);
        assert!(
            next.status.success(),
            "{what} {spec}, then status: {}",
            String::from_utf8_lossy(&next.stderr)
        );
        check(c.path(), old, new, &format!("{what} {spec}"));
    });
}

#[test]
fn a_crash_while_undoing_a_failed_apply_leaves_old_or_new() {
    let cat = catalog(scale(if full() { 200 } else { 100 }));
    let base = scenario_with(cat.path(), Layout::InPlace, "");
    let old = tree_hash(&base.path().join("site"));
    let applied = copy(base.path());
    let trace = trace_steps(applied.path(), &["apply", "s"]);
    let new = tree_hash(&applied.path().join("site"));
    // Fail among the renames (the undo goes back) and at the first ledger
    // record, after the commit (the undo goes forward).
    let renames = trace.len() * 2 / 3;
    let ledger = 1 + trace.iter().position(|s| s == "ledger").unwrap();
    for at in [renames, ledger] {
        let fault = format!("{at}:eio");
        let steps = trace_failing(copy(base.path()).path(), &["apply", "s"], Some(&fault));
        assert!(
            steps.len() > at + 2,
            "the undo has steps of its own: {} after {at}",
            steps.len()
        );
        eprintln!(
            "apply failing at {at} ({}): undo steps {}..={}, each killed",
            trace[at - 1],
            at + 1,
            steps.len()
        );
        kill_each(
            base.path(),
            &["apply", "s"],
            Some(&fault),
            at + 1..=steps.len(),
            &old,
            &new,
            "undo killed:",
        );
    }
}

#[test]
fn a_crash_in_the_automatic_rollback_after_a_failed_health_check_leaves_old_or_new() {
    let cat = catalog(scale(if full() { 200 } else { 100 }));
    let base = scenario_with(
        cat.path(),
        Layout::InPlace,
        // Passes before the upgrade, which removes the file, and fails
        // after it (a check that fails before would blame nothing).
        "health: {command: [\"test\", \"-e\", \"lib/old/gone.php\"], timeout: 10s}\n",
    );
    let old = tree_hash(&base.path().join("site"));
    // The new tree is what a site without the check gets.
    let healthy = scenario_with(cat.path(), Layout::InPlace, "");
    assert!(run(healthy.path(), &["apply", "s"], &[]).status.success());
    let new = tree_hash(&healthy.path().join("site"));
    let steps = trace_failing(copy(base.path()).path(), &["apply", "s"], None);
    let apply_steps = count_steps(copy(healthy.path()).path(), &["rollback", "s"]);
    assert!(
        steps.iter().filter(|s| *s == "commit point").count() == 2,
        "an apply and its rollback: {steps:?}"
    );
    eprintln!(
        "unhealthy apply: {} steps (its rollback about {apply_steps}), each killed",
        steps.len()
    );
    kill_each(
        base.path(),
        &["apply", "s"],
        None,
        1..=steps.len(),
        &old,
        &new,
        "health rollback killed:",
    );
}

#[test]
fn a_crash_while_recovering_a_killed_rollback_leaves_old_or_new() {
    let cat = catalog(scale(if full() { 200 } else { 100 }));
    let base = scenario_with(cat.path(), Layout::InPlace, "");
    let old = tree_hash(&base.path().join("site"));
    let applied = copy(base.path());
    assert!(run(applied.path(), &["apply", "s"], &[]).status.success());
    let new = tree_hash(&applied.path().join("site"));
    let rb = trace_steps(copy(applied.path()).path(), &["rollback", "s"]);
    let crashed = copy(applied.path());
    let at = rb.len() * 2 / 3;
    let out = run(
        crashed.path(),
        &["rollback", "s"],
        &[("SITEKEEPER_FAILPOINT", &format!("{at}:kill"))],
    );
    assert!(!out.status.success());
    let rec = count_steps(copy(crashed.path()).path(), &["status", "s"]);
    assert!(rec > 4, "recovery has steps: {rec}");
    eprintln!(
        "rollback killed at {at} of {}; its recovery's {rec} steps each killed",
        rb.len()
    );
    kill_each(
        crashed.path(),
        &["status", "s"],
        None,
        1..=rec,
        &old,
        &new,
        "rollback recovery killed:",
    );
}
