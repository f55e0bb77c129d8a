//! Starting libgit2 without parsing the whole CA bundle (issue 22, W1).
//!
//! libgit2, as `libgit2-sys` builds it, sets up its OpenSSL context when it
//! initialises, at a process's first git call, whether or not anything
//! goes over https; `SSL_CTX_set_default_verify_paths` there parses every
//! certificate of the system's CA bundle file (146 on Debian). That was
//! 46% of the CPU time of a `plan` of a small site (perf, DWARF call
//! graphs: `libgit2_sys::init` → `openssl_init` →
//! `X509_load_cert_crl_file_ex`), paid by every command, and most of what
//! stood between the no-op plan and `git status` (W1). OpenSSL's other
//! default location, the hashed certificate directory, is read lazily: a
//! handshake opens the one file named by its issuer's hash.
//!
//! So, when the CA locations are the system's own (neither `SSL_CERT_FILE`
//! nor `SSL_CERT_DIR` is set, or they name the certificate directory and
//! the `ca-certificates.crt` bundle in it, as many images set them) and
//! that directory holds hashed names (Debian's `update-ca-certificates`
//! writes one for every CA of the bundle, from the same sources), `main`
//! initialises libgit2 first thing with the file pointed at `/dev/null`
//! and the directory named, then puts both variables back as they were.
//! libgit2 then trusts the same CAs as before, found by hash when a
//! handshake needs one; `--git-ca-file` adds to that store as before. A
//! CA appended to the bundle by hand, without `update-ca-certificates`,
//! is not in the directory and so not trusted by git over https (README,
//! "Git access"). Where the directory has no hashed names (some
//! distributions ship only the bundle), or the variables name anything
//! else, nothing changes. Other TLS clients (notifications, through
//! `native-tls`) and child processes see the environment they saw before.

use std::path::{Path, PathBuf};

/// Initialises libgit2 reading CAs from the hashed directory, when that
/// trusts the same CAs as the bundle would (see the module doc).
///
/// # Safety
///
/// Call it before any other thread exists (first thing in `main`): it
/// sets and restores environment variables, which is unsound while
/// another thread may read the environment.
pub unsafe fn init_libgit2_with_lazy_cas() {
    const FILE: &str = "SSL_CERT_FILE";
    const DIR: &str = "SSL_CERT_DIR";
    let (file, dir) = (std::env::var_os(FILE), std::env::var_os(DIR));
    let Some(cas) = system_dir(
        file.as_deref().map(Path::new),
        dir.as_deref().map(Path::new),
    ) else {
        return;
    };
    // SAFETY: the caller guarantees that no other thread exists, so no
    // one reads the environment while it changes.
    unsafe {
        std::env::set_var(FILE, "/dev/null");
        std::env::set_var(DIR, &cas);
    }
    // OpenSSL reads both variables here, once, and keeps the directory's
    // name in libgit2's context.
    libgit2_sys::init();
    // SAFETY: as above.
    unsafe {
        for (name, was) in [(FILE, file), (DIR, dir)] {
            match was {
                Some(value) => std::env::set_var(name, value),
                None => std::env::remove_var(name),
            }
        }
    }
}

/// The system's hashed certificate directory, when the CA locations given
/// (`file`, `dir`: the two variables) are the system's own, so that the
/// directory alone trusts what the bundle would; `None` otherwise.
fn system_dir(file: Option<&Path>, dir: Option<&Path>) -> Option<PathBuf> {
    let cas = match dir {
        Some(dir) => dir.to_path_buf(),
        None => openssl_probe::probe().cert_dir?,
    };
    let own = match (file, dir) {
        (None, None) => true,
        (Some(file), _) => same_file(file, &cas.join("ca-certificates.crt")),
        // A directory of the user's own, and OpenSSL's default bundle
        // beside it: the directory alone would trust less.
        (None, Some(_)) => false,
    };
    (own && has_hashed_names(&cas)).then_some(cas)
}

/// Whether `a` and `b` are the same existing file.
fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Whether `dir` holds a certificate under its subject hash (`8 hex
/// digits . n`), as `openssl rehash` names them: OpenSSL's lookup by hash
/// finds nothing in a directory without such names.
fn has_hashed_names(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|e| {
        let name = e.file_name();
        let name = name.to_string_lossy();
        name.split_once('.').is_some_and(|(hash, n)| {
            hash.len() == 8
                && hash.bytes().all(|b| b.is_ascii_hexdigit())
                && !n.is_empty()
                && n.bytes().all(|b| b.is_ascii_digit())
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_counts_only_with_a_hashed_name() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!has_hashed_names(dir.path()));
        for name in [
            "ca-certificates.crt",
            "README.0",
            "0123456.0",
            "01234567.",
            "01234567.x",
        ] {
            std::fs::write(dir.path().join(name), "").unwrap();
        }
        assert!(!has_hashed_names(dir.path()));
        std::fs::write(dir.path().join("5ad8a5d6.0"), "").unwrap();
        assert!(has_hashed_names(dir.path()));
        assert!(!has_hashed_names(&dir.path().join("missing")));
    }

    #[test]
    fn only_the_systems_own_locations_are_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("5ad8a5d6.0"), "").unwrap();
        std::fs::write(d.join("ca-certificates.crt"), "").unwrap();
        std::fs::write(d.join("other.pem"), "").unwrap();
        let bundle = d.join("ca-certificates.crt");
        assert_eq!(system_dir(Some(&bundle), Some(d)).as_deref(), Some(d));
        // A CA file of the user's own: kept.
        assert_eq!(system_dir(Some(&d.join("other.pem")), Some(d)), None);
        // A directory of the user's own beside OpenSSL's default bundle: kept.
        assert_eq!(system_dir(None, Some(d)), None);
        // A directory without hashed names: kept.
        let plain = tempfile::tempdir().unwrap();
        std::fs::write(plain.path().join("ca-certificates.crt"), "").unwrap();
        let plain_bundle = plain.path().join("ca-certificates.crt");
        assert_eq!(system_dir(Some(&plain_bundle), Some(plain.path())), None);
    }
}
