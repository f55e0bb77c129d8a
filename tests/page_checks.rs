//! Page checks end to end (SPEC §2.1 `health.checks`, §6.2): a site served
//! by a real HTTP server (Python's `http.server`) on 127.0.0.1 while the
//! real binary applies releases to it; what a reader of the page would
//! call broken is rolled back, and what was broken before blames nothing.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::{free_port, run_fleet as run, stderr, stdout, wait_for_port, write_tree};

/// An HTTP server on 127.0.0.1 serving a site root, killed when dropped.
struct Server(Child);

impl Server {
    /// `python3 -m http.server` on `port`, serving `root`.
    fn serve(root: &Path, port: u16) -> Self {
        let child = Command::new("python3")
            .args(["-m", "http.server", "--bind", "127.0.0.1", "--directory"])
            .arg(root)
            .arg(port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 runs");
        wait_for_port(port, Duration::from_secs(10));
        Self(child)
    }

    /// A server that answers 503 while the file `restarting` under `root`
    /// is less than 3 s old (a site restarting after its post hook
    /// touched it), and serves `root` otherwise.
    fn restarting(dir: &Path, root: &Path, port: u16) -> Self {
        let script = dir.join("restarting.py");
        std::fs::write(&script, RESTARTING).expect("write the server script");
        let child = Command::new("python3")
            .arg(&script)
            .arg(root)
            .arg(port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 runs");
        wait_for_port(port, Duration::from_secs(10));
        Self(child)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const RESTARTING: &str = r#"
import http.server, os, sys, time
root, port = sys.argv[1], int(sys.argv[2])
class Handler(http.server.SimpleHTTPRequestHandler):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, directory=root, **kwargs)
    def do_GET(self):
        try:
            age = time.time() - os.stat(os.path.join(root, "restarting")).st_mtime
        except FileNotFoundError:
            age = None
        if age is not None and age < 3:
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        super().do_GET()
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
"#;

/// The shop's home page in release 1.0.0.
const HOME: &str = "<!doctype html>\n<html><head><title>Acme Shop</title></head><body>\n<h1>Acme Shop</h1>\n<p>Welcome to the Acme shop. We sell anvils, rockets, magnets and portable holes, shipped anywhere in the desert within two days.</p>\n<ul><li>Anvils</li><li>Rockets</li><li>Magnets</li><li>Portable holes</li></ul>\n</body></html>\n";

/// A site `s` on release 1.0.0 (`index.html` = `v100`), with release
/// 1.0.1 (`v101`) waiting, and `health` (where `{base}` is the server's
/// URL) in its site file. Returns the directory and the port the site is
/// to be served on.
fn setup(v100: &str, v101: &str, site_extra: &str) -> (tempfile::TempDir, u16) {
    setup_files(&[("index.html", v100)], &[("index.html", v101)], site_extra)
}

/// [`setup`] with any files in the two releases.
fn setup_files(
    v100: &[(&str, &str)],
    v101: &[(&str, &str)],
    site_extra: &str,
) -> (tempfile::TempDir, u16) {
    let port = free_port();
    let dir = tempfile::tempdir().expect("temp dir");
    let base = format!("http://127.0.0.1:{port}");
    let site = format!(
        "site: s\nroot: ../site\nproduct: acme\nchannel: stable\nopt_in: {{upgrades: patch}}\n{}",
        site_extra.replace("{base}", &base)
    );
    write_tree(
        &dir.path().join("fleet"),
        &[
            ("fleet.yaml", "catalogs:\n  acme:\n    source: ../catalog\n"),
            ("sites/s.yaml", &site),
        ],
    );
    write_tree(
        &dir.path().join("catalog"),
        &[
            ("catalog.yaml", "product: acme\nchannels:\n  stable: {}\n"),
            (
                "releases/1.0.0.yaml",
                "version: 1.0.0\nchannels: [stable]\nreleased: 2026-01-01T00:00:00Z\npayload:\n  tree: releases/1.0.0/\n",
            ),
            (
                "releases/1.0.1.yaml",
                "version: 1.0.1\nchannels: [stable]\nreleased: 2026-02-01T00:00:00Z\npayload:\n  tree: releases/1.0.1/\n",
            ),
        ],
    );
    for (version, files) in [("1.0.0", v100), ("1.0.1", v101)] {
        write_tree(&dir.path().join("catalog/releases").join(version), files);
    }
    write_tree(&dir.path().join("site"), v100);
    let out = run(dir.path(), &["adopt", "s", "--version", "1.0.0"]);
    assert!(out.status.success(), "{}", stderr(&out));
    (dir, port)
}

/// The site's `index.html` now.
fn home(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("site/index.html")).expect("index.html")
}

/// The `health` ledger records of the site, as JSON.
fn health_records(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("state/s/ledger.jsonl"))
        .expect("ledger")
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("a JSON line"))
        .filter(|r| r["kind"] == "health")
        .collect()
}

