//! `sitekeeper approve SITE… --digest D --by NAME [--at TIME]`: list a plan
//! digest in each named site's `approvals/<site>.yaml` (SPEC §2.1), for a
//! pull-request branch. Writes approvals files of a fleet directory only,
//! each atomically and durably ([`crate::store::atomic_write_keep_mode`]);
//! it never reads or writes a site.

use std::path::Path;

use clap::Args;

use super::context::{now, select, state_dir};
use super::{CliError, Format, Global, Printer};
use crate::load::{self, Diagnostic, Fleet, Location, source};
use crate::model::values::{Digest, Timestamp};
use crate::model::{Approval, Approvals};
use crate::observe::SiteContext;
use crate::store::{Durability, atomic_write_keep_mode};

/// Arguments of `approve`.
#[derive(Debug, Args)]
pub struct ApproveArgs {
    /// Sites whose plan is approved; a digest shared by several sites (one
    /// plan class) is listed in each of their files.
    #[arg(required = true, value_name = "SITE")]
    pub sites: Vec<String>,
    /// The `plan_digest` to approve, from `plan --format json` or Markdown.
    #[arg(long, value_name = "D")]
    pub digest: String,
    /// Who approves it (a reviewer's name).
    #[arg(long, value_name = "NAME")]
    pub by: String,
    /// When, as an RFC 3339 time (default: now, or SITEKEEPER_NOW).
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
}

/// What approving did to one file.
#[derive(Debug, Clone)]
pub enum Edit {
    /// The file did not exist and now holds this text.
    Created(String),
    /// The entry was appended to the text as written (comments kept).
    Appended(String),
    /// The file was re-written from its entries plus the new one, because
    /// appending as text would not have parsed as the same list (a flow
    /// list such as `approved: []`, say); comments are not kept then.
    Rewritten(String),
    /// The digest is already listed; the file is left as it is.
    Unchanged(Approval),
}

impl Edit {
    fn word(&self) -> &'static str {
        match self {
            Edit::Created(_) => "created",
            Edit::Appended(_) => "added",
            Edit::Rewritten(_) => "rewritten",
            Edit::Unchanged(_) => "unchanged",
        }
    }

    fn text(&self) -> Option<&str> {
        match self {
            Edit::Created(t) | Edit::Appended(t) | Edit::Rewritten(t) => Some(t),
            Edit::Unchanged(_) => None,
        }
    }
}

pub(super) fn run(global: &Global, printer: &Printer, args: &ApproveArgs) -> Result<(), CliError> {
    // Every input is checked before any file is written: exit 2 means
    // nothing changed, for every site named.
    let approval = approval(args)?;
    if source::is_url(&global.fleet) {
        return Err(not_a_directory(&global.fleet).into());
    }
    let (fleet, diags) = load::load(&super::load_options(global)?)?;
    let Some(dir) = fleet.source.dir_path().map(Path::to_owned) else {
        return Err(not_a_directory(&global.fleet).into());
    };
    let edits = plan_edits(&fleet, &diags, &dir, &args.sites, &approval)?;
    write_and_say(printer, &edits, &approval)?;
    warn_if_not_current(global, printer, &fleet, &edits, &approval);
    Ok(())
}

/// One site's edit: its name, the approvals file relative to the fleet
/// and on disk, and what changes in it.
type SiteEdit = (String, String, std::path::PathBuf, Edit);

/// The approval the arguments describe, checked.
fn approval(args: &ApproveArgs) -> Result<Approval, CliError> {
    let digest: Digest = args
        .digest
        .parse()
        .map_err(|e: String| Diagnostic::new(Location::file("--digest"), e))?;
    let by = args.by.trim();
    if by.is_empty() || by.chars().any(char::is_control) {
        return Err(Diagnostic::new(
            Location::file("--by"),
            format!("{:?} is not a reviewer's name", args.by),
        )
        .with_hint("give the name of who approves, such as --by alice")
        .into());
    }
    let at = match &args.at {
        Some(text) => text
            .parse::<Timestamp>()
            .map_err(|e| Diagnostic::new(Location::file("--at"), e))?,
        // Whole seconds: the file is read by people.
        None => Timestamp(
            jiff::Timestamp::from_second(now()?.as_second())
                .map_err(|e| CliError::Failed(format!("the clock is out of range: {e}")))?,
        ),
    };
    Ok(Approval {
        plan_digest: digest,
        by: by.to_owned(),
        at,
    })
}

