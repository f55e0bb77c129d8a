//! Delivery for `apply` and `rollback` on the command line (SPEC §9):
//! events go out while the other sites are still being converged, not
//! after them.
//!
//! A site's events are written to the outbox by the thread that raised
//! them (durably, before anything is sent), then handed to one delivery
//! thread. The command waits for that thread only until [`Courier::within`]
//! after its *first* event: a fleet apply that takes longer than that has
//! nothing left to wait for at its end, whatever the target does, and a
//! short one waits a bounded few seconds. What is not accepted by then
//! stays in the outbox for the daemon or the next command. The delivery
//! thread is never joined past that deadline: a target that never answers
//! cannot keep the command alive.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::{Delivered, MessageKey, host, route};
use crate::load::Fleet;
use crate::model::NotifyTarget;
use crate::store::{Event, Outbox};

/// A target as the delivery thread needs it: with its secret file resolved
/// against the fleet's directory.
#[derive(Clone)]
struct Resolved {
    target: NotifyTarget,
    secret: Option<PathBuf>,
}

/// Events handed to the delivery thread, each with its outbox entry (none
/// when it could not be written: then it is sent once, from memory), and
/// the moment the command stops waiting for it.
struct Batch {
    events: Vec<(Option<PathBuf>, String, Event)>,
    deadline: Instant,
}

/// An event and its outbox entry, if it could be written.
type Kept = (Option<PathBuf>, Event);

/// Hands a command's events to a delivery thread as they are raised.
pub struct Courier {
    targets: Vec<NotifyTarget>,
    outbox: Outbox,
    within: Duration,
    tx: Mutex<Option<mpsc::Sender<Batch>>>,
    /// The delivery thread's answers (behind a lock only so that the
    /// courier can be shared by the threads converging sites).
    delivered: Mutex<mpsc::Receiver<Delivered>>,
    /// When the first event was raised, plus `within`.
    deadline: Mutex<Option<Instant>>,
    /// Events routed to each target so far, to name what was not sent.
    routed: Mutex<BTreeMap<String, usize>>,
}

impl Courier {
    /// A courier for `fleet`'s targets, or `None` when it has none. The
    /// command waits at most `within` after the first event is raised.
    pub fn start(fleet: &Fleet, state_dir: &std::path::Path, within: Duration) -> Option<Self> {
        if fleet.config.notify.is_empty() {
            return None;
        }
        let resolved: Vec<Resolved> = fleet
            .config
            .notify
            .iter()
            .map(|t| Resolved {
                target: t.clone(),
                secret: t
                    .secret_file
                    .as_deref()
                    .and_then(|s| fleet.notify_secret_path(s)),
            })
            .collect();
        let outbox = Outbox::new(state_dir);
        let (tx, rx) = mpsc::channel::<Batch>();
        let (done_tx, delivered) = mpsc::channel::<Delivered>();
        let thread_outbox = outbox.clone();
        let spawned = std::thread::Builder::new()
            .name("sitekeeper-notify".into())
            .spawn(move || deliver(&resolved, &thread_outbox, &rx, &done_tx));
        if let Err(e) = spawned {
            // Everything raised still reaches the outbox; the daemon or the
            // next command sends it.
            tracing::error!(error = %e, "cannot start the notification thread");
        }
        Some(Courier {
            targets: fleet.config.notify.clone(),
            outbox,
            within,
            tx: Mutex::new(Some(tx)),
            delivered: Mutex::new(delivered),
            deadline: Mutex::new(None),
            routed: Mutex::new(BTreeMap::new()),
        })
    }

    /// How long the command waits after its first event.
    pub fn within(&self) -> Duration {
        self.within
    }

    /// Writes `events` to the outbox for every target that wants them and
    /// hands them to the delivery thread. Called from the thread that
    /// converged the site, so the outbox write is done when it returns.
    pub fn raise(&self, events: Vec<Event>) {
        if events.is_empty() {
            return;
        }
        let deadline = *self
            .deadline
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert_with(|| Instant::now() + self.within);
        let mut batch = Vec::new();
        for q in route(&self.targets, events) {
            let path = self
                .outbox
                .put(&q)
                .map_err(|e| tracing::error!(error = %e, "cannot write an event to the outbox"))
                .ok();
            *self
                .routed
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(q.target.clone())
                .or_default() += 1;
            batch.push((path, q.target, q.event));
        }
        let tx = self.tx.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(tx) = tx.as_ref()
            && !batch.is_empty()
            && tx
                .send(Batch {
                    events: batch,
                    deadline,
                })
                .is_err()
        {
            tracing::warn!("the notification thread has stopped; the events wait in the outbox");
        }
    }

    /// Waits for the delivery thread until the deadline (the first event's
    /// time plus `within`; no wait when nothing was raised) and says what
    /// each target did. Targets that did not answer in time are reported
    /// as such; their events stay in the outbox.
    pub fn finish(self) -> Vec<Delivered> {
        drop(
            self.tx
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        let deadline = *self.deadline.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out: Vec<Delivered> = Vec::new();
        let delivered = self
            .delivered
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(deadline) = deadline {
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match delivered.recv_timeout(left) {
                    Ok(d) => out.push(d),
                    Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                }
            }
        }
        let routed = self
            .routed
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner);
        for (target, count) in routed {
            let answered: usize = out
                .iter()
                .filter(|d| d.target == target)
                .map(|d| d.events)
                .sum();
            if answered < count {
                out.push(Delivered {
                    target,
                    events: count - answered,
                    result: Err("not sent in time; kept in the outbox".to_owned()),
                });
            }
        }
        out
    }
}

/// The delivery thread: takes what has been raised so far, sends it as
/// one message per target and type, and reports each answer, until the
/// command drops its sender.
fn deliver(
    targets: &[Resolved],
    outbox: &Outbox,
    rx: &mpsc::Receiver<Batch>,
    done: &mpsc::Sender<Delivered>,
) {
    let host = host();
    while let Ok(first) = rx.recv() {
        // Whatever else is already waiting goes in the same messages.
        let mut deadline = first.deadline;
        let mut groups: Vec<(MessageKey, Vec<Kept>)> = Vec::new();
        for batch in std::iter::once(first).chain(rx.try_iter()) {
            deadline = deadline.min(batch.deadline);
            for (path, target, event) in batch.events {
                let key = (target, event.kind.clone());
                match groups.iter_mut().find(|(k, _)| *k == key) {
                    Some((_, members)) => members.push((path, event)),
                    None => groups.push((key, vec![(path, event)])),
                }
            }
        }
        for ((name, _), members) in groups {
            let left = deadline.saturating_duration_since(Instant::now());
            let result = match targets.iter().find(|r| r.target.name == name) {
                _ if left.is_zero() => Err("not sent in time; kept in the outbox".to_owned()),
                None => Err("no such target".to_owned()),
                Some(r) => {
                    let events: Vec<Event> = members.iter().map(|(_, e)| e.clone()).collect();
                    super::send::send_within(&r.target, r.secret.as_deref(), &events, &host, left)
                        .map_err(|e| format!("{e}; kept in the outbox"))
                }
            };
            if result.is_ok() {
                for path in members.iter().filter_map(|(p, _)| p.as_ref()) {
                    if let Err(e) = outbox.remove(path) {
                        tracing::error!(error = %e, "cannot remove a delivered event from the outbox");
                    }
                }
            }
            let report = Delivered {
                target: name,
                events: members.len(),
                result,
            };
            if done.send(report).is_err() {
                // The command has stopped listening; the outbox keeps the rest.
                return;
            }
        }
    }
}
