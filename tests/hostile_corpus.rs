//! The hostile-input corpus (issue 7, part 5): each directory under
//! `tests/fixtures/hostile/` is an attack on sitekeeper's confinement or
//! robustness, run through the real binary. Every case must end in a clear
//! refusal or in the safe outcome its `expected` file describes, with no
//! write outside the site root (a canary tree beside it is hashed before and
//! after), no panic, no hang (every command has a deadline), and no byte of
//! the canary's secret in the site or in the state dir.
//!
//! # A case
//!
//! Each case runs in a fresh world: `_base/` (a catalog with releases 1.0.0
//! and 1.0.1, a fleet with site `s` at `../site`, the site at 1.0.0, and the
//! canary `outside/`) with the case's own `catalog/`, `fleet/`, `site/` and
//! `outside/` copied over it. Text files may say `@OUTSIDE@` (the canary's
//! absolute path), `@SITE@` (the site root's) and `@SHA256@` (the archive's
//! checksum). What git cannot hold is built from the case's `setup` file,
//! one directive a line (arguments take `\xNN`, `\u{…}`, `\n`, `\t`, `\s` for
//! a space and `\\`):
//!
//! | directive | builds |
//! | --- | --- |
//! | `symlink PATH TARGET` | a symbolic link |
//! | `hardlink PATH EXISTING` | a hard link |
//! | `fifo PATH`, `socket PATH` | a FIFO, a listening Unix socket |
//! | `chardev PATH MAJOR MINOR` | a device node (root only; else the case is skipped, said so) |
//! | `file PATH CONTENT` | a file whose name or content cannot live in git (non-UTF-8, NFD) |
//! | `big PATH BYTES TEXT [END]` | a file of `TEXT` repeated to `BYTES` bytes, then `END` |
//! | `remove PATH` | removes a file of the base |
//! | `archive PATH SHAPE` | an archive of a named hostile shape (see [`archive`]) |
//! | `git-catalog` | the catalog as a git repo (one unsigned commit on `main`) |
//! | `forged-plan FROM TO` | adopts, saves the plan as `fleet/plan.json` and replaces `FROM` with `TO` in it |
//! | `signed-catalog HOW` | the catalog as a git repo whose head is `alice`-signed, `mallory`-signed, `unsigned`, `tampered` or `garbage`-signed; only Alice is allowed |
//!
//! All paths are relative to the world (`site/…`, `catalog/…`, `outside/…`).
//!
//! The `expected` file runs commands (`$ ARGS`, from the fleet directory,
//! at a fixed instant; `now TIME` moves it, for the commands that follow,
//! to any RFC 3339 time) and checks each: `exit N`, `stderr TEXT` and
//! `stdout TEXT` (fragments), `unchanged` (the site is exactly as it was
//! before this command), then the state after it: `file PATH CONTENT`,
//! `absent PATH`, `link PATH TARGET`, `size PATH BYTES`, `mode PATH OCTAL`.
//! `#` starts a comment.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::{git, repo_root, sha256, sitekeeper, stderr, stdout};

/// Planted in the canary: it must never show up in the site or the state.
const SECRET: &str = "TOPSECRET-canary";

/// The corpus must stay at least this large (issue 7).
const MIN_CASES: usize = 60;

/// A command that runs longer than this has hung (a FIFO opened, a regex
/// backtracking, a bomb expanded): the case fails.
const DEADLINE: Duration = Duration::from_secs(30);

#[test]
fn every_hostile_case_is_refused_or_safe_with_no_write_outside() {
    let corpus = repo_root().join("tests/fixtures/hostile");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&corpus)
        .expect("corpus dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.is_dir() && !name(p).starts_with('_'))
        .collect();
    // HOSTILE_ONLY=word runs the cases whose names contain it (to debug one).
    let only = std::env::var("HOSTILE_ONLY").ok();
    cases.retain(|p| only.as_ref().is_none_or(|w| name(p).contains(w.as_str())));
    cases.sort();
    assert!(
        cases.len() >= MIN_CASES || only.is_some(),
        "the corpus should hold at least 60 cases, found {}",
        cases.len()
    );
    let started = Instant::now();
    let mut failures = Vec::new();
    let mut skipped = Vec::new();
    for case in &cases {
        match run_case(&corpus, case) {
            Ok(Outcome::Passed) => {}
            Ok(Outcome::Skipped(why)) => skipped.push(format!("{}: {why}", name(case))),
            Err(why) => failures.push(format!("{}: {why}", name(case))),
        }
    }
    for s in &skipped {
        eprintln!("hostile corpus: skipped {s}");
    }
    eprintln!(
        "hostile corpus: {} cases, {} skipped, {} failed, in {:.1?}",
        cases.len(),
        skipped.len(),
        failures.len(),
        started.elapsed()
    );
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}

