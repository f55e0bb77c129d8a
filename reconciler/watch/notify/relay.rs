//! `sitekeeper notify relay`: the background sender of a command's
//! notifications (SPEC §9), so that `apply` and `rollback` never wait for a
//! notify target.
//!
//! The command ([`super::Courier`]) starts this process at its first event,
//! writes each event to the outbox (durably) and then to this process's
//! stdin, one JSON line each, and exits when its own work is done. The
//! relay sends what it reads, one message per target and event type, and
//! removes each accepted event from the outbox. When its stdin ends (the
//! command has exited, or was killed) it gives the messages still in
//! flight [`AFTER_EXIT`] more and stops: whatever was not accepted stays in
//! the outbox for `watch`, which reads it every minute. It has no terminal
//! and no one to tell, so it writes one line per message to the outbox's
//! log ([`Outbox::log`]).
//!
//! Hidden from `--help`: only a command starts it. Its input is trusted as
//! far as its parent is (a pipe between the two), and still parsed
//! defensively: a line that does not parse is logged and skipped.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::PathBuf;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{MAX_PER_MESSAGE, host, send};
use crate::model::NotifyTarget;
use crate::store::{Event, Outbox, Queued};

/// How long the relay keeps sending after the command has exited: one
/// send's timeout, so a message already on its way gets its full chance.
/// Sends that start later get only what is left of it.
pub const AFTER_EXIT: Duration = send::TIMEOUT;

/// Beyond [`AFTER_EXIT`], for a sender to log how its last send ended.
const GRACE: Duration = Duration::from_secs(1);

/// How long the relay waits after an event for more to arrive before it
/// sends, so that the sites of one fleet apply go out as one message. It
/// costs the command nothing: the command is not waiting.
const SETTLE: Duration = Duration::from_millis(300);

/// The longest the relay holds a message back for more events to join it.
const SETTLE_AT_MOST: Duration = Duration::from_secs(3);

/// The first line a command writes: where the outbox is and the targets,
/// each with its secret file resolved against the fleet's directory.
#[derive(Debug, Serialize, Deserialize)]
pub struct Header {
    /// The state dir whose outbox holds the events.
    pub state_dir: PathBuf,
    /// The fleet's `notify:` targets.
    pub targets: Vec<Resolved>,
}

/// A target and its secret file, as resolved by the command.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Resolved {
    /// The target as written in fleet.yaml.
    pub target: NotifyTarget,
    /// Its `secret_file`, resolved; `None` when it has none.
    pub secret: Option<PathBuf>,
}

/// Every later line: one event for one target, and its outbox entry
/// (`None` when the command could not write it: then it is sent once,
/// from memory, which is better than not at all).
#[derive(Debug, Serialize, Deserialize)]
pub struct Entry {
    /// The outbox entry.
    pub path: Option<PathBuf>,
    /// The event and its target.
    pub queued: Queued,
}

