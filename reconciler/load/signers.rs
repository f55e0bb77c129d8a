//! The allowed-signers file (git's `gpg.ssh.allowedSignersFile`, in the
//! ALLOWED SIGNERS format of ssh-keygen(1)) and the check of a commit's SSH
//! signature against it (SPEC §7).
//!
//! A signature counts only when its key equals a key listed here, that
//! line's options admit namespace `git` at the commit's time, and the
//! *listed* key verifies it: the key a signature carries is never trusted
//! by itself. Pure: text and bytes in, values out; this file does no I/O.
//!
//! Lines are `principals [options] keytype base64-key [comment]`. The
//! options understood are `namespaces="…"`, `valid-after="…"` and
//! `valid-before="…"`. `cert-authority` lines are refused with a located
//! error rather than skipped: sitekeeper checks plain keys only, and a
//! silently ignored line would make commits that its author believes
//! trusted fail for no visible reason.

use ssh_key::{Algorithm, EcdsaCurve, HashAlg, PublicKey, SshSig};

/// The SSH signature namespace git signs commits in.
pub const NAMESPACE: &str = "git";

/// A parsed allowed-signers file.
#[derive(Debug, Clone, Default)]
pub struct AllowedSigners {
    /// Its keys, in file order.
    pub entries: Vec<Signer>,
}

/// One line of the file.
#[derive(Debug, Clone)]
pub struct Signer {
    /// 1-based line number.
    pub line: usize,
    /// The principals, as written (an ssh pattern list such as `alice@example.com`).
    pub principals: String,
    /// `namespaces="…"`: the namespaces (a pattern list) the key may sign in.
    pub namespaces: Option<String>,
    /// `valid-after="…"`.
    pub valid_after: Option<jiff::Timestamp>,
    /// `valid-before="…"`.
    pub valid_before: Option<jiff::Timestamp>,
    /// The key.
    pub key: PublicKey,
}

/// A problem on one line of the file (1-based line and column).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{line}:{column}: {message}")]
pub struct LineError {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// What is wrong, possibly ending in `(hint: …)`.
    pub message: String,
}

/// Who signed a commit, once verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The principals of the listed line whose key verified it.
    pub principals: String,
    /// That key's SHA-256 fingerprint (`SHA256:…`).
    pub fingerprint: String,
    /// The line of the file that listed it.
    pub line: usize,
}

/// Key types whose signatures this build can verify.
const SUPPORTED: &[(&str, Algorithm)] = &[
    ("ssh-ed25519", Algorithm::Ed25519),
    ("sk-ssh-ed25519@openssh.com", Algorithm::SkEd25519),
    (
        "ecdsa-sha2-nistp256",
        Algorithm::Ecdsa {
            curve: EcdsaCurve::NistP256,
        },
    ),
    (
        "sk-ecdsa-sha2-nistp256@openssh.com",
        Algorithm::SkEcdsaSha2NistP256,
    ),
    ("ssh-rsa", Algorithm::Rsa { hash: None }),
];

const KEY_TYPES_HINT: &str =
    "the key types are ssh-ed25519, ecdsa-sha2-nistp256, ssh-rsa and their sk- variants";

const OPTIONS_HINT: &str =
    "the options are namespaces=\"git\", valid-after=\"YYYYMMDD\" and valid-before=\"YYYYMMDD\"";

/// Parses the whole file: every good line, and every bad one located.
pub fn parse(text: &str) -> (AllowedSigners, Vec<LineError>) {
    let mut signers = AllowedSigners::default();
    let mut errors = Vec::new();
    for (i, raw) in text.split('\n').enumerate() {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        match parse_line(line) {
            Ok(None) => {}
            Ok(Some(mut signer)) => {
                signer.line = i + 1;
                signers.entries.push(signer);
            }
            Err((at, message)) => errors.push(LineError {
                line: i + 1,
                column: line[..at].chars().count() + 1,
                message,
            }),
        }
    }
    (signers, errors)
}

/// A problem at a byte offset of the line.
type LineResult<T> = Result<T, (usize, String)>;

