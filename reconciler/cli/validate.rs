//! `sitekeeper validate`: check every fleet and catalog file and report every
//! problem in one run. No site is read or written.

use serde::Serialize;

use super::{CliError, Format, Global, Printer, exit, load_options};
use crate::load::{self, Diagnostic, Fleet, Trust};

/// What was checked.
#[derive(Debug, Serialize)]
struct Summary {
    fleet_trust: Trust,
    sites: usize,
    fleet_policies: usize,
    stock_policies: usize,
    approvals: usize,
    catalogs: Vec<CatalogSummary>,
}

#[derive(Debug, Serialize)]
struct CatalogSummary {
    product: String,
    commit: Option<String>,
    releases: usize,
    fixes: usize,
    trust: Trust,
}

#[derive(Debug, Serialize)]
struct Report<'a> {
    valid: bool,
    errors: &'a [Diagnostic],
    summary: Summary,
}

fn summarize(fleet: &Fleet) -> Summary {
    Summary {
        fleet_trust: fleet.trust.clone(),
        sites: fleet.sites.len(),
        fleet_policies: fleet.policies.len(),
        stock_policies: fleet.stock_policies.len(),
        approvals: fleet.approvals.len(),
        catalogs: fleet
            .catalogs
            .values()
            .map(|c| CatalogSummary {
                product: c.product.clone(),
                commit: c.source.commit().map(str::to_owned),
                releases: c.releases.len(),
                fixes: c.fixes.len(),
                trust: c.trust.clone(),
            })
            .collect(),
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

pub(super) fn run(global: &Global, printer: &Printer) -> Result<(), CliError> {
    let (fleet, diags) = load::load(&load_options(global)?)?;
    let summary = summarize(&fleet);
    match printer.format {
        Format::Json => {
            let report = Report {
                valid: diags.is_empty(),
                errors: &diags,
                summary,
            };
            printer.report(&serde_json::to_string_pretty(&report).unwrap_or_default());
            if !diags.is_empty() {
                printer.diagnostics(&diags);
                return Err(CliError::Exit(exit::INVALID));
            }
        }
        Format::Markdown => {
            let mut md = String::from("### sitekeeper validate\n\n");
            if diags.is_empty() {
                md.push_str(&format!("✅ valid: {}\n", human_summary(&summary)));
            } else {
                md.push_str(&format!(
                    "❌ {}\n\n",
                    plural(diags.len(), "problem", "problems")
                ));
                for d in &diags {
                    md.push_str(&format!("- `{}`: {}", d.at, d.message));
                    if let Some(h) = &d.hint {
                        md.push_str(&format!(" _(hint: {h})_"));
                    }
                    md.push('\n');
                }
            }
            printer.report(&md);
            if !diags.is_empty() {
                return Err(CliError::Exit(exit::INVALID));
            }
        }
        Format::Human => {
            if !diags.is_empty() {
                return Err(CliError::Invalid(diags));
            }
            printer.say(&format!("valid: {}", human_summary(&summary)));
        }
    }
    Ok(())
}

fn human_summary(s: &Summary) -> String {
    let catalogs: Vec<String> = s
        .catalogs
        .iter()
        .map(|c| {
            let mut text = format!(
                "{} ({}, {}",
                c.product,
                plural(c.releases, "release", "releases"),
                plural(c.fixes, "fix", "fixes")
            );
            if c.trust.required() {
                text.push_str(&format!(", {}", c.trust.summary()));
            }
            text.push(')');
            text
        })
        .collect();
    let fleet = if s.fleet_trust.required() {
        format!("; fleet {}", s.fleet_trust.summary())
    } else {
        String::new()
    };
    format!(
        "{}, {}, {}, {}; catalogs: {}{fleet}",
        plural(s.sites, "site", "sites"),
        plural(s.fleet_policies, "fleet policy", "fleet policies"),
        plural(s.stock_policies, "stock policy", "stock policies"),
        plural(s.approvals, "approvals file", "approvals files"),
        if catalogs.is_empty() {
            "none".to_owned()
        } else {
            catalogs.join(", ")
        }
    )
}
