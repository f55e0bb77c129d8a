//! The daemon's endpoints (SPEC §8): `GET /healthz`, `GET /metrics`,
//! `GET /status` and `POST /reconcile[?site=NAME]`, and the dashboard's
//! routes ([`super::ui::router`]).
//!
//! `/reconcile` only queues work. With a secret it needs `Authorization:
//! Bearer <secret>` or a GitHub-style `X-Hub-Signature-256` HMAC of the
//! body, both compared in constant time; without one, only loopback
//! clients may call it. Bodies are capped and must arrive within a deadline.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hmac::{Hmac, Mac};
use subtle::ConstantTimeEq;

use super::controller::{Reason, Shared, Trigger};
use crate::store::{Progress, SiteState};

/// The largest webhook body accepted (GitHub's push events stay far below).
pub const MAX_BODY: usize = 1 << 20;
/// How long a client may take to send its body.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// The loop turns at least every 30 s; twice that without a turn is dead.
const HEARTBEAT_STALE: i64 = 120;

/// Serves the endpoints on `listener` until `stop` turns true.
pub async fn serve(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .route("/reconcile", post(reconcile))
        .merge(super::ui::router())
        .with_state(Arc::clone(&shared));
    let poller = tokio::spawn(super::ui::live::poll(Arc::clone(&shared), stop.clone()));
    let served = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        let _ = stop.wait_for(|stopping| *stopping).await;
        // Live streams never end by themselves: end them, so the server
        // stops without waiting for their clients.
        shared.ui.stop();
    })
    .await;
    poller.abort();
    if let Err(e) = served {
        tracing::error!(error = %e, "the HTTP server stopped");
    }
}

async fn healthz(State(shared): State<Arc<Shared>>) -> Response {
    let age = jiff::Timestamp::now().as_second() - shared.heartbeat.load(Ordering::Relaxed);
    if age <= HEARTBEAT_STALE {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the reconcile loop has not turned for {age} s\n"),
        )
            .into_response()
    }
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        shared.metrics.encode(),
    )
        .into_response()
}

/// `status --format json`'s list: each site's
/// [`SiteView`](super::controller::SiteView) (the daemon's view added to
/// its status: held items, the last reconcile, its reason, outcome and
/// error) with its phase and percent from its [`Progress`] (`status.json`).
async fn status(State(shared): State<Arc<Shared>>) -> Response {
    let fleet = shared.fleet();
    let views = shared
        .views
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let load_error = shared
        .load_error
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let fetch_errors = shared
        .fetches
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .list();
    let notify_errors: Vec<crate::watch::notify::DeliveryError> = shared
        .notify_errors
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .values()
        .cloned()
        .collect();
    let mut out = Vec::new();
    for site in &fleet.sites {
        let name = site.site.as_str();
        let mut value = match views.get(name) {
            Some(r) => serde_json::to_value(r).unwrap_or_default(),
            None => serde_json::json!({"site": name}),
        };
        // No change in progress (or none readable): idle, all done.
        let (phase, percent) = Progress::read(&SiteState::new(&shared.state_dir, name))
            .map_or(("idle".to_owned(), 100), |p| (p.phase, p.percent));
        if let Some(map) = value.as_object_mut() {
            map.insert("phase".into(), phase.into());
            map.insert("percent".into(), percent.into());
            if let Some(e) = &load_error {
                map.insert("fleet_error".into(), e.clone().into());
            }
            // Any failing repository may leave this site on an older commit
            // of the fleet or its catalog: the last good one stays in use.
            if !fetch_errors.is_empty() {
                map.insert(
                    "fetch_errors".into(),
                    serde_json::to_value(&fetch_errors).unwrap_or_default(),
                );
            }
            // A target that is down: the operators may not hear of this site.
            if !notify_errors.is_empty() {
                map.insert(
                    "notify_errors".into(),
                    serde_json::to_value(&notify_errors).unwrap_or_default(),
                );
            }
        }
        out.push(value);
    }
    axum::Json(out).into_response()
}

#[derive(Debug, serde::Deserialize)]
struct ReconcileQuery {
    site: Option<String>,
}

async fn reconcile(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(query): Query<ReconcileQuery>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BODY) {
        return too_large();
    }
    let body = match tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, MAX_BODY)).await
    {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(_)) => return too_large(),
        Err(_) => {
            return (
                StatusCode::REQUEST_TIMEOUT,
                "the request body did not arrive in time\n",
            )
                .into_response();
        }
    };
    match &shared.webhook_secret {
        Some(secret) if !authorized(secret, &headers, &body) => {
            return (
                StatusCode::UNAUTHORIZED,
                "needs Authorization: Bearer <secret> or a valid X-Hub-Signature-256\n",
            )
                .into_response();
        }
        Some(_) => {}
        None if !peer.ip().is_loopback() => {
            return (
                StatusCode::FORBIDDEN,
                "without --webhook-secret-file, only loopback clients may trigger a reconcile\n",
            )
                .into_response();
        }
        None => {}
    }
    if let Some(site) = &query.site
        && shared.fleet().site(site).is_none()
    {
        return (
            StatusCode::NOT_FOUND,
            format!("there is no site {site:?}\n"),
        )
            .into_response();
    }
    let queued = query.site.clone().unwrap_or_else(|| "all".into());
    if shared
        .triggers
        .send(Trigger {
            site: query.site,
            reason: Reason::Webhook,
        })
        .is_err()
    {
        return (StatusCode::SERVICE_UNAVAILABLE, "sitekeeper is stopping\n").into_response();
    }
    tracing::info!(site = %queued, client = %peer, "webhook");
    (
        StatusCode::ACCEPTED,
        axum::Json(serde_json::json!({ "queued": queued })),
    )
        .into_response()
}

fn too_large() -> Response {
    (
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the request body is larger than {MAX_BODY} bytes\n"),
    )
        .into_response()
}

/// Whether the request carries the secret, as a bearer token or as an HMAC
/// of the body; both compared in constant time.
pub fn authorized(secret: &[u8], headers: &HeaderMap, body: &[u8]) -> bool {
    if let Some(token) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        return bool::from(token.trim().as_bytes().ct_eq(secret));
    }
    if let Some(signature) = headers
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("sha256="))
        .and_then(|v| hex::decode(v.trim()).ok())
        && let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(secret)
    {
        mac.update(body);
        return mac.verify_slice(&signature).is_ok();
    }
    false
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
    fn bearer_and_hmac_are_checked() {
        let secret = b"s3cret";
        let body = br#"{"ref":"refs/heads/main"}"#;
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
        mac.update(body);
        let good = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        assert!(authorized(
            secret,
            &headers(&[("authorization", "Bearer s3cret")]),
            body
        ));
        assert!(authorized(
            secret,
            &headers(&[("x-hub-signature-256", &good)]),
            body
        ));
        assert!(!authorized(
            secret,
            &headers(&[("authorization", "Bearer s3cre")]),
            body
        ));
        assert!(!authorized(
            secret,
            &headers(&[("x-hub-signature-256", &good)]),
            b"{}"
        ));
        assert!(!authorized(secret, &headers(&[]), body));
    }
}
