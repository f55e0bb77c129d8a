//! How results reach people: colour decisions, diagnostics, tables.
//!
//! Diagnostics always go to stderr in their `file:line:col: message (hint: …)`
//! form; reports go to stdout in the chosen `--format`. Whatever goes to
//! stdout ends with a newline and is flushed before anything is written to
//! stderr, so that on a terminal (both streams on one screen) an error
//! never lands in the middle of a report's line.
//!
//! Styles are `anstyle` values, written only to a stream whose colour is on;
//! with colour off nothing is added or taken away (no stripping pass over
//! what is printed, which may hold a site's bytes).

use std::io::{IsTerminal, Write};

use anstyle::{AnsiColor, Style};

use super::{ColorChoice, Format, Global};
use crate::load::Diagnostic;
use crate::plan::render::Piece;

const BOLD: Style = Style::new().bold();
const DIM: Style = Style::new().dimmed();
const YELLOW: Style = AnsiColor::Yellow.on_default();
const HINT: Style = AnsiColor::Cyan.on_default();
const ERROR: Style = AnsiColor::Red.on_default().bold();
const WARNING: Style = AnsiColor::Yellow.on_default().bold();

/// Prints results and errors according to the global options.
#[derive(Debug, Clone)]
pub struct Printer {
    color_err: bool,
    color_out: bool,
    quiet: bool,
    /// The chosen output format.
    pub format: Format,
}

impl Printer {
    /// A printer for these options and the current terminal and environment.
    ///
    /// `auto` means a terminal and no `NO_COLOR`, as documented for
    /// `--color`; anstream's own detection (which also reads `CLICOLOR`,
    /// `CLICOLOR_FORCE` and `TERM`) would decide differently.
    pub fn new(global: &Global) -> Self {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        let decide = |tty: bool| match global.color {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => tty && !no_color,
        };
        Self {
            color_err: decide(std::io::stderr().is_terminal()),
            color_out: decide(std::io::stdout().is_terminal()),
            quiet: global.quiet,
            format: global.format,
        }
    }

    fn paint(on: bool, style: Style, text: &str) -> String {
        if on {
            format!("{style}{text}{style:#}")
        } else {
            text.to_owned()
        }
    }

    /// `text` in bold on stdout, when colour is on.
    pub fn bold(&self, text: &str) -> String {
        Self::paint(self.color_out, BOLD, text)
    }

    /// `text` dimmed on stdout, when colour is on.
    pub fn dim(&self, text: &str) -> String {
        Self::paint(self.color_out, DIM, text)
    }

    /// `text` in yellow on stdout, when colour is on.
    pub fn warn(&self, text: &str) -> String {
        Self::paint(self.color_out, YELLOW, text)
    }

    /// Every diagnostic on stderr, then a count.
    pub fn diagnostics(&self, diags: &[Diagnostic]) {
        let mut err = Self::stderr();
        for d in diags {
            let mut line = format!(
                "{}: {}",
                Self::paint(self.color_err, BOLD, &d.at.to_string()),
                d.message
            );
            if let Some(hint) = &d.hint {
                line.push_str(&Self::paint(
                    self.color_err,
                    HINT,
                    &format!(" (hint: {hint})"),
                ));
            }
            let _ = writeln!(err, "{line}");
        }
        if diags.len() > 1 {
            let _ = writeln!(err, "{} errors", diags.len());
        }
    }

    /// Stderr, once everything written to stdout so far is out: stdout
    /// is line-buffered and stderr is not, and every stdout write here ends
    /// with a newline, so flushing keeps the two in the order written.
    fn stderr() -> std::io::StderrLock<'static> {
        let _ = std::io::stdout().lock().flush();
        std::io::stderr().lock()
    }

    /// A one-line error on stderr.
    pub fn error(&self, message: &str) {
        let _ = writeln!(
            Self::stderr(),
            "{}: {message}",
            Self::paint(self.color_err, ERROR, "error")
        );
    }

    /// A one-line warning on stderr: something to look at, not a failure.
    pub fn warning(&self, message: &str) {
        let _ = writeln!(
            Self::stderr(),
            "{}: {message}",
            Self::paint(self.color_err, WARNING, "warning")
        );
    }

    /// A line on stdout, unless `-q`.
    pub fn say(&self, text: &str) {
        if !self.quiet {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{text}");
            let _ = out.flush();
        }
    }

    /// A report on stdout, even with `-q` (it is what was asked for).
    pub fn report(&self, text: &str) {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(text.as_bytes());
        if !text.ends_with('\n') {
            let _ = out.write_all(b"\n");
        }
        let _ = out.flush();
    }

    /// A human report whose sites' errors go to stderr each right after
    /// its site's line, in reading order.
    pub fn pieces(&self, pieces: &[Piece]) {
        for piece in pieces {
            match piece {
                Piece::Out(text) => self.report(text),
                Piece::Error(e) => self.error(e),
            }
        }
    }
}
