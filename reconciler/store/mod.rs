//! A site's state on disk (SPEC §5): the lock, the applied-patch ledger,
//! the rollback points, the quarantine and the progress report, under
//! `<state_dir>/<site>/`.
//!
//! The store owns the state dir: [`SiteState`] names every file of a site's
//! state (nothing else spells `status.json` or `quarantine.json`), and
//! [`StateDir`] the entries shared by all sites (it and the one atomic
//! writer sit below `load`, which uses both, and are re-exported here).
//!
//! The store never touches the site's own files; that is [`crate::confined`]
//! for reading and `apply` for writing. Everything here is append-only,
//! content-addressed or replaced atomically, so a crash can lose at most
//! the record being written.

pub mod data;
pub mod failure;
pub mod incomplete;
pub mod ledger;
pub mod lock;
pub mod outbox;
pub mod pack;
pub mod points;
pub mod progress;
pub mod quarantine;

use std::path::{Path, PathBuf};

/// The one atomic writer (see [`crate::atomic`] for why it lives below
/// `load`); the state dir's files are written through it.
pub use crate::atomic::{
    Durability, atomic_write, atomic_write_keep_mode, remove_durably, remove_temps, sync_dir,
};
pub use data::{DataSnapshots, Manifest};
pub use failure::FailureMarker;
pub use incomplete::{ChangePhase, IncompleteChange};
pub use ledger::{By, Ledger, LedgerKind, LedgerResult, Record, Verdicts, verdicts};
pub use lock::SiteLock;
pub use outbox::{Event, Outbox, Queued};
pub use points::{
    Health, PointKind, PointMeta, PointResult, Points, Prepared, Snapshot, SnapshotEntry,
};
pub use progress::Progress;
pub use quarantine::Quarantine;

/// The state dir's shared entries (see [`crate::statedir`] for why it
/// lives below `load`).
pub use crate::statedir::StateDir;

/// Sets libgit2's process-wide options, once; every command calls it
/// before it touches a repository.
///
/// * fsync what it writes into a repository (objects, refs and their
///   directories): a point's ref is the commit step of every change, so it
///   must be on disk before the ledger says so, and libgit2, like git, does
///   not fsync by default;
/// * map packs in small windows, and few at a time: reading a release out
///   of a large catalog pack would otherwise leave every page it touched in
///   the process's memory, hundreds of MiB for a large site;
/// * keep no object cache: sitekeeper reads each tree once (a release's
///   listing, a point's) and keeps what it needs, so libgit2's cache of
///   parsed trees only doubled that (32 MiB of an upgrade of 100,000 files).
pub fn configure_libgit2() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // Initialises libgit2 (and sets what is already its default).
        git2::opts::strict_object_creation(true);
        git2::opts::enable_caching(false);
        // SAFETY: libgit2 is initialised above; this option takes one int
        // and only sets a global flag that libgit2 reads on later writes.
        let rc = unsafe {
            libgit2_sys::git_libgit2_opts(
                libgit2_sys::GIT_OPT_ENABLE_FSYNC_GITDIR as std::ffi::c_int,
                1 as std::ffi::c_int,
            )
        };
        debug_assert_eq!(rc, 0, "libgit2 refused GIT_OPT_ENABLE_FSYNC_GITDIR");
        // SAFETY: these set global sizes before any repository is open in
        // this process (`Once`, and every entry point calls this first);
        // libgit2 reads them when it next maps a window.
        unsafe {
            let _ = git2::opts::set_mwindow_size(MWINDOW_SIZE);
            let _ = git2::opts::set_mwindow_mapped_limit(MWINDOW_MAPPED_LIMIT);
        }
    });
}

/// How much of a pack libgit2 maps at once (its default is 1 GiB).
const MWINDOW_SIZE: usize = 4 << 20;

/// How much of all packs libgit2 keeps mapped (its default is 8 GiB).
const MWINDOW_MAPPED_LIMIT: usize = 12 << 20;

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file-system error on a state file.
    #[error("{path}: {}", plain(source))]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A git error in `points.git`.
    #[error("{path}: {source}")]
    Git {
        /// The repository.
        path: PathBuf,
        /// The error.
        source: git2::Error,
    },
    /// A state file holds something sitekeeper did not write.
    #[error("{path}:{line}: {message}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

/// An I/O error in words a site owner understands: the system's message,
/// then what it means for the site and what to do. The errno is looked for
/// along the error's source chain, so a wrapped error explains itself too.
pub fn plain(e: &std::io::Error) -> String {
    let mut code = e.raw_os_error();
    let mut inner: Option<&(dyn std::error::Error + 'static)> = e.get_ref().map(|i| i as _);
    while code.is_none()
        && let Some(i) = inner
    {
        code = i
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::raw_os_error);
        inner = i.source();
    }
    use rustix::io::Errno;
    let meaning = match code.map(Errno::from_raw_os_error) {
        Some(Errno::NOSPC) => {
            "the file system is full (hint: free space on it, then run the command again)"
        }
        Some(Errno::DQUOT) => {
            "the disk quota of this user is used up (hint: free space or raise the quota, then run the command again)"
        }
        Some(Errno::ACCESS | Errno::PERM) => {
            "permission denied (hint: run sitekeeper as the user that owns the site and its state directory)"
        }
        Some(Errno::ROFS) => {
            "the file system is mounted read-only (hint: remount it read-write, then run the command again)"
        }
        Some(Errno::IO) => {
            "the disk reported an input/output error (hint: check the disk and the kernel log, `dmesg`, before trying again)"
        }
        _ => return e.to_string(),
    };
    format!("{e}: {meaning}")
}

pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The state directory of one site, and the name of every file in it.
#[derive(Debug, Clone)]
pub struct SiteState {
    dir: PathBuf,
}

impl SiteState {
    /// The state of `site` under `state_dir` (nothing is created yet).
    pub fn new(state_dir: &Path, site: &str) -> Self {
        Self {
            dir: StateDir::new(state_dir).site(site),
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the site has been adopted (it has a first rollback point).
    pub fn is_adopted(&self) -> bool {
        self.points_path().is_dir()
    }

    /// Creates the directory if needed.
    pub fn create(&self) -> Result<(), StoreError> {
        std::fs::create_dir_all(&self.dir).map_err(io(&self.dir))
    }

    /// Takes the site's lock, waiting for it unless `wait` is false
    /// (then `Ok(None)` when someone else holds it).
    pub fn lock(&self, wait: bool) -> Result<Option<SiteLock>, StoreError> {
        self.create()?;
        SiteLock::acquire(&self.dir.join("lock"), wait)
    }

    /// The ledger.
    pub fn ledger(&self) -> Ledger {
        Ledger::new(self.dir.join("ledger.jsonl"))
    }

    /// The rollback points, created if absent.
    pub fn points(&self) -> Result<Points, StoreError> {
        self.create()?;
        Points::open_or_init(&self.points_path())
    }

    /// The rollback points, if the site has any.
    pub fn existing_points(&self) -> Result<Option<Points>, StoreError> {
        if self.is_adopted() {
            Points::open_or_init(&self.points_path()).map(Some)
        } else {
            Ok(None)
        }
    }

    /// The bare repository of the rollback points (`points.git`).
    pub fn points_path(&self) -> PathBuf {
        self.dir.join("points.git")
    }

    /// Where the site index lives ([`crate::inventory::index`]): stat data
    /// and hashes of the site's files, and the last point's file list.
    pub fn index_path(&self) -> PathBuf {
        self.dir.join("index.bin")
    }

    /// The two caches the index replaced (the stat cache and the last
    /// point's file list), removed once the index is written.
    pub fn superseded_caches(&self) -> [PathBuf; 2] {
        [
            self.dir.join("statcache.bin"),
            self.points_path().with_file_name("pointfiles.bin"),
        ]
    }

    /// The journal of the change in flight (`journal/txn.json`).
    pub fn journal_path(&self) -> PathBuf {
        self.dir.join("journal").join("txn.json")
    }

    /// The progress report, `status.json` ([`Progress`]).
    pub fn progress_path(&self) -> PathBuf {
        self.dir.join("status.json")
    }

    /// The quarantine, `quarantine.json` ([`Quarantine`]).
    pub fn quarantine_path(&self) -> PathBuf {
        self.dir.join("quarantine.json")
    }

    /// The daemon's memory of what it notified (SPEC §9), `notified.json`.
    pub fn notified_path(&self) -> PathBuf {
        self.dir.join("notified.json")
    }

    /// The daemon's memory of upgrade notices, `notices.json`.
    pub fn notices_path(&self) -> PathBuf {
        self.dir.join("notices.json")
    }

    /// The output of the site's hooks, `hooks.log`.
    pub fn hooks_log(&self) -> PathBuf {
        self.dir.join("hooks.log")
    }

    /// The screenshots of the last change's `visual` checks (SPEC §2.1),
    /// `health/`: replaced by each change that has such checks.
    pub fn health_dir(&self) -> PathBuf {
        self.dir.join("health")
    }

    /// One of those screenshots: page check `check` (its index in
    /// `health.checks`) `before` or `after` the change, or the `diff`
    /// drawn between them, `health/check-<n>-<stage>.png`.
    pub fn health_shot(&self, check: usize, stage: &str) -> PathBuf {
        self.health_dir().join(format!("check-{check}-{stage}.png"))
    }

    /// The failure marker, `failure.json` ([`FailureMarker`]).
    pub fn failure_path(&self) -> PathBuf {
        self.dir.join("failure.json")
    }

    /// The record of a change that runs migrations, `journal/change.json`
    /// ([`IncompleteChange`]).
    pub fn incomplete_path(&self) -> PathBuf {
        self.dir.join("journal").join("change.json")
    }

    /// The data snapshots, `data/` ([`DataSnapshots`]).
    pub fn data(&self) -> DataSnapshots {
        DataSnapshots::new(self.dir.join("data"))
    }
}

/// Reads a JSON record written by [`write_record`]: absent is `None`; a
/// file that cannot be read or parsed is an error, never "absent", since
/// each such record stops something unsafe from happening.
fn read_record<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, StoreError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(path)(e)),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| StoreError::Corrupt {
            path: path.to_owned(),
            line: e.line(),
            message: format!("damaged: {e} (hint: it was not written by sitekeeper; restore it from a backup or remove it once you know the site is sound)"),
        })
}

/// Writes a JSON record durably (file fsync, rename, directory fsync).
fn write_record<T: serde::Serialize>(path: &Path, value: &T) -> Result<(), StoreError> {
    let text = serde_json::to_vec_pretty(value).map_err(|e| StoreError::Corrupt {
        path: path.to_owned(),
        line: 0,
        message: e.to_string(),
    })?;
    atomic_write(path, &text, Durability::Durable).map_err(io(path))
}

/// Removes a record durably; `false` when there was none.
fn remove_record(path: &Path) -> Result<bool, StoreError> {
    let existed = path.exists();
    remove_durably(path).map_err(io(path))?;
    Ok(existed)
}

/// Runs the `git` binary in `dir` for a test, asserting success; returns
/// its standard output. The real git checks what sitekeeper writes.
#[cfg(test)]
fn test_git(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}
