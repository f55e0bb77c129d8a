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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;

use super::files::Files;
use super::metrics::{ClassLabels, KindLabels, Metrics, ProductLabel, ResultLabels, SiteLabel};
use super::{Config, WatchError};
use crate::apply::converge::{self, ApplyError, ErrorClass, Options, Outcome};
use crate::apply::txn;
use crate::load::{self, Diagnostic, Fleet, LoadOptions, Trust};
use crate::observe::SiteContext;
use crate::observe::status::{self, SiteStatus};
use crate::plan::choose::{Class, Upgrade};
use crate::plan::{Held, HeldCode};
use crate::store::SiteState;
use crate::watch::publish::notices::{self, Notice, Notices};

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
        }
    }

    /// Who triggered a change, for the ledger (SPEC §5 `by.via`).
    fn via(self) -> &'static str {
        match self {
            Reason::Webhook => "webhook",
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
pub struct SiteReport {
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

impl SiteReport {
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
    /// Per-site reports.
    pub reports: Mutex<BTreeMap<String, SiteReport>>,
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
    fixed_now: Option<jiff::Timestamp>,
}

impl Shared {
    /// The fleet in use.
    pub fn fleet(&self) -> Arc<Fleet> {
        Arc::clone(&self.fleet.read().unwrap_or_else(PoisonError::into_inner))
    }

    fn now(&self) -> jiff::Timestamp {
        self.fixed_now.unwrap_or_else(jiff::Timestamp::now)
    }

    fn report(&self, site: &str, f: impl FnOnce(&mut SiteReport)) {
        let mut reports = self.reports.lock().unwrap_or_else(PoisonError::into_inner);
        f(reports
            .entry(site.to_owned())
            .or_insert_with(|| SiteReport::new(site)));
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
        now,
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
    /// What one look finds.
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
    let look = || -> Result<Looked, ApplyError> {
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
        let refusal = converge::refusal(name, &plan);
        let preflight = refusal
            .as_ref()
            .is_some_and(|e| matches!(e, ApplyError::Preflight { .. }))
            .then(|| refusal.expect("checked just above"));
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
    };
    let first = match look() {
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
    let after = look().unwrap_or(first);
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

/// Logs and counts the notices that are new.
fn announce(metrics: &Metrics, notices: &[Notice]) {
    for n in notices {
        let class = serde_json::to_value(n.class)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        tracing::info!(
            site = %n.site,
            version = %n.version,
            class = %class,
            reason = %n.reason,
            held = %n.held.reason,
            "upgrade available"
        );
        metrics
            .upgrade_notices
            .get_or_create(&ClassLabels {
                site: n.site.clone(),
                class,
            })
            .inc();
    }
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

/// How long after a reconcile its site's file events are taken for the
/// echo of its own writes (inotify delivers them within milliseconds).
const ECHO_WINDOW: Duration = Duration::from_secs(1);

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

/// The commits the fleet was read at: a change means a new commit.
fn fingerprint(fleet: &Fleet) -> Vec<(String, Option<String>)> {
    let mut out = vec![("fleet".to_owned(), fleet.source.commit().map(str::to_owned))];
    for (product, catalog) in &fleet.catalogs {
        out.push((product.clone(), catalog.source.commit().map(str::to_owned)));
    }
    out
}

/// Loads the fleet, keeping only the `selected` sites (all when empty); a
/// selected site that is not in the fleet is an error.
fn load_fleet(options: &LoadOptions, selected: &[String]) -> Result<Fleet, Vec<Diagnostic>> {
    let mut fleet = match load::load(options) {
        Ok((fleet, diags)) if diags.is_empty() => fleet,
        Ok((_, diags)) => return Err(diags),
        Err(d) => return Err(vec![d]),
    };
    if !selected.is_empty() {
        let missing: Vec<Diagnostic> = selected
            .iter()
            .filter(|name| fleet.site(name).is_none())
            .map(|name| {
                Diagnostic::new(
                    load::Location::file(fleet.source.display("sites/")),
                    format!("there is no site named {name:?} to watch"),
                )
                .with_hint("name sites as their `site:` field says")
            })
            .collect();
        if !missing.is_empty() {
            return Err(missing);
        }
        fleet
            .sites
            .retain(|s| selected.iter().any(|n| n == s.site.as_str()));
    }
    Ok(fleet)
}

/// A reconcile that finished.
struct Done {
    site: String,
    reason: Reason,
    result: Reconciled,
    elapsed: Duration,
}

/// The daemon's loop.
pub struct Daemon {
    shared: Arc<Shared>,
    config: Config,
    due: HashMap<String, (Instant, Reason)>,
    running: HashSet<String>,
    again: HashMap<String, Reason>,
    /// After a reconcile, a site's file events are the echo of its own
    /// writes (a change, its rollback, a recovery) until then.
    quiet_until: HashMap<String, Instant>,
    /// Failing sites and until when they wait.
    backoff: HashMap<String, Backoff>,
    reloading: bool,
    reload_again: bool,
    /// When to publish the opted-in status reports next (SPEC §7).
    publish_at: Option<Instant>,
    publishing: bool,
    /// Publishes that failed in a row, and when the next may start: a
    /// report repository that is down is retried with a backoff, like a
    /// failing site, not at every fleet reload.
    publish_failures: u32,
    publish_not_before: Option<Instant>,
    after_reload: Vec<Trigger>,
    files: Files,
}

impl Daemon {
    /// Loads the fleet, starts the endpoints and the file watcher, and runs
    /// until SIGTERM or SIGINT.
    pub async fn run(config: Config) -> Result<(), WatchError> {
        use tokio::signal::unix::{SignalKind, signal};
        let sig = |kind| {
            signal(kind).map_err(|e| WatchError::Start(format!("cannot handle signals: {e}")))
        };
        let (mut term, mut int, mut hup) = (
            sig(SignalKind::terminate())?,
            sig(SignalKind::interrupt())?,
            sig(SignalKind::hangup())?,
        );
        let options = config.load.clone();
        let selected = config.sites.clone();
        let fleet = tokio::task::spawn_blocking(move || load_fleet(&options, &selected))
            .await
            .map_err(|e| WatchError::Start(e.to_string()))?
            .map_err(WatchError::Invalid)?;
        let state_dir = load::state_dir(config.load.state_dir.as_deref(), Some(&fleet));
        let (tx, mut triggers) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            fleet: RwLock::new(Arc::new(fleet)),
            state_dir,
            reports: Mutex::default(),
            metrics: Metrics::new(),
            triggers: tx.clone(),
            heartbeat: AtomicI64::new(jiff::Timestamp::now().as_second()),
            webhook_secret: config.webhook_secret.clone(),
            cancel: Arc::new(AtomicBool::new(false)),
            load_error: Mutex::default(),
            fixed_now: config.fixed_now,
        });
        let (stop_http, http_stopped) = tokio::sync::watch::channel(false);
        let server = match config.listen {
            Some(addr) => {
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(|source| WatchError::Bind { addr, source })?;
                let bound = listener.local_addr().unwrap_or(addr);
                tracing::info!(address = %bound, "serving /healthz /metrics /status /reconcile");
                Some(tokio::spawn(super::http::serve(
                    listener,
                    Arc::clone(&shared),
                    http_stopped,
                )))
            }
            None => None,
        };
        let mut files = Files::start(tx);
        files.refresh(&shared.fleet());
        let mut daemon = Daemon {
            shared: Arc::clone(&shared),
            config,
            due: HashMap::new(),
            running: HashSet::new(),
            again: HashMap::new(),
            quiet_until: HashMap::new(),
            backoff: HashMap::new(),
            reloading: false,
            reload_again: false,
            publish_at: None,
            publishing: false,
            publish_failures: 0,
            publish_not_before: None,
            after_reload: Vec::new(),
            files,
        };
        let fleet = shared.fleet();
        tracing::info!(
            sites = fleet.sites.len(),
            interval = ?daemon.config.interval,
            jobs = daemon.config.jobs,
            "watching"
        );
        for site in &fleet.sites {
            daemon.schedule(site.site.as_str(), Instant::now(), Reason::Startup);
        }
        drop(fleet);

        let jobs = Arc::new(Semaphore::new(daemon.config.jobs.max(1)));
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Done>();
        let (reload_tx, mut reloads) = mpsc::unbounded_channel();
        let (published_tx, mut published) = mpsc::unbounded_channel::<bool>();
        let mut next_reload = from_now(jittered(daemon.config.interval));
        loop {
            shared
                .heartbeat
                .store(jiff::Timestamp::now().as_second(), Ordering::Relaxed);
            daemon.dispatch(&jobs, &done_tx);
            daemon.publish(&published_tx);
            let wake = daemon
                .due
                .iter()
                .filter(|(s, _)| !daemon.running.contains(*s))
                .map(|(_, (at, _))| *at)
                .min()
                .unwrap_or(next_reload)
                .min(next_reload)
                .min(daemon.publish_due().unwrap_or(next_reload))
                // Keep the heartbeat fresh even when nothing is due.
                .min(Instant::now() + Duration::from_secs(30));
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => {
                    if Instant::now() >= next_reload {
                        next_reload = from_now(jittered(daemon.config.interval));
                        daemon.reload(Reason::Interval, &reload_tx);
                    }
                }
                Some(t) = triggers.recv() => daemon.trigger(t, &reload_tx),
                Some(done) = done_rx.recv() => daemon.finished(done),
                Some(ok) = published.recv() => daemon.published(ok),
                Some((reason, loaded)) = reloads.recv() => daemon.reloaded(reason, loaded, &reload_tx),
                _ = hup.recv() => {
                    tracing::info!("SIGHUP: reading the fleet again");
                    daemon.reload(Reason::Reload, &reload_tx);
                }
                _ = term.recv() => break,
                _ = int.recv() => break,
            }
        }

        // Stop: no new work; a change in flight fails at its next step and
        // is undone by its own transaction; wait for that, within 9 s.
        tracing::info!(in_flight = daemon.running.len(), "stopping");
        shared.cancel.store(true, Ordering::SeqCst);
        let _ = stop_http.send(true);
        let deadline = Instant::now() + Duration::from_secs(9);
        while !daemon.running.is_empty() {
            match tokio::time::timeout_at(deadline, done_rx.recv()).await {
                Ok(Some(done)) => daemon.finished(done),
                _ => {
                    tracing::warn!(
                        sites = ?daemon.running,
                        "still busy at the deadline; their next run recovers them"
                    );
                    break;
                }
            }
        }
        if let Some(server) = server {
            let _ = tokio::time::timeout(Duration::from_secs(1), server).await;
        }
        tracing::info!("stopped");
        Ok(())
    }

    /// Publishes the opted-in sites' status reports when due, on a
    /// blocking thread (git may take its time); one publish at a time.
    fn publish(&mut self, published: &mpsc::UnboundedSender<bool>) {
        if self.publishing || self.publish_due().is_none_or(|at| at > Instant::now()) {
            return;
        }
        self.publish_at = None;
        let fleet = self.shared.fleet();
        if fleet.config.reports.is_none() {
            return;
        }
        self.publishing = true;
        let state_dir = self.shared.state_dir.clone();
        let done = published.clone();
        tokio::task::spawn_blocking(move || {
            let statuses: BTreeMap<String, crate::watch::publish::report::SiteStatus> = fleet
                .sites
                .iter()
                .filter_map(|s| {
                    crate::watch::publish::report::SiteStatus::read(&state_dir, s.site.as_str())
                        .ok()
                        .map(|st| (s.site.to_string(), st))
                })
                .collect();
            let ok = match crate::watch::publish::report::publish_for_fleet(
                &fleet, &state_dir, &statuses,
            ) {
                Ok(Some(p)) if p.commit.is_some() => {
                    tracing::info!(commit = ?p.commit, sites = ?p.changed, "status reports published");
                    true
                }
                Ok(_) => {
                    tracing::debug!("status reports unchanged, or no site opted in");
                    true
                }
                Err(e) => {
                    tracing::warn!(error = %e, "publishing status reports failed");
                    false
                }
            };
            let _ = done.send(ok);
        });
    }

    /// When the next publish is due: when one was asked for, but not
    /// before the backoff of failed ones has passed.
    fn publish_due(&self) -> Option<Instant> {
        let at = self.publish_at?;
        Some(self.publish_not_before.map_or(at, |nb| at.max(nb)))
    }

    /// A publish finished: a failure backs the next one off (2 s doubling,
    /// capped like a site's), and asks for it again then.
    fn published(&mut self, ok: bool) {
        self.publishing = false;
        if ok {
            self.publish_failures = 0;
            self.publish_not_before = None;
            return;
        }
        self.publish_failures = self.publish_failures.saturating_add(1);
        let at = from_now(backoff(self.publish_failures, self.config.interval));
        self.publish_not_before = Some(at);
        self.publish_at = Some(self.publish_at.map_or(at, |p| p.min(at)));
    }

    /// Moves `site`'s next look to `at` if that is earlier.
    ///
    /// A failing site waits out its backoff whatever the trigger, except a
    /// new commit, which may look at once (and acts only if the commit
    /// changed the plan that failed: see [`reconcile`]'s `hold`).
    fn schedule(&mut self, site: &str, at: Instant, reason: Reason) {
        let at = match self.backoff.get(site) {
            Some(b) if reason != Reason::Commit => at.max(b.until),
            _ => at,
        };
        match self.due.get(site) {
            Some((when, _)) if *when <= at => {}
            _ => {
                self.due.insert(site.to_owned(), (at, reason));
            }
        }
    }

    /// Starts every due site that is not already running.
    fn dispatch(&mut self, jobs: &Arc<Semaphore>, done: &mpsc::UnboundedSender<Done>) {
        let now = Instant::now();
        let ready: Vec<(String, Reason)> = self
            .due
            .iter()
            .filter(|(s, (at, _))| *at <= now && !self.running.contains(*s))
            .map(|(s, (_, r))| (s.clone(), *r))
            .collect();
        for (site, reason) in ready {
            self.due.remove(&site);
            let hold = self
                .backoff
                .get(&site)
                .filter(|b| b.until > now)
                .and_then(|b| b.digest.clone());
            self.running.insert(site.clone());
            let shared = Arc::clone(&self.shared);
            let jobs = Arc::clone(jobs);
            let done = done.clone();
            tokio::spawn(async move {
                let permit = jobs.acquire_owned().await;
                let started = std::time::Instant::now();
                let name = site.clone();
                let result = tokio::task::spawn_blocking(move || {
                    let span =
                        tracing::info_span!("reconcile", site = %name, reason = reason.as_str());
                    let _entered = span.enter();
                    let fleet = shared.fleet();
                    reconcile(&shared, &fleet, &name, reason, hold.as_deref())
                })
                .await
                .unwrap_or_else(|e| {
                    Reconciled::error(ApplyError::Internal {
                        site: site.clone(),
                        detail: format!("the reconcile panicked: {e}"),
                    })
                });
                drop(permit);
                let _ = done.send(Done {
                    site,
                    reason,
                    result,
                    elapsed: started.elapsed(),
                });
            });
        }
    }

    fn trigger(&mut self, t: Trigger, reload_tx: &ReloadSender) {
        match t.reason {
            Reason::FileChange => {
                let Some(site) = t.site else { return };
                // While a reconcile runs, and a moment after, the site's
                // events are the echo of its own writes (a change, its
                // rollback, a recovery): never a reason to look again. A
                // person's edit in that window is seen at the next look.
                if !self.running.contains(&site)
                    && self
                        .quiet_until
                        .get(&site)
                        .is_none_or(|until| Instant::now() >= *until)
                {
                    // Debounce: a burst of events (an editor's save, an
                    // unpacked upload) makes one reconcile.
                    self.schedule(
                        &site,
                        Instant::now() + Duration::from_millis(300),
                        Reason::FileChange,
                    );
                }
            }
            // A webhook means "something was pushed": fetch first.
            _ => {
                self.after_reload.push(t);
                self.reload(Reason::Webhook, reload_tx);
            }
        }
    }

    /// Schedules what a request asked for. An operator who names a site
    /// (`POST /reconcile?site=NAME`) means "now": that lifts its backoff;
    /// a request for every site respects each one's backoff.
    fn requested(&mut self, t: Trigger, fleet: &Fleet, now: Instant) {
        match &t.site {
            Some(site) => {
                self.backoff.remove(site);
                self.schedule(site, now, t.reason);
            }
            None => {
                for s in &fleet.sites {
                    self.schedule(s.site.as_str(), now, t.reason);
                }
            }
        }
    }

    /// Fetches and reads the fleet again, on a blocking thread.
    fn reload(&mut self, reason: Reason, reload_tx: &ReloadSender) {
        if self.reloading {
            self.reload_again = true;
            return;
        }
        self.reloading = true;
        let options = self.config.load.clone();
        let selected = self.config.sites.clone();
        let tx = reload_tx.clone();
        tokio::task::spawn_blocking(move || {
            let _ = tx.send((reason, load_fleet(&options, &selected)));
        });
    }

    fn reloaded(
        &mut self,
        reason: Reason,
        loaded: Result<Fleet, Vec<Diagnostic>>,
        reload_tx: &ReloadSender,
    ) {
        self.reloading = false;
        let now = Instant::now();
        match loaded {
            Ok(fleet) => {
                *self
                    .shared
                    .load_error
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = None;
                // Explicit requests first, so a webhook's reconcile is
                // recorded as the webhook's even when it brought a commit.
                for t in std::mem::take(&mut self.after_reload) {
                    self.requested(t, &fleet, now);
                }
                let old = self.shared.fleet();
                let moved = fingerprint(&old) != fingerprint(&fleet);
                let known: HashSet<&str> = old.sites.iter().map(|s| s.site.as_str()).collect();
                let now_known: HashSet<String> =
                    fleet.sites.iter().map(|s| s.site.to_string()).collect();
                for gone in known.iter().filter(|s| !now_known.contains(**s)) {
                    tracing::info!(site = %gone, "left the fleet");
                    self.due.remove(*gone);
                    self.shared
                        .reports
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .remove(*gone);
                    self.shared.metrics.forget(gone);
                }
                for site in &fleet.sites {
                    let name = site.site.as_str();
                    if !known.contains(name) {
                        self.schedule(name, now, Reason::Startup);
                    } else if moved {
                        self.schedule(name, now, Reason::Commit);
                    } else if reason == Reason::Reload {
                        self.schedule(name, now, Reason::Reload);
                    }
                }
                if moved {
                    tracing::info!(commits = ?fingerprint(&fleet), "new commit");
                }
                // Opt-ins may have changed: publish what is now allowed.
                self.publish_at = Some(now + Duration::from_secs(2));
                drop(old);
                self.files.refresh(&fleet);
                *self
                    .shared
                    .fleet
                    .write()
                    .unwrap_or_else(PoisonError::into_inner) = Arc::new(fleet);
            }
            Err(diags) => {
                self.shared.metrics.load_failures.inc();
                let text: Vec<String> = diags.iter().map(ToString::to_string).collect();
                tracing::error!(
                    errors = %text.join("; "),
                    "the fleet no longer loads; keeping the last good one"
                );
                *self
                    .shared
                    .load_error
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(text.join("\n"));
            }
        }
        let fleet = self.shared.fleet();
        for t in std::mem::take(&mut self.after_reload) {
            self.requested(t, &fleet, now);
        }
        if std::mem::take(&mut self.reload_again) {
            self.reload(reason, reload_tx);
        }
    }

    /// Records a finished reconcile and schedules the next look.
    fn finished(&mut self, done: Done) {
        self.running.remove(&done.site);
        let metrics = &self.shared.metrics;
        let site = done.site.as_str();
        let label = SiteLabel { site: site.into() };
        metrics.duration.observe(done.elapsed.as_secs_f64());
        // Every reconcile may have written (a change, its rollback, a
        // recovery): the file events that follow are its echo.
        self.quiet_until
            .insert(site.to_owned(), Instant::now() + ECHO_WINDOW);
        let deferred = done.result.deferred;
        let (word, error, kind) = match &done.result.outcome {
            _ if deferred => ("deferred", None, None),
            Ok(Outcome::Unchanged) => ("unchanged", None, None),
            Ok(Outcome::Changed { .. }) => ("changed", None, None),
            Err(e) if e.is_refusal() => ("refused", Some(e.to_string()), Some(e.kind())),
            Err(e) => ("failed", Some(e.to_string()), Some(e.kind())),
        };
        metrics
            .reconciles
            .get_or_create(&ResultLabels {
                site: site.into(),
                result: word.into(),
            })
            .inc();
        if let Some(kind) = kind {
            metrics
                .errors
                .get_or_create(&KindLabels {
                    site: site.into(),
                    kind: kind.into(),
                })
                .inc();
        }
        // Failures in a row: a busy site is not failing, and a deferred
        // look changes nothing.
        let mut failures = 0;
        self.shared.report(site, |r| {
            match &done.result.outcome {
                _ if deferred => {}
                Err(e) if e.is_busy() => {}
                Err(_) => r.failures += 1,
                Ok(_) => r.failures = 0,
            }
            failures = r.failures;
        });
        match &done.result.outcome {
            _ if deferred => {
                tracing::debug!(
                    site,
                    reason = done.reason.as_str(),
                    "backing off: the plan that failed is unchanged"
                );
            }
            Ok(Outcome::Changed {
                point,
                files,
                version,
            }) => {
                tracing::info!(site, reason = done.reason.as_str(), version = %version, files, point, "converged");
                // A symlink-layout site now lives in another directory.
                self.files.refresh(&self.shared.fleet());
            }
            Ok(Outcome::Unchanged) => {
                tracing::debug!(site, reason = done.reason.as_str(), "nothing to do");
            }
            Err(e) if e.is_busy() => {
                tracing::debug!(site, reason = done.reason.as_str(), error = %e, "busy")
            }
            Err(e) => {
                metrics.failures.get_or_create(&label).inc();
                if e.is_refusal() {
                    tracing::warn!(site, reason = done.reason.as_str(), kind = e.kind(), error = %e, failures, "refused");
                } else {
                    tracing::error!(site, reason = done.reason.as_str(), kind = e.kind(), error = %e, failures, "failed");
                }
                // The change failed and was rolled back: the site's files
                // may have moved (symlink layout), as after a change.
                if matches!(e, ApplyError::RolledBack { .. }) {
                    self.files.refresh(&self.shared.fleet());
                }
            }
        }
        if let Some(status) = &done.result.status {
            let previous = self
                .shared
                .reports
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get(site)
                .map(|r| r.status.drift.clone());
            if !status.drift.is_empty() && previous.as_ref() != Some(&status.drift) {
                tracing::warn!(site, files = ?status.drift, "managed files drifted from the last rollback point");
            }
            metrics
                .drifted
                .get_or_create(&label)
                .set(status.drift.len() as i64);
            metrics
                .pending
                .get_or_create(&label)
                .set(status.pending as i64);
            metrics
                .held
                .get_or_create(&label)
                .set(done.result.held.len() as i64);
            for class in [Class::Eligible, Class::Questionable, Class::Ineligible] {
                let n = done
                    .result
                    .available
                    .iter()
                    .filter(|c| **c == class)
                    .count();
                let name = serde_json::to_value(class)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                metrics
                    .upgrades
                    .get_or_create(&ClassLabels {
                        site: site.into(),
                        class: name,
                    })
                    .set(n as i64);
            }
        }
        if matches!(word, "unchanged" | "changed") {
            metrics
                .last_success
                .get_or_create(&label)
                .set(jiff::Timestamp::now().as_duration().as_secs_f64());
        }
        let untrusted = done
            .result
            .held
            .iter()
            .any(|h| h.code == crate::plan::HeldCode::UntrustedSource);
        if let Some(h) = done
            .result
            .held
            .iter()
            .find(|h| h.code == crate::plan::HeldCode::UntrustedSource)
        {
            tracing::error!(site, reason = %h.reason, "the catalog commit is not trusted; nothing is applied until a trusted commit arrives");
        }
        let fleet = self.shared.fleet();
        if let Some(product) = fleet.site(site).map(|s| s.product.clone()) {
            metrics
                .catalog_trusted
                .get_or_create(&ProductLabel { product })
                .set(i64::from(!untrusted));
        }
        announce(metrics, &done.result.notices.new);
        // When to look next, and the backoff that holds every trigger
        // but a plan-changing commit or an operator until then.
        let now = Instant::now();
        let (action, reason) = match &done.result.outcome {
            _ if deferred => match self.backoff.get(site) {
                Some(b) => (
                    Action::Requeue(b.until.saturating_duration_since(now)),
                    Reason::Retry,
                ),
                None => (Action::Requeue(Duration::ZERO), Reason::Retry),
            },
            Err(e) => (
                error_policy(e, failures, self.config.interval),
                Reason::Retry,
            ),
            Ok(_) => (
                Action::Requeue(jittered(self.config.interval)),
                Reason::Interval,
            ),
        };
        let Action::Requeue(after) = action;
        match &done.result.outcome {
            _ if deferred => {}
            Err(e) if !e.is_busy() => {
                self.backoff.insert(
                    site.to_owned(),
                    Backoff {
                        until: from_now(after),
                        digest: done.result.digest.clone(),
                    },
                );
            }
            Err(_) => {}
            Ok(_) => {
                self.backoff.remove(site);
            }
        }
        let backoff = self.backoff.get(site).map_or(0.0, |b| {
            b.until.saturating_duration_since(now).as_secs_f64()
        });
        metrics.backoff.get_or_create(&label).set(backoff);
        let at = self.shared.now().to_string();
        let result = done.result;
        self.shared.report(site, |r| {
            if let Some(status) = result.status {
                r.status = status;
                r.notices = result.notices.current;
            }
            r.held = result.held;
            r.last_reconcile = Some(at);
            r.reason = Some(done.reason);
            r.outcome = Some(word);
            // A deferred look leaves the site's error standing.
            if !deferred {
                r.error = error;
                r.error_kind = kind;
            }
            r.backoff_seconds = backoff;
        });
        // Reports follow changes a little later, in one batch: a change, a
        // site that starts failing, or the first look. A site that keeps
        // failing the same way has nothing new to report.
        let transition =
            word == "changed" || (matches!(word, "failed" | "refused") && failures == 1);
        if transition || done.reason == Reason::Startup {
            let soon = Instant::now() + Duration::from_secs(2);
            self.publish_at = Some(self.publish_at.map_or(soon, |at| at.min(soon)));
        }
        if let Some(reason) = self.again.remove(site) {
            self.schedule(site, now, reason);
        }
        if fleet.site(site).is_some() {
            self.schedule(site, from_now(after), reason);
        }
    }
}

type ReloadSender = mpsc::UnboundedSender<(Reason, Result<Fleet, Vec<Diagnostic>>)>;

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
