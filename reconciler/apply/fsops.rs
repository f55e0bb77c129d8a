//! Every file-system step of apply, rollback and recovery, numbered, so a
//! test can fail the process at step n: with an injected error (plain, or
//! one of the errors a disk gives: EIO, ENOSPC, EDQUOT, EACCES, EROFS, once
//! or from then on), or for real with SIGKILL. Failpoints are read from
//! `SITEKEEPER_FAILPOINT` only in debug builds (the test build) or with the
//! `failpoints` feature; a release build never honours them.
//!
//! The syntax is a comma-separated list of `N[:HOW][+]`: `HOW` is `error`
//! (the default), `kill`, or an errno name; `+` makes an error persistent,
//! so every step from `N` on fails the same way (a disk that stays full).
//! `3:enospc,9:kill` fails step 3, then kills the undo at its step 9.
//! `SITEKEEPER_FAILPOINT_SITES=a,b` limits them to those sites' changes.

use std::cell::Cell;
use std::io::{self, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Whether this build honours failpoints.
const ENABLED: bool = cfg!(debug_assertions) || cfg!(feature = "failpoints");

/// How a failpoint fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// An error of no particular kind.
    Error,
    /// The error the OS gives with this errno.
    Errno(i32),
    /// SIGKILL.
    Kill,
}

/// One configured failpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Failpoint {
    at: u64,
    how: Failure,
    /// Every step from `at` on fails, not only step `at`.
    persistent: bool,
}

impl Failpoint {
    /// Parses `N[:HOW][+]`.
    fn parse(s: &str) -> Option<Self> {
        let (n, how) = s.trim().split_once(':').unwrap_or((s.trim(), "error"));
        let (how, persistent) = match how.strip_suffix('+') {
            Some(how) => (how, true),
            None => (how, false),
        };
        let how = match how {
            "error" => Failure::Error,
            "kill" => Failure::Kill,
            "eio" => Failure::Errno(libc_errno::EIO),
            "enospc" => Failure::Errno(libc_errno::ENOSPC),
            "edquot" => Failure::Errno(libc_errno::EDQUOT),
            "eacces" => Failure::Errno(libc_errno::EACCES),
            "erofs" => Failure::Errno(libc_errno::EROFS),
            _ => return None,
        };
        Some(Self {
            at: n.parse().ok()?,
            how,
            persistent,
        })
    }

    fn fires(&self, n: u64) -> bool {
        n == self.at || (self.persistent && n > self.at)
    }
}

/// The errno values failpoints inject (Linux numbering, from rustix).
mod libc_errno {
    use rustix::io::Errno;
    pub const EIO: i32 = Errno::IO.raw_os_error();
    pub const ENOSPC: i32 = Errno::NOSPC.raw_os_error();
    pub const EDQUOT: i32 = Errno::DQUOT.raw_os_error();
    pub const EACCES: i32 = Errno::ACCESS.raw_os_error();
    pub const EROFS: i32 = Errno::ROFS.raw_os_error();
}

/// An error injected at a step: the OS error it stands for is its source.
#[derive(Debug)]
struct Injected {
    what: String,
    n: u64,
    os: io::Error,
}

impl std::fmt::Display for Injected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (failpoint {}): {}", self.what, self.n, self.os)
    }
}

impl std::error::Error for Injected {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.os)
    }
}

/// Where the step numbers come from.
#[derive(Debug, Clone)]
enum Counter {
    /// One site's change, alone in its process.
    Own(Cell<u64>),
    /// Every site of a group commit (`apply/group.rs`) numbers its steps
    /// on one counter, with the group's own barriers, so a test can fail
    /// the process at each step of the whole batch.
    Shared(Arc<AtomicU64>),
}

impl Counter {
    /// The next number.
    fn next(&self) -> u64 {
        match self {
            Counter::Own(n) => {
                n.set(n.get() + 1);
                n.get()
            }
            Counter::Shared(n) => n.fetch_add(1, Ordering::SeqCst) + 1,
        }
    }
}

/// Counts steps and fails the configured ones.
#[derive(Debug)]
pub struct Steps {
    n: Counter,
    fail: Vec<Failpoint>,
    trace: Option<std::path::PathBuf>,
    /// Set when the daemon is stopping: the next step fails, and the
    /// transaction is undone like any failed one.
    cancel: Option<Arc<AtomicBool>>,
}

