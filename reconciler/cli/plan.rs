//! `sitekeeper plan`: what would be done to each site, and why. Writes
//! nothing to any site. With `--changed-since REV`, only the sites that a
//! change since REV can affect are planned; which ones is decided by
//! [`crate::load::changes`], and this file only wires it to the command line.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::Args;
use serde::Serialize;

use super::context::{ScanProgress, now, select_by, state_dir};
use super::{CliError, Format, Global, Printer, exit, load_clean};
use crate::load::{self, Fleet, Loaded, changes};
use crate::model::Site;
use crate::observe::SiteContext;
use crate::plan::{FailedSite, Plan, render};

/// Arguments of `plan`.
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Sites to plan (default: all). With --changed-since, only those of
    /// them that the change affects.
    pub sites: Vec<String>,
    /// Also write the JSON plan to FILE, for `apply --plan FILE`.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Plan only the sites a change since REV can affect. REV is a branch,
    /// tag or commit of the fleet's git repository (e.g. main, origin/main);
    /// the fleet as given by --fleet (a work tree as it is on disk) is
    /// compared with the fleet at REV. A site is affected when its site
    /// values, a fleet policy of its `extends` chain, its product's
    /// fleet.yaml catalog entry, its approvals or fleet.yaml's state_dir or
    /// allowed_signers changed. Sites gone since REV are listed as removed.
    /// A catalog that moved is considered only with --catalog-base.
    #[arg(long, value_name = "REV")]
    pub changed_since: Option<String>,
    /// With --changed-since: the catalogs' base revision, REF for every
    /// catalog or PRODUCT=REF for one (repeatable). Every site of a product
    /// whose catalog tree at its fleet.yaml ref differs from the tree at REF
    /// is affected. Catalogs must be git repositories holding REF.
    #[arg(long, value_name = "[PRODUCT=]REF", requires = "changed_since")]
    pub catalog_base: Vec<String>,
    /// Exit 0 when nothing would change and 4 when something would.
    #[arg(long)]
    pub detailed_exitcode: bool,
    /// Plan only the sites whose labels hold every KEY=VALUE pair (e.g. host=web1).
    #[arg(long, value_name = "K=V,…", conflicts_with = "sites")]
    pub selector: Option<crate::model::Selector>,
}

/// What `--changed-since` found, for the report.
struct Since {
    rev: String,
    commit: Option<String>,
    removed: Vec<String>,
    /// Each planned site with why it is affected, for people.
    why: Vec<String>,
    /// Sites of the fleet the change does not affect, which are not planned.
    unaffected: usize,
}

/// The JSON plan with the `--changed-since` keys after SPEC §3.1's.
#[derive(Serialize)]
struct SinceJson<'a> {
    #[serde(flatten)]
    plan: &'a Plan,
    changed_since: SinceKey<'a>,
    removed: &'a [String],
}

#[derive(Serialize)]
struct SinceKey<'a> {
    rev: &'a str,
    commit: Option<&'a str>,
}

pub(super) fn run(global: &Global, printer: &Printer, args: &PlanArgs) -> Result<(), CliError> {
    let fleet = load_clean(global)?;
    let mut sites = select_by(&fleet, &args.sites, args.selector.as_ref())?;
    let since = match &args.changed_since {
        Some(rev) => Some(narrow(&fleet, &mut sites, rev, args)?),
        None => None,
    };
    let state = state_dir(global, &fleet);
    let at = now()?;
    let mut plans = Vec::new();
    let mut failures = Vec::new();
    for site in sites {
        let progress = ScanProgress::new(site.site.as_str(), global.quiet);
        match SiteContext::gather(&fleet, site, &state, Some(&progress)) {
            Ok(ctx) => plans.push(ctx.plan(at, None)),
            Err(e) => failures.push(FailedSite {
                site: site.site.to_string(),
                error: e.to_string(),
            }),
        }
    }
    let failed = !failures.is_empty();
    let plan = Plan::new(plans).with_failed(failures);
    if let Some(out) = &args.out {
        // The file is what `apply --plan` reads: the plan alone.
        std::fs::write(out, render::json(&plan))
            .map_err(|e| CliError::Failed(format!("{}: {e}", out.display())))?;
    }
    let text = match (printer.format, &since) {
        // Each site's error goes out right after its site's line.
        (Format::Human, s) => {
            printer.pieces(&render::human_pieces(&plan, global.verbose > 0));
            s.as_ref().map(since_human)
        }
        (Format::Json, None) => Some(render::json(&plan)),
        (Format::Json, Some(s)) => {
            let wrapped = SinceJson {
                plan: &plan,
                changed_since: SinceKey {
                    rev: &s.rev,
                    commit: s.commit.as_deref(),
                },
                removed: &s.removed,
            };
            let mut text = serde_json::to_string_pretty(&wrapped)
                .map_err(|e| CliError::Failed(format!("cannot write the plan as JSON: {e}")))?;
            text.push('\n');
            Some(text)
        }
        (Format::Markdown, s) => {
            let mut text = render::markdown(&plan);
            if let Some(s) = s {
                text.push_str(&since_markdown(s));
            }
            Some(text)
        }
    };
    if let Some(text) = text {
        printer.report(&text);
    }
    if failed {
        // Human output has shown each error with its site already.
        if printer.format != Format::Human {
            for f in &plan.failed {
                printer.error(&f.error);
            }
        }
        return Err(CliError::Exit(exit::FAILED));
    }
    // A removed site has no plan: nothing is done to it, so it is no
    // pending change for --detailed-exitcode.
    if args.detailed_exitcode && plan.sites.iter().any(|s| s.has_changes()) {
        return Err(CliError::Exit(exit::PENDING));
    }
    Ok(())
}

