//! Fuzz harnesses: one function per cargo-fuzz target in `fuzz/`, kept here
//! so that `cargo test` replays the committed corpora through the very same
//! code (`tests/fuzz_corpus.rs`) and the targets cannot rot without nightly.
//!
//! Each harness takes raw fuzzer bytes and checks invariants with `assert!`:
//! a panic here *is* the finding. Not part of the supported API, and built
//! only with the `fuzzing` feature (the fuzz targets and `cargo test` turn
//! it on; see Cargo.toml).

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arbitrary::{Arbitrary, Unstructured};

use crate::fixops::{self, FileState};
use crate::load::{self, LoadOptions, payload};
use crate::model::catalog::{RegexOp, ReplaceOp};
use crate::model::hash::{BlobId, ContentHash};
use crate::model::values::{Glob, Pattern, Version};
use crate::model::words::{Expect, Whitespace};
use crate::model::{Fix, Release};
use crate::plan::choose::{HeldWhy, Upgrade};
use crate::plan::{
    self, Action, ActionKind, FileChange, FileData, FileOp, Held, HeldCode, Plan, SitePlan, choose,
    render,
};

// ---------------------------------------------------------------- YAML ----

/// The file kinds a fleet and a catalog hold, in the order the first input
/// byte of [`yaml`] selects them (byte modulo 7).
pub const YAML_KINDS: [&str; 7] = [
    "fleet",
    "site",
    "policy",
    "approvals",
    "catalog",
    "release",
    "fix",
];

/// A small valid fleet and catalog; the fuzzed file replaces one of them.
const SKELETON: &[(&str, &str)] = &[
    (
        "fleet/fleet.yaml",
        "catalogs:\n  acme-cms:\n    source: ../catalog\n",
    ),
    (
        "fleet/sites/shop.yaml",
        "site: shop\nroot: ../site\nproduct: acme-cms\nchannel: stable\npolicy: local\n",
    ),
    (
        "fleet/policies/local.yaml",
        "policy: local\nextends: base\ndefaults: {upgrades: patch}\n",
    ),
    (
        "fleet/approvals/shop.yaml",
        "approved:\n  - plan_digest: \"sha256:0000000000000000000000000000000000000000000000000000000000000000\"\n    by: alice\n    at: 2024-09-04T08:30:00Z\n",
    ),
    (
        "catalog/catalog.yaml",
        "product: acme-cms\nchannels: {stable: {}}\nrings: {0: 0h, 1: 48h}\n",
    ),
    (
        "catalog/releases/1.0.0.yaml",
        "version: 1.0.0\nchannels: [stable]\nreleased: 2024-05-21T09:00:00Z\npayload: {tree: releases/1.0.0/}\n",
    ),
    ("catalog/releases/1.0.0/index.php", "<?php echo 1;\n"),
    (
        "catalog/fixes/0001-x.yaml",
        "id: 0001-x\ntitle: t\nreason: r\nseverity: critical\napplies_to: \">=1.0.0\"\nops:\n  - replace: {files: [\"*.php\"], find: \"echo 1;\", with: \"echo 2;\"}\n",
    ),
    // A newer release, so that planning has a candidate to judge: a fuzzed
    // release date or delay meets the gates' time arithmetic.
    (
        "catalog/releases/1.0.1.yaml",
        "version: 1.0.1\nchannels: [stable]\nreleased: 2024-06-01T00:00:00Z\npayload: {tree: releases/1.0.1/}\n",
    ),
    ("catalog/releases/1.0.1/index.php", "<?php echo 2;\n"),
];

/// Where the fuzzed file of each kind goes (an index into [`SKELETON`]).
const KIND_FILE: [usize; 7] = [0, 1, 2, 3, 4, 5, 7];

thread_local! {
    /// One scratch fleet per thread, reused across runs (each run restores
    /// the file it replaced), because creating a directory tree per input
    /// would cost more than the load itself.
    static SCRATCH: Option<(tempfile::TempDir, PathBuf)> = make_skeleton().ok();
}

