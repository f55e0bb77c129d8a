//! Group commit across sites: the barriers at which a batch of
//! independent site transactions makes what it wrote durable together,
//! one `syncfs(2)` per file system (or one fsync pass) per phase instead of
//! each site's own fsyncs. It orders durability and nothing else: each
//! site keeps its own journal, lock, commit step and recovery
//! (`apply/txn/phased.rs` says which phase needs what).
//!
//! Why one `syncfs` stands in for the fsyncs it replaces:
//!
//! * `syncfs(fd)` writes back every dirty page and inode of the file
//!   system `fd` is on and commits its journal with a cache flush (ext4's
//!   and XFS's `sync_fs` wait for both), so after it returns every write,
//!   create, rename and unlink made on that file system before the call is
//!   durable, as if each file and directory had been fsynced. It says
//!   nothing about other file systems: the state dir and the sites' roots
//!   may each be on their own, so every file system a phase wrote to, told
//!   apart by `st_dev`, gets its own `syncfs`.
//! * It reports write-back errors only since Linux 5.8, and only those
//!   that happened after the descriptor it is called on was opened (the
//!   superblock's `errseq`, sampled at `open`). So the mode is `syncfs`
//!   only on Linux 5.8 or later, and the descriptor of each file system
//!   is opened when the first site on it joins the group, before that
//!   site writes anything, and kept for the whole run. Older kernels, and
//!   `SITEKEEPER_GROUP_SYNC=fsync`, get the fsync pass instead: every
//!   file and directory each phase named, fsynced by many threads at
//!   once (the file system merges their journal commits).
//! * An error is not pinned to a file: a failed `syncfs` fails the phase
//!   for every site in the group, and each is undone by its own recovery
//!   (its journal, as after any failed step). It may also report an error
//!   of another program writing to the same file system: a false failure,
//!   never a false success.
//! * It also writes back what other programs left dirty on the same file
//!   system, which a busy host pays for; the fsync pass does not.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::{Barrier, Mutex, PoisonError};

use rayon::prelude::*;

use super::fsops::Steps;
use crate::confined::Root;

/// How a phase's writes are made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// One `syncfs` per file system written to.
    SyncFs,
    /// An fsync of each file and directory, many at once.
    Fsync,
}

impl SyncMode {
    /// `SITEKEEPER_GROUP_SYNC` (`syncfs` or `fsync`) when set, else
    /// `syncfs` where the kernel reports its errors (5.8 or later).
    pub fn choose() -> Self {
        let asked_fsync = std::env::var("SITEKEEPER_GROUP_SYNC").is_ok_and(|v| v == "fsync");
        if asked_fsync || !syncfs_reports_errors() {
            SyncMode::Fsync
        } else {
            SyncMode::SyncFs
        }
    }
}

/// Whether this kernel's `syncfs` returns write-back errors (Linux 5.8,
/// commit 735e4ae5ba28); before it, it returned 0 whatever happened.
fn syncfs_reports_errors() -> bool {
    let uname = rustix::system::uname();
    let release = uname.release().to_string_lossy();
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse::<u32>().ok());
    match (parts.next(), parts.next()) {
        (Some(major), Some(minor)) => (major, minor) >= (5, 8),
        _ => false,
    }
}

/// Something one site's phase wrote that must be durable before its next
/// phase: used by the fsync pass (a `syncfs` covers all of them at once).
#[derive(Debug, Clone)]
pub enum Durable {
    /// A regular file under the site's root (its data).
    SiteFile(String),
    /// A directory under the site's root (its entries); `""` is the root.
    SiteDir(String),
    /// A file in the state dir (its data).
    StateFile(PathBuf),
    /// A directory in the state dir (its entries).
    StateDir(PathBuf),
}

/// What one site's phase asks of the barrier.
#[derive(Debug, Default)]
pub struct Wants {
    /// What it wrote, for the fsync pass.
    pub items: Vec<Durable>,
}

impl Wants {
    /// Adds `item`.
    pub fn add(&mut self, item: Durable) {
        self.items.push(item);
    }
}

