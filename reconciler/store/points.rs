//! Rollback points: a bare git repository (`points.git`) with one commit per
//! point and a ref `refs/points/<n>`. Content-addressed, so files a change
//! does not touch cost nothing; never rewritten, so a rollback is a new
//! point. The commit message carries the point's metadata as JSON.
//!
//! New objects wait in memory, compressed, and reach the disk as one pack
//! ([`super::pack`]) when [`Points::flush`] or [`Points::commit`] runs:
//! a few fsyncs per change instead of two per object. Only the holder of
//! the site lock writes.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::StoreError;
use super::pack::{self, Packed};

mod unnamed;
mod update;
use crate::model::hash::BlobId;
use crate::model::values::Timestamp;

/// How a point came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PointKind {
    /// The first point, when sitekeeper took the site over.
    Adopt,
    /// A change applied.
    Apply,
    /// A return to an earlier point.
    Rollback,
    /// An interrupted change finished or undone.
    Recovery,
}

/// The verdict of the health check that ran after the change that made a
/// point (SPEC §3.1): recorded by a `health` ledger record once the check
/// has run, never before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// The check passed (or it failed before the change too, so the change
    /// was not to blame, SPEC §6.2: then the ledger record says why).
    Passed,
    /// The check failed after the change, which was rolled back.
    Failed,
    /// No check ran.
    Skipped,
}

impl Health {
    /// The word `history` shows.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Passed => "passed",
            Health::Failed => "failed",
            Health::Skipped => "skipped",
        }
    }
}

/// How the change that made a point ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PointResult {
    /// Done.
    Ok,
    /// Not a change: the state before one (local edits, files no point
    /// tracked yet), recorded so a rollback restores it.
    Track,
    /// Failed.
    Failed,
    /// Done, then undone.
    RolledBack,
}

impl PointResult {
    /// The word `history` shows.
    pub fn as_str(self) -> &'static str {
        match self {
            PointResult::Ok => "ok",
            PointResult::Track => "track",
            PointResult::Failed => "failed",
            PointResult::RolledBack => "rolled_back",
        }
    }
}

/// What a point records besides its files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PointMeta {
    /// Its number.
    pub point: u64,
    /// How it came to be.
    pub kind: PointKind,
    /// When.
    pub at: Timestamp,
    /// The release installed.
    pub version: String,
    /// Fixes applied on top, in order.
    pub fixes: Vec<String>,
    /// The plan that made it.
    pub plan_digest: Option<String>,
    /// The catalog commit planned against; a rollback point keeps the
    /// newest one applied before it, the mark later catalog commits must
    /// descend from (SPEC §7).
    pub catalog_commit: Option<String>,
    /// Only in points written before health verdicts moved to the ledger
    /// (which wrote it before the check ran); see [`PointMeta::health`].
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "health")]
    pub legacy_health: Option<Health>,
    /// How the change ended.
    pub result: PointResult,
    /// Exact permission bits of files whose mode is not what git keeps
    /// (0644 for files, 0755 for executables).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub modes: BTreeMap<String, u32>,
    /// The transaction that made it, so recovery can tell a committed
    /// change from an interrupted one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub txn: Option<String>,
    /// The release directory the change built (`symlink` layout), so
    /// retention knows which directories its points still name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release_dir: Option<String>,
}

impl PointMeta {
    /// The point's health verdict: the newest `health` ledger record about
    /// it, else what an older sitekeeper wrote into the point, else
    /// `skipped` (no check ran).
    pub fn health(&self, verdicts: &BTreeMap<u64, Health>) -> Health {
        verdicts
            .get(&self.point)
            .copied()
            .or(self.legacy_health)
            .unwrap_or(Health::Skipped)
    }
}

/// One path of a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotEntry {
    /// A regular file with its permission bits and blob.
    File {
        /// Permission bits.
        mode: u32,
        /// The blob (already written to the repository).
        blob: BlobId,
    },
    /// A symbolic link whose target text is the blob.
    Symlink {
        /// The blob holding the target.
        blob: BlobId,
    },
}

