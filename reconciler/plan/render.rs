//! Plans for people: human text, JSON (SPEC §3.1) and Markdown for
//! pull-request comments, with unified diffs (three lines of context) and
//! a size cap that degrades into per-file summaries instead of failing.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::{Action, ActionKind, FailedSite, FileChange, FileOp, Plan, SitePlan};
use crate::fixops::is_binary;

/// The most Markdown a plan renders, below GitHub's 65,536-character
/// comment limit with room for a header added by CI.
pub const MARKDOWN_LIMIT: usize = 60_000;

/// JSON, as SPEC §3.1 gives it.
pub fn json(plan: &Plan) -> String {
    let mut s = serde_json::to_string_pretty(plan).unwrap_or_default();
    s.push('\n');
    s
}

/// An action's title, as the Markdown plan and the dashboard show it.
pub fn action_title(a: &Action) -> String {
    match a.kind {
        ActionKind::Upgrade => format!("upgrade to {}", a.id),
        ActionKind::Fix => format!("fix {}", a.id),
        ActionKind::RevertDrift => "revert local changes".to_owned(),
        ActionKind::RemoveFix => format!("remove fix {}", a.id),
    }
}

fn versions(s: &SitePlan) -> String {
    match (&s.from_version, &s.to_version) {
        (Some(a), Some(b)) if a != b => format!("{a} → {b}"),
        (Some(a), _) => a.clone(),
        (None, _) => "unknown version".to_owned(),
    }
}

fn files_word(n: usize) -> String {
    format!(
        "{} file{}",
        super::thousands(n),
        if n == 1 { "" } else { "s" }
    )
}

/// Names a summary line lists before "and N more".
const SUMMARY_NAMES: usize = 10;

/// The end of every summary line (SPEC §3): how many sites failed, and
/// which: `0 failed`, or `2 failed: a, b`. Always there, so that a summary
/// over a broken site never reads like one over a healthy fleet.
pub fn failed_words<'a>(names: impl ExactSizeIterator<Item = &'a str>) -> String {
    named_count(names, "failed")
}

/// `0 WORD`, or `2 WORD: a, b`, with at most `SUMMARY_NAMES` names.
pub fn named_count<'a>(names: impl ExactSizeIterator<Item = &'a str>, word: &str) -> String {
    let count = names.len();
    if count == 0 {
        return format!("0 {word}");
    }
    let shown: Vec<&str> = names.take(SUMMARY_NAMES).collect();
    let more = count - shown.len();
    let tail = if more > 0 {
        format!(" and {} more", super::thousands(more))
    } else {
        String::new()
    };
    format!(
        "{} {word}: {}{tail}",
        super::thousands(count),
        shown.join(", ")
    )
}

/// Totals for the header: sites that change, that do not, held items, and
/// the sites that could not be planned.
fn totals(plan: &Plan) -> String {
    let change = plan.sites.iter().filter(|s| s.has_changes()).count();
    let unchanged = plan.sites.len() - change;
    let held: usize = plan.sites.iter().map(|s| s.held.len()).sum();
    format!(
        "{} site{} change{}, {unchanged} unchanged, {held} held, {}",
        change,
        if change == 1 { "" } else { "s" },
        if change == 1 { "s" } else { "" },
        failed_words(plan.failed.iter().map(|f| f.site.as_str()))
    )
}

/// A piece of the human rendering, in the order a person reads them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Report text, for stdout; it ends with a newline.
    Out(String),
    /// A site's error, for stderr, right after that site's line.
    Error(String),
}

/// Human text as one string, errors inline as `error: …` lines, as a
/// terminal shows [`human_pieces`].
pub fn human(plan: &Plan, verbose: bool) -> String {
    let mut out = String::new();
    for piece in human_pieces(plan, verbose) {
        match piece {
            Piece::Out(text) => out.push_str(&text),
            Piece::Error(e) => {
                let _ = writeln!(out, "error: {e}");
            }
        }
    }
    out
}

