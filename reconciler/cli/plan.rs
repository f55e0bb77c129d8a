//! `sitekeeper plan`: what would be done to each site, and why. Writes
//! nothing to any site.

use std::path::PathBuf;

use clap::Args;

use super::context::{ScanProgress, now, select, state_dir};
use super::{CliError, Format, Global, Printer, exit, load_clean};
use crate::apply::SiteContext;
use crate::plan::{Plan, render};

/// Arguments of `plan`.
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Sites to plan (default: all).
    pub sites: Vec<String>,
    /// Also write the JSON plan to FILE, for `apply --plan FILE`.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Plan only the sites a change since REV can affect (not implemented yet).
    #[arg(long, value_name = "REV")]
    pub changed_since: Option<String>,
    /// Exit 0 when nothing would change and 4 when something would.
    #[arg(long)]
    pub detailed_exitcode: bool,
}

pub(super) fn run(global: &Global, printer: &Printer, args: &PlanArgs) -> Result<(), CliError> {
    if args.changed_since.is_some() {
        return Err(CliError::Usage(
            "`plan --changed-since` is not implemented yet".into(),
        ));
    }
    let fleet = load_clean(global)?;
    let sites = select(&fleet, &args.sites)?;
    let state = state_dir(global, &fleet);
    let at = now()?;
    let mut plans = Vec::new();
    let mut failures = Vec::new();
    for site in sites {
        let progress = ScanProgress::new(site.site.as_str(), global.quiet);
        match SiteContext::gather(&fleet, site, &state, Some(&progress)) {
            Ok(ctx) => plans.push(ctx.plan(at, None)),
            Err(e) => failures.push(e.to_string()),
        }
    }
    let plan = Plan::new(plans);
    if let Some(out) = &args.out {
        std::fs::write(out, render::json(&plan))
            .map_err(|e| CliError::Failed(format!("{}: {e}", out.display())))?;
    }
    let text = match printer.format {
        Format::Json => render::json(&plan),
        Format::Markdown => render::markdown(&plan),
        Format::Human => render::human(&plan, global.verbose > 0),
    };
    printer.report(&text);
    if !failures.is_empty() {
        for f in &failures {
            printer.error(f);
        }
        return Err(CliError::Exit(exit::FAILED));
    }
    if args.detailed_exitcode && plan.sites.iter().any(|s| s.has_changes()) {
        return Err(CliError::Exit(exit::PENDING));
    }
    Ok(())
}
