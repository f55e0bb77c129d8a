//! Page checks (SPEC §2.1 `health.checks`): fetch a page, and judge its
//! status, the texts it must and must not contain, how alike its visible
//! text is to the same page before the change, and how alike it looks
//! (`visual`, screenshots). Masks remove what changes on every request
//! (tokens, dates) before comparing. Reads over HTTP and writes only the
//! screenshots; never panics on what a server sends.

use std::time::Duration;

use similar::{Algorithm, TextDiff};

use super::visual;
use crate::apply::hooks::HookEnv;
use crate::model::fleet::PageCheck;
use crate::store::SiteState;

/// The most of a body read: a page larger than this is not a page a
/// smoke check is meant for, and memory stays bounded.
const BODY_LIMIT: u64 = 8 * 1024 * 1024;

/// How long a text comparison may take: Myers' diff is quadratic at
/// worst, and a deadline makes it approximate rather than slow.
const DIFF_DEADLINE: Duration = Duration::from_secs(2);

/// The width text is laid out at: wide, so that lines break where the
/// page breaks them rather than where a terminal would.
const TEXT_WIDTH: usize = 400;

/// Why a page check failed, in the words the ledger and the verdict use.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PageError {
    /// The page could not be fetched.
    #[error("`{page}` did not answer: {detail}")]
    Unreachable {
        /// The page, as its path.
        page: String,
        /// Why, in the HTTP client's words.
        detail: String,
    },
    /// The page answered another status than expected.
    #[error("`{page}` answered {status}, expected {expected}")]
    Status {
        /// The page.
        page: String,
        /// What it answered.
        status: u16,
        /// What was expected (`200`, `2xx`).
        expected: String,
    },
    /// The body contains a text listed in `absent`.
    #[error("`{page}` answered {status} but contains `{text}`")]
    Present {
        /// The page.
        page: String,
        /// What it answered.
        status: u16,
        /// The text.
        text: String,
    },
    /// The body lacks a text listed in `contains`.
    #[error("`{page}` answered {status} but does not contain `{text}`")]
    Missing {
        /// The page.
        page: String,
        /// What it answered.
        status: u16,
        /// The text.
        text: String,
    },
    /// The visible text is less alike to before than `similar` asks.
    #[error("`{page}` is {}% similar to before, below {}%", percent(*.similarity, true), percent(*.least, false))]
    Dissimilar {
        /// The page.
        page: String,
        /// How alike it is (0..1).
        similarity: f64,
        /// How alike it must be.
        least: f64,
    },
    /// The browser could not render the page.
    #[error("`{page}` could not be rendered for `visual`: {detail}")]
    Unrendered {
        /// The page.
        page: String,
        /// Why.
        detail: String,
    },
    /// The screenshot is less alike to before than `visual` asks.
    #[error("`{page}` looks {}% like before, below {}% (the changed pixels are drawn in {})", percent(*.similarity, true), percent(*.least, false), .diff.display())]
    Unlike {
        /// The page.
        page: String,
        /// How alike it looks (0..1).
        similarity: f64,
        /// How alike it must look.
        least: f64,
        /// The picture of the changes.
        diff: std::path::PathBuf,
    },
}

/// What screenshots need: the site's environment to run the browser in,
/// and its state, which names where they go.
pub(super) struct Shots<'a> {
    pub(super) env: &'a HookEnv<'a>,
    pub(super) state: &'a SiteState,
}

/// A page as fetched.
pub(super) struct Fetched {
    /// Its HTTP status.
    pub(super) status: u16,
    /// Its body, at most [`BODY_LIMIT`].
    pub(super) body: Vec<u8>,
}

/// A page as it was before the change: what `similar` and `visual`
/// compare against.
#[derive(Debug, Clone)]
pub(super) struct Page {
    /// Its visible text, masked.
    text: String,
    /// Its screenshot, for a `visual` check.
    shot: Option<std::path::PathBuf>,
}

