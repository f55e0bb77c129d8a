//! `sitekeeper history SITE`: rollback points, newest first, and the
//! ledger. Read-only.

use serde::Serialize;

use super::context::{select, state_dir};
use super::{CliError, Format, Global, Printer, load_clean};
use crate::store::SiteState;

/// A time for people (see [`crate::observe::history::human_time`]).
fn human_time(t: &crate::model::values::Timestamp) -> String {
    crate::observe::history::human_time(t)
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
    let (entries, ledger) = crate::observe::history::read(&state).map_err(failed)?;
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