impl SnapshotEntry {
    /// The blob.
    pub fn blob(&self) -> BlobId {
        match self {
            SnapshotEntry::File { blob, .. } | SnapshotEntry::Symlink { blob } => *blob,
        }
    }
}

/// A point's files: relative path → entry.
pub type Snapshot = BTreeMap<String, SnapshotEntry>;

/// A site's rollback points.
pub struct Points {
    repo: git2::Repository,
    path: PathBuf,
    pending: RefCell<Pending>,
}

/// A point whose objects are written (or queued) but whose ref is not:
/// [`Points::publish`] makes it a point.
#[derive(Debug)]
#[must_use = "a prepared point is not a point until it is published"]
pub struct Prepared {
    point: u64,
    commit: git2::Oid,
}

/// Objects written but not yet packed.
#[derive(Default)]
struct Pending {
    objects: Vec<Packed>,
    ids: HashSet<git2::Oid>,
    bytes: usize,
}

/// Pending objects are packed once they take this much memory, so adopting
/// a large site stays within a bounded footprint.
const FLUSH_AT: usize = 48 << 20;

impl std::fmt::Debug for Points {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Points").field("path", &self.path).finish()
    }
}

/// The mode a tree entry carries, as git writes it.
fn git_mode(entry: &SnapshotEntry) -> &'static str {
    match entry {
        SnapshotEntry::File { mode, .. } if mode & 0o111 != 0 => "100755",
        SnapshotEntry::File { .. } => "100644",
        SnapshotEntry::Symlink { .. } => "120000",
    }
}

impl Points {
    /// Opens `points.git` at `path`, creating it if absent.
    pub fn open_or_init(path: &Path) -> Result<Self, StoreError> {
        super::configure_libgit2();
        let git = |source| StoreError::Git {
            path: path.to_owned(),
            source,
        };
        let repo = match git2::Repository::open_bare(path) {
            Ok(repo) => repo,
            Err(_) => git2::Repository::init_bare(path).map_err(git)?,
        };
        Ok(Self {
            repo,
            path: path.to_owned(),
            pending: RefCell::default(),
        })
    }

