//! Amazon SES feedback through SNS, end to end without AWS: a test PKI made with the
//! `openssl` CLI (root → intermediate → an SNS signing certificate for
//! `sns.amazonaws.com`, and a TLS certificate for `localhost`), a local HTTPS server
//! that plays SNS (the certificate file, its issuer behind the "CA issuers" link, the
//! subscription link), and messages RSA-signed by `openssl dgst` over the string SNS
//! signs. The app fetches through the guarded fetcher built for tests (the test root
//! trusted, loopback allowed, every SNS link on the local server).
//!
//! Also the fetcher's own guard: the production fetcher refuses loopback, by name or
//! by number, with a clear error.

use std::{
    collections::HashMap,
    convert::Infallible,
    path::{Path, PathBuf},
    process::Command,
    sync::{Arc, Mutex},
};

use base64::{Engine, engine::general_purpose::STANDARD as B64};
use chrono::{DateTime, Utc};
use http_body_util::Full;
use hyper::{Request, Response, body::Bytes, body::Incoming, service::service_fn};
use hyper_util::rt::TokioIo;
use loopline::{
    clock::Clock,
    delivery::feedback::{self, SesConfig, sns::SnsTrust},
    net::{FetchError, Fetcher, Options, ip::Class},
};
use reqwest::StatusCode;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::{
    harness::{TestApp, tmp_root},
    webhooks::{event_count, events, sent, status, subscriber},
};

const TOPIC: &str = "arn:aws:sns:us-east-1:123456789012:ses-feedback";

