//! The reconcile loop: which site to look at when, and why.
//!
//! Every site has one schedule entry (when to look next, and the reason).
//! Triggers move it earlier: a new fleet or catalog commit, a changed file
//! (debounced), a webhook, SIGHUP, the timer. A site is never reconciled
//! twice at once; a trigger that arrives meanwhile runs it again after.
//! [`reconcile`] does the work on a blocking thread and returns an
//! [`Action`]; [`error_policy`] backs a failing site off exponentially,
//! capped, without holding up the others. `--jobs` bounds the blocking
//! threads at work.
//!
//! This file holds what the HTTP endpoints and the file watcher share
//! with the loop, one site's reconcile and the backoff; the loop itself
//! is in `daemon`, what a finished reconcile leaves behind (metrics,
//! logs, backoff, the site's report) in `finished`, and the dashboard's
//! rollbacks, which the loop runs like reconciles, in `ops`.

mod daemon;
mod finished;
pub mod ops;

use crate::apply::clock::Clock;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::metrics::Metrics;
use crate::apply::converge::{self, ApplyError, ErrorClass, Options, Outcome};
use crate::apply::txn;
use crate::load::{Fleet, Loaded, Trust};
use crate::model::Site;
use crate::observe::SiteContext;
use crate::observe::status::{self, SiteStatus};
use crate::plan::choose::{Class, Upgrade};
use crate::plan::{Held, HeldCode};
use crate::store::SiteState;
use crate::watch::publish::notices::{self, Notice, Notices};
pub use daemon::Daemon;

/// Why a site is reconciled; recorded in the reconcile's tracing span.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The daemon started, or the site joined the fleet.
    Startup,
    /// The timer (`--interval`).
    Interval,
    /// A new commit of the fleet or of a catalog.
    Commit,
    /// A managed file changed.
    FileChange,
    /// `POST /reconcile`.
    Webhook,
    /// SIGHUP re-read the fleet.
    Reload,
    /// A retry after a failure or a busy lock.
    Retry,
    /// "Reconcile now" on the dashboard (`POST /sites/NAME/reconcile`):
    /// like a webhook naming the site, it lifts the site's backoff.
    Ui,
}

impl Reason {
    /// The word for logs and `/status`.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Startup => "startup",
            Reason::Interval => "interval",
            Reason::Commit => "new commit",
            Reason::FileChange => "file change",
            Reason::Webhook => "webhook",
            Reason::Reload => "reload",
            Reason::Retry => "retry",
            Reason::Ui => "ui",
        }
    }

    /// Who triggered a change, for the ledger (SPEC §5 `by.via`).
    fn via(self) -> &'static str {
        match self {
            Reason::Webhook => "webhook",
            Reason::Ui => "ui",
            _ => "watch",
        }
    }
}

/// A request to look at a site (`None`: every site).
#[derive(Debug, Clone)]
pub struct Trigger {
    /// The site, or all.
    pub site: Option<String>,
    /// Why.
    pub reason: Reason,
}

/// What to do after a reconcile (kube-runtime's `Action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Look again after this long.
    Requeue(Duration),
}

/// What the daemon knows about one site, served by `/status`.
#[derive(Debug, Clone, Serialize)]
pub struct SiteView {
    /// SPEC §3.1 `status`.
    #[serde(flatten)]
    pub status: SiteStatus,
    /// Items held back, with their reasons.
    pub held: Vec<Held>,
    /// When the daemon last looked.
    pub last_reconcile: Option<String>,
    /// Why it last looked.
    pub reason: Option<Reason>,
    /// `unchanged`, `changed`, `refused`, `failed`, or `deferred` (looked
    /// at while backing off after a failure, and left alone: `error`
    /// still names that failure).
    pub outcome: Option<&'static str>,
    /// The last error, in words.
    pub error: Option<String>,
    /// The last error's kind (`preflight`, `rolled_back`, …).
    pub error_kind: Option<&'static str>,
    /// Failures in a row.
    pub failures: u32,
    /// How long the daemon waits after the last failure before it tries
    /// the site again (0 when it is not failing).
    pub backoff_seconds: f64,
    /// Newer releases that will not apply automatically and were notified
    /// (empty with `SITEKEEPER_NO_NOTICES`).
    pub notices: Vec<Notice>,
}

impl SiteView {
    fn new(site: &str) -> Self {
        Self {
            status: SiteStatus {
                site: site.to_owned(),
                version: None,
                fixes: Vec::new(),
                point: None,
                drift: Vec::new(),
                pending: 0,
                last_result: None,
                catalog_trust: Trust::NotRequired,
                fleet_trust: Trust::NotRequired,
                quarantined: Vec::new(),
                preflight: Vec::new(),
                failure: None,
            },
            held: Vec::new(),
            last_reconcile: None,
            reason: None,
            outcome: None,
            error: None,
            error_kind: None,
            failures: 0,
            backoff_seconds: 0.0,
            notices: Vec::new(),
        }
    }
}