fn name(p: &Path) -> String {
    p.file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned()
}

enum Outcome {
    Passed,
    Skipped(String),
}

/// Builds the world of `case`, runs its commands and checks every outcome.
fn run_case(corpus: &Path, case: &Path) -> Result<Outcome, String> {
    let tmp = crate::support::fast_tempdir();
    let world = tmp.path();
    copy_tree(&corpus.join("_base"), world)?;
    for part in ["catalog", "fleet", "site", "outside"] {
        if case.join(part).is_dir() {
            copy_tree(&case.join(part), &world.join(part))?;
        }
    }
    if let Ok(setup) = std::fs::read_to_string(case.join("setup")) {
        for (n, line) in setup.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            match directive(world, line) {
                Ok(None) => {}
                Ok(Some(skip)) => return Ok(Outcome::Skipped(skip)),
                Err(e) => return Err(format!("setup line {}: {e}", n + 1)),
            }
        }
    }
    substitute(world)?;
    let expected = std::fs::read_to_string(case.join("expected"))
        .map_err(|e| format!("no expected file: {e}"))?;

    let canary = snapshot(&world.join("outside"));
    let mut before = snapshot(&world.join("site"));
    let mut last: Option<(String, Output)> = None;
    let mut clock = crate::support::NOW.to_owned();
    let mut checks = 0;
    for (n, line) in expected.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = |e: String| format!("expected line {}: {line}\n  {e}", n + 1);
        if let Some(time) = line.strip_prefix("now ") {
            clock = time.trim().to_owned();
            continue;
        }
        if let Some(args) = line.strip_prefix("$ ") {
            before = snapshot(&world.join("site"));
            let out = run_at(world, args, &clock).map_err(at)?;
            // Whatever the case expects, these hold after every command.
            if out.status.code() == Some(101) || stderr(&out).contains("panicked") {
                return Err(at(format!("panicked:\n{}", stderr(&out))));
            }
            if snapshot(&world.join("outside")) != canary {
                return Err(at(format!(
                    "the canary outside the root changed:\n{}",
                    diff(&canary, &snapshot(&world.join("outside")))
                )));
            }
            // HOSTILE_SHOW=1 prints every command's result (to write an expected file).
            if std::env::var_os("HOSTILE_SHOW").is_some() {
                eprintln!(
                    "{}: $ {args}\n  exit {:?}\n  stdout: {}\n  stderr: {}\n  site: {}",
                    name(case),
                    out.status.code(),
                    stdout(&out).trim().replace('\n', "\n          "),
                    stderr(&out).trim().replace('\n', "\n          "),
                    diff(&before, &snapshot(&world.join("site"))).replace('\n', "\n        ")
                );
            }
            last = Some((args.to_owned(), out));
            continue;
        }
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        let rest = &rest.replace("@OUTSIDE@", &world.join("outside").display().to_string());
        checks += 1;
        let out = last.as_ref().map(|(_, o)| o);
        let shown = || {
            out.map(|o| {
                format!(
                    "exit {:?}\nstdout:\n{}\nstderr:\n{}",
                    o.status.code(),
                    stdout(o),
                    stderr(o)
                )
            })
            .unwrap_or_default()
        };
        let ok = match word {
            "exit" => out.and_then(|o| o.status.code()).map(|c| c.to_string()) == Some(rest.into()),
            "stderr" => out.is_some_and(|o| stderr(o).contains(&unescape_str(rest))),
            "stdout" => out.is_some_and(|o| stdout(o).contains(&unescape_str(rest))),
            "unchanged" => snapshot(&world.join("site")) == before,
            "file" => {
                let (path, content) = rest.split_once(' ').unwrap_or((rest, ""));
                let path = world.join(os(path));
                std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_file())
                    && std::fs::read(&path).ok() == Some(unescape(content))
            }
            "absent" => std::fs::symlink_metadata(world.join(os(rest))).is_err(),
            "size" => {
                let (path, size) = rest.split_once(' ').unwrap_or((rest, ""));
                std::fs::symlink_metadata(world.join(os(path)))
                    .is_ok_and(|m| m.is_file() && m.len().to_string() == size)
            }
            "mode" => {
                use std::os::unix::fs::PermissionsExt;
                let (path, mode) = rest.split_once(' ').unwrap_or((rest, ""));
                std::fs::symlink_metadata(world.join(os(path)))
                    .is_ok_and(|m| format!("{:o}", m.permissions().mode() & 0o7777) == mode)
            }
            "link" => {
                let (path, target) = rest.split_once(' ').unwrap_or((rest, ""));
                std::fs::read_link(world.join(os(path))).ok() == Some(PathBuf::from(os(target)))
            }
            other => return Err(at(format!("unknown check {other:?}"))),
        };
        if !ok {
            let extra = if word == "unchanged" {
                diff(&before, &snapshot(&world.join("site")))
            } else {
                String::new()
            };
            return Err(at(format!("does not hold{extra}\n{}", shown())));
        }
    }
    if checks == 0 {
        return Err("the expected file checks nothing".into());
    }
    // Nothing of the canary's secret was copied into the site or the state.
    if let Some(p) = leaked(&world.join("site")).or_else(|| leaked(&world.join("state"))) {
        return Err(format!("the canary's secret reached {}", p.display()));
    }
    let points = world.join("state/s/points.git");
    if points.is_dir() {
        let objects = std::process::Command::new("git")
            .arg("--git-dir")
            .arg(&points)
            .args(["cat-file", "--batch-all-objects", "--batch"])
            .output()
            .map_err(|e| format!("git cat-file: {e}"))?;
        if String::from_utf8_lossy(&objects.stdout).contains(SECRET) {
            return Err("the canary's secret reached the rollback points".into());
        }
    }
    Ok(Outcome::Passed)
}

