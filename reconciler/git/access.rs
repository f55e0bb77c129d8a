//! The git access options of SPEC §3 (`--git-ssh-key`, `--git-known-hosts`,
//! `--git-ca-file`, `--git-token-file`): the paths the command line gives
//! ([`AccessOptions`]) and what is read from them ([`GitAccess`]), checked
//! once when read so that a bad file fails at start, not at the first fetch.
//!
//! Secrets (the key, the token) are held in memory only and never printed:
//! their `Debug` says what they are, not what they hold, and no error here
//! quotes a file's content.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::known_hosts::{KnownHosts, KnownHostsError};

/// The paths of the git access options, as the command line or the
/// environment gave them; nothing is read yet ([`GitAccess::read`] does).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessOptions {
    /// `--git-ssh-key`: a private key file (a deploy key), used instead of
    /// the ssh agent.
    pub ssh_key: Option<PathBuf>,
    /// `--git-known-hosts`: the host keys ssh servers must present, instead
    /// of `~/.ssh/known_hosts`.
    pub known_hosts: Option<PathBuf>,
    /// `--git-ca-file`: CA certificates (PEM) trusted for https, besides
    /// the system's.
    pub ca_file: Option<PathBuf>,
    /// `--git-token-file`: `TOKEN` or `USER:TOKEN` for https.
    pub token_file: Option<PathBuf>,
}

/// How to reach remote repositories (SPEC §3, "Git access"): what was read
/// from the [`AccessOptions`]. The default is what SPEC §3 names for no
/// option: the ssh agent, `~/.ssh/known_hosts` (checked, never added to),
/// the system CAs and git's credential helper.
#[derive(Debug, Clone, Default)]
pub struct GitAccess {
    /// The deploy key, if one was given.
    pub(super) ssh_key: Option<Arc<SshKey>>,
    /// The host keys given with `--git-known-hosts`; `None`: the user's
    /// `~/.ssh/known_hosts`, read at each connection as ssh itself does.
    pub(super) known_hosts: Option<Arc<KnownHosts>>,
    /// The extra CA file (installed into libgit2 when read).
    pub(super) ca_file: Option<PathBuf>,
    /// The https token, if one was given.
    pub(super) token: Option<Arc<Token>>,
}

