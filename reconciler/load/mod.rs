//! Reading the desired state: a fleet and its catalogs, from a directory or
//! a git commit, into model values that remember where they were written.
//!
//! [`load`] never stops at the first problem: it reads every file it can and
//! returns all [`Diagnostic`]s, so `validate` reports everything in one run.
//! This module reads sources only; it never touches a site.

mod catalog;
pub mod changes;
mod check;
pub mod diag;
mod fleet;
pub mod payload;
mod roots;
pub mod signers;
pub mod source;
pub mod stock;
pub mod trust;
pub mod yaml;

use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use catalog::LoadedCatalog;
pub use diag::{Diagnostic, Diagnostics, FetchFailure, Location};
pub use fleet::{ChainError, Fleet};
pub use source::{Source, SourceError};
pub use trust::Trust;
pub use yaml::SpanIndex;

use crate::model::Problem;

/// Where a loaded value was written: its file, and positions within it.
#[derive(Debug, Clone)]
pub struct Origin {
    file: Arc<str>,
    index: Arc<SpanIndex>,
    /// Path of this value within its document (`[1]` for the second site of a list).
    prefix: String,
}

impl Origin {
    /// An origin for a whole document.
    pub fn new(file: impl Into<Arc<str>>, index: SpanIndex) -> Self {
        Self {
            file: file.into(),
            index: Arc::new(index),
            prefix: String::new(),
        }
    }

    /// An origin for the value at `path` inside this one.
    pub fn child(&self, path: &str) -> Self {
        Self {
            file: self.file.clone(),
            index: self.index.clone(),
            prefix: self.full(path),
        }
    }

    /// The file, as shown in messages.
    pub fn file(&self) -> &str {
        &self.file
    }

    fn full(&self, path: &str) -> String {
        match (self.prefix.is_empty(), path.is_empty()) {
            (true, _) => path.to_owned(),
            (false, true) => self.prefix.clone(),
            (false, false) if path.starts_with('[') => format!("{}{path}", self.prefix),
            (false, false) => format!("{}.{path}", self.prefix),
        }
    }

    /// Whether the value at `path` was written in the file (not defaulted).
    pub fn has(&self, path: &str) -> bool {
        self.index.get(&self.full(path)).is_some()
    }

    /// The location of the value at `path` (or its nearest written ancestor).
    pub fn locate(&self, path: &str) -> Location {
        let (line, column) = self.index.locate(&self.full(path));
        Location {
            file: self.file.to_string(),
            line,
            column,
        }
    }

    /// The location of the key of `path` (or of its value).
    pub fn locate_key(&self, path: &str) -> Location {
        let (line, column) = self.index.locate_key(&self.full(path));
        Location {
            file: self.file.to_string(),
            line,
            column,
        }
    }

    /// A diagnostic at `path`.
    pub fn diag(&self, path: &str, message: impl Into<String>) -> Diagnostic {
        Diagnostic::new(self.locate(path), message)
    }

    /// A diagnostic for a [`Problem`] found by a model check.
    pub fn problem(&self, p: &Problem) -> Diagnostic {
        self.diag(&p.path, p.message.clone())
    }
}

/// A value and where it was written.
#[derive(Debug, Clone)]
pub struct Loaded<T> {
    /// The value.
    pub value: T,
    /// Where it came from.
    pub origin: Origin,
}

impl<T> Deref for Loaded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

/// What to load, and the state dir given on the command line or environment.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// `--fleet`: a directory or a git URL.
    pub fleet: String,
    /// `--state-dir` or `SITEKEEPER_STATE_DIR`; git sources fetched from URLs
    /// are cached under it.
    pub state_dir: Option<PathBuf>,
    /// How remote fleet and catalog repositories are reached (SPEC §3,
    /// "Git access").
    pub git: crate::git::GitAccess,
}

/// The state dir (SPEC §5): `--state-dir`, else `SITEKEEPER_STATE_DIR`
/// (both in `given`), else fleet.yaml `state_dir` (relative to the fleet
/// repo), else `/var/lib/sitekeeper` as root or `$XDG_STATE_HOME/sitekeeper`.
pub fn state_dir(given: Option<&Path>, fleet: Option<&Fleet>) -> PathBuf {
    if let Some(dir) = given {
        return dir.to_owned();
    }
    if let Some(fleet) = fleet
        && let Some(dir) = &fleet.config.state_dir
    {
        let dir = Path::new(dir);
        return match fleet.source.dir_path() {
            Some(base) if dir.is_relative() => base.join(dir),
            _ => dir.to_owned(),
        };
    }
    default_state_dir()
}