/// Runs `sitekeeper ARGS` from the fleet dir, killing it at the deadline.
fn run(world: &Path, args: &str) -> Result<Output, String> {
    run_at(world, args, crate::support::NOW)
}

/// [`run`] with the clock at `now`.
fn run_at(world: &Path, args: &str, now: &str) -> Result<Output, String> {
    let args: Vec<String> = args.split_whitespace().map(unescape_str).collect();
    let mut child = sitekeeper(&world.join("state"))
        .current_dir(world.join("fleet"))
        .env("SITEKEEPER_NOW", now)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn: {e}"))?;
    // Drain the pipes on threads, so a chatty child cannot block on a full pipe.
    let mut out_pipe = child.stdout.take().expect("piped");
    let mut err_pipe = child.stderr.take().expect("piped");
    let out_thread = std::thread::spawn(move || {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut out_pipe, &mut v).map(|_| v)
    });
    let err_thread = std::thread::spawn(move || {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut err_pipe, &mut v).map(|_| v)
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if started.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "sitekeeper {args:?} hung: killed after {DEADLINE:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Ok(Output {
        status,
        stdout: out_thread
            .join()
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default(),
        stderr: err_thread
            .join()
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default(),
    })
}

/// What a tree holds, not following links: per path, its kind, mode, size,
/// modification time, and content hash or link target. Any write shows:
/// new or removed entries change a directory's mtime.
type Snapshot = BTreeMap<PathBuf, String>;

fn snapshot(root: &Path) -> Snapshot {
    use std::os::unix::fs::MetadataExt;
    let mut out = Snapshot::new();
    let mut stack = vec![root.to_owned()];
    while let Some(p) = stack.pop() {
        let Ok(m) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        let rel = p.strip_prefix(root).unwrap_or(&p).to_owned();
        let ft = m.file_type();
        let what = if ft.is_dir() {
            if let Ok(entries) = std::fs::read_dir(&p) {
                stack.extend(entries.filter_map(|e| e.ok().map(|e| e.path())));
            }
            // A directory's mtime moves with any entry made or removed in
            // it, even one removed again: a write outside cannot hide.
            format!(
                "dir {:o} {}",
                m.mode(),
                m.mtime_nsec() + m.mtime() * 1_000_000_000
            )
        } else if ft.is_symlink() {
            format!("link {:?}", std::fs::read_link(&p).unwrap_or_default())
        } else if ft.is_file() {
            let bytes = std::fs::read(&p).unwrap_or_default();
            format!(
                "file {:o} {} {} {}",
                m.mode(),
                m.len(),
                m.mtime_nsec() + m.mtime() * 1_000_000_000,
                sha256(&bytes)
            )
        } else {
            format!("special {:o} {}", m.mode(), m.rdev())
        };
        out.insert(rel, what);
    }
    out
}

fn diff(a: &Snapshot, b: &Snapshot) -> String {
    let mut s = String::new();
    for (k, v) in a {
        match b.get(k) {
            None => s.push_str(&format!("\n  - {}: {v}", k.display())),
            Some(w) if w != v => s.push_str(&format!("\n  ~ {}: {v} -> {w}", k.display())),
            _ => {}
        }
    }
    for (k, v) in b {
        if !a.contains_key(k) {
            s.push_str(&format!("\n  + {}: {v}", k.display()));
        }
    }
    s
}