/// Why the relay could not start (it logs nothing then: it does not know
/// where the outbox is).
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// Stdin ended before the header.
    #[error("no header on stdin: the relay is started by `apply` and `rollback`, not by hand")]
    NoHeader,
    /// The header is not what a command writes.
    #[error("the header on stdin does not parse: {0}")]
    Header(#[from] serde_json::Error),
    /// Stdin could not be read.
    #[error("cannot read stdin: {0}")]
    Read(#[from] std::io::Error),
}

/// Runs the relay on `input` (the command's pipe) until it ends, then
/// until the messages in flight are answered or [`AFTER_EXIT`] has passed.
pub fn run(input: impl BufRead) -> Result<(), RelayError> {
    let mut lines = input.lines();
    let header: Header = match lines.next() {
        Some(line) => serde_json::from_str(&line?)?,
        None => return Err(RelayError::NoHeader),
    };
    let outbox = Outbox::new(&header.state_dir);
    let host = host();
    let (done_tx, done) = mpsc::channel::<()>();
    // Set when the command has exited: the end of every send after it.
    let stop: Arc<OnceLock<Instant>> = Arc::new(OnceLock::new());
    let mut senders: BTreeMap<String, mpsc::Sender<Entry>> = BTreeMap::new();
    for resolved in header.targets {
        let (tx, rx) = mpsc::channel::<Entry>();
        let name = resolved.target.name.clone();
        let spawned = {
            let outbox = outbox.clone();
            let host = host.clone();
            let done_tx = done_tx.clone();
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name(format!("relay-{name}"))
                .spawn(move || {
                    one_target(&resolved, &outbox, &host, &rx, &stop);
                    drop(done_tx);
                })
        };
        match spawned {
            Ok(_) => {
                senders.insert(name, tx);
            }
            Err(e) => outbox.log(&format!(
                "{name}: cannot start a sender ({e}); its events wait in the outbox"
            )),
        }
    }
    drop(done_tx);
    for line in lines {
        let line = match line {
            Ok(line) => line,
            // The command died mid-line: what it wrote whole is sent.
            Err(_) => break,
        };
        match serde_json::from_str::<Entry>(&line) {
            Ok(entry) => match senders.get(&entry.queued.target) {
                Some(tx) => {
                    // A sender that has stopped leaves the entry in the outbox.
                    let _ = tx.send(entry);
                }
                None => outbox.log(&format!(
                    "an event for an unknown target {:?} is left in the outbox",
                    entry.queued.target
                )),
            },
            Err(e) => outbox.log(&format!(
                "a line from the command does not parse ({e}); skipped"
            )),
        }
    }
    // The command has exited: no more events. Each sender finishes what
    // it has, within the bound; a process exit ends any that do not.
    let end = *stop.get_or_init(|| Instant::now() + AFTER_EXIT);
    drop(senders);
    loop {
        match done.recv_timeout((end + GRACE).saturating_duration_since(Instant::now())) {
            Ok(()) => {}
            Err(RecvTimeoutError::Disconnected) => return Ok(()),
            Err(RecvTimeoutError::Timeout) => {
                outbox.log("stopped waiting for a target that has not answered; its events wait in the outbox");
                return Ok(());
            }
        }
    }
}

/// One target's sender: waits for events to settle, sends them as one
/// message per event type (at most [`MAX_PER_MESSAGE`] events each),
/// removes what was accepted, and after the first refusal sends nothing
/// more (the rest waits in the outbox, as it would for `watch`'s backoff).
fn one_target(
    resolved: &Resolved,
    outbox: &Outbox,
    host: &str,
    rx: &mpsc::Receiver<Entry>,
    stop: &OnceLock<Instant>,
) {
    let name = &resolved.target.name;
    let mut refused = false;
    while let Some(entries) = settle(rx) {
        if refused {
            outbox.log(&format!(
                "{name}: {} more event(s) wait in the outbox (it refused the last message)",
                entries.len()
            ));
            continue;
        }
        let mut unsent = entries.len();
        for (kind, members) in by_kind(entries) {
            for chunk in members.chunks(MAX_PER_MESSAGE) {
                let events: Vec<Event> = chunk.iter().map(|e| e.queued.event.clone()).collect();
                let left = stop.get().map_or(send::TIMEOUT, |end| {
                    end.saturating_duration_since(Instant::now())
                });
                let result = if left.is_zero() {
                    Err("the relay's time is up".to_owned())
                } else {
                    send::send_within(
                        &resolved.target,
                        resolved.secret.as_deref(),
                        &events,
                        host,
                        left,
                    )
                    .map_err(|e| e.to_string())
                };
                match result {
                    Ok(accepted) => {
                        outbox.log(&format!(
                            "{name}: accepted ({}) {} {kind} event(s)",
                            accepted.code,
                            chunk.len()
                        ));
                        unsent -= chunk.len();
                        for path in chunk.iter().filter_map(|e| e.path.as_deref()) {
                            if let Err(e) = outbox.remove(path) {
                                outbox.log(&format!("cannot remove a delivered event: {e}"));
                            }
                        }
                    }
                    Err(e) => {
                        outbox.log(&format!(
                            "{name}: not delivered: {e}; {unsent} event(s) wait in the outbox"
                        ));
                        refused = true;
                        break;
                    }
                }
            }
            if refused {
                break;
            }
        }
    }
}

/// The next events to send: the first that arrives, and every other that
/// follows it within [`SETTLE`] of the one before (up to
/// [`SETTLE_AT_MOST`] in all). `None` when the command has exited and
/// nothing is left.
fn settle(rx: &mpsc::Receiver<Entry>) -> Option<Vec<Entry>> {
    let first = rx.recv().ok()?;
    let until = Instant::now() + SETTLE_AT_MOST;
    let mut out = vec![first];
    loop {
        let wait = SETTLE.min(until.saturating_duration_since(Instant::now()));
        match rx.recv_timeout(wait) {
            Ok(entry) => out.push(entry),
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return Some(out),
        }
    }
}

/// Entries grouped by event type, in the order each type first appears;
/// within a type, the order they came in.
fn by_kind(entries: Vec<Entry>) -> Vec<(String, Vec<Entry>)> {
    let mut out: Vec<(String, Vec<Entry>)> = Vec::new();
    for entry in entries {
        let kind = entry.queued.event.kind.clone();
        match out.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, members)) => members.push(entry),
            None => out.push((kind, vec![entry])),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(kind: &str, site: &str) -> Entry {
        Entry {
            path: None,
            queued: Queued {
                target: "ops".into(),
                event: Event::new(
                    kind,
                    "2026-01-01T00:00:00Z".into(),
                    site,
                    BTreeMap::new(),
                    None,
                    "",
                    String::new(),
                    None,
                ),
            },
        }
    }

    #[test]
    fn events_are_grouped_by_type_in_the_order_they_came() {
        let groups = by_kind(vec![
            entry("rolled_back", "a"),
            entry("quarantined", "a"),
            entry("rolled_back", "b"),
        ]);
        let shape: Vec<(String, Vec<String>)> = groups
            .into_iter()
            .map(|(k, m)| (k, m.into_iter().map(|e| e.queued.event.site).collect()))
            .collect();
        assert_eq!(
            shape,
            [
                (
                    "rolled_back".to_owned(),
                    vec!["a".to_owned(), "b".to_owned()]
                ),
                ("quarantined".to_owned(), vec!["a".to_owned()]),
            ]
        );
    }

    #[test]
    fn input_without_a_header_is_an_error_not_a_panic() {
        assert!(matches!(run(&b""[..]), Err(RelayError::NoHeader)));
        assert!(matches!(
            run(&b"{not json\n"[..]),
            Err(RelayError::Header(_))
        ));
    }

    #[test]
    fn events_that_arrive_together_are_sent_together() {
        let (tx, rx) = mpsc::channel();
        for site in ["a", "b", "c"] {
            tx.send(entry("rolled_back", site)).unwrap();
        }
        drop(tx);
        assert_eq!(settle(&rx).map(|v| v.len()), Some(3));
        assert!(settle(&rx).is_none());
    }
}