/// State shared by the loop, the blocking workers and the HTTP handlers.
pub struct Shared {
    /// The fleet in use (replaced whole on reload).
    pub fleet: RwLock<Arc<Fleet>>,
    /// The state dir.
    pub state_dir: PathBuf,
    /// What the daemon knows of each site ([`SiteView`]).
    pub views: Mutex<BTreeMap<String, SiteView>>,
    /// Prometheus metrics.
    pub metrics: Metrics,
    /// Where triggers go.
    pub triggers: mpsc::UnboundedSender<Trigger>,
    /// Unix time of the loop's last turn (`/healthz`).
    pub heartbeat: AtomicI64,
    /// `--webhook-secret-file`.
    pub webhook_secret: Option<Vec<u8>>,
    /// Set on SIGTERM: changes in flight are undone, none start.
    pub cancel: Arc<AtomicBool>,
    /// The last fleet load error, if the fleet in use is an older one.
    pub load_error: Mutex<Option<String>>,
    /// The repositories whose last fetch or push failed.
    pub fetches: Mutex<super::fetches::Fetches>,
    /// The last failed delivery of each `notify:` target still failing.
    pub notify_errors: Mutex<BTreeMap<String, super::notify::DeliveryError>>,
    /// The dashboard's sessions, its sign-in token and its live feed.
    pub ui: super::ui::Ui,
    /// Where the dashboard's operations go (the loop runs them).
    pub ops: mpsc::UnboundedSender<ops::Op>,
    fixed_now: Option<jiff::Timestamp>,
}

