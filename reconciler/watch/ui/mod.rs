//! The dashboard for people (SPEC §8): `GET /` lists every site with its
//! version, state and a live progress bar, filtered and paged on the
//! server; `GET /sites/NAME` shows one site's plan with its diffs, held
//! items, quarantines, preflight, failure marker, history, release
//! directories, free space and the tails of its ledger and hooks log;
//! `GET /events` pushes phases and outcomes as server-sent events.
//!
//! Pages are rendered on the server (maud, which escapes every value) and
//! work without JavaScript; one stylesheet and one small script are
//! embedded in the binary. Every response carries a strict Content
//! Security Policy (no inline script), `nosniff`, `same-origin` referrers and
//! `frame-ancestors 'none'`.
//!
//! It never changes the desired state (that lives in git). With
//! `--ui-token-file` a signed-in operator may reconcile a site now, roll
//! it back to a point or lift a quarantine, each a form POST with a CSRF
//! token ([`actions`]); without, every such request is refused (403).

pub mod actions;
pub mod auth;
pub mod fleet;
pub mod live;
mod pages;
mod site;
mod site_page;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::watch::controller::Shared;

/// The largest form body accepted (a sign-in or an action form is a few
/// hundred bytes).
pub const MAX_FORM: usize = 16 * 1024;

/// The stylesheet, embedded (no build step, no CDN).
const CSS: &str = include_str!("assets/app.css");
/// The script: live updates over `/events`, nothing else.
const JS: &str = include_str!("assets/app.js");

/// The Content Security Policy of every page: only this origin's
/// stylesheet and script, no inline script, no framing, forms only to
/// this origin.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The dashboard's state in the daemon's [`Shared`].
pub struct Ui {
    /// Sign-in token and sessions.
    pub auth: auth::Auth,
    /// Phases, progress and the live feed.
    pub live: live::Live,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Ui {
    /// With the `--ui-token-file` token (and file), or read-only.
    pub fn new(token: Option<Vec<u8>>, file: Option<std::path::PathBuf>) -> Self {
        Self {
            auth: auth::Auth::new(token, file),
            live: live::Live::default(),
            stop: tokio::sync::watch::channel(false).0,
        }
    }

    /// Ends the live streams: the daemon is stopping.
    pub fn stop(&self) {
        self.stop.send_replace(true);
    }

    /// Turns true when the daemon stops.
    pub fn stopping(&self) -> tokio::sync::watch::Receiver<bool> {
        self.stop.subscribe()
    }
}

/// The dashboard's routes, merged into the daemon's router. Only POST
/// routes change anything; a GET to them is 405.
pub fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route("/", get(fleet::page))
        .route("/sites/{name}", get(site::page))
        .route("/events", get(live::events))
        .route("/assets/app.css", get(css))
        .route("/assets/app.js", get(js))
        .route("/signin", get(actions::sign_in_form).post(actions::sign_in))
        .route("/signout", post(actions::sign_out))
        .route("/sites/{name}/reconcile", post(actions::reconcile))
        .route("/sites/{name}/rollback", post(actions::rollback))
        .route("/sites/{name}/lift", post(actions::lift))
        .layer(DefaultBodyLimit::max(MAX_FORM))
        .layer(axum::middleware::map_response(secure))
}

/// Adds the security headers to every dashboard response.
async fn secure(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // `same-origin`, not `no-referrer`: with the latter a browser sends
    // `Origin: null` on form POSTs, and the origin check needs the real one.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // Pages show live state and CSRF tokens: never from a cache.
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

async fn css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        CSS,
    )
        .into_response()
}

async fn js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        JS,
    )
        .into_response()
}

/// An HTML page with `status`.
fn html(status: StatusCode, body: maud::Markup) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body.into_string(),
    )
        .into_response()
}

/// The request's `Cookie` header, as text.
fn cookie_header(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::COOKIE).and_then(|v| v.to_str().ok())
}

/// Whether the browser reached us over TLS (a proxy in front says so).
fn over_tls(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

/// Whether the request may come from a page of this origin: a browser
/// sends `Origin` with a POST; when it names another host than the one
/// asked (`Host`, or `X-Forwarded-Host` from a proxy in front), it is
/// another site's form, and `null` is refused too. (Without `Origin`, the
/// session cookie, `SameSite=Strict`, and the CSRF token still decide.)
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let Some((_, authority)) = origin.split_once("://") else {
        return false;
    };
    ["x-forwarded-host", "host"].iter().any(|name| {
        headers
            .get(*name)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|host| authority.eq_ignore_ascii_case(host.trim()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn only_this_origin_may_post() {
        assert!(same_origin(&headers(&[("host", "127.0.0.1:9090")])));
        assert!(same_origin(&headers(&[
            ("host", "127.0.0.1:9090"),
            ("origin", "http://127.0.0.1:9090")
        ])));
        assert!(same_origin(&headers(&[
            ("host", "127.0.0.1:9090"),
            ("x-forwarded-host", "ops.example.com"),
            ("origin", "https://ops.example.com")
        ])));
        for bad in ["http://evil.example", "null", "", "http://127.0.0.1:9091"] {
            assert!(
                !same_origin(&headers(&[("host", "127.0.0.1:9090"), ("origin", bad)])),
                "{bad}"
            );
        }
    }
}
