//! The stat cache: what a file's hash was when its size, times and inode
//! were as recorded, so unchanged files are not read again (git's index
//! does the same). Only a cache: a missing or damaged one costs a rehash,
//! never a wrong answer.
//!
//! It is read on every plan, so it is stored compactly (postcard, raw hash
//! bytes, in a [`crate::cachefile`]) and written only when a scan changed
//! it.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::confined::Meta;
use crate::model::hash::{BlobId, ContentHash};

/// A file changed this close (in ns) before a scan started might change
/// again within the file system's timestamp granularity without its stat
/// data changing, so it is not cached ("racily clean" in git's words).
const RACY_NS: i128 = 2_000_000_000;

/// One file's stat data, then the raw SHA-256 and blob id of its content;
/// stored as it is (postcard), so loading decodes no hex.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Cached {
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    ino: u64,
    dev: u64,
    mode: u32,
    hash: [u8; 32],
    blob: [u8; 20],
}

/// Hashes by path, valid while each file's stat data is unchanged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatCache {
    entries: HashMap<String, Cached>,
}

/// The body's layout ([`crate::cachefile`] adds the version and the
/// checksum). A different version is an empty cache.
const VERSION: u32 = 3;

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
        same.then_some((ContentHash(c.hash), BlobId(c.blob)))
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
                hash: hash.0,
                blob: blob.0,
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
        crate::cachefile::load(path, VERSION)
            .and_then(|body| postcard::from_bytes(&body).ok())
            .map(|entries| Self { entries })
            .unwrap_or_default()
    }

    /// Writes the cache to `path` atomically, with a checksum and no fsync:
    /// after a crash the file is this one, an older one (still right for
    /// the stat data it records) or one that fails its checksum; none gives
    /// a wrong answer.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let body = postcard::to_allocvec(&self.entries).map_err(std::io::Error::other)?;
        crate::cachefile::save(path, VERSION, &body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::confined::Kind;

    fn meta(size: u64) -> Meta {
        Meta {
            kind: Kind::File,
            mode: 0o644,
            size,
            mtime_ns: 1_000,
            ctime_ns: 2_000,
            ino: 7,
            dev: 3,
            nlink: 1,
        }
    }

    #[test]
    fn round_trips_and_a_torn_or_damaged_file_is_an_empty_cache() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("statcache.bin");
        let mut cache = StatCache::default();
        let hashes = (ContentHash::of(b"x"), BlobId::of(b"x"));
        cache.remember("a/b.php", &meta(1), hashes, now_ns());
        cache.remember("c.php", &meta(2), hashes, now_ns());
        cache.save(&path).unwrap();
        let loaded = StatCache::load(&path);
        assert_eq!(loaded, cache);
        assert_eq!(loaded.lookup("a/b.php", &meta(1)), Some(hashes));
        // Other stat data: not vouched for.
        assert_eq!(loaded.lookup("a/b.php", &meta(9)), None);

        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 5]).unwrap();
        assert!(StatCache::load(&path).is_empty(), "a torn file was read");
        let mut flipped = bytes.clone();
        flipped[10] ^= 1;
        std::fs::write(&path, &flipped).unwrap();
        assert!(StatCache::load(&path).is_empty(), "a damaged file was read");
        std::fs::write(&path, vec![0u8; bytes.len()]).unwrap();
        assert!(StatCache::load(&path).is_empty(), "zeros were read");
    }
}