/// The first regular file under `root` (links not followed) holding the secret.
fn leaked(root: &Path) -> Option<PathBuf> {
    let mut stack = vec![root.to_owned()];
    while let Some(p) = stack.pop() {
        let m = std::fs::symlink_metadata(&p).ok()?;
        if m.is_dir() {
            if let Ok(entries) = std::fs::read_dir(&p) {
                stack.extend(entries.filter_map(|e| e.ok().map(|e| e.path())));
            }
        } else if m.is_file()
            && std::fs::read(&p)
                .is_ok_and(|b| b.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()))
        {
            return Some(p);
        }
    }
    None
}

/// Copies a fixture tree (regular files and directories only).
fn copy_tree(from: &Path, to: &Path) -> Result<(), String> {
    std::fs::create_dir_all(to).map_err(|e| format!("{}: {e}", to.display()))?;
    for entry in std::fs::read_dir(from).map_err(|e| format!("{}: {e}", from.display()))? {
        let entry = entry.map_err(|e| e.to_string())?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        if entry.file_type().map_err(|e| e.to_string())?.is_dir() {
            copy_tree(&src, &dst)?;
        } else {
            std::fs::copy(&src, &dst).map_err(|e| format!("{}: {e}", src.display()))?;
        }
    }
    Ok(())
}

/// Replaces the placeholders in every text file of the world's inputs.
fn substitute(world: &Path) -> Result<(), String> {
    let outside = world.join("outside").display().to_string();
    let site = world.join("site").display().to_string();
    let archive_sha = std::fs::read_to_string(world.join(".archive-sha256")).unwrap_or_default();
    for part in ["catalog", "fleet"] {
        let mut stack = vec![world.join(part)];
        while let Some(p) = stack.pop() {
            let Ok(m) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            if m.is_dir() {
                if let Ok(entries) = std::fs::read_dir(&p) {
                    stack.extend(entries.filter_map(|e| e.ok().map(|e| e.path())));
                }
            } else if m.is_file()
                && m.len() < 1 << 20
                && let Ok(text) = std::fs::read_to_string(&p)
                && text.contains('@')
            {
                let new = text
                    .replace("@OUTSIDE@", &outside)
                    .replace("@SITE@", &site)
                    .replace("@SHA256@", &archive_sha);
                if new != text {
                    std::fs::write(&p, new).map_err(|e| e.to_string())?;
                }
            }
        }
    }
    Ok(())
}

