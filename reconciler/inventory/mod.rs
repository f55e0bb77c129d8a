//! The observed state of a site: every file under its root (minus
//! `preserve`) with its kind, mode, size and content hash.
//!
//! Reading goes through [`crate::confined::Root`], so links are recorded,
//! never followed, and FIFOs, sockets and devices are reported, never
//! opened. A stat cache (size, times, inode, as git's index keeps) lets a
//! scan of an unchanged tree read no file contents at all; the files that
//! must be hashed are hashed in parallel.

pub mod cache;

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

pub use cache::StatCache;

use crate::confined::{Kind, Meta, Root};
use crate::model::hash::{BlobId, ContentHash};
use crate::model::values::Glob;

/// One managed path as found on disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Entry {
    /// A regular file.
    File {
        /// Permission bits.
        mode: u32,
        /// Size in bytes.
        size: u64,
        /// Hash of the content.
        hash: ContentHash,
        /// Git blob id of the content.
        blob: BlobId,
    },
    /// A symbolic link, recorded as its target text.
    Symlink {
        /// Where it points (never followed).
        target: String,
    },
}

impl Entry {
    /// A regular file with `meta` and the hashes of its content.
    fn file(meta: &Meta, (hash, blob): (ContentHash, BlobId)) -> Self {
        Entry::File {
            mode: meta.mode,
            size: meta.size,
            hash,
            blob,
        }
    }

    /// The hash that plans compare: the content's, or the link target's.
    pub fn hash(&self) -> ContentHash {
        match self {
            Entry::File { hash, .. } => *hash,
            Entry::Symlink { target } => ContentHash::of(target.as_bytes()),
        }
    }

    /// The git blob id, to compare with rollback points and git catalogs.
    pub fn blob(&self) -> BlobId {
        match self {
            Entry::File { blob, .. } => *blob,
            Entry::Symlink { target } => BlobId::of(target.as_bytes()),
        }
    }
}

/// A path that is neither a file, a directory nor a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Special {
    /// Where.
    pub path: String,
    /// What.
    pub kind: Kind,
}

/// What a scan did, for tests and `-v`: how much content it read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanStats {
    /// Regular files found.
    pub files: usize,
    /// Files whose content was read and hashed.
    pub hashed: usize,
    /// Bytes read to hash them.
    pub bytes_read: u64,
    /// Files whose hash came from the stat cache.
    pub from_cache: usize,
}

/// A site's files, by relative path (`/`-separated), sorted.
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    /// Files and links.
    pub entries: BTreeMap<String, Entry>,
    /// FIFOs, sockets and devices, which sitekeeper never opens.
    pub specials: Vec<Special>,
    /// Names that are not UTF-8 (and link targets that are not), left alone.
    pub unreadable: Vec<String>,
    /// What the scan read.
    pub stats: ScanStats,
}

/// Why a scan failed.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct ScanError {
    /// The path (relative to the root; empty for the root).
    pub path: String,
    /// The error.
    pub source: std::io::Error,
}

/// Reports progress of the hashing phase; the CLI draws a bar with it.
pub trait Progress: Sync {
    /// Hashing of `files` files starts.
    fn start(&self, files: u64);
    /// One more file is hashed.
    fn advance(&self);
    /// Done.
    fn finish(&self);
}

/// The staging area sitekeeper keeps inside a site root while a change is
/// in flight (same file system, so renames never cross devices). Scans
/// never see it.
pub const STAGE_DIR: &str = ".sitekeeper-stage";

/// Whether `path` is preserved (never read, written or snapshotted).
pub fn is_preserved(preserve: &[Glob], path: &str) -> bool {
    preserve.iter().any(|g| g.is_match(path))
}

/// Whether everything below directory `dir` is preserved, so the scan need
/// not even list it (an uploads directory may hold millions of files).
fn prunes(preserve: &[Glob], dir: &str) -> bool {
    preserve.iter().any(|g| {
        g.is_match(dir)
            || (g.is_match(&format!("{dir}/\u{1}"))
                && g.is_match(&format!("{dir}/\u{1}/\u{1}/\u{1}")))
    })
}

/// A directory's entries with their metadata, as [`Root::list`] gives them.
type Listing = Vec<(std::ffi::OsString, Meta)>;

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_owned()
    } else {
        format!("{dir}/{name}")
    }
}

