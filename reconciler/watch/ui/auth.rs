//! Who may act on the dashboard: the sign-in token (`--ui-token-file`,
//! compared in constant time, read again on SIGHUP), the server-side
//! session table (random ids from the operating system's CSPRNG, a fixed
//! lifetime, a bounded number), and each session's CSRF token, checked in
//! constant time on every form POST. Without a token nothing here grants
//! anything: every state-changing request is refused.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use subtle::ConstantTimeEq;

/// The shortest token accepted (as for the webhook secret).
pub const MIN_TOKEN: usize = 16;
/// The session cookie's name.
pub const COOKIE: &str = "sitekeeper_session";
/// How long a session lasts from its sign-in.
pub const LIFETIME: Duration = Duration::from_secs(8 * 3600);
/// Sessions kept at most; past that the oldest goes (a client that signs
/// in in a loop cannot grow the table without bound).
const MAX_SESSIONS: usize = 1024;

/// Why a request may not act.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The daemon runs without `--ui-token-file`.
    #[error(
        "the dashboard is read-only: sitekeeper watch runs without --ui-token-file, so nothing can be changed from here"
    )]
    ReadOnly,
    /// No valid session cookie.
    #[error("you are not signed in (or your session expired): sign in with the dashboard token")]
    NoSession,
    /// The form's CSRF token is missing or wrong.
    #[error(
        "the form's CSRF token is missing or does not match your session: reload the page and try again"
    )]
    Csrf,
    /// The token given at sign-in is wrong.
    #[error("that is not the dashboard token")]
    WrongToken,
    /// The request came from another site's page (its `Origin`).
    #[error("the request came from another origin")]
    Origin,
}

/// One signed-in browser.
#[derive(Debug, Clone)]
struct Session {
    csrf: String,
    expires: Instant,
    /// A message for the next page it loads (an action's outcome).
    flash: Option<String>,
}

/// A session found for a request.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    /// The session id (the cookie's value).
    pub id: String,
    /// Its CSRF token, for the forms of the page.
    pub csrf: String,
}

/// The dashboard's authentication state.
pub struct Auth {
    token: RwLock<Option<Vec<u8>>>,
    file: Option<PathBuf>,
    sessions: Mutex<HashMap<String, Session>>,
}

/// 32 bytes from the operating system's CSPRNG, in hex; `None` if it
/// cannot give them (then nobody signs in, rather than a guessable id).
fn random_hex() -> Option<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).ok()?;
    Some(hex::encode(bytes))
}

impl Auth {
    /// With `token` (from `file`, read again by [`Auth::reload`]), or
    /// read-only without one.
    pub fn new(token: Option<Vec<u8>>, file: Option<PathBuf>) -> Self {
        Self {
            token: RwLock::new(token),
            file,
            sessions: Mutex::default(),
        }
    }

    /// Whether actions are enabled at all.
    pub fn enabled(&self) -> bool {
        self.token
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }

    /// SIGHUP: reads the token file again. A changed token signs every
    /// session out (a rotation is meant to lock the old holders out); a
    /// file that cannot be read, or is too short, leaves the old token in
    /// use, and the log says why.
    pub fn reload(&self) {
        let Some(path) = &self.file else { return };
        let token = match std::fs::read(path) {
            Ok(bytes) => bytes.trim_ascii().to_vec(),
            Err(e) => {
                tracing::error!(file = %path.display(), error = %e, "SIGHUP: the dashboard token cannot be read; the old one stays in use");
                return;
            }
        };
        if token.len() < MIN_TOKEN {
            tracing::error!(file = %path.display(), "SIGHUP: the dashboard token is shorter than 16 bytes; the old one stays in use");
            return;
        }
        let mut current = self.token.write().unwrap_or_else(PoisonError::into_inner);
        if current.as_deref() != Some(token.as_slice()) {
            *current = Some(token);
            self.sessions
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clear();
            tracing::info!("SIGHUP: a new dashboard token; every session is signed out");
        }
    }

    /// Signs in with `given`: a new session, or why not.
    pub fn sign_in(&self, given: &[u8]) -> Result<SessionInfo, Refused> {
        let token = self.token.read().unwrap_or_else(PoisonError::into_inner);
        let Some(token) = token.as_deref() else {
            return Err(Refused::ReadOnly);
        };
        if !bool::from(given.trim_ascii().ct_eq(token)) {
            return Err(Refused::WrongToken);
        }
        let (Some(id), Some(csrf)) = (random_hex(), random_hex()) else {
            return Err(Refused::NoSession);
        };
        let now = Instant::now();
        let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        sessions.retain(|_, s| s.expires > now);
        if sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = sessions
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| k.clone())
        {
            sessions.remove(&oldest);
        }
        sessions.insert(
            id.clone(),
            Session {
                csrf: csrf.clone(),
                expires: now + LIFETIME,
                flash: None,
            },
        );
        Ok(SessionInfo { id, csrf })
    }

    /// The session a `Cookie` header names, if it is valid and not expired.
    pub fn session(&self, cookie_header: Option<&str>) -> Option<SessionInfo> {
        if !self.enabled() {
            return None;
        }
        let id = cookie(cookie_header?, COOKIE)?;
        let sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        let s = sessions.get(id)?;
        (s.expires > Instant::now()).then(|| SessionInfo {
            id: id.to_owned(),
            csrf: s.csrf.clone(),
        })
    }

    /// Whether a form POST may act: actions enabled, a valid session, and
    /// its CSRF token (`form_csrf`), compared in constant time.
    pub fn authorize(
        &self,
        cookie_header: Option<&str>,
        form_csrf: Option<&str>,
    ) -> Result<SessionInfo, Refused> {
        if !self.enabled() {
            return Err(Refused::ReadOnly);
        }
        let session = self.session(cookie_header).ok_or(Refused::NoSession)?;
        let given = form_csrf.unwrap_or("");
        if given.is_empty() || !bool::from(given.as_bytes().ct_eq(session.csrf.as_bytes())) {
            return Err(Refused::Csrf);
        }
        Ok(session)
    }

    /// Signs a session out.
    pub fn sign_out(&self, id: &str) {
        self.sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
    }

    /// Leaves a message for the session's next page.
    pub fn flash(&self, id: &str, message: String) {
        if let Some(s) = self
            .sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(id)
        {
            s.flash = Some(message);
        }
    }

    /// Takes the session's message, if it has one.
    pub fn take_flash(&self, id: &str) -> Option<String> {
        self.sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(id)
            .and_then(|s| s.flash.take())
    }
}