/// Applies and expects the change to be rolled back for `reason`, which
/// the error, the ledger's `health` record and the site's files all show.
fn assert_rolled_back(dir: &Path, before: &str, reason: &str) {
    let out = run(dir, &["apply"]);
    eprintln!("apply said: {}", stderr(&out).trim_end());
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains(reason), "{}", stderr(&out));
    assert_eq!(home(dir), before, "the page is back as it was");
    let health = health_records(dir);
    assert_eq!(health.len(), 1, "{health:?}");
    assert_eq!(health[0]["result"], "rolled_back", "{health:?}");
    let error = health[0]["error"].as_str().unwrap_or_default();
    assert!(error.contains(reason), "{error}");
}

#[test]
fn a_page_showing_a_fatal_error_with_status_200_is_rolled_back() {
    let broken = "<html><body><br />\n<b>Fatal error</b>: Uncaught Error: Call to undefined function wc_get_cart() in /srv/www/shop/index.php:12</body></html>\n";
    let (dir, port) = setup(
        HOME,
        broken,
        "health:\n  checks:\n    - url: {base}/\n      absent: [\"Fatal error\"]\n      contains: [\"</html>\"]\n",
    );
    let _server = Server::serve(&dir.path().join("site"), port);
    assert_rolled_back(
        dir.path(),
        HOME,
        "`/` answered 200 but contains `Fatal error`",
    );
}

#[test]
fn a_release_that_replaces_the_page_with_a_default_page_is_rolled_back_by_similar() {
    let default = "<html><head><title>Apache2 Debian Default Page</title></head><body><h1>It works!</h1><p>This is the default welcome page used to test the correct operation of the Apache2 server after installation.</p></body></html>\n";
    let (dir, port) = setup(
        HOME,
        default,
        "health:\n  checks:\n    - url: {base}/\n      similar: 0.8\n",
    );
    let _server = Server::serve(&dir.path().join("site"), port);
    let out = run(dir.path(), &["apply"]);
    eprintln!("apply said: {}", stderr(&out).trim_end());
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("`/` is ") && err.contains("% similar to before, below 80%"),
        "{err}"
    );
    assert_eq!(home(dir.path()), HOME);
    let health = health_records(dir.path());
    assert_eq!(health[0]["result"], "rolled_back", "{health:?}");
}

/// A page whose form carries a token and whose footer shows a request id,
/// both different on every request, as a CMS's pages do.
fn tokened(csrf: &str, request: &str, footer: &str) -> String {
    format!(
        "<html><body><h1>Acme Shop</h1><p>Sign in to see your orders.</p>\n<form><input type=\"hidden\" name=\"csrf\" value=\"{csrf}\"><input name=\"user\"></form>\n<footer>Request {request}{footer}</footer></body></html>\n"
    )
}

#[test]
fn a_release_that_changes_only_masked_tokens_and_adds_a_footer_line_is_kept() {
    let v100 = tokened("9b1c2f", "5f3e9a1b 77c0aa12 0e4d5c6b 3a2b1c0d 99e8f7a6", "");
    let v101 = tokened(
        "d41d8c",
        "c3b2a190 1f2e3d4c 8a9b0c1d 4d5e6f70 0a1b2c3d",
        "<br>Powered by Acme",
    );
    let health = "health:\n  checks:\n    - url: {base}/\n      similar: 0.8\n      mask: ['name=\"csrf\" value=\"[^\"]*\"', 'Request [0-9a-f ]+']\n";
    let (dir, port) = setup(&v100, &v101, health);
    let _server = Server::serve(&dir.path().join("site"), port);
    let out = run(dir.path(), &["apply"]);
    eprintln!("apply said: {}", stderr(&out).trim_end());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(home(dir.path()), v101, "the release stands");
    let health = health_records(dir.path());
    assert_eq!(health[0]["result"], "ok", "{health:?}");

    // Without the masks, the very same release is not alike enough: the
    // masks are what kept it.
    let unmasked = "health:\n  checks:\n    - url: {base}/\n      similar: 0.8\n";
    let (dir, port) = setup(&v100, &v101, unmasked);
    let _server = Server::serve(&dir.path().join("site"), port);
    assert_rolled_back(dir.path(), &v100, "% similar to before, below 80%");
}

#[test]
fn a_page_that_was_already_missing_before_the_change_blames_nothing() {
    let v101 = HOME.replace("two days", "three days");
    let (dir, port) = setup(
        HOME,
        &v101,
        "health:\n  checks:\n    - url: {base}/\n      similar: 0.8\n    - url: {base}/cart\n",
    );
    let _server = Server::serve(&dir.path().join("site"), port);
    let out = run(dir.path(), &["apply"]);
    eprintln!("apply said: {}", stderr(&out).trim_end());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(home(dir.path()), v101, "the change is kept");
    assert!(
        stdout(&out).contains(
            "s: health check: `/cart` answered 404, expected 2xx; it failed before the change too"
        ),
        "apply tells the operator: {}",
        stdout(&out)
    );
    let health = health_records(dir.path());
    eprintln!("health record: {}", health[0]);
    assert_eq!(health.len(), 1, "{health:?}");
    assert_eq!(health[0]["result"], "failed", "{health:?}");
    assert_eq!(
        health[0]["error"],
        "health check: `/cart` answered 404, expected 2xx; it failed before the change too (`/cart` answered 404, expected 2xx), so the change is kept",
        "{health:?}"
    );
}