/// Human text: a summary line per site, then its actions and held items,
/// with each site that could not be planned in its place among them (its
/// line, then its error), and the totals last. `verbose` lists every file.
pub fn human_pieces(plan: &Plan, verbose: bool) -> Vec<Piece> {
    let mut pieces = Vec::new();
    let mut failed = plan.failed.iter().peekable();
    for s in &plan.sites {
        while let Some(f) = failed.next_if(|f| f.site < s.site) {
            failed_site(&mut pieces, f);
        }
        pieces.push(Piece::Out(human_site(s, verbose)));
    }
    for f in failed {
        failed_site(&mut pieces, f);
    }
    pieces.push(Piece::Out(format!("{}\n", totals(plan))));
    pieces
}

fn failed_site(pieces: &mut Vec<Piece>, f: &FailedSite) {
    pieces.push(Piece::Out(format!("{}  could not be planned\n", f.site)));
    pieces.push(Piece::Error(f.error.clone()));
    pieces.push(Piece::Out("\n".to_owned()));
}

/// One site's block of the human text, ending with a blank line.
fn human_site(s: &SitePlan, verbose: bool) -> String {
    let mut out = String::new();
    let state = if s.has_changes() {
        let files: usize = s.actions.iter().map(|a| a.files.len()).sum();
        format!(
            "{} action{}, {}",
            s.actions.len(),
            if s.actions.len() == 1 { "" } else { "s" },
            files_word(files)
        )
    } else {
        "no changes".to_owned()
    };
    let _ = writeln!(out, "{}  {}  ({state})", s.site, versions(s));
    if !s.adopted {
        let _ = writeln!(
            out,
            "  not adopted: nothing can be applied until `sitekeeper adopt {}`",
            s.site
        );
    }
    for note in &s.notes {
        let _ = writeln!(out, "  note: {note}");
    }
    if !s.drift.is_empty() {
        let _ = writeln!(
            out,
            "  drift: {} changed locally since the last rollback point",
            files_word(s.drift.len())
        );
    }
    for a in &s.actions {
        let _ = writeln!(
            out,
            "  {}: {} ({})",
            action_title(a),
            a.reason,
            files_word(a.files.len())
        );
        if verbose {
            for f in &a.files {
                let _ = writeln!(out, "      {:<6} {}", op_word(f.op), f.path);
            }
        }
    }
    for h in &s.held {
        let _ = writeln!(
            out,
            "  held {} [{}]: {}",
            h.item,
            code_word(h.code),
            h.reason
        );
    }
    let _ = writeln!(out, "  plan digest {}", s.plan_digest);
    out.push('\n');
    out
}

fn op_word(op: FileOp) -> &'static str {
    match op {
        FileOp::Add => "add",
        FileOp::Modify => "modify",
        FileOp::Delete => "delete",
    }
}

/// A hold's code as SPEC §3.1 spells it (`policy_ceiling`).
pub fn code_word(code: super::HeldCode) -> String {
    serde_json::to_value(code)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// A content hash, shortened for reading (`sha256:1a2b3c4d5e6f…`).
fn hash(h: Option<crate::model::hash::ContentHash>) -> String {
    h.map_or("absent".to_owned(), |h| {
        h.to_string()[..19].to_owned() + "…"
    })
}

/// What a plan shows of one file: a unified diff, or one line for a
/// binary file, a link, or a plan that names contents without holding them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileDiff {
    /// The unified diff (`--- a/…`, `+++ b/…`, hunks), as plain text.
    Unified(String),
    /// A Markdown line summarising the file instead.
    Summary(String),
}

