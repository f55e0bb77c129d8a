//! The stat cache: what a file's hash was when its size, times and inode
//! were as recorded, so unchanged files are not read again (git's index
//! does the same). Only a cache: a missing or damaged one costs a rehash,
//! never a wrong answer.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::confined::Meta;
use crate::model::hash::{BlobId, ContentHash};

/// A file changed this close (in ns) before a scan started might change
/// again within the file system's timestamp granularity without its stat
/// data changing, so it is not cached ("racily clean" in git's words).
const RACY_NS: i128 = 2_000_000_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Cached {
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    ino: u64,
    dev: u64,
    mode: u32,
    hash: ContentHash,
    blob: BlobId,
}

/// Hashes by path, valid while each file's stat data is unchanged.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StatCache {
    version: u32,
    entries: HashMap<String, Cached>,
}

const VERSION: u32 = 1;

/// Now, in nanoseconds since the epoch.
pub fn now_ns() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

impl StatCache {
    /// The cached hash of `path`, if its stat data still matches.
    pub fn lookup(&self, path: &str, meta: &Meta) -> Option<(ContentHash, BlobId)> {
        let c = self.entries.get(path)?;
        let same = c.size == meta.size
            && c.mtime_ns == meta.mtime_ns
            && c.ctime_ns == meta.ctime_ns
            && c.ino == meta.ino
            && c.dev == meta.dev
            && c.mode == meta.mode;
        same.then_some((c.hash, c.blob))
    }

    /// Records `path`, unless it changed too recently to be trusted.
    pub fn remember(
        &mut self,
        path: &str,
        meta: &Meta,
        (hash, blob): (ContentHash, BlobId),
        scan_started_ns: i128,
    ) {
        if meta.mtime_ns.max(meta.ctime_ns) >= scan_started_ns - RACY_NS {
            return;
        }
        self.entries.insert(
            path.to_owned(),
            Cached {
                size: meta.size,
                mtime_ns: meta.mtime_ns,
                ctime_ns: meta.ctime_ns,
                ino: meta.ino,
                dev: meta.dev,
                mode: meta.mode,
                hash,
                blob,
            },
        );
    }

    /// How many files it vouches for.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it vouches for nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Reads the cache at `path`; anything unreadable is an empty cache.
    pub fn load(path: &Path) -> Self {
        std::fs::read(path)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<StatCache>(&bytes).ok())
            .filter(|c| c.version == VERSION)
            .unwrap_or_default()
    }

    /// Writes the cache to `path` atomically (temp file, fsync, rename).
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        let body = StatCache {
            version: VERSION,
            entries: self.entries.clone(),
        };
        serde_json::to_writer(std::io::BufWriter::new(tmp.as_file_mut()), &body)?;
        tmp.as_file_mut().flush()?;
        tmp.as_file().sync_all()?;
        tmp.persist(path).map_err(|e| e.error)?;
        Ok(())
    }
}