/// The barriers of one batch of sites run by `workers` threads.
pub struct Group {
    mode: SyncMode,
    /// One descriptor per file system a site joined with, opened before
    /// that site wrote anything (see the module doc on `errseq`).
    devs: Mutex<BTreeMap<u64, File>>,
    /// The file systems written to in the current phase.
    touched: Mutex<BTreeSet<u64>>,
    workers: Barrier,
    /// The current barrier's outcome, read by every worker.
    outcome: Mutex<Result<(), (io::ErrorKind, String)>>,
    /// The barriers are numbered steps, on the sites' shared counter, so
    /// a test can fail or kill the process at each of them.
    steps: Mutex<Steps>,
    /// Calls made, for tests and `--verbose` reports.
    calls: Mutex<(u64, u64)>,
}

impl std::fmt::Debug for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Group").field("mode", &self.mode).finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Group {
    /// A group of `workers` threads, its barriers numbered by `steps`.
    pub fn new(workers: usize, mode: SyncMode, steps: Steps) -> Self {
        Self {
            mode,
            devs: Mutex::default(),
            touched: Mutex::default(),
            workers: Barrier::new(workers.max(1)),
            outcome: Mutex::new(Ok(())),
            steps: Mutex::new(steps),
            calls: Mutex::default(),
        }
    }

    /// The mode.
    pub fn mode(&self) -> SyncMode {
        self.mode
    }

    /// A site joins with the directories it will write under (its root
    /// and its state dir), before it writes: the first one on each file
    /// system keeps a descriptor for that file system's `syncfs`. Returns
    /// the file systems, to pass to [`Group::touch`].
    pub fn join(&self, root: &Root, state_dir: &Path) -> io::Result<Vec<u64>> {
        if self.mode == SyncMode::Fsync {
            return Ok(Vec::new());
        }
        let root_fd = File::from(root.dir("")?);
        let state_fd = File::open(state_dir)?;
        let mut devs = lock(&self.devs);
        let mut out = Vec::new();
        for fd in [root_fd, state_fd] {
            let dev = rustix::fs::fstat(fd.as_fd())?.st_dev;
            out.push(dev);
            devs.entry(dev).or_insert(fd);
        }
        Ok(out)
    }

    /// Notes that this phase wrote to the file systems `devs`.
    pub fn touch(&self, devs: &[u64]) {
        lock(&self.touched).extend(devs.iter().copied());
    }

    /// `(syncfs calls, fsync calls)` made by the barriers so far.
    pub fn calls(&self) -> (u64, u64) {
        *lock(&self.calls)
    }

    /// The barrier ending a phase, called by every worker once per phase.
    /// The fsync pass runs first, on each worker's own sites (`pass`:
    /// each site's root and what it wants; its result is per site); then
    /// the workers meet, and one of them makes the phase durable with one
    /// `syncfs` per file system touched. Returns the per-site results of
    /// the pass, each also failed if the barrier's own sync failed.
    pub fn barrier(&self, what: &str, pass: &[(&Root, &Wants)]) -> Vec<io::Result<()>> {
        let mut results: Vec<io::Result<()>> = match self.mode {
            SyncMode::Fsync => fsync_pass(pass, &self.calls),
            SyncMode::SyncFs => pass.iter().map(|_| Ok(())).collect(),
        };
        if self.workers.wait().is_leader() {
            let outcome = self.lead(what);
            *lock(&self.outcome) = outcome;
        }
        self.workers.wait();
        let outcome = lock(&self.outcome).clone();
        if let Err((kind, message)) = outcome {
            for r in results.iter_mut().filter(|r| r.is_ok()) {
                *r = Err(io::Error::new(kind, message.clone()));
            }
        }
        // Nobody reads the outcome again before every worker has passed
        // the next barrier's first wait, where the next leader writes it.
        results
    }

    /// The leader's part: the numbered step, then one `syncfs` per file
    /// system touched in this phase.
    fn lead(&self, what: &str) -> Result<(), (io::ErrorKind, String)> {
        let failed = |e: io::Error| (e.kind(), format!("{what}: {e}"));
        lock(&self.steps).step(what).map_err(failed)?;
        let touched = std::mem::take(&mut *lock(&self.touched));
        if self.mode != SyncMode::SyncFs {
            return Ok(());
        }
        let devs = lock(&self.devs);
        for dev in touched {
            let Some(fd) = devs.get(&dev) else {
                // Every site joins before it writes, so every file system
                // written to has its descriptor; a missing one would leave
                // writes undurable, so it is an error, not a skip.
                return Err((
                    io::ErrorKind::Other,
                    format!("{what}: file system {dev} was written to without joining the group"),
                ));
            };
            rustix::fs::syncfs(fd).map_err(|e| failed(e.into()))?;
            lock(&self.calls).0 += 1;
            if crate::durability::active() {
                crate::durability::synced_fs(dev);
            }
        }
        Ok(())
    }
}

