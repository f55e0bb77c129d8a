//! The transaction that changes a site's files: a crash at any instant
//! leaves them exactly old or exactly new once recovery has run.
//!
//! Every old and new content is in `points.git` before the first file
//! changes. The journal (`journal/txn.json`, written atomically) names the
//! changes; files are replaced by staged file + fsync + rename + directory
//! fsync; the new point's ref is the commit step. Recovery rolls forward
//! when that ref exists and back when it does not, and is idempotent, so
//! it survives a crash of its own. Every step goes through [`Steps`].

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::PathBuf;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::fsops::Steps;
use super::group::in_parallel;
use super::swap::Swap;
use crate::confined::{Kind, Root};
use crate::inventory::STAGE_DIR;
use crate::inventory::cache::StatCache;
use crate::model::hash::BlobId;
use crate::store::{Durability, atomic_write, remove_durably, remove_temps};
use crate::store::{
    LedgerKind, LedgerResult, PointMeta, Points, Prepared, Record, SiteState, Snapshot,
    SnapshotEntry, StoreError,
};

mod phased;
pub use phased::{Phased, finish_deferred};

/// A file's identity in a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRef {
    /// Its content, stored in `points.git`.
    pub blob: BlobId,
    /// Permission bits.
    pub mode: u32,
    /// Whether it is a symbolic link.
    pub symlink: bool,
}

impl FileRef {
    /// The snapshot entry it makes.
    pub fn entry(self) -> SnapshotEntry {
        if self.symlink {
            SnapshotEntry::Symlink { blob: self.blob }
        } else {
            SnapshotEntry::File {
                mode: self.mode,
                blob: self.blob,
            }
        }
    }
}

/// One path's change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// Relative to the root.
    pub path: String,
    /// Before (`None`: absent).
    pub old: Option<FileRef>,
    /// After (`None`: deleted).
    pub new: Option<FileRef>,
}

/// The journal of a change in flight.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Journal {
    /// Unique id, also written into the new point's metadata.
    pub id: String,
    /// The point the change starts from.
    pub base_point: Option<u64>,
    /// The changes, in order.
    pub changes: Vec<Change>,
    /// The point to commit.
    pub meta: PointMeta,
    /// Ledger records to append once committed (their `point` is set then).
    pub records: Vec<Record>,
    /// Directories the change creates, deepest first; undoing it removes them.
    #[serde(default)]
    pub created_dirs: Vec<String>,
    /// Set for the `symlink` layout: the change builds a new release
    /// directory and swaps the link instead of replacing files in place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swap: Option<Swap>,
}

/// The directories that adding `changes` would create, deepest first.
pub fn dirs_to_create(root: &Root, changes: &[Change]) -> Vec<String> {
    let mut out = BTreeSet::new();
    for c in changes.iter().filter(|c| c.new.is_some()) {
        let mut dir = parent(&c.path);
        while !dir.is_empty() && !out.contains(dir) && root.metadata(dir).is_err() {
            out.insert(dir.to_owned());
            dir = parent(dir);
        }
    }
    let mut out: Vec<String> = out.into_iter().collect();
    out.sort_by_key(|d| std::cmp::Reverse(d.matches('/').count()));
    out
}

/// Why a transaction failed.
#[derive(Debug, thiserror::Error)]
pub enum TxnError {
    /// A file-system step failed.
    #[error("{what}: {}", crate::store::plain(source))]
    Io {
        /// The step.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> TxnError {
    let what = what.into();
    move |source| TxnError::Io { what, source }
}

/// What recovery did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovered {
    /// There was nothing to recover.
    Nothing,
    /// The interrupted change was committed; its files were completed.
    Forward(u64),
    /// The interrupted change was undone.
    Back,
}

fn journal_path(state: &SiteState) -> PathBuf {
    state.journal_path()
}

/// The staged name of change `i`.
fn staged(i: usize) -> String {
    format!("{STAGE_DIR}/{i}")
}

