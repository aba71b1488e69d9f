//! The harness's SMTP server is real: lettre talks SMTP to aiosmtpd, and the test
//! parses the MIME that arrived. Korean survives headers and body.

use lettre::{
    AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor, message::header::ContentType,
};
use mailparse::MailHeaderMap;

use crate::harness::SmtpServer;

#[tokio::test]
async fn korean_mail_round_trips_through_a_real_smtp_server() {
    let smtp = SmtpServer::start();
    let mailer: AsyncSmtpTransport<Tokio1Executor> =
        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
            .port(smtp.port)
            .build();
    let message = Message::builder()
        .from("홍길동 <sender@example.kr>".parse().unwrap())
        .to("김철수 <user@example.kr>".parse().unwrap())
        .subject("3일 연속 미오픈 — 관심이 줄었나요?")
        .header(ContentType::TEXT_PLAIN)
        .body("안녕하세요, 홍길동입니다. 마케팅 사례를 보내드립니다.".to_string())
        .unwrap();
    mailer.send(message).await.unwrap();

    let received = smtp.wait_for(1).await;
    assert_eq!(received.len(), 1);
    let parsed = mailparse::parse_mail(&received[0]).unwrap();
    assert_eq!(
        parsed.headers.get_first_value("Subject").as_deref(),
        Some("3일 연속 미오픈 — 관심이 줄었나요?")
    );
    assert!(
        parsed
            .headers
            .get_first_value("From")
            .unwrap()
            .contains("홍길동")
    );
    assert_eq!(
        parsed.headers.get_first_value("X-RcptTo").as_deref(),
        Some("user@example.kr"),
        "the envelope recipient is recorded"
    );
    assert_eq!(
        parsed.get_body().unwrap().trim(),
        "안녕하세요, 홍길동입니다. 마케팅 사례를 보내드립니다."
    );
}

/// aiosmtpd with TLS (STARTTLS required, or implicit TLS from the first byte) and
/// AUTH required, holding a certificate from a private CA made for the test.
struct SecureSmtp {
    child: std::process::Child,
    port: u16,
    maildir: std::path::PathBuf,
}

impl Drop for SecureSmtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const SECURE_SERVER: &str = r#"
import ssl, sys
from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Mailbox
from aiosmtpd.smtp import AuthResult, LoginPassword

mode, port, cert, key, maildir, user, password = sys.argv[1:]
ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
ctx.load_cert_chain(cert, key)

def check(server, session, envelope, mechanism, data):
    ok = isinstance(data, LoginPassword) and data.login == user.encode() and data.password == password.encode()
    return AuthResult(success=ok, handled=False)

kw = dict(hostname="127.0.0.1", port=int(port), authenticator=check, auth_required=True)
if mode == "starttls":
    kw.update(tls_context=ctx, require_starttls=True, auth_require_tls=True)
else:
    kw.update(ssl_context=ctx, auth_require_tls=False)
server = Controller(Mailbox(maildir), server_hostname="localhost", **kw)
server.start()
print("ready", flush=True)
sys.stdin.read()
server.stop()
"#;

/// A CA and a `localhost` leaf certificate signed by it; returns (ca, cert, key).
fn private_ca(
    dir: &std::path::Path,
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    std::fs::write(
        dir.join("leaf.ext"),
        "basicConstraints=CA:FALSE\nsubjectAltName=DNS:localhost\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=Loopline test CA",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "leaf.key",
        "-out",
        "leaf.csr",
        "-subj",
        "/CN=localhost",
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "leaf.pem",
        "-days",
        "2",
        "-extfile",
        "leaf.ext",
    ]);
    (
        dir.join("ca.pem"),
        dir.join("leaf.pem"),
        dir.join("leaf.key"),
    )
}