/// The diff of one file, shared by the Markdown plan (fenced) and the
/// dashboard (escaped into a `<pre>`), so both show the same thing.
pub fn unified_diff(f: &FileChange) -> FileDiff {
    let old = f.old.as_ref().and_then(|d| d.bytes()).unwrap_or(b"");
    let new = f.new.as_ref().and_then(|d| d.bytes()).unwrap_or(b"");
    // A plan made to be applied names payload contents without holding
    // them; it has no diff to show.
    if f.new.as_ref().is_some_and(|d| d.bytes().is_none()) {
        return FileDiff::Summary(file_line(f));
    }
    if is_binary(old)
        || is_binary(new)
        || std::str::from_utf8(old).is_err()
        || std::str::from_utf8(new).is_err()
    {
        return FileDiff::Summary(format!(
            "`{}` ({}): binary, {} → {} bytes, {} → {}\n",
            f.path,
            op_word(f.op),
            super::thousands(old.len()),
            super::thousands(new.len()),
            hash(f.before),
            hash(f.after)
        ));
    }
    let (a, b) = (String::from_utf8_lossy(old), String::from_utf8_lossy(new));
    let diff = similar::TextDiff::from_lines(a.as_ref(), b.as_ref());
    let from = if f.before.is_some() {
        format!("a/{}", f.path)
    } else {
        "/dev/null".to_owned()
    };
    let to = if f.after.is_some() {
        format!("b/{}", f.path)
    } else {
        "/dev/null".to_owned()
    };
    FileDiff::Unified(
        diff.unified_diff()
            .context_radius(3)
            .header(&from, &to)
            .to_string(),
    )
}

/// A unified diff of one file in a Markdown fence, or a summary for
/// binary files and links.
fn file_diff(f: &FileChange) -> String {
    let body = match unified_diff(f) {
        FileDiff::Unified(body) => body,
        FileDiff::Summary(line) => return line,
    };
    // A fence longer than any run of backticks in the diff keeps it intact.
    let longest = body.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat(longest.max(2) + 1);
    format!(
        "{fence}diff\n{body}{}{fence}\n",
        if body.ends_with('\n') { "" } else { "\n" }
    )
}

/// Site rows the summary table lists one by one; a larger plan gets one
/// row per plan class instead, so the table never crowds out the diffs.
const TABLE_SITES: usize = 50;
/// Characters of site names a class section lists before "and N more".
const CLASS_NAMES: usize = 1_500;
/// Characters kept back for the closing note on what was left out.
const FOOTER: usize = 400;

/// Markdown for a pull-request comment (SPEC §4.5): a header with the
/// totals, a summary table, then one collapsible section per plan class
/// (sites with equal digests) with the digest to approve, the reasons, the
/// diffs and the held items.
///
/// It never exceeds [`MARKDOWN_LIMIT`]: a diff that does not fit becomes a
/// one-line summary of the file (op, sizes, hashes), and what does not fit
/// even so is counted in a closing note that points to the JSON.
pub fn markdown(plan: &Plan) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## sitekeeper plan\n\n**{}** · plan `{}`\n",
        totals(plan),
        plan.plan_id
    );
    let classes = plan_classes(plan);
    if plan.sites.len() <= TABLE_SITES {
        summary_by_site(&mut out, plan);
    } else {
        summary_by_class(&mut out, &classes, &plan.failed);
    }
    let mut page = Page::new(out, &classes);
    for (digest, sites) in &classes {
        page.class(digest, sites);
    }
    page.finish()
}

/// Closes a class's collapsible section.
const CLOSE: &str = "</details>\n\n";

/// The comment as it is written, against its size budget, and what the
/// budget has cost so far.
struct Page {
    out: String,
    budget: usize,
    /// Room kept for a summary line of every file not yet rendered, so
    /// diffs shown early never crowd later files out of the comment.
    reserve: usize,
    /// Files shown as one-line summaries.
    summarized: usize,
    /// Files left out.
    left_out: usize,
}

impl Page {
    fn new(out: String, classes: &[(&str, Vec<&SitePlan>)]) -> Self {
        let reserve = classes
            .iter()
            .flat_map(|(_, sites)| sites[0].actions.iter())
            .flat_map(|a| a.files.iter())
            .map(|f| file_line(f).len())
            .sum();
        Page {
            out,
            budget: MARKDOWN_LIMIT - FOOTER,
            reserve,
            summarized: 0,
            left_out: 0,
        }
    }

    /// Whether `len` more bytes, and the section's close, still fit.
    fn fits(&self, len: usize) -> bool {
        self.out.len() + len + CLOSE.len() <= self.budget
    }