/// Why an access option cannot be used. Each names the option and its file.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// The file cannot be read.
    #[error("{option} {}: {source}", path.display())]
    Read {
        /// The option.
        option: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The key file is protected by a passphrase.
    #[error(
        "--git-ssh-key {}: the key is encrypted with a passphrase, and sitekeeper never asks for one (hint: give it a deploy key without a passphrase, made with `ssh-keygen -t ed25519 -N '' -f deploy_key`, and protect the file by its permissions)",
        path.display()
    )]
    KeyEncrypted {
        /// The key file.
        path: PathBuf,
    },
    /// The key file is not a private key sitekeeper can use.
    #[error("--git-ssh-key {}: {detail}", path.display())]
    KeyFormat {
        /// The key file.
        path: PathBuf,
        /// What is wrong, in words.
        detail: String,
    },
    /// The known hosts file cannot be used.
    #[error(transparent)]
    KnownHosts(#[from] KnownHostsError),
    /// The CA file holds no certificate, or libgit2 would not load it.
    #[error("--git-ca-file {}: {detail}", path.display())]
    CaFile {
        /// The CA file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The token file is empty or malformed.
    #[error("--git-token-file {}: {detail}", path.display())]
    Token {
        /// The token file.
        path: PathBuf,
        /// What is wrong (never the token).
        detail: &'static str,
    },
}

impl GitAccess {
    /// Reads every file `options` names and checks it. The CA file is also
    /// installed into libgit2 here: its CA store is one per process, so a
    /// CA once added stays trusted until the process ends (a SIGHUP that
    /// reads a changed file adds the new certificates; removing one needs
    /// a restart).
    pub fn read(options: &AccessOptions) -> Result<Self, AccessError> {
        let ssh_key = options
            .ssh_key
            .as_deref()
            .map(SshKey::read)
            .transpose()?
            .map(Arc::new);
        let known_hosts = options
            .known_hosts
            .as_deref()
            .map(KnownHosts::read_given)
            .transpose()?
            .map(Arc::new);
        let token = options
            .token_file
            .as_deref()
            .map(Token::read)
            .transpose()?
            .map(Arc::new);
        if let Some(path) = &options.ca_file {
            install_ca(path)?;
        }
        Ok(Self {
            ssh_key,
            known_hosts,
            ca_file: options.ca_file.clone(),
            token,
        })
    }

    /// Whether a deploy key was given.
    pub fn has_ssh_key(&self) -> bool {
        self.ssh_key.is_some()
    }

    /// Whether a token was given.
    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// The CA file given, if any.
    pub fn ca_file(&self) -> Option<&Path> {
        self.ca_file.as_deref()
    }
}

fn read_file(option: &'static str, path: &Path) -> Result<Vec<u8>, AccessError> {
    std::fs::read(path).map_err(|source| AccessError::Read {
        option,
        path: path.to_owned(),
        source,
    })
}

/// A deploy key: its private key as the file holds it, and its public key
/// when it could be derived (libssh2 derives it otherwise).
pub(super) struct SshKey {
    /// The private key, in OpenSSH or PEM form.
    pub(super) private: String,
    /// The public key line, for OpenSSH-format keys.
    pub(super) public: Option<String>,
    /// The file, for messages.
    pub(super) path: PathBuf,
}

impl std::fmt::Debug for SshKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshKey")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SshKey {
    fn read(path: &Path) -> Result<Self, AccessError> {
        let bytes = read_file("--git-ssh-key", path)?;
        let format = |detail: &str| AccessError::KeyFormat {
            path: path.to_owned(),
            detail: detail.to_owned(),
        };
        let text = String::from_utf8(bytes)
            .map_err(|_| format("not a private key file (it is not text)"))?;
        if text.contains("-----BEGIN OPENSSH PRIVATE KEY-----") {
            let key = ssh_key::PrivateKey::from_openssh(&text)
                .map_err(|e| format(&format!("not a readable OpenSSH private key ({e})")))?;
            if key.is_encrypted() {
                return Err(AccessError::KeyEncrypted {
                    path: path.to_owned(),
                });
            }
            match key.algorithm() {
                ssh_key::Algorithm::Ed25519
                | ssh_key::Algorithm::Rsa { .. }
                | ssh_key::Algorithm::Ecdsa { .. } => {}
                other => {
                    return Err(format(&format!(
                        "a {other} key, which libssh2 cannot use (hint: use an ed25519 or RSA key)"
                    )));
                }
            }
            let public = key
                .public_key()
                .to_openssh()
                .map_err(|e| format(&format!("its public key cannot be derived ({e})")))?;
            return Ok(Self {
                private: text,
                public: Some(public),
                path: path.to_owned(),
            });
        }
        // The older PEM forms (`ssh-keygen -m PEM`, OpenSSL), which libssh2
        // reads itself; an encrypted one says so in its armour or headers.
        let pem = [
            "-----BEGIN RSA PRIVATE KEY-----",
            "-----BEGIN EC PRIVATE KEY-----",
            "-----BEGIN PRIVATE KEY-----",
        ]
        .iter()
        .any(|armour| text.contains(armour));
        if text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----")
            || (pem && text.contains("ENCRYPTED"))
        {
            return Err(AccessError::KeyEncrypted {
                path: path.to_owned(),
            });
        }
        if pem {
            return Ok(Self {
                private: text,
                public: None,
                path: path.to_owned(),
            });
        }
        if text.starts_with("ssh-") || text.starts_with("ecdsa-") {
            return Err(format(
                "this is a public key (hint: give the private key file, without .pub)",
            ));
        }
        Err(format(
            "not a private key file (hint: an ed25519 or RSA key made by ssh-keygen)",
        ))
    }
}

