//! The host keys ssh servers must present (`--git-known-hosts FILE`, else
//! `~/.ssh/known_hosts`), in OpenSSH's format: host patterns with `*`, `?`
//! and `!`, `[host]:port` for other ports than 22, hashed `|1|salt|hash`
//! names (`ssh-keygen -H`), and `@revoked` keys.
//!
//! Lines are parsed by `ssh-key` (already a dependency for signatures);
//! which line names a host is decided here, because ssh-key leaves that to
//! its caller. Nothing is ever added to a file: an unknown host is refused,
//! never trusted on first use.

use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use ssh_key::known_hosts::{Entry, HostPatterns, Marker};

/// The port ssh uses when a URL names none; known_hosts names hosts on it
/// without a port.
pub const SSH_PORT: u16 = 22;

/// The usable lines of one known hosts file.
#[derive(Debug, Clone)]
pub struct KnownHosts {
    path: PathBuf,
    lines: Vec<Line>,
}

#[derive(Debug, Clone)]
struct Line {
    number: usize,
    marker: Option<Marker>,
    hosts: HostPatterns,
    algorithm: String,
    key: Vec<u8>,
}

/// Why a known hosts file given with `--git-known-hosts` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KnownHostsError {
    /// It cannot be read.
    #[error("--git-known-hosts {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A line is not a known hosts line.
    #[error("--git-known-hosts {}:{line}: not a known hosts line ({detail}) (hint: lines look like `host ssh-ed25519 AAAA…`, as ssh-keyscan prints them)", path.display())]
    Line {
        /// The file.
        path: PathBuf,
        /// The 1-based line number.
        line: usize,
        /// What the parser said.
        detail: String,
    },
    /// It lists no key at all.
    #[error("--git-known-hosts {}: lists no host key, so no ssh server could be trusted (hint: add the server's keys with `ssh-keyscan -p PORT HOST`, after checking their fingerprints with its operator)", path.display())]
    Empty {
        /// The file.
        path: PathBuf,
    },
}

/// A host key that was refused, and why. It names the host, the key's
/// SHA256 fingerprint and the file, so that an operator can compare the
/// fingerprint with the one the server's owner publishes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.describe())]
pub struct HostKeyRefused {
    /// `host`, or `[host]:port` off port 22, as known_hosts names it.
    pub host: String,
    /// The key's type, `ssh-ed25519` say.
    pub algorithm: String,
    /// `SHA256:…`, as `ssh-keygen -l` prints it.
    pub fingerprint: String,
    /// The known hosts file checked.
    pub file: PathBuf,
    /// Why it was refused.
    pub why: Refusal,
}

/// Why a host key was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The file lists no key of this type for the host.
    Unknown,
    /// The file lists another key of this type for the host, at this line.
    Changed(usize),
    /// The file marks this very key `@revoked`, at this line.
    Revoked(usize),
}

impl HostKeyRefused {
    fn describe(&self) -> String {
        let Self {
            host,
            algorithm,
            fingerprint,
            file,
            why,
        } = self;
        let file = file.display();
        let key = format!("the ssh host key of {host} ({algorithm} {fingerprint})");
        match why {
            Refusal::Unknown => format!(
                "{key} is not listed in {file}: refused, never trusted on first use (hint: check that fingerprint with the server's operator, then add the server's line to {file}, as `ssh-keyscan` prints it)"
            ),
            Refusal::Changed(line) => format!(
                "{key} does not match the {algorithm} key listed for it in {file} at line {line}: refused; the server's key changed, or something is in between (hint: confirm the new fingerprint with the server's operator before replacing that line)"
            ),
            Refusal::Revoked(line) => {
                format!("{key} is marked @revoked in {file} at line {line}: refused")
            }
        }
    }
}

impl KnownHosts {
    /// The file given with `--git-known-hosts`: every line must parse, and
    /// it must list at least one key.
    pub fn read_given(path: &Path) -> Result<Self, KnownHostsError> {
        let text = std::fs::read_to_string(path).map_err(|source| KnownHostsError::Read {
            path: path.to_owned(),
            source,
        })?;
        let hosts = Self::parse(path, &text, true)?;
        if hosts.lines.is_empty() {
            return Err(KnownHostsError::Empty {
                path: path.to_owned(),
            });
        }
        Ok(hosts)
    }

    /// The user's `~/.ssh/known_hosts`, as ssh reads it: a missing file
    /// lists nothing (so every host is refused), and lines this parser
    /// does not know (a key type it lacks) are passed over.
    pub fn read_home() -> Self {
        let path = std::env::var_os("HOME")
            .map(|home| PathBuf::from(home).join(".ssh/known_hosts"))
            .unwrap_or_else(|| PathBuf::from("~/.ssh/known_hosts"));
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        Self::parse(&path, &text, false).unwrap_or(Self {
            path,
            lines: Vec::new(),
        })
    }