fn make_skeleton() -> std::io::Result<(tempfile::TempDir, PathBuf)> {
    let dir = tempfile::tempdir()?;
    for (rel, text) in SKELETON {
        let path = dir.path().join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(path, text)?;
    }
    let root = dir.path().to_owned();
    Ok((dir, root))
}

/// Loads a fleet in which one file (chosen by `data[0]`, see [`YAML_KINDS`])
/// holds `data[1..]`, through [`load::load`] as `validate` does, and checks
/// that every diagnostic points inside that file. A fleet that loads clean
/// is then planned, checked and explained as the commands would, at the
/// ends of the clock ([`plan_every_site`]): any panic is a finding.
pub fn yaml(data: &[u8]) {
    let Some((&first, bytes)) = data.split_first() else {
        return;
    };
    let kind = usize::from(first) % YAML_KINDS.len();
    count_kind(kind);
    let (rel, original) = SKELETON[KIND_FILE[kind]];
    // fleet.yaml may name a git URL as a catalog source; a fuzzer must not
    // fetch, so such inputs stop after the parse (which is what they test).
    if kind == 0 {
        let parsed = load::yaml::parse::<crate::model::FleetConfig>(rel, bytes);
        if let Ok((config, _)) = &parsed
            && config
                .catalogs
                .values()
                .any(|c| load::source::is_url(&c.source))
        {
            return;
        }
    }
    SCRATCH.with(|scratch| {
        let Some((_, root)) = scratch else {
            return;
        };
        let path = root.join(rel);
        if std::fs::write(&path, bytes).is_err() {
            return;
        }
        // Put back even when planning panics (a finding), so the next
        // input of a replay starts from the skeleton again.
        let _restore = Restore {
            path: path.clone(),
            original,
        };
        let options = LoadOptions {
            fleet: root.join("fleet").to_string_lossy().into_owned(),
            state_dir: Some(root.join("state")),
            git: Default::default(),
        };
        let result = load::load(&options);
        let diags = match result {
            Ok((fleet, diags)) => {
                // What the commands do with a fleet that validates (they
                // refuse one that does not): no input may make them panic.
                if diags.is_empty() {
                    plan_every_site(&fleet);
                }
                diags
            }
            Err(d) => vec![d],
        };
        // YAML breaks lines at LF, CR and CRLF alike (found by fuzzing: a
        // lone CR is a line of its own in the diagnostics too).
        let lines = bytes
            .iter()
            .enumerate()
            .filter(|&(i, &b)| b == b'\n' && (i == 0 || bytes[i - 1] != b'\r') || b == b'\r')
            .count()
            + 1;
        let name = rel.rsplit('/').next().unwrap_or(rel);
        for d in &diags {
            let shown = d.to_string();
            assert!(!d.message.is_empty(), "a diagnostic without a message");
            if d.at.file.ends_with(name) && d.at.line > 0 {
                assert!(
                    d.at.line <= lines + 1 && d.at.column >= 1,
                    "diagnostic outside the file ({lines} lines): {shown}"
                );
            }
        }
    });
}

/// The clocks every site of a valid fleet is planned at: both ends of
/// jiff's range, the epoch and the tests' fixed day (each release's own
/// date is added), so that every date and duration of the input meets the
/// time arithmetic of every gate at its extremes (issue 15: a long
/// `min_release_age` overflowed `released + age` and panicked).
fn clocks(releases: &[Release]) -> Vec<jiff::Timestamp> {
    let mut out = vec![
        jiff::Timestamp::MIN,
        jiff::Timestamp::UNIX_EPOCH,
        // 2026-11-20T10:00:00Z, the tests' `SITEKEEPER_NOW`.
        jiff::Timestamp::from_second(1_795_168_800).unwrap_or(jiff::Timestamp::UNIX_EPOCH),
        jiff::Timestamp::MAX,
    ];
    out.extend(releases.iter().take(4).map(|r| r.released.0));
    out
}

