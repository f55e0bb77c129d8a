//! The daemon's loop: one schedule entry per site (when to look next, and
//! why), triggers that move it earlier, `--jobs` reconciles at once on
//! blocking threads, fleet reloads, and the publishing of status reports.
//! What a reconcile leaves behind when it ends is `finished`'s.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;

use super::{Backoff, Reason, Reconciled, Shared, Trigger, backoff, from_now, jittered, reconcile};
use crate::apply::converge::ApplyError;
use crate::load::{self, Diagnostic, FetchFailure, Fleet, LoadOptions};
use crate::model::Selector;
use crate::watch::fetches::only_transient;
use crate::watch::files::Files;
use crate::watch::metrics::{Metrics, RepoLabel};
use crate::watch::{Config, WatchError};

/// The commits the fleet was read at: a change means a new commit.
fn fingerprint(fleet: &Fleet) -> Vec<(String, Option<String>)> {
    let mut out = vec![("fleet".to_owned(), fleet.source.commit().map(str::to_owned))];
    for (product, catalog) in &fleet.catalogs {
        out.push((product.clone(), catalog.source.commit().map(str::to_owned)));
    }
    out
}

/// Loads the fleet, keeping only the `selected` sites (all when empty),
/// or those `selector` matches; a selected site that is not in the fleet
/// is an error. The others are dropped before anything looks at them, so
/// this host never reads or writes state for them.
fn load_fleet(
    options: &LoadOptions,
    selected: &[String],
    selector: Option<&Selector>,
) -> Result<Fleet, Vec<Diagnostic>> {
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
    if let Some(selector) = selector {
        fleet.sites.retain(|s| selector.matches(&s.labels));
    }
    Ok(fleet)
}

/// The remote repositories a load of `fleet` with `options` fetched: the
/// fleet's own when it is a URL, and each catalog's.
fn fetched_repos(options: &LoadOptions, fleet: &Fleet) -> Vec<String> {
    std::iter::once(options.fleet.as_str())
        .chain(fleet.config.catalogs.values().map(|c| c.source.as_str()))
        .filter(|spec| load::source::is_url(spec))
        .map(crate::git::shown_url)
        .collect()
}

/// What a finished publish of the status reports says back to the loop.
pub(super) struct PublishDone {
    /// Whether it worked.
    ok: bool,
    /// The report repository, when it could not be reached, and why.
    failure: Option<(FetchFailure, String)>,
    /// The report repository's URL, when it was reached.
    reached: Option<String>,
}

/// A reconcile that finished.
pub(super) struct Done {
    pub(super) site: String,
    pub(super) reason: Reason,
    pub(super) result: Reconciled,
    pub(super) elapsed: Duration,
}