/// `\xNN`, `\u{…}`, `\n`, `\t`, `\s` (space), `\0` and `\\` to bytes.
fn unescape(s: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            let mut buf = [0; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            continue;
        }
        match chars.next() {
            Some('n') => out.push(b'\n'),
            Some('t') => out.push(b'\t'),
            Some('s') => out.push(b' '),
            Some('0') => out.push(0),
            Some('x') => {
                let hex: String = chars.by_ref().take(2).collect();
                out.push(u8::from_str_radix(&hex, 16).expect("\\xNN"));
            }
            Some('u') => {
                let code: String = chars
                    .by_ref()
                    .skip_while(|c| *c == '{')
                    .take_while(|c| *c != '}')
                    .collect();
                let c = char::from_u32(u32::from_str_radix(&code, 16).expect("\\u{hex}"))
                    .expect("a code point");
                let mut buf = [0; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
            Some(other) => {
                let mut buf = [0; 4];
                out.extend_from_slice(other.encode_utf8(&mut buf).as_bytes());
            }
            None => out.push(b'\\'),
        }
    }
    out
}

fn unescape_str(s: &str) -> String {
    String::from_utf8_lossy(&unescape(s)).into_owned()
}

fn os(s: &str) -> OsString {
    OsString::from_vec(unescape(s))
}

/// Runs one `setup` directive; `Some(why)` skips the case.
fn directive(world: &Path, line: &str) -> Result<Option<String>, String> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let arg = |i: usize| -> Result<PathBuf, String> {
        words
            .get(i)
            .map(|w| world.join(os(w)))
            .ok_or_else(|| format!("{line:?} needs argument {i}"))
    };
    let raw = |i: usize| -> Result<String, String> {
        words
            .get(i)
            .map(|w| w.replace("@OUTSIDE@", &world.join("outside").display().to_string()))
            .ok_or_else(|| format!("{line:?} needs argument {i}"))
    };
    let parent = |p: &Path| std::fs::create_dir_all(p.parent().expect("under the world"));
    let e = |e: std::io::Error| format!("{line}: {e}");
    match words[0] {
        "symlink" => {
            let path = arg(1)?;
            parent(&path).map_err(e)?;
            let _ = std::fs::remove_file(&path);
            std::os::unix::fs::symlink(os(&raw(2)?), &path).map_err(e)?;
        }
        "hardlink" => {
            let path = arg(1)?;
            parent(&path).map_err(e)?;
            let _ = std::fs::remove_file(&path);
            std::fs::hard_link(arg(2)?, &path).map_err(e)?;
        }
        "fifo" => {
            let path = arg(1)?;
            parent(&path).map_err(e)?;
            let _ = std::fs::remove_file(&path);
            crate::support::mkfifo(&path);
        }
        "socket" => {
            let path = arg(1)?;
            parent(&path).map_err(e)?;
            let _ = std::fs::remove_file(&path);
            // Bound and left behind: the socket file stays, listening or not.
            std::os::unix::net::UnixListener::bind(&path).map_err(e)?;
        }
        "chardev" => {
            let path = arg(1)?;
            parent(&path).map_err(e)?;
            let _ = std::fs::remove_file(&path);
            let major: u32 = raw(2)?.parse().map_err(|_| "major".to_owned())?;
            let minor: u32 = raw(3)?.parse().map_err(|_| "minor".to_owned())?;
            if let Err(err) = rustix::fs::mknodat(
                rustix::fs::CWD,
                &path,
                rustix::fs::FileType::CharacterDevice,
                rustix::fs::Mode::from_raw_mode(0o666),
                rustix::fs::makedev(major, minor),
            ) {
                return Ok(Some(format!(
                    "mknod of a device node is not allowed here ({err}; it needs root with CAP_MKNOD)"
                )));
            }
        }
        "file" => {
            let path = arg(1)?;
            parent(&path).map_err(e)?;
            let content = words.get(2).map(|w| unescape(w)).unwrap_or_default();
            std::fs::write(&path, content).map_err(e)?;
        }
        "big" => {
            let path = arg(1)?;
            parent(&path).map_err(e)?;
            let size: usize = raw(2)?.parse().map_err(|_| "size".to_owned())?;
            let unit = unescape(words.get(3).copied().unwrap_or("a"));
            let mut content = Vec::with_capacity(size);
            while content.len() < size {
                content.extend_from_slice(&unit);
            }
            content.truncate(size);
            content.extend_from_slice(&unescape(words.get(4).copied().unwrap_or("")));
            std::fs::write(&path, content).map_err(e)?;
        }
        "remove" => {
            let path = arg(1)?;
            if path.is_dir() {
                std::fs::remove_dir_all(&path).map_err(e)?;
            } else {
                std::fs::remove_file(&path).map_err(e)?;
            }
        }
        "archive" => {
            let path = arg(1)?;
            parent(&path).map_err(e)?;
            let bytes = archive(&raw(2)?, &world.join("outside"))?;
            std::fs::write(&path, &bytes).map_err(e)?;
            let sha = sha256(&bytes);
            std::fs::write(
                world.join(".archive-sha256"),
                sha.strip_prefix("sha256:").unwrap_or(&sha),
            )
            .map_err(e)?;
        }
        "git-catalog" => {
            let cat = world.join("catalog");
            git(&cat, &["init", "-q", "-b", "main"]);
            git(&cat, &["add", "-A"]);
            git(&cat, &["commit", "-q", "-m", "catalog"]);
            std::fs::write(
                world.join("fleet/fleet.yaml"),
                "catalogs:\n  acme:\n    source: ../catalog\n    ref: main\n",
            )
            .map_err(e)?;
        }
        "signed-catalog" => signed_catalog(world, &raw(1)?)?,
        "forged-plan" => {
            // Adopt, save the real plan, then edit its text as an attacker
            // with write access to the plan file would.
            substitute(world)?;
            for args in [
                "adopt s --version 1.0.0",
                "plan --format json --out plan.json",
            ] {
                let out = run(world, args)?;
                if out.status.code() != Some(0) {
                    return Err(format!("{args}: {}", stderr(&out)));
                }
            }
            let plan = world.join("fleet/plan.json");
            let text = std::fs::read_to_string(&plan).map_err(e)?;
            let forged = text.replace(&unescape_str(&raw(1)?), &unescape_str(&raw(2)?));
            if forged == text {
                return Err(format!("{line}: nothing to replace"));
            }
            std::fs::write(&plan, forged).map_err(e)?;
        }
        other => return Err(format!("unknown directive {other:?}")),
    }
    Ok(None)
}

/// A tar header whose name is written raw, as an attacker would, past
/// the checks of the `tar` crate's builder.
fn raw_header(name: &[u8], kind: tar::EntryType, size: u64, link: Option<&[u8]>) -> tar::Header {
    // GNU format, so that readers honour its long names and PAX records.
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(0);
    let gnu = h.as_gnu_mut().expect("a GNU header");
    gnu.name[..name.len()].copy_from_slice(name);
    if let Some(link) = link {
        gnu.linkname[..link.len()].copy_from_slice(link);
    }
    h.set_cksum();
    h
}