fn parent(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(p, _)| p)
}

/// [`current`], trusting the stat cache for a file whose stat data it
/// vouches for, as planning does, so a rollback reads only what changed.
fn current_cached(root: &Root, cache: &StatCache, path: &str) -> Result<Option<FileRef>, TxnError> {
    if let Ok(meta) = root.metadata(path)
        && meta.kind == Kind::File
        && let Some((_, blob)) = cache.lookup(path, &meta)
    {
        return Ok(Some(FileRef {
            blob,
            mode: meta.mode,
            symlink: false,
        }));
    }
    current(root, path)
}

/// The blob and mode of `path` on disk now, if present.
pub fn current(root: &Root, path: &str) -> Result<Option<FileRef>, TxnError> {
    Ok(current_with_content(root, path)?.map(|(f, _)| f))
}

/// [`current`], with the content read (a link's target, for links), so a
/// caller that also hashes it reads the file once.
pub fn current_with_content(
    root: &Root,
    path: &str,
) -> Result<Option<(FileRef, Vec<u8>)>, TxnError> {
    let meta = match root.metadata(path) {
        Ok(m) => m,
        // A name too long for this file system cannot be there either; an
        // error here would leave recovery stuck on every later command.
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::InvalidFilename
            ) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(io(format!("{path}: stat"))(e)),
    };
    match meta.kind {
        Kind::File => {
            let (mut f, meta) = root.open_file(path).map_err(io(format!("{path}: open")))?;
            let mut bytes = Vec::new();
            f.read_to_end(&mut bytes)
                .map_err(io(format!("{path}: read")))?;
            let file = FileRef {
                blob: BlobId::of(&bytes),
                mode: meta.mode,
                symlink: false,
            };
            Ok(Some((file, bytes)))
        }
        Kind::Symlink => {
            let target = root
                .read_link(path)
                .map_err(io(format!("{path}: readlink")))?
                .into_encoded_bytes();
            let link = FileRef {
                blob: BlobId::of(&target),
                mode: 0o777,
                symlink: true,
            };
            Ok(Some((link, target)))
        }
        other => Err(TxnError::Io {
            what: format!("{path}: refusing to replace {}", other.describe()),
            source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
        }),
    }
}

fn same(a: Option<FileRef>, b: Option<FileRef>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => {
            a.blob == b.blob && a.symlink == b.symlink && (a.symlink || a.mode == b.mode)
        }
        _ => false,
    }
}

/// Makes `path` hold `want` (from `points.git`), by staged file and rename.
fn put(
    root: &Root,
    points: &Points,
    steps: &Steps,
    i: usize,
    path: &str,
    want: Option<FileRef>,
) -> Result<(), TxnError> {
    match want {
        Some(f) => {
            let bytes = points.read_blob(f.blob)?;
            steps.step("stage")?;
            root.remove(&staged(i)).map_err(io("clear stage"))?;
            root.create(&staged(i), &bytes, f.mode, f.symlink)
                .map_err(io(format!("{path}: stage")))?;
            steps.step("mkdir")?;
            root.create_dirs(parent(path))
                .map_err(io(format!("{path}: create directories")))?;
            steps.step("rename")?;
            root.rename(&staged(i), path)
                .map_err(io(format!("{path}: replace")))?;
        }
        None => {
            steps.step("unlink")?;
            root.remove(path).map_err(io(format!("{path}: delete")))?;
        }
    }
    Ok(())
}

