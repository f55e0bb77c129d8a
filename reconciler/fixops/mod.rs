//! The fix operations of SPEC §2.2 as pure functions on bytes.
//!
//! Each text op looks at one file's content and says what state it is in
//! (applied, applicable, conflict) and, when applicable, what the content
//! becomes. Binary files are skipped by text ops. Nothing here touches the
//! disk; the planner feeds contents in and collects results.

use regex::bytes::{Regex, RegexBuilder};
use serde::Serialize;

use crate::model::catalog::{RegexOp, ReplaceOp};
use crate::model::words::{Expect, Whitespace};

/// The state of one targeted file for one op (SPEC §2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FileState {
    /// The result is already there.
    Applied,
    /// The op would change the file.
    Applicable,
    /// The file is customised: the op's text is not found and its result is absent.
    Conflict,
    /// No such file.
    Missing,
    /// A binary file, which text ops never edit.
    Binary,
}

/// A text op's verdict on one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The file's state.
    pub state: FileState,
    /// The new content, when applicable.
    pub content: Option<Vec<u8>>,
}

impl Outcome {
    fn state(state: FileState) -> Self {
        Self {
            state,
            content: None,
        }
    }
}

/// Whether `content` looks binary: a NUL byte in its first 8000 bytes, as
/// git decides.
pub fn is_binary(content: &[u8]) -> bool {
    content.iter().take(8000).any(|&b| b == 0)
}

/// The pattern a `replace` text turns into: literal, or with every run of
/// whitespace matching any non-empty run of whitespace (`loose`).
fn literal_pattern(text: &str, whitespace: Whitespace) -> Option<Regex> {
    let pattern = match whitespace {
        Whitespace::Exact => regex::escape(text),
        Whitespace::Loose => {
            let mut p = String::new();
            let mut in_space = false;
            for c in text.chars() {
                if c.is_whitespace() {
                    // Unicode-aware, like `is_whitespace`: an ASCII-only
                    // `\s` would not match a no-break space of `with`, so a
                    // fix whose result holds one would be seen as a conflict
                    // once applied (found by proptest).
                    if !in_space {
                        p.push_str(r"(?u:\s)+");
                    }
                    in_space = true;
                } else {
                    p.push_str(&regex::escape(c.encode_utf8(&mut [0; 4])));
                    in_space = false;
                }
            }
            p
        }
    };
    RegexBuilder::new(&pattern).unicode(false).build().ok()
}

/// How many times [`replace`] substitutes before it gives up on a result
/// that keeps changing.
const SETTLE_ROUNDS: usize = 16;

/// `replace`: every match of `find` that is not already inside the result
/// (`with`) is replaced. Applied when only results remain, conflict when
/// neither is found. Matches inside an occurrence of `with` never count,
/// so a fix whose `with` contains its `find` still converges.
///
/// A replacement can make a new match with the text around it (`find: ab`,
/// `with: b` turns `aab` into `ab`), so the substitution repeats until
/// nothing is left to replace: the result is then `applied` when planned
/// again, and a second apply changes nothing. A result that has not
/// settled after `SETTLE_ROUNDS` rounds is a conflict, since applying it
/// would change the file again on every run.
pub fn replace(content: &[u8], op: &ReplaceOp) -> Outcome {
    if is_binary(content) {
        return Outcome::state(FileState::Binary);
    }
    let (Some(find), Some(with)) = (
        literal_pattern(&op.find, op.whitespace),
        literal_pattern(&op.with, op.whitespace),
    ) else {
        return Outcome::state(FileState::Conflict);
    };
    let first = substitute(content, &find, &with, op.with.as_bytes());
    let Some(mut current) = first.content else {
        return first;
    };
    for _ in 0..SETTLE_ROUNDS {
        match substitute(&current, &find, &with, op.with.as_bytes()).content {
            Some(next) => current = next,
            // Settled; it differs from `content`, which did not settle.
            None => {
                return Outcome {
                    state: FileState::Applicable,
                    content: Some(current),
                };
            }
        }
    }
    Outcome::state(FileState::Conflict)
}

/// `regex`: every match of `pattern` not inside a previous result is
/// replaced, with `$1`-style groups expanded. A match whose replacement is
/// itself (already applied) counts as applied.
pub fn regex(content: &[u8], op: &RegexOp) -> Outcome {
    if is_binary(content) {
        return Outcome::state(FileState::Binary);
    }
    let re = &op.pattern.0;
    let mut out = Vec::with_capacity(content.len());
    let mut last = 0;
    let mut changed = false;
    let mut matched = false;
    for caps in re.captures_iter(content) {
        let Some(m) = caps.get(0) else { continue };
        matched = true;
        let mut replacement = Vec::new();
        caps.expand(op.with.as_bytes(), &mut replacement);
        out.extend_from_slice(&content[last..m.start()]);
        if replacement != m.as_bytes() {
            changed = true;
        }
        out.extend_from_slice(&replacement);
        last = m.end();
    }
    out.extend_from_slice(&content[last..]);
    match (matched, changed) {
        (true, true) => Outcome {
            state: FileState::Applicable,
            content: Some(out),
        },
        (true, false) => Outcome::state(FileState::Applied),
        (false, _) => Outcome::state(FileState::Conflict),
    }
}

