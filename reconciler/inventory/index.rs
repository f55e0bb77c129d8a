//! The site index (`index.bin` in the site's state dir): for every path,
//! what its file's hash was while its stat data (size, times, inode) stayed
//! as recorded, and the blob the last rollback point holds there; one
//! sorted, versioned, checksummed file, read through `mmap` and never
//! decoded into maps (git's index does the same).
//!
//! Only a cache: a missing, older, torn or damaged file reads as an empty
//! index, which costs a rehash and a walk of the point's trees, never a
//! wrong answer and never an error. Written whole, by the one atomic writer
//! (through [`crate::cachefile`]: temp file and rename, `Durability::Cache`),
//! never in place.
//!
//! Layout (little endian): a 64-byte header, `count` records of 128 bytes
//! sorted by path bytes, the paths, a table of known contents (blob id →
//! SHA-256, sorted by blob), and a SHA-256 of everything before it.

use std::path::Path;
use std::sync::Arc;

use sha2::{Digest as _, Sha256};

use crate::confined::Meta;
use crate::model::hash::{BlobId, ContentHash};

/// What the file starts with; another layout is another magic or version.
const MAGIC: &[u8; 8] = b"SKINDEX\0";
/// The layout's version; any other is an empty index.
const VERSION: u32 = 1;
const HEADER: usize = 64;
const RECORD: usize = 128;
const KNOWN: usize = 52;
const SUM: usize = 32;

/// A record's flags: its stat side is valid (the hash may be trusted while
/// the stat data matches), its point side is valid.
const F_STAT: u32 = 1;
const F_POINT: u32 = 2;
/// The header's flag: the index names the point its point side is of.
const H_POINT: u32 = 1;

/// A file changed this close (in ns) before a scan started might change
/// again within the file system's timestamp granularity without its stat
/// data changing, so it is not vouched for ("racily clean" in git's words).
const RACY_NS: i128 = 2_000_000_000;

/// Now, in nanoseconds since the epoch.
pub fn now_ns() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

/// Whether a file with `meta`, stat'ed in a scan that started at
/// `started_ns`, is old enough for its stat data to vouch for its content.
pub fn settled(meta: &Meta, started_ns: i128) -> bool {
    meta.mtime_ns.max(meta.ctime_ns) < started_ns - RACY_NS
}

/// The stat data of a file as the index keeps it, with its content's
/// hashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// Permission bits.
    pub mode: u32,
    /// Size in bytes.
    pub size: u64,
    /// Modification time (ns since the epoch).
    pub mtime_ns: i64,
    /// Status-change time (ns since the epoch).
    pub ctime_ns: i64,
    /// Inode number.
    pub ino: u64,
    /// Device number.
    pub dev: u64,
    /// SHA-256 of the content.
    pub hash: ContentHash,
    /// Git blob id of the content.
    pub blob: BlobId,
}

impl Stat {
    /// `meta` with the hashes of its content; `None` for times the index
    /// cannot hold (before 1677 or after 2262), which are then not cached.
    pub fn new(meta: &Meta, (hash, blob): (ContentHash, BlobId)) -> Option<Self> {
        Some(Stat {
            mode: meta.mode,
            size: meta.size,
            mtime_ns: i64::try_from(meta.mtime_ns).ok()?,
            ctime_ns: i64::try_from(meta.ctime_ns).ok()?,
            ino: meta.ino,
            dev: meta.dev,
            hash,
            blob,
        })
    }

    /// Whether `meta` is the stat data recorded here.
    fn matches(&self, meta: &Meta) -> bool {
        self.size == meta.size
            && i128::from(self.mtime_ns) == meta.mtime_ns
            && i128::from(self.ctime_ns) == meta.ctime_ns
            && self.ino == meta.ino
            && self.dev == meta.dev
            && self.mode == meta.mode
    }
}

/// The bytes of an index: mapped from its file, or (tests, a file that
/// cannot be mapped) none.
enum Bytes {
    Mapped(memmap2::Mmap),
    #[cfg(test)]
    Owned(Vec<u8>),
}

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Bytes::Mapped(m) => m,
            #[cfg(test)]
            Bytes::Owned(v) => v,
        }
    }
}

