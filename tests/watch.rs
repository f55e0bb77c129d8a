//! `sitekeeper watch` end to end (SPEC §8): a catalog served by a real
//! `git daemon`, a webhook, the timer, drift reverted through file
//! watching, SIGTERM; and the webhook's authentication.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hmac::Mac;

use crate::support::{GitDaemon, free_port, git, sitekeeper, stderr, wait_for_port, write_tree};

/// A running `sitekeeper watch`, killed if the test fails early.
pub struct Watch {
    child: Option<Child>,
    port: u16,
    log: PathBuf,
}

impl Watch {
    /// Starts `watch` with the fleet in `dir/fleet` and state in `dir/state`.
    pub fn start(dir: &Path, extra: &[&str]) -> Self {
        Self::start_env(dir, extra, &[])
    }

    /// Starts `watch` in `cwd` with state in `state`, logging to `log`.
    pub fn start_in(cwd: &Path, state: &Path, log: &Path, extra: &[&str]) -> Self {
        Self::start_in_env(cwd, state, log, extra, &[])
    }

    /// [`Watch::start`] with more environment variables (failpoints).
    pub fn start_env(dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Self {
        Self::start_in_env(
            &dir.join("fleet"),
            &dir.join("state"),
            &dir.join("watch.log"),
            extra,
            env,
        )
    }

    /// [`Watch::start_in`] with more environment variables.
    pub fn start_in_env(
        cwd: &Path,
        state: &Path,
        log: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let port = free_port();
        let log = log.to_owned();
        let child = sitekeeper(state)
            .current_dir(cwd)
            .args(["watch", "--listen", &format!("127.0.0.1:{port}")])
            .args(extra)
            .envs(env.iter().copied())
            .env("SITEKEEPER_LOG", "sitekeeper=debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        wait_for_port(port, Duration::from_secs(20));
        Self {
            child: Some(child),
            port,
            log,
        }
    }

    /// The URL of an endpoint.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether it has exited (and how), without waiting.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, and the exit code within `within`.
    pub fn terminate(&mut self, within: Duration) -> Option<i32> {
        let mut child = self.child.take()?;
        rustix::process::kill_process(
            rustix::process::Pid::from_child(&child),
            rustix::process::Signal::TERM,
        )
        .unwrap();
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.code();
            }
            if start.elapsed() > within {
                let _ = child.kill();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

/// POSTs to the daemon; returns the status code.
fn post(url: &str, headers: &[(&str, &str)], body: &[u8]) -> u16 {
    let mut req = agent().post(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send(body).unwrap().status().as_u16()
}

/// A POST /reconcile written by hand (`headers` end in CRLF), to send
/// what a well-behaved client library would not; returns the status code.
/// The server may close before reading everything, so write errors are
/// ignored and the answer read anyway.
fn raw_post(port: u16, headers: &str, body: &[u8]) -> u16 {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let head = format!("POST /reconcile HTTP/1.1\r\nHost: localhost\r\n{headers}\r\n");
    let _ = conn
        .write_all(head.as_bytes())
        .and_then(|()| conn.write_all(body));
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = conn.read(&mut buf) {
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
        if answer.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let text = String::from_utf8_lossy(&answer);
    text.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP answer: {text:?}"))
}

/// GETs `url`: status and body.
pub fn get(url: &str) -> (u16, String) {
    let mut resp = agent().get(url).call().unwrap();
    let status = resp.status().as_u16();
    (status, resp.body_mut().read_to_string().unwrap())
}

/// Waits until `cond` holds; returns how long that took.
pub fn until(
    within: Duration,
    what: &str,
    log: &dyn Fn() -> String,
    cond: impl Fn() -> bool,
) -> Duration {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < within,
            "{what} did not happen within {within:?}\n--- watch log ---\n{}",
            log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    start.elapsed()
}

/// Commits the catalog work tree and pushes it to the served bare repo.
fn publish(work: &Path, message: &str) {
    git(work, &["add", "-A"]);
    git(work, &["commit", "-q", "-m", message]);
    git(work, &["push", "-q", "origin", "main"]);
}

/// A catalog (git work tree `catalog-src`, pushed to `served/catalog.git`
/// and served by a git daemon), and a fleet of two adopted sites: `s`
/// (drift preserved) and `r` (drift reverted).
fn setup() -> (tempfile::TempDir, GitDaemon) {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("catalog-src");
    write_tree(&work, crate::support::CATALOG);
    git(&work, &["init", "-q", "-b", "main"]);
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "1.0.0"]);
    std::fs::create_dir_all(dir.path().join("served")).unwrap();
    git(
        dir.path(),
        &["clone", "-q", "--bare", "catalog-src", "served/catalog.git"],
    );
    git(&work, &["remote", "add", "origin", "../served/catalog.git"]);
    let daemon = GitDaemon::start(&dir.path().join("served"));
    let site = |name: &str, drift: &str| {
        format!(
            "site: {name}\nroot: ../site-{name}\nproduct: acme\nchannel: stable\ndrift: {drift}\nopt_in: {{hotfixes: all}}\n"
        )
    };
    write_tree(
        &dir.path().join("fleet"),
        &[
            (
                "fleet.yaml",
                &format!(
                    "catalogs:\n  acme:\n    source: {}\n    ref: main\n",
                    daemon.url("catalog.git")
                ),
            ),
            ("sites/s.yaml", &site("s", "preserve")),
            ("sites/r.yaml", &site("r", "revert")),
        ],
    );
    for name in ["s", "r"] {
        write_tree(
            &dir.path().join(format!("site-{name}")),
            &[("index.php", "<?php echo 'hi';\n")],
        );
        let out = sitekeeper(&dir.path().join("state"))
            .current_dir(dir.path().join("fleet"))
            .args(["adopt", name, "--version", "1.0.0"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    }
    (dir, daemon)
}

#[test]
fn watch_converges_on_webhook_timer_and_drift_then_stops_on_sigterm() {
    let (dir, _daemon) = setup();
    let d = dir.path();
    let work = d.join("catalog-src");
    let interval = Duration::from_secs(3);
    let mut watch = Watch::start(d, &["--interval", "3s", "--jobs", "2"]);
    let log = || watch.log();
    let read = |p: &str| std::fs::read_to_string(d.join(p)).unwrap_or_default();
    until(
        Duration::from_secs(20),
        "the first look at both sites",
        &log,
        || get(&watch.url("/status")).1.matches("\"outcome\"").count() == 2,
    );

    // 1. A new fix and a webhook: converged within 2 s of the POST.
    write_tree(
        &work,
        &[(
            "fixes/0001-hello.yaml",
            "id: 0001-hello\ntitle: Hello\nreason: Politeness\nseverity: normal\napplies_to: \">=1.0.0\"\nops:\n  - replace: {files: [\"index.php\"], find: \"'hi'\", with: \"'hello'\"}\n",
        )],
    );
    publish(&work, "fix 0001");
    let posted = Instant::now();
    assert_eq!(post(&watch.url("/reconcile"), &[], b""), 202);
    until(
        Duration::from_secs(2),
        "the webhook's fix on s",
        &log,
        || read("site-s/index.php").contains("hello"),
    );
    let webhook = posted.elapsed();
    until(
        Duration::from_secs(2),
        "the webhook's fix on r",
        &log,
        || read("site-r/index.php").contains("hello"),
    );
    // The files change before the ledger record is appended (the point's
    // commit is the atomic step); wait for the record.
    until(
        Duration::from_secs(2),
        "the fix's ledger record",
        &log,
        || read("state/s/ledger.jsonl").contains("0001-hello"),
    );
    let ledger = read("state/s/ledger.jsonl");
    assert!(
        ledger.contains(r#""via":"webhook""#),
        "the ledger names the trigger: {ledger}"
    );

    // 2. Another fix, no webhook: the timer finds it within the interval
    // plus its jitter (a tenth), plus the time to fetch and apply.
    write_tree(
        &work,
        &[(
            "fixes/0002-extra.yaml",
            "id: 0002-extra\ntitle: Extra\nreason: A new library\nseverity: normal\napplies_to: \">=1.0.0\"\nops:\n  - add: {path: lib/extra.php, content: \"<?php\\n\"}\n",
        )],
    );
    publish(&work, "fix 0002");
    let timer = until(
        interval + interval / 10 + Duration::from_secs(2),
        "the timer's fix",
        &log,
        || d.join("site-s/lib/extra.php").exists() && d.join("site-r/lib/extra.php").exists(),
    );

    // 3. Drift on the `revert` site is undone within 2 s; on the
    // `preserve` site it is kept and reported.
    std::thread::sleep(Duration::from_millis(1200));
    std::fs::write(d.join("site-r/index.php"), "<?php hacked();\n").unwrap();
    std::fs::write(d.join("site-s/index.php"), "<?php echo 'local';\n").unwrap();
    let edited = Instant::now();
    until(
        Duration::from_secs(2),
        "the revert of r's drift",
        &log,
        || read("site-r/index.php").contains("hello"),
    );
    let revert = edited.elapsed();
    until(Duration::from_secs(5), "s's drift in /status", &log, || {
        let (_, body) = get(&watch.url("/status"));
        let list: serde_json::Value = serde_json::from_str(&body).unwrap();
        list.as_array()
            .unwrap()
            .iter()
            .any(|s| s["site"] == "s" && s["drift"] == serde_json::json!(["index.php"]))
    });
    assert_eq!(
        read("site-s/index.php"),
        "<?php echo 'local';\n",
        "preserved"
    );

    // The endpoints.
    let (code, health) = get(&watch.url("/healthz"));
    assert_eq!((code, health.as_str()), (200, "ok\n"));
    let (code, metrics) = get(&watch.url("/metrics"));
    assert_eq!(code, 200);
    for needle in [
        "sitekeeper_reconciles_total{site=\"s\",result=\"changed\"}",
        "sitekeeper_drifted_files{site=\"s\"} 1",
        "sitekeeper_reconcile_duration_seconds_bucket",
        "sitekeeper_last_success_timestamp_seconds{site=\"r\"}",
    ] {
        assert!(metrics.contains(needle), "{needle} missing:\n{metrics}");
    }
    let (_, status) = get(&watch.url("/status"));
    let list: serde_json::Value = serde_json::from_str(&status).unwrap();
    for s in list.as_array().unwrap() {
        assert!(s["phase"].is_string() && s["percent"].is_number(), "{s}");
        assert_eq!(
            s["fixes"],
            serde_json::json!(["0001-hello", "0002-extra"]),
            "{s}"
        );
    }

    // 4. SIGTERM: exit 0 within 10 s.
    let stopping = Instant::now();
    let code = watch.terminate(Duration::from_secs(10));
    assert_eq!(code, Some(0), "{}", watch.log());
    eprintln!(
        "watch: webhook converged in {webhook:?}, timer in {timer:?} (interval 3 s), drift reverted in {revert:?}, SIGTERM exit in {:?}",
        stopping.elapsed()
    );
    assert!(
        watch.log().contains("reason=\"file change\"") || watch.log().contains("file change"),
        "reconciles record their reason"
    );
}

#[test]
fn the_webhook_refuses_wrong_tokens_signatures_and_oversized_bodies() {
    let (dir, _daemon) = setup();
    let secret = "0123456789abcdef0123456789abcdef";
    std::fs::write(dir.path().join("secret"), format!("{secret}\n")).unwrap();
    let watch = Watch::start(
        dir.path(),
        &[
            "--interval",
            "1h",
            "--webhook-secret-file",
            dir.path().join("secret").to_str().unwrap(),
        ],
    );
    let url = watch.url("/reconcile");
    let body = br#"{"ref":"refs/heads/main"}"#;
    let hmac = |key: &[u8], body: &[u8]| {
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
        mac.update(body);
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    };
    let good_sig = hmac(secret.as_bytes(), body);
    assert_eq!(post(&url, &[], body), 401, "missing header");
    assert_eq!(
        post(&url, &[("Authorization", "Bearer not-the-secret")], body),
        401,
        "wrong token"
    );
    assert_eq!(
        post(
            &url,
            &[("X-Hub-Signature-256", &hmac(b"another key", body))],
            body
        ),
        401,
        "wrong HMAC"
    );
    assert_eq!(
        post(
            &url,
            &[("X-Hub-Signature-256", &good_sig)],
            b"{\"ref\":\"tampered\"}"
        ),
        401,
        "an HMAC of another body"
    );
    // Oversized, declared: refused before a byte of the body is read.
    assert_eq!(
        raw_post(
            watch.port,
            &format!(
                "Content-Length: {}\r\nAuthorization: Bearer {secret}\r\n",
                2 << 20
            ),
            b""
        ),
        413,
        "oversized declared body"
    );
    // Oversized, chunked: refused once the cap is passed.
    let mut chunked = Vec::new();
    for _ in 0..40 {
        chunked.extend_from_slice(format!("{:x}\r\n", 64 << 10).as_bytes());
        chunked.extend(std::iter::repeat_n(b'x', 64 << 10));
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    assert_eq!(
        raw_post(
            watch.port,
            &format!("Transfer-Encoding: chunked\r\nAuthorization: Bearer {secret}\r\n"),
            &chunked
        ),
        413,
        "oversized chunked body"
    );
    assert_eq!(
        post(
            &url,
            &[("Authorization", &format!("Bearer {secret}"))],
            body
        ),
        202
    );
    assert_eq!(post(&url, &[("X-Hub-Signature-256", &good_sig)], body), 202);
    assert_eq!(
        post(
            &format!("{url}?site=nope"),
            &[("Authorization", &format!("Bearer {secret}"))],
            body
        ),
        404
    );
    let log = watch.log();
    assert!(log.contains("webhook"), "{log}");
}

#[test]
fn watch_refuses_an_invalid_fleet_at_start_with_exit_2() {
    let dir = crate::support::fleet_with(&[(
        "sites/s.yaml",
        "site: s\nroot: ../site\nproduct: nope\nchannel: stable\n",
    )]);
    let out = Command::new(env!("CARGO_BIN_EXE_sitekeeper"))
        .current_dir(dir.path().join("fleet"))
        .args(["--state-dir", dir.path().join("state").to_str().unwrap()])
        .args(["watch", "--interval", "1s"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("sites/s.yaml:3:10:"),
        "{}",
        stderr(&out)
    );

    let (dir, _daemon) = setup();
    let out = sitekeeper(&dir.path().join("state"))
        .current_dir(dir.path().join("fleet"))
        .args(["watch", "s", "nope", "--interval", "1s"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("there is no site named \"nope\" to watch"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn sigterm_during_a_change_undoes_it_and_exits_0() {
    let (dir, _daemon) = setup();
    let d = dir.path();
    // The owner's pre_apply hook keeps the change in flight for a while.
    let yaml = d.join("fleet/sites/s.yaml");
    let mut text = std::fs::read_to_string(&yaml).unwrap();
    text.push_str("hooks:\n  pre_apply: [[\"sh\", \"-c\", \"touch ../hook-started; sleep 2\"]]\n");
    std::fs::write(&yaml, text).unwrap();
    let work = d.join("catalog-src");
    write_tree(
        &work,
        &[(
            "fixes/0001-hello.yaml",
            "id: 0001-hello\ntitle: Hello\nreason: Politeness\nseverity: normal\napplies_to: \">=1.0.0\"\nops:\n  - replace: {files: [\"index.php\"], find: \"'hi'\", with: \"'hello'\"}\n",
        )],
    );
    publish(&work, "fix 0001");
    let before = crate::support::read_tree(&d.join("site-s"));
    // Only s: r (no hook) has no part in this.
    let mut watch = Watch::start(d, &["s", "--interval", "1h"]);
    let log = || watch.log();
    until(Duration::from_secs(10), "the hook to start", &log, || {
        d.join("hook-started").exists()
    });
    std::thread::sleep(Duration::from_millis(300));
    let stopping = Instant::now();
    let code = watch.terminate(Duration::from_secs(10));
    assert_eq!(code, Some(0), "{}", watch.log());
    let took = stopping.elapsed();
    assert_eq!(
        crate::support::read_tree(&d.join("site-s")),
        before,
        "the change in flight was undone\n{}",
        watch.log()
    );
    assert!(!d.join("state/s/journal/txn.json").exists());
    let ledger = std::fs::read_to_string(d.join("state/s/ledger.jsonl")).unwrap();
    assert!(!ledger.contains("0001-hello"), "{ledger}");
    assert!(watch.log().contains("stopping"), "{}", watch.log());
    assert!(
        watch.log().contains("interrupted: sitekeeper is stopping"),
        "the transaction saw the stop: {}",
        watch.log()
    );
    eprintln!("watch: SIGTERM during a change: undone, exit 0 in {took:?}");
}

/// The report repository's refs (empty: it never received anything).
fn refs(repo: &Path) -> String {
    git(repo, &["for-each-ref"])
}

#[test]
fn status_reports_leave_the_machine_only_with_consent() {
    let (dir, _daemon) = setup();
    let d = dir.path();
    git(d, &["init", "-q", "--bare", "-b", "status", "reports.git"]);
    let fleet_yaml = d.join("fleet/fleet.yaml");
    let mut text = std::fs::read_to_string(&fleet_yaml).unwrap();
    text.push_str(&format!(
        "reports:\n  git: {}\n  branch: status\n",
        d.join("reports.git").display()
    ));
    std::fs::write(&fleet_yaml, text).unwrap();
    let work = d.join("catalog-src");
    write_tree(
        &work,
        &[(
            "fixes/0001-hello.yaml",
            "id: 0001-hello\ntitle: Hello\nreason: Politeness\nseverity: normal\napplies_to: \">=1.0.0\"\nops:\n  - replace: {files: [\"index.php\"], find: \"'hi'\", with: \"'hello'\"}\n",
        )],
    );
    publish(&work, "fix 0001");

    // Every opt-in false: changes happen, nothing is sent.
    let mut watch = Watch::start(d, &["--interval", "2s"]);
    let log = || watch.log();
    until(
        Duration::from_secs(10),
        "both sites converged",
        &log,
        || {
            std::fs::read_to_string(d.join("site-s/index.php")).is_ok_and(|t| t.contains("hello"))
                && std::fs::read_to_string(d.join("site-r/index.php"))
                    .is_ok_and(|t| t.contains("hello"))
        },
    );
    // Past the publish delay and two timer turns.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(refs(&d.join("reports.git")), "", "nothing was sent");
    assert_eq!(watch.terminate(Duration::from_secs(10)), Some(0));
    assert_eq!(refs(&d.join("reports.git")), "", "nothing was sent");

    // Site s opts in to status and error reports (not the URL): exactly
    // those fields arrive, and nothing about r.
    let yaml = d.join("fleet/sites/s.yaml");
    let text = std::fs::read_to_string(&yaml).unwrap().replace(
        "opt_in: {hotfixes: all}",
        "opt_in: {hotfixes: all, status_reports: true, error_reports: true}\nlabels: {url: \"https://shop.example.com/\"}",
    );
    std::fs::write(&yaml, text).unwrap();
    let watch = Watch::start(d, &["--interval", "2s"]);
    let log = || watch.log();
    until(Duration::from_secs(15), "the report of s", &log, || {
        !refs(&d.join("reports.git")).is_empty()
    });
    let files = git(
        &d.join("reports.git"),
        &["ls-tree", "-r", "--name-only", "status"],
    );
    assert_eq!(files.trim(), "status/s.json", "only the site that opted in");
    let body = git(&d.join("reports.git"), &["show", "status:status/s.json"]);
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
    let keys: Vec<&str> = report
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        ["fixes", "health", "site", "version"],
        "no error (there is none), no URL (not opted in): {body}"
    );
    assert_eq!(report["fixes"], serde_json::json!(["0001-hello"]));
}
