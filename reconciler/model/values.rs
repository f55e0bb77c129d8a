//! Scalar value types of the YAML files, each checked when it is parsed.
//!
//! A value that reaches the rest of the program is already valid: durations,
//! times and zones are parsed, versions are full semver, paths and globs are
//! relative and confined, and globs and regexes are compiled. Nothing here
//! touches the disk.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Implements serde (as a string) and a string schema for a type with
/// `FromStr<Err = String>` and `Display`.
macro_rules! string_value {
    ($ty:ty, $name:literal, $schema:tt) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = Cow::<'de, str>::deserialize(d)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
        impl JsonSchema for $ty {
            fn schema_name() -> Cow<'static, str> {
                $name.into()
            }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!($schema)
            }
        }
    };
}

/// A length of time written as `30s`, `48h`, `3d` or `1h30m` (`0` is zero).
/// A day is 24 hours. At most [`Duration::MAX`], so that adding one to any
/// instant of the clock cannot overflow (see [`Duration::after`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(pub std::time::Duration);

impl Duration {
    /// The longest duration any field or option takes: 100 years of
    /// 365.25 days (`36525d`). jiff itself parses up to about 20,000 years,
    /// and `released + min_release_age` then overflows its calendar (which
    /// ends in 9999), and `Instant::now() + timeout` could overflow std's;
    /// no soak time, ring delay, notice interval or timeout needs a
    /// century, so a longer one is a typo and refused where it is written.
    pub const MAX: std::time::Duration = std::time::Duration::from_secs(36_525 * 86_400);

    /// The instant this long after `at`, or the clock's last instant if
    /// that is later: a release dated near the year 9999 plus a ring delay
    /// is due "never", not a panic.
    pub fn after(self, at: jiff::Timestamp) -> jiff::Timestamp {
        saturating_after(at, self.0)
    }
}

/// `at + d`, saturating at [`jiff::Timestamp::MAX`] (jiff's `+` panics on
/// overflow). For std durations that did not come through [`Duration`],
/// such as the notice memory's interval.
pub fn saturating_after(at: jiff::Timestamp, d: std::time::Duration) -> jiff::Timestamp {
    let d = jiff::SignedDuration::try_from(d).unwrap_or(jiff::SignedDuration::MAX);
    at.saturating_add(d).unwrap_or(jiff::Timestamp::MAX)
}

impl FromStr for Duration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let hint = "hint: write a number and a unit, such as 30s, 15m, 48h or 3d";
        if s.trim() == "0" {
            return Ok(Self(std::time::Duration::ZERO));
        }
        let too_long = || {
            format!(
                "{s:?} is longer than 100 years, the longest duration sitekeeper takes (hint: write at most 36525d)"
            )
        };
        let span: jiff::Span = s.parse().map_err(|e: jiff::Error| {
            // jiff refuses more than about 20,000 years of a unit itself,
            // and numbers beyond 64 bits.
            let detail = e.to_string();
            let huge = [
                "not in the required range",
                "too big",
                "failed to set value",
            ]
            .iter()
            .any(|m| detail.contains(m));
            if s.trim_start().starts_with('-') {
                format!("{s:?} is negative; a duration cannot be")
            } else if huge {
                too_long()
            } else {
                format!("{s:?} is not a duration ({hint})")
            }
        })?;
        if span.get_years() != 0 || span.get_months() != 0 {
            return Err(format!(
                "{s:?} counts in years or months, which have no fixed length (hint: write days, such as 365d)"
            ));
        }
        let relative = jiff::SpanRelativeTo::days_are_24_hours();
        let signed = span
            .to_duration(relative)
            .map_err(|_| format!("{s:?} is not a duration ({hint})"))?;
        let d = std::time::Duration::try_from(signed)
            .map_err(|_| format!("{s:?} is negative; a duration cannot be"))?;
        if d > Self::MAX {
            return Err(too_long());
        }
        Ok(Self(d))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.as_secs();
        let units = [(86_400, "d"), (3_600, "h"), (60, "m"), (1, "s")];
        if secs == 0 {
            return f.write_str("0s");
        }
        let mut rest = secs;
        for (size, unit) in units {
            if rest >= size {
                write!(f, "{}{unit}", rest / size)?;
                rest %= size;
            }
        }
        Ok(())
    }
}

string_value!(Duration, "Duration", {
    "type": "string",
    "pattern": "^(0|([0-9]+ ?(d|h|m|s|ms))+)$",
    "description": "A duration such as 30s, 15m, 48h or 3d (a day is 24 hours), at most 36525d (100 years)."
});

