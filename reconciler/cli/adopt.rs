//! `sitekeeper adopt (SITE… | --all) (--version V | --detect)`: take over
//! existing installs, recording each one's managed files as its rollback
//! point 1. Many sites are adopted by one process, which reads the fleet
//! and its catalogs once: adopting a fleet costs the same per site at 100
//! sites as at 5,000 (a process per site parsed the whole fleet each time).

use clap::Args;

use super::context::{ScanProgress, now, select};
use super::{CliError, Global, Printer, exit, load_clean};
use crate::apply::adopt::{AdoptError, adopt};
use crate::load::{Fleet, Loaded};
use crate::model::Site;
use crate::model::values::Version;
use crate::observe::SiteContext;
use crate::store::SiteState;

/// Arguments of `adopt`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["version", "detect"])))]
#[command(group(clap::ArgGroup::new("whom").required(true).args(["sites", "all"])))]
pub struct AdoptArgs {
    /// The sites.
    pub sites: Vec<String>,
    /// Every site of the fleet not adopted yet (adopted ones are skipped).
    #[arg(long)]
    pub all: bool,
    /// The release the sites run.
    #[arg(long, value_name = "V")]
    pub version: Option<String>,
    /// Compare each site's files with every release and adopt the closest.
    #[arg(long)]
    pub detect: bool,
    /// Sites adopted at once.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = super::jobs)]
    pub jobs: usize,
}

/// What became of one site.
enum Adopted {
    /// Adopted: the lines to print (the detection, the adoption).
    Done(Vec<String>),
    /// Already adopted, with `--all`: left alone.
    Skipped,
    /// Not adopted: the exit code it asks for, and why.
    Not(u8, String),
}

pub(super) fn run(global: &Global, printer: &Printer, args: &AdoptArgs) -> Result<(), CliError> {
    let fleet = load_clean(global)?;
    let sites = select(&fleet, &args.sites)?;
    let state = super::context::state_dir(global, &fleet);
    // An untrusted fleet may have redirected the sites' state dirs: take
    // no lock there (which creates it) until a trusted commit arrives.
    if let Some(reason) = fleet.trust.untrusted() {
        for site in &sites {
            printer.error(&format!("refused: {}: {reason}", site.site));
        }
        return Err(CliError::Exit(exit::REFUSED));
    }
    let version: Option<Version> = args
        .version
        .as_deref()
        .map(str::parse)
        .transpose()
        .map_err(CliError::Usage)?;
    let at = now()?;
    let one = |site: &&Loaded<Site>| {
        adopt_one(global, &fleet, &state, site, version.as_ref(), args.all, at)
    };
    let results: Vec<Adopted> = super::context::for_each_site(args.jobs, &sites, one);
    let (mut adopted, mut skipped, mut code) = (0usize, 0usize, exit::OK);
    for result in results {
        match result {
            Adopted::Done(lines) => {
                adopted += 1;
                lines.iter().for_each(|l| printer.say(l));
            }
            Adopted::Skipped => skipped += 1,
            Adopted::Not(this, message) => {
                printer.error(&message);
                // A failure outranks invalid input, which outranks a refusal.
                code = match (code, this) {
                    (exit::FAILED, _) | (_, exit::FAILED) => exit::FAILED,
                    (exit::INVALID, _) | (_, exit::INVALID) => exit::INVALID,
                    (c, t) => c.max(t),
                };
            }
        }
    }
    if sites.len() > 1 || args.all {
        printer.say(&format!(
            "{adopted} site{} adopted, {skipped} already adopted",
            if adopted == 1 { "" } else { "s" }
        ));
    }
    match code {
        exit::OK => Ok(()),
        code => Err(CliError::Exit(code)),
    }
}

/// Adopts one site under its lock, at `version` or the release it
/// resembles most. With `skip_adopted` (`--all`), a site that already has
/// a point is left alone rather than refused.
fn adopt_one(
    global: &Global,
    fleet: &Fleet,
    state: &std::path::Path,
    site: &Loaded<Site>,
    version: Option<&Version>,
    skip_adopted: bool,
    at: jiff::Timestamp,
) -> Adopted {
    let name = site.site.as_str();
    // Errors of gathering and adopting name the site themselves.
    let failed = |e: &dyn std::fmt::Display| Adopted::Not(exit::FAILED, e.to_string());
    // The lock before anything is read: two adopts started together would
    // otherwise both see "not adopted" and both record an adopt point.
    let site_state = SiteState::new(state, name);
    let _lock = match site_state.lock(true) {
        Ok(Some(lock)) => lock,
        Ok(None) => {
            return Adopted::Not(
                exit::REFUSED,
                format!("refused: {name}: another sitekeeper holds the site's lock"),
            );
        }
        Err(e) => return failed(&format!("{name}: {e}")),
    };
    if let Err(e) = remove_cache_temps(&site_state) {
        return failed(&format!("{name}: {e}"));
    }
    let progress = ScanProgress::new(name, global.quiet);
    let ctx = match SiteContext::gather(fleet, site, state, Some(&progress)) {
        Ok(ctx) => ctx,
        Err(e) => return failed(&e),
    };
    // Adoption records the catalog commit as the site's first, which later
    // commits must descend from: an untrusted one must not become that mark.
    if let Some(reason) = ctx.trust.untrusted() {
        return Adopted::Not(exit::REFUSED, format!("refused: {name}: {reason}"));
    }
    // Exit 2, as for any other adopt that makes no sense for the site
    // (SPEC 3 names no code for it; tests/planning.rs holds it to 2).
    if let Some(point) = ctx.point {
        if skip_adopted {
            return Adopted::Skipped;
        }
        let e = AdoptError::Already {
            site: name.to_owned(),
            point,
        };
        return Adopted::Not(exit::INVALID, e.to_string());
    }
    let mut lines = Vec::new();
    let version = match version {
        Some(v) => v.clone(),
        None => match ctx.detect() {
            Some(d) => {
                lines.push(format!("{name}: {d}"));
                d.version
            }
            None => {
                return Adopted::Not(
                    exit::INVALID,
                    format!(
                        "{name}: no release of the catalog resembles its files (hint: adopt it with --version V)"
                    ),
                );
            }
        },
    };
    match adopt(&ctx, &version, at, "cli") {
        Ok(a) => {
            let mut line = format!(
                "adopted {name} at {}: point {} records {} managed files",
                a.version,
                a.point,
                crate::plan::thousands(a.files)
            );
            if a.customised > 0 {
                line.push_str(&format!(
                    "; {} differ from the release (local changes, kept)",
                    a.customised
                ));
            }
            if a.absent > 0 {
                line.push_str(&format!("; {} of the release are absent", a.absent));
            }
            lines.push(line);
            Adopted::Done(lines)
        }
        Err(e @ (AdoptError::Already { .. } | AdoptError::Release(_))) => {
            Adopted::Not(exit::INVALID, e.to_string())
        }
        Err(e) => failed(&e),
    }
}

/// Removes cache temp files an earlier crash left in the site's state dir
/// (the other commands that take the lock do so as they recover).
fn remove_cache_temps(state: &crate::store::SiteState) -> Result<(), String> {
    crate::cachefile::remove_temps(state.dir()).map_err(|e| {
        format!(
            "removing what a crash left in {}: {e}",
            state.dir().display()
        )
    })
}
