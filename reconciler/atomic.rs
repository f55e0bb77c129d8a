//! The one atomic writer: a file replaced whole through a temp file beside
//! it and a rename, so a reader (or a crash) sees the old file or the new
//! one, never half of one. [`Durability`] says whether it must also survive
//! a crash: a cache or report does not (`Cache`: no fsync), a record does
//! (`Durable`: file fsync, rename, directory fsync, every step reported to
//! [`crate::durability`] so the crash tests can lose what a real crash could).
//!
//! It sits at the bottom of the crate, beside `durability` and below `load`,
//! rather than in `store`: `load` writes one state file itself (the fleet's
//! trust record, `load/trust.rs`), and an arrow from `load` up to `store`
//! would tie the fleet loader to the ledger and the points. `store`
//! re-exports it (`store::atomic_write`), and every caller above `load`
//! reaches it there. Nothing else writes a file by temp file and rename.

use std::io::Write;
use std::path::Path;

use crate::durability;

/// How much a write must survive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// A cache or a report (`status.json`, `notices.json`, the stat cache):
    /// temp file and rename, no fsync. After a crash the old file, the new
    /// one or a torn one may be there, and its readers take each of them
    /// for "no cache" or an older report. Not reported to the crash model,
    /// which counts what becomes durable: a cache write makes nothing so.
    /// Its temp files are named so that [`remove_cache_temps`], run under
    /// the site's lock, finds what a crash left of them.
    Cache,
    /// A record that must survive a crash whole (the journal,
    /// `quarantine.json`, a fleet's trust record, an approvals file): temp
    /// file, fsync, rename, directory fsync; a directory created for it is
    /// made durable too.
    Durable,
}

/// Every cache temp file's name starts with this, then the file's name.
/// (`.tmp`, like `tempfile`'s own, so any check for leftovers sees them.)
const CACHE_TEMP_PREFIX: &str = ".tmp-cache-";

/// The permission bits of what is written.
#[derive(Debug, Clone, Copy)]
enum Mode {
    /// Owner only, as `tempfile` creates it: state files are nobody
    /// else's business.
    Private,
    /// The bits of the file replaced, else 0644: a file of the user's own
    /// (an approvals file in a fleet checkout) stays as they made it.
    Keep,
}

/// Writes `bytes` to `path` atomically, at `durability`. A new file is
/// readable by its owner only.
pub fn atomic_write(path: &Path, bytes: &[u8], durability: Durability) -> std::io::Result<()> {
    write(path, &[bytes], durability, Mode::Private)
}

/// [`atomic_write`] of `parts` one after another, without joining them
/// first (a cache's header, its body and its checksum: the body of a large
/// site's stat cache is megabytes, and a copy would count in peak memory).
pub fn atomic_write_parts(
    path: &Path,
    parts: &[&[u8]],
    durability: Durability,
) -> std::io::Result<()> {
    write(path, parts, durability, Mode::Private)
}

/// [`atomic_write`] for a file that is the user's rather than sitekeeper's
/// (an approvals file): the mode of the file replaced is kept, and a new
/// file is 0644.
pub fn atomic_write_keep_mode(
    path: &Path,
    bytes: &[u8],
    durability: Durability,
) -> std::io::Result<()> {
    write(path, &[bytes], durability, Mode::Keep)
}

fn write(path: &Path, parts: &[&[u8]], durability: Durability, mode: Mode) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    match durability {
        Durability::Cache => std::fs::create_dir_all(dir)?,
        Durability::Durable => ensure_dir(dir)?,
    }
    let mode = match mode {
        Mode::Private => None,
        Mode::Keep => {
            use std::os::unix::fs::PermissionsExt as _;
            Some(std::fs::metadata(path).map_or(0o644, |m| m.permissions().mode() & 0o7777))
        }
    };
    // A known name, so recovery can remove what a crash left of it.
    let mut tmp = tempfile::Builder::new()
        .prefix(&temp_prefix(path, durability))
        .tempfile_in(dir)?;
    let noted = (durability == Durability::Durable && durability::active())
        .then(|| (durability::real(tmp.path()), durability::real(path)));
    if let Some((t, _)) = &noted {
        durability::created(t);
    }
    for part in parts {
        tmp.write_all(part)?;
    }
    if let Some(mode) = mode {
        use std::os::unix::fs::PermissionsExt as _;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(mode))?;
    }
    if durability == Durability::Cache {
        tmp.persist(path).map_err(|e| e.error)?;
        return Ok(());
    }
    if let Some((t, _)) = &noted {
        durability::wrote(t, 0);
    }
    tmp.as_file().sync_all()?;
    match &noted {
        Some((t, p)) => {
            durability::synced_file(t);
            durability::rename(t, p, || tmp.persist(path).map(drop).map_err(|e| e.error))?;
        }
        None => {
            tmp.persist(path).map_err(|e| e.error)?;
        }
    }
    sync_dir(dir)
}