/// An https token and the user it is sent as.
pub(super) struct Token {
    /// The user: `x-access-token` unless the file says `USER:TOKEN`.
    pub(super) user: String,
    /// The token.
    pub(super) secret: String,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("user", &self.user)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// The user a bare `TOKEN` is sent as (what GitHub and Gitea expect of
/// an app or deploy token; other servers ignore the user).
pub const TOKEN_USER: &str = "x-access-token";

impl Token {
    fn read(path: &Path) -> Result<Self, AccessError> {
        let bytes = read_file("--git-token-file", path)?;
        let bad = |detail| AccessError::Token {
            path: path.to_owned(),
            detail,
        };
        let text = std::str::from_utf8(&bytes).map_err(|_| bad("the token is not text"))?;
        // A trailing newline is what `echo TOKEN > file` leaves.
        let text = text.trim();
        if text.is_empty() {
            return Err(bad(
                "the file is empty (hint: write TOKEN or USER:TOKEN in it)",
            ));
        }
        if text.contains(['\n', '\r']) {
            return Err(bad(
                "the file holds more than one line (hint: write TOKEN or USER:TOKEN on one line)",
            ));
        }
        let (user, secret) = match text.split_once(':') {
            Some((user, secret)) => (user.trim(), secret.trim()),
            None => (TOKEN_USER, text),
        };
        if user.is_empty() || secret.is_empty() {
            return Err(bad("USER:TOKEN needs both a user and a token"));
        }
        Ok(Self {
            user: user.to_owned(),
            secret: secret.to_owned(),
        })
    }
}

/// Adds the certificates of `path` to the CAs libgit2 trusts for https.
fn install_ca(path: &Path) -> Result<(), AccessError> {
    let bad = |detail: String| AccessError::CaFile {
        path: path.to_owned(),
        detail,
    };
    let text = read_file("--git-ca-file", path)?;
    if !text
        .windows(27)
        .any(|w| w == b"-----BEGIN CERTIFICATE-----")
    {
        return Err(bad(
            "holds no PEM certificate (hint: the file starts with -----BEGIN CERTIFICATE-----)"
                .into(),
        ));
    }
    super::configure();
    // SAFETY: libgit2 is initialised (configure). This option adds the
    // file's certificates to libgit2's one OpenSSL context
    // (SSL_CTX_load_verify_locations, which adds to the store: the system
    // CAs stay); OpenSSL locks its certificate store itself, so a TLS
    // handshake of another thread meanwhile is safe.
    unsafe { git2::opts::set_ssl_cert_file(path) }.map_err(|e| bad(e.message().to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(text: &str) -> Result<Token, AccessError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, text).unwrap();
        Token::read(&path)
    }

    #[test]
    fn a_token_is_sent_as_x_access_token_unless_a_user_is_given() {
        let t = token("s3cret\n").unwrap();
        assert_eq!((t.user.as_str(), t.secret.as_str()), (TOKEN_USER, "s3cret"));
        let t = token("deploy:s3cret").unwrap();
        assert_eq!((t.user.as_str(), t.secret.as_str()), ("deploy", "s3cret"));
        for bad in ["", "\n", "a\nb\n", ":x", "x:"] {
            assert!(token(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn neither_the_token_nor_the_key_is_printed_by_debug() {
        let t = token("deploy:s3cret").unwrap();
        assert!(!format!("{t:?}").contains("s3cret"));
        let access = GitAccess {
            token: Some(Arc::new(t)),
            ..GitAccess::default()
        };
        assert!(!format!("{access:?}").contains("s3cret"));
        let key = SshKey {
            private: "PRIVATE".into(),
            public: None,
            path: "k".into(),
        };
        assert!(!format!("{key:?}").contains("PRIVATE"));
    }

    #[test]
    fn a_public_key_or_garbage_is_not_taken_for_a_private_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        for (text, needle) in [
            ("ssh-ed25519 AAAAC3Nza a@b\n", "public key"),
            ("hello\n", "not a private key"),
        ] {
            std::fs::write(&path, text).unwrap();
            let e = SshKey::read(&path).unwrap_err().to_string();
            assert!(e.contains(needle), "{e}");
        }
        std::fs::write(
            &path,
            "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n-----END RSA PRIVATE KEY-----\n",
        )
        .unwrap();
        assert!(matches!(
            SshKey::read(&path),
            Err(AccessError::KeyEncrypted { .. })
        ));
    }
}