/// What `explain`, `check`, `status`, `plan` and the daemon's notices
/// compute for each site of a valid fleet, in process: the effective
/// settings, every release judged against every installed version at
/// every one of [`clocks`], the plan, its renderings, and the notices due.
/// The site is taken as adopted with nothing on disk, so that planning
/// runs every gate and the target tree without a site root.
fn plan_every_site(fleet: &load::Fleet) {
    for site in &fleet.sites {
        let Ok(effective) = crate::policy::resolve(fleet, site) else {
            continue;
        };
        let _ = effective.rows();
        let Some(catalog) = fleet.catalogs.get(&site.product) else {
            continue;
        };
        let bare = BareSite::new(fleet, site, &effective, catalog);
        let plan = Plan::new(bare.plan_everywhere());
        let _ = render::human(&plan, false);
        let _ = render::json(&plan);
        let _ = render::markdown(&plan);
    }
}

/// A site of a valid fleet, adopted with nothing on disk, with what the
/// commands read to judge and plan it: built once per site, since every
/// installed version and clock plans from the same inputs.
struct BareSite<'f> {
    site: &'f load::Loaded<crate::model::Site>,
    effective: &'f crate::policy::Effective,
    catalog: &'f load::LoadedCatalog,
    releases: Vec<Release>,
    fixes: Vec<Fix>,
    approved: Vec<crate::model::Approval>,
    contents: FuzzContents<'f>,
    inventory: crate::inventory::Inventory,
    trust: load::Trust,
}

impl<'f> BareSite<'f> {
    fn new(
        fleet: &'f load::Fleet,
        site: &'f load::Loaded<crate::model::Site>,
        effective: &'f crate::policy::Effective,
        catalog: &'f load::LoadedCatalog,
    ) -> Self {
        let releases: Vec<Release> = catalog.releases.iter().map(|r| r.value.clone()).collect();
        let fixes: Vec<Fix> = catalog.fixes.iter().map(|f| f.value.clone()).collect();
        let approved = fleet
            .approvals
            .get(site.site.as_str())
            .map(|a| a.approved.clone())
            .unwrap_or_default();
        BareSite {
            site,
            effective,
            catalog,
            releases,
            fixes,
            approved,
            contents: FuzzContents {
                catalog,
                payloads: RefCell::default(),
            },
            inventory: crate::inventory::Inventory::default(),
            trust: load::Trust::NotRequired,
        }
    }

    /// The site judged and planned as installed at 0.0.0 and at each of the
    /// first three releases, at every one of [`clocks`]; the daemon's
    /// notices are remembered from clock to clock, as the daemon does, so
    /// that their quiet-time arithmetic meets the clocks' extremes too.
    fn plan_everywhere(&self) -> Vec<SitePlan> {
        let mut plans = Vec::new();
        // 0.0.0 first: every release is newer, so every one meets the gates.
        let zero = Version(semver::Version::new(0, 0, 0));
        let installs =
            std::iter::once(&zero).chain(self.releases.iter().take(3).map(|r| &r.version));
        for installed in installs {
            let mut notices = crate::watch::publish::notices::NoticeState::default();
            for now in clocks(&self.releases) {
                let upgrades = self.judge(installed, now);
                let _ = crate::watch::publish::notices::due(
                    self.site.site.as_str(),
                    &installed.to_string(),
                    &upgrades,
                    &mut notices,
                    now,
                    self.effective.notify_interval.value.0,
                    false,
                );
                plans.push(self.plan(installed, now));
            }
        }
        plans
    }

