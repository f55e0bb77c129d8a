//! `sitekeeper history SITE`: rollback points, newest first, and the
//! ledger. Read-only.

use serde::Serialize;

use super::context::{select, state_dir};
use super::{CliError, Format, Global, Printer, load_clean};
use crate::store::SiteState;

/// One rollback point (SPEC §3.1).
#[derive(Debug, Serialize)]
struct Entry {
    point: u64,
    commit: String,
    at: String,
    kind: crate::store::PointKind,
    version: String,
    fixes: Vec<String>,
    plan_digest: Option<String>,
    health: crate::store::Health,
    result: String,
    /// Whether a data snapshot belongs to the point (SPEC §6.6).
    data: bool,
    /// `at` for people (JSON keeps RFC 3339 at full precision).
    #[serde(skip)]
    when: String,
}

/// A time for people: UTC to the second, `2026-12-06 22:16:09Z`. Through
/// the fallible formatter (a `Display` that fails would panic in
/// `to_string`); should it ever fail, RFC 3339 is still a time.
fn human_time(t: &crate::model::values::Timestamp) -> String {
    jiff::fmt::strtime::format("%Y-%m-%d %H:%M:%SZ", t.0).unwrap_or_else(|_| t.0.to_string())
}

/// The snake_case word serde writes for an enum value.
fn word<T: Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

pub(super) fn run(global: &Global, printer: &Printer, name: &str) -> Result<(), CliError> {
    let fleet = load_clean(global)?;
    let site = select(&fleet, &[name.to_owned()])?[0];
    let state = SiteState::new(&state_dir(global, &fleet), site.site.as_str());
    let failed = |e: crate::store::StoreError| CliError::Failed(e.to_string());
    let ledger = state.ledger().read().map_err(failed)?;
    // Verdicts are recorded after the check ran (SPEC §3.1), in the ledger.
    let verdicts = crate::store::verdicts(&ledger);
    // A change whose check or hook failed was undone by the next point.
    let undone: std::collections::BTreeSet<u64> = ledger
        .iter()
        .filter(|r| {
            r.kind == crate::store::LedgerKind::Health
                && r.result == crate::store::LedgerResult::RolledBack
        })
        .filter_map(|r| r.point)
        .collect();
    let snapshots = state.data();
    let mut entries = Vec::new();
    if let Some(points) = state.existing_points().map_err(failed)? {
        for n in points.list().map_err(failed)?.into_iter().rev() {
            let m = points.meta(n).map_err(failed)?;
            let health = m.health(&verdicts);
            entries.push(Entry {
                point: n,
                commit: points.commit_id(n).map_err(failed)?,
                at: m.at.to_string(),
                when: human_time(&m.at),
                kind: m.kind,
                version: m.version,
                fixes: m.fixes,
                plan_digest: m.plan_digest,
                health,
                result: if undone.contains(&n) {
                    crate::store::PointResult::RolledBack.as_str().to_owned()
                } else {
                    m.result.as_str().to_owned()
                },
                data: snapshots.has(n),
            });
        }
    }
    let text = match printer.format {
        Format::Json => serde_json::to_string_pretty(&entries).unwrap_or_default(),
        _ => {
            let mut t = String::new();
            if entries.is_empty() {
                t.push_str(&format!(
                    "{} has no rollback points (not adopted)\n",
                    site.site
                ));
            }
            for e in &entries {
                t.push_str(&format!(
                    "point {:<3} {}  {:<8} {}  fixes [{}]  health {}  {}  {}{}\n",
                    e.point,
                    e.when,
                    word(&e.kind),
                    e.version,
                    e.fixes.join(", "),
                    e.health.as_str(),
                    e.result,
                    &e.commit[..12],
                    if e.data { "  data" } else { "" }
                ));
            }
            if !ledger.is_empty() {
                t.push_str("\nledger:\n");
                for r in ledger.iter().rev() {
                    t.push_str(&format!(
                        "  #{:<3} {}  {} {}  {}  by {}@{} via {}{}\n",
                        r.seq,
                        human_time(&r.at),
                        word(&r.kind),
                        r.id.clone().unwrap_or_default(),
                        word(&r.result),
                        r.by.user,
                        r.by.host,
                        r.by.via,
                        r.error
                            .as_ref()
                            .map(|e| format!("  error: {e}"))
                            .unwrap_or_default()
                    ));
                }
            }
            t
        }
    };
    printer.report(&text);
    Ok(())
}
