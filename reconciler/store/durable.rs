//! The one durable writer of the state dir: a file replaced whole by
//! temp file, fsync, rename and directory fsync, and removed with its
//! directory fsynced. Every state file that must survive a crash (the
//! journal, `quarantine.json`) goes through here; caches do not (see
//! [`crate::cachefile`]). Every step is reported to [`crate::durability`]
//! so the crash tests can lose what a real crash could.

use std::io::Write;
use std::path::Path;

use crate::durability;

/// Writes `bytes` to `path` atomically: temp file, fsync, rename, dir fsync.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    ensure_dir(dir)?;
    // A known name, so recovery can remove what a crash left of it.
    let mut tmp = tempfile::Builder::new()
        .prefix(&temp_prefix(path))
        .tempfile_in(dir)?;
    let noted =
        durability::active().then(|| (durability::real(tmp.path()), durability::real(path)));
    if let Some((t, _)) = &noted {
        durability::created(t);
    }
    tmp.write_all(bytes)?;
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

/// The start of the names of `path`'s temporary files.
fn temp_prefix(path: &Path) -> String {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    format!(".{name}.")
}

/// Removes what a crash inside [`write_atomic`] left beside `path`.
pub fn remove_temps(path: &Path) -> std::io::Result<()> {
    let (Some(dir), prefix) = (path.parent(), temp_prefix(path)) else {
        return Ok(());
    };
    crate::cachefile::remove_prefixed(dir, &prefix, remove_durably)
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
