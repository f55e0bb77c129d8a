//! The per-site lock: an flock on `<state_dir>/<site>/lock`, released by
//! the kernel when its holder exits or dies, so a crash never leaves a
//! stale lock behind.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::Path;

use super::{StoreError, io};

/// A held site lock; dropping it releases the lock.
#[derive(Debug)]
pub struct SiteLock {
    _file: File,
}

impl SiteLock {
    /// Takes the lock at `path`, waiting when `wait`; `Ok(None)` when it is
    /// held elsewhere and `wait` is false.
    pub fn acquire(path: &Path, wait: bool) -> Result<Option<Self>, StoreError> {
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)
            .map_err(io(path))?;
        if wait {
            file.lock().map_err(io(path))?;
        } else {
            match file.try_lock() {
                Ok(()) => {}
                Err(TryLockError::WouldBlock) => return Ok(None),
                Err(TryLockError::Error(e)) => return Err(io(path)(e)),
            }
        }
        // Who holds it, for people looking; the lock itself is the flock.
        let _ = file.set_len(0);
        let _ = writeln!(file, "{}", std::process::id());
        Ok(Some(Self { _file: file }))
    }
}