    fn git(&self) -> impl FnOnce(git2::Error) -> StoreError + '_ {
        move |source| StoreError::Git {
            path: self.path.clone(),
            source,
        }
    }

    /// Stores `bytes` as a blob (a no-op when the content is already
    /// there). It is durable once [`Points::flush`] or [`Points::commit`]
    /// returns.
    pub fn write_blob(&self, bytes: &[u8]) -> Result<BlobId, StoreError> {
        let oid = git2::Oid::hash_object(git2::ObjectType::Blob, bytes).map_err(self.git())?;
        if !self.has(oid)? {
            self.stage(Packed::with_oid(oid, git2::ObjectType::Blob, bytes).map_err(self.git())?)?;
        }
        Ok(BlobId::from_oid(oid))
    }

    /// Queues an object for the next pack, packing when the queue is full.
    fn stage(&self, object: Packed) -> Result<(), StoreError> {
        let full = {
            let mut p = self.pending.borrow_mut();
            p.bytes += object.deflated.len();
            p.ids.insert(object.oid);
            p.objects.push(object);
            p.bytes >= FLUSH_AT
        };
        if full {
            self.flush()?;
        }
        Ok(())
    }

    /// Whether the repository or the queue holds `oid`.
    fn has(&self, oid: git2::Oid) -> Result<bool, StoreError> {
        if self.pending.borrow().ids.contains(&oid) {
            return Ok(true);
        }
        // Without a refresh on a miss: most lookups here are of new
        // objects, and libgit2 would re-read the pack directory for each.
        // Only this process writes (under the site lock) and `flush`
        // refreshes after each of its packs, so nothing is missed.
        let odb = self.repo.odb().map_err(self.git())?;
        Ok(odb.exists_ext(oid, git2::OdbLookupFlags::NO_REFRESH))
    }

    /// Makes every object written so far durable, as one pack.
    pub fn flush(&self) -> Result<(), StoreError> {
        let objects = std::mem::take(&mut *self.pending.borrow_mut()).objects;
        if objects.is_empty() {
            return Ok(());
        }
        pack::write(&self.repo, &objects).map_err(self.git())?;
        self.repo
            .odb()
            .and_then(|o| o.refresh())
            .map_err(self.git())
    }

    /// The content of a blob.
    pub fn read_blob(&self, blob: BlobId) -> Result<Vec<u8>, StoreError> {
        let oid = blob.to_oid();
        {
            let p = self.pending.borrow();
            if let Some(o) = p.objects.iter().find(|o| o.oid == oid) {
                let mut out = Vec::with_capacity(o.size);
                flate2::read::ZlibDecoder::new(&o.deflated[..])
                    .read_to_end(&mut out)
                    .map_err(|e| StoreError::Io {
                        path: self.path.clone(),
                        source: e,
                    })?;
                return Ok(out);
            }
        }
        Ok(self
            .repo
            .find_blob(oid)
            .map_err(self.git())?
            .content()
            .to_vec())
    }

    /// Whether the repository holds `blob`.
    pub fn has_blob(&self, blob: BlobId) -> bool {
        self.has(blob.to_oid()).unwrap_or(false)
    }

    /// Every point number, ascending.
    pub fn list(&self) -> Result<Vec<u64>, StoreError> {
        let mut out: Vec<u64> = self
            .repo
            .references_glob("refs/points/*")
            .map_err(self.git())?
            .filter_map(|r| {
                r.ok()?
                    .name()
                    .ok()?
                    .strip_prefix("refs/points/")?
                    .parse()
                    .ok()
            })
            .collect();
        out.sort_unstable();
        Ok(out)
    }

    /// The newest point, if any.
    pub fn latest(&self) -> Result<Option<u64>, StoreError> {
        Ok(self.list()?.last().copied())
    }

    fn commit_of(&self, point: u64) -> Result<git2::Commit<'_>, StoreError> {
        let reference = self
            .repo
            .find_reference(&format!("refs/points/{point}"))
            .map_err(self.git())?;
        reference.peel_to_commit().map_err(self.git())
    }

    /// The commit id of a point.
    pub fn commit_id(&self, point: u64) -> Result<String, StoreError> {
        Ok(self.commit_of(point)?.id().to_string())
    }

    /// A point's metadata.
    pub fn meta(&self, point: u64) -> Result<PointMeta, StoreError> {
        let commit = self.commit_of(point)?;
        let message = commit.message().unwrap_or("");
        let json = message.split_once("\n\n").map_or("", |(_, body)| body);
        serde_json::from_str(json).map_err(|e| StoreError::Corrupt {
            path: self.path.clone(),
            line: 0,
            message: format!("point {point} has no readable metadata: {e}"),
        })
    }

    /// A point's files and their blobs only: what planning compares the
    /// disk with, built without the modes a snapshot also carries. Walks
    /// the point's trees; the site index keeps the last point's list, so
    /// a plan only walks after a point the index was not written for.
    pub fn blobs(&self, point: u64) -> Result<BTreeMap<String, BlobId>, StoreError> {
        self.walk_blobs(&self.commit_of(point)?)
    }

    /// A point's commit id, as the site index keys its point side.
    pub fn commit_key(&self, point: u64) -> Result<[u8; 20], StoreError> {
        let id = self.commit_of(point)?.id();
        id.as_bytes().try_into().map_err(|_| StoreError::Corrupt {
            path: self.path.clone(),
            line: 0,
            message: format!("point {point}'s commit id {id} is not SHA-1"),
        })
    }

    fn walk_blobs(
        &self,
        commit: &git2::Commit<'_>,
    ) -> Result<BTreeMap<String, BlobId>, StoreError> {
        let tree = commit.tree().map_err(self.git())?;
        let mut out = BTreeMap::new();
        tree.walk(git2::TreeWalkMode::PreOrder, |dir, entry| {
            if entry.kind() != Some(git2::ObjectType::Tree)
                && let Ok(name) = entry.name()
            {
                out.insert(format!("{dir}{name}"), BlobId::from_oid(entry.id()));
            }
            git2::TreeWalkResult::Ok
        })
        .map_err(self.git())?;
        Ok(out)
    }

    /// A point's files.
    pub fn snapshot(&self, point: u64) -> Result<Snapshot, StoreError> {
        let commit = self.commit_of(point)?;
        let meta = self.meta(point)?;
        let tree = commit.tree().map_err(self.git())?;
        let mut out = Snapshot::new();
        let mut failure = None;
        tree.walk(git2::TreeWalkMode::PreOrder, |dir, entry| {
            let Ok(name) = entry.name() else {
                return git2::TreeWalkResult::Ok;
            };
            let path = format!("{dir}{name}");
            let blob = BlobId::from_oid(entry.id());
            match entry.filemode() {
                0o100644 | 0o100755 => {
                    let git_mode = if entry.filemode() == 0o100755 {
                        0o755
                    } else {
                        0o644
                    };
                    let mode = meta.modes.get(&path).copied().unwrap_or(git_mode);
                    out.insert(path, SnapshotEntry::File { mode, blob });
                }
                0o120000 => {
                    out.insert(path, SnapshotEntry::Symlink { blob });
                }
                0o040000 => {}
                other => failure = Some(format!("{path} has git mode {other:o}")),
            }
            git2::TreeWalkResult::Ok
        })
        .map_err(self.git())?;
        match failure {
            Some(message) => Err(StoreError::Corrupt {
                path: self.path.clone(),
                line: 0,
                message,
            }),
            None => Ok(out),
        }
    }

    /// Commits `snapshot` as the next point with `meta` (whose `point` and
    /// `modes` are filled in here) and returns its number. The ref is the
    /// publishing step: a crash before it leaves only unreferenced objects.
    pub fn commit(&self, snapshot: &Snapshot, meta: PointMeta) -> Result<u64, StoreError> {
        let prepared = self.prepare(snapshot, meta)?;
        self.publish(prepared)
    }

    /// The first half of [`Points::commit`]: writes the point's trees and
    /// commit into the queue, so that a change can make them durable in
    /// the same pack as its contents, before its journal.
    pub fn prepare(
        &self,
        snapshot: &Snapshot,
        mut meta: PointMeta,
    ) -> Result<Prepared, StoreError> {
        meta.modes = snapshot
            .iter()
            .filter_map(|(path, e)| match e {
                SnapshotEntry::File { mode, .. } if *mode != 0o644 && *mode != 0o755 => {
                    Some((path.clone(), *mode))
                }
                _ => None,
            })
            .collect();
        self.prepare_with(meta, |points| points.build_tree(snapshot))
    }

    /// The rest of [`Points::prepare`] once `meta.modes` is set: `tree`
    /// writes the point's trees and gives the root's id.
    fn prepare_with(
        &self,
        mut meta: PointMeta,
        tree: impl FnOnce(&Self) -> Result<git2::Oid, StoreError>,
    ) -> Result<Prepared, StoreError> {
        let point = self.latest()?.map_or(1, |n| n + 1);
        meta.point = point;
        // Merging small packs first: a failure there leaves the change
        // uncommitted, never committed-but-reported-failed.
        pack::maintain(&self.repo).map_err(self.git())?;
        let tree = tree(self)?;
        let parent = match self.latest()? {
            Some(n) => Some(self.commit_of(n)?.id()),
            None => None,
        };
        let summary = format!(
            "point {point}: {:?} {} {}",
            meta.kind,
            meta.version,
            meta.fixes.join(" ")
        );
        let body = serde_json::to_string_pretty(&meta).unwrap_or_default();
        let message = format!("{}\n\n{body}\n", summary.trim_end());
        // The same bytes libgit2's commit call writes, built here so that
        // the commit goes into the change's pack rather than a loose file.
        let who = format!(
            "sitekeeper <sitekeeper@localhost> {} +0000",
            meta.at.0.as_second()
        );
        let mut text = format!("tree {tree}\n");
        if let Some(parent) = parent {
            text.push_str(&format!("parent {parent}\n"));
        }
        text.push_str(&format!("author {who}\ncommitter {who}\n\n{message}"));
        let commit = self.object(git2::ObjectType::Commit, text.as_bytes())?;
        Ok(Prepared { point, commit })
    }

    /// The second half of [`Points::commit`], the commit step: makes what
    /// is queued durable (nothing, when the change flushed it already),
    /// then writes the point's ref. Returns the point's number.
    pub fn publish(&self, prepared: Prepared) -> Result<u64, StoreError> {
        let Prepared { point, commit } = prepared;
        // Everything the point names is on disk before the ref names it.
        self.flush()?;
        if self.latest()? >= Some(point) {
            return Err(StoreError::Corrupt {
                path: self.path.clone(),
                line: 0,
                message: format!("point {point} was written while this change was prepared"),
            });
        }
        self.repo
            .reference(
                &format!("refs/points/{point}"),
                commit,
                false,
                &format!("point {point}"),
            )
            .map_err(self.git())?;
        Ok(point)
    }

    /// Queues a tree or commit object unless it exists, and returns its id.
    fn object(&self, kind: git2::ObjectType, data: &[u8]) -> Result<git2::Oid, StoreError> {
        let oid = git2::Oid::hash_object(kind, data).map_err(self.git())?;
        if !self.has(oid)? {
            self.stage(Packed::with_oid(oid, kind, data).map_err(self.git())?)?;
        }
        Ok(oid)
    }

    /// Forgets point `n` (retention): its ref goes; objects shared with
    /// other points stay.
    pub fn drop_point(&self, n: u64) -> Result<(), StoreError> {
        let mut r = self
            .repo
            .find_reference(&format!("refs/points/{n}"))
            .map_err(self.git())?;
        r.delete().map_err(self.git())
    }

    /// Writes the nested trees of `snapshot`, returning the root tree id.
    fn build_tree(&self, snapshot: &Snapshot) -> Result<git2::Oid, StoreError> {
        // Entries per directory: name, mode, id. Directories are added as
        // their subtrees are written, deepest first.
        type Entries<'a> = Vec<(&'a str, &'static str, git2::Oid)>;
        let mut dirs: BTreeMap<&str, Entries<'_>> = BTreeMap::new();
        dirs.entry("").or_default();
        for (path, entry) in snapshot {
            let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
            dirs.entry(dir)
                .or_default()
                .push((name, git_mode(entry), entry.blob().to_oid()));
            let mut d = dir;
            while !d.is_empty() {
                let parent = d.rsplit_once('/').map_or("", |(p, _)| p);
                dirs.entry(parent).or_default();
                dirs.entry(d).or_default();
                d = parent;
            }
        }
        let mut order: Vec<&str> = dirs.keys().copied().collect();
        order.sort_by_key(|d| {
            std::cmp::Reverse(if d.is_empty() {
                0
            } else {
                d.matches('/').count() + 1
            })
        });
        let mut root = None;
        for dir in order {
            let mut entries = dirs.remove(dir).unwrap_or_default();
            // Git orders a directory's entries by name, a subtree's name
            // compared as if it ended in '/'.
            entries.sort_by(|a, b| {
                let key = |e: &(&str, &str, git2::Oid)| {
                    let slash: &[u8] = if e.1 == "40000" { b"/" } else { b"" };
                    [e.0.as_bytes(), slash].concat()
                };
                key(a).cmp(&key(b))
            });
            let mut data = Vec::new();
            for (name, mode, oid) in &entries {
                data.extend_from_slice(mode.as_bytes());
                data.push(b' ');
                data.extend_from_slice(name.as_bytes());
                data.push(0);
                data.extend_from_slice(oid.as_bytes());
            }
            let oid = self.object(git2::ObjectType::Tree, &data)?;
            match dir.rsplit_once('/') {
                _ if dir.is_empty() => root = Some(oid),
                Some((parent, name)) => dirs.entry(parent).or_default().push((name, "40000", oid)),
                None => dirs.entry("").or_default().push((dir, "40000", oid)),
            }
        }
        root.ok_or_else(|| StoreError::Corrupt {
            path: self.path.clone(),
            line: 0,
            message: "a snapshot without a root tree".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn meta() -> PointMeta {
        PointMeta {
            point: 0,
            kind: PointKind::Adopt,
            at: "2026-11-20T10:00:00Z".parse().unwrap(),
            version: "4.2.0".into(),
            fixes: vec![],
            plan_digest: None,
            catalog_commit: None,
            legacy_health: None,
            result: PointResult::Ok,
            modes: BTreeMap::new(),
            txn: None,
            release_dir: None,
        }
    }

    #[test]
    fn snapshots_round_trip_with_nesting_modes_and_links() {
        let dir = tempfile::tempdir().unwrap();
        let points = Points::open_or_init(&dir.path().join("points.git")).unwrap();
        let mut snap = Snapshot::new();
        let a = points.write_blob(b"<?php echo 1;\n").unwrap();
        let b = points.write_blob(b"#!/bin/sh\n").unwrap();
        let l = points.write_blob(b"../lib/a.php").unwrap();
        snap.insert(
            "index.php".into(),
            SnapshotEntry::File {
                mode: 0o644,
                blob: a,
            },
        );
        snap.insert(
            "lib/deep/x/a.php".into(),
            SnapshotEntry::File {
                mode: 0o640,
                blob: a,
            },
        );
        snap.insert(
            "bin/run".into(),
            SnapshotEntry::File {
                mode: 0o755,
                blob: b,
            },
        );
        snap.insert("lib/link".into(), SnapshotEntry::Symlink { blob: l });
        // Names that sort differently as a directory and as a file.
        for name in ["a.b", "a/c", "a-b", "a0", "lib.php", "lib-x/y"] {
            snap.insert(
                name.into(),
                SnapshotEntry::File {
                    mode: 0o644,
                    blob: a,
                },
            );
        }
        let p1 = points.commit(&snap, meta()).unwrap();
        assert_eq!(p1, 1);
        assert_eq!(points.snapshot(1).unwrap(), snap);
        assert_eq!(
            points.meta(1).unwrap().modes.get("lib/deep/x/a.php"),
            Some(&0o640)
        );
        snap.remove("bin/run");
        let p2 = points.commit(&snap, meta()).unwrap();
        assert_eq!(p2, 2);
        assert_eq!(points.list().unwrap(), vec![1, 2]);
        assert_eq!(points.snapshot(2).unwrap(), snap);
        assert_eq!(points.read_blob(a).unwrap(), b"<?php echo 1;\n");
        // Packed objects are found without libgit2's refresh on a miss, by
        // this handle and by a new one.
        assert!(points.has_blob(a) && points.has_blob(b));
        let fresh = Points::open_or_init(&dir.path().join("points.git")).unwrap();
        assert!(fresh.has_blob(l));
        assert!(!fresh.has_blob(BlobId::of(b"never written")));
        let c = points.write_blob(b"after the commit").unwrap();
        assert!(points.has_blob(c), "a queued blob is found");
        points.flush().unwrap();
        assert!(points.has_blob(c), "a flushed blob is found");
        // The hand-built trees and commits are what git itself would write:
        // its strictest check finds nothing, and the objects are packed.
        let git = |args: &[&str]| crate::store::test_git(&dir.path().join("points.git"), args);
        git(&["fsck", "--strict", "--no-dangling"]);
        let listing = git(&["ls-tree", "-r", "refs/points/1"]);
        assert!(listing.contains("100755 blob"), "{listing}");
        let counts = git(&["count-objects", "-v"]);
        assert!(counts.contains("count: 0"), "loose objects left: {counts}");
        // Each point's file list is its own.
        let blobs = |snap: &Snapshot| -> BTreeMap<String, BlobId> {
            snap.iter().map(|(p, e)| (p.clone(), e.blob())).collect()
        };
        let first = points.snapshot(1).unwrap();
        for (n, expected) in [(2, &snap), (1, &first)] {
            assert_eq!(points.blobs(n).unwrap(), blobs(expected), "point {n}");
        }
        assert_ne!(points.commit_key(1).unwrap(), points.commit_key(2).unwrap());
    }
}
