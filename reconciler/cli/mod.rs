//! The command line: clap definitions, dispatch, printing and exit codes.
//!
//! This is the only module that prints or knows exit codes (SPEC §3). Each
//! subcommand lives in its own file and returns `()` or a
//! [`CliError`]; [`run`] turns either into output and an exit code.

mod adopt;
mod apply;
mod approve;
mod check;
mod context;
mod explain;
mod history;
mod notify;
mod output;
mod plan;
mod resolve;
mod schema;
mod status;
mod validate;
mod watch;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::load::{self, Diagnostic, Fleet, LoadOptions};
pub use output::Printer;

/// Exit codes of SPEC §3.
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// The operation failed; the site was returned to its state before it.
    pub const FAILED: u8 = 1;
    /// Invalid input; nothing was changed.
    pub const INVALID: u8 = 2;
    /// Refused (stale plan, lock held, approval missing, untrusted catalog).
    pub const REFUSED: u8 = 3;
    /// `plan --detailed-exitcode`: changes are pending.
    pub const PENDING: u8 = 4;
}

/// Keeps a fleet of web sites on the releases and hot fixes their owners
/// asked for, declaratively, from git.
#[derive(Debug, Parser)]
#[command(name = "sitekeeper", version, about, long_about = None)]
#[command(
    after_help = "Exit codes: 0 success, 1 failed (site restored), 2 invalid input (nothing changed), \
3 refused, 4 changes pending (plan --detailed-exitcode).\nThe file formats are described in SPEC.md and schema/."
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, Args)]
pub struct Global {
    /// The fleet repo: a directory or a git URL.
    #[arg(long, global = true, default_value = ".", value_name = "PATH|URL")]
    pub fleet: String,
    /// Where per-site state and fetched repositories are kept.
    #[arg(long, global = true, value_name = "DIR", env = "SITEKEEPER_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = Format::Human)]
    pub format: Format,
    /// Say more (repeat for even more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,
    /// Say only what went wrong.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// When to use colour (NO_COLOR is honoured with auto).
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
    /// A private key (a deploy key) for ssh URLs, used instead of the ssh agent; never one with a passphrase.
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        env = "SITEKEEPER_GIT_SSH_KEY",
        help_heading = "Git access"
    )]
    pub git_ssh_key: Option<PathBuf>,
    /// The ssh host keys to trust (OpenSSH known_hosts format) instead of ~/.ssh/known_hosts; an unknown or changed key is refused.
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        env = "SITEKEEPER_GIT_KNOWN_HOSTS",
        help_heading = "Git access"
    )]
    pub git_known_hosts: Option<PathBuf>,
    /// CA certificates (PEM) trusted for https besides the system's.
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        env = "SITEKEEPER_GIT_CA_FILE",
        help_heading = "Git access"
    )]
    pub git_ca_file: Option<PathBuf>,
    /// A token for https: TOKEN (sent as user x-access-token) or USER:TOKEN.
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        env = "SITEKEEPER_GIT_TOKEN_FILE",
        help_heading = "Git access"
    )]
    pub git_token_file: Option<PathBuf>,
}

impl Global {
    /// The git access options as given, read by [`crate::git::GitAccess::read`].
    pub fn git_access_options(&self) -> crate::git::AccessOptions {
        crate::git::AccessOptions {
            ssh_key: self.git_ssh_key.clone(),
            known_hosts: self.git_known_hosts.clone(),
            ca_file: self.git_ca_file.clone(),
            token_file: self.git_token_file.clone(),
        }
    }
}

/// `--format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// For people at a terminal.
    Human,
    /// Stable keys for programs (SPEC §3.1).
    Json,
    /// For pull-request comments.
    Markdown,
}

/// `--color`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    /// Colour on a terminal, unless NO_COLOR is set.
    Auto,
    /// Always colour.
    Always,
    /// Never colour.
    Never,
}

/// The subcommands (SPEC §3).
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check every fleet and catalog file; no site is read or written.
    Validate,
    /// Show a site's effective settings and the file and line that set each.
    Explain {
        /// The site.
        site: String,
    },
    /// Compute what would be done to each site, and why; writes nothing to sites.
    Plan(plan::PlanArgs),
    /// Converge sites to their plans.
    Apply(apply::ApplyArgs),
    /// Take over an existing install at a version (or the release it matches best).
    Adopt(adopt::AdoptArgs),
    /// Return a site to a rollback point.
    Rollback {
        /// The site.
        site: String,
        /// The point (default: the one before the latest).
        #[arg(long, value_name = "POINT")]
        to: Option<u64>,
        /// Also restore the data snapshot taken with that point (without
        /// it, data is never touched).
        #[arg(long)]
        data: bool,
        /// Refuse (exit 3) instead of waiting when the site is locked.
        #[arg(long)]
        no_wait: bool,
    },
    /// Clear a site's failure marker once an operator has repaired it.
    Resolve(resolve::ResolveArgs),
    /// Show a site's rollback points and ledger entries.
    History {
        /// The site.
        site: String,
    },
    /// Show version, applied fixes, pending items, drift and last result.
    Status {
        /// Sites (default: all).
        sites: Vec<String>,
        /// Only the sites whose labels hold every KEY=VALUE pair (e.g. host=web1).
        #[arg(long, value_name = "K=V,…", conflicts_with = "sites")]
        selector: Option<crate::model::Selector>,
    },
    /// List available upgrades, classified eligible, questionable or ineligible, and whether each applies automatically.
    Check {
        /// Sites (default: all).
        sites: Vec<String>,
    },
    /// Add a plan digest to `approvals/<site>.yaml` of each site, for a pull-request branch.
    Approve(approve::ApproveArgs),
    /// Run as a reconciler daemon: keep every site converged from git.
    Watch(watch::WatchArgs),
    /// Notification targets (fleet.yaml `notify:`).
    #[command(subcommand)]
    Notify(notify::NotifyCommand),
    /// Write the JSON Schemas of every file kind.
    Schema {
        /// Write one file per kind into this directory, instead of printing them.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
}

