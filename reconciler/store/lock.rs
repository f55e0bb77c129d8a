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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_and_a_killed_holder_releases_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let held = SiteLock::acquire(&path, false).unwrap();
        assert!(held.is_some());
        assert!(
            SiteLock::acquire(&path, false).unwrap().is_none(),
            "the lock is exclusive"
        );
        drop(held);
        // Another process takes it (flock(1) uses the same flock(2) lock; -o keeps
        // it out of the `sleep` child) and dies by SIGKILL.
        let mut child = std::process::Command::new("flock")
            .arg("-o")
            .arg(&path)
            .args(["sleep", "60"])
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while SiteLock::acquire(&path, false).unwrap().is_some() {
            assert!(
                std::time::Instant::now() < deadline,
                "flock(1) never took the lock"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        // flock(1)'s forked child holds the same open file until it closes
        // it just before its exec (`-o`): a kill in that instant leaves the
        // lock held for those microseconds, so look again for a while.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while SiteLock::acquire(&path, false).unwrap().is_none() {
            assert!(
                std::time::Instant::now() < deadline,
                "the kernel released the dead holder's lock"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}
