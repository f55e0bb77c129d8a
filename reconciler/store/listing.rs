//! The last point's file list (path → blob id), kept beside `points.git`
//! so a plan does not walk a large point's trees on every run. Keyed by
//! the point's commit id: points are never rewritten, so a list saved for
//! a commit stays right for it forever.
//!
//! Only a cache ([`crate::cachefile`]): a missing, torn or older one means
//! walking the trees again, never a wrong answer.

use std::collections::BTreeMap;
use std::path::Path;

use crate::cachefile;
use crate::model::hash::BlobId;

/// The body's layout: the commit id, then the sorted list. A different
/// version is no cache.
const VERSION: u32 = 2;

/// The list saved for `commit`, if `path` holds one.
pub fn load(path: &Path, commit: [u8; 20]) -> Option<BTreeMap<String, BlobId>> {
    let body = cachefile::load(path, VERSION)?;
    let (saved, rest) = postcard::take_from_bytes::<[u8; 20]>(&body).ok()?;
    (saved == commit).then_some(())?;
    let files: Vec<(String, [u8; 20])> = postcard::from_bytes(rest).ok()?;
    // Saved in order, so the map is built without sorting.
    Some(files.into_iter().map(|(p, b)| (p, BlobId(b))).collect())
}

/// Saves `files` as the list of `commit`. After a crash the file is this
/// one, an older one keyed by another commit, or none that loads.
pub fn save(
    path: &Path,
    commit: [u8; 20],
    files: &BTreeMap<String, BlobId>,
) -> std::io::Result<()> {
    let list: Vec<(&str, [u8; 20])> = files.iter().map(|(p, b)| (p.as_str(), b.0)).collect();
    let body = postcard::to_allocvec(&(commit, list)).map_err(std::io::Error::other)?;
    cachefile::save(path, VERSION, &body)
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
    fn a_list_is_returned_only_for_its_commit() {
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
    }
}