impl Shared {
    /// The fleet in use.
    pub fn fleet(&self) -> Arc<Fleet> {
        Arc::clone(&self.fleet.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// The daemon's clock (`SITEKEEPER_NOW` when fixed).
    pub fn now(&self) -> jiff::Timestamp {
        self.fixed_now.unwrap_or_else(jiff::Timestamp::now)
    }

    /// Changes `site`'s view (made if missing).
    pub fn view(&self, site: &str, f: impl FnOnce(&mut SiteView)) {
        let mut views = self.views.lock().unwrap_or_else(PoisonError::into_inner);
        f(views
            .entry(site.to_owned())
            .or_insert_with(|| SiteView::new(site)));
    }
}

/// What one reconcile found and did.
#[derive(Debug)]
pub struct Reconciled {
    /// The change, or why there was none.
    pub outcome: Result<Outcome, ApplyError>,
    /// The site afterwards (when it could be read).
    pub status: Option<SiteStatus>,
    /// Held items.
    pub held: Vec<Held>,
    /// Newer releases by class.
    pub available: Vec<Class>,
    /// Upgrade notices due now and in effect.
    pub notices: Notices,
    /// The digest of the plan looked at before acting.
    pub digest: Option<String>,
    /// Looked, but held back: the site is backing off and its plan is the
    /// one that failed.
    pub deferred: bool,
}

impl Reconciled {
    /// A reconcile that ended before the site could be looked at.
    fn error(e: ApplyError) -> Self {
        Reconciled {
            outcome: Err(e),
            status: None,
            held: Vec::new(),
            available: Vec::new(),
            notices: Notices::default(),
            digest: None,
            deferred: false,
        }
    }
}

/// Looks at one site and converges it when its plan has changes. Runs on
/// a blocking thread; the site's lock serializes it with any `apply`.
///
/// `hold` is the digest of a plan that failed and whose backoff has not
/// expired: a plan with that digest is looked at but not carried out
/// (only a commit that changes the plan may start the site sooner).
pub fn reconcile(
    shared: &Shared,
    fleet: &Fleet,
    name: &str,
    reason: Reason,
    hold: Option<&str>,
) -> Reconciled {
    if shared.cancel.load(Ordering::SeqCst) {
        return Reconciled::error(ApplyError::Stopping {
            site: name.to_owned(),
        });
    }
    let Some(site) = fleet.site(name) else {
        return Reconciled::error(ApplyError::Invalid {
            site: name.to_owned(),
            detail: "it is no longer in the fleet".into(),
        });
    };
    let now = shared.now();
    let opts = Options {
        via: reason.via(),
        wait: true,
        saved: None,
        forced: None,
        forced_fix: None,
        clock: Clock::starting(now),
        state_dir: &shared.state_dir,
        progress: None,
        cancel: Some(&shared.cancel),
    };
    // An interrupted change is finished or undone before anything is read.
    if txn::pending(&SiteState::new(&shared.state_dir, name))
        && let Err(e) = converge::recover_site(fleet, site, &opts)
    {
        return Reconciled::error(e);
    }
    let first = match look(shared, fleet, site, now) {
        Ok(found) => found,
        Err(e) => return Reconciled::error(e),
    };
    // A plan that already failed, and still would: wait out the backoff.
    let deferred = (first.act || first.preflight.is_some()) && hold == Some(first.digest.as_str());
    if !first.act || deferred {
        return Reconciled {
            outcome: first.preflight.map_or(Ok(Outcome::Unchanged), Err),
            notices: notices_for(shared, &first.status, &first.offered, now),
            status: Some(first.status),
            held: first.held,
            available: first.available,
            digest: Some(first.digest),
            deferred,
        };
    }
    // Something to do: `apply` plans again under the lock and converges.
    let outcome = converge::apply_site(fleet, site, &opts);
    // Notices are judged once, after the change: against the version the
    // site runs now.
    let after = look(shared, fleet, site, now).unwrap_or(first);
    Reconciled {
        outcome,
        notices: notices_for(shared, &after.status, &after.offered, now),
        status: Some(after.status),
        held: after.held,
        available: after.available,
        digest: Some(after.digest),
        deferred: false,
    }
}

/// What one look at a site finds.
struct Looked {
    status: SiteStatus,
    held: Vec<Held>,
    available: Vec<Class>,
    /// Whether there is something `apply` would do.
    act: bool,
    /// A preflight failure holding the plan (SPEC §6.7).
    preflight: Option<ApplyError>,
    digest: String,
    /// The upgrades on offer, with the notice interval.
    offered: (Vec<Upgrade>, Duration),
}

/// Looks at `site` without changing it: its status, its plan's held
/// items and digest, the newer releases, and whether `apply` would act.
fn look(
    shared: &Shared,
    fleet: &Fleet,
    site: &Loaded<Site>,
    now: jiff::Timestamp,
) -> Result<Looked, ApplyError> {
    let name = site.site.as_str();
    let ctx = SiteContext::gather(fleet, site, &shared.state_dir, None)
        .map_err(|e| converge::context_error(name, e))?;
    let plan = ctx.plan(now, None);
    let status = status::of(&ctx, &plan).map_err(|e| ApplyError::Internal {
        site: name.to_owned(),
        detail: e.to_string(),
    })?;
    let available = status::available(&ctx)
        .into_iter()
        .map(|(_, c)| c)
        .collect();
    // A plan `apply` would refuse (approval missing, untrusted source,
    // drift blocked) is reported, not retried every few seconds; one
    // held by its preflight is an error of the site, which backs off.
    let preflight =
        converge::refusal(name, &plan).filter(|e| matches!(e, ApplyError::Preflight { .. }));
    let refused = plan.held.iter().any(|h| {
        matches!(
            h.code,
            HeldCode::ApprovalRequired
                | HeldCode::UntrustedSource
                | HeldCode::DriftBlocked
                | HeldCode::Preflight
        )
    });
    Ok(Looked {
        act: ctx.adopted() && plan.has_changes() && !refused,
        preflight,
        digest: plan.plan_digest.clone(),
        offered: (
            status::upgrades(&ctx, &plan, now),
            ctx.effective.notify_interval.value.0,
        ),
        status,
        held: plan.held,
        available,
    })
}

/// The upgrade notices of an adopted site after a reconcile, kept in its
/// state dir. Failing to keep them costs a repeated notice, not the
/// reconcile, so an error is only logged.
fn notices_for(
    shared: &Shared,
    status: &SiteStatus,
    (upgrades, interval): &(Vec<Upgrade>, Duration),
    now: jiff::Timestamp,
) -> Notices {
    let Some(installed) = &status.version else {
        return Notices::default();
    };
    let state = SiteState::new(&shared.state_dir, &status.site);
    notices::record(
        &state,
        &status.site,
        installed,
        upgrades,
        now,
        *interval,
        notices::opted_out_by_env(),
    )
    .unwrap_or_else(|e| {
        tracing::warn!(site = %status.site, error = %e, "cannot keep the upgrade notices");
        Notices::default()
    })
}

/// When to look at a site again after `error`, its `failures`-th failure
/// in a row (kube-runtime's `error_policy`), by the error's class, never
/// its text:
///
/// * busy (a lock, a stop): soon, 2 s, and it is not a failure;
/// * bad input: at the next interval; only a new commit helps, and a new
///   commit triggers a look by itself;
/// * anything else: 2 s doubling, capped at the interval (and at 5
///   minutes), so a broken site is retried but never hammered.
pub fn error_policy(error: &ApplyError, failures: u32, interval: Duration) -> Action {
    if error.is_busy() {
        return Action::Requeue(BACKOFF_BASE);
    }
    if error.class() == ErrorClass::Input {
        return Action::Requeue(backoff_cap(interval));
    }
    Action::Requeue(backoff(failures, interval))
}

/// The first backoff after a failure.
const BACKOFF_BASE: Duration = Duration::from_secs(2);

/// The longest backoff: the interval, at most 5 minutes.
fn backoff_cap(interval: Duration) -> Duration {
    interval.min(Duration::from_secs(300)).max(BACKOFF_BASE)
}

/// The wait after `failures` failures in a row: 2 s doubling, capped.
fn backoff(failures: u32, interval: Duration) -> Duration {
    let doubled = BACKOFF_BASE.saturating_mul(1 << failures.saturating_sub(1).min(16));
    doubled.min(backoff_cap(interval))
}

/// A failing site's backoff: no trigger but a plan-changing commit or an
/// operator's explicit request starts it before `until` (SPEC §8).
#[derive(Debug, Clone)]
struct Backoff {
    /// Not before then.
    until: Instant,
    /// The plan that failed, as it stood after the failure: a commit that
    /// leaves it the same does not start the site sooner.
    digest: Option<String>,
}

/// `interval` plus up to a tenth of it at random, so a fleet of sites
/// started together does not stay in lock step.
fn jittered(interval: Duration) -> Duration {
    let spread = u64::try_from(interval.as_millis() / 10).unwrap_or(u64::MAX);
    interval.saturating_add(Duration::from_millis(fastrand::u64(0..=spread)))
}

/// The instant `after` from now. `Instant + Duration` panics on overflow;
/// the parser caps `--interval` (and every other duration) at 100 years,
/// so this never saturates in practice, but a wake-up time is not worth a
/// panic: past the clock's end it is "much later", which is what was meant.
fn from_now(after: Duration) -> Instant {
    const FAR: Duration = Duration::from_secs(30 * 365 * 86_400);
    let now = Instant::now();
    now.checked_add(after)
        .or_else(|| now.checked_add(FAR))
        .unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let hour = Duration::from_secs(3600);
        let failed = ApplyError::Failed {
            site: "s".into(),
            detail: "x".into(),
        };
        let secs = |n| match error_policy(&failed, n, hour) {
            Action::Requeue(d) => d.as_secs(),
        };
        assert_eq!(
            (1..=10).map(secs).collect::<Vec<_>>(),
            [2, 4, 8, 16, 32, 64, 128, 256, 300, 300]
        );
        assert_eq!(
            error_policy(&failed, 9, Duration::from_secs(10)),
            Action::Requeue(Duration::from_secs(10)),
            "never longer than the interval"
        );
        let busy = ApplyError::LockBusy { site: "s".into() };
        assert_eq!(
            error_policy(&busy, 9, hour),
            Action::Requeue(Duration::from_secs(2)),
            "a busy site is looked at again soon, whatever came before"
        );
        let full = ApplyError::StorageFull {
            site: "s".into(),
            detail: "x".into(),
        };
        assert_eq!(
            error_policy(&full, 3, hour),
            Action::Requeue(Duration::from_secs(8)),
            "a full disk backs off like any failure (it was retried every 2 s)"
        );
    }

    #[test]
    fn jitter_stays_within_a_tenth() {
        let base = Duration::from_secs(60);
        for _ in 0..1000 {
            let d = jittered(base);
            assert!(d >= base && d <= base + Duration::from_secs(6), "{d:?}");
        }
    }

    /// `Instant + Duration` and `Duration + Duration` panic on overflow;
    /// the longest interval, or any, gives a far wake-up instead.
    #[test]
    fn the_longest_intervals_give_far_wake_ups_not_panics() {
        for interval in [crate::model::values::Duration::MAX, Duration::MAX] {
            let d = jittered(interval);
            assert!(d >= interval, "{d:?}");
            assert!(from_now(d) > Instant::now() + Duration::from_secs(86_400));
            let failed = ApplyError::Failed {
                site: "s".into(),
                detail: "x".into(),
            };
            assert_eq!(
                error_policy(&failed, u32::MAX, interval),
                Action::Requeue(Duration::from_secs(300))
            );
        }
    }

    #[test]
    fn a_loaded_fleet_can_be_shared_between_threads() {
        fn shareable<T: Send + Sync>() {}
        shareable::<Fleet>();
        shareable::<Shared>();
    }
}