/// A site whose post hook restarts it: 503 for 3 s, then 200.
fn restarting_site(settle: &str) -> (tempfile::TempDir, Server) {
    let v101 = HOME.replace("two days", "three days");
    let health = format!(
        "hooks:\n  post_apply: [[\"touch\", \"restarting\"]]\nhealth:\n  settle: {settle}\n  timeout: 2s\n  checks:\n    - url: {{base}}/\n"
    );
    let (dir, port) = setup(HOME, &v101, &health);
    let server = Server::restarting(dir.path(), &dir.path().join("site"), port);
    (dir, server)
}

#[test]
fn a_site_that_answers_503_while_it_restarts_passes_within_settle() {
    let (dir, _server) = restarting_site("10s");
    let start = std::time::Instant::now();
    let out = run(dir.path(), &["apply"]);
    eprintln!("apply said: {}", stderr(&out).trim_end());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        start.elapsed() >= Duration::from_secs(3),
        "it waited for the site to come back"
    );
    let health = health_records(dir.path());
    assert_eq!(health[0]["result"], "ok", "{health:?}");
}

#[test]
fn a_site_still_answering_503_when_settle_ends_is_rolled_back() {
    let (dir, _server) = restarting_site("1s");
    assert_rolled_back(dir.path(), HOME, "`/` answered 503, expected 2xx");
}

/// A page laid out by its stylesheet: a coloured sidebar and the text.
const LAID_OUT: &str = "<!doctype html>\n<html><head><link rel=\"stylesheet\" href=\"style.css\"></head><body>\n<div class=\"side\">Menu</div>\n<div class=\"main\"><h1>Acme Shop</h1><p>Anvils, rockets and magnets.</p></div>\n</body></html>\n";

/// The stylesheet with the sidebar on the `side` given.
fn style(side: &str) -> String {
    format!(
        "body {{ margin: 0; font: 16px sans-serif; background: #fff; }}\n.side {{ position: absolute; top: 0; {side}: 0; width: 240px; height: 800px; background: #2a6; }}\n.main {{ margin-{side}: 260px; padding: 20px; }}\n"
    )
}

/// A site whose release 1.0.1 moves the sidebar from the right to the
/// left, in its stylesheet only, judged by `visual: least`.
fn relaid_site(least: &str) -> (tempfile::TempDir, Server) {
    let (right, left) = (style("right"), style("left"));
    let health = format!(
        "health:\n  timeout: 20s\n  checks:\n    - url: {{base}}/\n      similar: 0.99\n      visual: {least}\n"
    );
    let (dir, port) = setup_files(
        &[("index.html", LAID_OUT), ("style.css", &right)],
        &[("index.html", LAID_OUT), ("style.css", &left)],
        &health,
    );
    let server = Server::serve(&dir.path().join("site"), port);
    (dir, server)
}

#[test]
fn a_release_that_only_moves_the_layout_is_rolled_back_by_visual() {
    let (dir, _server) = relaid_site("0.95");
    let right = style("right");
    let out = run(dir.path(), &["apply"]);
    eprintln!("apply said: {}", stderr(&out).trim_end());
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("`/` looks ") && err.contains("% like before, below 95%"),
        "{err}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("site/style.css")).unwrap(),
        right,
        "the stylesheet is back"
    );
    // The last change's screenshots are kept for whoever looks into it.
    for stage in ["before", "after", "diff"] {
        let shot = dir
            .path()
            .join(format!("state/s/health/check-0-{stage}.png"));
        let png = std::fs::read(&shot).unwrap_or_default();
        assert!(png.starts_with(b"\x89PNG"), "{} is no PNG", shot.display());
    }
    assert!(
        err.contains("check-0-diff.png"),
        "the reason names the picture: {err}"
    );
}

#[test]
fn a_release_that_only_moves_the_layout_is_kept_by_a_lenient_visual() {
    let (dir, _server) = relaid_site("0.5");
    let out = run(dir.path(), &["apply"]);
    eprintln!("apply said: {}", stderr(&out).trim_end());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("site/style.css")).unwrap(),
        style("left"),
        "the release stands"
    );
    assert_eq!(health_records(dir.path())[0]["result"], "ok");
}

#[test]
fn a_visual_check_without_a_browser_holds_the_plan_in_preflight() {
    let (dir, _port) = setup(
        HOME,
        &HOME.replace("two days", "three days"),
        "health:\n  checks:\n    - url: {base}/\n      visual: 0.9\n",
    );
    let out = crate::support::sitekeeper(&dir.path().join("state"))
        .current_dir(dir.path().join("fleet"))
        .env("SITEKEEPER_NOW", crate::support::NOW)
        .env("SITEKEEPER_CHROMIUM", dir.path().join("no-such-browser"))
        .arg("apply")
        .output()
        .expect("the binary runs");
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("health.checks[0].visual") && err.contains("SITEKEEPER_CHROMIUM"),
        "{err}"
    );
    assert_eq!(home(dir.path()), HOME, "nothing was written");
}