/// Replaces the matches of `find` outside every match of `with` by the
/// literal `replacement`.
fn substitute(content: &[u8], find: &Regex, with: &Regex, replacement: &[u8]) -> Outcome {
    let results: Vec<(usize, usize)> = with
        .find_iter(content)
        .map(|m| (m.start(), m.end()))
        .collect();
    let inside_result = |s: usize, e: usize| results.iter().any(|&(rs, re)| rs <= s && e <= re);
    let pending: Vec<(usize, usize)> = find
        .find_iter(content)
        .map(|m| (m.start(), m.end()))
        .filter(|&(s, e)| !inside_result(s, e))
        .collect();
    if pending.is_empty() {
        let state = if results.is_empty() {
            FileState::Conflict
        } else {
            FileState::Applied
        };
        return Outcome::state(state);
    }
    let mut out = Vec::with_capacity(content.len());
    let mut last = 0;
    for (s, e) in pending {
        out.extend_from_slice(&content[last..s]);
        out.extend_from_slice(replacement);
        last = e;
    }
    out.extend_from_slice(&content[last..]);
    Outcome {
        state: FileState::Applicable,
        content: Some(out),
    }
}

/// `write`: the file becomes `new`; applied when it already is.
pub fn write(current: Option<&[u8]>, new: &[u8]) -> FileState {
    match current {
        Some(c) if c == new => FileState::Applied,
        _ => FileState::Applicable,
    }
}

/// `add`: the file is created only where absent; a present file is left as is.
pub fn add(current: Option<&[u8]>) -> FileState {
    match current {
        Some(_) => FileState::Applied,
        None => FileState::Applicable,
    }
}

/// Whether the per-file states of one op meet its `expect` (SPEC §2.2):
/// `some` needs at least one file applicable or applied, `one` exactly one,
/// `any` nothing.
pub fn expect_met(expect: Expect, states: &[FileState]) -> bool {
    let useful = states
        .iter()
        .filter(|s| matches!(s, FileState::Applied | FileState::Applicable))
        .count();
    match expect {
        Expect::Some => useful >= 1,
        Expect::One => useful == 1,
        Expect::Any => true,
    }
}