/// The daemon's loop.
pub struct Daemon {
    pub(super) shared: Arc<Shared>,
    pub(super) config: Config,
    due: HashMap<String, (Instant, Reason)>,
    pub(super) running: HashSet<String>,
    pub(super) again: HashMap<String, Reason>,
    /// After a reconcile, a site's file events are the echo of its own
    /// writes (a change, its rollback, a recovery) until then.
    pub(super) quiet_until: HashMap<String, Instant>,
    /// Failing sites and until when they wait.
    pub(super) backoff: HashMap<String, Backoff>,
    reloading: bool,
    reload_again: bool,
    /// When to publish the opted-in status reports next (SPEC §7).
    pub(super) publish_at: Option<Instant>,
    publishing: bool,
    /// Publishes that failed in a row, and when the next may start: a
    /// report repository that is down is retried with a backoff, like a
    /// failing site, not at every fleet reload.
    publish_failures: u32,
    publish_not_before: Option<Instant>,
    after_reload: Vec<Trigger>,
    pub(super) files: Files,
    /// Where raised events go (the delivery task, `watch::notify`).
    pub(super) notifier: crate::watch::notify::Notifier,
    /// What was already notified of each site (transitions only).
    pub(super) seen: HashMap<String, crate::watch::notify::raise::Seen>,
    /// When the fleet and catalogs are fetched next: every interval, or
    /// sooner after a failed fetch (its backoff).
    next_reload: Instant,
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
        // A git server that cannot be reached at start (the network not up
        // yet at boot, a server restarting) is waited for with a backoff; a
        // fleet that is wrong, or a refused host key or credential, is not
        // going to get better by itself: exit 2 at once.
        let mut tries = 0;
        let fleet = loop {
            let options = config.load.clone();
            let selected = config.sites.clone();
            let selector = config.selector.clone();
            let loaded = tokio::task::spawn_blocking(move || {
                load_fleet(&options, &selected, selector.as_ref())
            })
            .await
            .map_err(|e| WatchError::Start(e.to_string()))?;
            match loaded {
                Ok(fleet) => break fleet,
                Err(diags) if only_transient(&diags) => {
                    tries += 1;
                    let wait = backoff(tries, config.interval);
                    let text: Vec<String> = diags.iter().map(ToString::to_string).collect();
                    tracing::warn!(errors = %text.join("; "), retry_in = ?wait, "cannot fetch at start; trying again");
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        _ = term.recv() => return Ok(()),
                        _ = int.recv() => return Ok(()),
                    }
                }
                Err(diags) => return Err(WatchError::Invalid(diags)),
            }
        };
        let state_dir = load::state_dir(config.load.state_dir.as_deref(), Some(&fleet));
        let (tx, mut triggers) = mpsc::unbounded_channel();
        let (ops_tx, mut ops) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            fleet: RwLock::new(Arc::new(fleet)),
            state_dir,
            views: Mutex::default(),
            metrics: Metrics::new(),
            triggers: tx.clone(),
            heartbeat: AtomicI64::new(jiff::Timestamp::now().as_second()),
            webhook_secret: config.webhook_secret.clone(),
            cancel: Arc::new(AtomicBool::new(false)),
            load_error: Mutex::default(),
            fetches: Mutex::default(),
            notify_errors: Mutex::default(),
            ui: crate::watch::ui::Ui::new(config.ui_token.clone(), config.ui_token_file.clone()),
            ops: ops_tx,
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
                Some(tokio::spawn(crate::watch::http::serve(
                    listener,
                    Arc::clone(&shared),
                    http_stopped,
                )))
            }
            None => None,
        };
        let config_interval = config.interval;
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
            notifier: crate::watch::notify::start(Arc::clone(&shared)),
            seen: HashMap::new(),
            next_reload: from_now(jittered(config_interval)),
        };
        let fleet = shared.fleet();
        tracing::info!(
            sites = fleet.sites.len(),
            selector = %daemon.config.selector.as_ref().map(ToString::to_string).unwrap_or_default(),
            interval = ?daemon.config.interval,
            jobs = daemon.config.jobs,
            "watching"
        );
        if fleet.sites.is_empty() {
            tracing::warn!("no site of the fleet is selected: nothing to watch until one is");
        }
        for site in &fleet.sites {
            daemon.schedule(site.site.as_str(), Instant::now(), Reason::Startup);
        }
        drop(fleet);

        let jobs = Arc::new(Semaphore::new(daemon.config.jobs.max(1)));
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Done>();
        let (reload_tx, mut reloads) = mpsc::unbounded_channel();
        let (published_tx, mut published) = mpsc::unbounded_channel::<PublishDone>();
        let (op_done_tx, mut ops_done) = mpsc::unbounded_channel::<super::ops::OpDone>();
        loop {
            shared
                .heartbeat
                .store(jiff::Timestamp::now().as_second(), Ordering::Relaxed);
            daemon.dispatch(&jobs, &done_tx);
            daemon.publish(&published_tx);
            let next_reload = daemon.next_reload;
            let wake = daemon
                .next_due()
                .unwrap_or(next_reload)
                .min(next_reload)
                .min(daemon.publish_due().unwrap_or(next_reload))
                // Keep the heartbeat fresh even when nothing is due.
                .min(Instant::now() + Duration::from_secs(30));
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => {
                    if Instant::now() >= daemon.next_reload {
                        daemon.next_reload = from_now(jittered(daemon.config.interval));
                        daemon.reload(Reason::Interval, &reload_tx);
                    }
                }
                Some(t) = triggers.recv() => daemon.trigger(t, &reload_tx),
                Some(done) = done_rx.recv() => daemon.finished(done),
                Some(done) = published.recv() => daemon.published(done),
                Some(op) = ops.recv() => daemon.operate(op, &op_done_tx),
                Some(done) = ops_done.recv() => daemon.op_done(done),
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
            let next = tokio::time::timeout_at(deadline, async {
                tokio::select! {
                    Some(done) = done_rx.recv() => Some(Ok(done)),
                    Some(done) = ops_done.recv() => Some(Err(done)),
                    else => None,
                }
            });
            match next.await {
                Ok(Some(Ok(done))) => daemon.finished(done),
                Ok(Some(Err(done))) => daemon.op_done(done),
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
    fn publish(&mut self, published: &mpsc::UnboundedSender<PublishDone>) {
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
        let access = self.config.load.git.clone();
        tokio::task::spawn_blocking(move || {
            let statuses: BTreeMap<String, crate::watch::publish::report::ReportInput> = fleet
                .sites
                .iter()
                .filter_map(|s| {
                    crate::watch::publish::report::ReportInput::read(&state_dir, s.site.as_str())
                        .ok()
                        .map(|st| (s.site.to_string(), st))
                })
                .collect();
            let reached = fleet
                .config
                .reports
                .as_ref()
                .map(|r| crate::git::shown_url(&r.git));
            let result = match crate::watch::publish::report::publish_for_fleet(
                &fleet, &state_dir, &statuses, &access,
            ) {
                Ok(Some(p)) if p.commit.is_some() => {
                    tracing::info!(commit = ?p.commit, sites = ?p.changed, "status reports published");
                    PublishDone {
                        ok: true,
                        failure: None,
                        reached,
                    }
                }
                Ok(_) => {
                    tracing::debug!("status reports unchanged, or no site opted in");
                    PublishDone {
                        ok: true,
                        failure: None,
                        reached,
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "publishing status reports failed");
                    PublishDone {
                        ok: false,
                        failure: e.transport_failure().map(|f| (f, e.to_string())),
                        reached: None,
                    }
                }
            };
            let _ = done.send(result);
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
    fn published(&mut self, done: PublishDone) {
        self.publishing = false;
        if let Some(repo) = &done.reached {
            self.fetches_recovered(std::slice::from_ref(repo));
        }
        if done.ok {
            self.publish_failures = 0;
            self.publish_not_before = None;
            return;
        }
        self.publish_failures = self.publish_failures.saturating_add(1);
        let wait = backoff(self.publish_failures, self.config.interval);
        if let Some((failure, error)) = &done.failure {
            self.fetch_failed(failure, error, wait);
        }
        let at = from_now(wait);
        self.publish_not_before = Some(at);
        self.publish_at = Some(self.publish_at.map_or(at, |p| p.min(at)));
    }

    /// Moves `site`'s next look to `at` if that is earlier.
    ///
    /// A failing site waits out its backoff whatever the trigger, except a
    /// new commit, which may look at once (and acts only if the commit
    /// changed the plan that failed: see [`reconcile`]'s `hold`).
    pub(super) fn schedule(&mut self, site: &str, at: Instant, reason: Reason) {
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

    /// Reconciles that may start now: `--jobs` minus those running.
    fn free_jobs(&self) -> usize {
        self.config.jobs.max(1).saturating_sub(self.running.len())
    }

    /// When the next site that may start is due; none while `--jobs` are
    /// all busy (a finished reconcile wakes the loop).
    fn next_due(&self) -> Option<Instant> {
        if self.free_jobs() == 0 {
            return None;
        }
        self.due
            .iter()
            .filter(|(s, _)| !self.running.contains(*s))
            .map(|(_, (at, _))| *at)
            .min()
    }

    /// Starts the due sites that are not already running, up to `--jobs`.
    fn dispatch(&mut self, jobs: &Arc<Semaphore>, done: &mpsc::UnboundedSender<Done>) {
        let now = Instant::now();
        let mut ready: Vec<(String, Instant, Reason)> = self
            .due
            .iter()
            .filter(|(s, (at, _))| *at <= now && !self.running.contains(*s))
            .map(|(s, (at, r))| (s.clone(), *at, *r))
            .collect();
        // No more are started than `--jobs` can run: the rest stay due, in
        // order, for the next turn (a finished one wakes the loop). Started
        // all at once, a thousand sites a commit made due would queue on
        // the semaphore in whatever order tokio first polled them. A site
        // an operator named (by webhook or from the dashboard) goes first;
        // then the longest due.
        ready.sort_by_key(|(_, at, reason)| (!matches!(reason, Reason::Webhook | Reason::Ui), *at));
        ready.truncate(self.free_jobs());
        for (site, _, reason) in ready {
            self.due.remove(&site);
            let hold = self
                .backoff
                .get(&site)
                .filter(|b| b.until > now)
                .and_then(|b| b.digest.clone());
            self.running.insert(site.clone());
            self.shared.ui.live.started(&site);
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
                // Now, and as the operator's request, even if a commit
                // already made the site due: that decides its place in
                // the queue (see `dispatch`).
                self.due.insert(site.clone(), (now, t.reason));
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
        if reason == Reason::Reload {
            self.reread_credentials();
            self.shared.ui.auth.reload();
        }
        let options = self.config.load.clone();
        let selected = self.config.sites.clone();
        let selector = self.config.selector.clone();
        let tx = reload_tx.clone();
        tokio::task::spawn_blocking(move || {
            let _ = tx.send((reason, load_fleet(&options, &selected, selector.as_ref())));
        });
    }

    /// SIGHUP: reads the git access options' files again (a rotated deploy
    /// key, token or CA). Files that cannot be used now leave the ones read
    /// before in use, and say so: a half-done rotation must not cut the
    /// daemon off from its repositories.
    fn reread_credentials(&mut self) {
        match crate::git::GitAccess::read(&self.config.git) {
            Ok(access) => {
                tracing::info!("SIGHUP: git access options read again");
                self.config.load.git = access;
            }
            Err(e) => tracing::error!(
                error = %e,
                "SIGHUP: the git access options cannot be read; the ones read before stay in use"
            ),
        }
    }

    /// Records a failed fetch (or push) of a repository that is tried
    /// again after `wait`.
    fn fetch_failed(&mut self, failure: &FetchFailure, error: &str, wait: Duration) {
        let label = RepoLabel {
            repo: failure.repo.clone(),
        };
        self.shared
            .metrics
            .fetch_failures
            .get_or_create(&label)
            .inc();
        self.shared
            .metrics
            .fetch_backoff
            .get_or_create(&label)
            .set(wait.as_secs_f64());
        let failures = self
            .shared
            .fetches
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .failed(failure, error, wait);
        tracing::warn!(repo = %failure.repo, kind = failure.kind.as_str(), failures, retry_in = ?wait, "fetch failed; the last good commit stays in use");
    }

    /// Records that `repos` were fetched (or pushed to) again.
    fn fetches_recovered(&mut self, repos: &[String]) {
        let recovered = self
            .shared
            .fetches
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .recovered(repos.iter().map(String::as_str));
        for repo in recovered {
            tracing::info!(repo = %repo, "fetched again");
        }
        for repo in repos {
            self.shared
                .metrics
                .fetch_backoff
                .get_or_create(&RepoLabel { repo: repo.clone() })
                .set(0.0);
        }
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
                let repos = fetched_repos(&self.config.load, &fleet);
                self.fetches_recovered(&repos);
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
                        .views
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
                // A repository that could not be fetched is tried again
                // after a backoff (2 s doubling, capped at the interval),
                // not only at the next interval: it comes back within one
                // interval of the server, whatever the interval.
                let failed: Vec<&Diagnostic> = diags.iter().filter(|d| d.fetch.is_some()).collect();
                if !failed.is_empty() {
                    let in_a_row = self
                        .shared
                        .fetches
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .most_in_a_row();
                    let wait = backoff(in_a_row.saturating_add(1), self.config.interval);
                    for d in failed {
                        if let Some(f) = &d.fetch {
                            self.fetch_failed(f, &d.to_string(), wait);
                        }
                    }
                    self.next_reload = self.next_reload.min(from_now(wait));
                }
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
}

type ReloadSender = mpsc::UnboundedSender<(Reason, Result<Fleet, Vec<Diagnostic>>)>;