fn tar_of(entries: &[(tar::Header, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (h, data) in entries {
        b.append(h, *data).expect("append");
    }
    b.into_inner().expect("tar")
}

fn zip_of(build: impl FnOnce(&mut zip::ZipWriter<std::io::Cursor<Vec<u8>>>)) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    build(&mut w);
    w.finish().expect("zip").into_inner()
}

/// The hostile archive shapes. Absolute targets point into the canary,
/// never at the host's own files.
fn archive(shape: &str, outside: &Path) -> Result<Vec<u8>, String> {
    use tar::EntryType as T;
    let out = outside.display().to_string();
    let index: &[u8] = b"<?php echo '1.0.1';\n";
    let file = |name: &[u8], data: &[u8]| {
        (
            raw_header(name, T::Regular, data.len() as u64, None),
            data.to_vec(),
        )
    };
    let entries: Vec<(tar::Header, Vec<u8>)> = match shape {
        // RUSTSEC-2018-0002 / CVE-2018-20990: a link, then a file of the
        // same name, which an extractor writes through the link.
        "tar-rs-2018-symlink-then-file" => vec![
            file(b"index.php", index),
            (
                raw_header(
                    b"victim.php",
                    T::Symlink,
                    0,
                    Some(format!("{out}/secret.php").as_bytes()),
                ),
                vec![],
            ),
            file(b"victim.php", b"<?php overwritten();\n"),
        ],
        "tar-rs-2018-hardlink-then-file" => vec![
            file(b"index.php", index),
            (
                raw_header(
                    b"victim.php",
                    T::Link,
                    0,
                    Some(format!("{out}/secret.php").as_bytes()),
                ),
                vec![],
            ),
            file(b"victim.php", b"<?php overwritten();\n"),
        ],
        // RUSTSEC-2021-0080 / CVE-2021-38511, the advisory's own archive:
        // `symlink -> ..`, then `symlink/exploit/foo/bar`.
        "tar-rs-2021-symlink-parent-dirs" => vec![
            file(b"index.php", index),
            (raw_header(b"symlink", T::Symlink, 0, Some(b"..")), vec![]),
            file(b"symlink/exploit/foo/bar", b""),
        ],
        // RUSTSEC-2026-0067: a link, then a directory entry of the same name.
        "tar-rs-2026-symlink-then-dir" => vec![
            file(b"index.php", index),
            (raw_header(b"d", T::Symlink, 0, Some(b"../outside")), vec![]),
            (raw_header(b"d/", T::Directory, 0, None), vec![]),
        ],
        // Links that stay inside by their text but leave through another link.
        "tar-link-chain" => vec![
            file(b"index.php", index),
            (raw_header(b"a/up", T::Symlink, 0, Some(b"..")), vec![]),
            (
                raw_header(b"escape", T::Symlink, 0, Some(b"a/up/..")),
                vec![],
            ),
        ],
        "tar-dotdot" => vec![
            file(b"index.php", index),
            file(b"../../outside/evil.php", b"<?php evil();\n"),
        ],
        "tar-dot-dotdot" => vec![
            file(b"index.php", index),
            file(b"./a/./../../evil.php", b"<?php evil();\n"),
        ],
        "tar-absolute" => vec![
            file(b"index.php", index),
            file(format!("{out}/evil.php").as_bytes(), b"<?php evil();\n"),
        ],
        "tar-backslash" => vec![
            file(b"index.php", index),
            file(b"..\\..\\evil.php", b"<?php evil();\n"),
        ],
        "tar-symlink-absolute" => vec![
            file(b"index.php", index),
            (
                raw_header(b"lib", T::Symlink, 0, Some(out.as_bytes())),
                vec![],
            ),
            file(b"lib/evil.php", b"<?php evil();\n"),
        ],
        "tar-fifo" => vec![
            file(b"index.php", index),
            (raw_header(b"pipe.php", T::Fifo, 0, None), vec![]),
        ],
        "tar-chardev" => vec![
            file(b"index.php", index),
            (raw_header(b"zero.php", T::Char, 0, None), vec![]),
        ],
        "tar-not-utf8" => vec![file(b"index.php", index), file(b"caf\xe9.php", b"<?php\n")],
        // A header that claims 5 GiB: refused from the header, before a byte is read.
        "tar-bomb-claim" => {
            let mut h = raw_header(b"big.php", T::Regular, 5 << 30, None);
            h.set_size(5 << 30);
            h.set_cksum();
            let mut bytes = tar_of(&[(file(b"index.php", index).0, index)]);
            // Drop the end-of-archive blocks, then append the lying header.
            bytes.truncate(bytes.len() - 1024);
            bytes.extend_from_slice(h.as_bytes());
            bytes.extend_from_slice(&[0u8; 4096]);
            return Ok(bytes);
        }
        // A PAX extended header that renames the next entry to climb out.
        "tar-pax-path" => {
            // A PAX record counts its own length: "31 path=…\n" is 31 bytes.
            let record = b"31 path=../../outside/evil.php\n";
            vec![
                file(b"index.php", index),
                (
                    raw_header(b"PaxHeader", T::XHeader, record.len() as u64, None),
                    record.to_vec(),
                ),
                file(b"harmless.php", b"<?php evil();\n"),
            ]
        }
        // A GNU long name that climbs.
        "tar-gnu-longname" => {
            let mut long = b"../".repeat(40);
            long.extend_from_slice(b"outside/evil.php\0");
            vec![
                file(b"index.php", index),
                (
                    raw_header(b"././@LongLink", T::GNULongName, long.len() as u64, None),
                    long,
                ),
                file(b"harmless.php", b"<?php evil();\n"),
            ]
        }
        "tar-overlong-name" => {
            let mut long = b"a".repeat(300);
            long.extend_from_slice(b".php\0");
            vec![
                file(b"index.php", index),
                (
                    raw_header(b"././@LongLink", T::GNULongName, long.len() as u64, None),
                    long,
                ),
                file(b"harmless.php", b"<?php\n"),
            ]
        }
        "tar-dotgit" => vec![
            file(b"index.php", index),
            file(b".git/hooks/post-checkout", b"#!/bin/sh\nid\n"),
        ],
        "zip-slip" => {
            return Ok(zip_of(|w| {
                let o = zip::write::SimpleFileOptions::default();
                w.start_file("index.php", o).expect("zip");
                std::io::Write::write_all(w, index).expect("zip");
                w.start_file("../../outside/evil.php", o).expect("zip");
                std::io::Write::write_all(w, b"<?php evil();\n").expect("zip");
            }));
        }
        "zip-absolute" => {
            return Ok(zip_of(|w| {
                let o = zip::write::SimpleFileOptions::default();
                w.start_file("index.php", o).expect("zip");
                std::io::Write::write_all(w, index).expect("zip");
                w.start_file(format!("{out}/evil.php"), o).expect("zip");
                std::io::Write::write_all(w, b"<?php evil();\n").expect("zip");
            }));
        }
        "zip-backslash" => {
            return Ok(zip_of(|w| {
                let o = zip::write::SimpleFileOptions::default();
                w.start_file("index.php", o).expect("zip");
                std::io::Write::write_all(w, index).expect("zip");
                w.start_file("..\\..\\outside\\evil.php", o).expect("zip");
                std::io::Write::write_all(w, b"<?php evil();\n").expect("zip");
            }));
        }
        "zip-symlink-out" => {
            return Ok(zip_of(|w| {
                let o = zip::write::SimpleFileOptions::default();
                w.start_file("index.php", o).expect("zip");
                std::io::Write::write_all(w, index).expect("zip");
                w.add_symlink("lib", "../outside", o).expect("zip");
                w.start_file("lib/evil.php", o).expect("zip");
                std::io::Write::write_all(w, b"<?php evil();\n").expect("zip");
            }));
        }
        other => return Err(format!("unknown archive shape {other:?}")),
    };
    let entries: Vec<(tar::Header, &[u8])> = entries
        .iter()
        .map(|(h, d)| (h.clone(), d.as_slice()))
        .collect();
    Ok(tar_of(&entries))
}

/// Makes the catalog a git repository on branch `main` whose head commit is
/// signed as `how` says, and the fleet require Alice's signature.
fn signed_catalog(world: &Path, how: &str) -> Result<(), String> {
    // The commits and the adopt below need the placeholders filled in now.
    substitute(world)?;
    let keys = world.join("keys");
    std::fs::create_dir_all(&keys).map_err(|e| e.to_string())?;
    for who in ["alice", "mallory"] {
        let out = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", who, "-f"])
            .arg(keys.join(who))
            .output()
            .map_err(|e| format!("ssh-keygen (openssh-client) is needed: {e}"))?;
        if !out.status.success() {
            return Err(stderr(&out));
        }
    }
    let alice_pub = std::fs::read_to_string(keys.join("alice.pub")).map_err(|e| e.to_string())?;
    std::fs::create_dir_all(world.join("fleet/keys")).map_err(|e| e.to_string())?;
    std::fs::write(
        world.join("fleet/keys/allowed_signers"),
        format!(
            "alice@example.com namespaces=\"git\" {}\n",
            alice_pub.trim()
        ),
    )
    .map_err(|e| e.to_string())?;
    std::fs::write(
        world.join("fleet/fleet.yaml"),
        "catalogs:\n  acme:\n    source: ../catalog\n    ref: main\n    allowed_signers: keys/allowed_signers\n",
    )
    .map_err(|e| e.to_string())?;
    let cat = world.join("catalog");
    // 1.0.1 arrives in a second commit; the first one (1.0.0, Alice) is what
    // the site is adopted at.
    let release = cat.join("releases/1.0.1.yaml");
    let held = std::fs::read(&release).map_err(|e| e.to_string())?;
    std::fs::remove_file(&release).map_err(|e| e.to_string())?;
    git(&cat, &["init", "-q", "-b", "main"]);
    let sign = |key: &str| format!("user.signingkey={}", keys.join(key).display());
    let commit_signed = |key: &str, msg: &str| {
        git(&cat, &["add", "-A"]);
        git(
            &cat,
            &[
                "-c",
                "gpg.format=ssh",
                "-c",
                &sign(key),
                "commit",
                "-q",
                "-S",
                "-m",
                msg,
            ],
        );
    };
    commit_signed("alice", "1.0.0");
    // The site is adopted at that first, trusted commit; the case's
    // commands then meet the second one.
    let out = run(world, "adopt s --version 1.0.0")?;
    if out.status.code() != Some(0) {
        return Err(format!(
            "adopt at the signed first commit: {}",
            stderr(&out)
        ));
    }
    std::fs::write(&release, held).map_err(|e| e.to_string())?;
    match how {
        "alice" => commit_signed("alice", "1.0.1"),
        "mallory" => commit_signed("mallory", "1.0.1"),
        "unsigned" => {
            git(&cat, &["add", "-A"]);
            git(&cat, &["commit", "-q", "-m", "1.0.1"]);
        }
        "tampered" | "garbage" => {
            commit_signed("alice", "1.0.1");
            let raw = git(&cat, &["cat-file", "commit", "HEAD"]);
            let forged = if how == "tampered" {
                // Alice's signature over another tree: 1.0.1 with a back door.
                std::fs::write(
                    cat.join("releases/1.0.1/index.php"),
                    "<?php eval($_GET['x']);\n",
                )
                .map_err(|e| e.to_string())?;
                git(&cat, &["add", "-A"]);
                let evil = git(&cat, &["write-tree"]);
                let signed = git(&cat, &["rev-parse", "HEAD^{tree}"]);
                raw.replacen(&format!("tree {signed}"), &format!("tree {evil}"), 1)
            } else {
                // A signature block of the right shape whose bytes are noise.
                let start = raw
                    .find("-----BEGIN SSH SIGNATURE-----")
                    .ok_or("no signature")?;
                let end = raw
                    .find("-----END SSH SIGNATURE-----")
                    .ok_or("no signature")?;
                let body: String = raw[start..end]
                    .lines()
                    .enumerate()
                    .map(|(i, l)| {
                        if i == 0 {
                            l.to_owned()
                        } else {
                            format!(" {}", "U1NIU0lHAAAAAQ".repeat(4))
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("\n");
                format!("{}{body}\n {}", &raw[..start], &raw[end..])
            };
            std::fs::write(cat.join("forged"), forged + "\n").map_err(|e| e.to_string())?;
            let id = git(&cat, &["hash-object", "-t", "commit", "-w", "forged"]);
            std::fs::remove_file(cat.join("forged")).map_err(|e| e.to_string())?;
            git(&cat, &["update-ref", "refs/heads/main", &id]);
            git(&cat, &["reset", "-q", "--hard", "HEAD"]);
        }
        other => return Err(format!("unknown signing {other:?}")),
    }
    Ok(())
}

/// Zip is not a payload format the model accepts, so the corpus's zip
/// cases stop at validation; the extractor's own defences are checked here
/// on the same hostile shapes, so they hold if zip is ever allowed.
#[test]
fn zip_shapes_are_refused_by_the_extractor() {
    let outside = Path::new("/nonexistent/outside");
    for (shape, why) in [
        ("zip-slip", "climbs out"),
        ("zip-absolute", "absolute path"),
        ("zip-backslash", "backslash"),
        ("zip-symlink-out", "points out of the tree"),
    ] {
        let bytes = archive(shape, outside).expect("an archive");
        let err = sitekeeper::load::payload::extract("app.zip", &bytes, 0)
            .expect_err(&format!("{shape} was extracted"));
        assert!(err.contains(why), "{shape}: {err}");
    }
}
