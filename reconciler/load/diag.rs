//! Located diagnostics: what is wrong, where (file, line, column), and a hint.
//!
//! Every error a person can fix by editing a file becomes a [`Diagnostic`];
//! the CLI prints it as `file:line:col: message (hint: …)` and exits 2.

use std::fmt;

use serde::Serialize;

/// A position in a file, 1-based line and column.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Location {
    /// The file, as a path a person can open (relative to the fleet repo where possible).
    pub file: String,
    /// 1-based line; 0 when the problem concerns the whole file.
    pub line: usize,
    /// 1-based column; 0 when the problem concerns the whole file.
    pub column: usize,
}

impl Location {
    /// A location that names only a file.
    pub fn file(file: impl Into<String>) -> Self {
        Self {
            file: file.into(),
            line: 0,
            column: 0,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            f.write_str(&self.file)
        } else {
            write!(f, "{}:{}:{}", self.file, self.line, self.column)
        }
    }
}

/// One problem in the input, located.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// Where.
    #[serde(flatten)]
    pub at: Location,
    /// What is wrong, in a site owner's words.
    pub message: String,
    /// What to do about it, where we know.
    pub hint: Option<String>,
    /// The failed fetch behind it, if that is what it reports: the daemon
    /// counts and retries these by repository without reading the message.
    #[serde(skip)]
    pub fetch: Option<FetchFailure>,
}

/// A repository that could not be fetched, and the kind of failure.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FetchFailure {
    /// The repository's URL, as it may be shown (no password).
    pub repo: String,
    /// What went wrong.
    pub kind: crate::git::FailureKind,
}

impl Diagnostic {
    /// A diagnostic from a message that may carry an inline `(hint: …)` at its end.
    pub fn new(at: Location, message: impl Into<String>) -> Self {
        let (message, hint) = split_hint(message.into());
        Self {
            at,
            message,
            hint,
            fetch: None,
        }
    }

    /// Marks it as reporting the failed fetch `fetch`.
    pub fn with_fetch(mut self, fetch: Option<FetchFailure>) -> Self {
        self.fetch = fetch;
        self
    }

    /// Adds or replaces the hint.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.at, self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, " (hint: {hint})")?;
        }
        Ok(())
    }
}

/// Splits a trailing ` (hint: …)` off a message, so that value parsers can
/// keep message and hint together in one string.
pub fn split_hint(message: String) -> (String, Option<String>) {
    if let Some(start) = message.rfind(" (hint: ")
        && message.ends_with(')')
    {
        let hint = message[start + 8..message.len() - 1].to_owned();
        let text = message[..start].to_owned();
        return (text, Some(hint));
    }
    (message, None)
}

/// The diagnostics of a load, sorted by file and position for stable output.
#[derive(Debug, Clone, Default)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    /// Records one problem.
    pub fn push(&mut self, d: Diagnostic) {
        self.0.push(d);
    }

    /// Whether nothing is wrong.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Sorted, deduplicated, ready to print.
    pub fn into_sorted(mut self) -> Vec<Diagnostic> {
        self.0
            .sort_by(|a, b| a.at.cmp(&b.at).then(a.message.cmp(&b.message)));
        self.0.dedup();
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hints_split_off_and_print_back() {
        let d = Diagnostic::new(
            Location {
                file: "sites/a.yaml".into(),
                line: 7,
                column: 12,
            },
            "\"4.2\" is not a full version (hint: write 4.2.0)",
        );
        assert_eq!(d.message, "\"4.2\" is not a full version");
        assert_eq!(d.hint.as_deref(), Some("write 4.2.0"));
        assert_eq!(
            d.to_string(),
            "sites/a.yaml:7:12: \"4.2\" is not a full version (hint: write 4.2.0)"
        );
    }
}
