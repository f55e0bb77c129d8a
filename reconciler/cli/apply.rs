//! `sitekeeper apply` and `sitekeeper rollback`: converge sites, or return
//! one to a rollback point. Exit 1 when a change failed (and was undone),
//! 3 when one was refused before anything was written.

use crate::apply::clock::Clock;
use std::path::PathBuf;

use clap::Args;

use super::context::{ScanProgress, now, select, state_dir};
use super::{CliError, Global, Printer, exit, load_clean};
use crate::apply::converge::{self, ApplyError, Options, Outcome};
use crate::model::values::Version;
use crate::plan::Plan;
use crate::plan::render::{failed_words, named_count};
use crate::watch::notify::Courier;

/// Arguments of `apply`.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// Sites to converge (default: all; with --plan, the plan's sites).
    pub sites: Vec<String>,
    /// Apply exactly this saved plan (from `plan --out`); refuse if anything moved.
    #[arg(long, value_name = "FILE")]
    pub plan: Option<PathBuf>,
    /// Upgrade to this release, lifting its quarantine.
    #[arg(long, value_name = "V")]
    pub release: Option<String>,
    /// Apply this fix again although it is quarantined, lifting the
    /// quarantine once it succeeds.
    #[arg(long, value_name = "ID")]
    pub fix: Option<String>,
    /// Refuse (exit 3) instead of waiting when a site is locked.
    #[arg(long)]
    pub no_wait: bool,
    /// Converge up to N sites at once (default 1). Each site has its own
    /// lock and transaction; over several sites their durability work is
    /// shared (group commit), whatever N.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = super::jobs)]
    pub jobs: usize,
}

/// Reads a saved plan.
fn read_plan(path: &PathBuf) -> Result<Plan, CliError> {
    let text =
        std::fs::read(path).map_err(|e| CliError::Usage(format!("{}: {e}", path.display())))?;
    serde_json::from_slice(&text)
        .map_err(|e| CliError::Usage(format!("{}: not a sitekeeper plan: {e}", path.display())))
}

/// The exit code of a change that did not converge (SPEC §3), by its
/// kind: the one place that decides it. A rollback point that does not
/// exist is a request that makes no sense for the site (exit 2), not a
/// refusal: nothing could make it succeed but asking for another point.
pub(super) fn exit_code(e: &ApplyError) -> u8 {
    match e {
        ApplyError::Invalid { .. } | ApplyError::NoPoint { .. } => exit::INVALID,
        e if e.is_refusal() => exit::REFUSED,
        _ => exit::FAILED,
    }
}

/// Prints each site's result on its own line (an error on stderr, in its
/// place), then a summary line that counts and names the sites that were
/// refused or failed (and, when there are any, those the command asked
/// something invalid of: exit 2, nothing changed, so not "failed"), and
/// returns the exit code of the worst.
fn report(
    printer: &Printer,
    results: Vec<(String, Result<Outcome, ApplyError>)>,
) -> Result<(), CliError> {
    let mut code = exit::OK;
    let (mut changed, mut unchanged) = (0, 0);
    let (mut refused, mut failed, mut invalid) = (Vec::new(), Vec::new(), Vec::new());
    for (site, r) in results {
        match r {
            Ok(Outcome::Unchanged) => {
                unchanged += 1;
                printer.say(&format!("{site}: nothing to do"));
            }
            Ok(Outcome::Changed {
                point,
                files,
                version,
                note,
            }) => {
                changed += 1;
                printer.say(&format!(
                    "{site}: {version}, {files} file(s) changed, point {point}"
                ));
                if let Some(note) = note {
                    printer.say(&format!("{site}: {note}"));
                }
            }
            Err(e) => {
                let this = exit_code(&e);
                if this == exit::REFUSED {
                    printer.error(&format!("refused: {e}"));
                    refused.push(site);
                } else {
                    printer.error(&e.to_string());
                    if this == exit::INVALID {
                        invalid.push(site);
                    } else {
                        failed.push(site);
                    }
                }
                // A failure outranks a refusal, which outranks success;
                // invalid input, found per site, ranks like a failure.
                code = match (code, this) {
                    (exit::FAILED, _) | (_, exit::FAILED) => exit::FAILED,
                    (exit::INVALID, _) | (_, exit::INVALID) => exit::INVALID,
                    (c, t) => c.max(t),
                };
            }
        }
    }
    let invalid = if invalid.is_empty() {
        String::new()
    } else {
        format!(
            ", {}",
            named_count(invalid.iter().map(String::as_str), "invalid")
        )
    };
    printer.say(&format!(
        "{changed} site{} changed, {unchanged} unchanged, {}, {}{invalid}",
        if changed == 1 { "" } else { "s" },
        named_count(refused.iter().map(String::as_str), "refused"),
        failed_words(failed.iter().map(String::as_str)),
    ));
    match code {
        exit::OK => Ok(()),
        code => Err(CliError::Exit(code)),
    }
}

