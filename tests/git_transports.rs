//! Real git access (issue 19; SPEC §3 "Git access", §8): a catalog served
//! by a real OpenSSH `sshd` and reached with a deploy key and a known_hosts
//! file, with no agent; a catalog served over https by nginx and
//! git-http-backend, with a CA the test makes and a token behind basic
//! auth; two `watch` daemons sharing one fleet repo by `--selector`; and a
//! git server that goes away, drops connections mid-fetch or hangs.
//!
//! Every server runs on 127.0.0.1 on a free port, in its own process
//! group, and is killed when its guard drops. Nothing is mocked: the
//! relay that cuts or stalls connections stands in front of a real
//! `git daemon`, as a flaky network would.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::{
    CATALOG, GitDaemon, free_port, git, sitekeeper, stderr, stdout, wait_for_port, write_tree,
};
use crate::watch::{Watch, get, until};

/// The catalog's fix: every site opted in to all hot fixes takes it.
const FIX: (&str, &str) = (
    "fixes/0001-hello.yaml",
    "id: 0001-hello\ntitle: Hello\nreason: Politeness\nseverity: normal\napplies_to: \">=1.0.0\"\nops:\n  - replace: {files: [\"index.php\"], find: \"'hi'\", with: \"'hello'\"}\n",
);

/// A site file for `name` with its root at `root`, labelled `host: HOST`.
fn site_yaml(name: &str, root: &Path, host: &str) -> String {
    format!(
        "site: {name}\nroot: {}\nproduct: acme\nchannel: stable\nopt_in: {{hotfixes: all}}\nlabels: {{host: {host}}}\n",
        root.display()
    )
}

/// A catalog work tree at `work` (the stock release and, with `fix`, the
/// fix), committed, and its bare clone at `bare`; returns the commit.
pub(crate) fn catalog(work: &Path, bare: &Path, fix: bool) -> String {
    write_tree(work, CATALOG);
    if fix {
        write_tree(work, &[FIX]);
    }
    git(work, &["init", "-q", "-b", "main"]);
    git(work, &["add", "-A"]);
    git(work, &["commit", "-q", "-m", "catalog"]);
    std::fs::create_dir_all(bare.parent().unwrap()).unwrap();
    git(
        work,
        &[
            "clone",
            "-q",
            "--bare",
            work.to_str().unwrap(),
            bare.to_str().unwrap(),
        ],
    );
    git(work, &["rev-parse", "HEAD"])
}

/// A fleet directory at `fleet` whose catalog is `url` (ref main), with
/// one site `a` whose root `root` holds release 1.0.0.
pub(crate) fn fleet_dir(fleet: &Path, url: &str, root: &Path) {
    write_tree(
        fleet,
        &[
            (
                "fleet.yaml",
                &format!("catalogs:\n  acme:\n    source: {url}\n    ref: main\n"),
            ),
            ("sites/a.yaml", &site_yaml("a", root, "a")),
        ],
    );
    write_tree(root, &[("index.php", "<?php echo 'hi';\n")]);
}

/// Runs sitekeeper in `cwd` with state in `state`, with no ssh agent and
/// an empty home (so nothing of the user running the tests is used).
pub(crate) fn run(cwd: &Path, state: &Path, home: &Path, args: &[&str]) -> Output {
    std::fs::create_dir_all(home).unwrap();
    sitekeeper(state)
        .current_dir(cwd)
        .env_remove("SSH_AUTH_SOCK")
        .env("HOME", home)
        .env("SITEKEEPER_NOW", crate::support::NOW)
        .args(args)
        .output()
        .expect("the binary runs")
}

/// The refs of every cache repository under `state` (nothing fetched: none).
fn cached_refs(state: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for dir in ["cache/git", "cache/reports"] {
        let Ok(entries) = std::fs::read_dir(state.join(dir)) else {
            continue;
        };
        for e in entries.flatten() {
            if let Ok(repo) = git2::Repository::open_bare(e.path()) {
                for r in repo.references().unwrap().flatten() {
                    out.push(r.name().unwrap_or("?").to_owned());
                }
            }
        }
    }
    out
}

/// The name of the user running the tests (sshd logs in as it).
fn user_name() -> String {
    let out = Command::new("id").arg("-un").output().expect("id runs");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// The first of `candidates` that exists, or a panic that says what to install.
fn program(candidates: &[&str], package: &str) -> PathBuf {
    candidates
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("{} is needed: apt-get install {package}", candidates[0]))
}

/// Makes an ssh key pair at `path` (and `path.pub`) with `passphrase`.
fn keygen(path: &Path, kind: &str, passphrase: &str) {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", kind, "-N", passphrase, "-C", "test", "-f"])
        .arg(path)
        .output()
        .expect("ssh-keygen runs");
    assert!(out.status.success(), "ssh-keygen: {}", stderr(&out));
}