/// Scans the site at `root`. `cache` is the stat cache of the last scan;
/// the returned cache is the one to keep for the next.
pub fn scan(
    root: &Root,
    preserve: &[Glob],
    cache: &StatCache,
    progress: Option<&dyn Progress>,
) -> Result<(Inventory, StatCache), ScanError> {
    let started_ns = cache::now_ns();
    let mut inv = Inventory::default();
    let mut files = 0;
    let mut unknown: Vec<String> = Vec::new();
    let mut next_cache = StatCache::default();
    // Breadth first, each level's directories listed in parallel: listing
    // is one stat per entry, most of a converged site's plan.
    let mut level = vec![String::new()];
    while !level.is_empty() {
        let listed: Vec<(String, std::io::Result<Listing>)> = level
            .into_par_iter()
            .map(|dir| {
                let listing = root.list(&dir);
                (dir, listing)
            })
            .collect();
        let mut next = Vec::new();
        for (dir, listing) in listed {
            let listing = listing.map_err(|source| ScanError {
                path: dir.clone(),
                source,
            })?;
            for (name, meta) in listing {
                let Some(name) = name.to_str() else {
                    inv.unreadable.push(join(&dir, &name.to_string_lossy()));
                    continue;
                };
                let path = join(&dir, name);
                if path == STAGE_DIR {
                    continue;
                }
                match meta.kind {
                    Kind::Dir if !prunes(preserve, &path) => next.push(path),
                    Kind::Dir => {}
                    _ if is_preserved(preserve, &path) => {}
                    Kind::File => {
                        files += 1;
                        // What the cache vouches for goes straight in; the
                        // rest is hashed below, in parallel.
                        match cache.lookup(&path, &meta) {
                            Some(hit) => {
                                next_cache.remember(&path, &meta, hit, started_ns);
                                inv.entries.insert(path, Entry::file(&meta, hit));
                            }
                            None => unknown.push(path),
                        }
                    }
                    Kind::Symlink => match root.read_link(&path) {
                        Ok(target) => match target.into_string() {
                            Ok(target) => {
                                inv.entries.insert(path, Entry::Symlink { target });
                            }
                            Err(_) => inv.unreadable.push(path),
                        },
                        Err(source) => return Err(ScanError { path, source }),
                    },
                    kind => inv.specials.push(Special { path, kind }),
                }
            }
        }
        level = next;
    }
    inv.specials.sort_by(|a, b| a.path.cmp(&b.path));
    inv.unreadable.sort();
    inv.stats.files = files;
    inv.stats.from_cache = files - unknown.len();

    if let Some(p) = progress {
        p.start(unknown.len() as u64);
    }
    let bytes = AtomicU64::new(0);
    let hashed: Vec<(String, Meta, (ContentHash, BlobId))> = unknown
        .into_par_iter()
        .map(|path| {
            let (meta, hash, n) = hash_file(root, &path).map_err(|source| ScanError {
                path: path.clone(),
                source,
            })?;
            bytes.fetch_add(n, Ordering::Relaxed);
            if let Some(p) = progress {
                p.advance();
            }
            Ok((path, meta, hash))
        })
        .collect::<Result<_, ScanError>>()?;
    if let Some(p) = progress {
        p.finish();
    }
    inv.stats.hashed = hashed.len();
    inv.stats.bytes_read = bytes.into_inner();
    for (path, meta, hit) in hashed {
        next_cache.remember(&path, &meta, hit, started_ns);
        inv.entries.insert(path, Entry::file(&meta, hit));
    }
    Ok((inv, next_cache))
}

/// Reads and hashes one file; the metadata is the opened file's own, so a
/// file replaced between listing and hashing is described as hashed.
fn hash_file(root: &Root, path: &str) -> std::io::Result<(Meta, (ContentHash, BlobId), u64)> {
    let (mut file, meta) = root.open_file(path)?;
    let mut hasher = Sha256::new();
    let mut blob = BlobId::hasher(meta.size);
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        sha1::Digest::update(&mut blob, &buf[..n]);
        total += n as u64;
    }
    if total != meta.size {
        // The file changed while it was read: the blob header would lie.
        return Err(std::io::Error::other(format!(
            "{path} changed while it was read; scan again"
        )));
    }
    Ok((
        meta,
        (ContentHash::from_hasher(hasher), BlobId::from_hasher(blob)),
        total,
    ))
}
