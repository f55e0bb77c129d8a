//! Which events a finished reconcile raises (SPEC §9): transitions only.
//!
//! A failure is raised on the first failure in a row (the daemon's count,
//! which its backoff already keeps), by the error's kind, never its text;
//! `recovered` when a failing site works again; a held item that needs a
//! person (`approval_required`, `untrusted_source`) when it appears; new
//! upgrade notices (already rate-limited by `publish::notices`); drift when
//! the drifted files change. Pure: no I/O, no clock (the time comes in).
//! What was notified ([`Seen`]) is kept by the daemon in each adopted
//! site's state dir, so a restart does not notify a condition again.

use std::collections::{BTreeMap, BTreeSet};

use crate::apply::converge::{ApplyError, Outcome};
use crate::model::words::EventType;
use crate::observe::status::SiteStatus;
use crate::plan::{Held, HeldCode};
use crate::store::Event;
use crate::watch::publish::notices::Notice;

/// What was already notified of one site, so that a condition that
/// persists is not notified again, also across a restart of the daemon
/// (it is saved as the site's `notified.json`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Seen {
    /// The failure notified last, until the site recovers.
    trouble: Option<EventType>,
    /// The ids of that failure's events: the same failure met again (after
    /// a restart, or after a look that found nothing to do) is not
    /// notified twice; another one (a newer release rolled back) is.
    failure_ids: BTreeSet<String>,
    held: BTreeSet<(EventType, String)>,
    drift: Vec<String>,
}

/// A finished reconcile, as far as notifications care.
pub struct Finished<'a> {
    /// The site.
    pub site: &'a str,
    /// Its labels (targets select on them).
    pub labels: &'a BTreeMap<String, String>,
    /// The change, or why there was none.
    pub outcome: &'a Result<Outcome, ApplyError>,
    /// A look while backing off: nothing happened.
    pub deferred: bool,
    /// Failures in a row after it.
    pub failures: u32,
    /// Held items.
    pub held: &'a [Held],
    /// Upgrade notices new now.
    pub notices: &'a [Notice],
    /// The site afterwards.
    pub status: Option<&'a SiteStatus>,
    /// Now (RFC 3339).
    pub at: String,
}

/// The event type of a failure, by its kind.
fn failure_type(e: &ApplyError) -> EventType {
    match e {
        ApplyError::RolledBack { .. } => EventType::RolledBack,
        ApplyError::Preflight { .. } => EventType::Preflight,
        ApplyError::FailureMarker { .. } => EventType::FailureMarker,
        ApplyError::Untrusted { .. } => EventType::UntrustedSource,
        ApplyError::ApprovalMissing { .. } => EventType::ApprovalRequired,
        ApplyError::DriftBlocked { .. } => EventType::Drift,
        _ => EventType::Failed,
    }
}

/// Makes an event of this site: type, item, reason, point.
type MakeEvent<'a> = &'a dyn Fn(EventType, &str, String, Option<u64>) -> Event;

/// The events of the first failure in a row.
fn failure_events(e: &ApplyError, event: MakeEvent<'_>, point: Option<u64>) -> Vec<Event> {
    let mut out = Vec::new();
    match e {
        ApplyError::RolledBack {
            reason,
            point: p,
            quarantined,
            ..
        } => {
            let item = quarantined.join(", ");
            out.push(event(
                EventType::RolledBack,
                &item,
                reason.clone(),
                Some(*p),
            ));
            if !quarantined.is_empty() {
                out.push(event(
                    EventType::Quarantined,
                    &item,
                    format!("{reason}; automatic changes skip it on this site"),
                    Some(*p),
                ));
            }
        }
        ApplyError::Preflight { checks, .. } => {
            let item: Vec<&str> = checks.iter().map(|c| c.check.as_str()).collect();
            out.push(event(
                EventType::Preflight,
                &item.join(", "),
                e.to_string(),
                point,
            ));
        }
        other => out.push(event(
            failure_type(other),
            other.kind(),
            other.to_string(),
            point,
        )),
    }
    out
}

/// The events of a failed `apply` or `rollback` on the command line: an
/// operator's own command has no memory of earlier runs, so every failure
/// is raised (the stable id lets a receiver see a repeat for what it is),
/// except a request that was itself wrong, which its author reads at the
/// terminal ([`ApplyError::is_request_error`]).
pub fn of_cli_error(
    site: &str,
    labels: &BTreeMap<String, String>,
    e: &ApplyError,
    at: &str,
) -> Vec<Event> {
    if e.is_busy() || e.is_request_error() {
        return Vec::new();
    }
    let event = |kind: EventType, item: &str, reason: String, point: Option<u64>| {
        Event::new(
            kind.as_str(),
            at.to_owned(),
            site,
            labels.clone(),
            None,
            item,
            reason,
            point,
        )
    };
    failure_events(e, &event, None)
}

