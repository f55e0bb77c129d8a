//! Writing `points.git` objects as packs: many objects, one file, a handful
//! of fsyncs, where loose objects cost two fsyncs each.
//!
//! Objects are encoded here (zlib, no deltas, so writing stays linear and
//! cheap) and streamed through libgit2's indexer, which checks every object,
//! writes the `.idx` and fsyncs pack, index and directory before it returns
//! (`GIT_OPT_ENABLE_FSYNC_GITDIR`). Small packs are merged now and then, so
//! their number stays logarithmic. Never call this without the site lock:
//! merging deletes packs.

use std::io::Write;
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::write::ZlibEncoder;
use sha1::{Digest, Sha1};

/// One object ready for a pack: its id, kind and zlib-compressed content.
#[derive(Debug)]
pub struct Packed {
    /// The object's id.
    pub oid: git2::Oid,
    /// Its kind.
    pub kind: git2::ObjectType,
    /// Its size before compression.
    pub size: usize,
    /// Its content, zlib-compressed.
    pub deflated: Vec<u8>,
}

impl Packed {
    /// Hashes and compresses `data` as an object of `kind`.
    pub fn new(kind: git2::ObjectType, data: &[u8]) -> Result<Self, git2::Error> {
        let oid = git2::Oid::hash_object(kind, data)?;
        Self::with_oid(oid, kind, data)
    }

    /// Compresses `data`, whose id the caller already knows.
    pub fn with_oid(
        oid: git2::Oid,
        kind: git2::ObjectType,
        data: &[u8],
    ) -> Result<Self, git2::Error> {
        // Fast compression: points are written on every change, and text
        // shrinks nearly as much at level 1 as at 6.
        let mut z = ZlibEncoder::new(Vec::with_capacity(data.len() / 3 + 16), Compression::fast());
        let deflated = z
            .write_all(data)
            .and_then(|()| z.finish())
            .map_err(|e| git2::Error::from_str(&format!("compressing an object: {e}")))?;
        Ok(Self {
            oid,
            kind,
            size: data.len(),
            deflated,
        })
    }
}

fn type_code(kind: git2::ObjectType) -> u8 {
    match kind {
        git2::ObjectType::Commit => 1,
        git2::ObjectType::Tree => 2,
        git2::ObjectType::Tag => 4,
        _ => 3,
    }
}

/// The pack entry header: type and size, seven bits at a time.
fn entry_header(kind: git2::ObjectType, size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(10);
    let mut rest = size >> 4;
    let mut byte = (type_code(kind) << 4) | (size & 0x0f) as u8;
    while rest != 0 {
        out.push(byte | 0x80);
        byte = (rest & 0x7f) as u8;
        rest >>= 7;
    }
    out.push(byte);
    out
}

/// Streams bytes to libgit2's indexer while hashing them for the trailer.
struct Stream<'a> {
    sink: git2::OdbPackwriter<'a>,
    hash: Sha1,
}

impl Stream<'_> {
    fn put(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.hash.update(bytes);
        self.sink.write_all(bytes)
    }
}

/// Writes `objects` as one durable pack in `repo`. Returns once the pack,
/// its index and their directory are on disk.
pub fn write(repo: &git2::Repository, objects: &[Packed]) -> Result<(), git2::Error> {
    if objects.is_empty() {
        return Ok(());
    }
    let odb = repo.odb()?;
    let count = u32::try_from(objects.len())
        .map_err(|_| git2::Error::from_str("too many objects for one pack"))?;
    let io = |e: std::io::Error| git2::Error::from_str(&format!("writing a pack: {e}"));
    let mut s = Stream {
        sink: odb.packwriter()?,
        hash: Sha1::new(),
    };
    let mut head = Vec::with_capacity(12);
    head.extend_from_slice(b"PACK");
    head.extend_from_slice(&2u32.to_be_bytes());
    head.extend_from_slice(&count.to_be_bytes());
    s.put(&head).map_err(io)?;
    for o in objects {
        s.put(&entry_header(o.kind, o.size)).map_err(io)?;
        s.put(&o.deflated).map_err(io)?;
    }
    let trailer = s.hash.finalize_reset();
    s.sink.write_all(&trailer).map_err(io)?;
    s.sink.commit()?;
    Ok(())
}