pub(super) fn run(global: &Global, printer: &Printer, args: &ApplyArgs) -> Result<(), CliError> {
    let fleet = load_clean(global)?;
    let saved = args.plan.as_ref().map(read_plan).transpose()?;
    let names: Vec<String> = match (&saved, args.sites.is_empty()) {
        (Some(p), true) => p.sites.iter().map(|s| s.site.clone()).collect(),
        _ => args.sites.clone(),
    };
    let sites = select(&fleet, &names)?;
    let forced: Option<Version> = args
        .release
        .as_ref()
        .map(|v| v.parse())
        .transpose()
        .map_err(CliError::Usage)?;
    named_in_a_catalog(&fleet, &sites, forced.as_ref(), args.fix.as_deref())?;
    let state = state_dir(global, &fleet);
    let at = now()?;
    let courier = Courier::start(&fleet, &state);
    let opts = Options {
        via: "cli",
        wait: !args.no_wait,
        saved: saved.as_ref(),
        forced: forced.as_ref(),
        forced_fix: args.fix.as_deref(),
        clock: Clock::starting(at),
        state_dir: &state,
        progress: None,
        cancel: None,
    };
    let apply_one = |s: &&crate::load::Loaded<crate::model::fleet::Site>| {
        let bar = ScanProgress::labelled(
            s.site.as_str(),
            global.quiet,
            "staging and replacing {pos}/{len}",
        );
        let with_bar = Options {
            progress: Some(&bar),
            ..opts
        };
        let result = converge::apply_site(&fleet, s, &with_bar);
        raise(courier.as_ref(), &fleet, s.site.as_str(), &result);
        (s.site.to_string(), result)
    };
    let results: Vec<(String, Result<Outcome, ApplyError>)> = if sites.len() > 1 {
        // Many sites: group commits (README "Converging"), each site with
        // its own lock, journal and recovery, up to --jobs at once. No
        // per-site bars: many sites' bars would only scroll.
        let done = |site: &str, result: &Result<Outcome, ApplyError>| {
            raise(courier.as_ref(), &fleet, site, result);
        };
        converge::apply_sites(&fleet, &sites, &opts, args.jobs.max(1), &done)
    } else {
        sites.iter().map(apply_one).collect()
    };
    notified(printer, courier);
    report(printer, results)
}

/// `--release V` and `--fix ID` must name something at least one of the
/// sites' catalogs has: anything else is a typo (exit 2, nothing run),
/// not "nothing to do". A site whose own catalog lacks it is refused by
/// `converge` with the reason.
fn named_in_a_catalog(
    fleet: &crate::load::Fleet,
    sites: &[&crate::load::Loaded<crate::model::fleet::Site>],
    release: Option<&Version>,
    fix: Option<&str>,
) -> Result<(), CliError> {
    // Each product once, however many sites run it.
    let catalogs: std::collections::BTreeMap<&str, &crate::load::LoadedCatalog> = sites
        .iter()
        .filter_map(|s| fleet.catalogs.get(&s.product))
        .map(|c| (c.product.as_str(), c))
        .collect();
    let products = catalogs.keys().copied().collect::<Vec<_>>().join(", ");
    let catalogs: Vec<&crate::load::LoadedCatalog> = catalogs.into_values().collect();
    if let Some(v) = release
        && !catalogs
            .iter()
            .any(|c| c.releases.iter().any(|r| r.version == *v))
    {
        let known: Vec<String> = catalogs
            .iter()
            .flat_map(|c| c.releases.iter().map(|r| r.version.to_string()))
            .collect();
        return Err(CliError::Usage(format!(
            "--release {v}: no release {v} in the catalog of {products} (hint: the releases are {})",
            known.join(", ")
        )));
    }
    if let Some(id) = fix
        && !catalogs.iter().any(|c| c.fixes.iter().any(|f| f.id == id))
    {
        let known: Vec<&str> = catalogs
            .iter()
            .flat_map(|c| c.fixes.iter().map(|f| f.id.as_str()))
            .collect();
        let hint = if known.is_empty() {
            "it has no fixes".to_owned()
        } else {
            format!("the fixes are {}", known.join(", "))
        };
        return Err(CliError::Usage(format!(
            "--fix {id}: no fix {id} in the catalog of {products} (hint: {hint})"
        )));
    }
    Ok(())
}

