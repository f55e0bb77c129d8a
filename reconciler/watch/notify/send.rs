//! Sending one message to one `notify:` target (SPEC §9), blocking: a
//! webhook (CloudEvents 1.0 structured mode, signed with an HMAC of the
//! body), a Slack incoming webhook (`{"text": …}`), or a plain-text mail by
//! SMTP (STARTTLS when the server offers it, AUTH when a secret is given).
//!
//! A message is one event or several of the same type (the aggregation of
//! `notify`'s delivery task). Nothing here retries or keeps state: the
//! caller decides, by the typed [`SendError`], what to do next. Used by the
//! daemon's delivery task and by `notify test`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::{Digest as _, Sha256};

use crate::model::NotifyTarget;
use crate::store::Event;

/// How long one request or SMTP session may take: a target that is slow
/// holds up only its own delivery, never a reconcile.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// What a target answered when it accepted a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The HTTP status or SMTP reply code.
    pub code: u16,
    /// The start of the answer's body or the SMTP reply text.
    pub text: String,
}

/// Why a message was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The secret file cannot be read (it may have been rotated away).
    #[error("cannot read the secret file {}: {source}", path.display())]
    Secret {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The target could not be reached, or did not answer in time.
    #[error("cannot reach {url}: {detail}")]
    Unreachable {
        /// Where.
        url: String,
        /// What happened.
        detail: String,
    },
    /// The target answered, but not with 2xx.
    #[error("{url} answered {status}: {body}")]
    Refused {
        /// Where.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The start of the body.
        body: String,
    },
    /// The SMTP server could not be reached or refused the mail.
    #[error("the SMTP server {server} did not accept the mail: {detail}")]
    Smtp {
        /// `host:port`.
        server: String,
        /// What it said, or why it could not be asked.
        detail: String,
    },
    /// The target has no kind (`validate` refuses this; kept for safety).
    #[error("the target {0:?} has no webhook, slack or email")]
    NoKind(String),
}

/// Sends `events` (one, or several of one type) to `target` as one message.
/// `secret` is the target's resolved `secret_file`; `host` names this
/// machine in the message (CloudEvents `source`, the mail's text).
pub fn send(
    target: &NotifyTarget,
    secret: Option<&Path>,
    events: &[Event],
    host: &str,
) -> Result<Accepted, SendError> {
    send_within(target, secret, events, host, TIMEOUT)
}

/// [`send`], giving up after `timeout` (at most [`TIMEOUT`]).
pub fn send_within(
    target: &NotifyTarget,
    secret: Option<&Path>,
    events: &[Event],
    host: &str,
    timeout: Duration,
) -> Result<Accepted, SendError> {
    let timeout = timeout.min(TIMEOUT).max(Duration::from_millis(100));
    let key = match secret {
        Some(path) => Some(read_secret(path)?),
        None => None,
    };
    if let Some(url) = &target.webhook {
        let body = cloudevent(events, host).to_string();
        let mut headers = vec![(
            "Content-Type",
            "application/cloudevents+json; charset=utf-8".to_owned(),
        )];
        if let Some(key) = &key {
            headers.push(("X-Sitekeeper-Signature", signature(key, body.as_bytes())));
        }
        post(url.as_str(), &headers, body.as_bytes(), timeout)
    } else if let Some(url) = &target.slack {
        let body = serde_json::json!({ "text": slack_text(events) }).to_string();
        let headers = [("Content-Type", "application/json".to_owned())];
        post(url.as_str(), &headers, body.as_bytes(), timeout)
    } else if let Some(email) = &target.email {
        mail(email, key.as_deref(), events, host, timeout)
    } else {
        Err(SendError::NoKind(target.name.clone()))
    }
}

/// The secret file's content, without the line end an editor or `echo` adds.
fn read_secret(path: &Path) -> Result<Vec<u8>, SendError> {
    std::fs::read(path)
        .map(|b| b.trim_ascii().to_vec())
        .map_err(|source| SendError::Secret {
            path: path.to_owned(),
            source,
        })
}

