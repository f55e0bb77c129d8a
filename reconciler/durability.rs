//! A model of what a crash may lose, for crash tests: which writes have
//! not been made durable yet (file data since the file's last fsync,
//! directory entries since their directory's last fsync), and, at a
//! simulated crash, the loss of some or all of them before SIGKILL, the
//! way SQLite's crash tests drop and garble unsynced sectors.
//!
//! It is inert (every call returns at once) unless a debug build (or one
//! with the `failpoints` feature) runs with `SITEKEEPER_CRASH=K:VARIANT`
//! (crash after the K-th durability event) or `SITEKEEPER_CRASH_TRACE=FILE`
//! (list the events). It never decides anything for sitekeeper: the code
//! under test reports what it did, and this module only counts it.
//!
//! The model: a file's data written since its last fsync may be lost,
//! truncated or garbled; a new, renamed or removed directory entry is
//! durable once its directory (the target's, for a rename) is fsynced, as
//! on ext4 and XFS, and until then the crash may undo it. Variants:
//! `all` undoes everything not durable; `prefix` keeps a seeded random
//! prefix of the entry changes, in order (a journaling file system commits
//! them in order), and truncates unsynced data at a random length;
//! `garbage` keeps the entries and overwrites unsynced data with noise.
//! A whole file system synced at once (`syncfs`, a group commit's
//! barrier) makes everything on it durable.
//! Replaced and removed files are kept as hard links in
//! `SITEKEEPER_CRASH_DIR` (on the same file system) so the crash can put
//! them back.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock};

/// Whether this build honours the crash model.
const ENABLED: bool = cfg!(debug_assertions) || cfg!(feature = "failpoints");

/// What a simulated crash loses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    All,
    Prefix,
    Garbage,
}

/// One change to a directory entry that is not durable yet.
#[derive(Debug)]
enum Entry {
    Created(PathBuf),
    MadeDir(PathBuf),
    Renamed {
        from: PathBuf,
        to: PathBuf,
        /// The file `to` replaced, kept to be put back.
        backup: Option<PathBuf>,
    },
    Removed {
        path: PathBuf,
        backup: Option<PathBuf>,
    },
    RemovedDir {
        path: PathBuf,
        mode: u32,
    },
}

impl Entry {
    /// The directory whose fsync makes this change durable.
    fn dir(&self) -> Option<&Path> {
        match self {
            Entry::Created(p) | Entry::MadeDir(p) => p.parent(),
            Entry::Renamed { to, .. } => to.parent(),
            Entry::Removed { path, .. } | Entry::RemovedDir { path, .. } => path.parent(),
        }
    }

    fn backup(&self) -> Option<&Path> {
        match self {
            Entry::Renamed { backup, .. } | Entry::Removed { backup, .. } => backup.as_deref(),
            _ => None,
        }
    }

    /// Puts the entry back as it was before the change (best effort: the
    /// crash is simulated, and a later durable change may have moved on).
    fn undo(&self) {
        match self {
            Entry::Created(p) => {
                let _ = fs::remove_file(p);
            }
            Entry::MadeDir(p) => {
                let _ = fs::remove_dir(p);
            }
            Entry::Renamed { from, to, backup } => {
                if fs::symlink_metadata(to).is_ok() && fs::symlink_metadata(from).is_err() {
                    let _ = fs::rename(to, from);
                }
                if let Some(b) = backup {
                    let _ = fs::rename(b, to);
                }
            }
            Entry::Removed { path, backup } => {
                if let Some(b) = backup
                    && fs::symlink_metadata(path).is_err()
                {
                    let _ = fs::rename(b, path);
                }
            }
            Entry::RemovedDir { path, mode } => {
                if fs::create_dir(path).is_ok() {
                    let _ = fs::set_permissions(path, fs::Permissions::from_mode(*mode));
                }
            }
        }
    }
}

/// The model's state in one process.
#[derive(Debug)]
struct Model {
    /// Events so far.
    events: u64,
    /// Crash after this event, losing this much.
    crash: Option<(u64, Variant)>,
    seed: u64,
    trace: Option<PathBuf>,
    backups: Option<PathBuf>,
    /// Entry changes not yet durable, oldest first.
    entries: Vec<Entry>,
    /// Files with unsynced data: the length that is durable.
    data: BTreeMap<PathBuf, u64>,
}