/// GETs `url` within `timeout`; `Err` is the client's reason.
pub(super) fn fetch(url: &str, timeout: Duration) -> Result<Fetched, String> {
    // ureq adds the timeout to `Instant::now()`, which panics on overflow;
    // the model caps every duration, and this keeps a caller's own one safe.
    let timeout = timeout.min(crate::model::values::Duration::MAX);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .build()
        .into();
    let mut resp = agent.get(url).call().map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp
        .body_mut()
        .with_config()
        .limit(BODY_LIMIT)
        .read_to_vec()
        .map_err(|e| e.to_string())?;
    Ok(Fetched { status, body })
}

/// The check before the change (check `n` of the site's): its result,
/// and the page kept as the baseline when it passed (a check that failed
/// before blames nothing, so it needs nothing to compare against).
pub(super) fn before(
    check: &PageCheck,
    n: usize,
    shots: &Shots<'_>,
    timeout: Duration,
) -> (Result<(), PageError>, Option<Page>) {
    let got = match fetch_and_judge(check, timeout) {
        Ok(got) => got,
        Err(e) => return (Err(e), None),
    };
    let shot = match check.visual {
        Some(_) => match render(check, n, "before", shots, timeout) {
            Ok(path) => Some(path),
            Err(e) => return (Err(e), None),
        },
        None => None,
    };
    let text = text(check, &got.body);
    (Ok(()), Some(Page { text, shot }))
}

/// The check after the change, against the page `before` (none: the
/// check failed before, so `similar` and `visual` are not judged).
pub(super) fn after(
    check: &PageCheck,
    n: usize,
    before: Option<&Page>,
    shots: &Shots<'_>,
    timeout: Duration,
) -> Result<(), PageError> {
    let got = fetch_and_judge(check, timeout)?;
    let Some(before) = before else {
        return Ok(());
    };
    if let Some(least) = check.similar {
        let similarity = similarity(&before.text, &text(check, &got.body));
        if similarity < least {
            return Err(PageError::Dissimilar {
                page: label(check),
                similarity,
                least,
            });
        }
    }
    if let (Some(least), Some(was)) = (check.visual, &before.shot) {
        let now = render(check, n, "after", shots, timeout)?;
        let diff = shots.state.health_shot(n, "diff");
        let similarity =
            visual::compare(was, &now, &diff).map_err(|detail| PageError::Unrendered {
                page: label(check),
                detail,
            })?;
        if similarity < least {
            return Err(PageError::Unlike {
                page: label(check),
                similarity,
                least,
                diff,
            });
        }
    }
    Ok(())
}

/// The check once, with nothing to compare against: status, `contains`
/// and `absent` only.
pub(super) fn judge_once(check: &PageCheck, timeout: Duration) -> Result<(), PageError> {
    fetch_and_judge(check, timeout).map(drop)
}

/// A screenshot of check `n`'s page at `stage`, by the browser the
/// preflight found (SPEC §6.7).
fn render(
    check: &PageCheck,
    n: usize,
    stage: &str,
    shots: &Shots<'_>,
    timeout: Duration,
) -> Result<std::path::PathBuf, PageError> {
    let unrendered = |detail| PageError::Unrendered {
        page: label(check),
        detail,
    };
    let browser = crate::observe::preflight::browser().map_err(unrendered)?;
    let out = shots.state.health_shot(n, stage);
    visual::screenshot(&browser, check.url.as_str(), &out, shots.env, timeout)
        .map_err(unrendered)?;
    Ok(out)
}

/// Fetches the page and judges its status, `contains` and `absent`.
fn fetch_and_judge(check: &PageCheck, timeout: Duration) -> Result<Fetched, PageError> {
    let page = || label(check);
    let got = fetch(check.url.as_str(), timeout).map_err(|detail| PageError::Unreachable {
        page: page(),
        detail,
    })?;
    let status = got.status;
    let expected_ok = match check.status {
        Some(want) => status == want,
        None => (200..300).contains(&status),
    };
    if !expected_ok {
        return Err(PageError::Status {
            page: page(),
            status,
            expected: check.status.map_or("2xx".to_owned(), |s| s.to_string()),
        });
    }
    let body = String::from_utf8_lossy(&got.body);
    if let Some(text) = check.absent.iter().find(|t| body.contains(t.as_str())) {
        return Err(PageError::Present {
            page: page(),
            status,
            text: text.clone(),
        });
    }
    if let Some(text) = check.contains.iter().find(|t| !body.contains(t.as_str())) {
        return Err(PageError::Missing {
            page: page(),
            status,
            text: text.clone(),
        });
    }
    Ok(got)
}

