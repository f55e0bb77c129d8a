//! The reconciler daemon (SPEC §8): keeps every site of a fleet converged
//! from git, reacting to new commits, to changes of managed files, to
//! webhooks and to a timer. This is the only module that owns tokio,
//! timers and the HTTP server; the work itself is `apply`'s, run on
//! blocking threads under each site's lock, so `watch` and a manual
//! `apply` never collide.
//!
//! The shape is kube-runtime's controller: [`controller::reconcile`] looks
//! at one site and returns an [`controller::Action`] (when to look again),
//! and [`controller::error_policy`] turns a failure into a backoff.

pub mod controller;
pub mod fetches;
mod files;
pub mod http;
mod malloc;
pub mod metrics;
pub mod notify;
pub mod publish;
pub mod ui;

use std::net::SocketAddr;
use std::time::Duration;

use crate::load::{Diagnostic, LoadOptions};

/// How the daemon runs (from the command line).
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the fleet comes from, and `--state-dir`.
    pub load: LoadOptions,
    /// `--listen ADDR`: serve the endpoints there.
    pub listen: Option<SocketAddr>,
    /// `--interval`: every site is looked at this often (plus jitter), and
    /// the fleet and catalogs are fetched this often.
    pub interval: Duration,
    /// `--jobs`: sites reconciled at once.
    pub jobs: usize,
    /// `--webhook-secret-file`'s content, if given.
    pub webhook_secret: Option<Vec<u8>>,
    /// `--ui-token-file`'s content, if given: the dashboard's actions are
    /// enabled for whoever signs in with it.
    pub ui_token: Option<Vec<u8>>,
    /// `--ui-token-file` itself, read again on SIGHUP.
    pub ui_token_file: Option<std::path::PathBuf>,
    /// A fixed clock (`SITEKEEPER_NOW`), for tests and reviews.
    pub fixed_now: Option<jiff::Timestamp>,
    /// Only these sites (empty: all).
    pub sites: Vec<String>,
    /// `--selector`: only the sites whose labels match (SPEC §8); a host
    /// keeps state only for them.
    pub selector: Option<crate::model::Selector>,
    /// The git access options as given: read again on SIGHUP, so that a
    /// rotated key, token or CA file is used without a restart.
    pub git: crate::git::AccessOptions,
}

/// Why the daemon could not run.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The fleet does not load at start (exit 2).
    #[error("the fleet does not load")]
    Invalid(Vec<Diagnostic>),
    /// The listening address cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The runtime or a signal handler could not start.
    #[error("{0}")]
    Start(String),
}

/// Runs the daemon until SIGTERM or SIGINT; returns once in-flight changes
/// are finished or undone.
pub fn run(config: Config) -> Result<(), WatchError> {
    malloc::limit_arenas();
    // Two workers serve the endpoints and timers; the file work runs on
    // tokio's blocking pool, bounded by `--jobs`.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("sitekeeper-watch")
        .build()
        .map_err(|e| WatchError::Start(format!("cannot start the runtime: {e}")))?;
    let result = runtime.block_on(controller::Daemon::run(config));
    // A hook or health check that ignored its deadline must not keep the
    // process alive after SIGTERM: blocking threads are abandoned, and
    // their site's journal is recovered by the next command.
    runtime.shutdown_timeout(Duration::from_millis(100));
    result
}