/// The start of the names of `path`'s temporary files. Both begin with a
/// dot, which the fleet loader skips, should a crash leave one in an
/// approvals directory.
fn temp_prefix(path: &Path, durability: Durability) -> String {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    match durability {
        Durability::Cache => format!("{CACHE_TEMP_PREFIX}{name}."),
        Durability::Durable => format!(".{name}."),
    }
}

/// Removes, durably, what a crash inside a `Durable` [`atomic_write`] of
/// `path` left beside it.
pub fn remove_temps(path: &Path) -> std::io::Result<()> {
    let (Some(dir), prefix) = (path.parent(), temp_prefix(path, Durability::Durable)) else {
        return Ok(());
    };
    remove_prefixed(dir, &prefix, remove_durably)
}

/// Removes the temp files of every `Cache` write a crash left in `dir`.
/// Called under the site's lock; a reader saving a cache at that instant
/// only loses that save.
pub fn remove_cache_temps(dir: &Path) -> std::io::Result<()> {
    remove_prefixed(dir, CACHE_TEMP_PREFIX, |path| {
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    })
}

/// Calls `remove` on every entry of `dir` whose name starts with `prefix`
/// (temp files of a known name); a missing `dir` has none.
fn remove_prefixed(
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

/// Fsyncs directory `dir`, so the entries just made in it are durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()?;
    if durability::active() {
        durability::synced_dir(&durability::real(dir));
    }
    Ok(())
}

/// Makes directory `dir` exist durably: a journal written into a directory
/// whose own entry a crash could lose would be lost with it.
fn ensure_dir(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        ensure_dir(parent)?;
    }
    match std::fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(e),
    }
    if durability::active() {
        durability::made_dir(&durability::real(dir));
    }
    match dir.parent() {
        Some(parent) => sync_dir(parent),
        None => Ok(()),
    }
}

/// Removes the file `path` (absent is fine) and fsyncs its directory, so
/// the removal survives a crash.
pub fn remove_durably(path: &Path) -> std::io::Result<()> {
    let op = || match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    };
    if durability::active() {
        durability::remove(&durability::real(path), op)?;
    } else if !op()? {
        return Ok(());
    }
    match path.parent() {
        Some(dir) => sync_dir(dir),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn names(dir: &Path) -> Vec<String> {
        let mut left: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        left
    }

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn both_levels_replace_the_file_whole_and_leave_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        for (name, level) in [("c", Durability::Cache), ("d", Durability::Durable)] {
            let path = dir.path().join("sub").join(name);
            atomic_write(&path, b"old", level).unwrap();
            atomic_write_parts(&path, &[b"n", b"ew"], level).unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), b"new");
            assert_eq!(mode(&path), 0o600, "a state file is its owner's only");
        }
        assert_eq!(names(&dir.path().join("sub")), ["c", "d"]);
    }

    #[test]
    fn a_users_file_keeps_its_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("approvals.yaml");
        atomic_write_keep_mode(&path, b"a", Durability::Durable).unwrap();
        assert_eq!(mode(&path), 0o644, "a new file is 0644");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        atomic_write_keep_mode(&path, b"b", Durability::Durable).unwrap();
        assert_eq!(mode(&path), 0o640, "a replaced file keeps its mode");
        assert_eq!(std::fs::read(&path).unwrap(), b"b");
    }

    #[test]
    fn what_a_crash_left_is_removed_by_its_level_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join(".tmp-cache-report.bin.Ab12Cd"), b"torn").unwrap();
        std::fs::write(d.join(".txn.json.Ef34Gh"), b"torn").unwrap();
        std::fs::write(d.join("txn.json"), b"{}").unwrap();
        std::fs::write(d.join("report.bin"), b"{}").unwrap();
        remove_cache_temps(d).unwrap();
        assert_eq!(names(d), [".txn.json.Ef34Gh", "report.bin", "txn.json"]);
        remove_temps(&d.join("txn.json")).unwrap();
        assert_eq!(names(d), ["report.bin", "txn.json"]);
        remove_cache_temps(&d.join("absent")).unwrap();
        remove_temps(&d.join("absent/txn.json")).unwrap();
    }
}