/// The edit of each named site's approvals file, every one checked before
/// any is written.
fn plan_edits(
    fleet: &load::Fleet,
    diags: &[Diagnostic],
    dir: &Path,
    names: &[String],
    approval: &Approval,
) -> Result<Vec<SiteEdit>, CliError> {
    let sites = match select(fleet, names) {
        Ok(sites) => sites,
        // A site whose file does not load is "unknown" too: show why,
        // from the site files only (not, say, an unreachable catalog).
        Err(CliError::Invalid(mut unknown)) => {
            let sites_dir = fleet.source.display("sites/");
            let mut all: Vec<Diagnostic> = diags
                .iter()
                .filter(|d| d.at.file.starts_with(&sites_dir))
                .cloned()
                .collect();
            all.append(&mut unknown);
            return Err(CliError::Invalid(all));
        }
        Err(e) => return Err(e),
    };
    let mut edits = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for site in sites {
        let name = site.site.to_string();
        if !seen.insert(name.clone()) {
            continue;
        }
        let rel = approvals_file(dir, &name);
        let shown = fleet.source.display(&rel);
        // A broken approvals file is not appended to (that could hide what
        // was wrong with it); other problems of the fleet (an unreachable
        // catalog in a pull-request checkout, say) do not concern approving.
        let broken: Vec<Diagnostic> = diags
            .iter()
            .filter(|d| d.at.file == shown)
            .cloned()
            .collect();
        if !broken.is_empty() {
            return Err(CliError::Invalid(broken));
        }
        let path = dir.join(&rel);
        let existing = read_existing(&path, &shown)?;
        let edit = edit(&shown, existing.as_deref(), approval)?;
        edits.push((name, rel, path, edit));
    }
    Ok(edits)
}

/// Writes each changed approvals file and says what became of each site.
fn write_and_say(
    printer: &Printer,
    edits: &[SiteEdit],
    approval: &Approval,
) -> Result<(), CliError> {
    for (name, rel, path, edit) in edits {
        if let Some(text) = edit.text() {
            // Durable: an approval is a safety record, and the user's file
            // keeps the mode they gave it.
            atomic_write_keep_mode(path, text.as_bytes(), Durability::Durable)
                .map_err(|e| CliError::Failed(format!("{}: {e}", path.display())))?;
        }
        if printer.format == Format::Human {
            printer.say(&match edit {
                Edit::Unchanged(old) => format!(
                    "{rel}: already approves {} (by {} at {}); unchanged",
                    old.plan_digest, old.by, old.at
                ),
                Edit::Rewritten(_) => format!(
                    "{rel}: approved {} for {name} (by {} at {}); the file was rewritten from its entries, so comments in it were not kept",
                    approval.plan_digest, approval.by, approval.at
                ),
                _ => format!(
                    "{rel}: approved {} for {name} (by {} at {})",
                    approval.plan_digest, approval.by, approval.at
                ),
            });
        }
    }
    if printer.format != Format::Human {
        let rows: Vec<serde_json::Value> = edits
            .iter()
            .map(|(name, rel, _, edit)| {
                serde_json::json!({
                    "site": name,
                    "file": rel,
                    "plan_digest": approval.plan_digest.as_str(),
                    "result": edit.word(),
                })
            })
            .collect();
        let text =
            serde_json::to_string_pretty(&rows).map_err(|e| CliError::Failed(e.to_string()))?;
        printer.report(&text);
    }
    Ok(())
}

