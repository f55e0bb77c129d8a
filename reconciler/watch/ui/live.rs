//! The dashboard's live feed: each site's phase and percent kept in
//! memory, and `GET /events` (server-sent events) pushing every change.
//!
//! A change's progress is its `status.json` (`store::Progress`), written by
//! `apply` as it goes. Pages never read 10,000 of them: a site's progress
//! is cached with the file's modification time and size, so a page of 200
//! costs 200 `stat`s, and only the sites in flight (the loop marks them
//! [`Live::started`] and [`Live::finished`]) are polled, four times a
//! second, and only while someone listens.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::StreamExt;
use serde::Serialize;
use tokio::sync::broadcast;

use crate::store::{Progress, SiteState};
use crate::watch::controller::Shared;

/// How often the sites in flight are looked at while someone listens.
const POLL: Duration = Duration::from_millis(250);
/// Events a slow listener may fall behind before it skips some.
const BACKLOG: usize = 1024;

/// A site's phase and percent, as a page shows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Phase {
    /// `idle` when no change is recorded, else `store::Progress::phase`.
    pub phase: String,
    /// 0 to 100.
    pub percent: u8,
}

impl Phase {
    fn idle() -> Self {
        Phase {
            phase: "idle".into(),
            percent: 100,
        }
    }
}

/// One event of `GET /events`: a site's phase, percent, and after a
/// reconcile its outcome and version.
#[derive(Debug, Clone, Serialize)]
pub struct SiteEvent {
    /// The site.
    pub site: String,
    /// Its phase.
    pub phase: String,
    /// Its percent.
    pub percent: u8,
    /// The last reconcile's outcome, once one ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// The installed version, once a reconcile ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Whether a reconcile or an operation runs now.
    pub busy: bool,
}

/// What `status.json` looked like when it was last read.
#[derive(Debug, Clone)]
struct Cached {
    stamp: Option<(SystemTime, u64)>,
    phase: Phase,
}

/// The live state of every site.
pub struct Live {
    busy: Mutex<HashSet<String>>,
    cache: Mutex<HashMap<String, Cached>>,
    tx: broadcast::Sender<Arc<str>>,
}

impl Default for Live {
    fn default() -> Self {
        Self {
            busy: Mutex::default(),
            cache: Mutex::default(),
            tx: broadcast::channel(BACKLOG).0,
        }
    }
}

impl Live {
    /// The site's phase and percent: one `stat` of its `status.json`, and
    /// a read only when the file changed since the last one.
    pub fn phase(&self, state_dir: &Path, site: &str) -> Phase {
        let path = SiteState::new(state_dir, site).progress_path();
        let stamp = std::fs::metadata(&path)
            .ok()
            .and_then(|m| Some((m.modified().ok()?, m.len())));
        let cached = self
            .cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(site)
            .cloned();
        if let Some(c) = cached
            && c.stamp == stamp
        {
            return c.phase;
        }
        let phase = match stamp {
            None => Phase::idle(),
            Some(_) => {
                Progress::read(&SiteState::new(state_dir, site)).map_or_else(Phase::idle, |p| {
                    Phase {
                        phase: p.phase,
                        percent: p.percent.min(100),
                    }
                })
            }
        };
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                site.to_owned(),
                Cached {
                    stamp,
                    phase: phase.clone(),
                },
            );
        phase
    }

    /// Whether a reconcile or an operation runs on `site` now.
    pub fn is_busy(&self, site: &str) -> bool {
        self.busy
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(site)
    }

    /// The loop started work on `site`.
    pub fn started(&self, site: &str) {
        self.busy
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(site.to_owned());
    }

    /// The loop's work on `site` ended: its last phase, outcome and
    /// version go to every listener.
    pub fn finished(&self, shared: &Shared, site: &str) {
        self.busy
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(site);
        if self.tx.receiver_count() == 0 {
            return;
        }
        let phase = self.phase(&shared.state_dir, site);
        let (outcome, version) = shared
            .views
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(site)
            .map(|v| (v.outcome.map(str::to_owned), v.status.version.clone()))
            .unwrap_or_default();
        self.send(&SiteEvent {
            site: site.to_owned(),
            phase: phase.phase,
            percent: phase.percent,
            outcome,
            version,
            busy: false,
        });
    }

    fn send(&self, event: &SiteEvent) {
        if let Ok(text) = serde_json::to_string(event) {
            let _ = self.tx.send(text.into());
        }
    }

    /// One look at the sites in flight: a phase or percent that moved
    /// since the last look goes to the listeners.
    fn poll(&self, state_dir: &Path, last: &mut HashMap<String, Phase>) {
        let busy: Vec<String> = self
            .busy
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect();
        last.retain(|site, _| busy.contains(site));
        for site in busy {
            let phase = self.phase(state_dir, &site);
            if last.get(&site) != Some(&phase) {
                self.send(&SiteEvent {
                    site: site.clone(),
                    phase: phase.phase.clone(),
                    percent: phase.percent,
                    outcome: None,
                    version: None,
                    busy: true,
                });
                last.insert(site, phase);
            }
        }
    }
}

/// Polls the sites in flight while anyone listens, until `stop`.
pub async fn poll(shared: Arc<Shared>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut last = HashMap::new();
    loop {
        tokio::select! {
            () = tokio::time::sleep(POLL) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        if shared.ui.live.tx.receiver_count() == 0 {
            last.clear();
            continue;
        }
        let s = Arc::clone(&shared);
        let moved = std::mem::take(&mut last);
        // The stats are file-system calls: off the async workers.
        last = tokio::task::spawn_blocking(move || {
            let mut last = moved;
            s.ui.live.poll(&s.state_dir, &mut last);
            last
        })
        .await
        .unwrap_or_default();
    }
}

/// `GET /events`: a `site` event (JSON [`SiteEvent`]) for each change,
/// until the client goes or the daemon stops.
pub async fn events(State(shared): State<Arc<Shared>>) -> axum::response::Response {
    use axum::response::IntoResponse;
    let rx = shared.ui.live.tx.subscribe();
    let stop = shared.ui.stopping();
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(text) => {
                    let event = Event::default().event("site").data(text.as_ref());
                    return Some((Ok::<Event, std::convert::Infallible>(event), rx));
                }
                // A listener that fell behind skips what it missed; the
                // next event of each site carries its whole state.
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
    .take_until(async move {
        let mut stop = stop;
        let _ = stop.wait_for(|s| *s).await;
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}