/// Kills a child's whole process group (the servers fork workers).
fn kill_group(child: &mut Child) {
    if let Some(group) = rustix::process::Pid::from_raw(child.id() as i32) {
        let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// OpenSSH's `sshd` on 127.0.0.1 as the user running the tests, with its
/// own host key and one authorized deploy key; killed on drop.
struct Sshd {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Sshd {
    fn start(dir: &Path) -> Self {
        let sshd = program(&["/usr/sbin/sshd", "/usr/bin/sshd"], "openssh-server");
        std::fs::create_dir_all(dir).unwrap();
        keygen(&dir.join("host_key"), "ed25519", "");
        keygen(&dir.join("deploy"), "ed25519", "");
        keygen(&dir.join("deploy_rsa"), "rsa", "");
        let authorized: String = ["deploy.pub", "deploy_rsa.pub"]
            .iter()
            .map(|k| std::fs::read_to_string(dir.join(k)).unwrap())
            .collect();
        std::fs::write(dir.join("authorized_keys"), authorized).unwrap();
        if is_root() {
            // sshd started as root separates privileges into this empty
            // directory; the package's service makes it, and it never ran.
            std::fs::create_dir_all("/run/sshd").unwrap();
        }
        let port = free_port();
        let d = dir.display();
        std::fs::write(
            dir.join("sshd_config"),
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nPidFile {d}/sshd.pid\n\
                 AuthorizedKeysFile {d}/authorized_keys\nUsePAM no\nStrictModes no\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n\
                 PermitRootLogin prohibit-password\nLogLevel VERBOSE\n"
            ),
        )
        .unwrap();
        let child = Command::new(sshd)
            .process_group(0)
            .args(["-D", "-e", "-f"])
            .arg(dir.join("sshd_config"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("sshd.log")).unwrap())
            .spawn()
            .expect("sshd starts");
        wait_for_port(port, Duration::from_secs(10));
        Self {
            child,
            port,
            dir: dir.to_owned(),
        }
    }

    /// The `ssh://` URL of the repository at the absolute path `repo`.
    fn url(&self, repo: &Path) -> String {
        format!(
            "ssh://{}@127.0.0.1:{}{}",
            user_name(),
            self.port,
            repo.display()
        )
    }

    /// The known_hosts line for this server's host key, as OpenSSH writes it.
    fn known_hosts_line(&self) -> String {
        let public = std::fs::read_to_string(self.dir.join("host_key.pub")).unwrap();
        let mut fields = public.split_whitespace();
        let (kind, key) = (fields.next().unwrap(), fields.next().unwrap());
        format!("[127.0.0.1]:{} {kind} {key}\n", self.port)
    }

    /// The SHA256 fingerprint of the host key, as `ssh-keygen -l` prints it.
    fn fingerprint(&self) -> String {
        let out = Command::new("ssh-keygen")
            .arg("-lf")
            .arg(self.dir.join("host_key.pub"))
            .output()
            .unwrap();
        stdout(&out)
            .split_whitespace()
            .nth(1)
            .expect("a fingerprint")
            .to_owned()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("sshd.log")).unwrap_or_default()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        kill_group(&mut self.child);
    }
}

#[test]
fn ssh_with_a_deploy_key_and_known_hosts_needs_no_agent_and_refuses_other_host_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let sshd = Sshd::start(&d.join("sshd"));
    let bare = d.join("served/catalog.git");
    let head = catalog(&d.join("catalog-src"), &bare, true);
    let fleet = d.join("fleet");
    fleet_dir(&fleet, &sshd.url(&bare), &d.join("site-a"));
    let known = d.join("known_hosts");
    std::fs::write(&known, sshd.known_hosts_line()).unwrap();
    let home = d.join("home");
    let key = sshd.dir.join("deploy");
    let access = [
        "--git-ssh-key",
        key.to_str().unwrap(),
        "--git-known-hosts",
        known.to_str().unwrap(),
    ];
    let state = d.join("state");
    let timed = |args: &[&str], state: &Path| {
        let start = Instant::now();
        let out = run(&fleet, state, &home, args);
        (out, start.elapsed())
    };

    // adopt and plan with the deploy key, no agent, nothing in $HOME.
    let (out, adopt_took) = timed(
        &[&["adopt", "a", "--version", "1.0.0"][..], &access].concat(),
        &state,
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        stderr(&out),
        sshd.log()
    );
    let (out, plan_took) = timed(
        &[&["plan", "--format", "json"][..], &access].concat(),
        &state,
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let plan: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(plan["catalog_commit"], head.as_str());
    assert_eq!(plan["sites"][0]["actions"][0]["id"], "0001-hello", "{plan}");
    assert!(
        sshd.log().contains("Accepted publickey"),
        "sshd saw the deploy key: {}",
        sshd.log()
    );

    // The same through the environment, with an RSA key and the hashed
    // known_hosts form that `ssh-keygen -H` writes.
    let hashed = d.join("known_hosts_hashed");
    std::fs::write(&hashed, sshd.known_hosts_line()).unwrap();
    let out = Command::new("ssh-keygen")
        .arg("-H")
        .arg("-f")
        .arg(&hashed)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = std::fs::read_to_string(&hashed).unwrap();
    assert!(
        text.starts_with("|1|") && !text.contains("127.0.0.1"),
        "{text}"
    );
    let out = sitekeeper(&d.join("state-hashed"))
        .current_dir(&fleet)
        .env_remove("SSH_AUTH_SOCK")
        .env("HOME", &home)
        .env("SITEKEEPER_GIT_SSH_KEY", sshd.dir.join("deploy_rsa"))
        .env("SITEKEEPER_GIT_KNOWN_HOSTS", &hashed)
        .args(["validate", "--format", "json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let json: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(json["summary"]["catalogs"][0]["commit"], head.as_str());

    // Another key for this host: refused, naming the host, the key's
    // fingerprint and the file; nothing is fetched.
    let other = d.join("other");
    keygen(&other, "ed25519", "");
    let other_pub = std::fs::read_to_string(other.with_extension("pub")).unwrap();
    let mut fields = other_pub.split_whitespace();
    let wrong = d.join("known_hosts_wrong");
    std::fs::write(
        &wrong,
        format!(
            "[127.0.0.1]:{} {} {}\n",
            sshd.port,
            fields.next().unwrap(),
            fields.next().unwrap()
        ),
    )
    .unwrap();
    let fresh = d.join("state-refused");
    let out = run(
        &fleet,
        &fresh,
        &home,
        &[
            "plan",
            "--git-ssh-key",
            key.to_str().unwrap(),
            "--git-known-hosts",
            wrong.to_str().unwrap(),
        ],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let fingerprint = sshd.fingerprint();
    assert!(fingerprint.starts_with("SHA256:"), "{fingerprint}");
    for needle in [
        "host key",
        &format!("[127.0.0.1]:{}", sshd.port),
        &fingerprint,
        wrong.to_str().unwrap(),
        "does not match",
    ] {
        assert!(err.contains(needle), "{needle:?} missing: {err}");
    }
    assert_eq!(cached_refs(&fresh), Vec::<String>::new(), "nothing fetched");

    // No --git-known-hosts and no ~/.ssh/known_hosts: unknown, refused
    // (never trusted on first use), and still nothing fetched.
    let out = run(
        &fleet,
        &fresh,
        &home,
        &["plan", "--git-ssh-key", key.to_str().unwrap()],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("is not listed in") && err.contains(&fingerprint) && err.contains("first use"),
        "{err}"
    );
    assert!(!home.join(".ssh/known_hosts").exists(), "nothing was added");
    assert_eq!(cached_refs(&fresh), Vec::<String>::new());

    // A key with a passphrase is refused before anything is fetched.
    let encrypted = d.join("encrypted");
    keygen(&encrypted, "ed25519", "a passphrase");
    let out = run(
        &fleet,
        &fresh,
        &home,
        &[
            "plan",
            "--git-ssh-key",
            encrypted.to_str().unwrap(),
            "--git-known-hosts",
            known.to_str().unwrap(),
        ],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("encrypted with a passphrase"), "{err}");
    assert_eq!(cached_refs(&fresh), Vec::<String>::new());
    eprintln!(
        "ssh: adopt {adopt_took:?}, plan {plan_took:?}; refused host key {fingerprint} on [127.0.0.1]:{}",
        sshd.port
    );
}

/// nginx serving git-http-backend (through fcgiwrap) over TLS with a
/// certificate from a CA the test makes, behind basic auth; killed on drop.
pub(crate) struct Https {
    nginx: Child,
    fcgi: Child,
    port: u16,
    pub(crate) dir: PathBuf,
}

impl Https {
    /// Serves the repositories under `repos`; `users` are `(user, password)`.
    pub(crate) fn start(dir: &Path, repos: &Path, users: &[(&str, &str)]) -> Self {
        let nginx = program(&["/usr/sbin/nginx"], "nginx-light");
        let fcgiwrap = program(&["/usr/sbin/fcgiwrap"], "fcgiwrap");
        let backend = program(
            &[
                "/usr/lib/git-core/git-http-backend",
                "/usr/libexec/git-core/git-http-backend",
            ],
            "git",
        );
        std::fs::create_dir_all(dir.join("tmp")).unwrap();
        crate::support::tls_certificates(dir);
        // nginx's plain-text password scheme: the test's tokens are not
        // secrets worth hashing, and the server must only compare them.
        let htpasswd: String = users
            .iter()
            .map(|(u, p)| format!("{u}:{{PLAIN}}{p}\n"))
            .collect();
        std::fs::write(dir.join("htpasswd"), htpasswd).unwrap();
        let socket = dir.join("fcgi.sock");
        let fcgi = Command::new(fcgiwrap)
            .process_group(0)
            .arg("-s")
            .arg(format!("unix:{}", socket.display()))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("fcgiwrap.log")).unwrap())
            .spawn()
            .expect("fcgiwrap starts");
        let start = Instant::now();
        while !socket.exists() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "fcgiwrap made no socket"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let port = free_port();
        let d = dir.display();
        // As root, nginx's workers would run as `nobody`, who cannot read
        // the test's private temp dir: keep them as the user running it.
        let user = if is_root() {
            format!("user {};\n", user_name())
        } else {
            String::new()
        };
        std::fs::write(
            dir.join("nginx.conf"),
            format!(
                "daemon off;\nmaster_process on;\nworker_processes 1;\n{user}pid {d}/nginx.pid;\nerror_log {d}/error.log info;\n\
                 events {{ worker_connections 64; }}\n\
                 http {{\n  access_log {d}/access.log;\n  client_body_temp_path {d}/tmp/body;\n  fastcgi_temp_path {d}/tmp/fastcgi;\n\
                 proxy_temp_path {d}/tmp/proxy;\n  uwsgi_temp_path {d}/tmp/uwsgi;\n  scgi_temp_path {d}/tmp/scgi;\n\
                 server {{\n    listen 127.0.0.1:{port} ssl;\n    ssl_certificate {d}/server.pem;\n    ssl_certificate_key {d}/server.key;\n\
                 location / {{\n      auth_basic \"git\";\n      auth_basic_user_file {d}/htpasswd;\n\
                 fastcgi_pass unix:{sock};\n      fastcgi_param SCRIPT_FILENAME {backend};\n\
                 fastcgi_param GIT_PROJECT_ROOT {repos};\n      fastcgi_param GIT_HTTP_EXPORT_ALL 1;\n\
                 fastcgi_param PATH_INFO $uri;\n      fastcgi_param QUERY_STRING $query_string;\n\
                 fastcgi_param REQUEST_METHOD $request_method;\n      fastcgi_param CONTENT_TYPE $content_type;\n\
                 fastcgi_param CONTENT_LENGTH $content_length;\n      fastcgi_param REMOTE_USER $remote_user;\n\
                 fastcgi_param REMOTE_ADDR $remote_addr;\n    }}\n  }}\n}}\n",
                sock = socket.display(),
                backend = backend.display(),
                repos = repos.display(),
            ),
        )
        .unwrap();
        let nginx = Command::new(nginx)
            .process_group(0)
            .arg("-p")
            .arg(dir)
            .arg("-e")
            .arg(dir.join("error.log"))
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("nginx.out")).unwrap())
            .spawn()
            .expect("nginx starts");
        let mut https = Self {
            nginx,
            fcgi,
            port,
            dir: dir.to_owned(),
        };
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if start.elapsed() > Duration::from_secs(10)
                || https.nginx.try_wait().ok().flatten().is_some()
            {
                panic!("nginx did not start: {}", https.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        https
    }

    pub(crate) fn url(&self, name: &str) -> String {
        format!("https://127.0.0.1:{}/{name}", self.port)
    }

    fn log(&self) -> String {
        ["nginx.out", "error.log", "access.log", "fcgiwrap.log"]
            .iter()
            .map(|f| std::fs::read_to_string(self.dir.join(f)).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Https {
    fn drop(&mut self) {
        kill_group(&mut self.nginx);
        kill_group(&mut self.fcgi);
    }
}

/// Every file under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                stack.push(path);
            } else if meta.is_file()
                && std::fs::read(&path)
                    .is_ok_and(|b| b.windows(needle.len().max(1)).any(|w| w == needle))
            {
                out.push(path);
            }
        }
    }
    out
}

#[test]
fn https_with_a_private_ca_and_a_token() {
    const TOKEN: &str = "tok-3b9f1c0e5a7d4f2a";
    const USER_TOKEN: &str = "tok-user-8c1d2e3f";
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let repos = d.join("repos");
    let head = catalog(&d.join("catalog-src"), &repos.join("catalog.git"), true);
    let server = Https::start(
        &d.join("nginx"),
        &repos,
        &[("x-access-token", TOKEN), ("deploy", USER_TOKEN)],
    );
    let fleet = d.join("fleet");
    fleet_dir(&fleet, &server.url("catalog.git"), &d.join("site-a"));
    let ca = server.dir.join("ca.pem");
    let token = d.join("token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    let home = d.join("home");
    let state = d.join("state");
    let access = [
        "--git-ca-file",
        ca.to_str().unwrap(),
        "--git-token-file",
        token.to_str().unwrap(),
    ];
    let mut captured = String::new();
    let mut keep = |out: &Output| captured.push_str(&format!("{}{}", stdout(out), stderr(out)));

    let out = run(
        &fleet,
        &state,
        &home,
        &[&["-vv", "adopt", "a", "--version", "1.0.0"][..], &access].concat(),
    );
    keep(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        stderr(&out),
        server.log()
    );
    let out = run(
        &fleet,
        &state,
        &home,
        &[&["-vv", "plan", "--format", "json"][..], &access].concat(),
    );
    keep(&out);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let plan: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(plan["catalog_commit"], head.as_str());
    assert_eq!(plan["sites"][0]["actions"][0]["id"], "0001-hello", "{plan}");
    let log = server.log();
    assert!(
        log.contains(" - x-access-token ["),
        "the token went as user x-access-token: {log}"
    );

    // USER:TOKEN, through the environment.
    let user_token = d.join("user-token");
    std::fs::write(&user_token, format!("deploy:{USER_TOKEN}")).unwrap();
    let out = sitekeeper(&d.join("state-user"))
        .current_dir(&fleet)
        .env("HOME", &home)
        .env("SITEKEEPER_GIT_CA_FILE", &ca)
        .env("SITEKEEPER_GIT_TOKEN_FILE", &user_token)
        .args(["validate"])
        .output()
        .unwrap();
    keep(&out);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(server.log().contains(" - deploy ["), "{}", server.log());

    // Without the CA: refused, and the message says certificate.
    let out = run(
        &fleet,
        &d.join("state-no-ca"),
        &home,
        &["plan", "--git-token-file", token.to_str().unwrap()],
    );
    keep(&out);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("certificate") && err.contains("--git-ca-file"),
        "{err}"
    );

    // A wrong token: refused, and the message says authentication.
    let wrong = d.join("wrong-token");
    std::fs::write(&wrong, "not-the-token\n").unwrap();
    let out = run(
        &fleet,
        &d.join("state-wrong"),
        &home,
        &[
            "plan",
            "--git-ca-file",
            ca.to_str().unwrap(),
            "--git-token-file",
            wrong.to_str().unwrap(),
        ],
    );
    keep(&out);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("authentication failed") && err.contains("token"),
        "{err}"
    );

    // Neither token is anywhere on disk under the state dirs (the caches'
    // config included) or in anything sitekeeper printed.
    let states = ["state", "state-user", "state-no-ca", "state-wrong"].map(|s| d.join(s));
    for secret in [TOKEN, USER_TOKEN] {
        for dir in &states {
            let found = files_containing(dir, secret.as_bytes());
            assert_eq!(found, Vec::<PathBuf>::new(), "{secret} written to disk");
        }
        assert!(!captured.contains(secret), "{secret} printed:\n{captured}");
    }
    let config = files_containing(&state, b"[core]");
    assert!(!config.is_empty(), "the cache repository exists");
    eprintln!(
        "https: {} bytes of output and the state dirs searched; no token found",
        captured.len()
    );
}

