//! Rollback points: a bare git repository (`points.git`) with one commit per
//! point and a ref `refs/points/<n>`. Content-addressed, so files a change
//! does not touch cost nothing; never rewritten, so a rollback is a new
//! point. The commit message carries the point's metadata as JSON.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::StoreError;
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
    /// `passed`, `failed` or `skipped`.
    pub health: String,
    /// `ok`, `failed` or `rolled_back`.
    pub result: String,
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
}

impl std::fmt::Debug for Points {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Points").field("path", &self.path).finish()
    }
}

fn git_mode(entry: &SnapshotEntry) -> i32 {
    match entry {
        SnapshotEntry::File { mode, .. } if mode & 0o111 != 0 => 0o100755,
        SnapshotEntry::File { .. } => 0o100644,
        SnapshotEntry::Symlink { .. } => 0o120000,
    }
}

/// Makes libgit2 fsync what it writes into a repository (objects, refs and
/// their directories), once per process. A point's ref is the commit step
/// of every change, so it must be on disk before the ledger says so;
/// libgit2, like git, does not fsync by default.
fn fsync_git_writes() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Initialises libgit2 (and sets what is already its default).
        git2::opts::strict_object_creation(true);
        // SAFETY: libgit2 is initialised above; this option takes one int
        // and only sets a global flag that libgit2 reads on later writes.
        let rc = unsafe {
            libgit2_sys::git_libgit2_opts(
                libgit2_sys::GIT_OPT_ENABLE_FSYNC_GITDIR as std::ffi::c_int,
                1 as std::ffi::c_int,
            )
        };
        debug_assert_eq!(rc, 0, "libgit2 refused GIT_OPT_ENABLE_FSYNC_GITDIR");
    });
}

impl Points {
    /// Opens `points.git` at `path`, creating it if absent.
    pub fn open_or_init(path: &Path) -> Result<Self, StoreError> {
        fsync_git_writes();
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
        })
    }

    fn git(&self) -> impl FnOnce(git2::Error) -> StoreError + '_ {
        move |source| StoreError::Git {
            path: self.path.clone(),
            source,
        }
    }

    /// Stores `bytes` as a blob (a no-op when the content is already there).
    pub fn write_blob(&self, bytes: &[u8]) -> Result<BlobId, StoreError> {
        Ok(BlobId::from_oid(self.repo.blob(bytes).map_err(self.git())?))
    }

    /// The content of a blob.
    pub fn read_blob(&self, blob: BlobId) -> Result<Vec<u8>, StoreError> {
        Ok(self
            .repo
            .find_blob(blob.to_oid())
            .map_err(self.git())?
            .content()
            .to_vec())
    }

    /// Whether the repository holds `blob`.
    pub fn has_blob(&self, blob: BlobId) -> bool {
        self.repo.find_blob(blob.to_oid()).is_ok()
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
    pub fn commit(&self, snapshot: &Snapshot, mut meta: PointMeta) -> Result<u64, StoreError> {
        let point = self.latest()?.map_or(1, |n| n + 1);
        meta.point = point;
        meta.modes = snapshot
            .iter()
            .filter_map(|(path, e)| match e {
                SnapshotEntry::File { mode, .. } if *mode != 0o644 && *mode != 0o755 => {
                    Some((path.clone(), *mode))
                }
                _ => None,
            })
            .collect();
        let tree = self.build_tree(snapshot)?;
        let tree = self.repo.find_tree(tree).map_err(self.git())?;
        let parent = match self.latest()? {
            Some(n) => Some(self.commit_of(n)?),
            None => None,
        };
        let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
        let signature = git2::Signature::new(
            "sitekeeper",
            "sitekeeper@localhost",
            &git2::Time::new(meta.at.0.as_second(), 0),
        )
        .map_err(self.git())?;
        let summary = format!(
            "point {point}: {:?} {} {}",
            meta.kind,
            meta.version,
            meta.fixes.join(" ")
        );
        let body = serde_json::to_string_pretty(&meta).unwrap_or_default();
        let message = format!("{}\n\n{body}\n", summary.trim_end());
        let commit = self
            .repo
            .commit(None, &signature, &signature, &message, &tree, &parents)
            .map_err(self.git())?;
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
        // Group by directory, deepest first, so each subtree exists before its parent.
        let mut dirs: BTreeMap<String, Vec<(String, git2::Oid, i32)>> = BTreeMap::new();
        dirs.entry(String::new()).or_default();
        for (path, entry) in snapshot {
            let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
            dirs.entry(dir.to_owned()).or_default().push((
                name.to_owned(),
                entry.blob().to_oid(),
                git_mode(entry),
            ));
            let mut d = dir;
            while !d.is_empty() {
                let parent = d.rsplit_once('/').map_or("", |(p, _)| p);
                dirs.entry(parent.to_owned()).or_default();
                dirs.entry(d.to_owned()).or_default();
                d = parent;
            }
        }
        let mut order: Vec<String> = dirs.keys().cloned().collect();
        order.sort_by_key(|d| {
            std::cmp::Reverse(if d.is_empty() {
                0
            } else {
                d.matches('/').count() + 1
            })
        });
        let mut built: BTreeMap<String, git2::Oid> = BTreeMap::new();
        for dir in order {
            let mut builder = self.repo.treebuilder(None).map_err(self.git())?;
            for (name, oid, mode) in &dirs[&dir] {
                builder.insert(name, *oid, *mode).map_err(self.git())?;
            }
            let prefix = if dir.is_empty() {
                String::new()
            } else {
                format!("{dir}/")
            };
            for (sub, oid) in built.range(prefix.clone()..) {
                let Some(rest) = sub.strip_prefix(&prefix) else {
                    break;
                };
                if !rest.is_empty() && !rest.contains('/') {
                    builder.insert(rest, *oid, 0o040000).map_err(self.git())?;
                }
            }
            let oid = builder.write().map_err(self.git())?;
            built.insert(dir, oid);
        }
        Ok(built[""])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> PointMeta {
        PointMeta {
            point: 0,
            kind: PointKind::Adopt,
            at: "2026-11-20T10:00:00Z".parse().unwrap(),
            version: "4.2.0".into(),
            fixes: vec![],
            plan_digest: None,
            catalog_commit: None,
            health: "skipped".into(),
            result: "ok".into(),
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
    }
}
