//! `adopt`: take over an existing install. The managed files (the adopted
//! release's paths, minus `preserve`) as they are now become rollback
//! point 1, and the ledger records it.

use std::io::Read;

use crate::model::values::{Timestamp, Version};
use crate::observe::SiteContext;
use crate::store::{
    By, LedgerKind, LedgerResult, PointKind, PointMeta, PointResult, Record, Snapshot,
    SnapshotEntry, StoreError,
};

/// What adoption recorded.
#[derive(Debug, Clone)]
pub struct Adopted {
    /// The release.
    pub version: Version,
    /// The point.
    pub point: u64,
    /// Managed files recorded.
    pub files: usize,
    /// Of those, files that differ from the release's payload.
    pub customised: usize,
    /// Files of the release that are absent on disk.
    pub absent: usize,
}

/// Why adoption failed.
#[derive(Debug, thiserror::Error)]
pub enum AdoptError {
    /// Already adopted.
    #[error(
        "{site} is already adopted (point {point}); `sitekeeper history {site}` shows its points"
    )]
    Already {
        /// The site.
        site: String,
        /// Its latest point.
        point: u64,
    },
    /// No such release.
    #[error("{0}")]
    Release(String),
    /// Reading the site failed.
    #[error("{0}")]
    Read(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Adopts the site at `version`. The caller holds the site's lock, and
/// should have gathered `ctx` under it; whether a point exists is asked
/// again of the store here, so an adopt that gathered before another one
/// finished still refuses rather than recording a second adopt point.
pub fn adopt(
    ctx: &SiteContext<'_>,
    version: &Version,
    now: jiff::Timestamp,
    via: &str,
) -> Result<Adopted, AdoptError> {
    let site = ctx.site.site.to_string();
    if let Some(point) = ctx.point {
        return Err(AdoptError::Already { site, point });
    }
    let payload = ctx.payload(version).map_err(AdoptError::Release)?;
    let points = ctx.state.points()?;
    if let Some(point) = points.latest()? {
        return Err(AdoptError::Already { site, point });
    }
    let mut snapshot = Snapshot::new();
    let (mut customised, mut absent) = (0, 0);
    for (path, release_file) in &payload.files {
        if crate::inventory::is_preserved(&ctx.site.paths.preserve, path) {
            continue;
        }
        let Some(entry) = ctx.inventory.entries.get(path) else {
            absent += 1;
            continue;
        };
        if entry.blob() != release_file.blob {
            customised += 1;
        }
        let (bytes, snap) = match entry {
            crate::inventory::Entry::File { mode, .. } => {
                let (mut file, _) = ctx
                    .root
                    .open_file(path)
                    .map_err(|e| AdoptError::Read(format!("{path}: {e}")))?;
                let mut bytes = Vec::new();
                file.read_to_end(&mut bytes)
                    .map_err(|e| AdoptError::Read(format!("{path}: {e}")))?;
                (bytes, Some(*mode))
            }
            crate::inventory::Entry::Symlink { target } => (target.clone().into_bytes(), None),
        };
        let blob = points.write_blob(&bytes)?;
        let entry = match snap {
            Some(mode) => SnapshotEntry::File { mode, blob },
            None => SnapshotEntry::Symlink { blob },
        };
        snapshot.insert(path.clone(), entry);
    }
    let at = Timestamp(now);
    let meta = PointMeta {
        point: 0,
        kind: PointKind::Adopt,
        at,
        version: version.to_string(),
        fixes: Vec::new(),
        plan_digest: None,
        catalog_commit: ctx.catalog.source.commit().map(str::to_owned),
        legacy_health: None,
        result: PointResult::Ok,
        modes: Default::default(),
        txn: None,
        release_dir: None,
    };
    let files = snapshot.len();
    let point = points.commit(&snapshot, meta)?;
    ctx.state.ledger().append(Record {
        seq: 0,
        at,
        kind: LedgerKind::Adopt,
        id: Some(version.to_string()),
        checksum: None,
        version_before: None,
        version_after: Some(version.to_string()),
        files: Vec::new(),
        point: Some(point),
        plan_digest: None,
        by: By::here(via),
        result: LedgerResult::Ok,
        error: None,
    })?;
    Ok(Adopted {
        version: version.clone(),
        point,
        files,
        customised,
        absent,
    })
}