#[cfg(test)]
mod proptests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::values::{Glob, Pattern};

    fn rep(find: &str, with: &str, ws: Whitespace) -> ReplaceOp {
        ReplaceOp {
            files: vec!["*.php".parse::<Glob>().unwrap()],
            find: find.into(),
            with: with.into(),
            whitespace: ws,
            expect: Expect::Some,
        }
    }

    fn rx(pattern: &str, with: &str) -> RegexOp {
        RegexOp {
            files: vec!["*.php".parse::<Glob>().unwrap()],
            pattern: pattern.parse::<Pattern>().unwrap(),
            with: with.into(),
            expect: Expect::Some,
        }
    }

    const XSS: (&str, &str) = ("echo $q;", "echo htmlspecialchars($q);");

    #[test]
    fn replace_applicable_then_applied() {
        let op = rep(XSS.0, XSS.1, Whitespace::Loose);
        let out = replace(b"<?php\necho $q;\n", &op);
        assert_eq!(out.state, FileState::Applicable);
        let fixed = out.content.unwrap();
        assert_eq!(fixed, b"<?php\necho htmlspecialchars($q);\n");
        assert_eq!(
            replace(&fixed, &op).state,
            FileState::Applied,
            "re-planning after apply plans nothing"
        );
    }

    #[test]
    fn replace_conflict_when_neither_find_nor_result() {
        let op = rep(XSS.0, XSS.1, Whitespace::Loose);
        assert_eq!(
            replace(b"<?php print(esc($q));\n", &op).state,
            FileState::Conflict
        );
    }

    #[test]
    fn loose_whitespace_matches_rewrapped_text_across_lines() {
        let op = rep(
            "if ($a &&\n    $b) {",
            "if ($a && $b && $c) {",
            Whitespace::Loose,
        );
        let out = replace(b"x();\nif ($a\t&&   $b)\r\n  {\ny();", &op);
        assert_eq!(out.state, FileState::Applicable);
        assert_eq!(out.content.unwrap(), b"x();\nif ($a && $b && $c) {\ny();");
        // Exact whitespace does not match the rewrapped text.
        let exact = rep(
            "if ($a &&\n    $b) {",
            "if ($a && $b && $c) {",
            Whitespace::Exact,
        );
        assert_eq!(
            replace(b"if ($a\t&&   $b)\r\n  {", &exact).state,
            FileState::Conflict
        );
    }

    #[test]
    fn crlf_files_keep_their_line_endings() {
        let op = rep(XSS.0, XSS.1, Whitespace::Loose);
        let out = replace(b"<?php\r\necho $q;\r\necho 1;\r\n", &op);
        assert_eq!(
            out.content.unwrap(),
            b"<?php\r\necho htmlspecialchars($q);\r\necho 1;\r\n"
        );
    }

    #[test]
    fn files_without_trailing_newline_and_non_utf8_bytes() {
        let op = rep(XSS.0, XSS.1, Whitespace::Loose);
        let out = replace(b"\xff\xfe latin1 \xe9 echo $q;", &op);
        assert_eq!(out.state, FileState::Applicable);
        assert_eq!(
            out.content.unwrap(),
            b"\xff\xfe latin1 \xe9 echo htmlspecialchars($q);"
        );
    }

    #[test]
    fn binary_files_are_skipped() {
        let op = rep(XSS.0, XSS.1, Whitespace::Loose);
        assert_eq!(
            replace(b"\x89PNG\0\0echo $q;", &op).state,
            FileState::Binary
        );
        assert_eq!(
            regex(b"\0echo $q;", &rx("echo", "print")).state,
            FileState::Binary
        );
    }

    #[test]
    fn every_occurrence_is_replaced_and_partial_is_applicable() {
        let op = rep(XSS.0, XSS.1, Whitespace::Loose);
        let out = replace(b"echo htmlspecialchars($q);\necho $q;\n", &op);
        assert_eq!(out.state, FileState::Applicable);
        assert_eq!(
            out.content.unwrap(),
            b"echo htmlspecialchars($q);\necho htmlspecialchars($q);\n"
        );
    }

    #[test]
    fn a_result_containing_its_find_converges() {
        let op = rep("foo()", "check(); foo()", Whitespace::Exact);
        let once = replace(b"a; foo();", &op).content.unwrap();
        assert_eq!(once, b"a; check(); foo();");
        assert_eq!(replace(&once, &op).state, FileState::Applied);
    }

    #[test]
    fn a_result_with_unicode_whitespace_is_applied_once_there() {
        // Found by proptest: `\s` without Unicode missed the no-break
        // space of `with`, so the applied fix read as a conflict.
        let op = rep("b", "\u{a0}a", Whitespace::Loose);
        let once = replace(b"b ", &op).content.unwrap();
        assert_eq!(once, "\u{a0}a ".as_bytes());
        assert_eq!(replace(&once, &op).state, FileState::Applied);
        let nbsp = rep("a b", "c", Whitespace::Loose);
        assert_eq!(replace("a\u{a0}b".as_bytes(), &nbsp).content.unwrap(), b"c");
    }

    #[test]
    fn a_replacement_that_makes_a_new_match_settles_in_one_apply() {
        // Found by proptest: `b\t` → `\t` in `bb\t` gave `b\t`, which the
        // next plan would change again.
        let op = rep("b\t", "\t", Whitespace::Exact);
        let out = replace(b"bb\t", &op);
        assert_eq!(out.state, FileState::Applicable);
        let once = out.content.unwrap();
        assert_eq!(once, b"\t");
        assert_eq!(replace(&once, &op).state, FileState::Applied);
    }

    #[test]
    fn replace_with_is_literal_not_a_regex_template() {
        let op = rep("price", "$1 and ${2}", Whitespace::Exact);
        assert_eq!(replace(b"price", &op).content.unwrap(), b"$1 and ${2}");
    }

    #[test]
    fn regex_expands_groups_and_detects_applied() {
        let op = rx(
            r"session_set_cookie_params\(\s*(\d+)\s*\);",
            "session_set_cookie_params(['lifetime' => ${1}]);",
        );
        let out = regex(b"session_set_cookie_params( 3600 );", &op);
        assert_eq!(out.state, FileState::Applicable);
        let fixed = out.content.unwrap();
        assert_eq!(fixed, b"session_set_cookie_params(['lifetime' => 3600]);");
        assert_eq!(
            regex(&fixed, &op).state,
            FileState::Conflict,
            "no match: the planner decides applied from the ledger"
        );
        let same = rx("(abc)", "${1}");
        assert_eq!(regex(b"abc", &same).state, FileState::Applied);
    }

    #[test]
    fn write_and_add_states() {
        assert_eq!(write(None, b"x"), FileState::Applicable);
        assert_eq!(write(Some(b"y"), b"x"), FileState::Applicable);
        assert_eq!(write(Some(b"x"), b"x"), FileState::Applied);
        assert_eq!(add(None), FileState::Applicable);
        assert_eq!(add(Some(b"anything")), FileState::Applied);
    }

    #[test]
    fn expect_values() {
        use FileState::*;
        assert!(expect_met(Expect::Some, &[Conflict, Applicable]));
        assert!(expect_met(Expect::Some, &[Applied, Missing]));
        assert!(!expect_met(Expect::Some, &[Conflict, Missing, Binary]));
        assert!(!expect_met(Expect::Some, &[]));
        assert!(expect_met(Expect::One, &[Applicable, Conflict]));
        assert!(!expect_met(Expect::One, &[Applicable, Applied]));
        assert!(!expect_met(Expect::One, &[Missing]));
        assert!(expect_met(Expect::Any, &[]));
        assert!(expect_met(Expect::Any, &[Conflict]));
    }
}
