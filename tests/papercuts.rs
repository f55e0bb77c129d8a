//! What a new user runs into first (issue 23), through the real binary:
//! sites whose roots overlap are refused at the second site's `root:`
//! line; summaries count and name the sites that failed, in every format;
//! each command exits with the code of SPEC §3 for each way it can end;
//! errors come out beside their site's line; `history` shows times to the
//! second.

use std::path::Path;
use std::process::{Output, Stdio};

use crate::support::{NOW, fleet_with, run_fleet, sitekeeper, stderr, stdout, write_tree};

/// A site file for `name` at `root`, with `extra` lines.
fn site(name: &str, root: &str, extra: &str) -> String {
    format!("site: {name}\nroot: {root}\nproduct: acme\nchannel: stable\n{extra}")
}

/// `validate` on a fleet of `sites` (file, content), with `prepare`
/// making the directories and links beside it first.
fn validate(sites: &[(&str, String)], prepare: impl FnOnce(&Path)) -> Output {
    let files: Vec<(&str, &str)> = sites.iter().map(|(f, c)| (*f, c.as_str())).collect();
    let dir = fleet_with(&files);
    prepare(dir.path());
    run_fleet(dir.path(), &["validate"])
}

/// Asserts `out` is the refusal of site `second` (its `root:` at
/// `file:line:col`) for sharing files with `first`, in `how` words.
fn assert_overlap(out: &Output, at: &str, second: &str, first: &str, how: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let line = err
        .lines()
        .find(|l| l.starts_with(at))
        .unwrap_or_else(|| panic!("no error at {at}:\n{err}"));
    assert!(
        line.contains(&format!(
            "the sites \"{second}\" and \"{first}\" would share files"
        )),
        "{line}"
    );
    assert!(line.contains(how), "{how:?} in {line}");
    assert!(
        line.contains(&format!("(\"{first}\" is defined at sites/")),
        "{line}"
    );
}

#[test]
fn two_sites_with_one_root_are_refused_at_the_second_sites_root_line() {
    let out = validate(
        &[
            ("sites/a.yaml", site("shop", "../sites/shop", "")),
            ("sites/b.yaml", site("shop-copy", "../sites/shop", "")),
        ],
        |_| {},
    );
    assert_overlap(
        &out,
        "sites/b.yaml:2:7:",
        "shop-copy",
        "shop",
        "is the same directory as the root of \"shop\"",
    );
    assert!(
        stderr(&out).contains("sites/a.yaml:2:7"),
        "{}",
        stderr(&out)
    );

    // A root that does not exist yet is compared after `..` is taken.
    let out = validate(
        &[
            ("sites/a.yaml", site("shop", "../sites/shop", "")),
            ("sites/b.yaml", site("other", "../sites/x/../shop", "")),
        ],
        |_| {},
    );
    assert_overlap(&out, "sites/b.yaml:2:7:", "other", "shop", "same directory");
}

