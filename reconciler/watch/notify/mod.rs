//! Notifications (SPEC §9): the daemon's delivery task, beside the
//! reconciles.
//!
//! A finished reconcile raises events ([`raise`]) and hands them to this
//! task, which routes each to the `notify:` targets that want it (by
//! `events` and `sites`), writes each (event, target) durably to the outbox
//! and only then sends. Events of one type for one target wait for an
//! aggregation window (30 s) from the first, so many sites failing the same
//! release make one message. A message accepted (2xx, SMTP accepted) is
//! removed from the outbox; one that is not is retried with a backoff per
//! target, across restarts (the outbox is read at start). The sends run on
//! blocking threads from this task alone: a target that is down or slow
//! delays only its own messages, never a reconcile.

mod courier;
pub mod raise;
pub mod relay;
pub mod send;

pub use courier::{Courier, Handed};

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::controller::Shared;
use super::metrics::TargetResultLabels;
use crate::load::Fleet;
use crate::model::NotifyTarget;
use crate::store::{Event, Outbox, Queued};

/// The longest one message gets: a very large fleet failing at once makes
/// several messages rather than one no one can read.
const MAX_PER_MESSAGE: usize = 100;

/// How often the outbox is read again for what other commands left.
const RESCAN: Duration = Duration::from_secs(60);

/// The first retry after a failed delivery; doubled each time, capped.
const RETRY_BASE: Duration = Duration::from_secs(2);
const RETRY_CAP: Duration = Duration::from_secs(300);

/// The aggregation window: 30 s (SPEC §9), or `SITEKEEPER_NOTIFY_WINDOW`
/// (a duration such as `1s`), which tests use to stay short.
fn window() -> Duration {
    std::env::var("SITEKEEPER_NOTIFY_WINDOW")
        .ok()
        .and_then(|v| v.parse::<crate::model::values::Duration>().ok())
        .map_or(Duration::from_secs(30), |d| d.0)
}

/// The last failed delivery of a target, for `/status`.
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryError {
    /// The target.
    pub target: String,
    /// What went wrong.
    pub error: String,
    /// When (RFC 3339).
    pub at: String,
    /// Messages waiting for it.
    pub waiting: usize,
}

/// A site's memory of what was notified, to be saved once the events
/// that changed it are in the outbox: saved first, a crash in between
/// would lose them (at most once); saved after, it costs at worst one
/// repeat (at least once, as SPEC §9 promises).
#[derive(Debug)]
pub struct Remember {
    /// The site's `notified.json`.
    pub path: PathBuf,
    /// Its new content.
    pub bytes: Vec<u8>,
}

/// What the daemon hands the delivery task.
struct Raised {
    events: Vec<Event>,
    remember: Option<Remember>,
}

/// The sending half: the daemon hands raised events here.
#[derive(Clone)]
pub struct Notifier {
    tx: mpsc::UnboundedSender<Raised>,
}

impl Notifier {
    /// Queues `events` for delivery, and `remember` to be saved once they
    /// are in the outbox.
    pub fn raise(&self, events: Vec<Event>, remember: Option<Remember>) {
        if events.is_empty() && remember.is_none() {
            return;
        }
        if self.tx.send(Raised { events, remember }).is_err() {
            tracing::warn!("the notification task has stopped; events are lost");
        }
    }
}

/// Starts the delivery task on the current runtime.
pub fn start(shared: Arc<Shared>) -> Notifier {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(run(shared, rx, window()));
    Notifier { tx }
}

/// One outbox entry waiting for its target.
struct Waiting {
    path: PathBuf,
    queued: Queued,
    /// Not sent before then (the aggregation window).
    ready: Instant,
}

/// A target's retries.
#[derive(Default)]
struct Retry {
    failures: u32,
    not_before: Option<Instant>,
}

/// This host's name, for messages.
fn host() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

/// The target named `name` in the fleet in use.
fn target<'a>(fleet: &'a Fleet, name: &str) -> Option<&'a NotifyTarget> {
    fleet.config.notify.iter().find(|t| t.name == name)
}

/// Saves a site's memory of what was notified. A cache-level write, as
/// for upgrade notices: losing the last save costs one repeated
/// notification, which does not justify an fsync per event.
fn remember_now(r: &Remember) {
    if let Err(e) = crate::store::atomic_write(&r.path, &r.bytes, crate::store::Durability::Cache) {
        tracing::warn!(path = %r.path.display(), error = %e, "cannot keep what was notified; a restart may notify it again");
    }
}

