//! `sitekeeper watch`: run as a reconciler daemon (SPEC §8). Parses the
//! options, sets up logging (human or JSON lines on stderr), and hands over
//! to [`crate::watch`]; exit 0 after SIGTERM, 2 when the fleet or an option
//! is invalid at start.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, ValueEnum};

use super::context::now;
use super::{CliError, Global, load_options};
use crate::model::values::Duration;
use crate::watch::{Config, WatchError};

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Lines for people.
    Human,
    /// One JSON object a line, for log shippers.
    Json,
}

/// Arguments of `watch`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Watch only these sites (default: every site of the fleet), so that
    /// sidecars of one fleet repo each keep their own site.
    pub sites: Vec<String>,
    /// Watch only the sites whose labels hold every KEY=VALUE pair (e.g.
    /// host=web1), so that hosts share one fleet repo; state is kept only
    /// for them. Read again with the fleet, so a relabelled site moves.
    #[arg(long, value_name = "K=V,…", conflicts_with = "sites")]
    pub selector: Option<crate::model::Selector>,
    /// Serve /healthz, /metrics, /status and /reconcile on this address (e.g. 127.0.0.1:9090).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Look at every site, and fetch the fleet and catalogs, this often (plus up to 10% jitter).
    #[arg(long, value_name = "DUR", default_value = "5m")]
    pub interval: Duration,
    /// Sites reconciled at once (default: the number of cores).
    #[arg(long, value_name = "N", value_parser = super::jobs)]
    pub jobs: Option<usize>,
    /// A file holding the webhook secret; POST /reconcile then needs it.
    #[arg(long, value_name = "FILE")]
    pub webhook_secret_file: Option<PathBuf>,
    /// A file holding the dashboard's sign-in token (16 bytes or more);
    /// without it the dashboard is read-only. Read again on SIGHUP.
    #[arg(long, value_name = "FILE")]
    pub ui_token_file: Option<PathBuf>,
    /// How log lines look.
    #[arg(long, value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
}

pub(super) fn run(global: &Global, args: &WatchArgs) -> Result<(), CliError> {
    if args.interval.0.is_zero() {
        return Err(CliError::Usage(
            "--interval must be longer than 0 (hint: 30s, 5m)".into(),
        ));
    }
    let webhook_secret = match &args.webhook_secret_file {
        Some(path) => Some(read_secret("--webhook-secret-file", path)?),
        None => None,
    };
    let ui_token = match &args.ui_token_file {
        Some(path) => Some(read_secret("--ui-token-file", path)?),
        None => None,
    };
    init_logs(global, args.log_format);
    let fixed_now = std::env::var_os("SITEKEEPER_NOW")
        .map(|_| now())
        .transpose()?;
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, std::num::NonZero::get));
    let config = Config {
        load: load_options(global)?,
        listen: args.listen,
        interval: args.interval.0,
        jobs,
        webhook_secret,
        ui_token,
        ui_token_file: args.ui_token_file.clone(),
        fixed_now,
        sites: args.sites.clone(),
        selector: args.selector.clone(),
        git: global.git_access_options(),
    };
    crate::watch::run(config).map_err(|e| match e {
        WatchError::Invalid(diags) => CliError::Invalid(diags),
        other => CliError::Failed(other.to_string()),
    })
}

/// Reads a secret file given as `option`: its content with surrounding
/// whitespace trimmed, 16 bytes or more (a usage error otherwise).
fn read_secret(option: &str, path: &std::path::Path) -> Result<Vec<u8>, CliError> {
    let text = std::fs::read(path)
        .map_err(|e| CliError::Usage(format!("{option} {}: {e}", path.display())))?;
    let secret = text.trim_ascii().to_vec();
    if secret.len() < crate::watch::ui::auth::MIN_TOKEN {
        return Err(CliError::Usage(format!(
            "{option} {}: the secret is shorter than 16 bytes (hint: openssl rand -hex 32 > {0})",
            path.display()
        )));
    }
    Ok(secret)
}

/// Logs go to stderr: `info` by default, `warn` with -q, `debug` with -v,
/// `trace` with -vv; `SITEKEEPER_LOG` (an `EnvFilter`) overrides.
fn init_logs(global: &Global, format: LogFormat) {
    let level = match (global.quiet, global.verbose) {
        (true, _) => "warn",
        (_, 0) => "info",
        (_, 1) => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("SITEKEEPER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("sitekeeper={level}")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Human => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
    };
}