/// The page's visible text, as a reader sees it (no markup, scripts or
/// styles), with the masks removed from the body first, where they may
/// match markup (`name="csrf" value="…"`), and from the text after, where
/// they may match what entities and tags had split.
fn text(check: &PageCheck, body: &[u8]) -> String {
    let mut body = body.to_vec();
    for mask in &check.mask {
        body = mask.0.replace_all(&body, &b""[..]).into_owned();
    }
    // html2text takes time quadratic in how deep elements nest (ten
    // thousand nested <div>s take seconds, a hundred thousand minutes), so
    // a page nested deeper than any real one gets the plain reading; it
    // also refuses widths too narrow for a table's columns.
    let text = if nesting(&body) > MAX_NESTING {
        plain_text(&body)
    } else {
        html2text::config::plain_no_decorate()
            .string_from_read(&body[..], TEXT_WIDTH)
            .unwrap_or_else(|_| plain_text(&body))
    };
    let mut text = text.into_bytes();
    for mask in &check.mask {
        text = mask.0.replace_all(&text, &b""[..]).into_owned();
    }
    String::from_utf8_lossy(&text).into_owned()
}

/// The deepest nesting [`text`] gives to html2text: real pages stay well
/// under a hundred levels.
const MAX_NESTING: usize = 512;

/// Elements that never have an end tag, so they do not nest.
const VOID: [&[u8]; 14] = [
    b"area", b"base", b"br", b"col", b"embed", b"hr", b"img", b"input", b"link", b"meta", b"param",
    b"source", b"track", b"wbr",
];

/// How deep the elements of `body` nest, counted from its tags alone (an
/// upper bound: a `<p>` left open counts as still open).
fn nesting(body: &[u8]) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let mut i = 0;
    while let Some(at) = body[i..].iter().position(|&b| b == b'<') {
        let tag = &body[i + at + 1..];
        let end = tag.iter().position(|&b| b == b'>').unwrap_or(tag.len());
        let inner = &tag[..end];
        if let Some(rest) = inner.strip_prefix(b"/") {
            if rest.first().is_some_and(u8::is_ascii_alphabetic) {
                depth = depth.saturating_sub(1);
            }
        } else if inner.first().is_some_and(u8::is_ascii_alphabetic) && !inner.ends_with(b"/") {
            let name_len = inner
                .iter()
                .position(|b| !b.is_ascii_alphanumeric())
                .unwrap_or(inner.len());
            let name = inner[..name_len].to_ascii_lowercase();
            if !VOID.contains(&name.as_slice()) {
                depth += 1;
                deepest = deepest.max(depth);
            }
        }
        i += at + 1 + end.min(tag.len());
    }
    deepest
}

/// A page's text without a parser: tags dropped, and the contents of
/// `<script>` and `<style>`, which are not visible; entities stay as
/// written. Linear in the body.
fn plain_text(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        let Some(at) = text[i..].find('<') else {
            out.push_str(&text[i..]);
            break;
        };
        out.push_str(&text[i..i + at]);
        out.push(' ');
        let tag = i + at;
        let close = text[tag..].find('>').map_or(text.len(), |e| tag + e + 1);
        i = close;
        for hidden in ["script", "style"] {
            if lower[tag + 1..].starts_with(hidden) {
                let end_tag = format!("</{hidden}");
                i = lower[close..]
                    .find(&end_tag)
                    .map_or(text.len(), |e| close + e);
            }
        }
    }
    out
}

/// How alike two texts are, 0..1: the share of words the two have in
/// common in order (`similar`'s ratio, as Python's difflib computes it).
fn similarity(before: &str, after: &str) -> f64 {
    let diff = TextDiff::configure()
        .algorithm(Algorithm::Myers)
        .timeout(DIFF_DEADLINE)
        .diff_words(before, after);
    f64::from(diff.ratio())
}