async fn run(shared: Arc<Shared>, mut rx: mpsc::UnboundedReceiver<Raised>, window: Duration) {
    let outbox = Outbox::new(&shared.state_dir);
    let host = host();
    // What a crash or a stop left: due now, oldest first.
    let mut waiting: Vec<Waiting> = {
        let outbox = outbox.clone();
        let (found, errors) = tokio::task::spawn_blocking(move || outbox.list())
            .await
            .unwrap_or_default();
        for e in errors {
            tracing::warn!(error = %e, "an outbox entry cannot be read; it is left for an operator");
        }
        if !found.is_empty() {
            tracing::info!(
                events = found.len(),
                "resuming notifications from the outbox"
            );
        }
        let now = Instant::now();
        found
            .into_iter()
            .map(|(path, queued)| Waiting {
                path,
                queued,
                ready: now,
            })
            .collect()
    };
    let mut retries: BTreeMap<String, Retry> = BTreeMap::new();
    // `apply` and `rollback` on the command line leave what they could
    // not deliver in the outbox: looked for now and then.
    let mut rescan_at = Instant::now() + RESCAN;
    loop {
        shared.metrics.outbox_depth.set(waiting.len() as i64);
        let wake = waiting
            .iter()
            .map(|w| {
                let nb = retries
                    .get(&w.queued.target)
                    .and_then(|r| r.not_before)
                    .unwrap_or(w.ready);
                w.ready.max(nb)
            })
            .min();
        tokio::select! {
            got = rx.recv() => match got {
                Some(Raised { events, remember }) => {
                    let fleet = shared.fleet();
                    let queued = route(&fleet.config.notify, events);
                    let now = Instant::now();
                    let outbox = outbox.clone();
                    let written = tokio::task::spawn_blocking(move || {
                        let written = queued.into_iter().map(|q| match outbox.put(&q) {
                            Ok(path) => (path, q),
                            Err(e) => {
                                // Sent anyway, once, from memory: better
                                // than not at all.
                                tracing::error!(error = %e, "cannot write an event to the outbox");
                                (PathBuf::new(), q)
                            }
                        }).collect::<Vec<_>>();
                        if let Some(r) = remember {
                            remember_now(&r);
                        }
                        written
                    }).await.unwrap_or_default();
                    for (path, queued) in written {
                        // Joins the open window of its target and type, if any.
                        let ready = waiting
                            .iter()
                            .filter(|w| w.queued.target == queued.target && w.queued.event.kind == queued.event.kind && w.ready > now)
                            .map(|w| w.ready)
                            .min()
                            .unwrap_or(now + window);
                        // The same event again replaces the waiting copy.
                        waiting.retain(|w| w.path != path || path.as_os_str().is_empty());
                        waiting.push(Waiting { path, queued, ready });
                    }
                }
                None => return,
            },
            () = tokio::time::sleep_until(rescan_at) => {
                rescan_at = Instant::now() + RESCAN;
                let o = outbox.clone();
                let (found, _) = tokio::task::spawn_blocking(move || o.list()).await.unwrap_or_default();
                let now = Instant::now();
                for (path, queued) in found {
                    if !waiting.iter().any(|w| w.path == path) {
                        waiting.push(Waiting { path, queued, ready: now });
                    }
                }
            }
            () = sleep_until(wake) => {
                deliver_due(&shared, &outbox, &host, &mut waiting, &mut retries).await;
            }
        }
    }
}

/// A message's target and event type.
type MessageKey = (String, String);

/// Removes delivered (or undeliverable) events from the outbox, on a
/// blocking thread: each removal is made durable.
async fn remove_all(outbox: &Outbox, paths: Vec<PathBuf>) {
    let outbox = outbox.clone();
    let _ = tokio::task::spawn_blocking(move || {
        for p in paths.iter().filter(|p| !p.as_os_str().is_empty()) {
            if let Err(e) = outbox.remove(p) {
                tracing::error!(error = %e, "cannot remove an event from the outbox; it may be sent again");
            }
        }
    })
    .await;
}

/// Sleeps until `at`, or forever without one.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Each event of `events` once for each target that wants its type and
/// covers its site.
fn route(targets: &[NotifyTarget], events: Vec<Event>) -> Vec<Queued> {
    let mut out = Vec::new();
    for event in events {
        let Ok(kind) = event.kind.parse::<crate::model::words::EventType>() else {
            continue;
        };
        for t in targets {
            if t.wants(kind) && t.covers(&event.labels) {
                out.push(Queued {
                    target: t.name.clone(),
                    event: event.clone(),
                });
            }
        }
    }
    out
}

