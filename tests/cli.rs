//! The command line itself: help texts and exit codes of usage errors.

use crate::support::{repo_root, run_in, stderr, stdout};

#[test]
fn help_lists_every_command() {
    let out = run_in(&repo_root(), &["--help"]);
    assert!(out.status.success());
    let text = stdout(&out);
    for cmd in [
        "validate", "explain", "plan", "apply", "adopt", "rollback", "history", "status", "check",
        "approve", "watch", "schema",
    ] {
        assert!(
            text.contains(&format!("  {cmd} ")),
            "--help lacks {cmd}:\n{text}"
        );
    }
    assert!(text.contains("--fleet"), "{text}");
}

#[test]
fn every_subcommand_has_help() {
    for cmd in [
        "validate", "explain", "plan", "apply", "adopt", "rollback", "history", "status", "check",
        "approve", "watch", "schema",
    ] {
        let out = run_in(&repo_root(), &[cmd, "--help"]);
        assert!(
            out.status.success(),
            "{cmd} --help failed: {}",
            stderr(&out)
        );
        assert!(stdout(&out).contains("Usage: sitekeeper"), "{cmd}");
    }
}

#[test]
fn usage_errors_exit_2() {
    let out = run_in(&repo_root(), &["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
    let out = run_in(&repo_root(), &["explain"]);
    assert_eq!(out.status.code(), Some(2));
    let out = run_in(&repo_root(), &["validate", "--format", "yaml"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_missing_fleet_is_invalid_input() {
    let out = run_in(&repo_root(), &["validate", "--fleet", "/nonexistent/fleet"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("cannot open the fleet"),
        "{}",
        stderr(&out)
    );
}
