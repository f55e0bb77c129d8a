//! Staging a change before anything on the site moves (SPEC §6.1): the
//! final state of every path it touches, re-verified against disk; the
//! free space it needs; every old and new content stored in `points.git`;
//! and the state before the change recorded as a point of its own.

use std::collections::BTreeMap;

use super::locked::Locked;
use super::{ApplyError, Options, failed};
use crate::apply::swap;
use crate::apply::txn::{self, Change, FileRef};
use crate::confined::Root;
use crate::model::hash::BlobId;
use crate::model::values::Timestamp;
use crate::model::words::Layout;
use crate::observe::SiteContext;
use crate::plan::SitePlan;
use crate::store::{PointKind, PointResult, Points};

/// New contents by blob, shared with the plan rather than copied.
type Contents = BTreeMap<BlobId, std::sync::Arc<crate::plan::FileData>>;

/// The final state of every path a plan touches, with its new content.
pub(super) fn plan_changes(
    root: &Root,
    plan: &SitePlan,
) -> Result<(Vec<Change>, Contents), ApplyError> {
    let mut last: BTreeMap<
        &str,
        (
            Option<crate::model::hash::ContentHash>,
            Option<&std::sync::Arc<crate::plan::FileData>>,
        ),
    > = BTreeMap::new();
    for a in &plan.actions {
        for f in &a.files {
            let entry = last.entry(f.path.as_str()).or_insert((f.before, None));
            entry.1 = f.new.as_ref();
        }
    }
    let mut changes = Vec::new();
    let mut contents = BTreeMap::new();
    for (path, (before, new)) in last {
        // Re-verify: the file is still what the plan saw (one read gives
        // both the blob the journal records and the hash the plan saw).
        let (old, now_hash) = match txn::current_with_content(root, path)? {
            Some((file, bytes)) => (
                Some(file),
                Some(crate::model::hash::ContentHash::of(&bytes)),
            ),
            None => (None, None),
        };
        if now_hash != before {
            return Err(ApplyError::StalePlan {
                site: String::new(),
                detail: format!("{path} changed since the plan was made; plan again"),
            });
        }
        let new_ref = new.map(|d| {
            let blob = d.blob();
            contents.insert(blob, std::sync::Arc::clone(d));
            FileRef {
                blob,
                mode: d.mode,
                symlink: d.symlink,
            }
        });
        changes.push(Change {
            path: path.to_owned(),
            old,
            new: new_ref,
        });
    }
    Ok((changes, contents))
}

pub(super) fn read(root: &Root, path: &str) -> Result<Vec<u8>, ApplyError> {
    let meta = root
        .metadata(path)
        .map_err(|e| failed("", format!("{path}: {e}")))?;
    if meta.kind == crate::confined::Kind::Symlink {
        return Ok(root
            .read_link(path)
            .map_err(|e| failed("", format!("{path}: {e}")))?
            .into_encoded_bytes());
    }
    let (mut f, _) = root
        .open_file(path)
        .map_err(|e| failed("", format!("{path}: {e}")))?;
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut f, &mut bytes)
        .map_err(|e| failed("", format!("{path}: {e}")))?;
    Ok(bytes)
}

/// Stores every old and new content in `points.git` before anything changes.
/// New contents the plan only names are read from the catalog one at a
/// time here, so memory stays bounded by the largest file.
pub(super) fn store_blobs(
    root: &Root,
    points: &Points,
    changes: &[Change],
    contents: &Contents,
    catalog: &dyn crate::plan::Contents,
) -> Result<(), ApplyError> {
    for c in changes {
        if let Some(old) = c.old
            && !points.has_blob(old.blob)
        {
            points.write_blob(&read(root, &c.path)?)?;
        }
        if let Some(new) = c.new
            && !points.has_blob(new.blob)
        {
            let data = contents
                .get(&new.blob)
                .ok_or_else(|| failed("", format!("{}: new content missing", c.path)))?;
            let bytes = data
                .load(catalog)
                .map_err(|e| failed("", format!("{}: {e}", c.path)))?;
            points.write_blob(&bytes)?;
        }
    }
    // Recovery finishes or undoes the change from these blobs: the
    // transaction makes them durable, with its point, before its journal.
    Ok(())
}