/// Sends every message that is due: the waiting entries of one target and
/// one type, together. Targets are sent to at once, each on its own
/// blocking thread, so a slow one (an SMTP server taking its 10 s) delays
/// only its own messages; one target's messages go one after another, and
/// stop at its first failure (its backoff starts there).
async fn deliver_due(
    shared: &Arc<Shared>,
    outbox: &Outbox,
    host: &str,
    waiting: &mut Vec<Waiting>,
    retries: &mut BTreeMap<String, Retry>,
) {
    let now = Instant::now();
    let due = |w: &Waiting, retries: &BTreeMap<String, Retry>| {
        w.ready <= now
            && retries
                .get(&w.queued.target)
                .and_then(|r| r.not_before)
                .is_none_or(|nb| nb <= now)
    };
    // Group by (target, type), in the order they wait.
    let mut groups: Vec<(MessageKey, Vec<usize>)> = Vec::new();
    for (i, w) in waiting.iter().enumerate() {
        if !due(w, retries) {
            continue;
        }
        let key = (w.queued.target.clone(), w.queued.event.kind.clone());
        match groups
            .iter_mut()
            .find(|(k, v)| *k == key && v.len() < MAX_PER_MESSAGE)
        {
            Some((_, v)) => v.push(i),
            None => groups.push((key, vec![i])),
        }
    }
    let mut delivered: Vec<usize> = Vec::new();
    let fleet = shared.fleet();
    // Each target's messages, in order.
    let mut by_target: BTreeMap<String, Vec<Vec<usize>>> = BTreeMap::new();
    for ((name, _), members) in groups {
        by_target.entry(name).or_default().push(members);
    }
    let mut sends = tokio::task::JoinSet::new();
    for (name, messages) in by_target {
        let Some(t) = target(&fleet, &name) else {
            // Removed from fleet.yaml: no one to send them to, and kept
            // they would be read again at every rescan.
            let members: Vec<usize> = messages.into_iter().flatten().collect();
            tracing::warn!(target = %name, events = members.len(), "dropping events for a notify target no longer in fleet.yaml");
            let paths: Vec<PathBuf> = members.iter().map(|&i| waiting[i].path.clone()).collect();
            remove_all(outbox, paths).await;
            delivered.extend(&members);
            continue;
        };
        let t = t.clone();
        let secret = t
            .secret_file
            .as_deref()
            .and_then(|s| fleet.notify_secret_path(s));
        let host = host.to_owned();
        let messages: Vec<(Vec<usize>, Vec<Event>)> = messages
            .into_iter()
            .map(|members| {
                let events = members
                    .iter()
                    .map(|&i| waiting[i].queued.event.clone())
                    .collect();
                (members, events)
            })
            .collect();
        sends.spawn_blocking(move || {
            let mut answers = Vec::new();
            for (members, events) in messages {
                let result =
                    send::send(&t, secret.as_deref(), &events, &host).map_err(|e| e.to_string());
                let failed = result.is_err();
                answers.push((members, result));
                if failed {
                    break;
                }
            }
            (t.name, answers)
        });
    }
    while let Some(joined) = sends.join_next().await {
        let (name, answers) = match joined {
            Ok(done) => done,
            Err(e) => {
                // The thread panicked: its events stay waiting and are
                // tried again at the next turn.
                tracing::error!(error = %e, "a delivery thread failed");
                continue;
            }
        };
        for (members, result) in answers {
            let ok = account(shared, retries, waiting, &name, members.len(), result);
            if ok {
                let paths: Vec<PathBuf> =
                    members.iter().map(|&i| waiting[i].path.clone()).collect();
                remove_all(outbox, paths).await;
                delivered.extend(&members);
            }
        }
    }
    delivered.sort_unstable();
    for i in delivered.into_iter().rev() {
        waiting.remove(i);
    }
}

/// Records one message's answer: metrics, the target's backoff, and its
/// error in `/status`. Returns whether it was accepted.
fn account(
    shared: &Arc<Shared>,
    retries: &mut BTreeMap<String, Retry>,
    waiting: &[Waiting],
    name: &str,
    events: usize,
    result: Result<send::Accepted, String>,
) -> bool {
    let count = |result: &str| {
        shared
            .metrics
            .notifications
            .get_or_create(&TargetResultLabels {
                target: name.to_owned(),
                result: result.into(),
            })
            .inc();
    };
    match result {
        Ok(accepted) => {
            tracing::info!(target = %name, events, code = accepted.code, "notification delivered");
            count("delivered");
            retries.remove(name);
            shared
                .notify_errors
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(name);
            true
        }
        Err(error) => {
            let retry = retries.entry(name.to_owned()).or_default();
            retry.failures = retry.failures.saturating_add(1);
            let wait = RETRY_BASE
                .saturating_mul(1 << retry.failures.saturating_sub(1).min(16))
                .min(RETRY_CAP);
            retry.not_before = Some(Instant::now() + wait);
            tracing::warn!(target = %name, error = %error, retry_in = ?wait, "notification not delivered");
            count("failed");
            let waiting_for = waiting.iter().filter(|w| w.queued.target == name).count();
            shared
                .notify_errors
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(
                    name.to_owned(),
                    DeliveryError {
                        target: name.to_owned(),
                        error,
                        at: jiff::Timestamp::now().to_string(),
                        waiting: waiting_for,
                    },
                );
            false
        }
    }
}