impl Steps {
    /// Steps configured from the environment.
    pub fn from_env() -> Self {
        let fail = if ENABLED {
            std::env::var("SITEKEEPER_FAILPOINT")
                .map(|s| s.split(',').filter_map(Failpoint::parse).collect())
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        let trace = if ENABLED {
            std::env::var_os("SITEKEEPER_FAILPOINT_TRACE").map(Into::into)
        } else {
            None
        };
        Self {
            n: Counter::Own(Cell::new(0)),
            fail,
            trace,
            cancel: None,
        }
    }

    /// [`Steps::from_env`], numbered on `counter`, which every site of a
    /// group commit shares.
    pub fn from_env_shared(counter: Arc<AtomicU64>) -> Self {
        Self {
            n: Counter::Shared(counter),
            ..Self::from_env()
        }
    }

    /// These steps for `site`: with `SITEKEEPER_FAILPOINT_SITES` set (a
    /// comma-separated list of sites), only the listed sites' steps fail,
    /// so a test can give one site of a daemon's many a failing disk.
    pub fn for_site(mut self, site: &str) -> Self {
        if ENABLED
            && let Ok(sites) = std::env::var("SITEKEEPER_FAILPOINT_SITES")
            && !sites.split(',').any(|s| s == site)
        {
            self.fail.clear();
        }
        self
    }

    /// These steps, failing from the first one after `cancel` is set.
    pub fn cancellable(mut self, cancel: Option<Arc<AtomicBool>>) -> Self {
        self.cancel = cancel;
        self
    }

    /// Steps that never fail.
    pub fn none() -> Self {
        Self {
            n: Counter::Own(Cell::new(0)),
            fail: Vec::new(),
            trace: None,
            cancel: None,
        }
    }

    /// The steps of undoing what these steps did: numbered on from here, so
    /// a test can fail the undo too (and a persistent fault goes on failing
    /// it, as a full disk would), but never cancelled: an undo is what a
    /// stopping daemon waits for.
    pub fn undoing(&self) -> Self {
        let n = match &self.n {
            Counter::Own(n) => Counter::Own(Cell::new(n.get())),
            // A shared count goes on being shared: the other sites' steps
            // go on too.
            Counter::Shared(n) => Counter::Shared(Arc::clone(n)),
        };
        Self {
            n,
            fail: self.fail.clone(),
            trace: self.trace.clone(),
            cancel: None,
        }
    }

    /// Marks the next step, named `what`; fails it if it is a configured one.
    pub fn step(&self, what: &str) -> io::Result<()> {
        let n = self.n.next();
        if let Some(path) = &self.trace
            && let Ok(mut f) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
        {
            let _ = writeln!(f, "{n} {what}");
        }
        if self
            .cancel
            .as_ref()
            .is_some_and(|c| c.load(Ordering::SeqCst))
        {
            return Err(io::Error::new(
                io::ErrorKind::Interrupted,
                "interrupted: sitekeeper is stopping",
            ));
        }
        match self.fail.iter().find(|f| f.fires(n)).map(|f| f.how) {
            None => Ok(()),
            Some(Failure::Error) => Err(io::Error::other(format!("failpoint {n} ({what})"))),
            Some(Failure::Errno(code)) => {
                // Keep the kind and the errno (what callers and messages
                // look at) and say which step met it.
                let os = io::Error::from_raw_os_error(code);
                Err(io::Error::new(
                    os.kind(),
                    Injected {
                        what: what.to_owned(),
                        n,
                        os,
                    },
                ))
            }
            Some(Failure::Kill) => {
                let _ = rustix::process::kill_process(
                    rustix::process::getpid(),
                    rustix::process::Signal::KILL,
                );
                // SIGKILL cannot be caught; this is never reached.
                std::process::abort()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failpoints_parse_with_their_kind_and_persistence() {
        let f = Failpoint::parse("12:enospc+").unwrap();
        assert_eq!(f.at, 12);
        assert!(f.persistent);
        assert!(!f.fires(11) && f.fires(12) && f.fires(40));
        let once = Failpoint::parse("3:eio").unwrap();
        assert!(once.fires(3) && !once.fires(4));
        assert_eq!(Failpoint::parse("7").unwrap().how, Failure::Error);
        assert_eq!(Failpoint::parse("7:kill").unwrap().how, Failure::Kill);
        assert!(Failpoint::parse("7:bogus").is_none());
        assert!(Failpoint::parse("x:eio").is_none());
    }

    #[test]
    fn an_injected_errno_keeps_its_kind_and_an_undo_counts_on() {
        let steps = Steps {
            n: Counter::Own(Cell::new(0)),
            fail: vec![
                Failpoint::parse("2:enospc").unwrap(),
                Failpoint::parse("4:erofs+").unwrap(),
            ],
            trace: None,
            cancel: Some(Arc::new(AtomicBool::new(false))),
        };
        assert!(steps.step("a").is_ok());
        let e = steps.step("rename").unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::StorageFull);
        assert!(e.to_string().contains("rename (failpoint 2)"), "{e}");
        assert!(
            crate::store::plain(&e).contains("the file system is full"),
            "{}",
            crate::store::plain(&e)
        );
        let undo = steps.undoing();
        assert!(undo.cancel.is_none());
        assert!(undo.step("b").is_ok(), "step 3 is not a failpoint");
        assert_eq!(
            undo.step("c").unwrap_err().kind(),
            io::ErrorKind::ReadOnlyFilesystem
        );
        assert_eq!(
            undo.step("d").unwrap_err().kind(),
            io::ErrorKind::ReadOnlyFilesystem
        );
    }
}