    /// What `check` and `status` show: each newer release judged alone
    /// against the gates, as the upgrade query of [`choose`] does.
    fn judge(&self, installed: &Version, now: jiff::Timestamp) -> Vec<Upgrade> {
        let gates = choose::Gates {
            effective: self.effective,
            catalog: &self.catalog.catalog,
            now,
            quarantined: &[],
            forced: None,
        };
        self.releases
            .iter()
            .filter(|r| r.version > *installed)
            .map(|r| {
                let a = choose::assess(installed, r, &gates);
                Upgrade {
                    version: r.version.to_string(),
                    class: a.class,
                    reason: choose::class_reason(&installed.0, &r.version.0, a.class),
                    automatic: a.held.is_empty(),
                    held: a.held.into_iter().next().map(|h| HeldWhy {
                        code: h.code,
                        reason: h.reason,
                    }),
                }
            })
            .collect()
    }

    /// What `plan` computes for the site installed at `installed` at `now`,
    /// with diffs, so that rendering meets every action's contents.
    fn plan(&self, installed: &Version, now: jiff::Timestamp) -> SitePlan {
        let input = plan::SiteInput {
            name: self.site.site.as_str(),
            labels: &self.site.labels,
            preserve: &self.site.paths.preserve,
            effective: self.effective,
            catalog: &self.catalog.catalog,
            releases: &self.releases,
            fixes: &self.fixes,
            catalog_commit: None,
            trust: &self.trust,
            installed: Some(plan::Installed {
                version: installed.clone(),
                snapshot: crate::inventory::PointFiles::default(),
                fixes: BTreeMap::new(),
            }),
            adopted: true,
            detection: None,
            inventory: &self.inventory,
            quarantined: &[],
            quarantined_fixes: &BTreeMap::new(),
            forced: None,
            forced_fix: None,
            space: None,
            preflight: &[],
            failure_marker: None,
            approved: &self.approved,
            now,
            contents: &self.contents,
            diffs: true,
        };
        plan::plan_site(&input)
    }
}

/// The planner's contents for a site with nothing on disk: payloads and
/// fix sources from the catalog (each payload read once per input).
struct FuzzContents<'c> {
    catalog: &'c load::LoadedCatalog,
    payloads: RefCell<HashMap<Version, Arc<payload::Payload>>>,
}

impl FuzzContents<'_> {
    fn payload(&self, version: &Version) -> Result<Arc<payload::Payload>, String> {
        if let Some(p) = self.payloads.borrow().get(version) {
            return Ok(p.clone());
        }
        let release = self
            .catalog
            .releases
            .iter()
            .find(|r| &r.version == version)
            .ok_or_else(|| format!("no release {version}"))?;
        let p = Arc::new(payload::Payload::load(self.catalog, release).map_err(|e| e.to_string())?);
        self.payloads
            .borrow_mut()
            .insert(version.clone(), p.clone());
        Ok(p)
    }
}

impl plan::Contents for FuzzContents<'_> {
    fn disk(&self, path: &str) -> Result<Vec<u8>, String> {
        Err(format!("{path}: nothing is on disk"))
    }

    fn payload(&self, version: &Version) -> Result<Arc<payload::Payload>, String> {
        FuzzContents::payload(self, version)
    }

    fn payload_blob(&self, version: &Version, blob: BlobId) -> Result<Vec<u8>, String> {
        let payload = FuzzContents::payload(self, version)?;
        self.catalog.payload_blob(&payload, blob)
    }

    fn fix_source(&self, rel: &str) -> Result<Vec<u8>, String> {
        self.catalog.fix_source(rel)
    }

    fn point_blob(&self, _: BlobId) -> Result<Vec<u8>, String> {
        Err("the site has no rollback points".into())
    }
}

/// Writes a skeleton file back when dropped.
struct Restore {
    path: PathBuf,
    original: &'static str,
}

impl Drop for Restore {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.path, self.original);
    }
}

/// Runs per YAML kind, so a fuzz log says how the time was shared out.
static KIND_RUNS: [AtomicU64; 7] = [const { AtomicU64::new(0) }; 7];

