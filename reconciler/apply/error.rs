//! Why `apply`, `rollback` or a reconcile did not converge a site, as a
//! kind, classified once (SPEC §8): the daemon's backoff, its metrics and
//! its notifications key on [`ApplyError::kind`] and [`ApplyError::class`],
//! and `cli` maps the kind to an exit code; nothing matches error text.

use crate::plan::PreflightFailure;

/// What the daemon should do about an error (SPEC §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// It may go away by itself: a lock, an I/O error, stopping.
    Retryable,
    /// Someone must act: a rolled-back change, a failed preflight, a full
    /// disk, an approval, an untrusted commit, damaged state.
    Operator,
    /// The fleet or the command line is wrong; only a new commit helps.
    Input,
}

/// A change that did not happen, or happened and was undone.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// Another process holds the site's lock (`--no-wait`).
    #[error(
        "{site}: another sitekeeper holds the site's lock (hint: wait, or run without --no-wait)"
    )]
    LockBusy {
        /// The site.
        site: String,
    },
    /// Another site holds the host-wide lock of a `serialize:` release.
    #[error(
        "{site}: another site holds the host-wide lock {name:?} (hint: run without --no-wait to queue)"
    )]
    SerializeBusy {
        /// The site.
        site: String,
        /// The lock's name.
        name: String,
    },
    /// The daemon is stopping; nothing new starts.
    #[error("{site}: sitekeeper is stopping")]
    Stopping {
        /// The site.
        site: String,
    },
    /// The site has no rollback point yet.
    #[error("{site} is not adopted (hint: sitekeeper adopt {site} --detect)")]
    NotAdopted {
        /// The site.
        site: String,
    },
    /// `apply --plan FILE` no longer matches, or a file moved since the plan.
    #[error("{site}: {detail}")]
    StalePlan {
        /// The site.
        site: String,
        /// What moved.
        detail: String,
    },
    /// The policy requires an approved plan digest.
    #[error("{site}: {reason}")]
    ApprovalMissing {
        /// The site.
        site: String,
        /// The plan's reason, with the digest to approve.
        reason: String,
    },
    /// The fleet or catalog commit is not trusted (SPEC §7).
    #[error("{site}: {reason}")]
    Untrusted {
        /// The site.
        site: String,
        /// Why.
        reason: String,
    },
    /// Local changes with `drift: block`.
    #[error("{site}: {reason}")]
    DriftBlocked {
        /// The site.
        site: String,
        /// Which files.
        reason: String,
    },
    /// A preflight check failed (SPEC §6.7); nothing was written.
    #[error("{site}: preflight failed: {}", preflight_text(.checks))]
    Preflight {
        /// The site.
        site: String,
        /// The checks that failed.
        checks: Vec<PreflightFailure>,
    },
    /// The site has a failure marker (SPEC §6.6): nothing changes it until
    /// an operator has repaired it and run `resolve`.
    #[error("{site}: {reason}")]
    FailureMarker {
        /// The site.
        site: String,
        /// What failed, and how to clear it.
        reason: String,
    },
    /// `apply --release V` or `--fix ID` named an item the site's plan
    /// does not carry (held by a gate, off its channel, not in its
    /// catalog): nothing was written, rather than "nothing to do" or the
    /// rest of the plan without what was asked for.
    #[error("{site}: {item} is not applied: {reason}")]
    NotCarried {
        /// The site.
        site: String,
        /// `release V` or `fix ID`.
        item: String,
        /// Why the plan does not carry it, with a hint.
        reason: String,
    },
    /// A rollback point was asked for that cannot be used.
    #[error("{site}: {detail}")]
    NoPoint {
        /// The site.
        site: String,
        /// Why.
        detail: String,
    },
    /// The change was made, failed its hooks or health check, and was
    /// rolled back; what it carried is quarantined.
    #[error("{site}: {reason}; the change was rolled back{}", quarantine_text(.quarantined))]
    RolledBack {
        /// The site.
        site: String,
        /// What failed.
        reason: String,
        /// The point the rollback made.
        point: u64,
        /// What is now quarantined (`release V`, `fix ID`).
        quarantined: Vec<String>,
    },
    /// The disk filled up during the change, which was undone.
    #[error("{site}: {detail}")]
    StorageFull {
        /// The site.
        site: String,
        /// What.
        detail: String,
    },
    /// The change failed and the site was returned to its state before it
    /// (or nothing had been changed yet).
    #[error("{site}: {detail}")]
    Failed {
        /// The site.
        site: String,
        /// What failed.
        detail: String,
    },
    /// The fleet says something this command cannot act on.
    #[error("{site}: {detail}")]
    Invalid {
        /// The site.
        site: String,
        /// What is wrong.
        detail: String,
    },
    /// sitekeeper's own state cannot be read or written (damaged
    /// `quarantine.json`, points, ledger).
    #[error("{site}: {detail}")]
    Internal {
        /// The site.
        site: String,
        /// What.
        detail: String,
    },
}