fn default_state_dir() -> PathBuf {
    if rustix::process::geteuid().is_root() {
        return PathBuf::from("/var/lib/sitekeeper");
    }
    let xdg = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(std::env::temp_dir);
    xdg.join("sitekeeper")
}

/// Reads a fleet and every catalog it names, checking everything, and
/// returns it with every problem found. Fails outright only when the fleet
/// itself cannot be opened.
pub fn load(options: &LoadOptions) -> Result<(Fleet, Vec<Diagnostic>), Diagnostic> {
    let mut diags = Diagnostics::default();
    let fleet = fleet::load_fleet(options, &mut diags)?;
    check::check(&fleet, &mut diags);
    Ok((fleet, diags.into_sorted()))
}

/// The fleet repo's own files (`fleet.yaml`, sites, policies, approvals) at
/// revision `rev` of the repository `head` was read from: a branch, tag or
/// commit (SPEC §3 `plan --changed-since`). Catalogs are not opened and no
/// trust verdict is made; see [`changes`].
///
/// Problems in files at `rev` are not returned: a file that does not load
/// there counts as absent, so whatever it defines at the head counts as
/// changed. Fails when the fleet is not in git, or `rev` names nothing.
pub fn load_fleet_at(head: &Fleet, rev: &str) -> Result<Fleet, Diagnostic> {
    let prefix = head.source.display("");
    let shown = match prefix.trim_end_matches(['/', ':']) {
        "" => ".".to_owned(),
        named => named.to_owned(),
    };
    let source = head
        .source
        .at_rev(rev, format!("{rev}:{prefix}"))
        .map_err(|e| {
            // The location already names the fleet: say what is wrong with REV.
            let message = match &e {
                SourceError::NoSuchRef { .. } => format!(
                    "--changed-since {rev:?}: the fleet's git repository has no branch, tag or commit of that name"
                ),
                SourceError::NotGit { .. } => {
                    "--changed-since compares with the fleet's git history, but the fleet is not in a git work tree".to_owned()
                }
                other => format!("cannot read the fleet at {rev:?}: {other}"),
            };
            let d = Diagnostic::new(Location::file(shown), message);
            match &e {
                SourceError::NoSuchRef { .. } => d.with_hint(
                    "give a branch, tag or commit of the fleet's repository, such as main or origin/main; fetch it first if it is remote",
                ),
                other => match other.hint() {
                    Some(h) => d.with_hint(h),
                    None => d,
                },
            }
        })?;
    let mut ignored = Diagnostics::default();
    Ok(fleet::load_fleet_files(source, &mut ignored))
}

/// Parses one document of `source` at `rel`, recording any problem.
fn read_doc<T: serde::de::DeserializeOwned>(
    source: &Source,
    rel: &str,
    diags: &mut Diagnostics,
) -> Option<(T, Origin)> {
    let shown = source.display(rel);
    let bytes = match source.read(rel) {
        Ok(bytes) => bytes,
        Err(e) => {
            let mut d = Diagnostic::new(Location::file(shown), e.to_string());
            if let Some(h) = e.hint() {
                d = d.with_hint(h);
            }
            diags.push(d);
            return None;
        }
    };
    match yaml::parse::<T>(&shown, &bytes) {
        Ok((value, index)) => Some((value, Origin::new(shown, index))),
        Err(d) => {
            diags.push(d);
            None
        }
    }
}

/// The `.yaml`/`.yml` files of directory `dir` of `source`, sorted, as
/// (file stem, relative path); anything else there is reported.
fn yaml_files(source: &Source, dir: &str, diags: &mut Diagnostics) -> Vec<(String, String)> {
    let listing = match source.list(dir) {
        Ok(listing) => listing,
        Err(e) => {
            diags.push(Diagnostic::new(
                Location::file(source.display(dir)),
                e.to_string(),
            ));
            return Vec::new();
        }
    };
    for name in listing.skipped {
        diags.push(Diagnostic::new(
            Location::file(source.display(&source::join(dir, &name))),
            "the file name is not valid UTF-8 (hint: rename it)",
        ));
    }
    let mut out = Vec::new();
    for (name, kind) in listing.entries {
        let stem = name
            .strip_suffix(".yaml")
            .or_else(|| name.strip_suffix(".yml"));
        match (stem, kind) {
            (Some(stem), _) if !name.starts_with('.') => {
                out.push((stem.to_owned(), source::join(dir, &name)))
            }
            _ => {}
        }
    }
    out
}