/// Counts a run of `kind`, and prints the tally at every power of two
/// from 2^16 runs on (the last such line of a fuzz log is the share).
fn count_kind(kind: usize) {
    KIND_RUNS[kind].fetch_add(1, Ordering::Relaxed);
    let total: u64 = KIND_RUNS.iter().map(|c| c.load(Ordering::Relaxed)).sum();
    if total >= 1 << 16 && total.is_power_of_two() {
        let shares: Vec<String> = YAML_KINDS
            .iter()
            .zip(&KIND_RUNS)
            .map(|(k, c)| format!("{k}={}", c.load(Ordering::Relaxed)))
            .collect();
        eprintln!("yaml kinds after {total} runs: {}", shares.join(" "));
    }
}

// ------------------------------------------------------------- fix ops ----

/// One fix op, as the fuzzer builds it.
#[derive(Debug, Arbitrary)]
pub enum FuzzOp {
    /// `replace`, loose or exact whitespace.
    Replace {
        /// The text to find.
        find: String,
        /// Its replacement.
        with: String,
        /// `whitespace: loose`.
        loose: bool,
        /// `expect:` 0 some, 1 one, else any.
        expect: u8,
    },
    /// `regex`.
    Regex {
        /// The pattern (may not compile: then the op is skipped, as the loader would refuse it).
        pattern: String,
        /// The replacement.
        with: String,
    },
    /// `write`.
    Write(Vec<u8>),
    /// `add`.
    Add(Vec<u8>),
    /// `delete`.
    Delete,
}

/// A file (or its absence) and the ops run on it in order.
#[derive(Debug, Arbitrary)]
pub struct FuzzFix {
    /// The file's content; `None` when missing.
    pub file: Option<Vec<u8>>,
    /// The ops.
    pub ops: Vec<FuzzOp>,
}

fn expect_word(n: u8) -> Expect {
    match n % 3 {
        0 => Expect::Some,
        1 => Expect::One,
        _ => Expect::Any,
    }
}

/// Runs random ops on random file bytes through [`fixops`], as the planner
/// does one file at a time, checking the invariants of SPEC §2.2.
pub fn fix_ops(data: &[u8]) {
    let Ok(case) = FuzzFix::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let Ok(glob) = "**".parse::<Glob>() else {
        return;
    };
    let mut file = case.file;
    for op in case.ops.iter().take(16) {
        file = step(file, op, &glob);
    }
}

/// One op on the file (`None`: absent), checked; returns the file after it.
fn step(file: Option<Vec<u8>>, op: &FuzzOp, glob: &Glob) -> Option<Vec<u8>> {
    match op {
        FuzzOp::Replace {
            find,
            with,
            loose,
            expect,
        } => {
            let op = ReplaceOp {
                files: vec![glob.clone()],
                find: find.clone(),
                with: with.clone(),
                whitespace: if *loose {
                    Whitespace::Loose
                } else {
                    Whitespace::Exact
                },
                expect: expect_word(*expect),
            };
            // The loader refuses a blank `find` (it would match everywhere)
            // and a NUL in `with` (it would make the file binary).
            let content = match file {
                Some(c) if !find.trim().is_empty() && !with.contains('\0') => c,
                other => return other,
            };
            let out = fixops::replace(&content, &op);
            check_outcome(&content, &out);
            check_expect(op.expect, out.state);
            match out.content {
                Some(next) => {
                    // Applying the op to its own result is idempotent: the
                    // planner re-plans this file as applied, so a second
                    // apply plans nothing.
                    // A NUL past the 8,000 bytes `is_binary` reads can
                    // move into them; the next plan then leaves the file
                    // alone, which is safe too.
                    let again = fixops::replace(&next, &op);
                    let settled = if fixops::is_binary(&next) {
                        FileState::Binary
                    } else {
                        FileState::Applied
                    };
                    assert_eq!(
                        again.state, settled,
                        "replace is not idempotent: {find:?} → {with:?} ({:?}) on {content:?} gave {next:?}, then {again:?}",
                        op.whitespace
                    );
                    Some(next)
                }
                None => Some(content),
            }
        }
        FuzzOp::Regex { pattern, with } => {
            let (Ok(pattern), Some(content)) = (pattern.parse::<Pattern>(), &file) else {
                return file;
            };
            if with.contains('\0') {
                return file;
            }
            let op = RegexOp {
                files: vec![glob.clone()],
                pattern,
                with: with.clone(),
                expect: Expect::Some,
            };
            let out = fixops::regex(content, &op);
            check_outcome(content, &out);
            out.content.or(file)
        }
        FuzzOp::Write(new) => {
            let state = fixops::write(file.as_deref(), new);
            assert_eq!(
                state == FileState::Applied,
                file.as_deref() == Some(new.as_slice())
            );
            assert_eq!(fixops::write(Some(new), new), FileState::Applied);
            Some(new.clone())
        }
        FuzzOp::Add(new) => {
            let state = fixops::add(file.as_deref());
            assert_eq!(state == FileState::Applicable, file.is_none());
            let next = file.unwrap_or_else(|| new.clone());
            assert_eq!(fixops::add(Some(&next)), FileState::Applied);
            Some(next)
        }
        FuzzOp::Delete => None,
    }
}

