//! Types of the catalog repo: `catalog.yaml`, releases and fixes (SPEC §2.2).
//!
//! The catalog is data, never code: nothing here runs, and every path and
//! glob in it is confined to the site root or the catalog by construction.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Problem;
use super::values::{Command, Glob, Pattern, RelPath, Sha256Hex, Timestamp, Version, VersionReq};
use super::words::{Expect, FixKind, Severity, Urgency, Whitespace};

/// `catalog.yaml`: the product and its channels and rings.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "sitekeeper catalog.yaml")]
pub struct Catalog {
    /// The product this catalog publishes.
    pub product: String,
    /// Release channels sites may follow.
    pub channels: BTreeMap<String, Channel>,
    /// Delay after a release's date before each ring upgrades (0 = canary).
    #[serde(default)]
    pub rings: BTreeMap<u8, super::values::Duration>,
}

/// A release channel.
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Channel {
    /// Whether the channel offers pre-releases.
    #[serde(default)]
    pub prerelease: bool,
}

/// `releases/<version>.yaml`: one release of the product.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "sitekeeper release")]
pub struct Release {
    /// Full semver; equals the file name without `.yaml`.
    pub version: Version,
    /// Channels that offer this release.
    pub channels: Vec<String>,
    /// Publication time (RFC 3339).
    pub released: Timestamp,
    /// `security` may bypass windows and soak times.
    #[serde(default = "normal_urgency")]
    pub urgency: Urgency,
    /// The release's files.
    pub payload: Payload,
    /// Installed versions that may upgrade directly to this one.
    pub upgrade_from: Option<VersionReq>,
    /// A withdrawn release is never a candidate.
    #[serde(default)]
    pub yanked: bool,
    /// Commands shipped with the release; run only if policy allows.
    #[serde(default)]
    pub hooks: ReleaseHooks,
    /// Data migrations, run in order after the files change (SPEC §6.6);
    /// run only if policy allows release hooks.
    #[serde(default)]
    pub migrate: Vec<Command>,
    /// Output lines a full migration prints, for a progress percent.
    pub migrate_lines: Option<u64>,
    /// Host-wide lock name: sites take this release one at a time.
    pub serialize: Option<String>,
    /// Shown to operators.
    pub notes: Option<String>,
}

fn normal_urgency() -> Urgency {
    Urgency::Normal
}

/// A release's files: a tree in the catalog, or an archive with its checksum.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Payload {
    /// A directory of the catalog holding the release's tree.
    pub tree: Option<RelPath>,
    /// A `.tar.gz` (or `.tar`) in the catalog.
    pub archive: Option<RelPath>,
    /// SHA-256 of the archive (required for archives).
    pub sha256: Option<Sha256Hex>,
    /// Leading path components to drop from archive entries.
    pub strip: Option<u32>,
}

/// Commands a release ships (run only where `allow_release_hooks`).
#[derive(Debug, Clone, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReleaseHooks {
    /// Before the files change.
    #[serde(default)]
    pub pre_apply: Vec<Command>,
    /// After the files change.
    #[serde(default)]
    pub post_apply: Vec<Command>,
}

/// `fixes/<NNNN>-<slug>.yaml`: a hot fix.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "sitekeeper fix")]
pub struct Fix {
    /// Equals the file name without `.yaml`.
    pub id: String,
    /// One line for lists.
    pub title: String,
    /// Why; shown in every plan that contains the fix.
    pub reason: String,
    /// `critical` fixes reach sites with `hotfixes: critical`.
    pub severity: Severity,
    /// `diagnostic` and `access` fixes need their own opt-in.
    #[serde(default = "plain_fix")]
    pub kind: FixKind,
    /// Installed versions it targets.
    pub applies_to: VersionReq,
    /// The release that supersedes it.
    pub fixed_in: Option<Version>,
    /// Labels a site must carry.
    #[serde(default)]
    pub selector: BTreeMap<String, String>,
    /// The edits, applied in order.
    pub ops: Vec<Op>,
}

fn plain_fix() -> FixKind {
    FixKind::Fix
}

/// One edit of a fix.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Op {
    /// Search and replace text in every matching file.
    Replace(ReplaceOp),
    /// Regex search and replace in every matching file.
    Regex(RegexOp),
    /// Write a whole file.
    Write(WriteOp),
    /// Add a file only where it is absent.
    Add(WriteOp),
    /// Delete every matching file.
    Delete(DeleteOp),
}

/// `replace`: literal search and replace.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplaceOp {
    /// Files to edit, as globs relative to the site root.
    pub files: Vec<Glob>,
    /// The text to find.
    pub find: String,
    /// Its replacement.
    pub with: String,
    /// `loose`: every whitespace run in `find` matches any whitespace run.
    #[serde(default = "loose")]
    pub whitespace: Whitespace,
    /// How many files must be applicable or applied.
    #[serde(default = "some")]
    pub expect: Expect,
}

fn loose() -> Whitespace {
    Whitespace::Loose
}