/// The fsync pass: every item of every site, fsynced by up to
/// [`SYNC_THREADS`] threads at once. One result per site.
fn fsync_pass(pass: &[(&Root, &Wants)], calls: &Mutex<(u64, u64)>) -> Vec<io::Result<()>> {
    let items: Vec<(usize, &Root, &Durable)> = pass
        .iter()
        .enumerate()
        .flat_map(|(i, (root, wants))| wants.items.iter().map(move |d| (i, *root, d)))
        .collect();
    lock(calls).1 += items.len() as u64;
    let errors: Mutex<BTreeMap<usize, io::Error>> = Mutex::default();
    let _ = in_parallel(&items, |(i, root, item)| {
        if let Err(e) = sync_one(root, item) {
            lock(&errors).entry(*i).or_insert(e);
        }
        Ok(())
    });
    let mut errors = errors.into_inner().unwrap_or_else(PoisonError::into_inner);
    (0..pass.len())
        .map(|i| errors.remove(&i).map_or(Ok(()), Err))
        .collect()
}

fn sync_one(root: &Root, item: &Durable) -> io::Result<()> {
    let named = |path: &Path, e: io::Error| {
        io::Error::new(e.kind(), format!("{}: fsync: {e}", path.display()))
    };
    match item {
        Durable::SiteFile(rel) => root
            .sync_file(rel)
            .map_err(|e| io::Error::new(e.kind(), format!("{rel}: fsync: {e}"))),
        Durable::SiteDir(rel) => match root.sync_dir(rel) {
            // A directory that never came to exist (a delete in it) has
            // nothing to sync.
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            r => r.map_err(|e| io::Error::new(e.kind(), format!("{rel}/: fsync: {e}"))),
        },
        Durable::StateFile(path) => {
            File::open(path)
                .and_then(|f| f.sync_all())
                .map_err(|e| named(path, e))?;
            if crate::durability::active() {
                crate::durability::synced_file(&crate::durability::real(path));
            }
            Ok(())
        }
        Durable::StateDir(path) => crate::store::sync_dir(path).map_err(|e| named(path, e)),
    }
}

/// Threads that wait on the disk at once. An fsync mostly waits for the
/// device; issued together, the file system commits them in shared
/// journal transactions (ext4, xfs), so N flushes cost far less than N
/// times one. Measured on this project's 2-core VM, see README
/// "Performance".
pub(crate) const SYNC_THREADS: usize = 16;