/// The prefixes of the files [`write_unnamed`] leaves for
/// [`install`] (git's own names for its temporary packs): recovery
/// removes what a crash left of them (see [`remove_unnamed`]). No
/// extension, so [`maintain`] never takes one for an orphan pack.
const UNNAMED_PACK: &str = "tmp_pack_sk_";
const UNNAMED_IDX: &str = "tmp_idx_sk_";

/// A pack and its index written under temporary names and not fsynced,
/// for a group commit (`apply/group.rs`): the caller makes their data
/// durable (one `syncfs` for many sites, or an fsync of each), then
/// [`install`]s them under their real names, then makes the directory
/// durable. Until then no reader sees the objects.
#[derive(Debug)]
pub struct Unnamed {
    /// The pack, under its temporary name.
    pub pack: PathBuf,
    /// Its index, under its temporary name.
    pub idx: PathBuf,
    /// `pack-<hash>`, the name both get.
    name: String,
}

impl Unnamed {
    /// The directory both live in (`objects/pack`).
    pub fn dir(&self) -> &Path {
        self.pack.parent().unwrap_or(Path::new("."))
    }
}

/// Writes `objects` as a version-2 pack and its index into
/// `repo/objects/pack`, under temporary names, without any fsync. The
/// same bytes libgit2's indexer would write (no deltas), built here
/// because the indexer fsyncs whenever the process-wide
/// `GIT_OPT_ENABLE_FSYNC_GITDIR` is on, which the other changes of the
/// same process need.
pub fn write_unnamed(
    repo: &git2::Repository,
    objects: &[Packed],
    tag: &str,
) -> std::io::Result<Unnamed> {
    let dir = repo.path().join("objects/pack");
    std::fs::create_dir_all(&dir)?;
    let count = u32::try_from(objects.len())
        .map_err(|_| std::io::Error::other("too many objects for one pack"))?;
    let mut pack = Vec::new();
    pack.extend_from_slice(b"PACK");
    pack.extend_from_slice(&2u32.to_be_bytes());
    pack.extend_from_slice(&count.to_be_bytes());
    // (oid, crc32 of the entry, offset), for the index.
    let mut entries: Vec<([u8; 20], u32, u64)> = Vec::with_capacity(objects.len());
    for o in objects {
        let offset = pack.len() as u64;
        let start = pack.len();
        pack.extend_from_slice(&entry_header(o.kind, o.size));
        pack.extend_from_slice(&o.deflated);
        let mut crc = flate2::Crc::new();
        crc.update(&pack[start..]);
        let oid: [u8; 20] = o
            .oid
            .as_bytes()
            .try_into()
            .map_err(|_| std::io::Error::other("an object id is not 20 bytes"))?;
        entries.push((oid, crc.sum(), offset));
    }
    let trailer: [u8; 20] = Sha1::digest(&pack).into();
    pack.extend_from_slice(&trailer);
    entries.sort_by_key(|a| a.0);
    entries.dedup_by(|a, b| a.0 == b.0);
    let idx = index_v2(&entries, &trailer);
    let hex: String = trailer.iter().map(|b| format!("{b:02x}")).collect();
    let out = Unnamed {
        pack: dir.join(format!("{UNNAMED_PACK}{tag}")),
        idx: dir.join(format!("{UNNAMED_IDX}{tag}")),
        name: format!("pack-{hex}"),
    };
    for (path, bytes) in [(&out.pack, &pack), (&out.idx, &idx)] {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)?;
        if crate::durability::active() {
            crate::durability::created(&crate::durability::real(path));
        }
        f.write_all(bytes)?;
        if crate::durability::active() {
            crate::durability::wrote(&crate::durability::real(path), 0);
        }
    }
    Ok(out)
}