/// Removes the directories that deleting files left empty, deepest first
/// (git does the same), so the tree after a change is exactly the target's.
pub(super) fn prune_empty_dirs(
    root: &Root,
    steps: &Steps,
    deleted: &[&str],
) -> Result<(), TxnError> {
    let mut dirs: BTreeSet<String> = BTreeSet::new();
    for path in deleted {
        let mut dir = parent(path);
        while !dir.is_empty() {
            dirs.insert(dir.to_owned());
            dir = parent(dir);
        }
    }
    let mut dirs: Vec<String> = dirs.into_iter().collect();
    dirs.sort_by_key(|d| std::cmp::Reverse(d.matches('/').count()));
    for dir in dirs {
        if root.list(&dir).is_ok_and(|entries| entries.is_empty()) {
            steps.step("rmdir")?;
            root.remove_tree(&dir)
                .map_err(io(format!("{dir}/: remove")))?;
            // The removal is durable only once its parent is synced; else a
            // crash after the commit could bring back an empty directory.
            root.sync_dir(parent(&dir))
                .map_err(io(format!("{}/: fsync", parent(&dir))))?;
        }
    }
    Ok(())
}

fn sync_parents(root: &Root, steps: &Steps, changes: &[Change]) -> Result<(), TxnError> {
    let dirs: BTreeSet<&str> = changes.iter().map(|c| parent(&c.path)).collect();
    // The failpoints still count one step per directory; the fsyncs then
    // run together, all before the commit step.
    for _ in &dirs {
        steps.step("fsync dir")?;
    }
    let dirs: Vec<&str> = dirs.into_iter().collect();
    in_parallel(&dirs, |dir| match root.sync_dir(dir) {
        Ok(()) => Ok(()),
        // A directory that never came to exist (a delete in it) has nothing to sync.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(std::io::Error::new(e.kind(), format!("{dir}/: fsync: {e}"))),
    })
    .map_err(io("fsync directories"))
}

/// The snapshot after `changes` on top of `base`.
pub fn apply_to_snapshot(mut base: Snapshot, changes: &[Change]) -> Snapshot {
    for c in changes {
        match c.new {
            Some(f) => {
                base.insert(c.path.clone(), f.entry());
            }
            None => {
                base.remove(&c.path);
            }
        }
    }
    base
}

impl From<std::io::Error> for TxnError {
    fn from(source: std::io::Error) -> Self {
        TxnError::Io {
            what: "a file-system step".into(),
            source,
        }
    }
}

/// Moves each staged file into place and deletes what the change deletes,
/// in the journal's order, then removes the directories the deletions
/// emptied: the step both the one-site transaction and a group commit's
/// replace phase take, with the same numbered steps.
pub(super) fn replace_all(
    root: &Root,
    steps: &Steps,
    journal: &Journal,
    progress: Option<&dyn crate::inventory::Progress>,
) -> Result<(), TxnError> {
    for (i, c) in journal.changes.iter().enumerate() {
        match c.new {
            Some(_) => {
                steps.step("mkdir")?;
                root.create_dirs(parent(&c.path))
                    .map_err(io(format!("{}: create directories", c.path)))?;
                steps.step("rename")?;
                root.rename(&staged(i), &c.path)
                    .map_err(io(format!("{}: replace", c.path)))?;
            }
            None => {
                steps.step("unlink")?;
                root.remove(&c.path)
                    .map_err(io(format!("{}: delete", c.path)))?;
            }
        }
        if let Some(p) = progress {
            p.advance();
        }
    }
    if let Some(p) = progress {
        p.finish();
    }
    let deleted: Vec<&str> = journal
        .changes
        .iter()
        .filter(|c| c.new.is_none())
        .map(|c| c.path.as_str())
        .collect();
    prune_empty_dirs(root, steps, &deleted)?;
    Ok(())
}