/// `sha256=<hex HMAC-SHA256 of body keyed by key>`.
pub fn signature(key: &[u8], body: &[u8]) -> String {
    // HMAC takes keys of any length; this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The CloudEvents 1.0 structured-mode envelope. `data` is always
/// `{"type", "sites", "events"}`, one event or an aggregate alike, so a
/// receiver reads both the same way. An aggregate's id is a hash of its
/// events' ids: stable too.
pub fn cloudevent(events: &[Event], host: &str) -> serde_json::Value {
    let kind = events.first().map_or("test", |e| e.kind.as_str());
    let id = match events {
        [one] => one.id.clone(),
        _ => {
            let mut h = Sha256::new();
            for e in events {
                h.update(e.id.as_bytes());
            }
            hex::encode(&h.finalize()[..16])
        }
    };
    let sites = site_names(events);
    let subject = match sites.as_slice() {
        [one] => one.clone(),
        _ => format!("{} sites", sites.len()),
    };
    let time = events.iter().map(|e| e.at.as_str()).max().unwrap_or("");
    serde_json::json!({
        "specversion": "1.0",
        "id": id,
        "source": format!("sitekeeper://{host}"),
        "type": format!("dev.sitekeeper.{kind}"),
        "subject": subject,
        "time": time,
        "datacontenttype": "application/json",
        "data": {"type": kind, "sites": sites, "events": events},
    })
}

/// The sites of `events`, in order, each once.
fn site_names(events: &[Event]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for e in events {
        if !out.contains(&e.site) {
            out.push(e.site.clone());
        }
    }
    out
}

/// What happened, in a few words.
fn headline(kind: &str) -> &'static str {
    match kind {
        "failed" => "a change failed",
        "rolled_back" => "a change failed its checks and was rolled back",
        "quarantined" => "a release or fix was quarantined",
        "recovered" => "works again",
        "approval_required" => "a change waits for an approval",
        "upgrade_available" => "an upgrade is available",
        "preflight" => "a change was held by its preflight checks",
        "failure_marker" => "is stopped by a failure marker",
        "untrusted_source" => "the catalog or fleet commit is not trusted",
        "drift" => "managed files were changed on the server",
        "test" => "test notification",
        _ => "an event",
    }
}

/// What the operator should do about it.
fn advice(kind: &str) -> &'static str {
    match kind {
        "failed" => "Look at the error; the daemon retries with a backoff.",
        "rolled_back" | "quarantined" => {
            "Fix the cause, then `sitekeeper apply SITE --release V` (or `--fix ID`) tries it again; a newer release also lifts the quarantine."
        }
        "recovered" => "Nothing to do.",
        "approval_required" => {
            "Review the plan and add its digest with `sitekeeper approve SITE --digest D --by NAME`."
        }
        "upgrade_available" => {
            "See `sitekeeper check SITE` for why it does not apply automatically."
        }
        "preflight" => "Fix what the check names (disk space, permissions, …); the daemon retries.",
        "failure_marker" => "Repair the site by hand, then `sitekeeper resolve SITE --by NAME`.",
        "untrusted_source" => {
            "Check who pushed the commit; nothing is applied until a signed one arrives."
        }
        "drift" => {
            "See `sitekeeper status SITE`; keep the change in the catalog or let the policy revert it."
        }
        _ => "Nothing to do.",
    }
}

/// One line per event: site, version, item, reason, point.
fn event_line(e: &Event) -> String {
    let mut line = format!("• {}", e.site);
    if let Some(v) = &e.version {
        line.push_str(&format!(" (version {v})"));
    }
    if !e.item.is_empty() {
        line.push_str(&format!(": {}", e.item));
    }
    if !e.reason.is_empty() {
        line.push_str(&format!(" — {}", e.reason));
    }
    if let Some(p) = e.point {
        line.push_str(&format!(" [point {p}]"));
    }
    line
}

/// A Slack message: what happened to which sites, why, and what to do.
pub fn slack_text(events: &[Event]) -> String {
    let kind = events.first().map_or("test", |e| e.kind.as_str());
    let sites = site_names(events);
    let who = match sites.as_slice() {
        [one] => format!("*{one}*"),
        _ => format!("*{} sites*", sites.len()),
    };
    let mut text = format!("sitekeeper: {who}: {} (`{kind}`)\n", headline(kind));
    for e in events {
        text.push_str(&event_line(e));
        text.push('\n');
    }
    text.push_str(&format!("_What to do:_ {}", advice(kind)));
    text
}

/// The mail's subject and plain-text body.
pub fn mail_text(events: &[Event], host: &str) -> (String, String) {
    let kind = events.first().map_or("test", |e| e.kind.as_str());
    let sites = site_names(events);
    let who = match sites.as_slice() {
        [one] => one.clone(),
        _ => format!("{} sites", sites.len()),
    };
    let subject = format!("[sitekeeper] {who}: {kind}");
    let mut body = format!("{who}: {} (event: {kind})\n\n", headline(kind));
    for e in events {
        body.push_str(&event_line(e).replacen('•', "-", 1));
        body.push('\n');
    }
    body.push_str(&format!(
        "\nWhat to do: {}\n\n-- \nsitekeeper on {host}\n",
        advice(kind)
    ));
    (subject, body)
}