#[test]
fn a_root_inside_another_is_refused_in_either_order() {
    let out = validate(
        &[
            ("sites/a.yaml", site("all", "../sites", "")),
            ("sites/b.yaml", site("shop-eu", "../sites/shop-eu", "")),
        ],
        |d| std::fs::create_dir_all(d.join("sites/shop-eu")).unwrap(),
    );
    assert_overlap(
        &out,
        "sites/b.yaml:2:7:",
        "shop-eu",
        "all",
        "is inside the root of \"all\"",
    );

    // Several sites in one file: the second of the list is located.
    let list = "- site: shop-eu\n  root: ../sites/shop-eu\n  product: acme\n  channel: stable\n\
                - site: all\n  root: ../sites\n  product: acme\n  channel: stable\n"
        .to_owned();
    let out = validate(&[("sites/list.yaml", list)], |_| {});
    assert_overlap(&out, "sites/list.yaml:6:9:", "all", "shop-eu", "contains");

    // Siblings whose names share a prefix do not overlap.
    let out = validate(
        &[
            ("sites/a.yaml", site("shop", "../sites/shop", "")),
            ("sites/b.yaml", site("shop-eu", "../sites/shop-eu", "")),
        ],
        |_| {},
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn a_root_reached_through_a_link_counts_as_the_directory_it_points_to() {
    let out = validate(
        &[
            ("sites/a.yaml", site("shop", "../sites/shop", "")),
            ("sites/b.yaml", site("alias", "../www/current", "")),
        ],
        |d| {
            std::fs::create_dir_all(d.join("sites/shop/sub")).unwrap();
            std::fs::create_dir_all(d.join("www")).unwrap();
            std::os::unix::fs::symlink("../sites/shop/sub", d.join("www/current")).unwrap();
        },
    );
    assert_overlap(&out, "sites/b.yaml:2:7:", "alias", "shop", "is inside");
    assert!(
        stderr(&out).contains("../www/current, that is /"),
        "the message shows what the link resolved to: {}",
        stderr(&out)
    );

    // Every command that loads the fleet refuses it, not only validate.
    let dir = fleet_with(&[
        ("sites/a.yaml", &site("shop", "../sites/shop", "")),
        ("sites/b.yaml", &site("alias", "../link", "")),
    ]);
    std::fs::create_dir_all(dir.path().join("sites/shop")).unwrap();
    std::os::unix::fs::symlink("sites/shop", dir.path().join("link")).unwrap();
    for args in [&["plan"][..], &["status"], &["apply", "shop"], &["check"]] {
        let out = run_fleet(dir.path(), args);
        assert_overlap(&out, "sites/b.yaml:2:7:", "alias", "shop", "same directory");
    }
}

#[test]
fn symlink_layouts_are_compared_by_the_directory_of_their_release_directories() {
    let symlink = "layout: symlink\n";
    let layout = |d: &Path| {
        std::fs::create_dir_all(d.join("releases/a-1")).unwrap();
        std::fs::create_dir_all(d.join("releases/b-1")).unwrap();
        std::fs::create_dir_all(d.join("other/c-1")).unwrap();
        std::os::unix::fs::symlink("releases/a-1", d.join("a")).unwrap();
        std::os::unix::fs::symlink("releases/b-1", d.join("b")).unwrap();
        std::os::unix::fs::symlink("other/c-1", d.join("c")).unwrap();
    };
    // Two links into one directory of release directories.
    let out = validate(
        &[
            ("sites/a.yaml", site("a", "../a", symlink)),
            ("sites/b.yaml", site("b", "../b", symlink)),
        ],
        layout,
    );
    assert_overlap(
        &out,
        "sites/b.yaml:2:7:",
        "b",
        "a",
        "the directory of the release directories of \"b\"",
    );
    // An in-place site over that directory.
    let out = validate(
        &[
            ("sites/a.yaml", site("a", "../a", symlink)),
            ("sites/r.yaml", site("r", "../releases", "")),
        ],
        layout,
    );
    assert_overlap(&out, "sites/r.yaml:2:7:", "r", "a", "is the same directory");
    // The layout set by the site's policy counts like the site's own.
    let policy = "policy: linked\nextends: base\ndefaults: {layout: symlink}\n";
    let linked = "policy: linked\n";
    let out = validate(
        &[
            ("policies/linked.yaml", policy.to_owned()),
            ("sites/a.yaml", site("a", "../a", linked)),
            ("sites/b.yaml", site("b", "../b", linked)),
        ],
        layout,
    );
    assert_overlap(&out, "sites/b.yaml:2:7:", "b", "a", "release directories");
    // Release directories kept apart pass.
    let out = validate(
        &[
            ("sites/a.yaml", site("a", "../a", symlink)),
            ("sites/c.yaml", site("c", "../c", symlink)),
        ],
        layout,
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

/// A fleet of `a` and `z` (roots that exist) and `ghost` (a root that does
/// not), none adopted.
fn fleet_with_a_ghost() -> tempfile::TempDir {
    let dir = fleet_with(&[
        ("sites/a.yaml", &site("a", "../site-a", "")),
        ("sites/ghost.yaml", &site("ghost", "../site-ghost", "")),
        ("sites/z.yaml", &site("z", "../site-z", "")),
    ]);
    for name in ["a", "z"] {
        write_tree(
            &dir.path().join(format!("site-{name}")),
            &[("index.php", "<?php echo 'hi';\n")],
        );
    }
    dir
}

#[test]
fn a_site_that_cannot_be_planned_is_counted_and_named_in_every_format() {
    let dir = fleet_with_a_ghost();

    let out = run_fleet(dir.path(), &["plan", "ghost"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "ghost  could not be planned\n\n0 sites change, 0 unchanged, 0 held, 1 failed: ghost\n"
    );
    assert!(
        stderr(&out).contains("ghost: its root") && stderr(&out).contains("cannot be opened"),
        "{}",
        stderr(&out)
    );

    let out = run_fleet(dir.path(), &["plan"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stdout(&out).ends_with("0 sites change, 2 unchanged, 2 held, 1 failed: ghost\n"),
        "{}",
        stdout(&out)
    );

    let out = run_fleet(dir.path(), &["plan", "--format", "json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let failed = json["failed"].as_array().unwrap();
    assert_eq!(failed.len(), 1, "{json}");
    assert_eq!(failed[0]["site"], "ghost");
    let error = failed[0]["error"].as_str().unwrap();
    assert!(error.contains("cannot be opened"), "{error}");
    assert_eq!(json["sites"].as_array().unwrap().len(), 2);
    // The error is on stderr as well, for whoever reads only that.
    assert!(stderr(&out).contains(error), "{}", stderr(&out));

    let out = run_fleet(dir.path(), &["plan", "--format", "markdown"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let md = stdout(&out);
    assert!(
        md.contains("**0 sites change, 2 unchanged, 2 held, 1 failed: ghost**"),
        "{md}"
    );
    let row = md
        .lines()
        .find(|l| l.starts_with("| ghost |"))
        .unwrap_or_else(|| panic!("no table row for ghost:\n{md}"));
    assert!(
        row.contains("**failed**") && row.contains("cannot be opened"),
        "{row}"
    );

    // With no failure, every summary says so.
    let out = run_fleet(dir.path(), &["plan", "a"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).ends_with("0 sites change, 1 unchanged, 1 held, 0 failed\n"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn a_root_that_is_not_a_directory_fails_its_site_and_only_that_one() {
    let dir = fleet_with_a_ghost();
    std::fs::write(dir.path().join("site-ghost"), "a file, not a site\n").unwrap();
    let out = run_fleet(dir.path(), &["plan", "--format", "json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(json["failed"][0]["site"], "ghost", "{json}");
    let planned: Vec<&str> = json["sites"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["site"].as_str().unwrap())
        .collect();
    assert_eq!(planned, ["a", "z"]);
}

#[test]
fn status_and_apply_summaries_count_and_name_the_failed_sites() {
    let dir = fleet_with_a_ghost();
    let out = run_fleet(dir.path(), &["status"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("ghost  could not be read\n"),
        "{}",
        stdout(&out)
    );
    assert!(
        stdout(&out).ends_with("3 sites: 0 with pending changes, 0 with drift, 1 failed: ghost\n"),
        "{}",
        stdout(&out)
    );
    // One error, said once, though both the recovery and the reading met it.
    assert_eq!(
        stderr(&out).matches("ghost: its root").count(),
        1,
        "{}",
        stderr(&out)
    );

    let out = run_fleet(dir.path(), &["adopt", "a", "--version", "1.0.0"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = run_fleet(dir.path(), &["apply"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stdout(&out).ends_with("0 sites changed, 1 unchanged, 1 refused: z, 1 failed: ghost\n"),
        "{}",
        stdout(&out)
    );
}

/// Runs `sitekeeper ARGS` on the fleet in `dir` with stdout and stderr on
/// one pipe, as a terminal shows them, and returns what it showed.
fn on_one_screen(dir: &Path, args: &[&str]) -> String {
    let (reader, writer) = std::io::pipe().unwrap();
    let mut child = sitekeeper(&dir.join("state"))
        .current_dir(dir.join("fleet"))
        .env("SITEKEEPER_NOW", NOW)
        .args(args)
        .stdout(writer.try_clone().unwrap())
        .stderr(writer)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let mut text = String::new();
    std::io::Read::read_to_string(&mut { reader }, &mut text).unwrap();
    child.wait().unwrap();
    text
}

/// Asserts that in `screen` the line after `line` is the error about
/// `site`, and that every error starts a line of its own.
fn assert_error_follows(screen: &str, line: &str, site: &str) {
    let lines: Vec<&str> = screen.lines().collect();
    let at = lines
        .iter()
        .position(|l| *l == line)
        .unwrap_or_else(|| panic!("no line {line:?} in:\n{screen}"));
    assert!(
        lines
            .get(at + 1)
            .is_some_and(|l| l.starts_with(&format!("error: {site}: "))),
        "{site}'s error right after its line:\n{screen}"
    );
    for l in &lines {
        assert!(
            !l.contains("error:") || l.starts_with("error:"),
            "an error in the middle of a line: {l:?} in:\n{screen}"
        );
    }
    assert!(screen.ends_with('\n'), "{screen:?}");
}

#[test]
fn errors_come_out_right_after_their_sites_line_and_never_mid_line() {
    let dir = fleet_with_a_ghost();
    let screen = on_one_screen(dir.path(), &["plan"]);
    assert_error_follows(&screen, "ghost  could not be planned", "ghost");
    assert!(
        screen.find("error: ghost").unwrap() < screen.find("z  1.0.0").unwrap(),
        "{screen}"
    );
    assert!(
        screen.ends_with("1 failed: ghost\n"),
        "the summary comes last: {screen}"
    );

    let screen = on_one_screen(dir.path(), &["status"]);
    assert_error_follows(&screen, "ghost  could not be read", "ghost");
    let z = screen.find("\nz  ").expect("z's line");
    assert!(screen.find("error: ghost").unwrap() < z, "{screen}");

    let screen = on_one_screen(dir.path(), &["check"]);
    assert_error_follows(&screen, "ghost  could not be checked", "ghost");
    assert!(screen.ends_with("z  not adopted\n"), "{screen}");

    let screen = on_one_screen(dir.path(), &["apply"]);
    let lines: Vec<&str> = screen.lines().collect();
    assert_eq!(lines.len(), 4, "{screen}");
    assert!(
        lines[0].starts_with("error: refused: a is not adopted"),
        "{screen}"
    );
    assert!(lines[1].starts_with("error: ghost: its root"), "{screen}");
    assert!(
        lines[2].starts_with("error: refused: z is not adopted"),
        "{screen}"
    );
    assert!(lines[3].starts_with("0 sites changed"), "{screen}");
}

#[test]
fn human_history_shows_times_to_the_second_and_json_keeps_them_whole() {
    let dir = fleet_with(&[("sites/s.yaml", &site("s", "../site", ""))]);
    write_tree(
        &dir.path().join("site"),
        &[("index.php", "<?php echo 'hi';\n")],
    );
    let at = "2026-12-06T22:16:09.123456789Z";
    let out = sitekeeper(&dir.path().join("state"))
        .current_dir(dir.path().join("fleet"))
        .env("SITEKEEPER_NOW", at)
        .args(["adopt", "s", "--version", "1.0.0"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));

    let out = run_fleet(dir.path(), &["history", "s"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.starts_with("point 1   2026-12-06 22:16:09Z  adopt"),
        "{text}"
    );
    assert!(text.contains("#1   2026-12-06 22:16:09Z  adopt"), "{text}");
    assert!(!text.contains(".123"), "no fractions for people: {text}");

    let out = run_fleet(dir.path(), &["history", "s", "--format", "json"]);
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(json[0]["at"], at, "{json}");
}

// ---------------------------------------------------------------------
// Exit codes by meaning (SPEC §3): every command, driven into every code
// it can return.

/// How a case's fleet is prepared; the guard it returns (a held lock) is
/// kept until the command has run.
type Setup = fn(&Path) -> Option<std::fs::File>;

/// One row of the table.
struct Case {
    /// What it shows, for the failure message.
    what: &'static str,
    setup: Setup,
    args: &'static [&'static str],
    code: i32,
    /// Words its output (stdout or stderr) must hold, so that the code is
    /// the one of this cause and not of another.
    says: &'static str,
}

const RELEASE_101: &[(&str, &str)] = &[
    (
        "releases/1.0.1.yaml",
        "version: 1.0.1\nchannels: [stable]\nreleased: 2026-02-01T00:00:00Z\npayload:\n  tree: releases/1.0.1/\n",
    ),
    ("releases/1.0.1/index.php", "<?php echo 'v1.0.1';\n"),
];

/// Site `s` on 1.0.0 (not adopted), opted in to patch upgrades, `extra`
/// in its file; the catalog has 1.0.1.
fn fleet(dir: &Path, extra: &str) {
    write_tree(&dir.join("catalog"), crate::support::CATALOG);
    write_tree(&dir.join("catalog"), RELEASE_101);
    write_tree(
        &dir.join("fleet"),
        &[
            ("fleet.yaml", "catalogs:\n  acme:\n    source: ../catalog\n"),
            (
                "sites/s.yaml",
                &site(
                    "s",
                    "../site",
                    &format!("opt_in: {{upgrades: patch}}\n{extra}"),
                ),
            ),
            (
                "policies/reviewed.yaml",
                "policy: reviewed\nextends: base\nrequire_approval: [patch]\n",
            ),
        ],
    );
    write_tree(&dir.join("site"), &[("index.php", "<?php echo 'hi';\n")]);
}

fn ok(dir: &Path, args: &[&str]) {
    let out = run_fleet(dir, args);
    assert!(out.status.success(), "{args:?}: {}", stderr(&out));
}

fn adopt(dir: &Path) {
    ok(dir, &["adopt", "s", "--version", "1.0.0"]);
}

/// Holds site `s`'s lock, as another sitekeeper at work would.
fn hold_lock(dir: &Path) -> Option<std::fs::File> {
    let state = dir.join("state/s");
    std::fs::create_dir_all(&state).unwrap();
    let file = std::fs::File::create(state.join("lock")).unwrap();
    file.lock().unwrap();
    Some(file)
}

fn fresh(dir: &Path) -> Option<std::fs::File> {
    fleet(dir, "");
    None
}

fn adopted(dir: &Path) -> Option<std::fs::File> {
    fleet(dir, "");
    adopt(dir);
    None
}

fn upgraded(dir: &Path) -> Option<std::fs::File> {
    adopted(dir);
    ok(dir, &["apply", "s"]);
    None
}

fn no_root(dir: &Path) -> Option<std::fs::File> {
    fleet(dir, "");
    std::fs::remove_dir_all(dir.join("site")).unwrap();
    None
}

fn bad_yaml(dir: &Path) -> Option<std::fs::File> {
    fleet(dir, "opt_in: [\n");
    None
}

fn shared_root(dir: &Path) -> Option<std::fs::File> {
    fleet(dir, "");
    write_tree(
        &dir.join("fleet"),
        &[("sites/t.yaml", &site("t", "../site", ""))],
    );
    None
}

fn damaged_ledger(dir: &Path) -> Option<std::fs::File> {
    adopted(dir);
    // A bad line with records after it is damage, not a torn tail.
    let ledger = dir.join("state/s/ledger.jsonl");
    let records = std::fs::read_to_string(&ledger).unwrap();
    std::fs::write(&ledger, format!("this is not a record\n{records}")).unwrap();
    None
}

fn failing_hook(dir: &Path) -> Option<std::fs::File> {
    fleet(dir, "hooks:\n  post_apply: [[\"false\"]]\n");
    adopt(dir);
    None
}

fn locked_adopted(dir: &Path) -> Option<std::fs::File> {
    adopted(dir);
    hold_lock(dir)
}

fn locked_upgraded(dir: &Path) -> Option<std::fs::File> {
    upgraded(dir);
    hold_lock(dir)
}

fn stale_plan(dir: &Path) -> Option<std::fs::File> {
    adopted(dir);
    ok(dir, &["plan", "--out", "../plan.json"]);
    std::fs::write(dir.join("site/index.php"), "<?php echo 'edited';\n").unwrap();
    None
}

fn needs_approval(dir: &Path) -> Option<std::fs::File> {
    fleet(dir, "policy: reviewed\n");
    adopt(dir);
    None
}

fn missing_health_command(dir: &Path) -> Option<std::fs::File> {
    fleet(dir, "health:\n  command: [\"no-such-command-i23\"]\n");
    adopt(dir);
    None
}

/// The catalog as a git repository at one unsigned commit, read at `main`.
fn catalog_in_git(dir: &Path) {
    let catalog = dir.join("catalog");
    crate::support::git(&catalog, &["init", "-q", "-b", "main"]);
    crate::support::git(&catalog, &["add", "-A"]);
    crate::support::git(&catalog, &["commit", "-q", "-m", "unsigned"]);
    write_tree(
        &dir.join("fleet"),
        &[(
            "fleet.yaml",
            "catalogs:\n  acme:\n    source: ../catalog\n    ref: main\n",
        )],
    );
}

/// From now on, the catalog's commit must be signed by a new key (which
/// signed nothing), so the commit [`catalog_in_git`] made is untrusted.
fn require_signatures(dir: &Path) {
    let keys = dir.join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let out = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "vendor", "-f"])
        .arg(keys.join("vendor"))
        .output()
        .expect("ssh-keygen (package openssh-client) must be installed");
    assert!(out.status.success(), "{}", stderr(&out));
    let public = std::fs::read_to_string(keys.join("vendor.pub")).unwrap();
    write_tree(
        &dir.join("fleet"),
        &[
            ("allowed_signers", &format!("vendor {}", public.trim())),
            (
                "fleet.yaml",
                "catalogs:\n  acme:\n    source: ../catalog\n    ref: main\n    allowed_signers: allowed_signers\n",
            ),
        ],
    );
}

fn untrusted(dir: &Path) -> Option<std::fs::File> {
    fleet(dir, "");
    catalog_in_git(dir);
    require_signatures(dir);
    None
}

fn adopted_then_untrusted(dir: &Path) -> Option<std::fs::File> {
    fleet(dir, "");
    catalog_in_git(dir);
    adopt(dir);
    require_signatures(dir);
    None
}

/// Local changes under `drift: block`: held, like an approval missing;
/// a refusal by the site's own rule (SPEC §4.4), so exit 3.
fn drift_blocked(dir: &Path) -> Option<std::fs::File> {
    fleet(dir, "drift: block\n");
    adopt(dir);
    std::fs::write(dir.join("site/index.php"), "<?php echo 'edited';\n").unwrap();
    None
}

const DIGEST: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

// One row a line, to read as the table it is.
#[rustfmt::skip]
const CASES: &[Case] = &[
    // validate
    Case { what: "a valid fleet", setup: fresh, args: &["validate"], code: 0, says: "valid: 1 site" },
    Case { what: "a key twice", setup: bad_yaml, args: &["validate"], code: 2, says: "appears twice" },
    Case { what: "two sites, one root", setup: shared_root, args: &["validate"], code: 2, says: "would share files" },
    // explain
    Case { what: "a site", setup: fresh, args: &["explain", "s"], code: 0, says: "stock policy base" },
    Case { what: "no such site", setup: fresh, args: &["explain", "nope"], code: 2, says: "no site named \"nope\"" },
    // plan
    Case { what: "a plan", setup: adopted, args: &["plan"], code: 0, says: "1 site changes" },
    Case { what: "nothing pending", setup: upgraded, args: &["plan", "--detailed-exitcode"], code: 0, says: "0 sites change" },
    Case { what: "an upgrade pending", setup: adopted, args: &["plan", "--detailed-exitcode"], code: 4, says: "upgrade to 1.0.1" },
    Case { what: "an untrusted catalog: held", setup: untrusted, args: &["plan"], code: 0, says: "[untrusted_source]" },
    Case { what: "a root that is missing", setup: no_root, args: &["plan"], code: 1, says: "1 failed: s" },
    Case { what: "no such site", setup: fresh, args: &["plan", "nope"], code: 2, says: "no site named" },
    Case { what: "a key twice", setup: bad_yaml, args: &["plan"], code: 2, says: "appears twice" },
    // check
    Case { what: "upgrades listed", setup: adopted, args: &["check"], code: 0, says: "1.0.1" },
    Case { what: "a root that is missing", setup: no_root, args: &["check"], code: 1, says: "cannot be opened" },
    Case { what: "no such site", setup: fresh, args: &["check", "nope"], code: 2, says: "no site named" },
    // status
    Case { what: "a status", setup: adopted, args: &["status"], code: 0, says: "0 failed" },
    Case { what: "a root that is missing", setup: no_root, args: &["status"], code: 1, says: "1 failed: s" },
    Case { what: "no such site", setup: fresh, args: &["status", "nope"], code: 2, says: "no site named" },
    // history
    Case { what: "points", setup: adopted, args: &["history", "s"], code: 0, says: "point 1" },
    Case { what: "a damaged ledger", setup: damaged_ledger, args: &["history", "s"], code: 1, says: "not a ledger record" },
    Case { what: "no such site", setup: fresh, args: &["history", "nope"], code: 2, says: "no site named" },
    // adopt
    Case { what: "adopted", setup: fresh, args: &["adopt", "s", "--version", "1.0.0"], code: 0, says: "adopted s at 1.0.0" },
    Case { what: "a root that is missing", setup: no_root, args: &["adopt", "s", "--version", "1.0.0"], code: 1, says: "cannot be opened" },
    Case { what: "adopted already", setup: adopted, args: &["adopt", "s", "--version", "1.0.0"], code: 2, says: "already adopted" },
    Case { what: "a release the catalog lacks", setup: fresh, args: &["adopt", "s", "--version", "9.9.9"], code: 2, says: "no release 9.9.9" },
    Case { what: "an untrusted catalog commit", setup: untrusted, args: &["adopt", "s", "--version", "1.0.0"], code: 3, says: "of the catalog acme is not signed" },
    // apply
    Case { what: "an upgrade", setup: adopted, args: &["apply", "s"], code: 0, says: "1 site changed" },
    Case { what: "nothing to do", setup: upgraded, args: &["apply", "s"], code: 0, says: "s: nothing to do" },
    Case { what: "a hook fails, rolled back", setup: failing_hook, args: &["apply", "s"], code: 1, says: "the change was rolled back" },
    Case { what: "a root that is missing", setup: no_root, args: &["apply", "s"], code: 1, says: "cannot be opened" },
    Case { what: "not a version", setup: adopted, args: &["apply", "s", "--release", "1.0"], code: 2, says: "not a full version" },
    Case { what: "a plan file that is missing", setup: adopted, args: &["apply", "--plan", "../nope.json"], code: 2, says: "nope.json" },
    Case { what: "a key twice", setup: bad_yaml, args: &["apply", "s"], code: 2, says: "appears twice" },
    Case { what: "not adopted", setup: fresh, args: &["apply", "s"], code: 3, says: "refused: s is not adopted" },
    Case { what: "a stale plan", setup: stale_plan, args: &["apply", "--plan", "../plan.json"], code: 3, says: "the saved plan is stale" },
    Case { what: "the lock held, --no-wait", setup: locked_adopted, args: &["apply", "s", "--no-wait"], code: 3, says: "holds the site's lock" },
    Case { what: "approval missing", setup: needs_approval, args: &["apply", "s"], code: 3, says: "requires an approved plan" },
    Case { what: "an untrusted catalog commit", setup: adopted_then_untrusted, args: &["apply", "s"], code: 3, says: "of the catalog acme is not signed" },
    Case { what: "drift: block", setup: drift_blocked, args: &["apply", "s"], code: 3, says: "with drift: block nothing is done" },
    Case { what: "a failed preflight", setup: missing_health_command, args: &["apply", "s"], code: 3, says: "preflight failed" },
    // rollback
    Case { what: "back to point 1", setup: upgraded, args: &["rollback", "s"], code: 0, says: "1 site changed" },
    Case { what: "a point that does not exist", setup: upgraded, args: &["rollback", "s", "--to", "99"], code: 2, says: "no point 99" },
    Case { what: "only the first point", setup: adopted, args: &["rollback", "s"], code: 2, says: "nothing to roll back to" },
    Case { what: "not adopted: no points", setup: fresh, args: &["rollback", "s"], code: 2, says: "no rollback points" },
    Case { what: "the lock held, --no-wait", setup: locked_upgraded, args: &["rollback", "s", "--to", "1", "--no-wait"], code: 3, says: "holds the site's lock" },
    // approve
    Case { what: "a digest", setup: fresh, args: &["approve", "s", "--digest", DIGEST, "--by", "alice"], code: 0, says: "approved sha256:" },
    Case { what: "not a digest", setup: fresh, args: &["approve", "s", "--digest", "sha256:abc", "--by", "alice"], code: 2, says: "not a plan digest" },
    // schema
    Case { what: "written", setup: fresh, args: &["schema", "--out", "../schema"], code: 0, says: "wrote 7 schemas" },
    Case { what: "an unknown option", setup: fresh, args: &["schema", "--bogus"], code: 2, says: "--bogus" },
    // watch (its run ending in 0 on SIGTERM is tests/watch.rs's)
    Case { what: "an interval of 0", setup: fresh, args: &["watch", "--interval", "0s"], code: 2, says: "--interval" },
    Case { what: "a key twice", setup: bad_yaml, args: &["watch"], code: 2, says: "appears twice" },
];

#[test]
fn every_command_exits_with_the_code_of_what_happened() {
    let mut wrong = Vec::new();
    for case in CASES {
        let dir = tempfile::tempdir().unwrap();
        let guard = (case.setup)(dir.path());
        let out = run_fleet(dir.path(), case.args);
        drop(guard);
        let said = format!("{}{}", stdout(&out), stderr(&out));
        if out.status.code() != Some(case.code) || !said.contains(case.says) {
            wrong.push(format!(
                "{:?} ({}): exit {:?}, expected {} saying {:?}\n  stdout: {}\n  stderr: {}",
                case.args,
                case.what,
                out.status.code(),
                case.code,
                case.says,
                stdout(&out).trim_end(),
                stderr(&out).trim_end()
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn a_point_that_does_not_exist_is_invalid_input_with_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    upgraded(dir.path());
    let out = run_fleet(dir.path(), &["rollback", "s", "--to", "99"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("s: it has no point 99 (hint: sitekeeper history s)"),
        "{err}"
    );
    assert!(!err.contains("refused"), "not a refusal: {err}");
    // Nor a failure: nothing was tried.
    assert!(
        stdout(&out).contains("0 refused, 0 failed, 1 invalid: s"),
        "{}",
        stdout(&out)
    );
    // Nothing was done: still at point 2 of 2.
    let out = run_fleet(dir.path(), &["history", "s", "--format", "json"]);
    let json: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 2, "{json}");
}

/// Issue 23, point 4: every point and record takes the time it is made,
/// the injected `SITEKEEPER_NOW` being the start. A change whose health
/// check takes a second, fails, and is rolled back: the rollback point is
/// at least that second after the change's point.
#[test]
fn a_rollback_after_a_slow_health_check_is_later_than_its_change() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    fleet(
        dir,
        "health: {command: [sh, -c, 'sleep 1; grep -q hi index.php']}\n",
    );
    adopt(dir);
    let out = run_fleet(dir, &["apply"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let out = run_fleet(dir, &["history", "s", "--format", "json"]);
    let points: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let at = |i: usize| -> jiff::Timestamp { points[i]["at"].as_str().unwrap().parse().unwrap() };
    assert_eq!(points[0]["kind"], "rollback", "{points}");
    assert_eq!(points[1]["kind"], "apply", "{points}");
    let gap = at(0).duration_since(at(1));
    assert!(
        gap >= jiff::SignedDuration::from_secs(1),
        "the rollback is only {gap:?} after its change: {points}"
    );
    assert!(at(1) >= NOW.parse::<jiff::Timestamp>().unwrap(), "{points}");
}

/// A catalog that cannot be reached is an operation that failed (exit 1),
/// not invalid input: the fleet is fine, and the same command later may
/// succeed.
#[test]
fn an_unreachable_catalog_fails_with_exit_1_not_2() {
    // A port nothing listens on: bound, then closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    write_tree(
        &dir.path().join("fleet"),
        &[
            (
                "fleet.yaml",
                &format!("catalogs:\n  acme:\n    source: git://127.0.0.1:{port}/catalog.git\n"),
            ),
            ("sites/s.yaml", &site("s", "../site", "")),
        ],
    );
    for args in [&["validate"][..], &["plan"], &["status"]] {
        let out = run_fleet(dir.path(), args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("cannot read the catalog"),
            "{}",
            stderr(&out)
        );
    }
}