/// The value of cookie `name` in a `Cookie` header (`a=1; b=2`).
pub fn cookie<'h>(header: &'h str, name: &str) -> Option<&'h str> {
    header
        .split(';')
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| k.trim() == name)
        .map(|(_, v)| v.trim())
}

/// The `Set-Cookie` value of a new session: `HttpOnly` (no script reads
/// it), `SameSite=Strict` (no other site's page sends it), `Path=/`, and
/// `Secure` when the browser reached the daemon over TLS (`secure`: a
/// TLS-terminating proxy in front; the daemon itself serves plain HTTP).
pub fn set_cookie(id: &str, secure: bool) -> String {
    format!(
        "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        LIFETIME.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

/// The `Set-Cookie` value that removes the session cookie.
pub fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &[u8] = b"0123456789abcdef0123";

    #[test]
    fn without_a_token_nothing_signs_in_or_acts() {
        let auth = Auth::new(None, None);
        assert!(!auth.enabled());
        assert_eq!(auth.sign_in(TOKEN).unwrap_err(), Refused::ReadOnly);
        assert_eq!(
            auth.authorize(Some("sitekeeper_session=x"), Some("y"))
                .unwrap_err(),
            Refused::ReadOnly
        );
    }

    #[test]
    fn a_session_acts_only_with_its_own_csrf_token() {
        let auth = Auth::new(Some(TOKEN.to_vec()), None);
        assert_eq!(auth.sign_in(b"wrong").unwrap_err(), Refused::WrongToken);
        let s = auth.sign_in(TOKEN).unwrap();
        assert_eq!(s.id.len(), 64);
        assert_ne!(s.id, s.csrf);
        let cookie = format!("other=1; {COOKIE}={}", s.id);
        assert!(auth.authorize(Some(&cookie), Some(&s.csrf)).is_ok());
        assert_eq!(
            auth.authorize(Some(&cookie), None).unwrap_err(),
            Refused::Csrf
        );
        assert_eq!(
            auth.authorize(Some(&cookie), Some("")).unwrap_err(),
            Refused::Csrf
        );
        let other = auth.sign_in(TOKEN).unwrap();
        assert_eq!(
            auth.authorize(Some(&cookie), Some(&other.csrf))
                .unwrap_err(),
            Refused::Csrf,
            "another session's token is not this one's"
        );
        assert_eq!(
            auth.authorize(None, Some(&s.csrf)).unwrap_err(),
            Refused::NoSession
        );
        assert_eq!(
            auth.authorize(Some("sitekeeper_session=made-up"), Some(&s.csrf))
                .unwrap_err(),
            Refused::NoSession
        );
        auth.sign_out(&s.id);
        assert_eq!(
            auth.authorize(Some(&cookie), Some(&s.csrf)).unwrap_err(),
            Refused::NoSession
        );
    }

    #[test]
    fn the_table_stays_bounded() {
        let auth = Auth::new(Some(TOKEN.to_vec()), None);
        for _ in 0..MAX_SESSIONS + 10 {
            auth.sign_in(TOKEN).unwrap();
        }
        assert!(auth.sessions.lock().unwrap().len() <= MAX_SESSIONS);
    }

    #[test]
    fn a_rotated_token_signs_everyone_out() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, TOKEN).unwrap();
        let auth = Auth::new(Some(TOKEN.to_vec()), Some(file.clone()));
        let s = auth.sign_in(TOKEN).unwrap();
        let cookie = format!("{COOKIE}={}", s.id);
        auth.reload();
        assert!(auth.session(Some(&cookie)).is_some(), "same token: kept");
        std::fs::write(&file, "short").unwrap();
        auth.reload();
        assert!(
            auth.session(Some(&cookie)).is_some(),
            "a bad file changes nothing"
        );
        std::fs::write(&file, "a-new-token-of-20-bytes\n").unwrap();
        auth.reload();
        assert!(auth.session(Some(&cookie)).is_none());
        assert!(auth.sign_in(TOKEN).is_err());
        assert!(auth.sign_in(b"a-new-token-of-20-bytes").is_ok());
    }

    #[test]
    fn cookies_parse_without_panicking() {
        assert_eq!(cookie("a=1; b = 2 ;c=3", "b"), Some("2"));
        assert_eq!(cookie(";;=;a", "a"), None);
        assert_eq!(cookie("", "a"), None);
        assert!(set_cookie("x", true).contains("; Secure"));
        assert!(!set_cookie("x", false).contains("Secure"));
    }
}