/// POSTs `body`; 2xx is acceptance.
fn post(
    url: &str,
    headers: &[(&str, String)],
    body: &[u8],
    timeout: Duration,
) -> Result<Accepted, SendError> {
    use ureq::tls::{RootCerts, TlsConfig, TlsProvider};
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .max_redirects(0)
        .tls_config(
            TlsConfig::builder()
                .provider(TlsProvider::NativeTls)
                .root_certs(RootCerts::PlatformVerifier)
                .build(),
        )
        .build()
        .into();
    let mut req = agent.post(url);
    for (k, v) in headers {
        req = req.header(*k, v.as_str());
    }
    let mut resp = req.send(body).map_err(|e| SendError::Unreachable {
        url: url.to_owned(),
        detail: e.to_string(),
    })?;
    let status = resp.status().as_u16();
    // Only the start of the answer: it is for a person reading a log.
    let text = resp
        .body_mut()
        .with_config()
        .limit(4096)
        .read_to_string()
        .unwrap_or_default();
    let text: String = text.trim().chars().take(200).collect();
    if (200..300).contains(&status) {
        Ok(Accepted { code: status, text })
    } else {
        Err(SendError::Refused {
            url: url.to_owned(),
            status,
            body: text,
        })
    }
}

/// Sends the mail; the server's acceptance of it is delivery.
fn mail(
    email: &crate::model::EmailTarget,
    secret: Option<&[u8]>,
    events: &[Event],
    host: &str,
    timeout: Duration,
) -> Result<Accepted, SendError> {
    use lettre::message::{Mailbox, header::ContentType};
    use lettre::transport::smtp::authentication::Credentials;
    use lettre::transport::smtp::client::{Tls, TlsParameters};
    use lettre::{Message, SmtpTransport, Transport};

    let server = email.smtp.clone();
    let fail = |detail: String| SendError::Smtp {
        server: server.clone(),
        detail,
    };
    let (smtp_host, port) = email
        .smtp
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.to_owned(), p.parse::<u16>().ok()?)))
        .ok_or_else(|| fail("not host:port".into()))?;
    let parse = |a: &str| {
        a.parse::<Mailbox>()
            .map_err(|e| fail(format!("{a:?} is not a mail address: {e}")))
    };
    let (subject, body) = mail_text(events, host);
    let mut builder = Message::builder()
        .from(parse(&email.from)?)
        .subject(subject);
    for to in &email.to {
        builder = builder.to(parse(to)?);
    }
    let message = builder
        .header(ContentType::TEXT_PLAIN)
        .body(body)
        .map_err(|e| fail(e.to_string()))?;
    // STARTTLS when the server offers it (SPEC §9): Opportunistic.
    let tls = TlsParameters::new(smtp_host.clone()).map_err(|e| fail(e.to_string()))?;
    let mut transport = SmtpTransport::builder_dangerous(smtp_host)
        .port(port)
        .tls(Tls::Opportunistic(tls))
        .timeout(Some(timeout));
    if let Some(secret) = secret {
        // `USER:PASSWORD`, or (without a colon) a password for the
        // sender's address.
        let text = String::from_utf8_lossy(secret).into_owned();
        let (user, password) = match text.split_once(':') {
            Some((u, p)) => (u.to_owned(), p.to_owned()),
            None => (email.from.clone(), text.clone()),
        };
        transport = transport.credentials(Credentials::new(user, password));
    }
    let response = transport
        .build()
        .send(&message)
        .map_err(|e| fail(e.to_string()))?;
    Ok(Accepted {
        code: u16::from(response.code()),
        text: response.message().collect::<Vec<_>>().join(" "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn ev(site: &str) -> Event {
        Event::new(
            "rolled_back",
            "2026-11-20T10:00:00Z".into(),
            site,
            BTreeMap::new(),
            Some("1.0.0".into()),
            "release 1.1.0",
            "the post_apply hook failed".into(),
            Some(4),
        )
    }

    #[test]
    fn the_signature_is_hmac_sha256_of_the_body() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn one_event_and_an_aggregate_read_the_same_way() {
        let one = cloudevent(&[ev("a")], "h");
        assert_eq!(one["specversion"], "1.0");
        assert_eq!(one["id"], ev("a").id);
        assert_eq!(one["subject"], "a");
        assert_eq!(one["type"], "dev.sitekeeper.rolled_back");
        let many = cloudevent(&[ev("a"), ev("b"), ev("a")], "h");
        assert_eq!(many["data"]["sites"], serde_json::json!(["a", "b"]));
        assert_eq!(many["subject"], "2 sites");
        assert_eq!(many["data"]["events"].as_array().map(Vec::len), Some(3));
    }

    #[test]
    fn messages_say_site_what_why_and_what_to_do() {
        let text = slack_text(&[ev("shop")]);
        for needle in [
            "*shop*",
            "rolled back",
            "post_apply hook failed",
            "apply SITE --release",
        ] {
            assert!(text.contains(needle), "{needle} in {text}");
        }
        let (subject, body) = mail_text(&[ev("shop")], "h");
        assert_eq!(subject, "[sitekeeper] shop: rolled_back");
        assert!(
            body.contains("- shop (version 1.0.0): release 1.1.0"),
            "{body}"
        );
    }
}