/// The test PKI, made fresh for each test (the issuer link names the server's port).
struct Pki {
    dir: PathBuf,
    root_der: Vec<u8>,
    /// The SNS signing certificate alone (as SNS serves it), and with its issuer.
    leaf_pem: String,
    int_pem: String,
    int_der: Vec<u8>,
    /// A certificate for sns.amazonaws.com from a CA nobody trusts.
    rogue_pem: String,
    server_der: Vec<u8>,
    server_key_der: Vec<u8>,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the openssl command line tool (apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn pem_der(pem: &str) -> Vec<u8> {
    let b64: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .concat();
    B64.decode(b64).unwrap()
}

impl Pki {
    fn make(port: u16) -> Self {
        let dir = tmp_root().join(format!(
            "ses-pki-{}-{port}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let write = |name: &str, text: &str| std::fs::write(dir.join(name), text).unwrap();
        write(
            "ca.cnf",
            "[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = Loopline Test Root\n\
             [v3]\nbasicConstraints = critical,CA:TRUE\nkeyUsage = critical,keyCertSign,cRLSign\n\
             subjectKeyIdentifier = hash\n",
        );
        write(
            "rogue.cnf",
            "[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = Not Amazon\n\
             [v3]\nbasicConstraints = critical,CA:TRUE\nkeyUsage = critical,keyCertSign,cRLSign\n\
             subjectKeyIdentifier = hash\n",
        );
        write(
            "int.ext",
            "basicConstraints = critical,CA:TRUE,pathlen:0\nkeyUsage = critical,keyCertSign,cRLSign\n\
             subjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid\n",
        );
        write(
            "leaf.ext",
            &format!(
                "basicConstraints = CA:FALSE\nkeyUsage = critical,digitalSignature,keyEncipherment\n\
                 extendedKeyUsage = serverAuth\nsubjectAltName = DNS:sns.amazonaws.com\n\
                 authorityInfoAccess = caIssuers;URI:https://localhost:{port}/int.der\n"
            ),
        );
        write(
            "server.ext",
            "basicConstraints = CA:FALSE\nkeyUsage = critical,digitalSignature,keyEncipherment\n\
             extendedKeyUsage = serverAuth\nsubjectAltName = DNS:localhost\n",
        );
        let o = |args: &[&str]| openssl(&dir, args);
        let req = |key: &str, csr: &str, subject: &str| {
            o(&[
                "req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr,
                "-subj", subject,
            ])
        };
        let sign = |csr: &str, ca: &str, ca_key: &str, ext: &str, out: &str| {
            o(&[
                "x509",
                "-req",
                "-in",
                csr,
                "-CA",
                ca,
                "-CAkey",
                ca_key,
                "-CAcreateserial",
                "-days",
                "3650",
                "-sha256",
                "-extfile",
                ext,
                "-out",
                out,
            ])
        };
        for (cnf, key, cert) in [
            ("ca.cnf", "root.key", "root.pem"),
            ("rogue.cnf", "rogue-root.key", "rogue-root.pem"),
        ] {
            o(&[
                "req",
                "-x509",
                "-config",
                cnf,
                "-extensions",
                "v3",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                key,
                "-out",
                cert,
                "-days",
                "3650",
                "-sha256",
            ]);
        }
        req("int.key", "int.csr", "/CN=Loopline Test Intermediate");
        sign("int.csr", "root.pem", "root.key", "int.ext", "int.pem");
        req("leaf.key", "leaf.csr", "/CN=sns.amazonaws.com");
        sign("leaf.csr", "int.pem", "int.key", "leaf.ext", "leaf.pem");
        req("rogue.key", "rogue.csr", "/CN=sns.amazonaws.com");
        sign(
            "rogue.csr",
            "rogue-root.pem",
            "rogue-root.key",
            "server.ext",
            "rogue.pem",
        );
        req("server.key", "server.csr", "/CN=localhost");
        sign(
            "server.csr",
            "root.pem",
            "root.key",
            "server.ext",
            "server.pem",
        );
        let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap();
        let int_pem = read("int.pem");
        Self {
            root_der: pem_der(&read("root.pem")),
            leaf_pem: read("leaf.pem"),
            int_der: pem_der(&int_pem),
            int_pem,
            rogue_pem: read("rogue.pem"),
            server_der: pem_der(&read("server.pem")),
            server_key_der: pem_der(&read("server.key")),
            dir,
        }
    }

    /// `openssl dgst` over `text` with `key`: RSA PKCS#1 v1.5, SHA-1 or SHA-256.
    fn sign(&self, key: &str, sha: &str, text: &str) -> String {
        let name = format!("msg-{}.txt", rand_suffix());
        std::fs::write(self.dir.join(&name), text).unwrap();
        let sig = format!("{name}.sig");
        openssl(&self.dir, &["dgst", sha, "-sign", key, "-out", &sig, &name]);
        B64.encode(std::fs::read(self.dir.join(&sig)).unwrap())
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn rand_suffix() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_string()
}

/// A local HTTPS server playing SNS; it remembers every request target.
struct LocalSns {
    port: u16,
    seen: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for LocalSns {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl LocalSns {
    fn start(listener: TcpListener, pki: &Pki) -> Self {
        let port = listener.local_addr().unwrap().port();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(pki.server_der.clone())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pki.server_key_der.clone())),
        )
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let mut files: HashMap<&'static str, Vec<u8>> = HashMap::new();
        files.insert("/cert.pem", pki.leaf_pem.clone().into_bytes());
        files.insert(
            "/chain.pem",
            format!("{}{}", pki.leaf_pem, pki.int_pem).into_bytes(),
        );
        files.insert("/int.der", pki.int_der.clone());
        files.insert("/rogue.pem", pki.rogue_pem.clone().into_bytes());
        files.insert("/big", vec![b'x'; 2 * 1024 * 1024]);
        let files = Arc::new(files);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, files, log) = (acceptor.clone(), files.clone(), log.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = service_fn(move |req: Request<Incoming>| {
                        let target = req.uri().to_string();
                        log.lock().unwrap().push(target.clone());
                        let path = req.uri().path().to_string();
                        let query = req.uri().query().unwrap_or("").to_string();
                        let files = files.clone();
                        async move {
                            let mut res = Response::builder();
                            let body = if path == "/redirect" {
                                res = res.status(302).header("location", "/cert.pem");
                                Vec::new()
                            } else if path == "/" && query.starts_with("Action=ConfirmSubscription")
                            {
                                b"<ConfirmSubscriptionResponse><ConfirmSubscriptionResult><SubscriptionArn>arn:aws:sns:us-east-1:123456789012:ses-feedback:1</SubscriptionArn></ConfirmSubscriptionResult></ConfirmSubscriptionResponse>".to_vec()
                            } else if let Some(f) = files.get(path.as_str()) {
                                f.clone()
                            } else {
                                res = res.status(404);
                                b"not found".to_vec()
                            };
                            Ok::<_, Infallible>(res.body(Full::new(Bytes::from(body))).unwrap())
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Self { port, seen, task }
    }

    fn base(&self) -> String {
        format!("https://localhost:{}", self.port)
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }

    fn count(&self, prefix: &str) -> usize {
        self.seen().iter().filter(|t| t.starts_with(prefix)).count()
    }
}

/// The test PKI, the local SNS and the app configured for both.
struct World {
    pki: Pki,
    sns: LocalSns,
    app: TestApp,
}

async fn world() -> World {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let pki = Pki::make(port);
    let sns = LocalSns::start(listener, &pki);
    let fetcher = test_fetcher(&pki);
    let host = format!("localhost:{port}");
    let app = TestApp::spawn_with(
        move |c| {
            c.webhooks.ses = Some(SesConfig {
                topic_arns: vec![TOPIC.into()],
                trust: SnsTrust::for_tests(fetcher, &host),
            });
        },
        loopline::startup::job_registry(),
    )
    .await;
    World { pki, sns, app }
}

fn test_fetcher(pki: &Pki) -> Fetcher {
    Fetcher::builder()
        .add_root_certificate(pki.root_der.clone())
        .allow_loopback_for_tests()
        .build()
        .unwrap()
}

fn sns_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// The string SNS signs, written here independently of the app's.
fn string_to_sign(m: &Value) -> String {
    let keys: &[&str] = if m["Type"] == "Notification" {
        &[
            "Message",
            "MessageId",
            "Subject",
            "Timestamp",
            "TopicArn",
            "Type",
        ]
    } else {
        &[
            "Message",
            "MessageId",
            "SubscribeURL",
            "Timestamp",
            "Token",
            "TopicArn",
            "Type",
        ]
    };
    keys.iter()
        .filter_map(|k| {
            m.get(*k)
                .and_then(Value::as_str)
                .map(|v| format!("{k}\n{v}\n"))
        })
        .collect()
}

impl World {
    fn now(&self) -> DateTime<Utc> {
        self.app.clock.now()
    }

    /// Signs `m` as SNS does, with the genuine key (or `key`), by its SignatureVersion.
    fn signed_with(&self, mut m: Value, key: &str) -> Value {
        let sha = if m["SignatureVersion"] == "1" {
            "-sha1"
        } else {
            "-sha256"
        };
        m["Signature"] = json!(self.pki.sign(key, sha, &string_to_sign(&m)));
        m
    }

    fn signed(&self, m: Value) -> Value {
        self.signed_with(m, "leaf.key")
    }

    /// An SNS notification carrying `message` (SES's JSON, as a string).
    fn notification(&self, id: &str, message: &Value, version: &str) -> Value {
        self.signed(json!({
            "Type": "Notification",
            "MessageId": id,
            "TopicArn": TOPIC,
            "Message": message.to_string(),
            "Timestamp": sns_time(self.now()),
            "SignatureVersion": version,
            "SigningCertURL": format!("{}/cert.pem", self.sns.base()),
            "UnsubscribeURL": format!("{}/?Action=Unsubscribe&SubscriptionArn={TOPIC}:1", self.sns.base()),
        }))
    }

    async fn post(&self, m: &Value) -> (StatusCode, Value) {
        self.post_as(m, m["Type"].as_str().unwrap_or("Notification"))
            .await
    }

    /// Posts `m` with `kind` in the `x-amz-sns-message-type` header, as SNS sends it.
    async fn post_as(&self, m: &Value, kind: &str) -> (StatusCode, Value) {
        let res = self
            .app
            .client()
            .http
            .post(format!("{}/webhooks/ses", self.app.base))
            .header("content-type", "text/plain; charset=UTF-8")
            .header("x-amz-sns-message-type", kind)
            .body(serde_json::to_vec(m).unwrap())
            .send()
            .await
            .unwrap();
        let status = res.status();
        let text = res.text().await.unwrap();
        let json =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}"));
        (status, json)
    }

    async fn receipts(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM feedback_receipts")
            .fetch_one(&self.app.pool)
            .await
            .unwrap()
    }
}

/// Posts `m` and expects it turned away with `expect` and a reason.
async fn refused(w: &World, m: Value, expect: StatusCode, why: &str) -> Value {
    let (code, res) = w.post(&m).await;
    assert_eq!(code, expect, "{why}: {res}");
    assert!(res["error"]["message"].as_str().is_some(), "{why}: {res}");
    res
}

/// SES's event-publishing record for a bounce, with the message tags the mail carried.
fn ses_bounce(bounce_type: &str, recipients: &[&str], tag: Option<&str>, at: &str) -> Value {
    let mut tags = json!({ "ses:configuration-set": ["loopline"] });
    if let Some(t) = tag {
        tags["loopline-message"] = json!([t]);
    }
    json!({
        "eventType": "Bounce",
        "bounce": {
            "bounceType": bounce_type,
            "bounceSubType": if bounce_type == "Permanent" { "General" } else { "MailboxFull" },
            "bouncedRecipients": recipients.iter().map(|r| json!({
                "emailAddress": r, "action": "failed", "status": "5.1.1",
                "diagnosticCode": "smtp; 550 5.1.1 user unknown"
            })).collect::<Vec<_>>(),
            "timestamp": at,
            "feedbackId": "0100015dbd4c9c2b-16a4b9d3-0f3f-4e3b-9b2e-b5c8e1a1b9ab-000000",
            "reportingMTA": "dsn; a8-70.smtp-out.amazonses.com"
        },
        "mail": {
            "timestamp": at,
            "source": "news@example.com",
            "sendingAccountId": "123456789012",
            "messageId": "0100015dbd4c98e8-ses-own-id-000000",
            "destination": recipients,
            "headersTruncated": false,
            "commonHeaders": { "from": ["news@example.com"], "to": recipients, "messageId": "0100015dbd4c98e8-ses-own-id-000000@email.amazonses.com", "subject": "This week" },
            "tags": tags
        }
    })
}

fn ses_complaint(recipient: &str, at: &str) -> Value {
    json!({
        "notificationType": "Complaint",
        "complaint": {
            "userAgent": "AnyCompany Feedback Loop (V0.01)",
            "complainedRecipients": [{ "emailAddress": recipient }],
            "complaintFeedbackType": "abuse",
            "arrivalDate": at,
            "timestamp": at,
            "feedbackId": "000001378603177f-18c07c78-fa81-4a58-9dd1-fedc3cb8f49a-000000"
        },
        "mail": {
            "timestamp": at,
            "messageId": "000001378603176d-5a4b5ad9-6f30-4198-a8c3-b1eb0c270a1d-000000",
            "source": "news@example.com",
            "destination": [recipient]
        }
    })
}

#[tokio::test]
async fn ses_subscription_is_confirmed_through_the_guarded_fetcher() {
    let w = world().await;
    let subscribe_url = format!(
        "{}/?Action=ConfirmSubscription&TopicArn={TOPIC}&Token=2336412f37fb687f5d51e6e2425c464de",
        w.sns.base()
    );
    let confirmation = |url: &str, id: &str| {
        w.signed(json!({
            "Type": "SubscriptionConfirmation",
            "MessageId": id,
            "Token": "2336412f37fb687f5d51e6e2425c464de",
            "TopicArn": TOPIC,
            "Message": format!("You have chosen to subscribe to the topic {TOPIC}.\nTo confirm the subscription, visit the SubscribeURL included in this message."),
            "SubscribeURL": url,
            "Timestamp": sns_time(w.now()),
            "SignatureVersion": "2",
            "SigningCertURL": format!("{}/cert.pem", w.sns.base()),
        }))
    };
    let (code, res) = w.post(&confirmation(&subscribe_url, "sub-1")).await;
    assert_eq!(code, StatusCode::OK, "{res}");
    assert_eq!(res["status"], "subscribed");
    // The certificate, its issuer (from the certificate's own link: the file holds the
    // leaf alone, as SNS serves it), then the confirmation link.
    let seen = w.sns.seen();
    assert_eq!(seen[0], "/cert.pem", "{seen:?}");
    assert_eq!(seen[1], "/int.der", "{seen:?}");
    assert!(
        seen[2].starts_with("/?Action=ConfirmSubscription&TopicArn="),
        "{seen:?}"
    );

    // A confirmation link anywhere but SNS is not visited, however well signed.
    let before = w.sns.seen().len();
    let (code, res) = w
        .post(&confirmation(
            "https://evil.example.com/?Action=ConfirmSubscription&Token=x",
            "sub-2",
        ))
        .await;
    assert_eq!(code, StatusCode::UNAUTHORIZED, "{res}");
    assert!(
        res["error"]["message"]
            .as_str()
            .unwrap()
            .contains("SubscribeURL"),
        "{res}"
    );
    // …nor one that confirms something other than this topic.
    let (code, _) = w
        .post(&confirmation(
            &format!("{}/?Action=Unsubscribe&TopicArn={TOPIC}", w.sns.base()),
            "sub-3",
        ))
        .await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    // The certificate is cached: nothing more was fetched.
    assert_eq!(w.sns.seen().len(), before, "{:?}", w.sns.seen());

    // An unsubscribe confirmation: acknowledged, nothing visited.
    let mut unsub = confirmation(&subscribe_url, "unsub-1");
    unsub["Type"] = json!("UnsubscribeConfirmation");
    let unsub = w.signed(unsub);
    let (code, res) = w.post(&unsub).await;
    assert_eq!(code, StatusCode::OK, "{res}");
    assert_eq!(w.sns.seen().len(), before);
    assert_eq!(w.receipts().await, 0);
}

#[tokio::test]
async fn ses_bounces_and_complaints_apply_once_per_sns_message() {
    let w = world().await;
    let app = &w.app;
    let jane = subscriber(app, "jane@example.com").await;
    let rich = subscriber(app, "rich@example.com").await;
    let (jane_first, _) = sent(app, jane, "c1:jane").await;
    let (jane_latest, _) = sent(app, jane, "c2:jane").await;
    sent(app, rich, "c1:rich").await;

    // The mail carried its reference as an SES message tag (`.` is not allowed there).
    let raw: Vec<u8> = sqlx::query_scalar("SELECT raw FROM captured_mail WHERE message_id = $1")
        .bind(jane_first)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let reference = feedback::message_ref(&app.state.keys, jane_first, Some(jane));
    let tag = reference.replacen('.', "-", 1);
    let raw = String::from_utf8_lossy(&raw);
    assert!(
        raw.contains(&format!("X-SES-MESSAGE-TAGS: loopline-message={tag}\r\n")),
        "{raw}"
    );

    // A permanent bounce for two recipients (signature version 1), naming Jane's first
    // mail by its tag: both bounce; Jane's event is on that mail, not the latest.
    let at = sns_time(w.now());
    let bounce = ses_bounce(
        "Permanent",
        &["jane@example.com", "rich@example.com"],
        Some(&tag),
        &at,
    );
    let note = w.notification("sns-bounce-1", &bounce, "1");
    let (code, res) = w.post(&note).await;
    assert_eq!(code, StatusCode::OK, "{res}");
    assert_eq!(res["result"]["recorded"], 2, "{res}");
    assert_eq!(status(app, jane).await, "bounced");
    assert_eq!(status(app, rich).await, "bounced");
    let bounced = events(app, jane, "bounced").await;
    assert_eq!(bounced.len(), 1);
    assert_eq!(bounced[0].0, Some(jane_first));
    assert_ne!(bounced[0].0, Some(jane_latest));
    assert_eq!(bounced[0].1["provider"], "ses");
    assert_eq!(bounced[0].1["hard"], true);
    assert_eq!(bounced[0].1["matched_by"], "metadata");
    assert!(
        bounced[0].1["reason"]
            .as_str()
            .unwrap()
            .contains("550 5.1.1"),
        "{}",
        bounced[0].1
    );
    // Rich's report carries Jane's tag: not trusted for Rich, matched by recipient.
    let rich_bounce = events(app, rich, "bounced").await;
    assert_eq!(rich_bounce[0].1["matched_by"], "recipient");

    // SNS retries the same message: acknowledged, nothing changes.
    let before = event_count(app).await;
    let (code, res) = w.post(&note).await;
    assert_eq!(code, StatusCode::OK, "{res}");
    assert_eq!(res["result"]["duplicates"], 2);
    assert_eq!(event_count(app).await, before);

    // A transient bounce (signature version 2): an event, nobody suppressed.
    let kim = subscriber(app, "kim@example.com").await;
    sent(app, kim, "c1:kim").await;
    let soft = ses_bounce("Transient", &["kim@example.com"], None, &at);
    let (code, res) = w.post(&w.notification("sns-soft-1", &soft, "2")).await;
    assert_eq!(code, StatusCode::OK, "{res}");
    assert_eq!(status(app, kim).await, "active");
    let kim_events = events(app, kim, "bounced").await;
    assert_eq!(kim_events.len(), 1);
    assert_eq!(kim_events[0].1["hard"], false);

    // A complaint (identity notification shape, version 2): complained, no more mail.
    let lee = subscriber(app, "lee@example.com").await;
    let (lee_mail, _) = sent(app, lee, "c1:lee").await;
    let (code, res) = w
        .post(&w.notification(
            "sns-complaint-1",
            &ses_complaint("lee@example.com", &at),
            "2",
        ))
        .await;
    assert_eq!(code, StatusCode::OK, "{res}");
    assert_eq!(status(app, lee).await, "complained");
    let complained = events(app, lee, "complained").await;
    assert_eq!(complained.len(), 1);
    assert_eq!(complained[0].0, Some(lee_mail));
    assert_eq!(complained[0].1["reason"], "abuse");

    // SES's own "subscription succeeded" notice, or an open: acknowledged, ignored.
    let notice = json!({ "notificationType": "AmazonSnsSubscriptionSucceeded", "message": "You have successfully subscribed your Amazon SNS topic" });
    let (code, res) = w.post(&w.notification("sns-notice-1", &notice, "2")).await;
    assert_eq!(code, StatusCode::OK, "{res}");
    assert_eq!(res["result"]["ignored"], 1);
    // The certificate and its issuer were fetched once for all of it.
    assert_eq!(w.sns.count("/cert.pem"), 1, "{:?}", w.sns.seen());
    assert_eq!(w.sns.count("/int.der"), 1, "{:?}", w.sns.seen());
}

#[tokio::test]
async fn ses_messages_that_do_not_verify_change_nothing() {
    let w = world().await;
    let app = &w.app;
    let jane = subscriber(app, "jane@example.com").await;
    sent(app, jane, "c1:jane").await;
    let at = sns_time(w.now());
    let bounce = ses_bounce("Permanent", &["jane@example.com"], None, &at);
    let genuine = w.notification("sns-1", &bounce, "2");
    let before = event_count(app).await;

    // The Message changed after signing.
    let mut tampered = genuine.clone();
    tampered["Message"] =
        json!(ses_bounce("Permanent", &["other@example.com"], None, &at).to_string());
    refused(&w, tampered, StatusCode::UNAUTHORIZED, "tampered message").await;
    // Signed with another key (the genuine certificate's URL).
    let forged = w.signed_with(genuine.clone(), "rogue.key");
    refused(&w, forged, StatusCode::UNAUTHORIZED, "wrong key").await;
    // A version 1 signature claimed as version 2.
    let mut v1 = w.notification("sns-2", &bounce, "1");
    v1["SignatureVersion"] = json!("2");
    refused(&w, v1, StatusCode::UNAUTHORIZED, "wrong version").await;
    // A certificate that does not chain to a trusted root, signed consistently.
    let mut rogue = genuine.clone();
    rogue["SigningCertURL"] = json!(format!("{}/rogue.pem", w.sns.base()));
    let rogue = w.signed_with(rogue, "rogue.key");
    let res = refused(&w, rogue, StatusCode::UNAUTHORIZED, "untrusted certificate").await;
    assert!(
        res["error"]["message"]
            .as_str()
            .unwrap()
            .contains("trusted root"),
        "{res}"
    );
    // Certificates from anywhere but SNS, or over http: not even fetched.
    let fetched = w.sns.seen().len();
    for url in [
        "https://evil.example.com/cert.pem".to_string(),
        format!("http://localhost:{}/cert.pem", w.sns.port),
        format!("{}/cert.txt", w.sns.base()),
        format!("https://127.0.0.1:{}/cert.pem", w.sns.port),
    ] {
        let mut m = genuine.clone();
        m["SigningCertURL"] = json!(url);
        let m = w.signed(m);
        let res = refused(&w, m, StatusCode::UNAUTHORIZED, "cert URL").await;
        assert!(
            res["error"]["message"]
                .as_str()
                .unwrap()
                .contains("SigningCertURL"),
            "{url}: {res}"
        );
    }
    // A topic we did not list: refused before anything is fetched.
    let mut foreign = genuine.clone();
    foreign["TopicArn"] = json!("arn:aws:sns:us-east-1:999999999999:someone-else");
    let foreign = w.signed(foreign);
    refused(&w, foreign, StatusCode::FORBIDDEN, "unknown topic").await;
    // Older than SNS ever retries.
    let mut stale = genuine.clone();
    stale["Timestamp"] = json!(sns_time(w.now() - chrono::Duration::minutes(70)));
    let stale = w.signed(stale);
    refused(&w, stale, StatusCode::UNAUTHORIZED, "stale").await;
    // Unsigned, not SNS, not JSON.
    let mut unsigned = genuine.clone();
    unsigned.as_object_mut().unwrap().remove("Signature");
    refused(&w, unsigned, StatusCode::BAD_REQUEST, "unsigned").await;
    refused(
        &w,
        json!({ "hello": "world" }),
        StatusCode::BAD_REQUEST,
        "not SNS",
    )
    .await;
    let res = w
        .app
        .client()
        .http
        .post(format!("{}/webhooks/ses", w.app.base))
        .body("{\"Type\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    // The genuine message under a header that names another kind of message.
    let (code, res) = w.post_as(&genuine, "SubscriptionConfirmation").await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert!(
        res["error"]["message"]
            .as_str()
            .unwrap()
            .contains("x-amz-sns-message-type"),
        "{res}"
    );

    assert_eq!(w.sns.seen().len(), fetched, "{:?}", w.sns.seen());
    assert_eq!(status(app, jane).await, "active");
    assert_eq!(event_count(app).await, before);
    assert_eq!(w.receipts().await, 0);

    // The genuine message still goes through afterwards.
    let (code, res) = w.post(&genuine).await;
    assert_eq!(code, StatusCode::OK, "{res}");
    assert_eq!(status(app, jane).await, "bounced");
}

/// A certificate file that carries its issuer needs no issuer fetch.
#[tokio::test]
async fn ses_certificate_files_with_their_chain_are_taken_as_they_are() {
    let w = world().await;
    let jane = subscriber(&w.app, "jane@example.com").await;
    let mut m = json!({
        "Type": "Notification",
        "MessageId": "sns-chain-1",
        "TopicArn": TOPIC,
        "Subject": "Amazon SES Email Event Notification",
        "Message": ses_complaint("jane@example.com", &sns_time(w.now())).to_string(),
        "Timestamp": sns_time(w.now()),
        "SignatureVersion": "1",
        "SigningCertURL": format!("{}/chain.pem", w.sns.base()),
    });
    m = w.signed(m);
    let (code, res) = w.post(&m).await;
    assert_eq!(code, StatusCode::OK, "{res}");
    assert_eq!(status(&w.app, jane).await, "complained");
    assert_eq!(w.sns.seen(), ["/chain.pem"]);
}

/// The production fetcher never reaches this machine, by name or by number, and says so.
#[tokio::test]
async fn the_fetcher_refuses_loopback_and_checks_what_it_fetches() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let pki = Pki::make(port);
    let sns = LocalSns::start(listener, &pki);

    let production = Fetcher::new();
    for url in [
        format!("https://localhost:{port}/cert.pem"),
        format!("https://127.0.0.1:{port}/cert.pem"),
        format!("https://[::ffff:127.0.0.1]:{port}/cert.pem"),
    ] {
        let e = production.get(&url).await.unwrap_err();
        assert!(
            matches!(
                e,
                FetchError::Refused {
                    class: Class::Loopback,
                    ..
                }
            ),
            "{url}: {e:?}"
        );
        let text = e.to_string();
        assert!(
            text.contains("loopback") && text.contains("refused"),
            "{text}"
        );
    }
    assert!(sns.seen().is_empty(), "nothing reached the server");

    // The test fetcher reaches it, with TLS verified against the test root…
    let fetcher = test_fetcher(&pki);
    let pem = fetcher
        .get(&format!("{}/cert.pem", sns.base()))
        .await
        .unwrap();
    assert_eq!(pem, pki.leaf_pem.as_bytes());
    // …but not under a name the server's certificate does not carry,
    let e = fetcher
        .get(&format!("https://127.0.0.1:{port}/cert.pem"))
        .await
        .unwrap_err();
    assert!(matches!(e, FetchError::Tls { .. }), "{e:?}");
    // nor with only Mozilla's roots.
    let untrusting = Fetcher::builder()
        .allow_loopback_for_tests()
        .build()
        .unwrap();
    let e = untrusting
        .get(&format!("{}/cert.pem", sns.base()))
        .await
        .unwrap_err();
    assert!(matches!(e, FetchError::Tls { .. }), "{e:?}");
    // Redirects are reported, not followed; bodies are capped.
    let e = fetcher
        .get(&format!("{}/redirect", sns.base()))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, FetchError::Redirect { status: 302, location: Some(l) } if l == "/cert.pem"),
        "{e:?}"
    );
    let e = fetcher
        .get_with(
            &format!("{}/big", sns.base()),
            Options {
                max_bytes: Some(64 * 1024),
                ..Options::default()
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(e, FetchError::TooLarge(_)), "{e:?}");
    let e = fetcher
        .get(&format!("{}/missing", sns.base()))
        .await
        .unwrap_err();
    assert!(matches!(e, FetchError::Status(404)), "{e:?}");
}
