//! The last point's file list (path → blob id), kept beside `points.git`
//! so a plan does not walk a large point's trees on every run. Keyed by
//! the point's commit id: points are never rewritten, so a list saved for
//! a commit stays right for it forever.
//!
//! Only a cache: a missing, torn or older one means walking the trees
//! again, never a wrong answer (it carries a SHA-256 of its body).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::model::hash::BlobId;

/// The file's layout: this number, the commit id, the sorted list, then a
/// SHA-256 of all three. A different version is no cache.
const VERSION: u32 = 1;

/// The list saved for `commit`, if `path` holds one.
pub fn load(path: &Path, commit: [u8; 20]) -> Option<BTreeMap<String, BlobId>> {
    let bytes = std::fs::read(path).ok()?;
    let (body, sum) = bytes.split_at_checked(bytes.len().checked_sub(32)?)?;
    (Sha256::digest(body)[..] == *sum).then_some(())?;
    let (version, rest) = postcard::take_from_bytes::<u32>(body).ok()?;
    (version == VERSION).then_some(())?;
    let (saved, rest) = postcard::take_from_bytes::<[u8; 20]>(rest).ok()?;
    (saved == commit).then_some(())?;
    let files: Vec<(String, [u8; 20])> = postcard::from_bytes(rest).ok()?;
    // Saved in order, so the map is built without sorting.
    Some(files.into_iter().map(|(p, b)| (p, BlobId(b))).collect())
}

/// Saves `files` as the list of `commit` (temp file, rename, no fsync:
/// after a crash the file is this one, an older one keyed by another
/// commit, or a torn one that fails its checksum).
pub fn save(
    path: &Path,
    commit: [u8; 20],
    files: &BTreeMap<String, BlobId>,
) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let list: Vec<(&str, [u8; 20])> = files.iter().map(|(p, b)| (p.as_str(), b.0)).collect();
    let mut bytes =
        postcard::to_allocvec(&(VERSION, commit, list)).map_err(std::io::Error::other)?;
    let sum = Sha256::digest(&bytes);
    bytes.extend_from_slice(&sum);
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.as_file_mut().write_all(&bytes)?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files() -> BTreeMap<String, BlobId> {
        [
            ("a/b.php", b"b" as &[u8]),
            ("a/c.php", b"c"),
            ("index.php", b"i"),
        ]
        .into_iter()
        .map(|(p, c)| (p.to_owned(), BlobId::of(c)))
        .collect()
    }

    #[test]
    fn a_list_is_returned_only_for_its_commit_and_only_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pointfiles.bin");
        assert_eq!(load(&path, [1; 20]), None, "no file, no list");
        save(&path, [1; 20], &files()).unwrap();
        assert_eq!(load(&path, [1; 20]), Some(files()));
        assert_eq!(
            load(&path, [2; 20]),
            None,
            "another point's list is not this one's"
        );
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 7]).unwrap();
        assert_eq!(load(&path, [1; 20]), None, "a torn file is no list");
        let mut flipped = bytes.clone();
        flipped[30] ^= 1;
        std::fs::write(&path, &flipped).unwrap();
        assert_eq!(load(&path, [1; 20]), None, "a damaged file is no list");
    }
}