fn model() -> Option<MutexGuard<'static, Model>> {
    static MODEL: OnceLock<Option<Mutex<Model>>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            if !ENABLED {
                return None;
            }
            let crash = std::env::var("SITEKEEPER_CRASH").ok().and_then(|s| {
                let mut parts = s.split(':');
                let at: u64 = parts.next()?.parse().ok()?;
                let variant = match parts.next().unwrap_or("all") {
                    "all" => Variant::All,
                    "prefix" => Variant::Prefix,
                    "garbage" => Variant::Garbage,
                    _ => return None,
                };
                Some((at, variant))
            });
            let trace = std::env::var_os("SITEKEEPER_CRASH_TRACE").map(PathBuf::from);
            let backups = std::env::var_os("SITEKEEPER_CRASH_DIR").map(PathBuf::from);
            // Without a place for backups, a crash could not put files back.
            let crash = crash.filter(|_| backups.is_some());
            (crash.is_some() || trace.is_some()).then(|| {
                Mutex::new(Model {
                    events: 0,
                    seed: crash.map_or(1, |(at, _)| at.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1),
                    crash,
                    trace,
                    backups,
                    entries: Vec::new(),
                    data: BTreeMap::new(),
                })
            })
        })
        .as_ref()
        .map(|m| m.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
}

/// Whether the model is on (callers skip their bookkeeping when it is not).
pub fn active() -> bool {
    model().is_some()
}

/// The path of `name` in the directory open as `dir`, as the kernel knows it.
pub fn at(dir: impl AsFd, name: &str) -> PathBuf {
    let fd = dir.as_fd().as_raw_fd();
    let base = fs::read_link(format!("/proc/self/fd/{fd}")).unwrap_or_default();
    if name.is_empty() || name == "." {
        base
    } else {
        base.join(name)
    }
}

/// `path` with its directory resolved as the kernel knows it, so entries
/// noted through a root and through plain paths compare equal.
pub fn real(path: &Path) -> PathBuf {
    match (path.parent(), path.file_name()) {
        (Some(dir), Some(name)) => fs::canonicalize(dir)
            .map(|d| d.join(name))
            .unwrap_or_else(|_| path.to_owned()),
        _ => path.to_owned(),
    }
}

impl Model {
    /// Counts an event; crashes if it is the configured one.
    fn event(&mut self, what: &str, path: &Path) {
        self.events += 1;
        if let Some(trace) = &self.trace
            && let Ok(mut f) = fs::OpenOptions::new().create(true).append(true).open(trace)
        {
            let _ = writeln!(f, "{} {what} {}", self.events, path.display());
        }
        if let Some((at, variant)) = self.crash
            && at == self.events
        {
            self.lose(variant);
            let _ = rustix::process::kill_process(
                rustix::process::getpid(),
                rustix::process::Signal::KILL,
            );
            std::process::abort()
        }
    }