/// Runs `f` on every item with up to [`SYNC_THREADS`] threads and returns
/// the first error (in item order), after all have finished.
///
/// A pool of its own, not rayon's global one: that has a thread per core
/// for hashing, and a core waiting on the disk is not busy.
pub(crate) fn in_parallel<T: Sync, F>(items: &[T], f: F) -> io::Result<()>
where
    F: Fn(&T) -> io::Result<()> + Sync,
{
    if items.len() < 2 {
        return items.iter().try_for_each(&f);
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(SYNC_THREADS.min(items.len()))
        .thread_name(|i| format!("fsync-{i}"))
        .build()
        .map_err(io::Error::other)?;
    // `map` + `collect` runs every item (no short cut on an error, nor on
    // a panic, which is caught per item), and `install` returns only once
    // all have, so no fsync is still running.
    let one = |item: &T| {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(item)))
            .unwrap_or_else(|_| Err(io::Error::other("fsync thread panicked")))
    };
    pool.install(|| items.par_iter().map(one).collect::<Vec<_>>())
        .into_iter()
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Condvar, Mutex};
    use std::time::Duration;

    use super::*;

    /// The flushes are issued together: every one of [`SYNC_THREADS`]
    /// items waits until all of them are running at once.
    #[test]
    fn sync_threads_items_run_at_once() {
        let items: Vec<usize> = (0..SYNC_THREADS).collect();
        let running = (Mutex::new(0), Condvar::new());
        in_parallel(&items, |i| {
            let (count, all_in) = &running;
            let mut count = count.lock().unwrap();
            *count += 1;
            all_in.notify_all();
            let (count, waited) = all_in
                .wait_timeout_while(count, Duration::from_secs(30), |c| *c < SYNC_THREADS)
                .unwrap();
            if waited.timed_out() {
                return Err(io::Error::other(format!("item {i}: only {count} at once")));
            }
            Ok(())
        })
        .unwrap();
    }

    /// An error or a panic stops nothing: every item runs, and the first
    /// error in item order is the one reported.
    #[test]
    fn every_item_runs_and_the_first_error_is_reported() {
        let items: Vec<usize> = (0..40).collect();
        let ran = AtomicUsize::new(0);
        let result = in_parallel(&items, |&i| {
            ran.fetch_add(1, Ordering::Relaxed);
            match i {
                7 | 30 => Err(io::Error::other(format!("item {i}"))),
                20 => panic!("item 20"),
                _ => Ok(()),
            }
        });
        assert_eq!(result.unwrap_err().to_string(), "item 7");
        assert_eq!(ran.load(Ordering::Relaxed), items.len());

        let ran = AtomicUsize::new(0);
        let result = in_parallel(&items, |&i| {
            ran.fetch_add(1, Ordering::Relaxed);
            if i == 3 {
                panic!("item 3");
            }
            Ok(())
        });
        assert_eq!(result.unwrap_err().to_string(), "fsync thread panicked");
        assert_eq!(ran.load(Ordering::Relaxed), items.len());
    }

    #[test]
    fn kernel_versions_parse() {
        // This machine's kernel is new enough; the parse itself is what
        // could break.
        assert!(syncfs_reports_errors());
    }

    /// Two workers meet at each barrier; one `syncfs` covers both sites on
    /// one file system; a failing barrier step fails every site.
    #[test]
    fn workers_meet_and_one_syncfs_covers_the_file_system() {
        let dir = tempfile::tempdir().unwrap();
        for site in ["a", "b"] {
            std::fs::create_dir_all(dir.path().join(site)).unwrap();
        }
        let group = Group::new(2, SyncMode::SyncFs, Steps::none());
        std::thread::scope(|s| {
            for site in ["a", "b"] {
                let (group, dir) = (&group, dir.path());
                s.spawn(move || {
                    let root = Root::open(&dir.join(site)).unwrap();
                    let devs = group.join(&root, dir).unwrap();
                    root.create_unsynced("f", b"x", 0o644, false).unwrap();
                    group.touch(&devs);
                    let wants = Wants::default();
                    let r = group.barrier("phase", &[(&root, &wants)]);
                    assert!(r.iter().all(Result::is_ok));
                });
            }
        });
        assert_eq!(group.calls(), (1, 0), "one syncfs for one file system");

        let fsync = Group::new(1, SyncMode::Fsync, Steps::none());
        let root = Root::open(&dir.path().join("a")).unwrap();
        let mut wants = Wants::default();
        wants.add(Durable::SiteFile("f".into()));
        wants.add(Durable::SiteDir(String::new()));
        wants.add(Durable::SiteFile("missing".into()));
        let r = fsync.barrier("phase", &[(&root, &wants)]);
        assert!(r[0].as_ref().unwrap_err().to_string().contains("missing"));
        assert_eq!(fsync.calls(), (0, 3));
    }
}