/// A version-2 pack index of `entries` (sorted by id, no duplicates).
fn index_v2(entries: &[([u8; 20], u32, u64)], pack_hash: &[u8; 20]) -> Vec<u8> {
    let mut idx = Vec::with_capacity(8 + 1024 + entries.len() * 28 + 40);
    idx.extend_from_slice(&[0xff, b't', b'O', b'c', 0, 0, 0, 2]);
    let mut fanout = [0u32; 256];
    for (oid, _, _) in entries {
        fanout[oid[0] as usize] += 1;
    }
    let mut total = 0u32;
    for n in fanout {
        total += n;
        idx.extend_from_slice(&total.to_be_bytes());
    }
    for (oid, _, _) in entries {
        idx.extend_from_slice(oid);
    }
    for (_, crc, _) in entries {
        idx.extend_from_slice(&crc.to_be_bytes());
    }
    // Offsets past 2 GiB go to a table of 64-bit offsets.
    let mut large = Vec::new();
    for (_, _, offset) in entries {
        let small = match u32::try_from(*offset) {
            Ok(o) if o < 0x8000_0000 => o,
            _ => {
                let at = u32::try_from(large.len()).unwrap_or(u32::MAX) | 0x8000_0000;
                large.push(*offset);
                at
            }
        };
        idx.extend_from_slice(&small.to_be_bytes());
    }
    for offset in large {
        idx.extend_from_slice(&offset.to_be_bytes());
    }
    idx.extend_from_slice(pack_hash);
    let own: [u8; 20] = Sha1::digest(&idx).into();
    idx.extend_from_slice(&own);
    idx
}

/// Gives an [`Unnamed`] pack its real names, the pack first and the index
/// last (a pack is visible once its index is), and has libgit2 look again.
/// The caller made their data durable before, and makes the directory
/// durable after.
pub fn install(repo: &git2::Repository, unnamed: Unnamed) -> Result<(), git2::Error> {
    let dir = unnamed.dir().to_owned();
    let fs = |e: std::io::Error| git2::Error::from_str(&format!("{}: {e}", dir.display()));
    for (from, ext) in [(&unnamed.pack, "pack"), (&unnamed.idx, "idx")] {
        let to = dir.join(format!("{}.{ext}", unnamed.name));
        let op = || std::fs::rename(from, &to);
        if crate::durability::active() {
            let from = crate::durability::real(from);
            crate::durability::rename(&from, &crate::durability::real(&to), op).map_err(fs)?;
        } else {
            op().map_err(fs)?;
        }
    }
    repo.odb()?.refresh()
}

/// Removes what a crash left of [`write_unnamed`]'s files in `repo_path`.
/// Nothing refers to them: a change names a pack only once it is installed.
pub fn remove_unnamed(repo_path: &Path) -> std::io::Result<()> {
    let dir = repo_path.join("objects/pack");
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(UNNAMED_PACK) || name.starts_with(UNNAMED_IDX) {
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

/// A pack in `objects/pack`, by the size of its pack file.
#[derive(Debug)]
struct OnDisk {
    idx: PathBuf,
    pack: PathBuf,
    size: u64,
}

/// Packs smaller than this may be merged; larger ones (a whole adopted
/// site) stay as they are, so merging never rewrites much.
const MERGE_BELOW: u64 = 32 << 20;

/// Merges small packs once there are more than this many.
const MERGE_ABOVE_COUNT: usize = 4;

fn packs(dir: &Path) -> std::io::Result<Vec<OnDisk>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "idx") {
            let pack = path.with_extension("pack");
            if let Ok(meta) = std::fs::metadata(&pack) {
                out.push(OnDisk {
                    idx: path,
                    pack,
                    size: meta.len(),
                });
            }
        }
    }
    Ok(out)
}

/// Which of `sizes` (ascending) to merge: the smallest ones up to the last
/// that is not at least twice all smaller ones together, as git's
/// geometric repack does. What is left then grows geometrically, so there
/// are few packs and each merge rewrites little.
fn merge_count(sizes: &[u64]) -> usize {
    let mut total = 0u64;
    let mut count = 0;
    for (i, &size) in sizes.iter().enumerate() {
        if i > 0 && size < 2 * total {
            count = i + 1;
        }
        total += size;
    }
    count
}