    fn random(&mut self) -> u64 {
        // xorshift64*: enough to pick cuts and noise reproducibly.
        self.seed ^= self.seed >> 12;
        self.seed ^= self.seed << 25;
        self.seed ^= self.seed >> 27;
        self.seed.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Loses what `variant` says, as a crash would.
    fn lose(&mut self, variant: Variant) {
        let keep = match variant {
            Variant::All => 0,
            Variant::Prefix => (self.random() % (self.entries.len() as u64 + 1)) as usize,
            Variant::Garbage => self.entries.len(),
        };
        for e in self.entries.drain(keep..).rev() {
            e.undo();
        }
        let data = std::mem::take(&mut self.data);
        for (path, durable) in data {
            let Ok(len) = fs::symlink_metadata(&path).map(|m| m.len()) else {
                continue;
            };
            if len <= durable {
                continue;
            }
            let Ok(file) = fs::OpenOptions::new().write(true).open(&path) else {
                continue;
            };
            match variant {
                Variant::All => {
                    let _ = file.set_len(durable);
                }
                Variant::Prefix => {
                    let cut = durable + self.random() % (len - durable + 1);
                    let _ = file.set_len(cut);
                }
                Variant::Garbage => {
                    let noise: Vec<u8> = (durable..len).map(|_| self.random() as u8).collect();
                    let _ = std::os::unix::fs::FileExt::write_all_at(&file, &noise, durable);
                }
            }
        }
    }

    /// A hard link to `path` in the backup directory, if it is a file.
    fn keep(&mut self, path: &Path) -> Option<PathBuf> {
        let dir = self.backups.clone()?;
        if self.crash.is_none() || fs::symlink_metadata(path).is_ok_and(|m| m.is_dir()) {
            return None;
        }
        let backup = dir.join(format!("kept-{}-{}", std::process::id(), self.events));
        fs::create_dir_all(&dir).ok()?;
        fs::hard_link(path, &backup).ok().map(|()| backup)
    }
}

/// A new file or link at `path` (an entry in its directory).
pub fn created(path: &Path) {
    if let Some(mut m) = model() {
        m.entries.push(Entry::Created(path.to_owned()));
        m.event("create", path);
    }
}

/// A new directory at `path`.
pub fn made_dir(path: &Path) {
    if let Some(mut m) = model() {
        m.entries.push(Entry::MadeDir(path.to_owned()));
        m.event("mkdir", path);
    }
}

/// Data was written to `path` past `durable` bytes (what an earlier fsync
/// made durable; 0 for a new file).
pub fn wrote(path: &Path, durable: u64) {
    if let Some(mut m) = model() {
        m.data.entry(path.to_owned()).or_insert(durable);
        m.event("write", path);
    }
}

/// `path` was fsynced: its data is durable.
pub fn synced_file(path: &Path) {
    if let Some(mut m) = model() {
        m.data.remove(path);
        m.event("fsync", path);
    }
}

/// Directory `dir` was fsynced: its entries are durable.
pub fn synced_dir(dir: &Path) {
    if let Some(mut m) = model() {
        let mut kept = Vec::new();
        for e in std::mem::take(&mut m.entries) {
            if e.dir() == Some(dir) {
                if let Some(b) = e.backup() {
                    let _ = fs::remove_file(b);
                }
            } else {
                kept.push(e);
            }
        }
        m.entries = kept;
        m.event("fsync dir", dir);
    }
}

/// The file system `dev` (an `st_dev`) was synced whole (`syncfs(2)`):
/// every file's data and every directory entry on it is durable, as
/// after an fsync of each. A path that no longer exists is judged by its
/// nearest existing ancestor, which is on the same file system unless a
/// mount point lies between, which a site root or state dir never has
/// inside it.
pub fn synced_fs(dev: u64) {
    if let Some(mut m) = model() {
        let on = |p: &Path| {
            p.ancestors()
                .find_map(|a| fs::symlink_metadata(a).ok())
                .is_some_and(|meta| std::os::unix::fs::MetadataExt::dev(&meta) == dev)
        };
        let mut kept = Vec::new();
        for e in std::mem::take(&mut m.entries) {
            if e.dir().is_some_and(on) {
                if let Some(b) = e.backup() {
                    let _ = fs::remove_file(b);
                }
            } else {
                kept.push(e);
            }
        }
        m.entries = kept;
        m.data.retain(|path, _| !on(path));
        m.event("syncfs", Path::new(&format!("dev {dev}")));
    }
}

/// Renames `from` to `to` by `op`, noting the entry change and keeping
/// what `to` held, so a crash can undo it.
pub fn rename(from: &Path, to: &Path, op: impl FnOnce() -> io::Result<()>) -> io::Result<()> {
    let Some(mut m) = model() else {
        return op();
    };
    let backup = m.keep(to);
    let result = op();
    match result {
        Ok(()) => {
            if let Some(durable) = m.data.remove(from) {
                m.data.insert(to.to_owned(), durable);
            }
            m.entries.push(Entry::Renamed {
                from: from.to_owned(),
                to: to.to_owned(),
                backup,
            });
            m.event("rename", to);
        }
        Err(_) => {
            if let Some(b) = backup {
                let _ = fs::remove_file(b);
            }
        }
    }
    result
}

/// Removes the file or link `path` by `op`, noting it and keeping the file.
pub fn remove(path: &Path, op: impl FnOnce() -> io::Result<bool>) -> io::Result<()> {
    let Some(mut m) = model() else {
        return op().map(|_| ());
    };
    let backup = m.keep(path);
    match op() {
        Ok(true) => {
            m.data.remove(path);
            m.entries.push(Entry::Removed {
                path: path.to_owned(),
                backup,
            });
            m.event("unlink", path);
            Ok(())
        }
        other => {
            if let Some(b) = backup {
                let _ = fs::remove_file(b);
            }
            other.map(|_| ())
        }
    }
}

/// The empty directory `path`, with permission bits `mode`, was removed.
pub fn removed_dir(path: &Path, mode: u32) {
    if let Some(mut m) = model() {
        m.entries.push(Entry::RemovedDir {
            path: path.to_owned(),
            mode,
        });
        m.event("rmdir", path);
    }
}