/// The sites of `/status`, by name.
fn status_sites(watch: &Watch) -> Vec<String> {
    let (_, body) = get(&watch.url("/status"));
    let list: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    list.as_array()
        .map(|l| {
            l.iter()
                .filter_map(|s| s["site"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// The site directories of a state dir (its shared entries left out).
fn state_sites(state: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(state)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.path().is_dir())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !["cache", "trust", "locks", "outbox"].contains(&n.as_str()))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

#[test]
fn two_hosts_share_one_fleet_and_each_keeps_only_its_own_sites() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let served = d.join("served");
    catalog(&d.join("catalog-src"), &served.join("catalog.git"), true);
    let daemon = GitDaemon::start(&served);
    let sites = [("a1", "a"), ("a2", "a"), ("b1", "b")];
    let src = d.join("fleet-src");
    let mut files = vec![(
        "fleet.yaml".to_owned(),
        format!(
            "catalogs:\n  acme:\n    source: {}\n    ref: main\n",
            daemon.url("catalog.git")
        ),
    )];
    for (name, host) in sites {
        let root = d.join(format!("site-{name}"));
        write_tree(&root, &[("index.php", "<?php echo 'hi';\n")]);
        files.push((format!("sites/{name}.yaml"), site_yaml(name, &root, host)));
    }
    let files: Vec<(&str, &str)> = files
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    write_tree(&src, &files);
    git(&src, &["init", "-q", "-b", "main"]);
    git(&src, &["add", "-A"]);
    git(&src, &["commit", "-q", "-m", "fleet"]);
    git(
        d,
        &["clone", "-q", "--bare", "fleet-src", "served/fleet.git"],
    );
    let url = daemon.url("fleet.git");
    let cwd = d.join("cwd");
    let home = d.join("home");
    std::fs::create_dir_all(&cwd).unwrap();
    let state = |host: &str| d.join(format!("state-{host}"));
    for (name, host) in sites {
        let out = run(
            &cwd,
            &state(host),
            &home,
            &["--fleet", &url, "adopt", name, "--version", "1.0.0"],
        );
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }

    // plan and status select the same way; a bad selector is a usage error.
    let out = run(
        &cwd,
        &state("b"),
        &home,
        &[
            "--fleet",
            &url,
            "plan",
            "--selector",
            "host=b",
            "--format",
            "json",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let plan: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let planned: Vec<&str> = plan["sites"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["site"].as_str())
        .collect();
    assert_eq!(planned, ["b1"]);
    let out = run(
        &cwd,
        &state("a"),
        &home,
        &[
            "--fleet",
            &url,
            "status",
            "--selector",
            "host=a",
            "--format",
            "json",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let status: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let listed: Vec<&str> = status
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["site"].as_str())
        .collect();
    assert_eq!(listed, ["a1", "a2"]);
    for bad in ["host", "host=a,host=b", "=a"] {
        let out = run(
            &cwd,
            &state("a"),
            &home,
            &["--fleet", &url, "watch", "--selector", bad],
        );
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{bad}: {err}");
        assert!(
            err.contains("--selector") && err.contains("hint:"),
            "{bad}: {err}"
        );
    }

    // Two daemons, one per host, over the one fleet repo.
    let started = Instant::now();
    let mut watches: Vec<(&str, Watch)> = ["a", "b"]
        .into_iter()
        .map(|host| {
            let w = Watch::start_in(
                &cwd,
                &state(host),
                &d.join(format!("watch-{host}.log")),
                &[
                    "--fleet",
                    &url,
                    "--selector",
                    &format!("host={host}"),
                    "--interval",
                    "60s",
                ],
            );
            (host, w)
        })
        .collect();
    let read = |name: &str| {
        std::fs::read_to_string(d.join(format!("site-{name}/index.php"))).unwrap_or_default()
    };
    let logs = || {
        watches
            .iter()
            .map(|(h, w)| format!("--- {h} ---\n{}", w.log()))
            .collect::<String>()
    };
    until(
        Duration::from_secs(30),
        "every site converged by its own host",
        &logs,
        || sites.iter().all(|(name, _)| read(name).contains("hello")),
    );
    let converged = started.elapsed();
    for (host, watch) in &watches {
        // The files change before the reconcile's end is recorded.
        until(
            Duration::from_secs(10),
            "the reconciles recorded",
            &logs,
            || {
                let (_, metrics) = get(&watch.url("/metrics"));
                sites.iter().filter(|(_, h)| h == host).all(|(n, _)| {
                    metrics.contains(&format!(
                        "sitekeeper_last_success_timestamp_seconds{{site=\"{n}\"}}"
                    ))
                })
            },
        );
        let own: Vec<String> = sites
            .iter()
            .filter(|(_, h)| h == host)
            .map(|(n, _)| (*n).to_owned())
            .collect();
        assert_eq!(status_sites(watch), own, "/status of host {host}");
        let (_, metrics) = get(&watch.url("/metrics"));
        for (name, h) in sites {
            assert_eq!(
                metrics.contains(&format!("site=\"{name}\"")),
                h == *host,
                "host {host}'s metrics and site {name}"
            );
        }
        assert_eq!(state_sites(&state(host)), own, "state of host {host}");
        let ledger =
            std::fs::read_to_string(state(host).join(format!("{}/ledger.jsonl", own[0]))).unwrap();
        assert!(ledger.contains("0001-hello"), "{ledger}");
    }
    for (host, watch) in &mut watches {
        assert_eq!(
            watch.terminate(Duration::from_secs(10)),
            Some(0),
            "host {host}"
        );
    }
    eprintln!(
        "two hosts: 3 sites converged by their own hosts in {converged:?}; state a {:?}, state b {:?}",
        state_sites(&state("a")),
        state_sites(&state("b"))
    );
}

/// The value of the metric line `name{repo="URL"}`, if it is there.
fn metric(text: &str, name: &str, repo: &str) -> Option<f64> {
    let prefix = format!("{name}{{repo=\"{repo}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}

/// Runs the flaky server scenario: `watch --interval INTERVAL` over a
/// catalog whose `git daemon` is stopped for `outage` while a fix is
/// pushed. Returns (failures counted, longest backoff seen, time from the
/// server's return to the fix on disk).
pub fn flaky_server(outage: Duration, interval: Duration) -> (f64, f64, Duration) {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let served = d.join("served");
    let work = d.join("catalog-src");
    catalog(&work, &served.join("catalog.git"), false);
    git(&work, &["remote", "add", "origin", "../served/catalog.git"]);
    let mut daemon = GitDaemon::start(&served);
    let url = daemon.url("catalog.git");
    fleet_dir(&d.join("fleet"), &url, &d.join("site-a"));
    let home = d.join("home");
    let out = run(
        &d.join("fleet"),
        &d.join("state"),
        &home,
        &["adopt", "a", "--version", "1.0.0"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let secs = format!("{}s", interval.as_secs());
    let mut watch = Watch::start(d, &["--interval", &secs]);
    until(
        Duration::from_secs(20),
        "the first look",
        &|| watch.log(),
        || get(&watch.url("/status")).1.contains("\"outcome\""),
    );

    // The server goes away; a fix is pushed meanwhile (straight into its
    // repository) and a webhook asks for a fetch at once.
    daemon.stop();
    let down = Instant::now();
    write_tree(&work, &[FIX]);
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "fix"]);
    git(&work, &["push", "-q", "origin", "main"]);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    assert_eq!(
        agent
            .post(&watch.url("/reconcile"))
            .send(&b""[..])
            .unwrap()
            .status()
            .as_u16(),
        202
    );
    let (mut failures, mut longest) = (0.0_f64, 0.0_f64);
    while down.elapsed() < outage {
        assert!(watch.exited().is_none(), "watch died: {}", watch.log());
        let (code, health) = get(&watch.url("/healthz"));
        assert_eq!((code, health.as_str()), (200, "ok\n"));
        let (_, metrics) = get(&watch.url("/metrics"));
        failures = metric(&metrics, "sitekeeper_fetch_failures_total", &url).unwrap_or(0.0);
        longest =
            longest.max(metric(&metrics, "sitekeeper_fetch_backoff_seconds", &url).unwrap_or(0.0));
        std::thread::sleep(Duration::from_millis(250));
    }
    assert!(failures >= 1.0, "no failed fetch counted:\n{}", watch.log());
    assert!(longest >= 2.0, "no backoff shown (longest {longest} s)");
    let (_, body) = get(&watch.url("/status"));
    let status: Value = serde_json::from_str(&body).unwrap();
    let site = &status[0];
    assert_eq!(site["fetch_errors"][0]["repo"], url.as_str(), "{site}");
    assert_eq!(site["fetch_errors"][0]["kind"], "network", "{site}");
    assert_eq!(
        site["failures"], 0,
        "the site itself is not failing: {site}"
    );
    assert!(
        std::fs::read_to_string(d.join("site-a/index.php"))
            .unwrap()
            .contains("'hi'"),
        "the last good commit stays in use"
    );

    // It comes back: the fix lands within one interval (plus its jitter
    // and the time to fetch and apply).
    daemon.restart();
    let log = || watch.log();
    let up = Instant::now();
    until(
        interval + interval / 10 + Duration::from_secs(3),
        "the fix after the server returned",
        &log,
        || std::fs::read_to_string(d.join("site-a/index.php")).is_ok_and(|t| t.contains("hello")),
    );
    let back = up.elapsed();
    until(Duration::from_secs(5), "the failure cleared", &log, || {
        let (_, metrics) = get(&watch.url("/metrics"));
        let (_, status) = get(&watch.url("/status"));
        metric(&metrics, "sitekeeper_fetch_backoff_seconds", &url) == Some(0.0)
            && !status.contains("fetch_errors")
    });
    assert_eq!(
        watch.terminate(Duration::from_secs(10)),
        Some(0),
        "{}",
        watch.log()
    );
    (failures, longest, back)
}

#[test]
fn a_git_server_that_goes_away_leaves_the_last_good_commit_and_is_retried() {
    let (failures, longest, back) = flaky_server(Duration::from_secs(5), Duration::from_secs(3));
    eprintln!(
        "flaky server (5 s outage, --interval 3s): {failures} failed fetches counted, longest backoff {longest} s, converged {back:?} after it returned"
    );
}

/// The long run (`scripts/flaky-git SECONDS`): a 30 s outage by default,
/// with a longer interval so that the backoff can grow.
#[test]
#[ignore = "long: run by scripts/flaky-git"]
fn flaky_git_soak() {
    let outage = std::env::var("SITEKEEPER_FLAKY_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let (failures, longest, back) =
        flaky_server(Duration::from_secs(outage), Duration::from_secs(10));
    eprintln!(
        "flaky server ({outage} s outage, --interval 10s): {failures} failed fetches counted, longest backoff {longest} s, converged {back:?} after it returned"
    );
}

/// What a [`Relay`] does with each new connection.
#[derive(Debug, Clone, Copy)]
enum Mode {
    /// Pass everything both ways.
    Pass,
    /// Pass, but close both sides once the server sent this many bytes.
    CutAfter(u64),
    /// Accept and then say nothing, reading nothing, until stopped.
    Hang,
}

/// A TCP relay in front of a real server on `upstream`, as a flaky
/// network: it passes, cuts connections mid-stream, or hangs.
struct Relay {
    port: u16,
    mode: Arc<Mutex<Mode>>,
    /// Bytes the server sent on the last connection that ended.
    last: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Relay {
    fn start(upstream: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let mode = Arc::new(Mutex::new(Mode::Pass));
        let last = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (mode, last, stop) = (mode.clone(), last.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((client, _)) => {
                            let _ = client.set_nonblocking(false);
                            let m = *mode.lock().unwrap();
                            relay(client, upstream, m, last.clone(), stop.clone());
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
            })
        };
        Self {
            port,
            mode,
            last,
            stop,
            thread: Some(thread),
        }
    }

    fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Serves one client connection as `mode` says.
fn relay(
    client: TcpStream,
    upstream: u16,
    mode: Mode,
    last: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
) {
    if let Mode::Hang = mode {
        std::thread::spawn(move || {
            let _held = client;
            while !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        return;
    }
    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
        return;
    };
    let (Ok(mut from_client), Ok(mut to_server)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from_client, &mut to_server);
        let _ = to_server.shutdown(std::net::Shutdown::Write);
    });
    std::thread::spawn(move || {
        let (mut server, mut client) = (server, client);
        let mut sent = 0u64;
        let mut buf = [0u8; 4096];
        loop {
            let n = match server.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if let Mode::CutAfter(limit) = mode
                && sent + n as u64 >= limit
            {
                let keep = usize::try_from(limit - sent).unwrap_or(0);
                let _ = client.write_all(&buf[..keep]);
                sent = limit;
                // The connection drops in the middle of the server's answer.
                let _ = client.shutdown(std::net::Shutdown::Both);
                let _ = server.shutdown(std::net::Shutdown::Both);
                break;
            }
            if client.write_all(&buf[..n]).is_err() {
                break;
            }
            sent += n as u64;
        }
        let _ = client.shutdown(std::net::Shutdown::Write);
        last.store(sent, Ordering::SeqCst);
    });
}

#[test]
fn a_connection_dropped_mid_fetch_or_a_silent_server_fails_the_fetch_and_fetches_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let served = d.join("served");
    let head = catalog(&d.join("catalog-src"), &served.join("catalog.git"), true);
    let daemon = GitDaemon::start(&served);
    let relay = Relay::start(daemon.port);
    let fleet = d.join("fleet");
    fleet_dir(
        &fleet,
        &format!("git://127.0.0.1:{}/catalog.git", relay.port),
        &d.join("site-a"),
    );
    let home = d.join("home");
    let validate = |state: &str| {
        let start = Instant::now();
        let out = sitekeeper(&d.join(state))
            .current_dir(&fleet)
            .env("HOME", &home)
            .env("SITEKEEPER_GIT_TIMEOUT", "2")
            .args(["validate", "--format", "json"])
            .output()
            .unwrap();
        (out, start.elapsed())
    };

    let (out, _) = validate("state-pass");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains(&head));
    // The whole conversation: the ref advertisement, then the pack.
    let whole = relay.last.load(Ordering::SeqCst);
    assert!(whole > 200, "{whole} bytes");

    relay.set(Mode::CutAfter(whole / 2));
    let (out, cut_took) = validate("state-cut");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("fetch failed"), "{err}");
    assert_eq!(
        cached_refs(&d.join("state-cut")),
        Vec::<String>::new(),
        "a cut fetch moves no ref"
    );

    relay.set(Mode::Hang);
    let (out, hang_took) = validate("state-hang");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    // libgit2 reports a read that timed out as a network failure (its
    // timeout code is lost on the way up): retried like one.
    assert!(
        err.contains("fetch failed") && err.contains("timed out"),
        "{err}"
    );
    assert!(hang_took < Duration::from_secs(20), "{hang_took:?}");
    assert_eq!(cached_refs(&d.join("state-hang")), Vec::<String>::new());
    eprintln!(
        "relay: whole fetch {whole} bytes; cut at {} failed in {cut_took:?}; a silent server failed in {hang_took:?} (timeout 2 s)",
        whole / 2
    );
}

#[test]
fn watch_reads_a_rotated_token_again_on_sighup() {
    const OLD: &str = "tok-old-5d1e9a";
    const NEW: &str = "tok-new-77c0b2";
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let repos = d.join("repos");
    let work = d.join("catalog-src");
    catalog(&work, &repos.join("catalog.git"), false);
    git(&work, &["remote", "add", "origin", "../repos/catalog.git"]);
    let server = Https::start(&d.join("nginx"), &repos, &[("x-access-token", OLD)]);
    let url = server.url("catalog.git");
    fleet_dir(&d.join("fleet"), &url, &d.join("site-a"));
    let ca = server.dir.join("ca.pem");
    let token = d.join("token");
    std::fs::write(&token, OLD).unwrap();
    let access = [
        "--git-ca-file",
        ca.to_str().unwrap(),
        "--git-token-file",
        token.to_str().unwrap(),
    ];
    let out = run(
        &d.join("fleet"),
        &d.join("state"),
        &d.join("home"),
        &[&["adopt", "a", "--version", "1.0.0"][..], &access].concat(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let watch = Watch::start(d, &[&["--interval", "2s"][..], &access].concat());
    let log = || watch.log();
    until(Duration::from_secs(20), "the first look", &log, || {
        get(&watch.url("/status")).1.contains("\"outcome\"")
    });

    // The server rotates the token (nginx reads its password file at each
    // request) and a fix is pushed: the daemon's old token is refused.
    std::fs::write(
        server.dir.join("htpasswd"),
        format!("x-access-token:{{PLAIN}}{NEW}\n"),
    )
    .unwrap();
    write_tree(&work, &[FIX]);
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "fix"]);
    git(&work, &["push", "-q", "origin", "main"]);
    until(
        Duration::from_secs(15),
        "the refused token in /status",
        &log,
        || {
            let (_, body) = get(&watch.url("/status"));
            let status: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            status[0]["fetch_errors"][0]["kind"] == "auth"
        },
    );

    // The new token is written and the daemon told: it reads it again and
    // the fix lands.
    std::fs::write(&token, format!("{NEW}\n")).unwrap();
    let hup = Instant::now();
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(watch.pid().unwrap() as i32).unwrap(),
        rustix::process::Signal::HUP,
    )
    .unwrap();
    until(
        Duration::from_secs(15),
        "the fix after SIGHUP",
        &log,
        || std::fs::read_to_string(d.join("site-a/index.php")).is_ok_and(|t| t.contains("hello")),
    );
    let took = hup.elapsed();
    let text = watch.log();
    assert!(text.contains("git access options read again"), "{text}");
    for secret in [OLD, NEW] {
        assert!(!text.contains(secret), "{secret} logged");
        assert_eq!(
            files_containing(&d.join("state"), secret.as_bytes()),
            Vec::<PathBuf>::new()
        );
    }
    eprintln!("https token rotation: refused as auth, converged {took:?} after SIGHUP");
}