/// Runs a prepared change: every blob of `journal` (old and new) must
/// already be in `points`. Returns the new point. The journal stays until
/// [`finish`], so that a crash before it is completed by recovery.
pub fn execute(
    progress: Option<&dyn crate::inventory::Progress>,
    root: &Root,
    state: &SiteState,
    points: &Points,
    steps: &Steps,
    journal: &Journal,
) -> Result<u64, TxnError> {
    // The point's trees and commit join the change's contents in one pack,
    // durable before the journal names any of them; only the ref is left
    // for the commit step.
    let prepared = prepare(points, journal)?;
    points.flush()?;
    if let Some(swap) = &journal.swap {
        // The journal comes first: the release directory it names is
        // removed by recovery if the change does not commit.
        write_journal(state, steps, journal)?;
        swap.build(root, points, steps, &journal.changes, progress)?;
        swap.publish(steps)?;
        return commit(state, points, steps, journal, prepared);
    }
    // Stage every new content beside the site, on its file system.
    if let Some(p) = progress {
        p.start(2 * journal.changes.len() as u64);
    }
    steps.step("clear stage")?;
    root.remove_tree(STAGE_DIR).map_err(io("clear stage"))?;
    steps.step("create stage")?;
    root.create_dirs(STAGE_DIR).map_err(io("create stage"))?;
    let mut to_sync = Vec::new();
    for (i, c) in journal.changes.iter().enumerate() {
        if let Some(f) = c.new {
            let bytes = points.read_blob(f.blob)?;
            steps.step("stage")?;
            root.create_unsynced(&staged(i), &bytes, f.mode, f.symlink)
                .map_err(io(format!("{}: stage", c.path)))?;
            if !f.symlink {
                to_sync.push(staged(i));
            }
        }
        if let Some(p) = progress {
            p.advance();
        }
    }
    // Every staged file is on disk before the journal names it, as before;
    // only the flushes overlap instead of waiting for each other.
    steps.step("fsync stage")?;
    in_parallel(&to_sync, |rel| root.sync_file(rel)).map_err(io("fsync stage"))?;
    root.sync_dir(STAGE_DIR).map_err(io("fsync stage"))?;

    // The journal: from here on, recovery knows what to finish or undo.
    write_journal(state, steps, journal)?;

    replace_all(root, steps, journal, progress)?;
    sync_parents(root, steps, &journal.changes)?;
    commit(state, points, steps, journal, prepared)
}

fn write_journal(state: &SiteState, steps: &Steps, journal: &Journal) -> Result<(), TxnError> {
    steps.step("journal")?;
    let text = serde_json::to_vec_pretty(journal).map_err(|e| io("journal")(e.into()))?;
    atomic_write(&journal_path(state), &text, Durability::Durable).map_err(io("write journal"))
}

/// Writes the point a change will commit, without its ref: the base
/// point's trees along the changed paths, the rest kept by id.
fn prepare(points: &Points, journal: &Journal) -> Result<Prepared, TxnError> {
    let changes: Vec<(&str, Option<SnapshotEntry>)> = journal
        .changes
        .iter()
        .map(|c| (c.path.as_str(), c.new.map(FileRef::entry)))
        .collect();
    let mut meta = journal.meta.clone();
    meta.txn = Some(journal.id.clone());
    Ok(points.prepare_changes(journal.base_point, &changes, meta)?)
}

/// Commits the point (the atomic step) and appends the ledger records.
fn commit(
    state: &SiteState,
    points: &Points,
    steps: &Steps,
    journal: &Journal,
    prepared: Prepared,
) -> Result<u64, TxnError> {
    steps.step("commit point")?;
    let point = points.publish(prepared)?;
    append_records(state, steps, journal, point)?;
    Ok(point)
}

fn append_records(
    state: &SiteState,
    steps: &Steps,
    journal: &Journal,
    point: u64,
) -> Result<(), TxnError> {
    let ledger = state.ledger();
    let existing = ledger.read()?;
    for r in &journal.records {
        if existing
            .iter()
            .any(|e| e.point == Some(point) && e.kind == r.kind && e.id == r.id)
        {
            continue;
        }
        steps.step("ledger")?;
        let mut r = r.clone();
        r.point = Some(point);
        ledger.append(r)?;
    }
    Ok(())
}