impl SecureSmtp {
    fn start(mode: &str, cert: &std::path::Path, key: &std::path::Path) -> Self {
        use std::io::BufRead;
        let port = crate::harness::free_port();
        let maildir = crate::harness::tmp_root()
            .join("maildirs")
            .join(uuid::Uuid::new_v4().simple().to_string());
        std::fs::create_dir_all(maildir.parent().unwrap()).unwrap();
        let mut cmd = std::process::Command::new("python3");
        if let Some(p) = crate::harness::aiosmtpd_pythonpath() {
            cmd.env("PYTHONPATH", p);
        }
        let mut child = cmd
            .args(["-c", SECURE_SERVER, mode, &port.to_string()])
            .arg(cert)
            .arg(key)
            .arg(&maildir)
            .args(["mailer", "비밀 password"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "the TLS SMTP server did not start");
        Self {
            child,
            port,
            maildir,
        }
    }

    fn received(&self) -> Vec<Vec<u8>> {
        std::fs::read_dir(self.maildir.join("new"))
            .map(|d| {
                d.flatten()
                    .filter_map(|e| std::fs::read(e.path()).ok())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// The sender's own connection pool speaks STARTTLS and implicit TLS and logs in, and
/// trusts a private relay's CA only when SMTP_CA_FILE names it.
#[tokio::test]
async fn the_sender_uses_starttls_or_implicit_tls_and_authenticates() {
    use loopline::{clock::Clock, config::SmtpConfig, secrets::Secret, startup};

    use crate::harness::TestApp;

    let dir = crate::harness::tmp_root().join(format!("tls-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let (ca, cert, key) = private_ca(&dir);
    let ca_pem = std::fs::read(&ca).unwrap();

    for (mode, url) in [
        (
            "starttls",
            "smtp://mailer:%EB%B9%84%EB%B0%80%20password@localhost:{port}?tls=required",
        ),
        (
            "implicit",
            "smtps://mailer:%EB%B9%84%EB%B0%80%20password@localhost:{port}",
        ),
    ] {
        let server = SecureSmtp::start(mode, &cert, &key);
        let url = url.replace("{port}", &server.port.to_string());
        let send_one = |trust: bool, wrong_password: bool| {
            let url = if wrong_password {
                url.replace("%20password", "%20wrong")
            } else {
                url.clone()
            };
            let ca_pem = ca_pem.clone();
            async move {
                let app = TestApp::spawn_with(
                    move |c| {
                        c.smtp = Some(SmtpConfig {
                            url: Secret::new(url),
                        });
                        c.mail.from_email = "news@example.kr".into();
                        c.mail.smtp_ca = trust.then_some(ca_pem);
                    },
                    startup::job_registry(),
                )
                .await;
                let id: i64 = sqlx::query_scalar(
                    "INSERT INTO subscribers (email, name, status, created_at) VALUES ('tls@example.kr', '보안', 'active', now()) RETURNING id",
                )
                .fetch_one(&app.pool)
                .await
                .unwrap();
                let now = app.clock.now();
                let mut tx = app.pool.begin().await.unwrap();
                let body = loopline::delivery::system::confirmation_body(&mut tx, Some("ko"))
                    .await
                    .unwrap();
                loopline::delivery::outbox::enqueue(
                    &mut tx,
                    &loopline::delivery::outbox::NewMessage {
                        idempotency_key: "tls-check".into(),
                        marketing: false,
                        body_id: body,
                        subscriber_id: Some(id),
                        to_email: "tls@example.kr".into(),
                        to_name: "보안".into(),
                        data: serde_json::json!({ "confirm_url": "https://example.kr/c", "form": "뉴스" }),
                        run_at: now,
                    },
                    now,
                )
                .await
                .unwrap();
                tx.commit().await.unwrap();
                let round = app.send_mail().await;
                let (status, reply): (String, Option<String>) =
                    sqlx::query_as("SELECT status::text, smtp_reply FROM messages")
                        .fetch_one(&app.pool)
                        .await
                        .unwrap();
                (round, status, reply)
            }
        };

        // Without the CA the certificate is refused: nothing is sent, nothing is spent.
        let (round, status, _) = send_one(false, false).await;
        assert_eq!(
            (round.sent, status.as_str()),
            (0, "queued"),
            "{mode}: untrusted certificate"
        );
        assert!(server.received().is_empty());
        // A wrong password is our misconfiguration, not the recipient's problem: the
        // mail waits (no attempt spent, nothing bounced) and the reply is kept.
        let (round, status, reply) = send_one(true, true).await;
        assert_eq!(
            (round.sent, round.bounced, round.unreachable),
            (0, 0, 1),
            "{mode}: wrong password"
        );
        assert_eq!(status, "queued");
        let reply = reply.unwrap_or_default();
        assert!(reply.contains("535"), "{mode}: {reply:?}");
        // Trusted and logged in: delivered, Korean subject intact.
        let (round, status, _) = send_one(true, false).await;
        assert_eq!((round.sent, status.as_str()), (1, "sent"), "{mode}");
        let received = server.received();
        assert_eq!(received.len(), 1, "{mode}");
        let mail = mailparse::parse_mail(&received[0]).unwrap();
        assert_eq!(
            mail.headers.get_first_value("Subject").as_deref(),
            Some("구독을 확인해 주세요")
        );
    }
}
