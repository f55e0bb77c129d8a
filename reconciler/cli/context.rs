//! What several commands share: choosing sites by name, the state dir, the
//! clock, and a progress bar for long scans.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::{CliError, Global};
use crate::load::{self, Diagnostic, Fleet, Loaded, Location};
use crate::model::{Selector, Site};

/// The sites named on the command line (all when none), or a located
/// error naming the unknown one.
pub fn select<'f>(fleet: &'f Fleet, names: &[String]) -> Result<Vec<&'f Loaded<Site>>, CliError> {
    select_by(fleet, names, None)
}

/// The sites named on the command line, or those whose labels match
/// `selector` (`--selector`, SPEC §8), or all when neither is given.
pub fn select_by<'f>(
    fleet: &'f Fleet,
    names: &[String],
    selector: Option<&Selector>,
) -> Result<Vec<&'f Loaded<Site>>, CliError> {
    if names.is_empty() {
        let mut all: Vec<_> = fleet
            .sites
            .iter()
            .filter(|s| selector.is_none_or(|sel| sel.matches(&s.labels)))
            .collect();
        all.sort_by(|a, b| a.site.cmp(&b.site));
        return Ok(all);
    }
    names
        .iter()
        .map(|n| {
            fleet.site(n).ok_or_else(|| {
                let known: Vec<&str> = fleet.sites.iter().map(|s| s.site.as_str()).collect();
                CliError::from(
                    Diagnostic::new(
                        Location::file(fleet.source.display("sites/")),
                        format!("there is no site named {n:?}"),
                    )
                    .with_hint(format!("the sites are {}", known.join(", "))),
                )
            })
        })
        .collect()
}

/// The state dir for this fleet (SPEC §5).
pub fn state_dir(global: &Global, fleet: &Fleet) -> PathBuf {
    load::state_dir(global.state_dir.as_deref(), Some(fleet))
}

/// Now, or `SITEKEEPER_NOW` (an RFC 3339 time) so that tests and
/// reviewers can plan "as of" a fixed instant.
pub fn now() -> Result<jiff::Timestamp, CliError> {
    match std::env::var("SITEKEEPER_NOW") {
        // The fleet's own parser, so a time past the clock's end is refused
        // in the same words as in a release file.
        Ok(text) => text
            .parse::<crate::model::values::Timestamp>()
            .map(|t| t.0)
            .map_err(|e| CliError::Usage(format!("SITEKEEPER_NOW: {e}"))),
        Err(_) => Ok(jiff::Timestamp::now()),
    }
}

/// A progress bar for hashing, drawn on a terminal only, and only once a
/// scan has run for a second.
pub struct ScanProgress {
    bar: ProgressBar,
    started: Instant,
    on_terminal: bool,
}

impl ScanProgress {
    /// A bar for hashing `site`'s files, hidden unless stderr is a terminal.
    pub fn new(site: &str, quiet: bool) -> Self {
        Self::labelled(site, quiet, "hashing {pos}/{len} files")
    }

    /// A bar with its own wording (an indicatif template after the site name).
    pub fn labelled(site: &str, quiet: bool, what: &str) -> Self {
        let on_terminal = !quiet && std::io::IsTerminal::is_terminal(&std::io::stderr());
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden());
        if let Ok(style) =
            ProgressStyle::with_template(&format!("{{prefix}} {what} {{wide_bar}} {{eta}}"))
        {
            bar.set_style(style);
        }
        bar.set_prefix(site.to_owned());
        Self {
            bar,
            started: Instant::now(),
            on_terminal,
        }
    }
}

impl crate::inventory::Progress for ScanProgress {
    fn start(&self, files: u64) {
        self.bar.set_length(files);
    }

    fn advance(&self) {
        self.bar.inc(1);
        if self.on_terminal
            && self.bar.is_hidden()
            && self.started.elapsed() > Duration::from_secs(1)
        {
            self.bar.set_draw_target(ProgressDrawTarget::stderr());
        }
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// Runs `f` on every item with `jobs` plain threads at most, and returns
/// the results in the items' order.
///
/// Not a rayon pool: a rayon worker that waits (in a `join` of a site's
/// parallel scan, or for another pool such as the fsync threads) runs
/// other jobs of its pool meanwhile, and a job here is a whole site. With
/// hundreds of sites those nest on one thread's stack until it overflows
/// (seen: `apply --jobs 2` over 1,000 sites aborted). A plain thread only
/// waits; the sites' own parallel work runs in rayon's global pool.
pub fn for_each_site<T: Sync, R: Send>(
    jobs: usize,
    items: &[T],
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let jobs = jobs.clamp(1, items.len().max(1));
    if jobs == 1 {
        return items.iter().map(f).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut done: Vec<(usize, R)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..jobs)
            .map(|_| {
                scope.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(item) = items.get(i) else { break };
                        mine.push((i, f(item)));
                    }
                    mine
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| {
                w.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    });
    done.sort_by_key(|(i, _)| *i);
    done.into_iter().map(|(_, r)| r).collect()
}

#[cfg(test)]
mod tests {
    use super::for_each_site;

    /// Results come back in the items' order, every item once, whatever
    /// the number of threads.
    #[test]
    fn every_site_once_in_order() {
        let items: Vec<u32> = (0..500).collect();
        for jobs in [1, 2, 7, 1000] {
            let out = for_each_site(jobs, &items, |n| n * 2);
            assert_eq!(out, items.iter().map(|n| n * 2).collect::<Vec<_>>());
        }
        assert!(for_each_site(4, &[] as &[u32], |n| *n).is_empty());
    }
}
