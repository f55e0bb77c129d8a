//! The observed state of a site: every file under its root (minus
//! `preserve`) with its kind, mode, size and content hash.
//!
//! Reading goes through [`crate::confined::Root`], so links are recorded,
//! never followed, and FIFOs, sockets and devices are reported, never
//! opened. The site index's stat side (size, times, inode, as git's index
//! keeps) lets a scan of an unchanged tree read no file contents at all;
//! the files that must be hashed are hashed in parallel.

pub mod cache;
pub mod index;

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

pub use index::{Index, PointFiles};

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
    /// Files whose hash came from the index.
    pub from_cache: usize,
    /// Files hashed that are old enough for the index to vouch for.
    pub settled_hashed: usize,
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
    /// The files it hashed, with the stat data the index may keep for
    /// each (`None` for one changed too recently to vouch for): the other
    /// files are the index's hits, whose stat data the index already has.
    pub hashed: BTreeMap<String, Option<index::Stat>>,
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
        // Once per file of every scan: no formatting machinery.
        let mut path = String::with_capacity(dir.len() + 1 + name.len());
        path.push_str(dir);
        path.push('/');
        path.push_str(name);
        path
    }
}

/// Scans the site at `root`, with the site index vouching for files whose
/// stat data it recorded.
///
/// Two phases, so that a converged site reads no file contents: the tree is
/// listed, and what the index vouches for goes straight in; then only the
/// files it could not vouch for are read and hashed, in parallel.
pub fn scan(
    root: &Root,
    preserve: &[Glob],
    index: &Index,
    progress: Option<&dyn Progress>,
) -> Result<Inventory, ScanError> {
    let mut walk = Walk::new(root, preserve, index);
    // Breadth first, each level's directories listed in parallel.
    let mut level = vec![String::new()];
    while !level.is_empty() {
        level = walk.take_level(list_level(root, level))?;
    }
    let Walk {
        mut inv,
        unknown,
        started_ns,
        ..
    } = walk.finish();
    let (hashed, bytes_read) = hash_unknown(root, unknown, progress)?;
    inv.stats.hashed = hashed.len();
    inv.stats.bytes_read = bytes_read;
    for (path, meta, hit) in hashed {
        let stat = index::settled(&meta, started_ns)
            .then(|| index::Stat::new(&meta, hit))
            .flatten();
        inv.stats.settled_hashed += usize::from(stat.is_some());
        inv.entries.insert(path.clone(), Entry::file(&meta, hit));
        inv.hashed.insert(path, stat);
    }
    Ok(inv)
}

impl Inventory {
    /// Whether the index, which vouched for `from_cache` of these files,
    /// should be written again for the next scan: a file was hashed that
    /// it could vouch for, or it vouches for files no longer as recorded.
    pub fn index_changed(&self, index: &Index) -> bool {
        self.stats.settled_hashed > 0 || index.vouched() != self.stats.from_cache
    }

    /// What the index should keep of `path`'s stat data after this scan:
    /// a hashed file's own, or for a hit, what `index` (the index the
    /// scan read) recorded, which the file still matches.
    pub fn index_stat(&self, index: &Index, path: &str) -> Option<index::Stat> {
        match self.hashed.get(path) {
            Some(stat) => *stat,
            None => match self.entries.get(path)? {
                Entry::File { .. } => index.stat(path),
                Entry::Symlink { .. } => None,
            },
        }
    }
}

/// Lists one level's directories in parallel: listing is one stat per
/// entry, most of a converged site's plan.
fn list_level(root: &Root, level: Vec<String>) -> Vec<(String, std::io::Result<Listing>)> {
    level
        .into_par_iter()
        .map(|dir| {
            let listing = root.list(&dir);
            (dir, listing)
        })
        .collect()
}

/// The listing phase: what is known so far, and the files the index
/// could not vouch for, which are left for hashing.
struct Walk<'a> {
    root: &'a Root,
    preserve: &'a [Glob],
    index: &'a Index,
    /// When the scan started: a file changed later than this (or just
    /// before) is not vouched for, see [`index::settled`].
    started_ns: i128,
    inv: Inventory,
    files: usize,
    unknown: Vec<String>,
}

