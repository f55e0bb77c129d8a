//! The repositories the daemon fetches from and pushes to (the fleet, the
//! catalogs, the report repository), and which of them is failing: how
//! often in a row, since when, why, and when it is tried again. `/status`
//! shows it and the metrics count it; the loop decides the retries. A
//! failed fetch leaves the last good commit in use: nothing here stops a
//! site.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::git::FailureKind;
use crate::load::FetchFailure;

/// One repository that failed its last fetch or push, as `/status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RepoFailure {
    /// The repository's URL (never a password).
    pub repo: String,
    /// `network`, `timeout`, `host_key`, `auth`, `certificate` or `local`.
    pub kind: &'static str,
    /// The error, in words.
    pub error: String,
    /// Failures in a row.
    pub failures: u32,
    /// When it started failing (RFC 3339).
    pub since: String,
    /// How long the daemon waits, from the last failure, before it tries again.
    pub retry_in_seconds: f64,
}

/// Every failing repository, by URL.
#[derive(Debug, Default)]
pub struct Fetches {
    failing: BTreeMap<String, RepoFailure>,
}

impl Fetches {
    /// Records that `failure` happened, with the message `error`, and that
    /// the next try is in `retry_in`; returns its failures in a row.
    pub fn failed(&mut self, failure: &FetchFailure, error: &str, retry_in: Duration) -> u32 {
        let entry = self
            .failing
            .entry(failure.repo.clone())
            .or_insert_with(|| RepoFailure {
                repo: failure.repo.clone(),
                kind: failure.kind.as_str(),
                error: String::new(),
                failures: 0,
                since: jiff::Timestamp::now().to_string(),
                retry_in_seconds: 0.0,
            });
        entry.kind = failure.kind.as_str();
        entry.error = error.to_owned();
        entry.failures = entry.failures.saturating_add(1);
        entry.retry_in_seconds = retry_in.as_secs_f64();
        entry.failures
    }

    /// The failures in a row of the repository failing most: what the
    /// next retry's backoff follows.
    pub fn most_in_a_row(&self) -> u32 {
        self.failing.values().map(|f| f.failures).max().unwrap_or(0)
    }

    /// Forgets the failures of `repos` (they were fetched); returns those
    /// that were failing.
    pub fn recovered<'a>(&mut self, repos: impl IntoIterator<Item = &'a str>) -> Vec<String> {
        repos
            .into_iter()
            .filter_map(|r| self.failing.remove(r).map(|f| f.repo))
            .collect()
    }

    /// What `/status` lists.
    pub fn list(&self) -> Vec<RepoFailure> {
        self.failing.values().cloned().collect()
    }
}

/// Whether every problem of a failed load is a fetch that may succeed by
/// itself later (the network, a timeout), so that retrying is all there
/// is to do; a refused host key or credential needs an operator.
pub fn only_transient(diags: &[crate::load::Diagnostic]) -> bool {
    !diags.is_empty()
        && diags.iter().all(|d| {
            d.fetch
                .as_ref()
                .is_some_and(|f| matches!(f.kind, FailureKind::Network | FailureKind::Timeout))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(repo: &str) -> FetchFailure {
        FetchFailure {
            repo: repo.into(),
            kind: FailureKind::Network,
        }
    }

    #[test]
    fn failures_count_in_a_row_until_recovered() {
        let mut f = Fetches::default();
        let wait = Duration::from_secs(2);
        assert_eq!(f.failed(&failure("git://a"), "down", wait), 1);
        assert_eq!(f.failed(&failure("git://a"), "down", wait), 2);
        assert_eq!(f.failed(&failure("git://b"), "down", wait), 1);
        assert_eq!(f.most_in_a_row(), 2);
        assert_eq!(f.recovered(["git://a", "git://c"]), ["git://a"]);
        assert_eq!(f.list().len(), 1);
        assert_eq!(f.recovered(["git://b"]), ["git://b"]);
        assert_eq!(f.most_in_a_row(), 0);
    }

    #[test]
    fn only_network_failures_are_retried_by_themselves() {
        use crate::load::{Diagnostic, Location};
        let d = |kind| {
            Diagnostic::new(Location::file("x"), "m").with_fetch(Some(FetchFailure {
                repo: "r".into(),
                kind,
            }))
        };
        assert!(only_transient(&[
            d(FailureKind::Network),
            d(FailureKind::Timeout)
        ]));
        assert!(!only_transient(&[
            d(FailureKind::Network),
            d(FailureKind::HostKey)
        ]));
        assert!(!only_transient(&[
            d(FailureKind::Network),
            Diagnostic::new(Location::file("x"), "bad yaml")
        ]));
        assert!(!only_transient(&[]));
    }
}