/// A wall-clock time of day, `HH:MM`, for maintenance windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimeOfDay(pub jiff::civil::Time);

impl FromStr for TimeOfDay {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let err = || format!("{s:?} is not a time of day (hint: write HH:MM, such as 02:00)");
        let (h, m) = s.split_once(':').ok_or_else(err)?;
        if h.len() != 2 || m.len() != 2 {
            return Err(err());
        }
        let h: i8 = h.parse().map_err(|_| err())?;
        let m: i8 = m.parse().map_err(|_| err())?;
        jiff::civil::Time::new(h, m, 0, 0)
            .map(Self)
            .map_err(|_| err())
    }
}

impl fmt::Display for TimeOfDay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.0.hour(), self.0.minute())
    }
}

string_value!(TimeOfDay, "TimeOfDay", {
    "type": "string",
    "pattern": "^([01][0-9]|2[0-3]):[0-5][0-9]$",
    "description": "A time of day, HH:MM."
});

/// An IANA time zone name such as `UTC` or `Europe/Berlin`, checked against
/// the time zone database built into the binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeZoneName {
    name: String,
    zone: jiff::tz::TimeZone,
}

impl TimeZoneName {
    /// The zone, for converting instants to local time.
    pub fn zone(&self) -> &jiff::tz::TimeZone {
        &self.zone
    }
}

impl FromStr for TimeZoneName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let zone = jiff::tz::TimeZone::get(s).map_err(|_| {
            format!("{s:?} is not a known time zone (hint: use an IANA name such as UTC or Europe/Berlin)")
        })?;
        Ok(Self {
            name: s.to_owned(),
            zone,
        })
    }
}

impl fmt::Display for TimeZoneName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

string_value!(TimeZoneName, "TimeZoneName", {
    "type": "string",
    "description": "An IANA time zone name, such as UTC or Europe/Berlin."
});

/// A full semantic version (`4.2.16`, `5.1.0-beta.1`); `4.2` is refused.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version(pub semver::Version);

impl FromStr for Version {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        semver::Version::parse(s).map(Self).map_err(|e| {
            let parts = s.split(['-', '+']).next().unwrap_or(s).split('.').count();
            if parts < 3 {
                format!("{s:?} is not a full version (hint: write all three parts, such as {s}.0)")
            } else {
                format!("{s:?} is not a semantic version: {e}")
            }
        })
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

string_value!(Version, "Version", {
    "type": "string",
    "pattern": "^(0|[1-9][0-9]*)\\.(0|[1-9][0-9]*)\\.(0|[1-9][0-9]*)(-[0-9A-Za-z.-]+)?(\\+[0-9A-Za-z.-]+)?$",
    "description": "A full semantic version, such as 4.2.16 or 5.1.0-beta.1."
});

/// A semver requirement such as `^4.2` or `>=4.2.0, <4.2.16`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VersionReq(pub semver::VersionReq);

impl FromStr for VersionReq {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        semver::VersionReq::parse(s).map(Self).map_err(|e| {
            format!("{s:?} is not a version requirement: {e} (hint: write e.g. \"^4.2\" or \">=4.2.0, <4.3.0\")")
        })
    }
}

impl VersionReq {
    /// Whether `v` satisfies the requirement.
    pub fn matches(&self, v: &Version) -> bool {
        self.0.matches(&v.0)
    }
}

impl fmt::Display for VersionReq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

string_value!(VersionReq, "VersionReq", {
    "type": "string",
    "description": "A semver requirement, such as \"^4.2\" or \">=4.2.0, <4.2.16\"."
});

