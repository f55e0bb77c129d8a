//! The dashboard's form POSTs: sign in and out, and the three things a
//! signed-in operator may do to a site: reconcile it now, roll it back to
//! a point, lift a quarantine. Each needs actions enabled
//! (`--ui-token-file`), a session and its CSRF token, else 403 and
//! nothing happens; each answers 303 to the site page, which shows the
//! outcome. Nothing is done by GET, and nothing here touches git.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::auth::{Refused, SessionInfo, clear_cookie, set_cookie};
use super::pages::{self, Viewer};
use crate::apply::converge::{self, ApplyError, Outcome};
use crate::watch::controller::ops::Op;
use crate::watch::controller::{Reason, Shared, Trigger};

/// How long a wrong token waits for its answer: guessing stays slow even
/// though the comparison itself is constant-time.
const WRONG_TOKEN_DELAY: std::time::Duration = std::time::Duration::from_millis(300);

/// The fields of a form body (the first of each name), never panicking
/// on bytes that are not UTF-8 or not a form.
fn form(body: &[u8]) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for (k, v) in url::form_urlencoded::parse(body) {
        out.entry(k.into_owned()).or_insert_with(|| v.into_owned());
    }
    out
}

/// 303 See Other to `to`, with extra headers.
fn see_other(to: &str, cookie: Option<String>) -> Response {
    let mut r = (StatusCode::SEE_OTHER, [(header::LOCATION, to.to_owned())]).into_response();
    if let Some(c) = cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
        r.headers_mut().insert(header::SET_COOKIE, c);
    }
    r
}

/// 403 with the reason, as a page.
fn refused(why: Refused) -> Response {
    super::html(
        StatusCode::FORBIDDEN,
        pages::message("Refused", &why.to_string(), None),
    )
}

/// Why a form POST does nothing.
#[derive(Debug)]
enum Denied {
    /// 403.
    Refused(Refused),
    /// 404: the daemon serves no such site.
    NoSite(String),
}

impl Denied {
    fn response(self) -> Response {
        match self {
            Denied::Refused(why) => refused(why),
            Denied::NoSite(name) => super::html(
                StatusCode::NOT_FOUND,
                pages::message(
                    "No such site",
                    &format!("This daemon serves no site named {name:?}."),
                    None,
                ),
            ),
        }
    }
}

/// The session of a POST allowed to act (on `site`, when it names one).
fn allowed(
    shared: &Shared,
    headers: &HeaderMap,
    fields: &HashMap<String, String>,
    site: Option<&str>,
) -> Result<SessionInfo, Denied> {
    if !super::same_origin(headers) {
        return Err(Denied::Refused(Refused::Origin));
    }
    let session = shared
        .ui
        .auth
        .authorize(
            super::cookie_header(headers),
            fields.get("csrf").map(String::as_str),
        )
        .map_err(Denied::Refused)?;
    match site {
        Some(name) if shared.fleet().site(name).is_none() => Err(Denied::NoSite(name.to_owned())),
        _ => Ok(session),
    }
}

/// `GET /signin`.
pub async fn sign_in_form(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let viewer = Viewer {
        enabled: shared.ui.auth.enabled(),
        csrf: shared
            .ui
            .auth
            .session(super::cookie_header(&headers))
            .map(|s| s.csrf),
    };
    super::html(StatusCode::OK, pages::sign_in(&viewer, None))
}

/// `POST /signin`: the token, compared in constant time; a new session.
pub async fn sign_in(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !super::same_origin(&headers) {
        return refused(Refused::Origin);
    }
    let fields = form(&body);
    let token = fields.get("token").map_or(&[][..], |t| t.as_bytes());
    match shared.ui.auth.sign_in(token) {
        Ok(session) => {
            tracing::info!("dashboard: signed in");
            see_other(
                "/",
                Some(set_cookie(&session.id, super::over_tls(&headers))),
            )
        }
        Err(Refused::WrongToken) => {
            tracing::warn!("dashboard: a sign-in with a wrong token");
            tokio::time::sleep(WRONG_TOKEN_DELAY).await;
            let viewer = Viewer {
                enabled: true,
                csrf: None,
            };
            super::html(
                StatusCode::FORBIDDEN,
                pages::sign_in(&viewer, Some(&Refused::WrongToken.to_string())),
            )
        }
        Err(why) => refused(why),
    }
}

/// `POST /signout`.
pub async fn sign_out(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let fields = form(&body);
    match allowed(&shared, &headers, &fields, None) {
        Ok(session) => {
            shared.ui.auth.sign_out(&session.id);
            see_other("/", Some(clear_cookie()))
        }
        Err(d) => d.response(),
    }
}