/// A site's index, read in place. Every accessor stays within bounds
/// checked when it was opened; an index that failed those checks is empty.
pub struct Index {
    bytes: Option<Bytes>,
    count: usize,
    strings: usize,
    strings_len: usize,
    known: usize,
    known_count: usize,
    point: Option<[u8; 20]>,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index")
            .field("records", &self.count)
            .field("point", &self.point.map(hex::encode))
            .finish()
    }
}

impl Default for Index {
    fn default() -> Self {
        Index::empty()
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(x)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

fn arr<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut x = [0u8; N];
    x.copy_from_slice(&b[at..at + N]);
    x
}

/// One record, borrowed from the index.
#[derive(Clone, Copy)]
struct Rec<'a> {
    path: &'a str,
    raw: &'a [u8],
}

impl<'a> Rec<'a> {
    fn flags(&self) -> u32 {
        u32_at(self.raw, 8)
    }

    fn stat(&self) -> Option<Stat> {
        (self.flags() & F_STAT != 0).then(|| Stat {
            mode: u32_at(self.raw, 12),
            size: u64_at(self.raw, 16),
            mtime_ns: u64_at(self.raw, 24) as i64,
            ctime_ns: u64_at(self.raw, 32) as i64,
            ino: u64_at(self.raw, 40),
            dev: u64_at(self.raw, 48),
            hash: ContentHash(arr(self.raw, 56)),
            blob: BlobId(arr(self.raw, 88)),
        })
    }

    fn point(&self) -> Option<BlobId> {
        (self.flags() & F_POINT != 0).then(|| BlobId(arr(self.raw, 108)))
    }
}

impl Index {
    /// An index that vouches for nothing and names no point.
    pub fn empty() -> Self {
        Index {
            bytes: None,
            count: 0,
            strings: 0,
            strings_len: 0,
            known: 0,
            known_count: 0,
            point: None,
        }
    }

    /// Opens the index at `path`. Anything missing, unreadable, of another
    /// version, torn or damaged is an empty index: only a cache.
    pub fn open(path: &Path) -> Self {
        let Ok(file) = std::fs::File::open(path) else {
            return Index::empty();
        };
        // SAFETY: mapping a file is unsafe because another process could
        // change it while it is mapped. No one writes an index in place:
        // it is only ever replaced whole, by writing a temp file and
        // renaming it over this name (`atomic_write_parts`), so the inode
        // mapped here keeps the bytes it had when it was opened (a rename
        // does not touch the old inode, which lives on until unmapped). The
        // temp files a crash leaves have other names and are removed under
        // the site's lock (`cachefile::remove_temps`), never this one.
        // Even so, nothing below trusts the bytes: the checksum, the
        // lengths, every offset and the order are checked before use, and
        // every read is bounds-checked, so a file changed in place by
        // someone else could make a cache miss, never undefined behaviour
        // in our code beyond what any mapped read of a changing file is.
        let Ok(map) = (unsafe { memmap2::Mmap::map(&file) }) else {
            return Index::empty();
        };
        Index::from_bytes(Bytes::Mapped(map)).unwrap_or_else(Index::empty)
    }

    /// The index in `bytes`, if they are one whole, valid index.
    fn from_bytes(bytes: Bytes) -> Option<Self> {
        let b: &[u8] = &bytes;
        let body = b.len().checked_sub(SUM)?;
        if body < HEADER || &b[..8] != MAGIC || u32_at(b, 8) != VERSION {
            return None;
        }
        let flags = u32_at(b, 12);
        let count = usize::try_from(u64_at(b, 16)).ok()?;
        let strings_len = usize::try_from(u64_at(b, 24)).ok()?;
        let known_count = usize::try_from(u64_at(b, 32)).ok()?;
        let strings = count.checked_mul(RECORD)?.checked_add(HEADER)?;
        let known = strings.checked_add(strings_len)?;
        let end = known_count.checked_mul(KNOWN)?.checked_add(known)?;
        if end != body || Sha256::digest(&b[..body])[..] != b[body..] {
            return None;
        }
        let point = (flags & H_POINT != 0).then(|| arr(b, 40));
        let index = Index {
            count,
            strings,
            strings_len,
            known,
            known_count,
            point,
            bytes: None,
        };
        // Offsets in range, paths UTF-8 and strictly ascending: checked
        // once here, so lookups can binary-search and slice freely.
        let mut prev: Option<&str> = None;
        for i in 0..count {
            let path = index.path_checked(b, i)?;
            if prev.is_some_and(|p| p.as_bytes() >= path.as_bytes()) {
                return None;
            }
            prev = Some(path);
        }
        for i in 1..known_count {
            let at = known + i * KNOWN;
            if b[at - KNOWN..at - KNOWN + 20] >= b[at..at + 20] {
                return None;
            }
        }
        Some(Index {
            bytes: Some(bytes),
            ..index
        })
    }

