//! `sitekeeper status`: per site, the installed version, applied fixes,
//! rollback point, drift, pending items and the last result, then a
//! summary line that counts and names the sites that could not be read.
//! Read-only, except that it finishes or undoes an interrupted change.

use super::context::{ScanProgress, now, select_by, state_dir};
use super::{CliError, Format, Global, Printer, exit, load_clean};
use crate::model::Selector;
use crate::observe::SiteContext;
use crate::observe::status::SiteStatus as Status;
use crate::plan::render::{Piece, failed_words};

/// One site's outcome: its status when it could be read, and every error
/// met on the way (a recovery that failed may still leave a status).
struct Row {
    site: String,
    status: Option<Status>,
    errors: Vec<String>,
}

pub(super) fn run(
    global: &Global,
    printer: &Printer,
    names: &[String],
    selector: Option<&Selector>,
) -> Result<(), CliError> {
    let fleet = load_clean(global)?;
    let sites = select_by(&fleet, names, selector)?;
    let state = state_dir(global, &fleet);
    let at = now()?;
    let mut rows = Vec::new();
    for site in sites {
        let mut row = Row {
            site: site.site.to_string(),
            status: None,
            errors: Vec::new(),
        };
        // The site as it is: an interrupted change finished or undone
        // first (SPEC §6.1, "the next command"), the one change `status`
        // makes, through the changing commands' module.
        if let Some(e) = super::apply::recover_unless_busy(&fleet, site, &state, at) {
            row.errors.push(e);
        }
        let progress = ScanProgress::new(site.site.as_str(), global.quiet);
        match SiteContext::gather(&fleet, site, &state, Some(&progress)) {
            Ok(ctx) => {
                let plan = ctx.plan(at, None);
                match crate::observe::status::of(&ctx, &plan) {
                    Ok(status) => row.status = Some(status),
                    Err(e) => row.errors.push(e.to_string()),
                }
            }
            Err(e) => row.errors.push(e.to_string()),
        }
        // A root that cannot be opened fails the recovery and the reading
        // alike: say it once.
        row.errors.dedup();
        rows.push(row);
    }
    match printer.format {
        Format::Json => {
            // SPEC §3.1 makes this a list of statuses; the sites that
            // failed are missing from it, and their errors follow.
            let out: Vec<&Status> = rows.iter().filter_map(|r| r.status.as_ref()).collect();
            printer.report(&serde_json::to_string_pretty(&out).unwrap_or_default());
            for e in rows.iter().flat_map(|r| &r.errors) {
                printer.error(e);
            }
        }
        _ => printer.pieces(&human(&rows)),
    }
    if rows.iter().any(|r| !r.errors.is_empty()) {
        Err(CliError::Exit(exit::FAILED))
    } else {
        Ok(())
    }
}

/// A line per site, each followed by its errors, then the summary.
fn human(rows: &[Row]) -> Vec<Piece> {
    let mut pieces = Vec::new();
    for row in rows {
        let text = match &row.status {
            Some(s) => site_line(s),
            None => format!("{}  could not be read\n", row.site),
        };
        pieces.push(Piece::Out(text));
        pieces.extend(row.errors.iter().cloned().map(Piece::Error));
    }
    let statuses = || rows.iter().filter_map(|r| r.status.as_ref());
    let pending = statuses().filter(|s| s.pending > 0).count();
    let drift = statuses().filter(|s| !s.drift.is_empty()).count();
    let failed: Vec<&str> = rows
        .iter()
        .filter(|r| !r.errors.is_empty())
        .map(|r| r.site.as_str())
        .collect();
    pieces.push(Piece::Out(format!(
        "{} site{}: {pending} with pending changes, {drift} with drift, {}\n",
        rows.len(),
        if rows.len() == 1 { "" } else { "s" },
        failed_words(failed.into_iter())
    )));
    pieces
}

fn site_line(s: &Status) -> String {
    let version = s.version.clone().unwrap_or_else(|| "not adopted".into());
    let mut t = format!(
        "{}  {}  point {}  fixes [{}]  drift {}  pending {}  last {}",
        s.site,
        version,
        s.point.map_or("–".into(), |p| p.to_string()),
        s.fixes.join(", "),
        s.drift.len(),
        s.pending,
        s.last_result.clone().unwrap_or_else(|| "–".into())
    );
    if s.catalog_trust.required() {
        t.push_str(&format!("  catalog {}", s.catalog_trust.summary()));
    }
    if !s.quarantined.is_empty() {
        t.push_str(&format!("  quarantined [{}]", s.quarantined.join(", ")));
    }
    t.push('\n');
    if let Some(f) = &s.failure {
        t.push_str(&format!("  FAILURE MARKER: {}\n", f.summary(&s.site)));
    }
    for p in &s.preflight {
        t.push_str(&format!("  preflight {}: {}\n", p.check, p.reason));
    }
    t
}
