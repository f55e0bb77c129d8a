//! Operations an operator asks for on the dashboard that change a site's
//! files (a rollback to a point), run by the loop like a reconcile: never
//! while the site is being reconciled, on a blocking thread under the
//! site's lock, and with the file events that follow taken for the echo of
//! its own writes, so the daemon does not start a reconcile because of
//! them. Each answers the request that asked, through a oneshot channel.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::daemon::Daemon;
use super::finished::ECHO_WINDOW;
use super::{Shared, look};
use crate::apply::clock::Clock;
use crate::apply::converge::{self, ApplyError, Options, Outcome};
use crate::observe::status::SiteStatus;
use crate::plan::Held;

/// What the dashboard asks the loop to do.
#[derive(Debug)]
pub enum Op {
    /// Roll `site` back to point `to` (`by.via: ui`).
    Rollback {
        /// The site.
        site: String,
        /// The point.
        to: u64,
        /// Where the outcome goes.
        reply: oneshot::Sender<Result<Outcome, ApplyError>>,
    },
}

/// An operation that finished, back in the loop.
pub(super) struct OpDone {
    site: String,
    result: Result<Outcome, ApplyError>,
    /// The site as it is afterwards (when it could be read).
    looked: Option<(SiteStatus, Vec<Held>)>,
    reply: oneshot::Sender<Result<Outcome, ApplyError>>,
}

/// Runs a rollback on the calling (blocking) thread, then looks at the
/// site without acting, so its view shows what the rollback left.
fn roll_back(shared: &Shared, site: &str, to: u64) -> Ran {
    let fleet = shared.fleet();
    let Some(loaded) = fleet.site(site) else {
        return (
            Err(ApplyError::Invalid {
                site: site.to_owned(),
                detail: "it is no longer in the fleet".into(),
            }),
            None,
        );
    };
    let now = shared.now();
    let opts = Options {
        via: "ui",
        // A change in flight (a manual `apply`) makes it busy at once,
        // rather than holding the operator's request until it ends.
        wait: false,
        saved: None,
        forced: None,
        forced_fix: None,
        clock: Clock::starting(now),
        state_dir: &shared.state_dir,
        progress: None,
        cancel: Some(&shared.cancel),
    };
    let result = converge::rollback_site(&fleet, loaded, Some(to), false, &opts);
    let looked = look(shared, &fleet, loaded, now)
        .ok()
        .map(|l| (l.status, l.held));
    (result, looked)
}

/// A rollback's outcome and the site's look afterwards.
type Ran = (Result<Outcome, ApplyError>, Option<(SiteStatus, Vec<Held>)>);

impl Daemon {
    /// Starts an operation, or answers at once that the site is busy.
    pub(super) fn operate(&mut self, op: Op, done: &mpsc::UnboundedSender<OpDone>) {
        let Op::Rollback { site, to, reply } = op;
        if self.running.contains(&site) {
            let _ = reply.send(Err(ApplyError::LockBusy { site }));
            return;
        }
        self.running.insert(site.clone());
        self.shared.ui.live.started(&site);
        let shared = Arc::clone(&self.shared);
        let done = done.clone();
        tokio::task::spawn_blocking(move || {
            let span = tracing::info_span!("rollback", site = %site, to, via = "ui");
            let _entered = span.enter();
            let (result, looked) = roll_back(&shared, &site, to);
            match &result {
                Ok(o) => tracing::info!(outcome = ?o, "rolled back from the dashboard"),
                Err(e) => tracing::warn!(error = %e, "a rollback from the dashboard failed"),
            }
            let _ = done.send(OpDone {
                site,
                result,
                looked,
                reply,
            });
        });
    }

    /// Records a finished operation and answers its request.
    pub(super) fn op_done(&mut self, done: OpDone) {
        let site = done.site.as_str();
        self.running.remove(site);
        // Its writes are echoed by file events, as a reconcile's are.
        self.quiet_until
            .insert(site.to_owned(), Instant::now() + ECHO_WINDOW);
        if matches!(done.result, Ok(Outcome::Changed { .. })) {
            // A symlink-layout site now lives in another directory.
            self.files.refresh(&self.shared.fleet());
        }
        if let Some((status, held)) = done.looked {
            self.shared.view(site, |v| {
                v.status = status;
                v.held = held;
            });
        }
        self.shared.ui.live.finished(&self.shared, site);
        let _ = done.reply.send(done.result);
    }
}