/// A failure that ends a command, with its exit code.
#[derive(Debug)]
pub enum CliError {
    /// Input problems, all of them: exit 2.
    Invalid(Vec<Diagnostic>),
    /// A usage error without a file: exit 2.
    Usage(String),
    /// A system error (I/O on our own output, say): exit 1.
    Failed(String),
    /// The command already printed its report; exit with this code.
    Exit(u8),
}

impl From<Diagnostic> for CliError {
    fn from(d: Diagnostic) -> Self {
        CliError::Invalid(vec![d])
    }
}

/// `--jobs N`: how many sites at once. Zero would be a daemon or a batch
/// that never starts a site, so it is refused while parsing (exit 2).
fn jobs(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err(
            "0 sites at once would never start one (hint: --jobs 1 takes one site at a time)"
                .into(),
        ),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("{e} (hint: a whole number such as 4)")),
    }
}

/// Reads the fleet and its catalogs, failing with every diagnostic if any.
fn load_clean(global: &Global) -> Result<Fleet, CliError> {
    let (fleet, diags) = load::load(&load_options(global)?)?;
    if diags.is_empty() {
        Ok(fleet)
    } else {
        Err(CliError::Invalid(diags))
    }
}

/// The exit code of a fleet that could not be loaded: 2 (invalid input),
/// unless every problem is a repository that could not be reached (the
/// network, or a server that did not answer): then the input was fine and
/// the operation failed, exit 1 (SPEC §3), and running it again later may
/// succeed. A refused host key, credential or certificate stays 2: the
/// files given to sitekeeper do not fit the server.
fn load_exit_code(diags: &[crate::load::Diagnostic]) -> u8 {
    use crate::git::FailureKind;
    let unreachable = |d: &crate::load::Diagnostic| {
        d.fetch
            .as_ref()
            .is_some_and(|f| matches!(f.kind, FailureKind::Network | FailureKind::Timeout))
    };
    if !diags.is_empty() && diags.iter().all(unreachable) {
        exit::FAILED
    } else {
        exit::INVALID
    }
}

/// What to load, with the git access options read (a file that cannot be
/// used is a usage error, before anything is fetched).
fn load_options(global: &Global) -> Result<LoadOptions, CliError> {
    let git = crate::git::GitAccess::read(&global.git_access_options())
        .map_err(|e| CliError::Usage(e.to_string()))?;
    Ok(LoadOptions {
        fleet: global.fleet.clone(),
        state_dir: global.state_dir.clone(),
        git,
    })
}

/// Runs the command line and returns the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    crate::store::configure_libgit2();
    let printer = Printer::new(&cli.global);
    let result = match &cli.command {
        Command::Validate => validate::run(&cli.global, &printer),
        Command::Explain { site } => explain::run(&cli.global, &printer, site),
        Command::Schema { out } => schema::run(&printer, out.as_deref()),
        Command::Plan(args) => plan::run(&cli.global, &printer, args),
        Command::Apply(args) => apply::run(&cli.global, &printer, args),
        Command::Resolve(args) => resolve::run(&cli.global, &printer, args),
        Command::Rollback {
            site,
            to,
            data,
            no_wait,
        } => apply::rollback(&cli.global, &printer, site, *to, *data, *no_wait),
        Command::Adopt(args) => adopt::run(&cli.global, &printer, args),
        Command::Status { sites, selector } => {
            status::run(&cli.global, &printer, sites, selector.as_ref())
        }
        Command::History { site } => history::run(&cli.global, &printer, site),
        Command::Check { sites } => check::run(&cli.global, &printer, sites),
        Command::Watch(args) => watch::run(&cli.global, args),
        Command::Approve(args) => approve::run(&cli.global, &printer, args),
        Command::Notify(cmd) => notify::run(&cli.global, &printer, cmd),
    };
    match result {
        Ok(()) => ExitCode::from(exit::OK),
        Err(CliError::Invalid(diags)) => {
            printer.diagnostics(&diags);
            ExitCode::from(load_exit_code(&diags))
        }
        Err(CliError::Usage(message)) => {
            printer.error(&message);
            ExitCode::from(exit::INVALID)
        }
        Err(CliError::Failed(message)) => {
            printer.error(&message);
            ExitCode::from(exit::FAILED)
        }
        Err(CliError::Exit(code)) => ExitCode::from(code),
    }
}