/// A check's page as the reasons name it: its path and query, which say
/// which page far better than the whole URL.
fn label(check: &PageCheck) -> String {
    match url::Url::parse(check.url.as_str()) {
        Ok(u) => match u.query() {
            Some(q) => format!("{}?{q}", u.path()),
            None => u.path().to_owned(),
        },
        Err(_) => check.url.to_string(),
    }
}

/// `0.41` as `41`, `0.955` as `95.5`; `down` rounds down, so a
/// similarity just below the least one never reads as equal to it.
fn percent(ratio: f64, down: bool) -> String {
    let tenths = ratio * 1000.0;
    let tenths = if down { tenths.floor() } else { tenths.round() };
    let text = format!("{:.1}", tenths / 10.0);
    text.strip_suffix(".0").unwrap_or(&text).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(yaml: &str) -> PageCheck {
        serde_json::from_value(serde_json::from_str(yaml).unwrap()).unwrap()
    }

    #[test]
    fn masks_remove_tokens_from_markup_and_text() {
        let c = check(
            r#"{"url": "http://x/", "mask": ["name=\"csrf\" value=\"[^\"]*\"", "Request [0-9a-f]+"]}"#,
        );
        let a = text(
            &c,
            b"<html><body><form><input name=\"csrf\" value=\"abc\"></form><p>Request 1f2e</p><p>Welcome</p></body></html>",
        );
        let b = text(
            &c,
            b"<html><body><form><input name=\"csrf\" value=\"zzz\"></form><p>Request 99aa</p><p>Welcome</p></body></html>",
        );
        assert_eq!(a, b);
        assert!(a.contains("Welcome"), "{a}");
        assert!(!a.contains("Request 1f2e"), "{a}");
    }

    #[test]
    fn scripts_and_styles_are_not_visible_text() {
        let c = check(r#"{"url": "http://x/"}"#);
        let t = text(
            &c,
            b"<html><head><style>p{color:red}</style><script>var x=1;</script></head><body><p>Hello</p></body></html>",
        );
        assert!(t.contains("Hello"), "{t}");
        assert!(!t.contains("color") && !t.contains("var x"), "{t}");
    }

    #[test]
    fn pages_nested_deeper_than_any_real_one_are_read_plainly_and_quickly() {
        let c = check(r#"{"url": "http://x/"}"#);
        let n = 200_000;
        let body = format!(
            "<html><body>{}<script>var x;</script>Deep &amp; down{}</body></html>",
            "<div>".repeat(n),
            "</div>".repeat(n)
        );
        assert!(nesting(body.as_bytes()) > MAX_NESTING);
        let start = std::time::Instant::now();
        let t = text(&c, body.as_bytes());
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
        assert!(t.contains("Deep &amp; down") && !t.contains("var x"), "{t}");
        let real = b"<html><head><meta charset=utf-8><link rel=x></head><body><p>a<br>b<img src=x><input/></p></body></html>";
        assert_eq!(nesting(real), 3);
    }

    #[test]
    fn similarity_is_one_for_equal_texts_and_low_for_others() {
        assert_eq!(similarity("a b c", "a b c"), 1.0);
        assert!(similarity("Welcome to our shop, 12 products", "It works!") < 0.3);
        assert_eq!(similarity("", ""), 1.0);
    }

    #[test]
    fn percents_never_round_up_to_the_least() {
        assert_eq!(percent(0.41, true), "41");
        assert_eq!(percent(0.7999, true), "79.9");
        assert_eq!(percent(0.8, false), "80");
        assert_eq!(percent(0.955, false), "95.5");
    }

    #[test]
    fn labels_are_the_path_and_query() {
        assert_eq!(
            label(&check(r#"{"url": "http://127.0.0.1:8080/cart?x=1"}"#)),
            "/cart?x=1"
        );
        assert_eq!(label(&check(r#"{"url": "https://shop.example"}"#)), "/");
    }
}
