//! Notify targets over TLS (SPEC §9, issue 20 item 2): an `email` target
//! against a real SMTP server (Python's `aiosmtpd`) that requires STARTTLS
//! and AUTH, and a `webhook` target on https. Both servers use a
//! certificate from a test CA that sitekeeper trusts only through
//! OpenSSL's `SSL_CERT_FILE`: with it the messages are accepted (the mail
//! after STARTTLS, as the user of the secret file); without it both are
//! refused, and nothing goes out in clear text.

use std::io::BufRead as _;

use hmac::Mac as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::notify::{KEY, add_notify, setup};
use crate::support::{free_port, sitekeeper, stderr, stdout, tls_certificates, wait_for_port};

/// The SMTP server requires STARTTLS before anything and AUTH before
/// mail; the https server answers 200 to a POST. Both append what they
/// got to `got.txt`, one record per line.
const SERVERS: &str = r#"
import asyncio, http.server, json, ssl, sys, threading
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

smtp_port, https_port, cert, key, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
lock = threading.Lock()

def record(obj):
    with lock, open(out, "a") as f:
        f.write(json.dumps(obj) + "\n")

def context():
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    return ctx

class Mail:
    async def handle_DATA(self, server, session, envelope):
        record({"mail": envelope.content.decode("utf-8", "replace"),
                "tls": session.ssl is not None,
                "user": session.auth_data.login.decode() if session.auth_data else None})
        return "250 OK"

def authenticate(server, session, envelope, mechanism, auth_data):
    ok = (auth_data.login, auth_data.password) == (b"ops", b"s3cret")
    return AuthResult(success=ok, auth_data=auth_data if ok else None)

class Hook(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        record({"https": body.decode(), "signature": self.headers.get("X-Sitekeeper-Signature")})
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *args):
        pass

smtp = Controller(Mail(), hostname="127.0.0.1", port=smtp_port, tls_context=context(),
                  require_starttls=True, authenticator=authenticate, auth_required=True)
smtp.start()
https = http.server.ThreadingHTTPServer(("127.0.0.1", https_port), Hook)
https.socket = context().wrap_socket(https.socket, server_side=True)
https.serve_forever()
"#;

struct Servers {
    child: Child,
    got: std::path::PathBuf,
}

impl Servers {
    fn start(dir: &Path, smtp: u16, https: u16) -> Self {
        tls_certificates(dir);
        let got = dir.join("got.txt");
        let child = Command::new("python3")
            .arg("-c")
            .arg(SERVERS)
            .arg(smtp.to_string())
            .arg(https.to_string())
            .arg(dir.join("server.pem"))
            .arg(dir.join("server.key"))
            .arg(&got)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("servers.log")).unwrap())
            .spawn()
            .expect("python3 runs");
        wait_for_port(smtp, Duration::from_secs(20));
        wait_for_port(https, Duration::from_secs(20));
        Self { child, got }
    }

    /// What the servers got, one JSON record each.
    fn got(&self) -> Vec<serde_json::Value> {
        std::fs::File::open(&self.got)
            .map(|f| {
                std::io::BufReader::new(f)
                    .lines()
                    .map_while(Result::ok)
                    .filter_map(|l| serde_json::from_str(&l).ok())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn mail_goes_through_starttls_with_auth_and_webhooks_through_https_only_with_a_trusted_ca() {
    let (smtp, https) = (free_port(), free_port());
    let dir = setup(&["shop"], "");
    let d = dir.path();
    std::fs::write(d.join("mail.secret"), "ops:s3cret\n").unwrap();
    std::fs::write(d.join("wrong.secret"), "ops:guess\n").unwrap();
    let certs = d.join("certs");
    std::fs::create_dir(&certs).unwrap();
    let servers = Servers::start(&certs, smtp, https);
    let mail = |name: &str, secret: &str| {
        format!(
            "  - name: {name}\n    email: {{smtp: \"127.0.0.1:{smtp}\", from: sitekeeper@example.com, to: [ops@example.com]}}\n    secret_file: {}\n",
            d.join(secret).display()
        )
    };
    add_notify(
        d,
        &format!(
            "notify:\n{}{}  - name: hook\n    webhook: https://127.0.0.1:{https}/hook\n    secret_file: {}\n",
            mail("mail", "mail.secret"),
            mail("intruder", "wrong.secret"),
            d.join("secret").display()
        ),
    );
    let run = |name: &str, trust: bool| {
        let mut cmd = sitekeeper(&d.join("state"));
        cmd.current_dir(d.join("fleet"))
            .args(["notify", "test", name]);
        if trust {
            cmd.env("SSL_CERT_FILE", certs.join("ca.pem"));
        } else {
            // The system's store, which does not hold the test CA.
            cmd.env_remove("SSL_CERT_FILE");
        }
        cmd.output().unwrap()
    };

    // Not trusted: refused before anything is sent.
    for name in ["mail", "hook"] {
        let out = run(name, false);
        assert_eq!(out.status.code(), Some(1), "{name}: {}", stdout(&out));
        assert!(
            stderr(&out).contains(&format!("{name}: not accepted:")),
            "{}",
            stderr(&out)
        );
    }
    assert!(servers.got().is_empty(), "{:?}", servers.got());

    // A wrong password: the server refuses AUTH.
    let out = run("intruder", true);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(servers.got().is_empty(), "{:?}", servers.got());

    // Trusted: the mail after STARTTLS as the secret file's user, and the
    // webhook signed, over https.
    let out = run("mail", true);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with("mail: accepted (250)"),
        "{}",
        stdout(&out)
    );
    let out = run("hook", true);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let got = servers.got();
    let mail = got
        .iter()
        .find(|r| r.get("mail").is_some())
        .expect("a mail");
    assert_eq!(mail["tls"], true, "{mail}");
    assert_eq!(mail["user"], "ops", "{mail}");
    assert!(
        mail["mail"]
            .as_str()
            .unwrap()
            .contains("Subject: [sitekeeper] shop: test"),
        "{mail}"
    );
    let hook = got
        .iter()
        .find(|r| r.get("https").is_some())
        .expect("a POST");
    let body = hook["https"].as_str().unwrap();
    let sent: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(sent["type"], "dev.sitekeeper.test", "{hook}");
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(KEY.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(hook["signature"], expected.as_str(), "{hook}");
}