/// Back to the site page with `message` for it.
fn done(shared: &Shared, session: &SessionInfo, name: &str, message: String) -> Response {
    shared.ui.auth.flash(&session.id, message);
    let to = format!(
        "/sites/{}",
        url::form_urlencoded::byte_serialize(name.as_bytes()).collect::<String>()
    );
    see_other(&to, None)
}

/// `POST /sites/NAME/reconcile`: fetch, then look at the site now,
/// lifting its backoff (as `POST /reconcile?site=NAME` does); its ledger
/// records say `via: ui`.
pub async fn reconcile(
    State(shared): State<Arc<Shared>>,
    UrlPath(name): UrlPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let fields = form(&body);
    let session = match allowed(&shared, &headers, &fields, Some(&name)) {
        Ok(s) => s,
        Err(d) => return d.response(),
    };
    let sent = shared.triggers.send(Trigger {
        site: Some(name.clone()),
        reason: Reason::Ui,
    });
    tracing::info!(site = %name, "dashboard: reconcile now");
    let message = match sent {
        Ok(()) => format!(
            "A reconcile of {name} is queued: the daemon fetches git, then looks at the site now. This page shows its progress."
        ),
        Err(_) => "sitekeeper is stopping; nothing was queued.".to_owned(),
    };
    done(&shared, &session, &name, message)
}

/// `POST /sites/NAME/rollback` (`point=N`): the real rollback, run by the
/// loop under the site's lock (`via: ui`).
pub async fn rollback(
    State(shared): State<Arc<Shared>>,
    UrlPath(name): UrlPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let fields = form(&body);
    let session = match allowed(&shared, &headers, &fields, Some(&name)) {
        Ok(s) => s,
        Err(d) => return d.response(),
    };
    let Some(to) = fields
        .get("point")
        .and_then(|p| p.trim().parse::<u64>().ok())
    else {
        return done(
            &shared,
            &session,
            &name,
            "No rollback: the form named no point.".into(),
        );
    };
    let (reply, answer) = tokio::sync::oneshot::channel();
    if shared
        .ops
        .send(Op::Rollback {
            site: name.clone(),
            to,
            reply,
        })
        .is_err()
    {
        return done(
            &shared,
            &session,
            &name,
            "sitekeeper is stopping; nothing was done.".into(),
        );
    }
    let message = match answer.await {
        Ok(Ok(Outcome::Changed {
            point,
            files,
            version,
            note,
        })) => format!(
            "Rolled back to point {to}: the site runs {version} again, recorded as point {point} ({files} files changed){}. The daemon converges it to what git asks for at its next look.",
            note.map(|n| format!("; {n}")).unwrap_or_default()
        ),
        Ok(Ok(Outcome::Unchanged)) => {
            format!("Nothing to roll back: the site's files already are point {to}'s.")
        }
        Ok(Err(ApplyError::LockBusy { .. })) => {
            "Not rolled back: the site is busy (a change is in flight). Try again when it is idle."
                .to_owned()
        }
        Ok(Err(e)) => format!("The rollback failed: {e}"),
        Err(_) => "sitekeeper stopped before the rollback ended.".to_owned(),
    };
    done(&shared, &session, &name, message)
}

/// `POST /sites/NAME/lift` (`item=release V` or `item=fix ID`): lifts
/// that quarantine under the site's lock, with a ledger record
/// (`via: ui`).
pub async fn lift(
    State(shared): State<Arc<Shared>>,
    UrlPath(name): UrlPath<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let fields = form(&body);
    let session = match allowed(&shared, &headers, &fields, Some(&name)) {
        Ok(s) => s,
        Err(d) => return d.response(),
    };
    let item = fields.get("item").cloned().unwrap_or_default();
    let s = Arc::clone(&shared);
    let (site, what) = (name.clone(), item.clone());
    let lifted = tokio::task::spawn_blocking(move || {
        converge::lift_item(&s.state_dir, &site, &what, "ui", s.now())
    })
    .await;
    let message = match lifted {
        Ok(Ok(true)) => {
            shared.view(&name, |v| v.status.quarantined.retain(|q| *q != item));
            tracing::info!(site = %name, item = %item, "dashboard: quarantine lifted");
            format!(
                "The quarantine of {item} is lifted: the next look may try it again (press \"Reconcile now\" to look now)."
            )
        }
        Ok(Ok(false)) => format!("{item} is not quarantined on {name}; nothing changed."),
        Ok(Err(e)) => format!("The quarantine was not lifted: {e}"),
        Err(e) => format!("The quarantine was not lifted: {e}"),
    };
    done(&shared, &session, &name, message)
}
