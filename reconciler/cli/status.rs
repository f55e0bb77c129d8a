//! `sitekeeper status`: per site, the installed version, applied fixes,
//! rollback point, drift, pending items and the last result. Read-only.

use serde::Serialize;

use super::context::{ScanProgress, now, select, state_dir};
use super::{CliError, Format, Global, Printer, exit, load_clean};
use crate::apply::SiteContext;
use crate::load::Trust;

/// One site's status (SPEC §3.1).
#[derive(Debug, Serialize)]
struct Status {
    site: String,
    version: Option<String>,
    fixes: Vec<String>,
    point: Option<u64>,
    drift: Vec<String>,
    pending: usize,
    last_result: Option<String>,
    /// The verdict on the catalog commit for this site (SPEC §7), the
    /// fleet's included: what decides whether its plan is held.
    catalog_trust: Trust,
    /// The verdict on the fleet repo's own commit.
    fleet_trust: Trust,
}

pub(super) fn run(global: &Global, printer: &Printer, names: &[String]) -> Result<(), CliError> {
    let fleet = load_clean(global)?;
    let sites = select(&fleet, names)?;
    let state = state_dir(global, &fleet);
    let at = now()?;
    let mut out = Vec::new();
    let mut failures = Vec::new();
    for site in sites {
        // Finish or undo an interrupted change first, unless someone is at
        // work on the site right now (then its lock is held and we only look).
        let opts = crate::apply::converge::Options {
            via: "cli",
            wait: false,
            saved: None,
            forced: None,
            now: at,
            state_dir: &state,
            progress: None,
        };
        match crate::apply::converge::recover_site(&fleet, site, &opts) {
            Ok(()) | Err(crate::apply::converge::ApplyError::Refused(_)) => {}
            Err(e) => failures.push(e.to_string()),
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
        let (version, fixes) = match (&ctx.points, ctx.point) {
            (Some(points), Some(n)) => match points.meta(n) {
                Ok(m) => (Some(m.version), m.fixes),
                Err(e) => {
                    failures.push(e.to_string());
                    continue;
                }
            },
            _ => (None, Vec::new()),
        };
        let last_result = ctx.state.ledger().read().ok().and_then(|r| {
            r.last().map(|r| {
                serde_json::to_value(r.result)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default()
            })
        });
        out.push(Status {
            site: site.site.to_string(),
            version,
            fixes,
            point: ctx.point,
            drift: plan.drift.clone(),
            pending: plan.actions.len(),
            last_result,
            catalog_trust: ctx.trust.clone(),
            fleet_trust: fleet.trust.clone(),
        });
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
                t.push('\n');
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