/// The events `f` raises, updating `seen`.
pub fn raise(seen: &mut Seen, f: &Finished<'_>) -> Vec<Event> {
    let version = f.status.and_then(|s| s.version.clone());
    let point = f.status.and_then(|s| s.point);
    let event = |kind: EventType, item: &str, reason: String, point: Option<u64>| {
        Event::new(
            kind.as_str(),
            f.at.clone(),
            f.site,
            f.labels.clone(),
            version.clone(),
            item,
            reason,
            point,
        )
    };
    let mut out = Vec::new();
    match f.outcome {
        _ if f.deferred => {}
        Err(e) if e.is_busy() => {}
        Err(e) => {
            if f.failures == 1 {
                let events = failure_events(e, &event, point);
                let ids: BTreeSet<String> = events.iter().map(|e| e.id.clone()).collect();
                if ids != seen.failure_ids {
                    out.extend(events);
                    seen.failure_ids = ids;
                }
            }
            seen.trouble.get_or_insert(failure_type(e));
        }
        Ok(outcome) => {
            // A rolled-back change leaves the site on its old version and
            // the release quarantined: the next look finds nothing to do,
            // which is not a recovery. That is a change that works, or the
            // quarantine lifted.
            let recovered = match (seen.trouble, outcome) {
                (None, _) => false,
                (Some(_), Outcome::Changed { .. }) => true,
                (Some(EventType::RolledBack), _) => {
                    f.status.is_some_and(|s| s.quarantined.is_empty())
                }
                (Some(_), _) => true,
            };
            if recovered {
                let was = seen.trouble.map_or("", EventType::as_str);
                out.push(event(
                    EventType::Recovered,
                    "",
                    format!("it works again after {was}"),
                    point,
                ));
                seen.trouble = None;
                seen.failure_ids.clear();
            }
        }
    }
    // Whole-plan holds that a person must lift: the daemon does not fail
    // on them (it reports and waits), so they are raised when they appear.
    let held: BTreeSet<(EventType, String)> = f
        .held
        .iter()
        .filter_map(|h| match h.code {
            HeldCode::ApprovalRequired => Some((EventType::ApprovalRequired, h.item.clone())),
            HeldCode::UntrustedSource => Some((EventType::UntrustedSource, h.item.clone())),
            _ => None,
        })
        .collect();
    for (kind, item) in held.difference(&seen.held) {
        let reason = f
            .held
            .iter()
            .find(|h| &h.item == item)
            .map(|h| h.reason.clone())
            .unwrap_or_default();
        if !out.iter().any(|e| e.kind == kind.as_str()) {
            out.push(event(*kind, item, reason, point));
        }
    }
    seen.held = held;
    for n in f.notices {
        out.push(event(
            EventType::UpgradeAvailable,
            &format!("release {}", n.version),
            format!("{}; {}", n.reason, n.held.reason),
            point,
        ));
    }
    if let Some(status) = f.status {
        if !status.drift.is_empty() && status.drift != seen.drift {
            let shown: Vec<&str> = status.drift.iter().take(10).map(String::as_str).collect();
            let more = status.drift.len().saturating_sub(shown.len());
            let mut item = shown.join(", ");
            if more > 0 {
                item.push_str(&format!(" and {more} more"));
            }
            out.push(event(
                EventType::Drift,
                &item,
                format!(
                    "{} managed file{} differ from the last rollback point",
                    status.drift.len(),
                    if status.drift.len() == 1 { "" } else { "s" }
                ),
                point,
            ));
        }
        seen.drift = status.drift.clone();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rolled_back() -> Result<Outcome, ApplyError> {
        Err(ApplyError::RolledBack {
            site: "s".into(),
            reason: "hook failed".into(),
            point: 3,
            quarantined: vec!["release 1.1.0".into()],
        })
    }

    fn finished<'a>(
        outcome: &'a Result<Outcome, ApplyError>,
        labels: &'a BTreeMap<String, String>,
        after: u32,
    ) -> Finished<'a> {
        Finished {
            site: "s",
            labels,
            outcome,
            deferred: false,
            failures: after,
            held: &[],
            notices: &[],
            status: None,
            at: "2026-11-20T10:00:00Z".into(),
        }
    }

    #[test]
    fn a_failing_site_is_notified_once_and_once_more_when_it_recovers() {
        let labels = BTreeMap::new();
        let mut seen = Seen::default();
        let failed = rolled_back();
        let first = raise(&mut seen, &finished(&failed, &labels, 1));
        let kinds: Vec<&str> = first.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["rolled_back", "quarantined"]);
        assert_eq!(first[0].point, Some(3));
        assert!(raise(&mut seen, &finished(&failed, &labels, 2)).is_empty());
        // Back on the old version with the release quarantined: not a recovery.
        let ok = Ok(Outcome::Unchanged);
        let status = SiteStatus {
            site: "s".into(),
            version: Some("1.0.0".into()),
            fixes: Vec::new(),
            point: Some(4),
            drift: Vec::new(),
            pending: 0,
            last_result: None,
            catalog_trust: crate::load::Trust::NotRequired,
            fleet_trust: crate::load::Trust::NotRequired,
            quarantined: vec!["release 1.1.0".into()],
            preflight: Vec::new(),
            failure: None,
        };
        let mut f = finished(&ok, &labels, 0);
        f.status = Some(&status);
        assert!(raise(&mut seen, &f).is_empty());
        let changed = Ok(Outcome::Changed {
            point: 5,
            files: 1,
            version: "1.1.1".into(),
            note: None,
        });
        let back = raise(&mut seen, &finished(&changed, &labels, 0));
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].kind, "recovered");
        assert!(raise(&mut seen, &finished(&ok, &labels, 0)).is_empty());
        let busy = Err(ApplyError::LockBusy { site: "s".into() });
        assert!(raise(&mut seen, &finished(&busy, &labels, 0)).is_empty());
    }

    #[test]
    fn holds_are_notified_when_they_appear() {
        let labels = BTreeMap::new();
        let mut seen = Seen::default();
        let ok = Ok(Outcome::Unchanged);
        let held = [Held {
            item: "release 2.0.0".into(),
            code: HeldCode::ApprovalRequired,
            reason: "needs approval".into(),
        }];
        let mut f = finished(&ok, &labels, 0);
        f.held = &held;
        assert_eq!(raise(&mut seen, &f).len(), 1);
        assert!(raise(&mut seen, &f).is_empty());
        f.held = &[];
        assert!(raise(&mut seen, &f).is_empty());
        f.held = &held;
        assert_eq!(raise(&mut seen, &f)[0].kind, "approval_required");
    }
}
