//! A site's history (SPEC §3.1 `history`): its rollback points, newest
//! first, each with its health verdict (and the failing check's reason),
//! whether a data snapshot belongs to it, who made it, and for a rollback
//! the point it returned to, the change it undid and why. Shared by the
//! `history` command and the daemon's dashboard; it only reads.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::model::values::Timestamp;
use crate::store::{
    By, Health, LedgerKind, LedgerResult, PointKind, PointResult, Record, SiteState, StoreError,
};

/// One rollback point. The serialized fields are `history --format
/// json`'s, unchanged; the rest is for people.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    /// Its number.
    pub point: u64,
    /// Its commit in `points.git`.
    pub commit: String,
    /// When it was made (RFC 3339).
    pub at: String,
    /// How it came to be.
    pub kind: PointKind,
    /// The release it holds.
    pub version: String,
    /// Fixes applied on top.
    pub fixes: Vec<String>,
    /// The plan that made it.
    pub plan_digest: Option<String>,
    /// The health verdict on it.
    pub health: Health,
    /// How its change ended (`ok`, `track`, `failed`, `rolled_back`).
    pub result: String,
    /// Whether a data snapshot belongs to it (SPEC §6.6).
    pub data: bool,
    /// `at` for people.
    #[serde(skip)]
    pub when: String,
    /// Why its health check failed, when it did.
    #[serde(skip)]
    pub health_reason: Option<String>,
    /// Who made it (the ledger record of its change).
    #[serde(skip)]
    pub by: Option<By>,
    /// For a rollback: what it undid.
    #[serde(skip)]
    pub rollback: Option<Undo>,
}

/// What a rollback point undid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Undo {
    /// The point whose files it returned to.
    pub to: Option<u64>,
    /// The point that was current before it: the change it undid.
    pub undid: Option<u64>,
    /// Why, for an automatic rollback (the failed check or hook).
    pub reason: Option<String>,
    /// Whether it followed a failed check (automatic) or an operator.
    pub automatic: bool,
}

/// A time for people: UTC to the second, `2026-12-06 22:16:09Z`. Through
/// the fallible formatter (a `Display` that fails would panic in
/// `to_string`); should it ever fail, RFC 3339 is still a time.
pub fn human_time(t: &Timestamp) -> String {
    jiff::fmt::strtime::format("%Y-%m-%d %H:%M:%SZ", t.0).unwrap_or_else(|_| t.0.to_string())
}

/// The site's points, newest first, and its ledger, oldest first.
pub fn read(state: &SiteState) -> Result<(Vec<Entry>, Vec<Record>), StoreError> {
    let ledger = state.ledger().read()?;
    // Verdicts are recorded after the check ran (SPEC §3.1), in the ledger.
    let verdicts = crate::store::verdicts(&ledger);
    // A change whose check or hook failed was undone by the next point.
    let undone: BTreeSet<u64> = ledger
        .iter()
        .filter(|r| r.kind == LedgerKind::Health && r.result == LedgerResult::RolledBack)
        .filter_map(|r| r.point)
        .collect();
    // The newest failing verdict's reason, and the record of the change
    // that made each point.
    let mut health_reasons: BTreeMap<u64, Option<String>> = BTreeMap::new();
    let mut made: BTreeMap<u64, &Record> = BTreeMap::new();
    for r in &ledger {
        let Some(p) = r.point else { continue };
        if r.kind == LedgerKind::Health {
            let reason = (r.result != LedgerResult::Ok)
                .then(|| r.error.clone())
                .flatten();
            health_reasons.insert(p, reason.or_else(|| r.error.clone()));
        } else if matches!(
            r.kind,
            LedgerKind::Adopt
                | LedgerKind::Fix
                | LedgerKind::Upgrade
                | LedgerKind::Rollback
                | LedgerKind::Recovery
                | LedgerKind::DriftRevert
        ) {
            made.entry(p).or_insert(r);
        }
    }
    let snapshots = state.data();
    let mut entries = Vec::new();
    if let Some(points) = state.existing_points()? {
        let list = points.list()?;
        for (i, &n) in list.iter().enumerate().rev() {
            let m = points.meta(n)?;
            let record = made.get(&n).copied();
            let rollback = (m.kind == PointKind::Rollback).then(|| Undo {
                to: record
                    .and_then(|r| r.id.as_deref())
                    .and_then(|id| id.strip_prefix("point "))
                    .and_then(|n| n.parse().ok()),
                undid: i.checked_sub(1).and_then(|j| list.get(j).copied()),
                reason: record.and_then(|r| r.error.clone()),
                automatic: record.is_some_and(|r| r.result == LedgerResult::RolledBack),
            });
            entries.push(Entry {
                point: n,
                commit: points.commit_id(n)?,
                at: m.at.to_string(),
                when: human_time(&m.at),
                kind: m.kind,
                health: m.health(&verdicts),
                health_reason: health_reasons.get(&n).cloned().flatten(),
                version: m.version,
                fixes: m.fixes,
                plan_digest: m.plan_digest,
                result: if undone.contains(&n) {
                    PointResult::RolledBack.as_str().to_owned()
                } else {
                    m.result.as_str().to_owned()
                },
                data: snapshots.has(n),
                by: record.map(|r| r.by.clone()),
                rollback,
            });
        }
    }
    Ok((entries, ledger))
}