fn not_a_directory(fleet: &str) -> Diagnostic {
    Diagnostic::new(
        Location::file("--fleet"),
        format!(
            "approve writes approvals/<site>.yaml into a fleet directory, but {fleet} is a git URL"
        ),
    )
    .with_hint(
        "clone the fleet repo, run approve in the clone on a branch, and open a pull request",
    )
}

/// The site's approvals file, relative to the fleet: an existing `.yml`
/// is kept, else `approvals/<site>.yaml`.
fn approvals_file(dir: &Path, site: &str) -> String {
    let yml = format!("approvals/{site}.yml");
    if !dir.join(format!("approvals/{site}.yaml")).exists() && dir.join(&yml).exists() {
        return yml;
    }
    format!("approvals/{site}.yaml")
}

/// The file's bytes, or `None` when it does not exist. A link or a
/// directory there is refused: the rename would replace it, not write
/// where it points.
fn read_existing(path: &Path, shown: &str) -> Result<Option<Vec<u8>>, CliError> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(CliError::Failed(format!("{shown}: {e}"))),
        Ok(meta) if !meta.is_file() => Err(Diagnostic::new(
            Location::file(shown),
            "is not a regular file (a link or a directory)",
        )
        .with_hint("make it a plain file in the fleet repo")
        .into()),
        Ok(_) => std::fs::read(path)
            .map(Some)
            .map_err(|e| CliError::Failed(format!("{shown}: {e}"))),
    }
}

/// The new text of an approvals file that holds `existing` (or nothing),
/// with `new` listed. The entry is appended to the text as written where
/// that parses back to the old entries plus the new one, so comments and
/// layout survive; otherwise the file is rewritten cleanly.
pub fn edit(file: &str, existing: Option<&[u8]>, new: &Approval) -> Result<Edit, Diagnostic> {
    let Some(bytes) = existing else {
        let mut text = String::from(
            "# Plan digests approved for this site (SPEC §2.1), added by pull requests.\n",
        );
        text.push_str(&render(&[new]));
        return Ok(Edit::Created(text));
    };
    let (old, _) = load::yaml::parse::<Approvals>(file, bytes)?;
    if let Some(listed) = old
        .approved
        .iter()
        .find(|a| a.plan_digest.as_str() == new.plan_digest.as_str())
    {
        return Ok(Edit::Unchanged(listed.clone()));
    }
    let mut wanted: Vec<&Approval> = old.approved.iter().collect();
    wanted.push(new);
    if let Ok(text) = std::str::from_utf8(bytes) {
        let appended = append(text, new);
        if let Ok((parsed, _)) = load::yaml::parse::<Approvals>(file, appended.as_bytes())
            && same(&parsed.approved, &wanted)
        {
            return Ok(Edit::Appended(appended));
        }
    }
    Ok(Edit::Rewritten(render(&wanted)))
}

/// Whether two lists hold the same approvals in the same order.
fn same(a: &[Approval], b: &[&Approval]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.plan_digest.as_str() == y.plan_digest.as_str() && x.by == y.by && x.at.0 == y.at.0
        })
}

/// One list item, indented by `indent`.
fn entry(indent: &str, a: &Approval) -> String {
    // JSON strings are valid YAML double-quoted scalars: any name is safe.
    let quote = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| format!("{s:?}"));
    format!(
        "{indent}- plan_digest: {}\n{indent}  by: {}\n{indent}  at: {}\n",
        quote(a.plan_digest.as_str()),
        quote(&a.by),
        a.at
    )
}

/// A whole file listing `entries`.
fn render(entries: &[&Approval]) -> String {
    let mut text = String::from("approved:\n");
    for a in entries {
        text.push_str(&entry("  ", a));
    }
    text
}

/// `text` with `new` appended as a block-list item, indented like the
/// items already there (two spaces when there are none).
fn append(text: &str, new: &Approval) -> String {
    let indent = text
        .lines()
        .find_map(|line| {
            let body = line.trim_start();
            (body.starts_with("- ") && body[2..].trim_start().starts_with("plan_digest:"))
                .then(|| &line[..line.len() - body.len()])
        })
        .unwrap_or("  ");
    let mut out = text.to_owned();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(&entry(indent, new));
    out
}

