//! Health checks (SPEC §6.2): the site's command, run like a hook; its
//! `http` URL, which must answer 2xx; and its `checks` of pages (`page`,
//! with screenshots in `visual`). Each item is run before a change
//! ([`before`], which keeps the pages as the baseline for `similar` and
//! `visual`) and after it ([`after`], retried until `settle`). Deciding
//! what the results blame is the caller's (`converge`); this module only
//! runs checks and writes nothing but `hooks.log` and the screenshots.

mod page;
mod visual;

use std::time::{Duration, Instant};

use super::hooks::{self, HookEnv, HookError};
use crate::model::fleet::Health;
use crate::store::SiteState;
pub use page::PageError;

/// How long a check may take when the site file does not say.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The first wait before a failing check is tried again within `settle`,
/// and the longest: a site that restarts is usually back within a second
/// or two, and a slower one is not helped by being asked more often.
const FIRST_RETRY: Duration = Duration::from_millis(250);
const LAST_RETRY: Duration = Duration::from_secs(2);

/// Why one item of a site's health failed; its text is the reason the
/// ledger, the rollback and the verdict give.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The `command` failed.
    #[error("{0}")]
    Command(#[from] HookError),
    /// The `http` URL did not answer 2xx.
    #[error("{url} answered {status}")]
    Http {
        /// The URL.
        url: String,
        /// Its status.
        status: u16,
    },
    /// The `http` URL could not be fetched.
    #[error("{url}: {detail}")]
    Unreachable {
        /// The URL.
        url: String,
        /// Why, in the HTTP client's words.
        detail: String,
    },
    /// A page check failed.
    #[error("{0}")]
    Page(#[from] PageError),
}

/// One thing a site's health judges: its command, its URL, or a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Item {
    Command,
    Http,
    Page(usize),
}

/// The items of `health`, in the order they are run and reported.
fn items(health: &Health) -> Vec<Item> {
    let mut out = Vec::new();
    if health.command.is_some() {
        out.push(Item::Command);
    }
    if health.http.is_some() {
        out.push(Item::Http);
    }
    out.extend((0..health.checks.len()).map(Item::Page));
    out
}

/// The site's health before a change: each item's result, and each page
/// as it was, the baseline `similar` compares against.
pub struct Before {
    results: Vec<(Item, Result<(), CheckError>)>,
    pages: Vec<Option<page::Page>>,
}

impl Before {
    /// Whether every item passed.
    pub fn passed(&self) -> bool {
        self.results.iter().all(|(_, r)| r.is_ok())
    }
}

/// One item judged before and after a change.
pub struct Judged {
    /// What it found before.
    pub before: Result<(), CheckError>,
    /// What it found after (the last try, within `settle`).
    pub after: Result<(), CheckError>,
}

impl Judged {
    /// A check that passed before and fails after blames the change;
    /// one that failed before blames nothing (SPEC §6.2).
    pub fn blames(&self) -> bool {
        self.before.is_ok() && self.after.is_err()
    }
}

/// The site's health before a change, each item run once; screenshots go
/// to `state`'s `health/`, replacing the last change's.
pub fn before(health: &Health, env: &HookEnv<'_>, state: &SiteState) -> Before {
    let timeout = timeout(health);
    if health.checks.iter().any(|c| c.visual.is_some()) {
        // Only this change's screenshots are kept; a missing directory is
        // the usual case, and one that cannot be removed fails the
        // screenshot that needs its place, with the reason.
        let _ = std::fs::remove_dir_all(state.health_dir());
    }
    let shots = page::Shots { env, state };
    let items = items(health);
    let found = in_parallel(&items, |item| match item {
        Item::Page(n) => {
            let (result, kept) = page::before(&health.checks[n], n, &shots, timeout);
            (result.map_err(CheckError::from), kept)
        }
        other => (run_item(health, other, env, timeout), None),
    });
    let mut pages = vec![None; health.checks.len()];
    let mut results = Vec::with_capacity(items.len());
    for (item, (result, kept)) in items.into_iter().zip(found) {
        if let Item::Page(n) = item {
            pages[n] = kept;
        }
        results.push((item, result));
    }
    Before { results, pages }
}

/// How many items run at once: a page check mostly waits, on the site or
/// on the browser starting, so a few overlap well even on two cores.
const WORKERS: usize = 4;