/// Refuses a change that would not fit: staged contents on the site's file
/// system, and snapshots in the state dir.
/// A shortfall is a preflight failure (SPEC §6.7), named `space`.
pub(super) fn check_space(
    locked: &Locked,
    contents: &Contents,
    snapshot: u64,
) -> Result<(), ApplyError> {
    let short = |reason: String| ApplyError::Preflight {
        site: locked.site.clone(),
        checks: vec![crate::plan::PreflightFailure {
            check: "space".into(),
            reason,
            release: None,
        }],
    };
    let failed = |e: std::io::Error| failed("", format!("free space: {e}"));
    // The symlink layout builds a whole new release directory.
    let (tree_bytes, tree_entries) = match locked.layout {
        Layout::InPlace => (0, 0),
        Layout::Symlink => swap::tree_size(&locked.root, "").map_err(failed)?,
    };
    let need = crate::plan::Need {
        contents: contents.values().map(|d| d.len() as u64).sum(),
        files: contents.len() as u64,
        tree_bytes,
        tree_entries,
        snapshot,
    };
    let state = rustix::fs::statvfs(locked.state.dir()).map_err(|e| failed(e.into()))?;
    let space = crate::plan::Space {
        site_bytes: locked.root.free_bytes().map_err(failed)?,
        site_inodes: locked.root.free_inodes().map_err(failed)?,
        state_bytes: state.f_bavail.saturating_mul(state.f_frsize),
    };
    match crate::plan::shortfall(need, space) {
        Some(reason) => Err(short(reason)),
        None => Ok(()),
    }
}

/// Commits the state before a change as a point (result `track`): tracked
/// files as they are now (drift included), plus `untracked` paths the
/// change is about to touch.
pub(super) fn record_prestate(
    locked: &Locked,
    points: &Points,
    ctx: &SiteContext<'_>,
    untracked: &[String],
    opts: &Options<'_>,
) -> Result<u64, ApplyError> {
    let Some(base) = ctx.point else {
        return Err(failed("", "no point to record the state on"));
    };
    let snapshot = points.snapshot(base)?;
    let mut changes = Vec::new();
    for path in untracked {
        let now = txn::current(&locked.root, path)?;
        if let Some(n) = now
            && !points.has_blob(n.blob)
        {
            points.write_blob(&read(&locked.root, path)?)?;
        }
        changes.push(Change {
            path: path.clone(),
            old: None,
            new: now,
        });
    }
    for (path, entry) in &snapshot {
        let now = txn::current(&locked.root, path)?;
        let was = match entry {
            crate::store::SnapshotEntry::File { mode, blob } => FileRef {
                blob: *blob,
                mode: *mode,
                symlink: false,
            },
            crate::store::SnapshotEntry::Symlink { blob } => FileRef {
                blob: *blob,
                mode: 0o777,
                symlink: true,
            },
        };
        if now != Some(was) {
            if let Some(n) = now
                && !points.has_blob(n.blob)
            {
                points.write_blob(&read(&locked.root, path)?)?;
            }
            changes.push(Change {
                path: path.clone(),
                old: Some(was),
                new: now,
            });
        }
    }
    let mut meta = points.meta(base)?;
    meta.kind = PointKind::Apply;
    meta.at = Timestamp(opts.clock.now());
    meta.plan_digest = None;
    meta.result = PointResult::Track;
    meta.legacy_health = None;
    meta.txn = None;
    let snapshot = txn::apply_to_snapshot(snapshot, &changes);
    Ok(points.commit(&snapshot, meta)?)
}