/// Warns (never fails) when a site's current plan has another digest: the
/// approval is then only useful once the plan comes back to it, which is
/// usually a copy-paste mistake or a site that moved since the review.
/// Best effort: where the site cannot be read here (a pull-request checkout
/// on another machine), nothing is said.
fn warn_if_not_current(
    global: &Global,
    printer: &Printer,
    fleet: &Fleet,
    edits: &[SiteEdit],
    approval: &Approval,
) {
    let Ok(at) = now() else { return };
    let state = state_dir(global, fleet);
    for (name, _, _, _) in edits {
        let Some(site) = fleet.site(name) else {
            continue;
        };
        let Ok(ctx) = SiteContext::gather(fleet, site, &state, None) else {
            continue;
        };
        let plan = ctx.plan(at, None);
        if plan.plan_digest != approval.plan_digest.as_str() {
            printer.warning(&format!(
                "{name}: its plan here has digest {}, not {}; the approval applies only while the plan is the one approved (hint: compare with `sitekeeper plan {name} --format json`)",
                plan.plan_digest, approval.plan_digest
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn approval(n: u8, by: &str) -> Approval {
        Approval {
            plan_digest: format!("sha256:{}", format!("{n:02x}").repeat(32))
                .parse()
                .unwrap(),
            by: by.into(),
            at: "2026-11-20T10:00:00Z".parse().unwrap(),
        }
    }

    fn listed(text: &str) -> Vec<(String, String)> {
        load::yaml::parse::<Approvals>("f", text.as_bytes())
            .unwrap()
            .0
            .approved
            .into_iter()
            .map(|a| (a.plan_digest.to_string(), a.by))
            .collect()
    }

    #[test]
    fn a_new_file_lists_the_approval() {
        let Edit::Created(text) = edit("f", None, &approval(1, "alice")).unwrap() else {
            panic!("not created");
        };
        assert_eq!(
            listed(&text),
            vec![(approval(1, "x").plan_digest.to_string(), "alice".into())]
        );
    }

    #[test]
    fn appending_keeps_comments_entries_and_indentation() {
        let old = "# reviewed in PR 12\napproved:\n    - plan_digest: \"sha256:0101010101010101010101010101010101010101010101010101010101010101\"\n      by: bob # the release manager\n      at: 2026-11-01T00:00:00Z";
        let Edit::Appended(text) =
            edit("f", Some(old.as_bytes()), &approval(2, "a \"quoted\" name")).unwrap()
        else {
            panic!("not appended");
        };
        assert!(text.starts_with(old), "{text}");
        assert!(text.contains("# the release manager"));
        let names: Vec<String> = listed(&text).into_iter().map(|(_, by)| by).collect();
        assert_eq!(names, vec!["bob", "a \"quoted\" name"]);
    }

    #[test]
    fn a_flow_list_is_rewritten_and_a_listed_digest_left_alone() {
        let old = "approved: []\n";
        let Edit::Rewritten(text) = edit("f", Some(old.as_bytes()), &approval(3, "alice")).unwrap()
        else {
            panic!("not rewritten");
        };
        assert_eq!(listed(&text).len(), 1);
        let Edit::Unchanged(kept) =
            edit("f", Some(text.as_bytes()), &approval(3, "carol")).unwrap()
        else {
            panic!("an identical digest is never listed twice");
        };
        assert_eq!(kept.by, "alice", "the first approval stays as it was");
    }

    #[test]
    fn a_broken_file_is_not_appended_to() {
        let d = edit(
            "approvals/s.yaml",
            Some(b"approved:\n  - plan_digest: nope\n"),
            &approval(4, "a"),
        )
        .unwrap_err();
        assert_eq!(d.at.file, "approvals/s.yaml");
        assert!(d.at.line > 0, "{d}");
    }
}
