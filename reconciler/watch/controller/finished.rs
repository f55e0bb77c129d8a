//! What a finished reconcile leaves behind: the site's failures in a row,
//! its metrics and log lines, its backoff and next look, and its report
//! for `/status`. The daemon's loop hands each reconcile here when it ends.

use std::time::Duration;

use tokio::time::Instant;

use super::daemon::{Daemon, Done};
use super::{Action, Backoff, Reason, Reconciled, error_policy, from_now, jittered};
use crate::apply::converge::{ApplyError, Outcome};
use crate::load::Fleet;
use crate::observe::status::SiteStatus;
use crate::plan::choose::Class;
use crate::plan::{Held, HeldCode};
use crate::store::SiteState;
use crate::watch::metrics::{
    ClassLabels, KindLabels, Metrics, ProductLabel, ResultLabels, SiteLabel,
};
use crate::watch::notify::raise::Seen;
use crate::watch::publish::notices::Notice;

/// How long after a reconcile its site's file events are taken for the
/// echo of its own writes (inotify delivers them within milliseconds).
pub(super) const ECHO_WINDOW: Duration = Duration::from_secs(1);

/// How a reconcile ended, in the words of `/status` and the metrics.
struct Ended {
    /// `unchanged`, `changed`, `refused`, `failed`, or `deferred`.
    word: &'static str,
    /// The error, in words.
    error: Option<String>,
    /// The error's kind (`preflight`, `rolled_back`, …).
    kind: Option<&'static str>,
}

impl Ended {
    fn of(result: &Reconciled) -> Self {
        let (word, error, kind) = match &result.outcome {
            _ if result.deferred => ("deferred", None, None),
            Ok(Outcome::Unchanged) => ("unchanged", None, None),
            Ok(Outcome::Changed { .. }) => ("changed", None, None),
            Err(e) if e.is_refusal() => ("refused", Some(e.to_string()), Some(e.kind())),
            Err(e) => ("failed", Some(e.to_string()), Some(e.kind())),
        };
        Ended { word, error, kind }
    }
}

impl Daemon {
    /// Records a finished reconcile and schedules the next look.
    pub(super) fn finished(&mut self, done: Done) {
        self.running.remove(&done.site);
        let site = done.site.as_str();
        self.shared
            .metrics
            .duration
            .observe(done.elapsed.as_secs_f64());
        // Every reconcile may have written (a change, its rollback, a
        // recovery): the file events that follow are its echo.
        self.quiet_until
            .insert(site.to_owned(), Instant::now() + ECHO_WINDOW);
        let ended = Ended::of(&done.result);
        count(&self.shared.metrics, site, &ended);
        let failures = self.account(site, &done.result);
        self.notify(site, &done.result, failures);
        self.log(site, done.reason, &done.result, failures);
        if let Some(status) = &done.result.status {
            self.gauge(site, status, &done.result);
        }
        if matches!(ended.word, "unchanged" | "changed") {
            self.shared
                .metrics
                .last_success
                .get_or_create(&SiteLabel { site: site.into() })
                .set(jiff::Timestamp::now().as_duration().as_secs_f64());
        }
        let fleet = self.shared.fleet();
        self.trust(site, &done.result.held, &fleet);
        announce(&self.shared.metrics, &done.result.notices.new);
        let now = Instant::now();
        let (after, reason, backoff) = self.requeue(site, &done.result, failures, now);
        // Reports follow changes a little later, in one batch: a change, a
        // site that starts failing, or the first look. A site that keeps
        // failing the same way has nothing new to report.
        let transition = ended.word == "changed"
            || (matches!(ended.word, "failed" | "refused") && failures == 1);
        let first = done.reason == Reason::Startup;
        self.update_report(site, done.reason, done.result, ended, backoff);
        if transition || first {
            let soon = Instant::now() + Duration::from_secs(2);
            self.publish_at = Some(self.publish_at.map_or(soon, |at| at.min(soon)));
        }
        if let Some(reason) = self.again.remove(site) {
            self.schedule(site, now, reason);
        }
        if fleet.site(site).is_some() {
            self.schedule(site, from_now(after), reason);
        }
        self.shared.ui.live.finished(&self.shared, site);
    }

    /// Raises the events of this reconcile's transitions (SPEC §9) and
    /// hands them to the delivery task; never waits for a target.
    fn notify(&mut self, site: &str, result: &Reconciled, failures: u32) {
        let fleet = self.shared.fleet();
        let labels = fleet
            .site(site)
            .map(|s| s.labels.clone())
            .unwrap_or_default();
        let finished = crate::watch::notify::raise::Finished {
            site,
            labels: &labels,
            outcome: &result.outcome,
            deferred: result.deferred,
            failures,
            held: &result.held,
            notices: &result.notices.new,
            status: result.status.as_ref(),
            at: self.shared.now().to_string(),
        };
        let state = SiteState::new(&self.shared.state_dir, site);
        let seen = self
            .seen
            .entry(site.to_owned())
            .or_insert_with(|| load_seen(&state));
        let before = seen.clone();
        let events = crate::watch::notify::raise::raise(seen, &finished);
        // Only an adopted site's state dir is written to (an unadopted one
        // may not exist, and an untrusted fleet may have moved it).
        let remember = (*seen != before
            && result.status.as_ref().is_some_and(|s| s.version.is_some()))
        .then(|| serde_json::to_vec_pretty(&*seen).ok())
        .flatten()
        .map(|bytes| crate::watch::notify::Remember {
            path: state.notified_path(),
            bytes,
        });
        for e in &events {
            tracing::info!(site, event = %e.kind, item = %e.item, "event raised");
        }
        self.notifier.raise(events, remember);
    }

