//! Helpers shared by the integration tests: running the binary, writing
//! fleets into temporary directories, and making git repositories.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root (where Cargo.toml is).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The `sitekeeper` binary built for these tests, with colour off and a
/// private state dir so that tests never touch the user's.
pub fn sitekeeper(state: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sitekeeper"));
    cmd.env("NO_COLOR", "1")
        .env("SITEKEEPER_STATE_DIR", state)
        .env_remove("CI");
    cmd
}

/// Runs `sitekeeper ARGS` in `dir` and returns its output.
pub fn run_in(dir: &Path, args: &[&str]) -> Output {
    let state = tempfile::tempdir().expect("temp dir");
    sitekeeper(state.path())
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run sitekeeper")
}

/// Stdout as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Stderr as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Writes `files` (relative path, content) under `root`.
pub fn write_tree(root: &Path, files: &[(&str, &str)]) {
    for (rel, content) in files {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, content).expect("write");
    }
}

/// A minimal valid catalog: product `acme`, channel `stable`, one release.
pub const CATALOG: &[(&str, &str)] = &[
    ("catalog.yaml", "product: acme\nchannels:\n  stable: {}\n"),
    (
        "releases/1.0.0.yaml",
        "version: 1.0.0\nchannels: [stable]\nreleased: 2026-01-01T00:00:00Z\npayload:\n  tree: releases/1.0.0/\n",
    ),
    ("releases/1.0.0/index.php", "<?php echo 'hi';\n"),
];

/// A fleet dir `fleet/` with `catalog/` beside it, where the fleet has
/// `fleet.yaml` naming the catalog plus the given extra files.
pub fn fleet_with(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    write_tree(&dir.path().join("catalog"), CATALOG);
    write_tree(
        &dir.path().join("fleet"),
        &[("fleet.yaml", "catalogs:\n  acme:\n    source: ../catalog\n")],
    );
    write_tree(&dir.path().join("fleet"), files);
    dir
}

/// Runs `git ARGS` in `dir`, panicking with its output on failure.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "Test")
        .env("GIT_AUTHOR_EMAIL", "test@example.com")
        .env("GIT_COMMITTER_NAME", "Test")
        .env("GIT_COMMITTER_EMAIL", "test@example.com")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}
