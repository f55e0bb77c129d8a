//! libgit2 trusts the system's CAs through the hashed certificate
//! directory, not by parsing the bundle at start (`git/ca_store.rs`, issue
//! 22): a catalog over https (nginx, a test CA) is fetched with the CA only
//! in a hashed directory whose `ca-certificates.crt` stands for the
//! system's bundle, and `strace` shows that the bundle is never opened.

use std::process::Command;

use crate::git_transports::{Https, catalog, fleet_dir};
use crate::support::{sitekeeper, stderr};

#[test]
fn https_trusts_the_hashed_ca_directory_without_reading_the_bundle() {
    const TOKEN: &str = "tok-5e1d0c9b8a7f";
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let repos = d.join("repos");
    catalog(&d.join("catalog-src"), &repos.join("catalog.git"), false);
    let server = Https::start(&d.join("nginx"), &repos, &[("x-access-token", TOKEN)]);
    let fleet = d.join("fleet");
    fleet_dir(&fleet, &server.url("catalog.git"), &d.join("site-a"));
    let token = d.join("token");
    std::fs::write(&token, TOKEN).unwrap();
    // The "system" locations: a directory with the CA under its hash, and
    // the bundle beside it, as update-ca-certificates makes them.
    let cas = d.join("cas");
    std::fs::create_dir(&cas).unwrap();
    std::fs::copy(server.dir.join("ca.pem"), cas.join("ca-certificates.crt")).unwrap();
    let rehash = Command::new("openssl")
        .args(["rehash"])
        .arg(&cas)
        .output()
        .expect("openssl runs");
    assert!(rehash.status.success(), "{}", stderr(&rehash));
    let trace = d.join("trace");
    let out = Command::new("strace")
        .args(["-f", "-e", "trace=openat,open", "-o"])
        .arg(&trace)
        .arg(crate::support::bin())
        .args(["validate", "--git-token-file"])
        .arg(&token)
        .current_dir(&fleet)
        .env("SITEKEEPER_STATE_DIR", d.join("state"))
        .env("SSL_CERT_FILE", cas.join("ca-certificates.crt"))
        .env("SSL_CERT_DIR", &cas)
        .output()
        .expect("strace runs");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let opened = std::fs::read_to_string(&trace).unwrap();
    assert!(
        !opened.contains("ca-certificates.crt\""),
        "the bundle was read:\n{opened}"
    );

    // The same without the CA in the directory: refused (the hashed
    // lookup is what trusted it, nothing else).
    let empty = d.join("empty-cas");
    std::fs::create_dir(&empty).unwrap();
    std::fs::copy(server.dir.join("server.pem"), empty.join("unrelated.pem")).unwrap();
    Command::new("openssl")
        .arg("rehash")
        .arg(&empty)
        .output()
        .unwrap();
    std::fs::write(empty.join("ca-certificates.crt"), "").unwrap();
    let out = sitekeeper(&d.join("state-2"))
        .current_dir(&fleet)
        .args(["validate", "--git-token-file"])
        .arg(&token)
        .env("SSL_CERT_FILE", empty.join("ca-certificates.crt"))
        .env("SSL_CERT_DIR", &empty)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("certificate"), "{}", stderr(&out));
}