/// `f` of every item, [`WORKERS`] at a time, in the items' order.
fn in_parallel<T: Send>(items: &[Item], f: impl Fn(Item) -> T + Sync) -> Vec<T> {
    if items.len() < 2 {
        return items.iter().map(|&i| f(i)).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut found: Vec<(usize, T)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..WORKERS.min(items.len()))
            .map(|_| {
                scope.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(&item) = items.get(i) else {
                            return mine;
                        };
                        mine.push((i, f(item)));
                    }
                })
            })
            .collect();
        workers
            .into_iter()
            // A worker that panicked lost its items: carry its panic on
            // rather than return a shorter list than the items.
            .flat_map(|w| w.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    found.sort_by_key(|(i, _)| *i);
    found.into_iter().map(|(_, t)| t).collect()
}

/// The site's health after a change, judged against `before`. An item
/// that passed before and fails now is tried again, waiting 250 ms
/// doubling to 2 s, until `settle` has passed since this call (the post
/// hooks, which restart services, have run by then); items that failed
/// before are not waited for, since they cannot blame the change.
pub fn after(health: &Health, env: &HookEnv<'_>, state: &SiteState, before: Before) -> Vec<Judged> {
    let timeout = timeout(health);
    let shots = page::Shots { env, state };
    let deadline = health.settle.map(|s| s.0).unwrap_or_default();
    let start = Instant::now();
    let run = |item: Item| match item {
        Item::Page(n) => page::after(
            &health.checks[n],
            n,
            before.pages[n].as_ref(),
            &shots,
            timeout,
        )
        .map_err(CheckError::from),
        other => run_item(health, other, env, timeout),
    };
    let all: Vec<Item> = before.results.iter().map(|(item, _)| *item).collect();
    let mut now = in_parallel(&all, run);
    let mut wait = FIRST_RETRY;
    loop {
        let blamed: Vec<usize> = (0..now.len())
            .filter(|&i| before.results[i].1.is_ok() && now[i].is_err())
            .collect();
        let left = deadline.saturating_sub(start.elapsed());
        if blamed.is_empty() || left.is_zero() {
            break;
        }
        std::thread::sleep(wait.min(left));
        wait = (wait * 2).min(LAST_RETRY);
        let again: Vec<Item> = blamed.iter().map(|&i| all[i]).collect();
        for (i, result) in blamed.into_iter().zip(in_parallel(&again, run)) {
            now[i] = result;
        }
    }
    before
        .results
        .into_iter()
        .zip(now)
        .map(|((_, before), after)| Judged { before, after })
        .collect()
}

/// Runs the site's health once, with nothing to compare against (after an
/// operator's rollback): `similar` and `visual` are not judged. `Err` says why the site
/// is unhealthy, every failing item's reason joined.
pub fn run(health: &Health, env: &HookEnv<'_>) -> Result<(), String> {
    let timeout = timeout(health);
    let reasons: Vec<String> = items(health)
        .into_iter()
        .filter_map(|item| {
            let result = match item {
                Item::Page(n) => page::judge_once(&health.checks[n], timeout).map_err(Into::into),
                other => run_item(health, other, env, timeout),
            };
            result.err().map(|e| e.to_string())
        })
        .collect();
    if reasons.is_empty() {
        Ok(())
    } else {
        Err(reasons.join("; "))
    }
}

fn timeout(health: &Health) -> Duration {
    health.timeout.map_or(DEFAULT_TIMEOUT, |d| d.0)
}

/// Runs the command or fetches the URL once.
fn run_item(
    health: &Health,
    item: Item,
    env: &HookEnv<'_>,
    timeout: Duration,
) -> Result<(), CheckError> {
    match (item, &health.command, &health.http) {
        (Item::Command, Some(cmd), _) => hooks::run(&cmd.0, env, timeout)
            .map(drop)
            .map_err(CheckError::from),
        (Item::Http, _, Some(url)) => http(url.as_str(), timeout),
        _ => Ok(()),
    }
}

/// Checks that `url` answers 2xx.
pub fn http(url: &str, timeout: Duration) -> Result<(), CheckError> {
    match page::fetch(url, timeout) {
        Ok(got) if (200..300).contains(&got.status) => Ok(()),
        Ok(got) => Err(CheckError::Http {
            url: url.to_owned(),
            status: got.status,
        }),
        Err(detail) => Err(CheckError::Unreachable {
            url: url.to_owned(),
            detail,
        }),
    }
}