fn skip_ws(line: &str, mut pos: usize) -> usize {
    let bytes = line.as_bytes();
    while pos < bytes.len() && (bytes[pos] == b' ' || bytes[pos] == b'\t') {
        pos += 1;
    }
    pos
}

/// The end of the word at `pos`: the next space or tab outside double
/// quotes (where `\"` is a literal quote), as OpenSSH reads options.
fn word_end(line: &str, start: usize) -> LineResult<usize> {
    let bytes = line.as_bytes();
    let mut pos = start;
    let mut quote = None;
    while pos < bytes.len() {
        match bytes[pos] {
            b'\\' if quote.is_some() && bytes.get(pos + 1) == Some(&b'"') => pos += 1,
            b'"' if quote.is_some() => quote = None,
            b'"' => quote = Some(pos),
            b' ' | b'\t' if quote.is_none() => break,
            _ => {}
        }
        pos += 1;
    }
    match quote {
        Some(at) => Err((
            at,
            "this quote is never closed (hint: close it with \" before the next space)".into(),
        )),
        None => Ok(pos),
    }
}

fn parse_line(line: &str) -> LineResult<Option<Signer>> {
    let start = skip_ws(line, 0);
    if start == line.len() || line[start..].starts_with('#') {
        return Ok(None);
    }
    let end = word_end(line, start)?;
    let principals = unquote(&line[start..end]);
    if principals.is_empty() {
        return Err((start, "the principals are empty".into()));
    }
    let mut pos = skip_ws(line, end);
    if pos == line.len() {
        return Err((
            pos,
            "a key is missing after the principals (hint: a line is `principals [options] keytype base64-key`)".into(),
        ));
    }
    let mut options = Options::default();
    let end = word_end(line, pos)?;
    if !looks_like_key_type(&line[pos..end]) {
        options = parse_options(line, pos, end)?;
        pos = skip_ws(line, end);
        if pos == line.len() {
            return Err((
                pos,
                "a key is missing after the options (hint: a line is `principals [options] keytype base64-key`)".into(),
            ));
        }
    }
    let type_end = word_end(line, pos)?;
    let key_type = &line[pos..type_end];
    let Some(algorithm) = SUPPORTED
        .iter()
        .find(|(name, _)| *name == key_type)
        .map(|(_, a)| a.clone())
    else {
        return Err((
            pos,
            format!(
                "{key_type:?} is not a key type sitekeeper can verify (hint: {KEY_TYPES_HINT})"
            ),
        ));
    };
    let data_start = skip_ws(line, type_end);
    let data_end = word_end(line, data_start)?;
    if data_start == data_end {
        return Err((
            data_start,
            format!("the {key_type} key is missing after its type"),
        ));
    }
    let key = PublicKey::from_openssh(&format!("{key_type} {}", &line[data_start..data_end]))
        .map_err(|e| {
            (
                data_start,
                match e {
                    ssh_key::Error::AlgorithmUnknown => {
                        format!("this key is not a {key_type} key")
                    }
                    // ssh-key's own words ("invalid Base64 length") mean
                    // nothing to a site owner; what to check does.
                    _ => format!(
                        "this is not a valid {key_type} key: its base64 text is damaged or cut short"
                    ),
                },
            )
        })?;
    if key.algorithm() != algorithm {
        return Err((data_start, format!("this key is not a {key_type} key")));
    }
    Ok(Some(Signer {
        line: 0,
        principals,
        namespaces: options.namespaces,
        valid_after: options.valid_after,
        valid_before: options.valid_before,
        // The comment, if any, is free text and ignored.
        key: PublicKey::new(key.key_data().clone(), ""),
    }))
}

/// The options of one line.
#[derive(Default)]
struct Options {
    namespaces: Option<String>,
    valid_after: Option<jiff::Timestamp>,
    valid_before: Option<jiff::Timestamp>,
}

/// Whether a word is meant as a key type rather than options (a typo in a
/// key type should be called that, not an unknown option).
fn looks_like_key_type(word: &str) -> bool {
    !word.contains('=')
        && !word.eq_ignore_ascii_case("cert-authority")
        && (word.starts_with("ssh-") || word.starts_with("ecdsa-") || word.starts_with("sk-"))
}