/// The object ids a version-2 pack index lists.
fn idx_oids(idx: &Path) -> Result<Vec<git2::Oid>, git2::Error> {
    let bad = || git2::Error::from_str(&format!("{}: not a version 2 pack index", idx.display()));
    let bytes = std::fs::read(idx).map_err(|e| git2::Error::from_str(&e.to_string()))?;
    if bytes.len() < 8 + 256 * 4 || bytes[..8] != [0xff, b't', b'O', b'c', 0, 0, 0, 2] {
        return Err(bad());
    }
    let n = u32::from_be_bytes(
        bytes[8 + 255 * 4..8 + 256 * 4]
            .try_into()
            .map_err(|_| bad())?,
    ) as usize;
    let start = 8 + 256 * 4;
    let ids = bytes.get(start..start + n * 20).ok_or_else(bad)?;
    ids.chunks_exact(20).map(git2::Oid::from_bytes).collect()
}

/// Tidies `objects/pack` after a crash, and merges small packs into one
/// when there are many. The merged pack is durable before any pack it
/// replaces is removed, so every object stays readable at every instant.
pub fn maintain(repo: &git2::Repository) -> Result<(), git2::Error> {
    let dir = repo.path().join("objects/pack");
    let fs = |e: std::io::Error| git2::Error::from_str(&format!("{}: {e}", dir.display()));
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(());
    };
    // The indexer's temporary files, and a pack whose index never came,
    // are what a crash mid-write leaves; nothing refers to them.
    for entry in entries {
        let path = entry.map_err(fs)?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let orphan =
            path.extension().is_some_and(|e| e == "pack") && !path.with_extension("idx").exists();
        if name.starts_with("pack_git2_") || orphan {
            std::fs::remove_file(&path).map_err(fs)?;
        }
    }
    let mut small: Vec<OnDisk> = packs(&dir)
        .map_err(fs)?
        .into_iter()
        .filter(|p| p.size < MERGE_BELOW)
        .collect();
    if small.len() <= MERGE_ABOVE_COUNT {
        return Ok(());
    }
    small.sort_by_key(|p| p.size);
    let sizes: Vec<u64> = small.iter().map(|p| p.size).collect();
    small.truncate(merge_count(&sizes));
    if small.len() < 2 {
        return Ok(());
    }
    let odb = repo.odb()?;
    let mut seen = std::collections::HashSet::new();
    let mut objects = Vec::new();
    for p in &small {
        for oid in idx_oids(&p.idx)? {
            if seen.insert(oid) {
                let o = odb.read(oid)?;
                objects.push(Packed::with_oid(oid, o.kind(), o.data())?);
            }
        }
    }
    write(repo, &objects)?;
    for p in &small {
        // The index first: a pack without one is ignored, and tidied later.
        std::fs::remove_file(&p.idx).map_err(fs)?;
        std::fs::remove_file(&p.pack).map_err(fs)?;
    }
    std::fs::File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(fs)?;
    odb.refresh()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_is_geometric() {
        assert_eq!(merge_count(&[]), 0);
        assert_eq!(merge_count(&[10]), 0);
        // Each at least twice the ones before: nothing to merge.
        assert_eq!(merge_count(&[1, 2, 6, 20]), 0);
        // Equal small packs merge, the big one stays.
        assert_eq!(merge_count(&[5, 5, 5, 5, 1000]), 4);
        assert_eq!(merge_count(&[1, 1, 100]), 2);
    }

    #[test]
    fn written_packs_are_read_by_git_and_merged_without_loss() {
        let dir = tempfile::tempdir().unwrap();
        let repo = git2::Repository::init_bare(dir.path()).unwrap();
        let mut all = Vec::new();
        for round in 0..8u32 {
            let objects: Vec<Packed> = (0..50)
                .map(|i| {
                    let data = format!("round {round} object {i}\n").repeat(i as usize + 1);
                    Packed::new(git2::ObjectType::Blob, data.as_bytes()).unwrap()
                })
                .collect();
            all.extend(objects.iter().map(|o| o.oid));
            write(&repo, &objects).unwrap();
            maintain(&repo).unwrap();
        }
        let count = packs(&repo.path().join("objects/pack")).unwrap().len();
        assert!(count <= MERGE_ABOVE_COUNT + 1, "{count} packs");
        let odb = repo.odb().unwrap();
        for oid in &all {
            assert!(odb.exists(*oid));
        }
        crate::store::test_git(dir.path(), &["fsck", "--strict"]);
        let text = crate::store::test_git(dir.path(), &["count-objects", "-v"]);
        assert!(text.contains("in-pack: 400"), "{text}");
    }
}