    /// Counts files that are not rendered at all.
    fn leave_out<'f>(&mut self, files: impl Iterator<Item = &'f FileChange>) {
        for f in files {
            self.reserve = self.reserve.saturating_sub(file_line(f).len());
            self.left_out += 1;
        }
    }

    /// One plan class: its frame must fit whole; its diffs fit as they can.
    fn class(&mut self, digest: &str, sites: &[&SitePlan]) {
        let first = sites[0];
        let section = class_head(digest, sites);
        if !self.fits(section.len()) {
            self.leave_out(first.actions.iter().flat_map(|a| a.files.iter()));
            return;
        }
        self.out.push_str(&section);
        for a in &first.actions {
            self.action(a);
        }
        self.out.push_str(CLOSE);
    }

    /// One action: its title, then each file's diff, or its summary line
    /// when the diff does not fit, or nothing when neither does.
    fn action(&mut self, a: &Action) {
        let title = format!(
            "#### {} ({})\n\n{}\n\n",
            action_title(a),
            files_word(a.files.len()),
            a.reason
        );
        if !self.fits(title.len()) {
            self.leave_out(a.files.iter());
            return;
        }
        self.out.push_str(&title);
        for f in &a.files {
            let diff = file_diff(f);
            let line = file_line(f);
            self.reserve = self.reserve.saturating_sub(line.len());
            if self.fits(diff.len() + self.reserve) {
                self.out.push_str(&diff);
            } else if self.fits(line.len()) {
                self.out.push_str(&line);
                self.summarized += 1;
            } else {
                self.left_out += 1;
            }
        }
        self.out.push('\n');
    }

    /// The comment, with a closing note of what the limit cost, if anything.
    fn finish(mut self) -> String {
        if self.summarized + self.left_out == 0 {
            return self.out;
        }
        let mut parts = Vec::new();
        if self.summarized > 0 {
            parts.push(format!(
                "{} shown as one-line summaries",
                files_word(self.summarized)
            ));
        }
        if self.left_out > 0 {
            parts.push(format!("{} left out", files_word(self.left_out)));
        }
        let _ = writeln!(
            self.out,
            "_To stay under the comment size limit, {}; `sitekeeper plan --format json` has every file._",
            parts.join(" and ")
        );
        self.out
    }
}

/// The head of a plan class's section: how many sites share the plan and
/// which, the digest to approve (when it changes anything), and every
/// distinct held item of its sites.
fn class_head(digest: &str, sites: &[&SitePlan]) -> String {
    let first = sites[0];
    let what = if first.has_changes() {
        versions(first)
    } else {
        format!("{}, no changes", versions(first))
    };
    let mut section = format!(
        "<details><summary>{} site{}: same plan ({what})</summary>\n\n{}\n\n",
        sites.len(),
        if sites.len() == 1 { "" } else { "s" },
        site_names(sites)
    );
    if first.has_changes() {
        let _ = writeln!(section, "Plan digest to approve: `{digest}`\n");
    }
    let mut held: Vec<String> = Vec::new();
    for s in sites {
        for h in &s.held {
            let line = format!("- **{}** `{}`: {}", h.item, code_word(h.code), h.reason);
            if !held.contains(&line) {
                held.push(line);
            }
        }
    }
    if !held.is_empty() {
        let _ = writeln!(section, "**Held**\n\n{}\n", held.join("\n"));
    }
    section
}

/// Sites grouped by plan digest, largest class first (then by first site).
fn plan_classes(plan: &Plan) -> Vec<(&str, Vec<&SitePlan>)> {
    let mut classes: BTreeMap<&str, Vec<&SitePlan>> = BTreeMap::new();
    for s in &plan.sites {
        classes.entry(s.plan_digest.as_str()).or_default().push(s);
    }
    let mut classes: Vec<(&str, Vec<&SitePlan>)> = classes.into_iter().collect();
    classes.sort_by(|a, b| {
        b.1.len()
            .cmp(&a.1.len())
            .then(a.1[0].site.cmp(&b.1[0].site))
    });
    classes
}