/// What holds for every text op's outcome, whatever the op.
fn check_outcome(content: &[u8], out: &fixops::Outcome) {
    if fixops::is_binary(content) {
        assert_eq!(out.state, FileState::Binary, "a binary file was edited");
    }
    match out.state {
        FileState::Applicable => {
            let next = out.content.as_deref();
            assert!(next.is_some(), "applicable without new content");
            assert_ne!(next, Some(content), "applicable but nothing changes");
        }
        FileState::Applied | FileState::Conflict | FileState::Binary => {
            assert!(out.content.is_none(), "{:?} with new content", out.state)
        }
        FileState::Missing => panic!("a present file reported missing"),
    }
}

fn check_expect(expect: Expect, state: FileState) {
    let useful = matches!(state, FileState::Applied | FileState::Applicable);
    assert_eq!(
        fixops::expect_met(expect, &[state]),
        useful || expect == Expect::Any
    );
    assert!(fixops::expect_met(Expect::Any, &[]));
    assert!(!fixops::expect_met(Expect::Some, &[]));
}

// ------------------------------------------------------------ archives ----

/// The archive types of [`payload::extract`], as the first input byte picks them.
pub const ARCHIVE_KINDS: [&str; 4] = ["x.tar", "x.tar.gz", "x.zip", "x.tar.zst"];

/// Extracts `data[2..]` as the archive type `data[0]` picks, stripping
/// `data[1] % 3` components, then writes what came out into a scratch
/// directory the way a naive extractor would (following links) and checks
/// that nothing was written beside it and that no link leads out of it.
pub fn archive(data: &[u8]) {
    let [kind, strip, bytes @ ..] = data else {
        return;
    };
    let name = ARCHIVE_KINDS[usize::from(*kind) % ARCHIVE_KINDS.len()];
    let Ok(files) = payload::extract(name, bytes, usize::from(*strip % 3)) else {
        return;
    };
    for (path, (_, link, target)) in &files {
        assert!(!path.is_empty(), "an empty path");
        for part in path.split('/') {
            assert!(
                !matches!(part, "" | "." | "..") && !part.contains(['\\', '\0']),
                "unsafe path {path:?}"
            );
        }
        if *link {
            let target = String::from_utf8_lossy(target);
            assert!(
                resolves_inside(&files, path, &target),
                "link {path:?} → {target:?} leads out of the tree"
            );
        }
    }
    materialize(&files);
}