    fn path_checked<'b>(&self, b: &'b [u8], i: usize) -> Option<&'b str> {
        let raw = &b[HEADER + i * RECORD..HEADER + (i + 1) * RECORD];
        let off = usize::try_from(u32_at(raw, 0)).ok()?;
        let len = usize::try_from(u32_at(raw, 4)).ok()?;
        if off.checked_add(len)? > self.strings_len {
            return None;
        }
        std::str::from_utf8(&b[self.strings + off..self.strings + off + len]).ok()
    }

    fn rec(&self, i: usize) -> Rec<'_> {
        let b: &[u8] = self.bytes.as_deref().unwrap_or(&[]);
        let raw = &b[HEADER + i * RECORD..HEADER + (i + 1) * RECORD];
        // Checked in `from_bytes`; an empty path would only be a miss.
        let path = self.path_checked(b, i).unwrap_or("");
        Rec { path, raw }
    }

    /// Record `i`'s path as bytes: what the binary search compares, so a
    /// lookup validates no UTF-8 (that was done once, when opened).
    fn path_bytes<'b>(&self, b: &'b [u8], i: usize) -> &'b [u8] {
        let raw = &b[HEADER + i * RECORD..];
        let off = u32_at(raw, 0) as usize;
        let len = u32_at(raw, 4) as usize;
        b.get(self.strings + off..self.strings + off + len)
            .unwrap_or_default()
    }

    fn find<'p>(&'p self, path: &'p str) -> Option<Rec<'p>> {
        let b: &[u8] = self.bytes.as_deref()?;
        let (mut lo, mut hi) = (0, self.count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.path_bytes(b, mid).cmp(path.as_bytes()) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => {
                    let raw = &b[HEADER + mid * RECORD..HEADER + (mid + 1) * RECORD];
                    return Some(Rec { path, raw });
                }
            }
        }
        None
    }

    /// How many paths it has records for.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether it has no records.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The cached hashes of `path`, if its stat data still matches.
    pub fn lookup(&self, path: &str, meta: &Meta) -> Option<(ContentHash, BlobId)> {
        let s = self.find(path)?.stat()?;
        s.matches(meta).then_some((s.hash, s.blob))
    }

    /// The stat data and hashes recorded for `path`, if any.
    pub fn stat(&self, path: &str) -> Option<Stat> {
        self.find(path)?.stat()
    }

    /// How many files its stat side vouches for.
    pub fn vouched(&self) -> usize {
        (0..self.count)
            .filter(|i| self.rec(*i).flags() & F_STAT != 0)
            .count()
    }

    /// The commit id of the point its point side is of, if any.
    pub fn point_commit(&self) -> Option<[u8; 20]> {
        self.point
    }

    /// The blob the point holds at `path`.
    pub fn point_blob(&self, path: &str) -> Option<BlobId> {
        self.find(path)?.point()
    }

    /// The point's files, in path order.
    pub fn point_files(&self) -> impl Iterator<Item = (&str, BlobId)> + '_ {
        (0..self.count).filter_map(|i| {
            let r = self.rec(i);
            r.point().map(|b| (r.path, b))
        })
    }

    /// Every record, in path order: its stat side and its point side.
    pub fn records(&self) -> impl Iterator<Item = (&str, Option<Stat>, Option<BlobId>)> + '_ {
        (0..self.count).map(|i| {
            let r = self.rec(i);
            (r.path, r.stat(), r.point())
        })
    }

    /// The SHA-256 of a content the index has seen, by its blob id.
    pub fn known(&self, blob: BlobId) -> Option<ContentHash> {
        let b: &[u8] = self.bytes.as_deref()?;
        let (mut lo, mut hi) = (0, self.known_count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let at = self.known + mid * KNOWN;
            match b[at..at + 20].cmp(&blob.0[..]) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(ContentHash(arr(b, at + 20))),
            }
        }
        None
    }

    /// Every known content (blob id, SHA-256), in blob order.
    pub fn known_all(&self) -> impl Iterator<Item = (BlobId, ContentHash)> + '_ {
        let b: &[u8] = self.bytes.as_deref().unwrap_or(&[]);
        (0..self.known_count).map(move |i| {
            let at = self.known + i * KNOWN;
            (BlobId(arr(b, at)), ContentHash(arr(b, at + 20)))
        })
    }
}