/// Parses `opt,opt="value",…` between `start` and `end`.
fn parse_options(line: &str, start: usize, end: usize) -> LineResult<Options> {
    let mut signer = Options::default();
    let bytes = line.as_bytes();
    let mut pos = start;
    while pos < end {
        // One option: up to the next comma outside quotes.
        let mut stop = pos;
        let mut quoted = false;
        while stop < end {
            match bytes[stop] {
                b'\\' if quoted && bytes.get(stop + 1) == Some(&b'"') => stop += 1,
                b'"' => quoted = !quoted,
                b',' if !quoted => break,
                _ => {}
            }
            stop += 1;
        }
        let option = &line[pos..stop];
        let (name, value) = match option.split_once('=') {
            Some((n, v)) => (n, Some((v, pos + n.len() + 1))),
            None => (option, None),
        };
        let lower = name.to_ascii_lowercase();
        match (lower.as_str(), value) {
            ("cert-authority", _) => {
                return Err((
                    pos,
                    "cert-authority lines are not supported: sitekeeper checks signatures against listed keys only (hint: list each signer's own public key instead)".into(),
                ));
            }
            ("namespaces" | "valid-after" | "valid-before", None) => {
                return Err((pos, format!("{name} needs a value, as {name}=\"…\"")));
            }
            ("namespaces" | "valid-after" | "valid-before", Some((value, at))) => {
                let Some(inner) = value
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .filter(|_| value.len() >= 2)
                else {
                    return Err((
                        at,
                        format!("the value of {name} must be in double quotes, as {name}=\"…\""),
                    ));
                };
                let inner = inner.replace("\\\"", "\"");
                let twice = || (pos, format!("{name} is given twice on this line"));
                match lower.as_str() {
                    "namespaces" => {
                        if signer.namespaces.is_some() {
                            return Err(twice());
                        }
                        signer.namespaces = Some(inner);
                    }
                    "valid-after" => {
                        if signer.valid_after.is_some() {
                            return Err(twice());
                        }
                        signer.valid_after = Some(parse_time(&inner).map_err(|m| (at, m))?);
                    }
                    _ => {
                        if signer.valid_before.is_some() {
                            return Err(twice());
                        }
                        let before = parse_time(&inner).map_err(|m| (at, m))?;
                        if signer.valid_after.is_some_and(|after| before <= after) {
                            return Err((
                                at,
                                "valid-before is not after valid-after, so the key is never valid"
                                    .into(),
                            ));
                        }
                        signer.valid_before = Some(before);
                    }
                }
            }
            _ => {
                return Err((
                    pos,
                    format!(
                        "{name:?} is not an option of an allowed signers file (hint: {OPTIONS_HINT})"
                    ),
                ));
            }
        }
        pos = stop + 1;
    }
    Ok(signer)
}

/// `"a b"` → `a b`; anything else as written.
fn unquote(word: &str) -> String {
    match word.strip_prefix('"').and_then(|w| w.strip_suffix('"')) {
        Some(inner) if word.len() >= 2 => inner.replace("\\\"", "\""),
        _ => word.to_owned(),
    }
}