/// Ends a transaction: removes the stage and the journal.
pub fn finish(root: &Root, state: &SiteState, steps: &Steps) -> Result<(), TxnError> {
    steps.step("remove stage")?;
    root.remove_tree(STAGE_DIR).map_err(io("remove stage"))?;
    steps.step("remove journal")?;
    remove_durably(&journal_path(state)).map_err(io("remove journal"))?;
    Ok(())
}

/// Whether an interrupted change awaits recovery.
pub fn pending(state: &SiteState) -> bool {
    journal_path(state).exists()
}

/// Finishes or undoes an interrupted change. The caller holds the lock.
/// Idempotent: a crash inside it is recovered by the next call.
pub fn recover(
    root: &Root,
    state: &SiteState,
    steps: &Steps,
    by: crate::store::By,
    now: crate::model::values::Timestamp,
) -> Result<Recovered, TxnError> {
    let path = journal_path(state);
    remove_temps(&path).map_err(io("remove a half-written journal"))?;
    // A group commit's pack and ref under temporary names: nothing names
    // them yet (a ref not renamed is a change that did not commit).
    Points::remove_unnamed(&state.points_path())?;
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // No journal, but a stage left by a crash before the journal was written.
            if root.metadata(STAGE_DIR).is_ok() {
                steps.step("remove stage")?;
                root.remove_tree(STAGE_DIR).map_err(io("remove stage"))?;
            }
            return Ok(Recovered::Nothing);
        }
        Err(e) => return Err(io("read journal")(e)),
    };
    let journal: Journal = serde_json::from_slice(&text).map_err(|e| StoreError::Corrupt {
        path: path.clone(),
        line: 0,
        message: format!("not a journal: {e}"),
    })?;
    let points = state.points()?;
    let committed = match points.latest()? {
        Some(n) => (points.meta(n)?.txn.as_deref() == Some(journal.id.as_str())).then_some(n),
        None => None,
    };
    match &journal.swap {
        Some(swap) => swap.recover(steps, committed.is_some())?,
        None => recover_in_place(root, &points, steps, &journal, committed.is_some())?,
    }
    let outcome = match committed {
        Some(point) => {
            append_records(state, steps, &journal, point)?;
            Recovered::Forward(point)
        }
        None => Recovered::Back,
    };
    steps.step("ledger")?;
    let note = match outcome {
        Recovered::Forward(p) => format!("an interrupted change was completed (point {p})"),
        _ => "an interrupted change was undone; the files are as before it".to_owned(),
    };
    state.ledger().append(Record {
        seq: 0,
        at: now,
        kind: LedgerKind::Recovery,
        id: Some(journal.id.clone()),
        checksum: None,
        version_before: journal
            .records
            .first()
            .and_then(|r| r.version_before.clone()),
        version_after: journal
            .records
            .first()
            .and_then(|r| r.version_after.clone()),
        files: journal.changes.iter().map(|c| c.path.clone()).collect(),
        point: match outcome {
            Recovered::Forward(p) => Some(p),
            _ => journal.base_point,
        },
        plan_digest: journal.meta.plan_digest.clone(),
        by,
        result: LedgerResult::Ok,
        error: Some(note),
    })?;
    finish(root, state, steps)?;
    Ok(outcome)
}

/// Recovery of an `in_place` change: every path of the journal is put back
/// to its old state, or forward to its new one when `committed`.
fn recover_in_place(
    root: &Root,
    points: &Points,
    steps: &Steps,
    journal: &Journal,
    committed: bool,
) -> Result<(), TxnError> {
    for (i, c) in journal.changes.iter().enumerate() {
        let want = if committed { c.new } else { c.old };
        if !same(current(root, &c.path)?, want) {
            put(root, points, steps, i, &c.path, want)?;
        }
    }
    let deleted: Vec<&str> = journal
        .changes
        .iter()
        .filter(|c| {
            if committed {
                c.new.is_none()
            } else {
                c.old.is_none()
            }
        })
        .map(|c| c.path.as_str())
        .collect();
    prune_empty_dirs(root, steps, &deleted)?;
    sync_parents(root, steps, &journal.changes)?;
    if !committed {
        // Directories the change created go too: the old tree did not have them.
        for dir in &journal.created_dirs {
            if root.list(dir).is_ok_and(|entries| entries.is_empty()) {
                steps.step("rmdir")?;
                root.remove_tree(dir)
                    .map_err(io(format!("{dir}/: remove")))?;
                root.sync_dir(parent(dir))
                    .map_err(io(format!("{}/: fsync", parent(dir))))?;
            }
        }
    }
    Ok(())
}