    /// Counts the site's failures in a row, and returns them: a busy site
    /// is not failing, and a deferred look changes nothing.
    fn account(&self, site: &str, result: &Reconciled) -> u32 {
        let mut failures = 0;
        self.shared.view(site, |r| {
            match &result.outcome {
                _ if result.deferred => {}
                Err(e) if e.is_busy() => {}
                Err(_) => r.failures += 1,
                Ok(_) => r.failures = 0,
            }
            failures = r.failures;
        });
        failures
    }

    /// The reconcile's log line. A failure also counts as one, and a change
    /// or a rollback moves what the file watcher watches.
    fn log(&mut self, site: &str, reason: Reason, result: &Reconciled, failures: u32) {
        match &result.outcome {
            _ if result.deferred => {
                tracing::debug!(
                    site,
                    reason = reason.as_str(),
                    "backing off: the plan that failed is unchanged"
                );
            }
            Ok(Outcome::Changed {
                point,
                files,
                version,
                ..
            }) => {
                tracing::info!(site, reason = reason.as_str(), version = %version, files, point, "converged");
                // A symlink-layout site now lives in another directory.
                self.files.refresh(&self.shared.fleet());
            }
            Ok(Outcome::Unchanged) => {
                tracing::debug!(site, reason = reason.as_str(), "nothing to do");
            }
            Err(e) if e.is_busy() => {
                tracing::debug!(site, reason = reason.as_str(), error = %e, "busy")
            }
            Err(e) => {
                self.shared
                    .metrics
                    .failures
                    .get_or_create(&SiteLabel { site: site.into() })
                    .inc();
                if e.is_refusal() {
                    tracing::warn!(site, reason = reason.as_str(), kind = e.kind(), error = %e, failures, "refused");
                } else {
                    tracing::error!(site, reason = reason.as_str(), kind = e.kind(), error = %e, failures, "failed");
                }
                // The change failed and was rolled back: the site's files
                // may have moved (symlink layout), as after a change.
                if matches!(e, ApplyError::RolledBack { .. }) {
                    self.files.refresh(&self.shared.fleet());
                }
            }
        }
    }

    /// The site's gauges after a look: drifted files (logged when they
    /// change), pending and held items, and newer releases by class.
    fn gauge(&self, site: &str, status: &SiteStatus, result: &Reconciled) {
        let metrics = &self.shared.metrics;
        let label = SiteLabel { site: site.into() };
        let previous = self
            .shared
            .views
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
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
            .set(result.held.len() as i64);
        for class in [Class::Eligible, Class::Questionable, Class::Ineligible] {
            let n = result.available.iter().filter(|c| **c == class).count();
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

    /// An untrusted catalog commit is logged at every look, and its
    /// product's trust gauge follows the site's plan.
    fn trust(&self, site: &str, held: &[Held], fleet: &Fleet) {
        let untrusted = held.iter().find(|h| h.code == HeldCode::UntrustedSource);
        if let Some(h) = untrusted {
            tracing::error!(site, reason = %h.reason, "the catalog commit is not trusted; nothing is applied until a trusted commit arrives");
        }
        if let Some(product) = fleet.site(site).map(|s| s.product.clone()) {
            self.shared
                .metrics
                .catalog_trusted
                .get_or_create(&ProductLabel { product })
                .set(i64::from(untrusted.is_none()));
        }
    }

    /// When to look at the site next, and the backoff that holds every
    /// trigger but a plan-changing commit or an operator until then.
    /// Returns the wait, the reason of the next look, and the backoff left
    /// in seconds (0 when the site is not failing).
    fn requeue(
        &mut self,
        site: &str,
        result: &Reconciled,
        failures: u32,
        now: Instant,
    ) -> (Duration, Reason, f64) {
        let (action, reason) = match &result.outcome {
            _ if result.deferred => match self.backoff.get(site) {
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
        match &result.outcome {
            _ if result.deferred => {}
            Err(e) if !e.is_busy() => {
                self.backoff.insert(
                    site.to_owned(),
                    Backoff {
                        until: from_now(after),
                        digest: result.digest.clone(),
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
        self.shared
            .metrics
            .backoff
            .get_or_create(&SiteLabel { site: site.into() })
            .set(backoff);
        (after, reason, backoff)
    }

    /// The site's report for `/status`. A deferred look leaves the site's
    /// error standing.
    fn update_report(
        &self,
        site: &str,
        reason: Reason,
        result: Reconciled,
        ended: Ended,
        backoff: f64,
    ) {
        let at = self.shared.now().to_string();
        self.shared.view(site, |r| {
            if let Some(status) = result.status {
                r.status = status;
                r.notices = result.notices.current;
            }
            r.held = result.held;
            r.last_reconcile = Some(at);
            r.reason = Some(reason);
            r.outcome = Some(ended.word);
            if !result.deferred {
                r.error = ended.error;
                r.error_kind = ended.kind;
            }
            r.backoff_seconds = backoff;
        });
    }
}

/// Counts a reconcile by its result, and a failure by its kind.
fn count(metrics: &Metrics, site: &str, ended: &Ended) {
    metrics
        .reconciles
        .get_or_create(&ResultLabels {
            site: site.into(),
            result: ended.word.into(),
        })
        .inc();
    if let Some(kind) = ended.kind {
        metrics
            .errors
            .get_or_create(&KindLabels {
                site: site.into(),
                kind: kind.into(),
            })
            .inc();
    }
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

/// The site's memory of what was notified; missing or unreadable, an
/// empty one: the worst case is one repeated notification.
fn load_seen(state: &SiteState) -> Seen {
    std::fs::read(state.notified_path())
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}