/// Why a [`Writer`] refused a record.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Records must come in strictly ascending path order.
    #[error("index records out of order at {0}")]
    Order(String),
    /// Paths are addressed with 32 bits.
    #[error("the index's paths exceed 4 GiB")]
    TooLarge,
    /// The file could not be written.
    #[error("writing the index: {0}")]
    Io(#[from] std::io::Error),
}

/// Builds an index from records given in path order, then writes it
/// atomically.
pub struct Writer {
    point: Option<[u8; 20]>,
    records: Vec<u8>,
    strings: Vec<u8>,
    count: u64,
    last: Option<String>,
    known: Vec<(BlobId, ContentHash)>,
}

impl Writer {
    /// A writer of an index whose point side is of commit `point`.
    pub fn new(point: Option<[u8; 20]>) -> Self {
        Writer {
            point,
            records: Vec::new(),
            strings: Vec::new(),
            count: 0,
            last: None,
            known: Vec::new(),
        }
    }

    /// Adds `path`, after every path added before it. A path with neither
    /// side is left out.
    pub fn push(
        &mut self,
        path: &str,
        stat: Option<Stat>,
        point: Option<BlobId>,
    ) -> Result<(), WriteError> {
        if stat.is_none() && point.is_none() {
            return Ok(());
        }
        if self
            .last
            .as_deref()
            .is_some_and(|l| l.as_bytes() >= path.as_bytes())
        {
            return Err(WriteError::Order(path.to_owned()));
        }
        let off = u32::try_from(self.strings.len()).map_err(|_| WriteError::TooLarge)?;
        let len = u32::try_from(path.len()).map_err(|_| WriteError::TooLarge)?;
        let mut rec = [0u8; RECORD];
        rec[0..4].copy_from_slice(&off.to_le_bytes());
        rec[4..8].copy_from_slice(&len.to_le_bytes());
        let mut flags = 0;
        if let Some(s) = stat {
            flags |= F_STAT;
            rec[12..16].copy_from_slice(&s.mode.to_le_bytes());
            rec[16..24].copy_from_slice(&s.size.to_le_bytes());
            rec[24..32].copy_from_slice(&s.mtime_ns.to_le_bytes());
            rec[32..40].copy_from_slice(&s.ctime_ns.to_le_bytes());
            rec[40..48].copy_from_slice(&s.ino.to_le_bytes());
            rec[48..56].copy_from_slice(&s.dev.to_le_bytes());
            rec[56..88].copy_from_slice(&s.hash.0);
            rec[88..108].copy_from_slice(&s.blob.0);
        }
        if let Some(b) = point {
            flags |= F_POINT;
            rec[108..128].copy_from_slice(&b.0);
        }
        rec[8..12].copy_from_slice(&flags.to_le_bytes());
        self.records.extend_from_slice(&rec);
        self.strings.extend_from_slice(path.as_bytes());
        self.count += 1;
        match &mut self.last {
            Some(l) => {
                l.clear();
                l.push_str(path);
            }
            None => self.last = Some(path.to_owned()),
        }
        Ok(())
    }

    /// Records that the content with blob id `blob` has SHA-256 `hash`,
    /// so a later command that puts it back need not read it to know.
    pub fn know(&mut self, blob: BlobId, hash: ContentHash) {
        self.known.push((blob, hash));
    }