/// Whether following the link at `path` (to `target`), through every other
/// link of the archive as the kernel would, stays inside the tree. A
/// dangling link inside counts as inside; more than 40 hops does not.
fn resolves_inside(
    files: &BTreeMap<String, (u32, bool, Vec<u8>)>,
    path: &str,
    target: &str,
) -> bool {
    let mut dir: Vec<String> = path.split('/').map(str::to_owned).collect();
    dir.pop();
    let mut pending: Vec<String> = target.split('/').rev().map(str::to_owned).collect();
    if target.starts_with('/') {
        return false;
    }
    let mut hops = 0;
    while let Some(part) = pending.pop() {
        match part.as_str() {
            "" | "." => {}
            ".." => {
                if dir.pop().is_none() {
                    return false;
                }
            }
            name => {
                dir.push(name.to_owned());
                if let Some((_, true, next)) = files.get(&dir.join("/")) {
                    hops += 1;
                    let next = String::from_utf8_lossy(next);
                    if hops > 40 || next.starts_with('/') {
                        return false;
                    }
                    dir.pop();
                    pending.extend(next.split('/').rev().map(str::to_owned));
                }
            }
        }
    }
    true
}

/// Writes the extracted files under `scratch/root` with plain `std::fs`
/// (which follows links), beside a canary, and asserts that the scratch
/// directory holds nothing else afterwards and the canary is unchanged.
fn materialize(files: &BTreeMap<String, (u32, bool, Vec<u8>)>) {
    let Ok(scratch) = tempfile::tempdir() else {
        return;
    };
    let root = scratch.path().join("root");
    let canary = scratch.path().join("canary");
    if std::fs::create_dir(&root).is_err() || std::fs::write(&canary, b"canary").is_err() {
        return;
    }
    for (path, (_, link, content)) in files {
        let at = root.join(path);
        if let Some(parent) = at.parent()
            && std::fs::create_dir_all(parent).is_err()
        {
            continue;
        }
        let _ = if *link {
            std::os::unix::fs::symlink(Path::new(&*String::from_utf8_lossy(content)), &at)
        } else {
            std::fs::write(&at, content)
        };
    }
    let mut beside: BTreeSet<String> = BTreeSet::new();
    if let Ok(entries) = std::fs::read_dir(scratch.path()) {
        for e in entries.flatten() {
            beside.insert(e.file_name().to_string_lossy().into_owned());
        }
    }
    assert_eq!(
        beside,
        BTreeSet::from(["canary".to_owned(), "root".to_owned()]),
        "extraction wrote beside its directory"
    );
    assert_eq!(std::fs::read(&canary).ok().as_deref(), Some(&b"canary"[..]));
    // The kernel's own resolution of every link that resolves at all.
    let Ok(real_root) = std::fs::canonicalize(&root) else {
        return;
    };
    for (path, (_, link, _)) in files {
        if *link && let Ok(real) = std::fs::canonicalize(root.join(path)) {
            assert!(
                real.starts_with(&real_root),
                "link {path:?} resolves to {} outside the tree",
                real.display()
            );
        }
    }
}

// ---------------------------------------------------------- rendering ----

/// A file change as the fuzzer builds it.
#[derive(Debug, Arbitrary)]
struct FuzzFile {
    path: String,
    op: u8,
    old: Option<Vec<u8>>,
    new: Option<Vec<u8>>,
    /// Repeats `new`'s bytes to grow large files cheaply.
    grow: u16,
}

#[derive(Debug, Arbitrary)]
struct FuzzAction {
    kind: u8,
    id: String,
    reason: String,
    files: Vec<FuzzFile>,
}

#[derive(Debug, Arbitrary)]
struct FuzzSite {
    name: String,
    from: Option<String>,
    to: Option<String>,
    actions: Vec<FuzzAction>,
    held: Vec<(u8, String, String)>,
    adopted: bool,
    drift: Vec<String>,
    notes: Vec<String>,
    /// Copies of this site under other names (sites sharing one plan).
    copies: u8,
}

fn file_data(bytes: Option<Vec<u8>>, grow: u16) -> Option<Arc<FileData>> {
    let mut bytes = bytes?;
    let unit = bytes.clone();
    for _ in 0..(grow % 512) {
        bytes.extend_from_slice(&unit);
    }
    Some(Arc::new(FileData::new(bytes, 0o644, false)))
}