    /// Parses `text`; with `strict`, a line that does not parse is an error,
    /// else it is skipped.
    pub fn parse(path: &Path, text: &str, strict: bool) -> Result<Self, KnownHostsError> {
        let mut lines = Vec::new();
        for (n, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let parsed = line
                .parse::<Entry>()
                .map_err(|e| e.to_string())
                .and_then(|entry| {
                    let key = entry.public_key().to_bytes().map_err(|e| e.to_string())?;
                    Ok(Line {
                        number: n + 1,
                        marker: entry.marker().cloned(),
                        hosts: entry.host_patterns().clone(),
                        algorithm: entry.public_key().algorithm().to_string(),
                        key,
                    })
                });
            match parsed {
                Ok(l) => lines.push(l),
                Err(detail) if strict => {
                    return Err(KnownHostsError::Line {
                        path: path.to_owned(),
                        line: n + 1,
                        detail,
                    });
                }
                Err(_) => {}
            }
        }
        Ok(Self {
            path: path.to_owned(),
            lines,
        })
    }

    /// The file read.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Checks the key `presented` (the SSH wire encoding of a public key,
    /// as the server sent it) of `host` on `port`: it must be listed for the
    /// host and not revoked.
    pub fn check(&self, host: &str, port: u16, presented: &[u8]) -> Result<(), HostKeyRefused> {
        let name = lookup_name(host, port);
        let algorithm = key_algorithm(presented);
        let refuse = |why| HostKeyRefused {
            host: name.clone(),
            algorithm: algorithm.clone(),
            fingerprint: fingerprint(presented),
            file: self.path.clone(),
            why,
        };
        let mut listed = false;
        let mut other = None;
        for line in self.lines.iter().filter(|l| names(&l.hosts, &name)) {
            match (&line.marker, line.key == presented) {
                (Some(Marker::Revoked), true) => return Err(refuse(Refusal::Revoked(line.number))),
                // Host certificates: libssh2 never presents one.
                (Some(_), _) => {}
                (None, true) => listed = true,
                (None, false) if line.algorithm == algorithm => {
                    other.get_or_insert(line.number);
                }
                (None, false) => {}
            }
        }
        match (listed, other) {
            (true, _) => Ok(()),
            (false, Some(line)) => Err(refuse(Refusal::Changed(line))),
            (false, None) => Err(refuse(Refusal::Unknown)),
        }
    }
}

/// How known_hosts names `host` on `port` (OpenSSH's `put_host_port`),
/// lower-cased as ssh looks it up.
fn lookup_name(host: &str, port: u16) -> String {
    let host = host.to_ascii_lowercase();
    if port == SSH_PORT {
        host
    } else {
        format!("[{host}]:{port}")
    }
}

/// Whether `patterns` names `name`: a hashed name by its HMAC-SHA1, else
/// any pattern matching it and no negated one (OpenSSH's `match_hostname`).
fn names(patterns: &HostPatterns, name: &str) -> bool {
    match patterns {
        HostPatterns::HashedName { salt, hash } => {
            let Ok(mut mac) = Hmac::<sha1::Sha1>::new_from_slice(salt) else {
                return false;
            };
            mac.update(name.as_bytes());
            mac.verify_slice(hash).is_ok()
        }
        HostPatterns::Patterns(list) => {
            let mut hit = false;
            for pattern in list {
                let pattern = pattern.to_ascii_lowercase();
                match pattern.strip_prefix('!') {
                    Some(negated) if glob(negated.as_bytes(), name.as_bytes()) => return false,
                    Some(_) => {}
                    None => hit |= glob(pattern.as_bytes(), name.as_bytes()),
                }
            }
            hit
        }
    }
}

/// ssh's wildcard match: `*` any run of characters, `?` any one.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    // Where the last `*` was, and the text position it has eaten up to.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p.min(pattern.len())..].iter().all(|&c| c == b'*')
}

/// The key type named at the start of an SSH wire-encoded public key.
fn key_algorithm(blob: &[u8]) -> String {
    let name = blob
        .get(..4)
        .and_then(|len| <[u8; 4]>::try_from(len).ok())
        .map(u32::from_be_bytes)
        .and_then(|len| usize::try_from(len).ok())
        .and_then(|len| blob.get(4..4usize.saturating_add(len)));
    match name.map(std::str::from_utf8) {
        Some(Ok(name)) => name.to_owned(),
        _ => "unknown".to_owned(),
    }
}

