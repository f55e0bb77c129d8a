//! The dashboard (SPEC §8, issue 21) in a real browser: Debian's headless
//! Chromium driven over the DevTools protocol ([`cdp`]) against the real
//! `sitekeeper watch` on 127.0.0.1. The fleet page lists every site with
//! its version and a progress bar that moves during a slow apply without a
//! reload; the site page shows the history with a rolled-back change and
//! its reason, and the free space; signing in and pressing "roll back to
//! point N" rolls the site back; POSTs without a session or a CSRF token,
//! or to a read-only dashboard, change nothing; text from the fleet and
//! catalog is escaped; the security headers are there.
//!
//! `SITEKEEPER_SCREENSHOTS=DIR` keeps the pages' screenshots in DIR (the
//! README's come from `SITEKEEPER_SCREENSHOTS=docs`).

mod cdp;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::support::{fleet_with, read_tree, run_fleet, sha256, stderr, write_tree};
use crate::watch::{Watch, until};
use cdp::Browser;

/// Text that must never reach a page as markup.
const XSS: &str = "<script>alert('xss')</script>";
/// The dashboard token of the tests that sign in.
const TOKEN: &str = "dashboard-token-for-tests-0123456789";

/// A fleet of two sites on a directory catalog (1.0.0, 1.0.1, a broken
/// 1.0.2, and a critical fix whose reason holds [`XSS`]):
///
/// * `shop` was upgraded by `apply` to 1.0.2, whose health check failed,
///   so it was rolled back (1.0.2 and the fix quarantined), then to 1.0.1:
///   points 1 adopt, 2 the failed change, 3 its automatic rollback, 4 1.0.1;
/// * `slow` (label `note` = [`XSS`]) is on 1.0.0 under a policy that
///   needs approval; its `pre_apply` hook sleeps 3 s.
///
/// Returns the directory and the tree hash of `shop` at point 1.
fn setup() -> (tempfile::TempDir, String) {
    let dir = fleet_with(&[
        (
            "policies/reviewed.yaml",
            "policy: reviewed\nextends: base\nrequire_approval: [hotfix, patch]\n",
        ),
        (
            "sites/shop.yaml",
            "site: shop\nroot: ../site-shop\nproduct: acme\nchannel: stable\nopt_in: {upgrades: patch}\nhealth:\n  command: [\"sh\", \"-c\", \"! grep -q broken index.php\"]\n",
        ),
        (
            "sites/slow.yaml",
            &format!(
                "site: slow\nroot: ../site-slow\nproduct: acme\nchannel: stable\npolicy: reviewed\nopt_in: {{upgrades: patch, hotfixes: all}}\nlabels: {{note: \"{XSS}\"}}\nhooks:\n  pre_apply: [[\"sh\", \"-c\", \"sleep 3\"]]\n"
            ),
        ),
    ]);
    let d = dir.path();
    write_tree(
        &d.join("catalog"),
        &[
            (
                "releases/1.0.1.yaml",
                "version: 1.0.1\nchannels: [stable]\nreleased: 2026-02-01T00:00:00Z\npayload:\n  tree: releases/1.0.1/\n",
            ),
            ("releases/1.0.1/index.php", "<?php echo 'v1.0.1';\n"),
            (
                "releases/1.0.2.yaml",
                "version: 1.0.2\nchannels: [stable]\nreleased: 2026-03-01T00:00:00Z\npayload:\n  tree: releases/1.0.2/\n",
            ),
            ("releases/1.0.2/index.php", "<?php echo 'broken';\n"),
            (
                "fixes/0001-greet.yaml",
                &format!(
                    "id: 0001-greet\ntitle: Greet politely\nreason: \"{XSS} in the greeting\"\nseverity: critical\napplies_to: \">=1.0.0\"\nops:\n  - replace: {{files: [\"*.php\"], find: \"echo\", with: \"print\"}}\n"
                ),
            ),
        ],
    );
    for name in ["shop", "slow"] {
        write_tree(
            &d.join(format!("site-{name}")),
            &[("index.php", "<?php echo 'hi';\n")],
        );
        let out = run_fleet(d, &["adopt", name, "--version", "1.0.0"]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let point1 = tree_hash(&d.join("site-shop"));
    // 1.0.2 fails its check and is rolled back (exit 1), then 1.0.1 lands.
    let out = run_fleet(d, &["apply", "shop"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let out = run_fleet(d, &["apply", "shop"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(d.join("site-shop/index.php")).unwrap(),
        "<?php echo 'v1.0.1';\n"
    );
    (dir, point1)
}

/// A hash of every file under `root`, names and contents.
fn tree_hash(root: &Path) -> String {
    let mut all = Vec::new();
    for (name, bytes) in read_tree(root) {
        all.extend_from_slice(name.as_bytes());
        all.push(0);
        all.extend_from_slice(sha256(&bytes).as_bytes());
        all.push(b'\n');
    }
    sha256(&all)
}

/// Starts `watch` (interval 1 h: only what the test does happens) and
/// waits for its first look at every site.
fn watch(d: &Path, extra: &[&str]) -> Watch {
    let mut args = vec!["--interval", "1h"];
    args.extend_from_slice(extra);
    let w = Watch::start(d, &args);
    let log = || w.log();
    until(
        Duration::from_secs(30),
        "the first look at every site",
        &log,
        || {
            status(&w).as_array().is_some_and(|sites| {
                sites.len() == 2 && sites.iter().all(|s| !s["last_reconcile"].is_null())
            })
        },
    );
    w
}

/// A client that follows no redirect and returns every status.
fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

fn status(w: &Watch) -> Value {
    agent()
        .get(&w.url("/status"))
        .call()
        .ok()
        .and_then(|mut r| r.body_mut().read_to_string().ok())
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null)
}

/// A GET: status, headers, body.
fn get(url: &str) -> (u16, ureq::http::HeaderMap, String) {
    let mut r = agent().get(url).call().expect("GET");
    let body = r.body_mut().read_to_string().unwrap_or_default();
    (r.status().as_u16(), r.headers().clone(), body)
}

/// A form POST with `cookie`: status, headers, body.
fn post(url: &str, cookie: Option<&str>, form: &[(&str, &str)]) -> (u16, ureq::http::HeaderMap) {
    let mut req = agent()
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded");
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    let body: String = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    let r = req.send(body.as_bytes()).expect("POST");
    (r.status().as_u16(), r.headers().clone())
}

/// Signs in over HTTP: the session cookie (`name=value`).
fn sign_in(w: &Watch) -> String {
    let (code, headers) = post(&w.url("/signin"), None, &[("token", TOKEN)]);
    assert_eq!(code, 303);
    let set = headers
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .expect("a session cookie")
        .to_owned();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(attr), "{set}");
    }
    set.split(';').next().unwrap_or_default().to_owned()
}

/// The CSRF token in a page's forms.
fn csrf_of(page: &str) -> String {
    let at = page.find("name=\"csrf\" value=\"").expect("a CSRF field") + 19;
    page[at..].split('"').next().unwrap_or_default().to_owned()
}

fn ledger(d: &Path, site: &str) -> Vec<Value> {
    std::fs::read_to_string(d.join(format!("state/{site}/ledger.jsonl")))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a ledger record"))
        .collect()
}

/// Where screenshots go, when asked for.
fn screenshots() -> Option<PathBuf> {
    std::env::var_os("SITEKEEPER_SCREENSHOTS")
        .map(|d| crate::support::repo_root().join(PathBuf::from(d)))
}

#[test]
fn the_fleet_page_lists_every_site_and_its_bar_moves_during_a_slow_apply() {
    let (dir, _) = setup();
    let d = dir.path();
    let w = watch(d, &[]);
    let mut b = Browser::start();
    b.goto(&w.url("/"));
    let rows = b.eval(
        "[...document.querySelectorAll('tbody tr[data-site]')].map(r => [r.dataset.site, r.querySelector('[data-field=version]').textContent, r.querySelector('progress') !== null])",
    );
    let rows = rows.as_array().expect("rows");
    assert_eq!(rows.len(), 2, "{rows:?}");
    for (site, version) in [("shop", "1.0.1"), ("slow", "1.0.0")] {
        assert!(
            rows.iter()
                .any(|r| r[0] == site && r[1] == version && r[2] == true),
            "{site} {version} with a progress bar: {rows:?}"
        );
    }
    // Record the bar's value every 50 ms from inside the page, which is
    // never reloaded (the marker would be gone).
    b.eval(
        "window.__marker = 'same page'; window.__seen = []; setInterval(() => window.__seen.push(document.querySelector('tr[data-site=slow] progress').value), 50); true",
    );
    b.wait_for(
        "document.getElementById('live').textContent.includes('Live updates on')",
        Duration::from_secs(10),
    );
    let plan = run_fleet(d, &["plan", "slow", "--format", "json"]);
    let plan: Value = serde_json::from_slice(&plan.stdout).expect("the plan's JSON");
    let digest = plan["sites"][0]["plan_digest"].as_str().expect("a digest");
    let out = run_fleet(
        d,
        &["approve", "slow", "--digest", digest, "--by", "tester"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let (code, _) = post(&w.url("/reconcile?site=slow"), None, &[]);
    assert_eq!(code, 202);
    b.wait_for(
        "document.querySelector('tr[data-site=slow] [data-field=version]').textContent === '1.0.2' && document.querySelector('tr[data-site=slow] [data-field=outcome]').textContent.includes('changed')",
        Duration::from_secs(40),
    );
    // The sampler runs every 50 ms: give it a turn after the last event.
    b.wait_for(
        "window.__seen.length > 0 && window.__seen[window.__seen.length - 1] === 100",
        Duration::from_secs(5),
    );
    assert_eq!(b.eval("window.__marker"), "same page", "no reload");
    let seen: Vec<u64> = b
        .eval("window.__seen")
        .as_array()
        .expect("values")
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    let mut distinct = seen.clone();
    distinct.dedup();
    assert!(
        distinct.iter().any(|v| *v > 0 && *v < 100) && distinct.last() == Some(&100),
        "the bar moved through the change and ended full: {distinct:?}"
    );
    eprintln!("dashboard: the slow site's bar went through {distinct:?} without a reload");
    if let Some(dir) = screenshots() {
        b.goto(&w.url("/"));
        b.screenshot(&dir.join("dashboard-fleet.png"));
    }
}

#[test]
fn the_site_page_shows_the_history_and_a_signed_in_operator_rolls_back_from_it() {
    let (dir, point1) = setup();
    let d = dir.path();
    let token = d.join("ui-token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    let w = watch(d, &["--ui-token-file", token.to_str().unwrap()]);
    let mut b = Browser::start();
    b.goto(&w.url("/sites/shop"));
    // The failed change is marked rolled back, with its check's reason;
    // the automatic rollback names why and links to what it undid.
    let undone = b.eval("document.querySelector('#point-2').className + ' | ' + document.querySelector('#point-2').innerText");
    let undone = undone.as_str().unwrap_or_default();
    assert!(
        undone.starts_with("undone") && undone.contains("rolled back") && undone.contains("1.0.2"),
        "{undone}"
    );
    assert!(
        undone.contains("failed") && undone.contains("health"),
        "the failing check's reason: {undone}"
    );
    let rollback = b.eval("document.querySelector('#point-3').innerText");
    let rollback = rollback.as_str().unwrap_or_default();
    assert!(
        rollback.contains("automatic rollback")
            && rollback.contains("to point 1")
            && rollback.contains("undoing point 2")
            && rollback.contains("Why:"),
        "{rollback}"
    );
    assert_eq!(
        b.eval("[...document.querySelectorAll('#point-3 a')].map(a => a.getAttribute('href')).join(' ')"),
        "#point-1 #point-2"
    );
    let free =
        b.eval("[...document.querySelectorAll('td[data-free]')].map(t => Number(t.dataset.free))");
    let free = free.as_array().expect("free space cells");
    assert_eq!(free.len(), 2, "the root's and the state dir's file systems");
    assert!(
        free.iter().all(|f| f.as_f64().is_some_and(|f| f > 0.0)),
        "{free:?}"
    );
    assert_eq!(
        b.eval("document.querySelectorAll('form.act').length"),
        0,
        "no buttons before signing in"
    );

    b.goto(&w.url("/signin"));
    if let Some(dir) = screenshots() {
        b.screenshot(&dir.join("dashboard-signin.png"));
    }
    b.eval(&format!(
        "document.getElementById('token').value = '{TOKEN}'; true"
    ));
    b.click_and_wait("form[action='/signin'] button");
    assert_eq!(
        b.eval("location.pathname"),
        "/",
        "{}",
        b.eval("document.body.innerText")
    );
    b.goto(&w.url("/sites/shop"));
    assert_ne!(tree_hash(&d.join("site-shop")), point1);
    b.click_and_wait("#point-1 form.act button");
    let flash = b.eval("document.querySelector('.flash').textContent");
    assert!(
        flash
            .as_str()
            .unwrap_or_default()
            .contains("Rolled back to point 1"),
        "{flash}"
    );
    assert_eq!(
        tree_hash(&d.join("site-shop")),
        point1,
        "the site is point 1 again"
    );
    let records = ledger(d, "shop");
    let last = records
        .iter()
        .rev()
        .find(|r| r["kind"] == "rollback")
        .expect("a rollback record");
    assert_eq!(last["by"]["via"], "ui", "{last}");
    assert_eq!(last["id"], "point 1");
    assert!(!last["by"]["host"].as_str().unwrap_or_default().is_empty());
    // The page now shows the new point as an operator's rollback.
    let newest = b.eval("document.querySelector('table.history tbody tr').innerText");
    assert!(
        newest.as_str().unwrap_or_default().contains("via ui"),
        "{newest}"
    );
    if let Some(dir) = screenshots() {
        b.screenshot(&dir.join("dashboard-site.png"));
    }
}

/// Refusals first (no session, a forged one, no or a wrong CSRF token,
/// another origin, an oversized body, a GET), then the same requests with
/// the token act: "lift quarantine" and "reconcile now", recorded `via: ui`.
#[test]
fn posts_without_a_session_or_a_csrf_token_are_refused_and_change_nothing() {
    let (dir, _) = setup();
    let d = dir.path();
    let token = d.join("ui-token");
    std::fs::write(&token, TOKEN).unwrap();
    let w = watch(d, &["--ui-token-file", token.to_str().unwrap()]);
    let tree = tree_hash(&d.join("site-shop"));
    let records = ledger(d, "shop");
    let quarantine = std::fs::read_to_string(d.join("state/shop/quarantine.json")).unwrap();
    let rollback = w.url("/sites/shop/rollback");
    let lift = w.url("/sites/shop/lift");
    let reconcile = w.url("/sites/shop/reconcile");
    // No session.
    assert_eq!(
        post(&rollback, None, &[("point", "1"), ("csrf", "x")]).0,
        403
    );
    assert_eq!(post(&lift, None, &[("item", "release 1.0.2")]).0, 403);
    assert_eq!(
        post(
            &reconcile,
            Some("sitekeeper_session=forged"),
            &[("csrf", "x")]
        )
        .0,
        403
    );
    // A wrong token signs nobody in.
    let (code, headers) = post(
        &w.url("/signin"),
        None,
        &[("token", "not-the-token-at-all")],
    );
    assert_eq!(code, 403);
    assert!(headers.get("set-cookie").is_none());
    // A session, but no CSRF token or a wrong one.
    let cookie = sign_in(&w);
    assert_eq!(post(&rollback, Some(&cookie), &[("point", "1")]).0, 403);
    assert_eq!(
        post(
            &rollback,
            Some(&cookie),
            &[("point", "1"), ("csrf", "0000")]
        )
        .0,
        403
    );
    assert_eq!(
        post(
            &lift,
            Some(&cookie),
            &[("item", "release 1.0.2"), ("csrf", "")]
        )
        .0,
        403
    );
    // Another origin's form, even with the right token.
    let (_, _, page) = get_with_cookie(&w.url("/sites/shop"), &cookie);
    let csrf = csrf_of(&page);
    let cross = agent()
        .post(&rollback)
        .header("cookie", &cookie)
        .header("origin", "http://evil.example")
        .header("content-type", "application/x-www-form-urlencoded")
        .send(format!("point=1&csrf={csrf}").as_bytes())
        .expect("POST");
    assert_eq!(cross.status().as_u16(), 403);
    // A body larger than any form is refused before it is read whole.
    let big = "a".repeat(100_000);
    assert_eq!(post(&w.url("/signin"), None, &[("token", &big)]).0, 413);
    // No action by GET.
    for url in [&rollback, &lift, &reconcile] {
        assert_eq!(get(&format!("{url}?point=1&csrf={csrf}")).0, 405, "{url}");
    }
    assert_eq!(tree_hash(&d.join("site-shop")), tree, "nothing changed");
    assert_eq!(ledger(d, "shop"), records, "nothing recorded");
    assert_eq!(
        std::fs::read_to_string(d.join("state/shop/quarantine.json")).unwrap(),
        quarantine
    );
    // The same request with its token is what acts.
    let (code, headers) = post(
        &lift,
        Some(&cookie),
        &[("item", "release 1.0.2"), ("csrf", &csrf)],
    );
    assert_eq!(code, 303);
    assert_eq!(
        headers.get("location").and_then(|v| v.to_str().ok()),
        Some("/sites/shop")
    );
    let after = ledger(d, "shop");
    let last = after.last().expect("a record");
    assert_eq!(
        (
            last["kind"].as_str(),
            last["id"].as_str(),
            last["by"]["via"].as_str()
        ),
        (Some("lift"), Some("release 1.0.2"), Some("ui"))
    );
    let (_, _, page) = get_with_cookie(&w.url("/sites/shop"), &cookie);
    assert!(
        page.contains("The quarantine of release 1.0.2 is lifted"),
        "the outcome is shown"
    );
    // "Reconcile now" tries the lifted release at once; its records say
    // `via: ui` (1.0.2 fails its check again and is rolled back).
    let csrf = csrf_of(&page);
    let (code, _) = post(&reconcile, Some(&cookie), &[("csrf", &csrf)]);
    assert_eq!(code, 303);
    let log = || w.log();
    until(
        Duration::from_secs(30),
        "the reconcile from the dashboard",
        &log,
        || {
            ledger(d, "shop")
                .iter()
                .any(|r| r["kind"] == "upgrade" && r["id"] == "1.0.2" && r["by"]["via"] == "ui")
        },
    );
    let (_, _, page) = get_with_cookie(&w.url("/sites/shop"), &cookie);
    assert!(
        page.contains("A reconcile of shop is queued"),
        "the outcome is shown"
    );
}

fn get_with_cookie(url: &str, cookie: &str) -> (u16, ureq::http::HeaderMap, String) {
    let mut r = agent()
        .get(url)
        .header("cookie", cookie)
        .call()
        .expect("GET");
    let body = r.body_mut().read_to_string().unwrap_or_default();
    (r.status().as_u16(), r.headers().clone(), body)
}

#[test]
fn a_read_only_dashboard_escapes_fleet_and_catalog_text_and_sends_the_security_headers() {
    let (dir, _) = setup();
    let d = dir.path();
    let w = watch(d, &[]);
    for path in [
        "/",
        "/sites/slow",
        "/sites/shop",
        "/signin",
        "/?q=%3Cscript%3E&label=note%3D%3Cscript%3E",
    ] {
        let (code, headers, body) = get(&w.url(path));
        assert_eq!(code, 200, "{path}");
        let h = |k: &str| {
            headers
                .get(k)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        assert!(
            h("content-security-policy").contains("script-src 'self'")
                && !h("content-security-policy").contains("unsafe-inline"),
            "{path}: {headers:?}"
        );
        assert!(h("content-security-policy").contains("frame-ancestors 'none'"));
        assert_eq!(h("x-content-type-options"), "nosniff");
        assert_eq!(h("referrer-policy"), "same-origin");
        assert_eq!(h("x-frame-options"), "DENY");
        assert!(
            !body.contains("<script>alert"),
            "{path} holds raw markup from the fleet:\n{body}"
        );
        assert!(
            !body.contains("<form class=\"act\""),
            "{path}: no buttons when read-only"
        );
        // The only script is the embedded one.
        assert_eq!(body.matches("<script").count(), 1, "{path}");
        assert!(body.contains("<script src=\"/assets/app.js\" defer></script>"));
    }
    let (_, _, slow) = get(&w.url("/sites/slow"));
    assert!(
        slow.contains("note=&lt;script&gt;alert('xss')&lt;/script&gt;"),
        "the label, as text"
    );
    assert!(
        slow.contains("&lt;script&gt;alert('xss')&lt;/script&gt; in the greeting"),
        "the fix's reason, as text:\n{slow}"
    );
    let (_, _, fleet) = get(&w.url("/?label=note%3D%3Cscript%3Ealert('xss')%3C%2Fscript%3E"));
    assert!(
        fleet.contains("data-site=\"slow\"") && !fleet.contains("data-site=\"shop\""),
        "the label filter"
    );
    // Read-only: every state-changing request is refused.
    assert_eq!(post(&w.url("/signin"), None, &[("token", TOKEN)]).0, 403);
    assert_eq!(
        post(
            &w.url("/sites/shop/rollback"),
            Some("sitekeeper_session=x"),
            &[("point", "1"), ("csrf", "x")]
        )
        .0,
        403
    );
    assert_eq!(post(&w.url("/sites/shop/reconcile"), None, &[]).0, 403);
    let (_, _, page) = get(&w.url("/"));
    assert!(page.contains("Read-only"));
    assert!(
        page.contains("lives in git"),
        "the UI says where the desired state lives"
    );
    let (code, headers, js) = get(&w.url("/assets/app.js"));
    assert_eq!(code, 200);
    assert!(
        headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .starts_with("text/javascript")
    );
    assert!(js.contains("EventSource"));
    assert_eq!(get(&w.url("/sites/nope")).0, 404);
}

/// CI's smoke of `bench/dashboard` (its full run is 10,000 sites, README
/// "Dashboard"), so that it cannot rot: at 20 sites it must start the
/// daemon, check every page it times, and print its table. No timing is
/// asserted.
#[test]
fn the_dashboard_benchmark_runs_at_smoke_size() {
    let out = std::process::Command::new(crate::support::repo_root().join("bench/dashboard"))
        .args(["--sites", "20", "--reps", "2"])
        .env("SITEKEEPER", crate::support::bin())
        .output()
        .expect("run bench/dashboard (needs python3)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", stderr(&out));
    for row in ["| `GET /?per=20 (page 1)` |", "| `GET /status` |"] {
        assert!(text.contains(row), "no row {row:?} in:\n{text}");
    }
}