impl<'a> Walk<'a> {
    fn new(root: &'a Root, preserve: &'a [Glob], index: &'a Index) -> Self {
        Walk {
            root,
            preserve,
            index,
            started_ns: index::now_ns(),
            inv: Inventory::default(),
            files: 0,
            unknown: Vec::new(),
        }
    }

    /// Takes in the entries of one level's directories, in the order they
    /// were listed, and returns the directories of the next level. A
    /// directory that cannot be listed fails the scan: an inventory that
    /// misses part of the tree would plan changes for what it missed.
    fn take_level(
        &mut self,
        listed: Vec<(String, std::io::Result<Listing>)>,
    ) -> Result<Vec<String>, ScanError> {
        let mut next = Vec::new();
        for (dir, listing) in listed {
            let listing = listing.map_err(|source| ScanError {
                path: dir.clone(),
                source,
            })?;
            for (name, meta) in listing {
                self.take_entry(&dir, &name, &meta, &mut next)?;
            }
        }
        Ok(next)
    }

    /// Takes in one entry: a directory to list next (unless all below it is
    /// preserved), a file, a link, or a special file; preserved paths and
    /// the staging area are skipped, and names that are not UTF-8 are
    /// reported rather than guessed at.
    fn take_entry(
        &mut self,
        dir: &str,
        name: &std::ffi::OsStr,
        meta: &Meta,
        next: &mut Vec<String>,
    ) -> Result<(), ScanError> {
        let Some(name) = name.to_str() else {
            self.inv.unreadable.push(join(dir, &name.to_string_lossy()));
            return Ok(());
        };
        let path = join(dir, name);
        if path == STAGE_DIR {
            return Ok(());
        }
        match meta.kind {
            Kind::Dir if !prunes(self.preserve, &path) => next.push(path),
            Kind::Dir => {}
            _ if is_preserved(self.preserve, &path) => {}
            Kind::File => self.file(path, meta),
            Kind::Symlink => self.symlink(path)?,
            kind => self.inv.specials.push(Special { path, kind }),
        }
        Ok(())
    }

    /// A regular file: what the index vouches for goes straight in, the
    /// rest is left for hashing, which is done for all of them at once, in
    /// parallel.
    fn file(&mut self, path: String, meta: &Meta) {
        self.files += 1;
        match self.index.lookup(&path, meta) {
            // Vouched for once and unchanged since: still vouched for.
            Some(hit) => {
                self.inv.entries.insert(path, Entry::file(meta, hit));
            }
            None => self.unknown.push(path),
        }
    }

    /// A link, recorded as its target text and never followed; a target
    /// that is not UTF-8 is reported, like such a name.
    fn symlink(&mut self, path: String) -> Result<(), ScanError> {
        match self.root.read_link(&path) {
            Ok(target) => match target.into_string() {
                Ok(target) => {
                    self.inv.entries.insert(path, Entry::Symlink { target });
                }
                Err(_) => self.inv.unreadable.push(path),
            },
            Err(source) => return Err(ScanError { path, source }),
        }
        Ok(())
    }

    /// The listing done: reports sorted (entries are sorted by their map),
    /// and the counts of files found and vouched for.
    fn finish(mut self) -> Self {
        self.inv.specials.sort_by(|a, b| a.path.cmp(&b.path));
        self.inv.unreadable.sort();
        self.inv.stats.files = self.files;
        self.inv.stats.from_cache = self.files - self.unknown.len();
        self
    }
}

/// One hashed file: its path, the metadata of the file that was read, and
/// its hashes.
type Hashed = (String, Meta, (ContentHash, BlobId));

/// Reads and hashes the files the index could not vouch for, in
/// parallel, with progress (a first scan may read gigabytes). Returns them
/// with the number of bytes read.
fn hash_unknown(
    root: &Root,
    unknown: Vec<String>,
    progress: Option<&dyn Progress>,
) -> Result<(Vec<Hashed>, u64), ScanError> {
    if let Some(p) = progress {
        p.start(unknown.len() as u64);
    }
    let bytes = AtomicU64::new(0);
    let hashed: Vec<Hashed> = unknown
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
    Ok((hashed, bytes.into_inner()))
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