/// Checks that `s` is a path relative to a root that cannot climb out of it.
/// Shared by [`RelPath`] and [`Glob`], since a glob is a path with wildcards.
fn check_relative(s: &str, root: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("is empty; a path is needed here".to_owned());
    }
    if s.contains('\0') {
        return Err(format!("{s:?} contains a NUL byte"));
    }
    if s.contains('\\') {
        return Err(format!(
            "{s:?} contains a backslash (hint: separate directories with /)"
        ));
    }
    if s.starts_with('/') || s.starts_with('~') {
        return Err(format!(
            "{s:?} is absolute (hint: write it relative to {root})"
        ));
    }
    let trimmed = s.strip_suffix('/').unwrap_or(s);
    // Over-long paths are shown by their start: the rest is noise.
    let start = || s.chars().take(40).collect::<String>();
    if trimmed.len() > MAX_PATH_BYTES {
        return Err(format!(
            "\"{}…\" is {} bytes long, too long for a path (at most {MAX_PATH_BYTES})",
            start(),
            trimmed.len()
        ));
    }
    for part in trimmed.split('/') {
        match part {
            ".." => {
                return Err(format!(
                    "{s:?} climbs out of {root} with \"..\" (hint: write it relative to {root}, without ..)"
                ));
            }
            "" => return Err(format!("{s:?} has an empty directory name (//)")),
            "." => {
                return Err(format!(
                    "{s:?} has a . component (hint: write it without ./)"
                ));
            }
            _ if part.len() > MAX_NAME_BYTES => {
                return Err(format!(
                    "\"{}…\" has a name of {} bytes, too long for a file name (at most {MAX_NAME_BYTES})",
                    start(),
                    part.len()
                ));
            }
            _ if is_git_dir_name(part) => {
                return Err(format!(
                    "{s:?} names {part:?}, which git and sitekeeper reserve for a repository (hint: sitekeeper never writes into a .git directory)"
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// The longest file name Linux file systems take (`NAME_MAX`). Longer
/// ones fail only when written, half-way through a change.
pub const MAX_NAME_BYTES: usize = 255;
/// The longest path the kernel resolves (`PATH_MAX`, minus its NUL).
pub const MAX_PATH_BYTES: usize = 4095;

/// Whether `name` is `.git` as git itself would see it on some file system:
/// any case (HFS+, NTFS, APFS), with the trailing dots and spaces NTFS
/// drops, with the code points HFS+ ignores (U+200C and friends), or as its
/// NTFS short name `git~1`. Git refuses these in trees (CVE-2014-9390,
/// CVE-2019-1352), and so does libgit2 when sitekeeper records a point, so a
/// change naming one would fail half-way; it is refused as input instead.
pub fn is_git_dir_name(name: &str) -> bool {
    let ignorable = |c: char| matches!(c, '\u{200c}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{206a}'..='\u{206f}' | '\u{feff}');
    let folded: String = name
        .chars()
        .filter(|c| !ignorable(*c))
        .collect::<String>()
        .trim_end_matches(['.', ' '])
        .to_ascii_lowercase();
    folded == ".git" || folded == "git~1"
}

/// An instant written in RFC 3339, such as `2024-09-03T00:00:00Z`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub jiff::Timestamp);

impl FromStr for Timestamp {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        s.parse::<jiff::Timestamp>().map(Self).map_err(|e| {
            let why = match e.to_string() {
                // jiff's clock runs from the year -9999 to 9999-12-30.
                d if d.contains("overflow") => {
                    "is outside the range of times sitekeeper can handle (the years -9999 to 9999)"
                        .to_owned()
                }
                d if d.contains("is invalid, must be in range") || d.contains("day") => {
                    "is not a valid date".to_owned()
                }
                _ => "is not a time in RFC 3339 form".to_owned(),
            };
            format!("{s:?} {why} (hint: write a UTC time such as 2026-03-01T00:00:00Z)")
        })
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

string_value!(Timestamp, "Timestamp", {
    "type": "string",
    "format": "date-time",
    "description": "An RFC 3339 time, such as 2024-09-03T00:00:00Z."
});

/// A relative path confined to its root: no `..`, no absolute part, no NUL,
/// no backslash. Kept as written, minus a trailing `/`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RelPath(String);

impl RelPath {
    /// The path with `/` separators.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for RelPath {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        check_relative(s, "its root")?;
        Ok(Self(s.strip_suffix('/').unwrap_or(s).to_owned()))
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

string_value!(RelPath, "RelPath", {
    "type": "string",
    "minLength": 1,
    "pattern": "^(?!/)(?!.*(^|/)\\.\\.(/|$))[^\\\\\\u0000]+$",
    "description": "A path relative to its root, without .., backslashes or a leading /."
});

/// A path glob relative to a site root: `*` stays within one directory and
/// `**` crosses directories. Compiled when parsed.
#[derive(Debug, Clone)]
pub struct Glob {
    text: String,
    matcher: globset::GlobMatcher,
}

impl Glob {
    /// Whether the relative path `path` (with `/` separators) matches.
    pub fn is_match(&self, path: &str) -> bool {
        self.matcher.is_match(path)
    }

    /// The glob as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl PartialEq for Glob {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl FromStr for Glob {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        check_relative(s, "the site root")?;
        let glob = globset::GlobBuilder::new(s)
            .literal_separator(true)
            .backslash_escape(false)
            .empty_alternates(true)
            .build()
            .map_err(|e| format!("the glob `{s}` does not compile: {}", e.kind()))?;
        Ok(Self {
            text: s.to_owned(),
            matcher: glob.compile_matcher(),
        })
    }
}

impl fmt::Display for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

string_value!(Glob, "Glob", {
    "type": "string",
    "minLength": 1,
    "description": "A glob relative to the site root: * stays in one directory, ** crosses directories."
});

/// A regular expression, compiled when parsed. Rust's `regex` runs in linear
/// time, so no pattern can be catastrophic; the size limit caps memory.
#[derive(Debug, Clone)]
pub struct Pattern(pub regex::bytes::Regex);

/// The compiled-size cap for a fix's regex (the crate's default is 10 MiB).
const REGEX_SIZE_LIMIT: usize = 1 << 20;

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

impl FromStr for Pattern {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        regex::bytes::RegexBuilder::new(s)
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map(Self)
            .map_err(|e| {
                let detail = e.to_string();
                let last = detail.lines().last().unwrap_or("").trim();
                let last = last.strip_prefix("error: ").unwrap_or(last);
                let hint = if last.contains("look-around") {
                    "capture the surrounding text in a group and put it back with ${1} in `with`"
                } else if last.contains("unclosed group") {
                    "close every ( with ), or write \\( for a literal parenthesis"
                } else if last.contains("exceeds size limit") {
                    "the compiled pattern is over 1 MiB; make it smaller or split it into several ops"
                } else {
                    "patterns use Rust regex syntax: https://docs.rs/regex/#syntax"
                };
                format!("the regex `{s}` does not compile: {last} (hint: {hint})")
            })
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_str())
    }
}

string_value!(Pattern, "Pattern", {
    "type": "string",
    "description": "A regular expression in Rust regex syntax (no look-around or backreferences)."
});

/// A `sha256:<64 hex>` digest, as printed by `plan`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest(String);

impl Digest {
    /// The digest as written, with its `sha256:` prefix.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Digest {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.strip_prefix("sha256:") {
            Some(hex) if is_lower_hex(hex, 64) => Ok(Self(s.to_owned())),
            _ => Err(format!(
                "{s:?} is not a plan digest (hint: copy it from `sitekeeper plan`; it reads sha256: and 64 hex digits)"
            )),
        }
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

string_value!(Digest, "Digest", {
    "type": "string",
    "pattern": "^sha256:[0-9a-f]{64}$"
});

/// A bare SHA-256 checksum in hex, for release archives.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Sha256Hex(String);

impl Sha256Hex {
    /// The lower-case hex text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Sha256Hex {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let lower = s.to_ascii_lowercase();
        if is_lower_hex(&lower, 64) {
            Ok(Self(lower))
        } else {
            Err(format!(
                "{s:?} is not a SHA-256 checksum (hint: 64 hex digits, as printed by sha256sum)"
            ))
        }
    }
}

impl fmt::Display for Sha256Hex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

string_value!(Sha256Hex, "Sha256Hex", {
    "type": "string",
    "pattern": "^[0-9a-fA-F]{64}$"
});

fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A site name: `[a-z0-9][a-z0-9-]*`, at most 63 characters, so that it is
/// safe as a directory name under the state dir, and none of
/// [`RESERVED_SITE_NAMES`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SiteName(String);

impl SiteName {
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The state dir's shared entries (`statedir::StateDir` names them): a
/// site of one of these names would keep its state inside them.
pub const RESERVED_SITE_NAMES: [&str; 4] = ["cache", "locks", "outbox", "trust"];

impl FromStr for SiteName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if RESERVED_SITE_NAMES.contains(&s) {
            return Err(format!(
                "{s:?} cannot name a site: the state dir keeps its own {s}/ beside the sites' directories (hint: choose another name; {} are reserved)",
                RESERVED_SITE_NAMES.join(", ")
            ));
        }
        let mut bytes = s.bytes();
        let first_ok = bytes
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        let rest_ok = bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if first_ok && rest_ok && s.len() <= 63 {
            Ok(Self(s.to_owned()))
        } else {
            Err(format!(
                "{s:?} is not a valid site name (hint: lower-case letters, digits and -, starting with a letter or digit, at most 63 characters)"
            ))
        }
    }
}

impl fmt::Display for SiteName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

string_value!(SiteName, "SiteName", {
    "type": "string",
    "pattern": "^[a-z0-9][a-z0-9-]{0,62}$"
});

/// A command line as a list of arguments, run without a shell.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(transparent)]
pub struct Command(#[schemars(length(min = 1))] pub Vec<String>);

impl<'de> Deserialize<'de> for Command {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let argv = Vec::<String>::deserialize(d)?;
        match argv.first() {
            Some(program) if !program.is_empty() => Ok(Self(argv)),
            _ => Err(serde::de::Error::custom(
                "a command needs a program to run (hint: write it as a list, such as [\"php\", \"-l\", \"index.php\"])",
            )),
        }
    }
}

/// An `http://` or `https://` URL for a health check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl(String);

impl HttpUrl {
    /// The URL as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for HttpUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let rest = s
            .strip_prefix("http://")
            .or_else(|| s.strip_prefix("https://"));
        match rest {
            Some(rest)
                if !rest.is_empty()
                    && !rest.starts_with('/')
                    && !s.contains(char::is_whitespace) =>
            {
                Ok(Self(s.to_owned()))
            }
            _ => Err(format!(
                "{s:?} is not an http(s) URL (hint: such as http://127.0.0.1:8080/healthz)"
            )),
        }
    }
}

impl fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

string_value!(HttpUrl, "HttpUrl", {
    "type": "string",
    "format": "uri",
    "pattern": "^https?://"
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_days_as_24_hours() {
        let d: Duration = "3d".parse().unwrap();
        assert_eq!(d.0.as_secs(), 3 * 86_400);
        assert_eq!("48h".parse::<Duration>().unwrap().0.as_secs(), 48 * 3_600);
        assert_eq!("1h30m".parse::<Duration>().unwrap().0.as_secs(), 5_400);
        assert_eq!("0".parse::<Duration>().unwrap().0.as_secs(), 0);
        assert_eq!("90m".parse::<Duration>().unwrap().to_string(), "1h30m");
        assert!("soon".parse::<Duration>().is_err());
        assert!("-3d".parse::<Duration>().is_err());
    }

    #[test]
    fn durations_longer_than_a_century_are_refused_in_words() {
        assert_eq!("36525d".parse::<Duration>().unwrap().0, Duration::MAX);
        // Over the cap, over jiff's own limit for a unit, over i64, and
        // the sum of units each within jiff's limits.
        for long in [
            "36526d",
            "7000000d",
            "7304485d",
            "1000000000d",
            "99999999999999999999s",
            "9223372036854775807s",
            "7304484d 175307616h",
            "876601h",
        ] {
            let err = long.parse::<Duration>().unwrap_err();
            assert!(err.contains("longer than 100 years"), "{long}: {err}");
            assert!(err.contains("hint: write at most 36525d"), "{long}: {err}");
        }
        for negative in ["-3d", "-7304485d", "3d ago"] {
            let err = negative.parse::<Duration>().unwrap_err();
            assert!(err.contains("negative"), "{negative}: {err}");
        }
        let err = "1y".parse::<Duration>().unwrap_err();
        assert!(err.contains("years or months"), "{err}");
    }

    #[test]
    fn adding_a_duration_saturates_at_the_end_of_the_clock() {
        let last: Timestamp = "9999-12-30T22:00:00Z".parse().unwrap();
        let max = Duration(Duration::MAX);
        assert_eq!(max.after(last.0), jiff::Timestamp::MAX);
        assert_eq!(
            saturating_after(jiff::Timestamp::MAX, std::time::Duration::MAX),
            jiff::Timestamp::MAX
        );
        let first: Timestamp = "-009999-01-02T01:59:59Z".parse().unwrap();
        assert!(max.after(first.0) > first.0);
        let day: Duration = "1d".parse().unwrap();
        let t: Timestamp = "2026-03-01T00:00:00Z".parse().unwrap();
        assert_eq!(day.after(t.0).to_string(), "2026-03-02T00:00:00Z");
    }

    #[test]
    fn times_beyond_the_clock_are_refused_in_words() {
        for far in ["9999-12-31T00:00:00Z", "-009999-01-01T00:00:00Z"] {
            let err = far.parse::<Timestamp>().unwrap_err();
            assert!(err.contains("outside the range of times"), "{far}: {err}");
        }
        let err = "2026-02-30T00:00:00Z".parse::<Timestamp>().unwrap_err();
        assert!(err.contains("not a valid date"), "{err}");
    }

    #[test]
    fn versions_must_be_full() {
        assert!("4.2.16".parse::<Version>().is_ok());
        assert!("5.1.0-beta.1".parse::<Version>().is_ok());
        let err = "4.2".parse::<Version>().unwrap_err();
        assert!(err.contains("not a full version"), "{err}");
    }

    #[test]
    fn relative_paths_cannot_climb() {
        for bad in [
            "../x",
            "a/../../b",
            "/etc/passwd",
            "a\\b",
            "a\0b",
            "",
            "a//b",
            "~/x",
        ] {
            assert!(bad.parse::<RelPath>().is_err(), "{bad:?} should be refused");
            assert!(
                bad.parse::<Glob>().is_err(),
                "{bad:?} should be refused as a glob"
            );
        }
        assert_eq!(
            "releases/4.2.16/".parse::<RelPath>().unwrap().as_str(),
            "releases/4.2.16"
        );
    }

    #[test]
    fn dot_components_over_long_names_and_git_look_alikes_are_refused() {
        let long_name = format!("lib/{}.php", "a".repeat(252));
        let long_path = vec!["d".repeat(200); 21].join("/");
        for bad in [
            "lib/./x.php",
            "./x.php",
            long_name.as_str(),
            long_path.as_str(),
            ".git/config",
            "lib/.GIT/config",
            ".git./hooks/x",
            ".git /hooks/x",
            ".g\u{200c}it/hooks/x",
            "\u{feff}.git/hooks/x",
            "GIT~1/hooks/x",
        ] {
            assert!(
                bad.parse::<RelPath>().is_err(),
                "{bad:.60?} should be refused"
            );
            assert!(bad.parse::<Glob>().is_err(), "{bad:.60?} as a glob");
        }
        // Near misses are ordinary names.
        let longest = format!("lib/{}", "a".repeat(255));
        for good in [
            ".gitignore",
            "lib/.github/x",
            "git/x",
            ".gitx/y",
            longest.as_str(),
        ] {
            assert!(
                good.parse::<RelPath>().is_ok(),
                "{good:.60?} should be accepted"
            );
        }
    }

    #[test]
    fn star_stays_in_one_directory_and_double_star_crosses() {
        let g: Glob = "app/search/*.php".parse().unwrap();
        assert!(g.is_match("app/search/results.php"));
        assert!(!g.is_match("app/search/deep/results.php"));
        let g: Glob = "**/*.php".parse().unwrap();
        assert!(g.is_match("index.php"));
        assert!(g.is_match("a/b/c.php"));
        let g: Glob = "themes/*/search.php".parse().unwrap();
        assert!(g.is_match("themes/custom/search.php"));
    }

    #[test]
    fn windows_and_zones_parse() {
        for (text, hour, minute) in [("02:00", 2, 0), ("00:00", 0, 0), ("23:59", 23, 59)] {
            let t: TimeOfDay = text.parse().unwrap();
            assert_eq!(t.0, jiff::civil::Time::new(hour, minute, 0, 0).unwrap());
            assert_eq!(t.to_string(), text);
        }
        for bad in ["24:00", "2:00", "12:60", "12:5", "ab:cd", "1200"] {
            let err = bad.parse::<TimeOfDay>().unwrap_err();
            assert!(err.contains("write HH:MM"), "{bad:?}: {err}");
        }

        // The zone is the named one: Berlin is an hour ahead of UTC in
        // winter and two in summer.
        let berlin: TimeZoneName = "Europe/Berlin".parse().unwrap();
        assert_eq!(berlin.to_string(), "Europe/Berlin");
        assert_eq!(berlin.zone().iana_name(), Some("Europe/Berlin"));
        for (instant, hours) in [("2024-01-15T12:00:00Z", 1), ("2024-07-15T12:00:00Z", 2)] {
            let instant: jiff::Timestamp = instant.parse().unwrap();
            assert_eq!(
                berlin.zone().to_offset(instant),
                jiff::tz::Offset::constant(hours),
                "{instant}"
            );
        }
        let utc: TimeZoneName = "UTC".parse().unwrap();
        assert_eq!(
            utc.zone().to_offset(jiff::Timestamp::UNIX_EPOCH),
            jiff::tz::Offset::UTC
        );
        let err = "Mars/Olympus".parse::<TimeZoneName>().unwrap_err();
        assert!(err.contains("not a known time zone"), "{err}");
    }

    #[test]
    fn site_names_are_dns_like() {
        assert!("shop-eu".parse::<SiteName>().is_ok());
        for bad in [
            "Shop", "-a", "a_b", "", "a.b", "outbox", "cache", "locks", "trust",
        ] {
            assert!(bad.parse::<SiteName>().is_err(), "{bad:?}");
        }
    }
}