const HELD_CODES: [HeldCode; 18] = [
    HeldCode::PolicyCeiling,
    HeldCode::NotOptedIn,
    HeldCode::OutsideWindow,
    HeldCode::SoakTime,
    HeldCode::RingDelay,
    HeldCode::ApprovalRequired,
    HeldCode::Prerelease,
    HeldCode::MajorUpgrade,
    HeldCode::ZeroMajor,
    HeldCode::Yanked,
    HeldCode::Quarantined,
    HeldCode::UpgradePath,
    HeldCode::FixConflict,
    HeldCode::FixTargetMissing,
    HeldCode::DriftBlocked,
    HeldCode::UntrustedSource,
    HeldCode::NotAdopted,
    HeldCode::Pinned,
];

fn build_plan(sites: Vec<FuzzSite>) -> Plan {
    let mut out = Vec::new();
    for s in sites.into_iter().take(64) {
        let actions: Vec<Action> = s
            .actions
            .into_iter()
            .map(|a| Action {
                kind: match a.kind % 4 {
                    0 => ActionKind::Upgrade,
                    1 => ActionKind::Fix,
                    2 => ActionKind::RevertDrift,
                    _ => ActionKind::RemoveFix,
                },
                id: a.id,
                reason: a.reason,
                files: a
                    .files
                    .into_iter()
                    .map(|f| {
                        let old = file_data(f.old, 0);
                        let new = file_data(f.new, f.grow);
                        FileChange {
                            path: f.path,
                            op: match f.op % 3 {
                                0 => FileOp::Add,
                                1 => FileOp::Modify,
                                _ => FileOp::Delete,
                            },
                            before: old.as_ref().map(|d| d.hash),
                            after: new.as_ref().map(|d| d.hash),
                            old,
                            new,
                        }
                    })
                    .collect(),
            })
            .collect();
        let mut site = SitePlan {
            site: s.name.clone(),
            plan_digest: String::new(),
            from_version: s.from,
            to_version: s.to,
            actions,
            held: s
                .held
                .into_iter()
                .map(|(code, item, reason)| Held {
                    item,
                    code: HELD_CODES[usize::from(code) % HELD_CODES.len()],
                    reason,
                })
                .collect(),
            adopted: s.adopted,
            drift: s.drift,
            notes: s.notes,
            catalog_commit: None,
        };
        site.plan_digest = crate::plan::digest(&site);
        for n in 0..s.copies % 100 {
            let mut copy = site.clone();
            copy.site = format!("{}-{n}", s.name);
            out.push(copy);
        }
        out.push(site);
    }
    Plan::new(out)
}

/// Renders an arbitrary plan as human text, JSON and Markdown, and checks
/// that the Markdown stays within [`render::MARKDOWN_LIMIT`] and the JSON
/// parses back to the same plan.
pub fn render(data: &[u8]) {
    let Ok(sites) = Vec::<FuzzSite>::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let plan = build_plan(sites);
    let _ = render::human(&plan, false);
    let _ = render::human(&plan, true);
    let md = render::markdown(&plan);
    assert!(
        md.len() <= render::MARKDOWN_LIMIT,
        "markdown is {} bytes, over its {} limit",
        md.len(),
        render::MARKDOWN_LIMIT
    );
    let json = render::json(&plan);
    let back: Result<Plan, _> = serde_json::from_str(&json);
    assert!(back.is_ok(), "the JSON does not parse back: {back:?}");
    if let Ok(back) = back {
        assert_eq!(back.plan_id, plan.plan_id);
        assert_eq!(back.sites.len(), plan.sites.len());
        for (a, b) in back.sites.iter().zip(&plan.sites) {
            assert_eq!(a.plan_digest, b.plan_digest);
            assert_eq!(a.site, b.site);
            let files = |s: &SitePlan| -> Vec<(String, Option<ContentHash>, Option<ContentHash>)> {
                s.actions
                    .iter()
                    .flat_map(|a| a.files.iter())
                    .map(|f| (f.path.clone(), f.before, f.after))
                    .collect()
            };
            assert_eq!(files(a), files(b));
        }
    }
}
