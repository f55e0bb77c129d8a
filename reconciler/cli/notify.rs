//! `sitekeeper notify test NAME` (SPEC §3, §9): sends one test event to a
//! `notify:` target, at once and without the outbox, and reports what the
//! target answered: exit 0 when it accepted, 1 with the reason otherwise.
//! And the hidden `notify relay`, the background sender of `apply`'s and
//! `rollback`'s events (`watch::notify::relay`).

use clap::Subcommand;

use super::context::now;
use super::{CliError, Format, Global, Printer, exit, load_clean};
use crate::store::Event;
use crate::watch::notify::{relay, send};

/// `notify` subcommands.
#[derive(Debug, Subcommand)]
pub enum NotifyCommand {
    /// Send one test event to a notify target and report what it answered.
    Test {
        /// The target's `name` in fleet.yaml `notify:`.
        name: String,
    },
    /// The background sender `apply` and `rollback` start for their events
    /// (reads them on stdin); not for use by hand.
    #[command(hide = true)]
    Relay,
}

pub(super) fn run(global: &Global, printer: &Printer, cmd: &NotifyCommand) -> Result<(), CliError> {
    let name = match cmd {
        NotifyCommand::Test { name } => name,
        NotifyCommand::Relay => {
            return relay::run(std::io::stdin().lock()).map_err(|e| {
                printer.error(&e.to_string());
                CliError::Exit(exit::INVALID)
            });
        }
    };
    let fleet = load_clean(global)?;
    let Some(target) = fleet.config.notify.iter().find(|t| &t.name == name) else {
        let known: Vec<&str> = fleet
            .config
            .notify
            .iter()
            .map(|t| t.name.as_str())
            .collect();
        let hint = if known.is_empty() {
            "fleet.yaml has no notify: targets".to_owned()
        } else {
            format!("the targets are {}", known.join(", "))
        };
        return Err(CliError::Usage(format!(
            "there is no notify target named {name:?} (hint: {hint})"
        )));
    };
    // A site the target covers, so that the message looks like a real one.
    let site = fleet.sites.iter().find(|s| target.covers(&s.labels));
    let event = Event::new(
        "test",
        now()?.to_string(),
        site.map_or("test", |s| s.site.as_str()),
        site.map(|s| s.labels.clone()).unwrap_or_default(),
        None,
        "",
        "a test notification sent by `sitekeeper notify test`".into(),
        None,
    );
    let secret = target
        .secret_file
        .as_deref()
        .and_then(|s| fleet.notify_secret_path(s));
    let host = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    let result = send::send(target, secret.as_deref(), &[event], &host);
    let json = global.format == Format::Json;
    match result {
        Ok(accepted) => {
            if json {
                printer.report(
                    &serde_json::json!({"target": name, "accepted": true, "code": accepted.code, "answer": accepted.text})
                        .to_string(),
                );
            } else {
                printer.report(&format!(
                    "{name}: accepted ({}){}",
                    accepted.code,
                    if accepted.text.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", accepted.text)
                    }
                ));
            }
            Ok(())
        }
        Err(e) => {
            if json {
                printer.report(
                    &serde_json::json!({"target": name, "accepted": false, "error": e.to_string()})
                        .to_string(),
                );
            }
            printer.error(&format!("{name}: not accepted: {e}"));
            Err(CliError::Exit(exit::FAILED))
        }
    }
}