fn fixes_cell(s: &SitePlan) -> String {
    let fixes: Vec<String> = s
        .actions
        .iter()
        .filter(|a| a.kind == ActionKind::Fix)
        .map(|a| format!("`{}`", a.id))
        .collect();
    if fixes.is_empty() {
        "–".to_owned()
    } else {
        fixes.join(" ")
    }
}

fn held_cell(s: &SitePlan) -> String {
    if s.held.is_empty() {
        return "–".to_owned();
    }
    let mut codes: Vec<String> = s
        .held
        .iter()
        .map(|h| format!("`{}`", code_word(h.code)))
        .collect();
    codes.dedup();
    codes.join(" ")
}

fn summary_by_site(out: &mut String, plan: &Plan) {
    let _ = writeln!(
        out,
        "| site | version | fixes | held |\n| --- | --- | --- | --- |"
    );
    for s in &plan.sites {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            s.site,
            versions(s),
            fixes_cell(s),
            held_cell(s)
        );
    }
    failed_rows(out, &plan.failed);
    out.push('\n');
}

/// Characters of a failed site's error its table row keeps.
const REASON_CHARS: usize = 300;

/// A row per site that could not be planned, with its error where the
/// held items go; past [`TABLE_SITES`] rows, one row counts the rest.
fn failed_rows(out: &mut String, failed: &[FailedSite]) {
    for f in failed.iter().take(TABLE_SITES) {
        let _ = writeln!(
            out,
            "| {} | **failed** | – | {} |",
            f.site,
            table_text(&f.error, REASON_CHARS)
        );
    }
    if failed.len() > TABLE_SITES {
        let _ = writeln!(
            out,
            "| {} more | **failed** | – | `sitekeeper plan --format json` lists every one |",
            super::thousands(failed.len() - TABLE_SITES)
        );
    }
}

/// `text` as plain text in one table cell: on one line, cut to `limit`
/// characters, with what Markdown would read as markup (a `|` ends the
/// cell) escaped. An error may quote a path or a system message verbatim.
fn table_text(text: &str, limit: usize) -> String {
    let mut out = String::new();
    for (n, c) in text.chars().enumerate() {
        if n == limit {
            out.push('…');
            break;
        }
        match c {
            '\n' | '\r' | '\t' => out.push(' '),
            '\\' | '|' | '*' | '_' | '`' | '<' | '>' | '[' | ']' | '#' | '~' | '&' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

fn summary_by_class(out: &mut String, classes: &[(&str, Vec<&SitePlan>)], failed: &[FailedSite]) {
    let _ = writeln!(
        out,
        "| sites | version | fixes | held |\n| --- | --- | --- | --- |"
    );
    for (_, sites) in classes {
        let first = sites[0];
        let _ = writeln!(
            out,
            "| {} ({}) | {} | {} | {} |",
            super::thousands(sites.len()),
            first.site,
            versions(first),
            fixes_cell(first),
            held_cell(first)
        );
    }
    failed_rows(out, failed);
    out.push('\n');
}

/// "Sites: a, b, c" with as many names as fit in [`CLASS_NAMES`] characters.
fn site_names(sites: &[&SitePlan]) -> String {
    let mut shown = String::new();
    let mut count = 0;
    for s in sites {
        if !shown.is_empty() && shown.len() + s.site.len() + 2 > CLASS_NAMES {
            break;
        }
        if !shown.is_empty() {
            shown.push_str(", ");
        }
        shown.push_str(&s.site);
        count += 1;
    }
    if count < sites.len() {
        format!(
            "Sites: {shown} and {} more",
            super::thousands(sites.len() - count)
        )
    } else {
        format!("Sites: {shown}")
    }
}

/// One line for a file whose diff does not fit.
fn file_line(f: &FileChange) -> String {
    let size = |d: &Option<std::sync::Arc<super::FileData>>| {
        d.as_ref()
            .map_or_else(|| "–".to_owned(), |d| super::thousands(d.len()))
    };
    format!(
        "- `{}` ({}): {} → {} bytes, {} → {}\n",
        f.path,
        op_word(f.op),
        size(&f.old),
        size(&f.new),
        hash(f.before),
        hash(f.after)
    )
}
