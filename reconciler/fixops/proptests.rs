//! Property tests of the text ops (proptest): a replace converges in one
//! application, whatever the file, the `find` and the `with`.
//!
//! The alphabet is small on purpose (a few letters, ASCII and Unicode
//! whitespace, punctuation), so that overlaps between `find`, `with` and the
//! file, where convergence bugs live, come up in most cases.

use proptest::prelude::*;

use super::*;
use crate::model::values::Glob;

fn text(max: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            Just('a'),
            Just('b'),
            Just(';'),
            Just(' '),
            Just('\t'),
            Just('\n'),
            Just('\u{a0}'),
            Just('\u{2003}'),
        ],
        0..max,
    )
    .prop_map(|cs| cs.into_iter().collect())
}

fn op(find: String, with: String, whitespace: Whitespace) -> ReplaceOp {
    ReplaceOp {
        files: vec!["*".parse::<Glob>().unwrap()],
        find,
        with,
        whitespace,
        expect: Expect::Some,
    }
}

/// Checks that `op` is idempotent on `content`: if it changes the file, the
/// result is "applied", so the next plan plans nothing for this file.
fn converges(content: &str, op: &ReplaceOp) -> Result<(), TestCaseError> {
    let out = replace(content.as_bytes(), op);
    if let Some(next) = out.content {
        prop_assert_eq!(out.state, FileState::Applicable);
        let again = replace(&next, op);
        prop_assert_eq!(
            again.state,
            FileState::Applied,
            "replacing {:?} by {:?} ({:?}) in {:?} gave {:?}, and again {:?}",
            op.find,
            op.with,
            op.whitespace,
            content,
            String::from_utf8_lossy(&next),
            again
                .content
                .map(|c| String::from_utf8_lossy(&c).into_owned())
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn loose_replace_is_idempotent(
        content in text(24),
        find in text(6).prop_filter("the loader refuses a blank find", |f| !f.trim().is_empty()),
        with in text(8),
    ) {
        converges(&content, &op(find, with, Whitespace::Loose))?;
    }

    #[test]
    fn exact_replace_is_idempotent(
        content in text(24),
        find in text(6).prop_filter("the loader refuses a blank find", |f| !f.trim().is_empty()),
        with in text(8),
    ) {
        converges(&content, &op(find, with, Whitespace::Exact))?;
    }

    /// The replacement lands in the file: a loose `find` written with
    /// other whitespace still matches the file, and the result is `with`.
    #[test]
    fn loose_find_matches_rewrapped_text(
        words in proptest::collection::vec("[a-w;$()]{1,4}", 1..5),
        file_spaces in proptest::collection::vec("[ \t\n]{1,3}", 4),
    ) {
        let find = words.join(" ");
        let mut file = String::from("x\n");
        for (i, w) in words.iter().enumerate() {
            if i > 0 {
                file.push_str(&file_spaces[i % file_spaces.len()]);
            }
            file.push_str(w);
        }
        file.push_str("\ny");
        let o = op(find, "REPLACED".into(), Whitespace::Loose);
        let out = replace(file.as_bytes(), &o);
        prop_assert_eq!(out.state, FileState::Applicable);
        prop_assert_eq!(out.content.unwrap(), b"x\nREPLACED\ny".to_vec());
    }
}
