//! `sitekeeper adopt SITE (--version V | --detect)`: take over an existing
//! install, recording its managed files as rollback point 1.

use clap::Args;

use super::context::{ScanProgress, now, select, state_dir};
use super::{CliError, Global, Printer, exit, load_clean};
use crate::apply::adopt::{AdoptError, adopt};
use crate::model::values::Version;
use crate::observe::SiteContext;
use crate::store::SiteState;

/// Arguments of `adopt`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["version", "detect"])))]
pub struct AdoptArgs {
    /// The site.
    pub site: String,
    /// The release the site runs.
    #[arg(long, value_name = "V")]
    pub version: Option<String>,
    /// Compare the files with every release and adopt the closest.
    #[arg(long)]
    pub detect: bool,
}

pub(super) fn run(global: &Global, printer: &Printer, args: &AdoptArgs) -> Result<(), CliError> {
    let fleet = load_clean(global)?;
    let site = select(&fleet, std::slice::from_ref(&args.site))?[0];
    let state = state_dir(global, &fleet);
    // An untrusted fleet may have redirected the site's state dir: take no
    // lock there (which creates it) until a trusted commit arrives.
    if let Some(reason) = fleet.trust.untrusted() {
        printer.error(&format!("refused: {}: {reason}", site.site));
        return Err(CliError::Exit(exit::REFUSED));
    }
    // The lock before anything is read: two adopts started together would
    // otherwise both see "not adopted" and both record an adopt point.
    let site_state = SiteState::new(&state, site.site.as_str());
    let Some(_lock) = site_state
        .lock(true)
        .map_err(|e| CliError::Failed(e.to_string()))?
    else {
        printer.error(&format!(
            "refused: {}: another sitekeeper holds the site's lock",
            site.site
        ));
        return Err(CliError::Exit(exit::REFUSED));
    };
    remove_cache_temps(&site_state)?;
    let progress = ScanProgress::new(site.site.as_str(), global.quiet);
    let ctx = SiteContext::gather(&fleet, site, &state, Some(&progress))
        .map_err(|e| CliError::Failed(e.to_string()))?;
    // Adoption records the catalog commit as the site's first, which later
    // commits must descend from: an untrusted one must not become that mark.
    if let Some(reason) = ctx.trust.untrusted() {
        printer.error(&format!("refused: {}: {reason}", site.site));
        return Err(CliError::Exit(exit::REFUSED));
    }
    // Exit 2, as for any other adopt that makes no sense for the site
    // (SPEC 3 names no code for it; tests/planning.rs holds it to 2).
    if let Some(point) = ctx.point {
        printer.error(
            &AdoptError::Already {
                site: site.site.to_string(),
                point,
            }
            .to_string(),
        );
        return Err(CliError::Exit(exit::INVALID));
    }
    let version: Version = match (&args.version, args.detect) {
        (Some(v), _) => v.parse().map_err(CliError::Usage)?,
        (None, _) => match ctx.detect() {
            Some(d) => {
                printer.say(&format!("{}: {d}", site.site));
                d.version
            }
            None => {
                return Err(CliError::Usage(format!(
                    "{}: no release of the catalog resembles its files; adopt it with --version V",
                    site.site
                )));
            }
        },
    };
    match adopt(&ctx, &version, now()?, "cli") {
        Ok(a) => {
            let mut line = format!(
                "adopted {} at {}: point {} records {} managed files",
                site.site,
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
            printer.say(&line);
            Ok(())
        }
        Err(e @ (AdoptError::Already { .. } | AdoptError::Release(_))) => {
            printer.error(&e.to_string());
            Err(CliError::Exit(exit::INVALID))
        }
        Err(e) => Err(CliError::Failed(e.to_string())),
    }
}

/// Removes cache temp files an earlier crash left in the site's state dir
/// (the other commands that take the lock do so as they recover).
fn remove_cache_temps(state: &crate::store::SiteState) -> Result<(), CliError> {
    crate::cachefile::remove_temps(state.dir()).map_err(|e| {
        CliError::Failed(format!(
            "removing what a crash left in {}: {e}",
            state.dir().display()
        ))
    })
}
