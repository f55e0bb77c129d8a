//! Every file-system step of apply, rollback and recovery, numbered, so a
//! test can stop the process at step n: with an injected error, or for real
//! with SIGKILL. Failpoints are read from `SITEKEEPER_FAILPOINT` (`N` or
//! `N:kill`) only in debug builds (the test build) or with the `failpoints`
//! feature; a release build never honours them.

use std::cell::Cell;
use std::io::{self, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Whether this build honours failpoints.
const ENABLED: bool = cfg!(debug_assertions) || cfg!(feature = "failpoints");

/// How a failpoint fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    Error,
    Kill,
}

/// Counts steps and fails the configured one.
#[derive(Debug)]
pub struct Steps {
    n: Cell<u64>,
    fail_at: Option<(u64, Failure)>,
    trace: Option<std::path::PathBuf>,
    /// Set when the daemon is stopping: the next step fails, and the
    /// transaction is undone like any failed one.
    cancel: Option<Arc<AtomicBool>>,
}

impl Steps {
    /// Steps configured from the environment.
    pub fn from_env() -> Self {
        let fail_at = if ENABLED {
            std::env::var("SITEKEEPER_FAILPOINT").ok().and_then(|s| {
                let (n, how) = s.split_once(':').unwrap_or((&s, "error"));
                let how = if how == "kill" {
                    Failure::Kill
                } else {
                    Failure::Error
                };
                n.parse().ok().map(|n| (n, how))
            })
        } else {
            None
        };
        let trace = if ENABLED {
            std::env::var_os("SITEKEEPER_FAILPOINT_TRACE").map(Into::into)
        } else {
            None
        };
        Self {
            n: Cell::new(0),
            fail_at,
            trace,
            cancel: None,
        }
    }

    /// These steps, failing from the first one after `cancel` is set.
    pub fn cancellable(mut self, cancel: Option<Arc<AtomicBool>>) -> Self {
        self.cancel = cancel;
        self
    }

    /// Steps that never fail.
    pub fn none() -> Self {
        Self {
            n: Cell::new(0),
            fail_at: None,
            trace: None,
            cancel: None,
        }
    }

    /// Marks the next step, named `what`; fails it if it is the configured one.
    pub fn step(&self, what: &str) -> io::Result<()> {
        let n = self.n.get() + 1;
        self.n.set(n);
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
        match self.fail_at {
            Some((at, Failure::Error)) if at == n => {
                Err(io::Error::other(format!("failpoint {n} ({what})")))
            }
            Some((at, Failure::Kill)) if at == n => {
                let _ = rustix::process::kill_process(
                    rustix::process::getpid(),
                    rustix::process::Signal::KILL,
                );
                // SIGKILL cannot be caught; this is never reached.
                std::process::abort()
            }
            _ => Ok(()),
        }
    }
}