    /// The whole file's bytes.
    fn finish(mut self) -> Vec<Vec<u8>> {
        self.known.sort_unstable_by_key(|(b, _)| b.0);
        self.known.dedup_by_key(|(b, _)| b.0);
        let mut header = vec![0u8; HEADER];
        header[..8].copy_from_slice(MAGIC);
        header[8..12].copy_from_slice(&VERSION.to_le_bytes());
        let flags = if self.point.is_some() { H_POINT } else { 0 };
        header[12..16].copy_from_slice(&flags.to_le_bytes());
        header[16..24].copy_from_slice(&self.count.to_le_bytes());
        header[24..32].copy_from_slice(&(self.strings.len() as u64).to_le_bytes());
        header[32..40].copy_from_slice(&(self.known.len() as u64).to_le_bytes());
        header[40..60].copy_from_slice(&self.point.unwrap_or_default());
        let mut known = Vec::with_capacity(self.known.len() * KNOWN);
        for (b, h) in &self.known {
            known.extend_from_slice(&b.0);
            known.extend_from_slice(&h.0);
        }
        let sum = Sha256::new()
            .chain_update(&header)
            .chain_update(&self.records)
            .chain_update(&self.strings)
            .chain_update(&known)
            .finalize()
            .to_vec();
        vec![header, self.records, self.strings, known, sum]
    }

    /// Writes the index to `path` atomically, with a checksum and no
    /// fsync: after a crash the file is this one, an older one (still
    /// right for the stat data and the commit it records) or one that
    /// fails its checksum; none gives a wrong answer.
    pub fn save(self, path: &Path) -> Result<(), WriteError> {
        let parts = self.finish();
        let slices: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        crate::cachefile::save_parts(path, &slices)?;
        Ok(())
    }
}

/// The last point's files as the planner reads them: straight from the
/// mapped index when it is of that point, else a list read from the
/// point's trees (or, for a site not adopted, built from its files).
/// Cheap to clone: both are shared.
#[derive(Debug, Clone)]
pub enum PointFiles {
    /// The index's point side.
    Mapped(Arc<Index>),
    /// A list in memory.
    Owned(Arc<std::collections::BTreeMap<String, BlobId>>),
}

impl Default for PointFiles {
    fn default() -> Self {
        PointFiles::Owned(Arc::default())
    }
}

impl From<std::collections::BTreeMap<String, BlobId>> for PointFiles {
    fn from(map: std::collections::BTreeMap<String, BlobId>) -> Self {
        PointFiles::Owned(Arc::new(map))
    }
}

impl PointFiles {
    /// The blob at `path`.
    pub fn get(&self, path: &str) -> Option<BlobId> {
        match self {
            PointFiles::Mapped(i) => i.point_blob(path),
            PointFiles::Owned(m) => m.get(path).copied(),
        }
    }

    /// Whether the point has `path`.
    pub fn contains_key(&self, path: &str) -> bool {
        self.get(path).is_some()
    }

