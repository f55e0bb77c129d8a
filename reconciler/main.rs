//! The `sitekeeper` binary: parse the command line, run, exit with the code
//! of SPEC §3. Everything else lives in the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // SAFETY: first thing in main; no other thread exists yet.
    unsafe { sitekeeper::git::ca_store::init_libgit2_with_lazy_cas() };
    let cli = match sitekeeper::cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version are successes; usage errors are invalid input (2).
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(sitekeeper::cli::exit::INVALID)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    sitekeeper::cli::run(cli)
}
