//! Watching the sites' files (inotify through `notify`): a change under a
//! site root, outside its preserved paths and the staging area, asks for
//! that site to be reconciled. Debouncing is the controller's (a burst of
//! events makes one reconcile); this only maps paths to sites.
//!
//! Reads are not changes: access events are ignored, or every scan would
//! trigger the next one.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc::UnboundedSender;

use super::controller::{Reason, Trigger};
use crate::inventory::{STAGE_DIR, is_preserved};
use crate::load::Fleet;
use crate::model::values::Glob;

/// One watched site root.
struct Watched {
    site: String,
    /// The root as the kernel reports event paths: links resolved.
    dir: PathBuf,
    preserve: Vec<Glob>,
}

/// The watcher and the roots it maps events to.
pub struct Files {
    watcher: Option<notify::RecommendedWatcher>,
    roots: Arc<Mutex<Vec<Watched>>>,
}

impl Files {
    /// Starts the watcher; events become [`Trigger`]s on `tx`. Without
    /// inotify (a limit reached, say) the daemon still runs on its timer.
    pub fn start(tx: UnboundedSender<Trigger>) -> Self {
        let roots: Arc<Mutex<Vec<Watched>>> = Arc::default();
        let mapped = Arc::clone(&roots);
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let Ok(event) = event else { return };
            if matches!(event.kind, EventKind::Access(_) | EventKind::Other) {
                return;
            }
            let roots = mapped.lock().unwrap_or_else(PoisonError::into_inner);
            for path in &event.paths {
                for w in roots.iter() {
                    let Ok(rel) = path.strip_prefix(&w.dir) else {
                        continue;
                    };
                    let rel = rel.to_string_lossy();
                    if rel == STAGE_DIR
                        || rel.starts_with(&format!("{STAGE_DIR}/"))
                        || (!rel.is_empty() && is_preserved(&w.preserve, &rel))
                    {
                        continue;
                    }
                    let _ = tx.send(Trigger {
                        site: Some(w.site.clone()),
                        reason: Reason::FileChange,
                    });
                }
            }
        });
        let watcher = match watcher {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, "file watching is unavailable; drift is seen on the timer only");
                None
            }
        };
        Self { watcher, roots }
    }

    /// Watches the roots of every site of `fleet`, and only those (after a
    /// reload, or after a symlink-layout site swapped its directory). Roots
    /// already watched are left alone.
    ///
    /// The map is never locked while the watcher is called: its event
    /// thread may be inside the handler, waiting for that lock.
    pub fn refresh(&mut self, fleet: &Fleet) {
        let Some(watcher) = self.watcher.as_mut() else {
            return;
        };
        let wanted: Vec<Watched> = fleet
            .sites
            .iter()
            .filter_map(|site| {
                let dir = std::fs::canonicalize(fleet.site_root(site)?).ok()?;
                Some(Watched {
                    site: site.site.to_string(),
                    dir,
                    preserve: site.paths.preserve.clone(),
                })
            })
            .collect();
        let old: Vec<PathBuf> = self
            .roots
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|w| w.dir.clone())
            .collect();
        for dir in old.iter().filter(|d| !wanted.iter().any(|w| &w.dir == *d)) {
            let _ = watcher.unwatch(dir);
        }
        let mut watched = Vec::with_capacity(wanted.len());
        for w in wanted {
            if !old.contains(&w.dir)
                && let Err(e) = watcher.watch(&w.dir, RecursiveMode::Recursive)
            {
                tracing::warn!(site = %w.site, root = %w.dir.display(), error = %e, "cannot watch the site's files");
                continue;
            }
            watched.push(w);
        }
        *self.roots.lock().unwrap_or_else(PoisonError::into_inner) = watched;
    }
}