/// ssh-keygen's times: `YYYYMMDD`, `YYYYMMDDHHMM` or `YYYYMMDDHHMMSS`, in
/// UTC with a trailing `Z`, else in the system's local time zone (as
/// ssh-keygen, and so `git verify-commit`, reads them).
fn parse_time(text: &str) -> Result<jiff::Timestamp, String> {
    let bad = || {
        format!(
            "{text:?} is not a time (hint: write YYYYMMDD, YYYYMMDDHHMM or YYYYMMDDHHMMSS, with a trailing Z for UTC)"
        )
    };
    let (digits, utc) = match text.strip_suffix(['Z', 'z']) {
        Some(d) => (d, true),
        None => (text, false),
    };
    if !digits.bytes().all(|b| b.is_ascii_digit()) || ![8, 12, 14].contains(&digits.len()) {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| digits.get(r).and_then(|s| s.parse::<i16>().ok());
    let year = num(0..4).ok_or_else(bad)?;
    let month = num(4..6).ok_or_else(bad)? as i8;
    let day = num(6..8).ok_or_else(bad)? as i8;
    let hour = num(8..10).unwrap_or(0) as i8;
    let minute = num(10..12).unwrap_or(0) as i8;
    let second = num(12..14).unwrap_or(0) as i8;
    let civil =
        jiff::civil::DateTime::new(year, month, day, hour, minute, second, 0).map_err(|_| bad())?;
    let zone = if utc {
        jiff::tz::TimeZone::UTC
    } else {
        jiff::tz::TimeZone::system()
    };
    civil
        .to_zoned(zone)
        .map(|z| z.timestamp())
        .map_err(|_| bad())
}

/// ssh's pattern lists (ssh_config(5) PATTERNS): comma-separated patterns
/// with `*` and `?`; a match of a `!`-negated pattern refuses outright.
pub fn match_pattern_list(name: &str, list: &str) -> bool {
    let mut matched = false;
    for pattern in list.split(',') {
        let pattern = pattern.trim();
        if let Some(negated) = pattern.strip_prefix('!') {
            if match_pattern(name, negated) {
                return false;
            }
        } else if match_pattern(name, pattern) {
            matched = true;
        }
    }
    matched
}

fn match_pattern(name: &str, pattern: &str) -> bool {
    let (n, p): (Vec<char>, Vec<char>) = (name.chars().collect(), pattern.chars().collect());
    // Iterative wildcard matching with one backtrack point for `*`.
    let (mut i, mut j) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while i < n.len() {
        if j < p.len() && (p[j] == '?' || p[j] == n[i]) {
            i += 1;
            j += 1;
        } else if j < p.len() && p[j] == '*' {
            star = Some((j, i));
            j += 1;
        } else if let Some((sj, si)) = star {
            j = sj + 1;
            i = si + 1;
            star = Some((sj, si + 1));
        } else {
            return false;
        }
    }
    while j < p.len() && p[j] == '*' {
        j += 1;
    }
    j == p.len()
}

/// Checks an armored SSH signature over `signed`, made at `time` (seconds
/// since the epoch, the committer time), against `signers`. The error is a
/// sentence about the signature, for a person.
pub fn verify(
    signature: &[u8],
    signed: &[u8],
    time: i64,
    signers: &AllowedSigners,
) -> Result<Verified, String> {
    let text = std::str::from_utf8(signature)
        .map_err(|_| "its signature is not an SSH signature".to_owned())?;
    if !text.contains("-----BEGIN SSH SIGNATURE-----") {
        return Err(if text.contains("PGP SIGNATURE") {
            "it is signed with OpenPGP, not with an SSH key (hint: sign with git -c gpg.format=ssh)"
                .to_owned()
        } else {
            "its signature is not an SSH signature".to_owned()
        });
    }
    let sig = SshSig::from_pem(text.trim())
        .map_err(|e| format!("its SSH signature cannot be read: {e}"))?;
    if sig.namespace() != NAMESPACE {
        return Err(format!(
            "it is signed for the namespace {:?}, not {NAMESPACE:?}",
            sig.namespace()
        ));
    }
    let fingerprint = sig.public_key().fingerprint(HashAlg::Sha256).to_string();
    let listed: Vec<&Signer> = signers
        .entries
        .iter()
        .filter(|s| s.key.key_data() == sig.public_key())
        .collect();
    if listed.is_empty() {
        return Err(format!(
            "it is signed by the key {fingerprint}, which the allowed signers file does not list"
        ));
    }
    let at = jiff::Timestamp::from_second(time).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    let mut refused = None;
    for signer in listed {
        let who = format!("{} (line {})", signer.principals, signer.line);
        if let Some(ns) = &signer.namespaces
            && !match_pattern_list(NAMESPACE, ns)
        {
            refused.get_or_insert(format!(
                "it is signed by {who}, whose key may sign only in the namespaces {ns:?}, not {NAMESPACE:?}"
            ));
            continue;
        }
        if let Some(after) = signer.valid_after
            && at < after
        {
            refused.get_or_insert(format!(
                "it is signed by {who}, whose key is valid only from {after}, but the commit was made at {at}"
            ));
            continue;
        }
        if let Some(before) = signer.valid_before
            && at > before
        {
            refused.get_or_insert(format!(
                "it is signed by {who}, whose key was valid only until {before}, but the commit was made at {at}"
            ));
            continue;
        }
        // The listed key verifies; the signature's own copy of it only
        // selected which line to try.
        return match signer.key.verify(NAMESPACE, signed, &sig) {
            Ok(()) => Ok(Verified {
                principals: signer.principals.clone(),
                fingerprint,
                line: signer.line,
            }),
            Err(_) => Err(format!(
                "its signature by {} ({fingerprint}) does not match its content: the commit was changed after it was signed",
                signer.principals
            )),
        };
    }
    Err(refused.unwrap_or_else(|| "no listed key verifies it".to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ssh_key::PrivateKey;
    use ssh_key::private::Ed25519Keypair;

    fn key(seed: u8) -> PrivateKey {
        PrivateKey::from(Ed25519Keypair::from_seed(&[seed; 32]))
    }

    fn public_line(seed: u8) -> String {
        key(seed).public_key().to_openssh().unwrap()
    }

    fn sign(seed: u8, namespace: &str, msg: &[u8]) -> Vec<u8> {
        SshSig::sign(&key(seed), namespace, HashAlg::Sha512, msg)
            .unwrap()
            .to_pem(ssh_key::LineEnding::LF)
            .unwrap()
            .into_bytes()
    }

    fn signers(text: &str) -> AllowedSigners {
        let (s, errors) = parse(text);
        assert!(errors.is_empty(), "{errors:?}");
        s
    }

    // 2026-11-20T10:00:00Z
    const T: i64 = 1_795_168_800;

    #[test]
    fn a_listed_key_verifies_and_names_its_principals() {
        let file = signers(&format!(
            "# the vendor's release keys\n\nalice@example.com {}\n",
            public_line(1)
        ));
        let got = verify(&sign(1, "git", b"tree x\n"), b"tree x\n", T, &file).unwrap();
        assert_eq!(got.principals, "alice@example.com");
        assert_eq!(got.line, 3);
        assert!(got.fingerprint.starts_with("SHA256:"), "{got:?}");
    }

    #[test]
    fn the_key_a_signature_carries_is_not_enough() {
        let file = signers(&format!("alice@example.com {}\n", public_line(1)));
        let err = verify(&sign(2, "git", b"m"), b"m", T, &file).unwrap_err();
        assert!(
            err.contains("which the allowed signers file does not list"),
            "{err}"
        );
    }

    #[test]
    fn changed_content_and_other_namespaces_fail() {
        let file = signers(&format!("alice@example.com {}\n", public_line(1)));
        let err = verify(&sign(1, "git", b"m"), b"M", T, &file).unwrap_err();
        assert!(err.contains("changed after it was signed"), "{err}");
        let err = verify(&sign(1, "file", b"m"), b"m", T, &file).unwrap_err();
        assert_eq!(err, "it is signed for the namespace \"file\", not \"git\"");
        let err = verify(b"-----BEGIN PGP SIGNATURE-----\n", b"m", T, &file).unwrap_err();
        assert!(err.contains("OpenPGP"), "{err}");
    }

    #[test]
    fn options_restrict_namespace_and_time() {
        let key = public_line(1);
        let only_files = signers(&format!("a namespaces=\"file,!git\" {key}\n"));
        let err = verify(&sign(1, "git", b"m"), b"m", T, &only_files).unwrap_err();
        assert!(err.contains("may sign only in the namespaces"), "{err}");
        let git_too = signers(&format!("a namespaces=\"file,g*\" {key}\n"));
        assert!(verify(&sign(1, "git", b"m"), b"m", T, &git_too).is_ok());

        let later = signers(&format!("a valid-after=\"20270101Z\" {key}\n"));
        let err = verify(&sign(1, "git", b"m"), b"m", T, &later).unwrap_err();
        assert!(
            err.contains("valid only from 2027-01-01T00:00:00Z"),
            "{err}"
        );
        let expired = signers(&format!("a valid-before=\"202611200959Z\" {key}\n"));
        let err = verify(&sign(1, "git", b"m"), b"m", T, &expired).unwrap_err();
        assert!(
            err.contains("valid only until 2026-11-20T09:59:00Z"),
            "{err}"
        );
        let window = signers(&format!(
            "a VALID-AFTER=\"20260101Z\",valid-before=\"20261120100001Z\" {key}\n"
        ));
        assert!(verify(&sign(1, "git", b"m"), b"m", T, &window).is_ok());
    }

    #[test]
    fn a_later_line_for_the_same_key_can_admit_what_an_earlier_refuses() {
        let key = public_line(1);
        let file = signers(&format!(
            "old valid-before=\"20200101Z\" {key}\nnew namespaces=\"git\" {key}\n"
        ));
        let got = verify(&sign(1, "git", b"m"), b"m", T, &file).unwrap();
        assert_eq!(got.principals, "new");
    }

    #[test]
    fn quoted_principals_and_comments_are_read() {
        let file = signers(&format!(
            "  \"alice@example.com,bob@example.com\"\t{} alice's laptop\n",
            public_line(1)
        ));
        assert_eq!(
            file.entries[0].principals,
            "alice@example.com,bob@example.com"
        );
    }

    #[test]
    fn bad_lines_are_located() {
        let key = public_line(1);
        let b64 = key.split(' ').nth(1).unwrap();
        let text = format!(
            "ok {key}\n\
             a cert-authority {key}\n\
             b namespaces=git {key}\n\
             c nope=\"x\" {key}\n\
             d ssh-ed2559 {b64}\n\
             e ssh-ed25519 AAAA\n\
             f valid-after=\"2026\" {key}\n\
             g namespaces=\"git {key}\n\
             h\n\
             i ssh-rsa {b64}\n\
             j valid-after=\"20270101Z\",valid-before=\"20260101Z\" {key}\n\
             k namespaces=\"git\",namespaces=\"git\" {key}\n"
        );
        let (ok, errors) = parse(&text);
        assert_eq!(ok.entries.len(), 1);
        let got: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        assert_eq!(
            got,
            vec![
                "2:3: cert-authority lines are not supported: sitekeeper checks signatures against listed keys only (hint: list each signer's own public key instead)".to_owned(),
                "3:14: the value of namespaces must be in double quotes, as namespaces=\"…\"".to_owned(),
                format!("4:3: \"nope\" is not an option of an allowed signers file (hint: {OPTIONS_HINT})"),
                format!("5:3: \"ssh-ed2559\" is not a key type sitekeeper can verify (hint: {KEY_TYPES_HINT})"),
                "6:15: this is not a valid ssh-ed25519 key: its base64 text is damaged or cut short".to_owned(),
                "7:15: \"2026\" is not a time (hint: write YYYYMMDD, YYYYMMDDHHMM or YYYYMMDDHHMMSS, with a trailing Z for UTC)".to_owned(),
                "8:14: this quote is never closed (hint: close it with \" before the next space)".to_owned(),
                "9:2: a key is missing after the principals (hint: a line is `principals [options] keytype base64-key`)".to_owned(),
                "10:11: this key is not a ssh-rsa key".to_owned(),
                "11:40: valid-before is not after valid-after, so the key is never valid".to_owned(),
                "12:20: namespaces is given twice on this line".to_owned(),
            ]
        );
    }

    #[test]
    fn patterns_follow_ssh() {
        assert!(match_pattern_list("git", "git"));
        assert!(match_pattern_list("git", "file,g?t"));
        assert!(match_pattern_list("git", "*"));
        assert!(!match_pattern_list("git", "*,!git"));
        assert!(!match_pattern_list("git", "file"));
        assert!(!match_pattern_list("git", ""));
    }
}
