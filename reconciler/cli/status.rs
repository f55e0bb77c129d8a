//! `sitekeeper status`: per site, the installed version, applied fixes,
//! rollback point, drift, pending items and the last result. Read-only.

use super::context::{ScanProgress, now, select_by, state_dir};
use super::{CliError, Format, Global, Printer, exit, load_clean};
use crate::model::Selector;
use crate::observe::SiteContext;

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
    let mut out = Vec::new();
    let mut failures = Vec::new();
    for site in sites {
        // The site as it is: an interrupted change finished or undone
        // first (SPEC §6.1, "the next command"), the one change `status`
        // makes, through the changing commands' module.
        if let Some(e) = super::apply::recover_unless_busy(&fleet, site, &state, at) {
            failures.push(e);
        }
        let progress = ScanProgress::new(site.site.as_str(), global.quiet);
        let ctx = match SiteContext::gather(&fleet, site, &state, Some(&progress)) {
            Ok(ctx) => ctx,
            Err(e) => {
                failures.push(e.to_string());
                continue;
            }
        };
        let plan = ctx.plan(at, None);
        match crate::observe::status::of(&ctx, &plan) {
            Ok(status) => out.push(status),
            Err(e) => failures.push(e.to_string()),
        }
    }
    let text = match printer.format {
        Format::Json => serde_json::to_string_pretty(&out).unwrap_or_default(),
        _ => {
            let mut t = String::new();
            for s in &out {
                let version = s.version.clone().unwrap_or_else(|| "not adopted".into());
                t.push_str(&format!(
                    "{}  {}  point {}  fixes [{}]  drift {}  pending {}  last {}",
                    s.site,
                    version,
                    s.point.map_or("–".into(), |p| p.to_string()),
                    s.fixes.join(", "),
                    s.drift.len(),
                    s.pending,
                    s.last_result.clone().unwrap_or_else(|| "–".into())
                ));
                if s.catalog_trust.required() {
                    t.push_str(&format!("  catalog {}", s.catalog_trust.summary()));
                }
                if !s.quarantined.is_empty() {
                    t.push_str(&format!("  quarantined [{}]", s.quarantined.join(", ")));
                }
                t.push('\n');
                for p in &s.preflight {
                    t.push_str(&format!("  preflight {}: {}\n", p.check, p.reason));
                }
            }
            t
        }
    };
    printer.report(&text);
    if failures.is_empty() {
        Ok(())
    } else {
        for f in &failures {
            printer.error(f);
        }
        Err(CliError::Exit(exit::FAILED))
    }
}