fn preflight_text(checks: &[PreflightFailure]) -> String {
    checks
        .iter()
        .map(|c| format!("{}: {}", c.check, c.reason))
        .collect::<Vec<_>>()
        .join("; ")
}

fn quarantine_text(items: &[String]) -> String {
    if items.is_empty() {
        String::new()
    } else {
        format!(
            " and {} is quarantined for this site (hint: `sitekeeper apply --release V` or `--fix ID` tries it again)",
            items.join(", ")
        )
    }
}

impl ApplyError {
    /// The kind, as a word for metrics, logs and notifications.
    pub fn kind(&self) -> &'static str {
        match self {
            ApplyError::LockBusy { .. } => "lock_busy",
            ApplyError::SerializeBusy { .. } => "serialize_busy",
            ApplyError::Stopping { .. } => "stopping",
            ApplyError::NotAdopted { .. } => "not_adopted",
            ApplyError::StalePlan { .. } => "stale_plan",
            ApplyError::ApprovalMissing { .. } => "approval_missing",
            ApplyError::Untrusted { .. } => "untrusted_source",
            ApplyError::DriftBlocked { .. } => "drift_blocked",
            ApplyError::Preflight { .. } => "preflight",
            ApplyError::FailureMarker { .. } => "failure_marker",
            ApplyError::NotCarried { .. } => "not_carried",
            ApplyError::NoPoint { .. } => "no_point",
            ApplyError::RolledBack { .. } => "rolled_back",
            ApplyError::StorageFull { .. } => "storage_full",
            ApplyError::Failed { .. } => "failed",
            ApplyError::Invalid { .. } => "invalid",
            ApplyError::Internal { .. } => "internal",
        }
    }

    /// Retryable, needs an operator, or bad input (SPEC §8).
    pub fn class(&self) -> ErrorClass {
        match self {
            ApplyError::LockBusy { .. }
            | ApplyError::SerializeBusy { .. }
            | ApplyError::Stopping { .. }
            | ApplyError::StalePlan { .. }
            | ApplyError::Failed { .. } => ErrorClass::Retryable,
            ApplyError::NotAdopted { .. }
            | ApplyError::ApprovalMissing { .. }
            | ApplyError::Untrusted { .. }
            | ApplyError::DriftBlocked { .. }
            | ApplyError::Preflight { .. }
            | ApplyError::FailureMarker { .. }
            | ApplyError::NotCarried { .. }
            | ApplyError::NoPoint { .. }
            | ApplyError::RolledBack { .. }
            | ApplyError::StorageFull { .. }
            | ApplyError::Internal { .. } => ErrorClass::Operator,
            ApplyError::Invalid { .. } => ErrorClass::Input,
        }
    }

    /// Whether the site was only busy (a lock, a stop): not a failure, so
    /// it neither counts towards the backoff nor is notified.
    pub fn is_busy(&self) -> bool {
        matches!(
            self,
            ApplyError::LockBusy { .. }
                | ApplyError::SerializeBusy { .. }
                | ApplyError::Stopping { .. }
        )
    }

    /// Whether the command refused before the change (SPEC §3 exit 3),
    /// as opposed to a change that failed (exit 1). A point that does not
    /// exist ([`ApplyError::NoPoint`]) writes nothing either, but is
    /// invalid input (exit 2), not a refusal.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            ApplyError::LockBusy { .. }
                | ApplyError::SerializeBusy { .. }
                | ApplyError::NotAdopted { .. }
                | ApplyError::StalePlan { .. }
                | ApplyError::ApprovalMissing { .. }
                | ApplyError::Untrusted { .. }
                | ApplyError::DriftBlocked { .. }
                | ApplyError::Preflight { .. }
                | ApplyError::FailureMarker { .. }
                | ApplyError::NotCarried { .. }
        )
    }

    /// Whether the error is about the command line itself (a point or an
    /// item it named, an invalid request): the operator who typed it reads
    /// it at the terminal, so it raises no notification.
    pub fn is_request_error(&self) -> bool {
        matches!(
            self,
            ApplyError::NotCarried { .. } | ApplyError::NoPoint { .. } | ApplyError::Invalid { .. }
        )
    }

    /// An I/O-level failure of a change (already undone), classified by
    /// its cause: a full disk needs an operator, anything else may pass.
    pub fn failed(site: &str, detail: impl std::fmt::Display, full: bool) -> Self {
        let (site, detail) = (site.to_owned(), detail.to_string());
        if full {
            ApplyError::StorageFull { site, detail }
        } else {
            ApplyError::Failed { site, detail }
        }
    }
}

/// Whether an error's source chain holds ENOSPC or EDQUOT.
pub fn is_disk_full(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(err) = next {
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && let Some(code) = io.raw_os_error()
            && (code == rustix::io::Errno::NOSPC.raw_os_error()
                || code == rustix::io::Errno::DQUOT.raw_os_error())
        {
            return true;
        }
        next = err.source();
    }
    false
}
