//! Cache files in a site's state dir (the stat cache, the last point's file
//! list): a layout version, a body, and a SHA-256 of both. They are only
//! caches: a missing, older, torn or damaged file reads as no cache, which
//! costs a rehash or a tree walk, never a wrong answer.
//!
//! They are written by temp file and rename without fsync, since after a
//! crash any of those outcomes is fine. The temp files have a known prefix,
//! so the next command that takes the site's lock removes what a crash
//! left of them ([`remove_temps`]).

use std::io::Write;
use std::path::Path;

use sha2::{Digest, Sha256};

/// Every cache temp file's name starts with this, then the cache's name.
/// (`.tmp`, like `tempfile`'s own, so any check for leftovers sees them.)
const TEMP_PREFIX: &str = ".tmp-cache-";

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
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!("{TEMP_PREFIX}{name}."))
        .tempfile_in(dir)?;
    let mut hash = Sha256::new();
    for part in [&version.to_le_bytes()[..], body] {
        hash.update(part);
        tmp.as_file_mut().write_all(part)?;
    }
    tmp.as_file_mut().write_all(&hash.finalize())?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Removes cache temp files a crash left in `dir`. Called under the site's
/// lock; a reader saving a cache at that instant only loses that save.
pub fn remove_temps(dir: &Path) -> std::io::Result<()> {
    remove_prefixed(dir, TEMP_PREFIX, |path| match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    })
}

/// Calls `remove` on every entry of `dir` whose name starts with `prefix`
/// (temp files of a known name); a missing `dir` has none.
pub fn remove_prefixed(
    dir: &Path,
    prefix: &str,
    remove: impl Fn(&Path) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with(prefix) {
            remove(&entry.path())?;
        }
    }
    Ok(())
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