fn some() -> Expect {
    Expect::Some
}

/// `regex`: search and replace with a regular expression.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RegexOp {
    /// Files to edit, as globs relative to the site root.
    pub files: Vec<Glob>,
    /// The pattern.
    pub pattern: Pattern,
    /// The replacement; `$1` names a capture group.
    pub with: String,
    /// How many files must be applicable or applied.
    #[serde(default = "some")]
    pub expect: Expect,
}

/// `write` and `add`: a whole file, from the catalog or inline.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WriteOp {
    /// The file, relative to the site root.
    pub path: RelPath,
    /// A file holding the content, relative to the catalog's `fixes/` directory.
    pub source: Option<RelPath>,
    /// The content inline.
    pub content: Option<String>,
}

/// `delete`: remove every matching file.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeleteOp {
    /// Files to delete, as globs relative to the site root.
    pub files: Vec<Glob>,
}

impl Op {
    /// The op's name as written in YAML.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Replace(_) => "replace",
            Op::Regex(_) => "regex",
            Op::Write(_) => "write",
            Op::Add(_) => "add",
            Op::Delete(_) => "delete",
        }
    }

    /// The globs a `replace`, `regex` or `delete` op works on; none for
    /// `write` and `add`, which name one `path` instead.
    pub fn files(&self) -> &[Glob] {
        match self {
            Op::Replace(r) => &r.files,
            Op::Regex(r) => &r.files,
            Op::Delete(d) => &d.files,
            Op::Write(_) | Op::Add(_) => &[],
        }
    }

    /// How many files must be applicable or applied for the op to hold.
    /// Only the text ops can be told; a whole-file op or a delete takes
    /// whatever it finds.
    pub fn expect(&self) -> Expect {
        match self {
            Op::Replace(r) => r.expect,
            Op::Regex(r) => r.expect,
            Op::Write(_) | Op::Add(_) | Op::Delete(_) => Expect::Any,
        }
    }
}

impl Release {
    /// Checks that need more than one field.
    pub fn problems(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        let p = &self.payload;
        match (&p.tree, &p.archive) {
            (None, None) => out.push(Problem::at(
                "payload",
                "payload needs a `tree` or an `archive`",
            )),
            (Some(_), Some(_)) => out.push(Problem::at(
                "payload.archive",
                "payload has both `tree` and `archive` (hint: keep one)",
            )),
            (Some(_), None) if p.sha256.is_some() || p.strip.is_some() => out.push(Problem::at(
                "payload",
                "`sha256` and `strip` apply to archives only",
            )),
            (None, Some(_)) if p.sha256.is_none() => out.push(Problem::at(
                "payload.archive",
                "an archive payload needs its `sha256` (hint: sha256sum the archive and add sha256: <hex>)",
            )),
            _ => {}
        }
        if self.channels.is_empty() {
            out.push(Problem::at(
                "channels",
                "a release needs at least one channel",
            ));
        }
        out
    }
}

impl Fix {
    /// Checks that need more than one field.
    pub fn problems(&self) -> Vec<Problem> {
        // A NUL makes the edited file binary, which text ops never touch:
        // the next plan would hold the fix it just applied (found by fuzzing).
        const NUL_IN_WITH: &str = "`with` holds a NUL byte, which would make the file binary (hint: binary content goes in a write op)";
        let mut out = Vec::new();
        if self.ops.is_empty() {
            out.push(Problem::at("ops", "a fix needs at least one op"));
        }
        for (i, op) in self.ops.iter().enumerate() {
            let at = |field: &str| format!("ops[{i}].{}.{field}", op.name());
            match op {
                Op::Replace(r) => {
                    if r.files.is_empty() {
                        out.push(Problem::at(at("files"), "`files` needs at least one glob"));
                    }
                    if r.find.trim().is_empty() {
                        out.push(Problem::at(
                            at("find"),
                            "`find` is empty, so it would match everywhere",
                        ));
                    }
                    if r.with.contains('\0') {
                        out.push(Problem::at(at("with"), NUL_IN_WITH));
                    }
                }
                Op::Regex(r) => {
                    if r.files.is_empty() {
                        out.push(Problem::at(at("files"), "`files` needs at least one glob"));
                    }
                    if r.with.contains('\0') {
                        out.push(Problem::at(at("with"), NUL_IN_WITH));
                    }
                }
                Op::Write(w) | Op::Add(w) => match (&w.source, &w.content) {
                    (None, None) => out.push(Problem::at(
                        format!("ops[{i}].{}", op.name()),
                        "needs a `source` file or inline `content`",
                    )),
                    (Some(_), Some(_)) => out.push(Problem::at(
                        at("content"),
                        "has both `source` and `content` (hint: keep one)",
                    )),
                    _ => {}
                },
                Op::Delete(d) => {
                    if d.files.is_empty() {
                        out.push(Problem::at(at("files"), "`files` needs at least one glob"));
                    }
                }
            }
        }
        out
    }
}