fn entry_ref(e: &SnapshotEntry) -> FileRef {
    match e {
        SnapshotEntry::File { mode, blob } => FileRef {
            blob: *blob,
            mode: *mode,
            symlink: false,
        },
        SnapshotEntry::Symlink { blob } => FileRef {
            blob: *blob,
            mode: 0o777,
            symlink: true,
        },
    }
}

/// What each path not tracked by a rollback's target should become: the
/// content it had when sitekeeper first tracked it, if it existed before
/// sitekeeper touched it (an adopted or `track` point); absent if a change
/// created it. One pass over the points, oldest first, one snapshot in
/// memory at a time: asking point by point for every path made a rollback
/// of an upgrade that added 1,000 files read 1,000 x N snapshots.
fn untracked_states<'a>(
    points: &Points,
    upto: u64,
    paths: &[&'a String],
) -> Result<BTreeMap<&'a str, Option<FileRef>>, TxnError> {
    let mut out = BTreeMap::new();
    let mut left: BTreeSet<&'a str> = paths.iter().map(|p| p.as_str()).collect();
    for n in points.list()?.into_iter().filter(|n| *n <= upto) {
        if left.is_empty() {
            break;
        }
        let snapshot = points.snapshot(n)?;
        if !left.iter().any(|p| snapshot.contains_key(*p)) {
            continue;
        }
        let meta = points.meta(n)?;
        let pre_existing = meta.kind == crate::store::PointKind::Adopt
            || meta.result == crate::store::PointResult::Track;
        left.retain(|p| match snapshot.get(*p) {
            Some(e) => {
                out.insert(*p, pre_existing.then(|| entry_ref(e)));
                false
            }
            None => true,
        });
    }
    out.extend(left.into_iter().map(|p| (p, None)));
    Ok(out)
}

/// The changes that take the tracked files from `from` (point `latest`,
/// what is on disk) to point `to`, for rollback.
pub fn diff(
    root: &Root,
    cache: &StatCache,
    points: &Points,
    latest: u64,
    from: &Snapshot,
    to: &Snapshot,
) -> Result<Vec<Change>, TxnError> {
    let paths: BTreeSet<&String> = from.keys().chain(to.keys()).collect();
    let untracked: Vec<&String> = paths
        .iter()
        .filter(|p| !to.contains_key(**p))
        .copied()
        .collect();
    let earlier = untracked_states(points, latest, &untracked)?;
    let paths: Vec<&String> = paths.into_iter().collect();
    let olds: Vec<Option<FileRef>> = paths
        .par_iter()
        .map(|p| current_cached(root, cache, p))
        .collect::<Result<_, _>>()?;
    let mut out = Vec::new();
    for (p, old) in paths.into_iter().zip(olds) {
        let new = match to.get(p) {
            Some(e) => Some(entry_ref(e)),
            None => earlier.get(p.as_str()).copied().flatten(),
        };
        if !same(old, new) {
            out.push(Change {
                path: p.clone(),
                old,
                new,
            });
        }
    }
    Ok(out)
}

/// Paths of `changes` mapped to their final state, for checks.
pub fn final_state(changes: &[Change]) -> BTreeMap<&str, Option<FileRef>> {
    changes.iter().map(|c| (c.path.as_str(), c.new)).collect()
}
