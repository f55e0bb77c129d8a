//! Delivery for `apply` and `rollback` on the command line (SPEC §9): the
//! command never waits for a notify target.
//!
//! A site's events are written to the outbox by the thread that raised
//! them (durably, before anything is sent), as soon as the site has failed,
//! and then handed over a pipe to a background relay process
//! (`sitekeeper notify relay`, [`super::relay`]) started at the first
//! event. The relay sends them while the other sites are still converging
//! and goes on after the command has exited, for a bounded time; what it
//! cannot deliver stays in the outbox for `watch`. So a target that is
//! slow, silent or down costs the command nothing (issue 20's "no
//! slowdown"), and a command that is killed loses nothing it raised: the
//! outbox has it, and the relay still reads what was in the pipe.
//!
//! The relay is its own process group, so a Ctrl-C at the terminal that
//! stops the command does not stop the delivery of what it raised. Under a
//! service manager that kills a unit's processes when its main process
//! exits (systemd's default for a oneshot), the relay is stopped with it:
//! the events are in the outbox by then, and `watch` sends them.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{ChildStdin, Command, Stdio};
use std::sync::{Mutex, PoisonError};

use super::relay::{Entry, Header, Resolved};
use super::route;
use crate::load::Fleet;
use crate::model::NotifyTarget;
use crate::store::{Event, Outbox};

/// The relay as the command sees it.
enum Relay {
    /// No event yet: no process either.
    NotStarted(Header),
    /// Running: its stdin, and its pid to tell the operator.
    Running { stdin: ChildStdin, pid: u32 },
    /// It could not be started, or its pipe broke: events still reach the
    /// outbox, and `watch` sends them.
    Broken(String),
}

/// Hands a command's events to the background relay as they are raised.
pub struct Courier {
    targets: Vec<NotifyTarget>,
    outbox: Outbox,
    relay: Mutex<Relay>,
    /// Events routed to each target so far, to say what was handed over.
    routed: Mutex<BTreeMap<String, usize>>,
}

/// What became of one target's events when the command ended.
#[derive(Debug)]
pub struct Handed {
    /// The target.
    pub target: String,
    /// How many events it was routed.
    pub events: usize,
    /// The relay's pid, or why there is no relay (the events wait in the
    /// outbox).
    pub relay: Result<u32, String>,
}

impl Courier {
    /// A courier for `fleet`'s targets, or `None` when it has none.
    pub fn start(fleet: &Fleet, state_dir: &Path) -> Option<Self> {
        if fleet.config.notify.is_empty() {
            return None;
        }
        let targets: Vec<Resolved> = fleet
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
        Some(Courier {
            targets: fleet.config.notify.clone(),
            outbox: Outbox::new(state_dir),
            relay: Mutex::new(Relay::NotStarted(Header {
                state_dir: state_dir.to_path_buf(),
                targets,
            })),
            routed: Mutex::new(BTreeMap::new()),
        })
    }

    /// Writes `events` to the outbox for every target that wants them and
    /// hands them to the relay. Called from the thread that converged the
    /// site, so the outbox write is done when it returns.
    pub fn raise(&self, events: Vec<Event>) {
        let queued = route(&self.targets, events);
        if queued.is_empty() {
            return;
        }
        let mut lines = Vec::new();
        for q in queued {
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
            match serde_json::to_string(&Entry { path, queued: q }) {
                Ok(line) => lines.push(line),
                Err(e) => tracing::error!(error = %e, "cannot hand an event to the relay"),
            }
        }
        let mut relay = self.relay.lock().unwrap_or_else(PoisonError::into_inner);
        if let Relay::NotStarted(header) = &*relay {
            *relay = spawn(header).unwrap_or_else(Relay::Broken);
        }
        if let Relay::Running { stdin, .. } = &mut *relay {
            let mut text = lines.join("\n");
            text.push('\n');
            if let Err(e) = stdin.write_all(text.as_bytes()) {
                *relay = Relay::Broken(format!("the relay stopped reading ({e})"));
            }
        }
    }

    /// Closes the relay's input (it finishes on its own, in the
    /// background) and says what was handed to it. Waits for nothing.
    pub fn finish(self) -> Vec<Handed> {
        let relay = match self
            .relay
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner)
        {
            // Dropping its stdin here is the relay's sign that no more
            // events come; it is not waited for, and whoever adopted it
            // (init) reaps it.
            Relay::Running { pid, .. } => Ok(pid),
            Relay::Broken(why) => Err(why),
            Relay::NotStarted(_) => return Vec::new(),
        };
        self.routed
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner)
            .into_iter()
            .map(|(target, events)| Handed {
                target,
                events,
                relay: relay.clone(),
            })
            .collect()
    }
}

/// Starts the relay (this same program, `notify relay`) in its own process
/// group, with no terminal output, and writes it the header.
fn spawn(header: &Header) -> Result<Relay, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program ({e})"))?;
    let mut child = Command::new(exe)
        .args(["notify", "relay"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start the relay ({e})"))?;
    let pid = child.id();
    let Some(mut stdin) = child.stdin.take() else {
        return Err("the relay has no stdin".to_owned());
    };
    let mut line =
        serde_json::to_string(header).map_err(|e| format!("cannot describe the targets ({e})"))?;
    line.push('\n');
    stdin
        .write_all(line.as_bytes())
        .map_err(|e| format!("the relay stopped reading ({e})"))?;
    Ok(Relay::Running { stdin, pid })
}
