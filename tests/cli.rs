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
    // Each usage error names what was wrong (and, where it helps, what is
    // allowed) on stderr, prints nothing on stdout, and exits 2.
    let cases: [(&[&str], &[&str]); 6] = [
        (
            &["frobnicate"],
            &[
                "error: unrecognized subcommand 'frobnicate'",
                "Usage: sitekeeper",
            ],
        ),
        (
            &["explain"],
            &[
                "error: the following required arguments were not provided",
                "  <SITE>",
                "Usage: sitekeeper explain ",
            ],
        ),
        (
            &["validate", "--format", "yaml"],
            &[
                "error: invalid value 'yaml' for '--format <FORMAT>'",
                "[possible values: human, json, markdown]",
            ],
        ),
        // Zero sites at once would be a daemon or a batch that never
        // starts a site (the daemon used to run that way, saying jobs=0).
        (
            &["watch", "--fleet", "examples/fleet", "--jobs", "0"],
            &[
                "invalid value '0' for '--jobs <N>'",
                "--jobs 1 takes one site at a time",
            ],
        ),
        (
            &["apply", "--fleet", "examples/fleet", "--jobs", "0"],
            &["invalid value '0' for '--jobs <N>'"],
        ),
        (
            &[
                "adopt",
                "intranet",
                "--detect",
                "--fleet",
                "examples/fleet",
                "--jobs",
                "0",
            ],
            &["invalid value '0' for '--jobs <N>'"],
        ),
    ];
    for (args, says) in cases {
        let out = run_in(&repo_root(), args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        for part in says {
            assert!(err.contains(part), "{args:?} does not say {part:?}:\n{err}");
        }
        assert!(stdout(&out).is_empty(), "{args:?}: {}", stdout(&out));
    }
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