/// Keeps in `sites` only those the change since `rev` affects. Named sites
/// are intersected with the affected ones; removed sites are reported only
/// when no site was named (a named site must exist at the head).
fn narrow(
    fleet: &Fleet,
    sites: &mut Vec<&Loaded<Site>>,
    rev: &str,
    args: &PlanArgs,
) -> Result<Since, CliError> {
    let base = load::load_fleet_at(fleet, rev)?;
    let moved = changes::moved_catalogs(fleet, &catalog_bases(fleet, &args.catalog_base))?;
    let found = changes::changed_sites(&base, fleet, &moved);
    let before = sites.len();
    sites.retain(|s| found.affected.contains_key(s.site.as_str()));
    Ok(Since {
        rev: rev.to_owned(),
        commit: base.source.commit().map(str::to_owned),
        removed: if args.sites.is_empty() {
            found.removed.into_iter().collect()
        } else {
            Vec::new()
        },
        unaffected: before - sites.len(),
        why: sites
            .iter()
            .filter_map(|s| {
                let name = s.site.as_str();
                let reasons = found.affected.get(name)?;
                let words: Vec<String> = reasons.iter().map(ToString::to_string).collect();
                Some(format!("{name} ({})", words.join(", ")))
            })
            .collect(),
    })
}

/// Each product's catalog base revision from `--catalog-base`: `PRODUCT=REF`
/// for a product of the fleet, else `REF` for every catalog not named. A
/// value is read as `PRODUCT=REF` only when PRODUCT is a product of the
/// fleet, so that a revision with `=` in it still works.
fn catalog_bases(fleet: &Fleet, given: &[String]) -> BTreeMap<String, String> {
    let mut every = None;
    let mut bases = BTreeMap::new();
    for value in given {
        match value.split_once('=') {
            Some((product, rev)) if fleet.config.catalogs.contains_key(product) => {
                bases.insert(product.to_owned(), rev.to_owned());
            }
            _ => every = Some(value.clone()),
        }
    }
    if let Some(rev) = every {
        for product in fleet.catalogs.keys() {
            bases.entry(product.clone()).or_insert_with(|| rev.clone());
        }
    }
    bases
}

fn since_human(s: &Since) -> String {
    let mut out = format!(
        "Changed since {}: {} unaffected site{} not planned.\n",
        s.rev,
        s.unaffected,
        if s.unaffected == 1 { "" } else { "s" }
    );
    if !s.why.is_empty() {
        out.push_str(&format!("Affected: {}.\n", s.why.join("; ")));
    }
    if !s.removed.is_empty() {
        out.push_str(&format!(
            "Removed since {}: {} (nothing is planned for them).\n",
            s.rev,
            s.removed.join(", ")
        ));
    }
    out
}

fn since_markdown(s: &Since) -> String {
    let mut out = format!(
        "\nOnly the sites that changes since `{}` can affect are planned; {} unaffected site{} not planned.\n",
        s.rev,
        s.unaffected,
        if s.unaffected == 1 { " is" } else { "s are" }
    );
    if !s.why.is_empty() {
        out.push_str(&format!("\nAffected: {}.\n", s.why.join("; ")));
    }
    if !s.removed.is_empty() {
        let names: Vec<String> = s.removed.iter().map(|n| format!("`{n}`")).collect();
        out.push_str(&format!(
            "\n**Removed since `{}`:** {} (nothing is planned for them).\n",
            s.rev,
            names.join(", ")
        ));
    }
    out
}
