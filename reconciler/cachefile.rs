//! Cache files in a site's state dir (the site index of
//! [`crate::inventory::index`]): a layout version, a body, and a SHA-256
//! of both, here or in a layout of their own ([`save_parts`]). They are
//! only caches: a missing, older, torn or damaged file reads as no cache,
//! which costs a rehash or a tree walk, never a wrong answer.
//!
//! This is the layer of versions and checksums; the bytes are written by
//! [`crate::atomic`] at `Durability::Cache` (temp file and rename without
//! fsync), since after a crash any of those outcomes is fine. The next
//! command that takes the site's lock removes what a crash left of its temp
//! files ([`remove_temps`]).

use std::path::Path;

use sha2::{Digest, Sha256};

use crate::atomic::{Durability, atomic_write_parts};

/// The body of the cache at `path`, if it is whole and of layout `version`.
pub fn load(path: &Path, version: u32) -> Option<Vec<u8>> {
    let mut bytes = std::fs::read(path).ok()?;
    let body_len = bytes.len().checked_sub(32)?;
    let (body, sum) = bytes.split_at(body_len);
    (Sha256::digest(body)[..] == *sum).then_some(())?;
    (body.get(..4)? == version.to_le_bytes()).then_some(())?;
    bytes.truncate(body_len);
    bytes.drain(..4);
    Some(bytes)
}

/// Writes `body` as the cache at `path`, layout `version`, atomically
/// (temp file, rename).
pub fn save(path: &Path, version: u32, body: &[u8]) -> std::io::Result<()> {
    let version = version.to_le_bytes();
    let sum = Sha256::new()
        .chain_update(version)
        .chain_update(body)
        .finalize();
    atomic_write_parts(path, &[&version, body, &sum], Durability::Cache)
}

/// Writes a cache file whose parts carry their own version and checksum
/// (the site index, read in place through `mmap`), atomically: temp file
/// and rename, never a write into the file a reader may have mapped.
pub fn save_parts(path: &Path, parts: &[&[u8]]) -> std::io::Result<()> {
    atomic_write_parts(path, parts, Durability::Cache)
}

/// Removes what a crash left of cache temp files in `dir` (and of every
/// other `Durability::Cache` write there, such as `status.json`'s). Called
/// under the site's lock; a reader saving a cache at that instant only
/// loses that save.
pub fn remove_temps(dir: &Path) -> std::io::Result<()> {
    crate::atomic::remove_cache_temps(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cache_reads_back_whole_and_of_its_version_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("some.bin");
        assert_eq!(load(&path, 1), None, "no file, no cache");
        save(&path, 1, b"body").unwrap();
        assert_eq!(load(&path, 1).as_deref(), Some(&b"body"[..]));
        assert_eq!(load(&path, 2), None, "another layout is no cache");
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 5]).unwrap();
        assert_eq!(load(&path, 1), None, "a torn file is no cache");
        let mut flipped = bytes.clone();
        flipped[5] ^= 1;
        std::fs::write(&path, &flipped).unwrap();
        assert_eq!(load(&path, 1), None, "a damaged file is no cache");
    }

    #[test]
    fn temps_a_crash_left_are_removed_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        save(&dir.path().join("some.bin"), 1, b"body").unwrap();
        std::fs::write(dir.path().join(".tmp-cache-some.bin.Ab12Cd"), b"torn").unwrap();
        std::fs::write(dir.path().join("ledger.jsonl"), b"").unwrap();
        remove_temps(dir.path()).unwrap();
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["ledger.jsonl", "some.bin"]);
        remove_temps(&dir.path().join("absent")).unwrap();
    }
}