    /// Its files in path order.
    pub fn iter(&self) -> Box<dyn Iterator<Item = (&str, BlobId)> + '_> {
        match self {
            PointFiles::Mapped(i) => Box::new(i.point_files()),
            PointFiles::Owned(m) => Box::new(m.iter().map(|(p, b)| (p.as_str(), *b))),
        }
    }

    /// Sets the blob at `path`, copying a mapped list into memory first
    /// (planning never does this; tests that move a site along do).
    pub fn insert(&mut self, path: String, blob: BlobId) {
        if let PointFiles::Mapped(i) = self {
            let owned = i.point_files().map(|(p, b)| (p.to_owned(), b)).collect();
            *self = PointFiles::Owned(Arc::new(owned));
        }
        if let PointFiles::Owned(m) = self {
            Arc::make_mut(m).insert(path, blob);
        }
    }

    /// How many files.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// Whether it has none.
    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
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

    fn hashes(c: &[u8]) -> (ContentHash, BlobId) {
        (ContentHash::of(c), BlobId::of(c))
    }

    fn sample(path: &Path) {
        let mut w = Writer::new(Some([9; 20]));
        w.push(
            "a/b.php",
            Stat::new(&meta(1), hashes(b"b")),
            Some(BlobId::of(b"b")),
        )
        .unwrap();
        w.push("a/c.php", None, Some(BlobId::of(b"c"))).unwrap();
        w.push("a/d.php", None, None).unwrap();
        w.push("index.php", Stat::new(&meta(2), hashes(b"i")), None)
            .unwrap();
        w.know(BlobId::of(b"old"), ContentHash::of(b"old"));
        w.save(path).unwrap();
    }

    #[test]
    fn round_trips_both_sides_and_known_contents() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.bin");
        sample(&path);
        let ix = Index::open(&path);
        assert_eq!(ix.len(), 3, "a path with neither side is left out");
        assert_eq!(ix.vouched(), 2);
        assert_eq!(ix.point_commit(), Some([9; 20]));
        assert_eq!(ix.lookup("a/b.php", &meta(1)), Some(hashes(b"b")));
        assert_eq!(ix.lookup("a/b.php", &meta(9)), None, "other stat data");
        assert_eq!(ix.lookup("a/c.php", &meta(1)), None, "no stat side");
        assert_eq!(ix.lookup("zz", &meta(1)), None);
        let files: Vec<(&str, BlobId)> = ix.point_files().collect();
        assert_eq!(
            files,
            [("a/b.php", BlobId::of(b"b")), ("a/c.php", BlobId::of(b"c"))]
        );
        assert_eq!(ix.point_blob("index.php"), None);
        assert_eq!(ix.known(BlobId::of(b"old")), Some(ContentHash::of(b"old")));
        assert_eq!(ix.known(BlobId::of(b"new")), None);
    }

    #[test]
    fn records_out_of_order_are_refused() {
        let mut w = Writer::new(None);
        w.push("b", None, Some(BlobId::of(b"b"))).unwrap();
        assert!(matches!(
            w.push("a", None, Some(BlobId::of(b"a"))),
            Err(WriteError::Order(_))
        ));
        assert!(w.push("b", None, Some(BlobId::of(b"b"))).is_err());
    }

    #[test]
    fn a_torn_damaged_or_older_file_is_an_empty_index() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("index.bin");
        assert!(Index::open(&path).is_empty(), "no file, no index");
        sample(&path);
        let bytes = std::fs::read(&path).unwrap();
        let check = |b: &[u8], what: &str| {
            std::fs::write(&path, b).unwrap();
            let ix = Index::open(&path);
            assert!(
                ix.is_empty() && ix.point_commit().is_none(),
                "{what} was read"
            );
        };
        check(&bytes[..bytes.len() - 5], "a torn file");
        check(&[], "an empty file");
        for i in [0, 9, 17, 70, 200, bytes.len() - 1] {
            let mut flipped = bytes.clone();
            flipped[i] ^= 1;
            check(&flipped, "a damaged file");
        }
        let mut older = bytes.clone();
        older[8] = 0;
        check(&older, "another version");
        check(&vec![0u8; bytes.len()], "zeros");
    }

    /// Garbage with a valid checksum (what a bug, not a crash, could
    /// write) must still be refused or read within bounds, never panic.
    #[test]
    fn garbage_never_panics() {
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for round in 0..3000 {
            let len = (next() % 700) as usize;
            let mut b: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if round % 2 == 0 && b.len() >= HEADER + SUM {
                // A plausible header, so the deeper checks run.
                b[..8].copy_from_slice(MAGIC);
                b[8..12].copy_from_slice(&VERSION.to_le_bytes());
                let count = next() % 5;
                b[16..24].copy_from_slice(&count.to_le_bytes());
                let body = b.len() - SUM;
                let rest = body.saturating_sub(HEADER + count as usize * RECORD) as u64;
                let strings = if rest > 0 { next() % (rest + 1) } else { 0 };
                b[24..32].copy_from_slice(&strings.to_le_bytes());
                b[32..40].copy_from_slice(&((rest - strings) / KNOWN as u64).to_le_bytes());
                let sum = Sha256::digest(&b[..body]);
                b[body..].copy_from_slice(&sum);
            }
            if let Some(ix) = Index::from_bytes(Bytes::Owned(b)) {
                for (p, _, _) in ix.records() {
                    let _ = ix.lookup(p, &meta(1));
                    let _ = ix.point_blob(p);
                }
                let _ = ix.point_files().count();
                let _ = ix.known_all().count();
                let _ = ix.known(BlobId::of(b"x"));
            }
        }
    }
}
