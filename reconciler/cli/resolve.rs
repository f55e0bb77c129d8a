//! `sitekeeper resolve SITE --by NAME`: clear a site's failure marker
//! (SPEC §6.6) once an operator has repaired the site by hand, so that
//! changes may reach it again. Recorded in the ledger (`kind: resolve`).

use crate::apply::clock::Clock;
use clap::Args;

use super::apply::exit_code;
use super::context::{now, select, state_dir};
use super::{CliError, Global, Printer, load_clean};
use crate::apply::converge::{self, Options};

/// Arguments of `resolve`.
#[derive(Debug, Args)]
pub struct ResolveArgs {
    /// The site.
    pub site: String,
    /// Who repaired it (recorded in the ledger).
    #[arg(long, value_name = "NAME")]
    pub by: String,
}

pub(super) fn run(global: &Global, printer: &Printer, args: &ResolveArgs) -> Result<(), CliError> {
    if args.by.trim().is_empty() {
        return Err(CliError::Usage(
            "--by needs the name of who repaired the site".into(),
        ));
    }
    let fleet = load_clean(global)?;
    let site = select(&fleet, std::slice::from_ref(&args.site))?[0];
    let state = state_dir(global, &fleet);
    let opts = Options {
        via: "cli",
        wait: true,
        saved: None,
        forced: None,
        forced_fix: None,
        clock: Clock::starting(now()?),
        state_dir: &state,
        progress: None,
        cancel: None,
    };
    match converge::resolve_site(&fleet, site, &args.by, &opts) {
        Ok(Some(marker)) => {
            printer.say(&format!(
                "{}: the failure marker is cleared ({} at {}); changes may reach the site again",
                site.site, marker.what, marker.at
            ));
            Ok(())
        }
        Ok(None) => {
            printer.say(&format!(
                "{}: it has no failure marker; nothing to do",
                site.site
            ));
            Ok(())
        }
        Err(e) => {
            printer.error(&e.to_string());
            Err(CliError::Exit(exit_code(&e)))
        }
    }
}