/// `SHA256:…`, as `ssh-keygen -l` prints a key's fingerprint.
pub fn fingerprint(blob: &[u8]) -> String {
    use sha2::Digest as _;
    ssh_key::Fingerprint::Sha256(sha2::Sha256::digest(blob).into()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIASLVN8sVUEpbGGnYBxbLFhpIdmjKDW5bxaNNzr8bnUJ";
    const KEY_B: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIFKrfhTci6zXo35dBK4hjCckH7wWiO39jcm50YHd9cDG";

    fn blob(b64: &str) -> Vec<u8> {
        let line = format!("h ssh-ed25519 {b64}");
        line.parse::<Entry>()
            .unwrap()
            .public_key()
            .to_bytes()
            .unwrap()
    }

    fn hosts(text: &str) -> KnownHosts {
        KnownHosts::parse(Path::new("known_hosts"), text, true).unwrap()
    }

    /// `|1|salt|hash` for `name`, as `ssh-keygen -H` writes it.
    fn hashed(name: &str) -> String {
        use ssh_key::known_hosts::HostPatterns;
        let salt = b"0123456789abcdefghij".to_vec();
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(&salt).unwrap();
        mac.update(name.as_bytes());
        let hash: [u8; 20] = mac.finalize().into_bytes().into();
        HostPatterns::HashedName { salt, hash }.to_string()
    }

    #[test]
    fn a_listed_key_passes_and_others_are_refused_with_their_fingerprint() {
        let file = hosts(&format!(
            "# comment\n\n[127.0.0.1]:2222 ssh-ed25519 {KEY_A}\n"
        ));
        assert_eq!(file.check("127.0.0.1", 2222, &blob(KEY_A)), Ok(()));
        let e = file.check("127.0.0.1", 2222, &blob(KEY_B)).unwrap_err();
        assert_eq!(e.why, Refusal::Changed(3));
        assert_eq!(e.fingerprint, fingerprint(&blob(KEY_B)));
        assert!(e.fingerprint.starts_with("SHA256:"), "{e}");
        let text = e.to_string();
        assert!(
            text.contains("host key of [127.0.0.1]:2222")
                && text.contains(&e.fingerprint)
                && text.contains("known_hosts"),
            "{text}"
        );
        // The same host on another port is another name.
        let e = file.check("127.0.0.1", 22, &blob(KEY_A)).unwrap_err();
        assert_eq!(e.why, Refusal::Unknown);
        assert!(e.to_string().contains("never trusted on first use"), "{e}");
    }

    #[test]
    fn hashed_names_match_as_ssh_keygen_h_writes_them() {
        let file = hosts(&format!(
            "{} ssh-ed25519 {KEY_A}\n{} ssh-ed25519 {KEY_B}\n",
            hashed("[127.0.0.1]:2222"),
            hashed("git.example.com"),
        ));
        assert_eq!(file.check("127.0.0.1", 2222, &blob(KEY_A)), Ok(()));
        assert_eq!(file.check("GIT.example.com", 22, &blob(KEY_B)), Ok(()));
        assert!(file.check("127.0.0.1", 2223, &blob(KEY_A)).is_err());
    }

    #[test]
    fn patterns_wildcards_negations_and_revocations() {
        let file = hosts(&format!(
            "*.example.com,!bad.example.com ssh-ed25519 {KEY_A}\n@revoked * ssh-ed25519 {KEY_B}\n[git?.example.org]:* ssh-ed25519 {KEY_B}\n"
        ));
        assert_eq!(file.check("git.example.com", 22, &blob(KEY_A)), Ok(()));
        assert!(file.check("bad.example.com", 22, &blob(KEY_A)).is_err());
        assert!(file.check("example.com", 22, &blob(KEY_A)).is_err());
        let e = file
            .check("git1.example.org", 7999, &blob(KEY_B))
            .unwrap_err();
        assert_eq!(
            e.why,
            Refusal::Revoked(2),
            "a revoked key is refused wherever else it is listed"
        );
    }

    #[test]
    fn globs() {
        for (p, t, m) in [
            ("*", "anything", true),
            ("a*c", "abbbc", true),
            ("a*c", "abbbd", false),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("*.x", "a.b.x", true),
            ("", "", true),
            ("", "a", false),
            ("**", "", true),
        ] {
            assert_eq!(glob(p.as_bytes(), t.as_bytes()), m, "{p} {t}");
        }
    }

    #[test]
    fn a_given_file_must_parse_and_list_something() {
        let e = KnownHosts::parse(Path::new("kh"), "host ssh-ed25519 !!!\n", true).unwrap_err();
        assert!(e.to_string().starts_with("--git-known-hosts kh:1: "), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kh");
        std::fs::write(&path, "# nothing\n").unwrap();
        assert!(matches!(
            KnownHosts::read_given(&path),
            Err(KnownHostsError::Empty { .. })
        ));
        // The home file is read as ssh reads it: bad lines passed over.
        let lenient = KnownHosts::parse(
            Path::new("kh"),
            &format!("x y z\nh ssh-ed25519 {KEY_A}\n"),
            false,
        )
        .unwrap();
        assert_eq!(lenient.lines.len(), 1);
    }

    #[test]
    fn odd_blobs_do_not_panic() {
        for blob in [
            &b""[..],
            b"\x00\x00",
            b"\xff\xff\xff\xffabc",
            b"\x00\x00\x00\x03ab",
        ] {
            assert_eq!(key_algorithm(blob), "unknown");
            let _ = hosts("").check("h", 22, blob);
        }
    }
}
