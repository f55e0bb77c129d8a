//! `sitekeeper check [SITE…]`: per site, the newer releases on its channel,
//! classified eligible / questionable / ineligible (SPEC §4.2) with the
//! reason, and whether the policy lets each apply automatically now, and if
//! not, which gate holds it. Read-only; it never prompts.

use serde::Serialize;

use super::context::{ScanProgress, now, select, state_dir};
use super::{CliError, Format, Global, Printer, exit, load_clean};
use crate::observe::SiteContext;
use crate::observe::status;
use crate::plan::choose::{Class, Upgrade};
use crate::plan::render::Piece;

/// One site in `check --format json`.
#[derive(Debug, Serialize)]
struct SiteCheck {
    site: String,
    /// `None`: not adopted (nothing is compared then).
    version: Option<String>,
    available: Vec<Upgrade>,
}

pub(super) fn run(global: &Global, printer: &Printer, names: &[String]) -> Result<(), CliError> {
    let fleet = load_clean(global)?;
    let sites = select(&fleet, names)?;
    let state = state_dir(global, &fleet);
    let at = now()?;
    // CI logs are files read later: no progress bars, no colour, even when
    // asked for (off a terminal the printer already leaves colour out).
    let ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty());
    // Each site's check, or the site and why it could not be checked,
    // in name order.
    let mut rows: Vec<Result<SiteCheck, (String, String)>> = Vec::new();
    for site in sites {
        let progress = ScanProgress::new(site.site.as_str(), global.quiet || ci);
        let ctx = match SiteContext::gather(&fleet, site, &state, Some(&progress)) {
            Ok(ctx) => ctx,
            Err(e) => {
                rows.push(Err((site.site.to_string(), e.to_string())));
                continue;
            }
        };
        let plan = ctx.plan(at, None);
        rows.push(Ok(SiteCheck {
            site: site.site.to_string(),
            version: ctx
                .installed
                .as_ref()
                .filter(|_| ctx.adopted())
                .map(|i| i.version.to_string()),
            available: status::upgrades(&ctx, &plan, at),
        }));
    }
    let out: Vec<&SiteCheck> = rows.iter().filter_map(|r| r.as_ref().ok()).collect();
    let failures: Vec<&String> = rows
        .iter()
        .filter_map(|r| r.as_ref().err())
        .map(|(_, e)| e)
        .collect();
    match printer.format {
        // Each site's error right after where its lines would be.
        Format::Human => {
            let mut pieces = Vec::new();
            for row in &rows {
                match row {
                    Ok(s) => pieces.push(Piece::Out(human(&[s], printer, ci))),
                    Err((site, e)) => {
                        pieces.push(Piece::Out(format!("{site}  could not be checked\n")));
                        pieces.push(Piece::Error(e.clone()));
                    }
                }
            }
            printer.pieces(&pieces);
        }
        format => {
            let text = match format {
                Format::Json => serde_json::to_string_pretty(&out).unwrap_or_default() + "\n",
                _ => markdown(&out),
            };
            printer.report(&text);
            for f in &failures {
                printer.error(f);
            }
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(CliError::Exit(exit::FAILED))
    }
}

fn class_word(c: Class) -> &'static str {
    match c {
        Class::Eligible => "eligible",
        Class::Questionable => "questionable",
        Class::Ineligible => "ineligible",
    }
}

fn code_word(u: &Upgrade) -> String {
    u.held
        .as_ref()
        .and_then(|h| serde_json::to_value(h.code).ok())
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn human(out: &[&SiteCheck], printer: &Printer, plain: bool) -> String {
    let bold = |s: &str| if plain { s.to_owned() } else { printer.bold(s) };
    let mut t = String::new();
    for s in out {
        match &s.version {
            None => t.push_str(&format!("{}  not adopted\n", bold(&s.site))),
            Some(v) if s.available.is_empty() => t.push_str(&format!(
                "{}  {v}  up to date on its channel\n",
                bold(&s.site)
            )),
            Some(v) => {
                t.push_str(&format!("{}  {v}\n", bold(&s.site)));
                for u in &s.available {
                    let verdict = match &u.held {
                        None => "applies automatically".to_owned(),
                        Some(h) => format!("held ({}): {}", code_word(u), h.reason),
                    };
                    t.push_str(&format!(
                        "  {}  {}  {}\n      {verdict}\n",
                        u.version,
                        class_word(u.class),
                        u.reason
                    ));
                }
            }
        }
    }
    t
}

fn markdown(out: &[&SiteCheck]) -> String {
    let mut t = String::from(
        "| site | installed | release | class | why | automatic |\n| --- | --- | --- | --- | --- | --- |\n",
    );
    for s in out {
        let installed = s.version.as_deref().unwrap_or("not adopted");
        if s.available.is_empty() {
            t.push_str(&format!("| {} | {installed} | – | | | |\n", s.site));
        }
        for u in &s.available {
            let auto = match &u.held {
                None => "yes".to_owned(),
                Some(h) => format!("no: `{}` {}", code_word(u), h.reason.replace('|', "\\|")),
            };
            t.push_str(&format!(
                "| {} | {installed} | {} | {} | {} | {auto} |\n",
                s.site,
                u.version,
                class_word(u.class),
                u.reason
            ));
        }
    }
    t
}
