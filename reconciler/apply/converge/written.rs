//! After a change commits, the site index learns what it wrote: the new
//! point's file list (the base point's with the change on top) and the
//! stat data and hashes of the files it put in place, which it knows
//! without reading them. So the next command neither walks the new
//! point's trees nor rehashes the files the change wrote.
//!
//! Only a cache, written like the scan's (temp file and rename, no fsync):
//! whatever cannot be known for sure is left out, and the next scan hashes
//! it as before. Nothing here may fail a change.

use std::collections::BTreeMap;

use super::locked::Locked;
use crate::apply::txn::Change;
use crate::inventory::index::{self, Index, Stat, Writer};
use crate::model::hash::{BlobId, ContentHash};
use crate::model::words::Layout;
use crate::plan::SitePlan;
use crate::store::Points;

/// The contents a plan names, by blob: each changed path's content before
/// (the hash the plan saw, which staging re-verified against the blob it
/// read) and after.
pub(super) fn plan_contents(plan: &SitePlan, changes: &[Change]) -> Vec<(BlobId, ContentHash)> {
    let mut first_last: BTreeMap<&str, (Option<ContentHash>, Option<ContentHash>)> =
        BTreeMap::new();
    for f in plan.actions.iter().flat_map(|a| &a.files) {
        first_last
            .entry(f.path.as_str())
            .or_insert((f.before, None))
            .1 = f.after;
    }
    let mut out = Vec::new();
    for c in changes {
        let Some((before, after)) = first_last.get(c.path.as_str()) else {
            continue;
        };
        if let (Some(old), Some(h)) = (c.old, before) {
            out.push((old.blob, *h));
        }
        if let (Some(new), Some(h)) = (c.new, after) {
            out.push((new.blob, *h));
        }
    }
    out
}

/// What a committed transaction wrote, taken while its journal exists (the
/// journal's time is what tells the change's own files from later writes),
/// to be recorded in the site index when the rest of the command has let
/// go of what it held: the gathered site and the plan, which at 100,000
/// files would otherwise add up with the index being rewritten.
pub(super) struct Pending {
    base_key: Option<[u8; 20]>,
    key: [u8; 20],
    changes: Vec<Change>,
    contents: Vec<(BlobId, ContentHash)>,
    journal_ns: Option<i128>,
}

/// Takes what the transaction that made `point` from `base` wrote:
/// `changes`, whose contents' hashes are in `contents` or in the index's
/// table of known contents. `None` when there is nothing to record (the
/// `symlink` layout, whose release directory holds copies of every file
/// with new inodes: nothing of the old stat side applies, and the next
/// scan sees that).
pub(super) fn capture(
    locked: &Locked,
    points: &Points,
    base: Option<u64>,
    point: u64,
    changes: &[Change],
    contents: Vec<(BlobId, ContentHash)>,
) -> Option<Pending> {
    if locked.layout == Layout::Symlink {
        return None;
    }
    // The journal was written after every staged file and before the
    // first rename: a file whose last write is older than the journal was
    // written by this change (staged), not by anyone after the rename,
    // whose write would carry a later time. That needs times that never
    // run backwards between files and a file system fine enough to order
    // them, which `fine_ctime` vouches for; elsewhere only settled files
    // are recorded, as a scan would.
    let journal_ns = std::fs::symlink_metadata(locked.state.journal_path())
        .ok()
        .map(|m| {
            use std::os::unix::fs::MetadataExt;
            i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec())
        })
        .filter(|_| locked.root.fine_ctime());
    Some(Pending {
        base_key: base.and_then(|b| points.commit_key(b).ok()),
        key: points.commit_key(point).ok()?,
        changes: changes.to_vec(),
        contents,
        journal_ns,
    })
}

/// Records `pending` in the site index. Best effort: on any doubt the
/// index says less, never something wrong; nothing here fails a change.
pub(super) fn record(locked: &Locked, pending: Pending) {
    let Pending {
        base_key,
        key,
        changes,
        contents,
        journal_ns,
    } = pending;
    let path = locked.state.index_path();
    let old = Index::open(&path);
    // The new point's list is the base's with the change on top, when the
    // index holds the base's list; otherwise it is left to the next plan.
    let derived = base_key.is_some() && old.point_commit() == base_key;

    let mut known: BTreeMap<BlobId, ContentHash> = contents.iter().copied().collect();
    let hash_of = |blob: BlobId, known: &BTreeMap<BlobId, ContentHash>| {
        known.get(&blob).copied().or_else(|| old.known(blob))
    };
    let now = index::now_ns();
    let mut sorted: Vec<&Change> = changes.iter().collect();
    sorted.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
    let mut written: Vec<(&str, Option<Stat>, Option<BlobId>)> = Vec::new();
    for c in sorted {
        let stat = c.new.filter(|f| !f.symlink).and_then(|f| {
            let hash = hash_of(f.blob, &known)?;
            let meta = locked.root.metadata(&c.path).ok()?;
            let ours = journal_ns.is_some_and(|j| meta.mtime_ns < j);
            (meta.kind == crate::confined::Kind::File
                && meta.mode == f.mode
                && (ours || index::settled(&meta, now)))
            .then(|| Stat::new(&meta, (hash, f.blob)))
            .flatten()
        });
        written.push((c.path.as_str(), stat, c.new.map(|f| f.blob)));
        // Both contents stay known, so undoing this change (a rollback)
        // does not have to read them either.
        for blob in [c.old, c.new].into_iter().flatten().map(|f| f.blob) {
            if let Some(h) = hash_of(blob, &known) {
                known.insert(blob, h);
            }
        }
    }
    // Only this change's contents are kept: enough to undo it, and the
    // table stays as small as the change.
    let table: Vec<(BlobId, ContentHash)> = changes
        .iter()
        .flat_map(|c| [c.old, c.new])
        .flatten()
        .filter_map(|f| known.get(&f.blob).map(|h| (f.blob, *h)))
        .collect();

    let mut w = Writer::new(derived.then_some(key));
    let mut olds = old.records().peekable();
    let mut news = written.into_iter().peekable();
    loop {
        let order = match (olds.peek(), news.peek()) {
            (None, None) => break,
            (Some(o), Some(n)) => o.0.as_bytes().cmp(n.0.as_bytes()),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
        };
        let pushed = match order {
            std::cmp::Ordering::Less => match olds.next() {
                Some((p, stat, blob)) => w.push(p, stat, blob.filter(|_| derived)),
                None => break,
            },
            std::cmp::Ordering::Equal | std::cmp::Ordering::Greater => {
                if order == std::cmp::Ordering::Equal {
                    olds.next();
                }
                match news.next() {
                    Some((p, stat, blob)) => w.push(p, stat, blob.filter(|_| derived)),
                    None => break,
                }
            }
        };
        if pushed.is_err() {
            return;
        }
    }
    for (blob, hash) in table {
        w.know(blob, hash);
    }
    let _ = w.save(&path);
}