/// Raises the events of a site that failed (SPEC §9) as soon as it has
/// failed, so they are delivered while the other sites converge.
fn raise(
    courier: Option<&Courier>,
    fleet: &crate::load::Fleet,
    site: &str,
    result: &Result<Outcome, ApplyError>,
) {
    let (Some(courier), Err(e)) = (courier, result) else {
        return;
    };
    let at = now().unwrap_or_else(|_| jiff::Timestamp::now()).to_string();
    let labels = fleet
        .site(site)
        .map(|s| s.labels.clone())
        .unwrap_or_default();
    courier.raise(crate::watch::notify::raise::of_cli_error(
        site, &labels, e, &at,
    ));
}

/// Says where each notify target's events went: to the background relay
/// (the command does not wait for any target), or, when it could not be
/// started, to the outbox alone, for `watch`.
fn notified(printer: &Printer, courier: Option<Courier>) {
    for h in courier.map(Courier::finish).unwrap_or_default() {
        match h.relay {
            Ok(pid) => printer.say(&format!(
                "notifying {} of {} event(s) in the background (relay pid {pid}; \
                 what it does not accept waits in the outbox)",
                h.target, h.events
            )),
            Err(e) => printer.warning(&format!(
                "notify {}: not sent: {e}; {} event(s) wait in the outbox for `watch`",
                h.target, h.events
            )),
        }
    }
}

pub(super) fn rollback(
    global: &Global,
    printer: &Printer,
    site: &str,
    to: Option<u64>,
    data: bool,
    no_wait: bool,
) -> Result<(), CliError> {
    let fleet = load_clean(global)?;
    let site = select(&fleet, &[site.to_owned()])?[0];
    let state = state_dir(global, &fleet);
    let bar = ScanProgress::labelled(site.site.as_str(), global.quiet, "restoring {pos}/{len}");
    let opts = Options {
        via: "cli",
        wait: !no_wait,
        saved: None,
        forced: None,
        forced_fix: None,
        clock: Clock::starting(now()?),
        state_dir: &state,
        progress: Some(&bar),
        cancel: None,
    };
    let courier = Courier::start(&fleet, &state);
    let result = converge::rollback_site(&fleet, site, to, data, &opts);
    raise(courier.as_ref(), &fleet, site.site.as_str(), &result);
    notified(printer, courier);
    let results = vec![(site.site.to_string(), result)];
    report(printer, results)
}

/// Finishes or undoes an interrupted change on `site` before a command
/// reads it, unless someone is at work on it right now (its lock is held:
/// then the reader only looks). `Some` names a recovery that failed.
pub(super) fn recover_unless_busy(
    fleet: &crate::load::Fleet,
    site: &crate::load::Loaded<crate::model::fleet::Site>,
    state_dir: &std::path::Path,
    now: jiff::Timestamp,
) -> Option<String> {
    let opts = Options {
        via: "cli",
        wait: false,
        saved: None,
        forced: None,
        forced_fix: None,
        clock: Clock::starting(now),
        state_dir,
        progress: None,
        cancel: None,
    };
    match converge::recover_site(fleet, site, &opts) {
        Ok(()) => None,
        Err(e) if e.is_refusal() => None,
        Err(e) => Some(e.to_string()),
    }
}
