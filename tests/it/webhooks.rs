//! Bounce and complaint webhooks end to end: each provider's documented payload, signed
//! as the provider signs it, through the real router into the database — subscriber
//! status, the event on the timeline, the outbox message it belongs to — and what a bad
//! signature, a replay, a retry or a malformed body do (nothing, once, once, 400).

use base64::{Engine, engine::general_purpose::STANDARD as B64};
use loopline::{
    accounts::Role,
    clock::Clock,
    config::SmtpConfig,
    delivery::{
        feedback::{self, BasicAuth, SendGridKey, WebhookKeys},
        render::{BodyFormat, Draft},
    },
    secrets::Secret,
    startup,
};
use reqwest::StatusCode;
use ring::{
    rand::SystemRandom,
    signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair},
};
use serde_json::{Value, json};

use crate::harness::{SmtpServer, TestApp};

const MAILGUN_KEY: &str = "mailgun-signing-key-for-tests";
const POSTMARK_USER: &str = "postmark";
const POSTMARK_PASSWORD: &str = "postmark-password-for-tests";
const GENERIC_SECRET: &str = "generic-webhook-secret-for-tests";

/// SendGrid's key pair: the private half signs as SendGrid would, the public half is
/// what the operator configures.
struct SendGridSigner {
    pair: EcdsaKeyPair,
    rng: SystemRandom,
}

impl SendGridSigner {
    fn new() -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        Self { pair, rng }
    }

    /// The verification key as SendGrid's Mail Settings show it (base64 DER).
    fn public_key(&self) -> String {
        SendGridKey::from_point(self.pair.public_key().as_ref()).to_base64()
    }

    fn sign(&self, timestamp: i64, body: &[u8]) -> String {
        let mut signed = timestamp.to_string().into_bytes();
        signed.extend_from_slice(body);
        B64.encode(self.pair.sign(&self.rng, &signed).unwrap().as_ref())
    }
}

async fn app(sendgrid: &SendGridSigner, smtp: Option<&SmtpServer>) -> TestApp {
    let key = SendGridKey::parse(&sendgrid.public_key()).unwrap();
    let smtp_url = smtp.map(SmtpServer::url);
    TestApp::spawn_with(
        move |c| {
            c.webhooks = WebhookKeys {
                mailgun: Some(Secret::new(MAILGUN_KEY.into())),
                sendgrid: Some(key),
                postmark: Some(BasicAuth {
                    user: POSTMARK_USER.into(),
                    password: Secret::new(POSTMARK_PASSWORD.into()),
                }),
                generic: Some(Secret::new(GENERIC_SECRET.into())),
                ses: None,
            };
            if let Some(url) = smtp_url {
                c.smtp = Some(SmtpConfig {
                    url: Secret::new(url),
                });
                c.mail.from_email = "news@example.com".into();
                c.mail.unsubscribe_mailto = Some("unsubscribe@example.com".into());
            }
        },
        startup::job_registry(),
    )
    .await
}

pub(crate) async fn subscriber(app: &TestApp, email: &str) -> i64 {
    sqlx::query_scalar(
        "INSERT INTO subscribers (email, status, created_at) VALUES ($1, 'active', now()) RETURNING id",
    )
    .bind(email)
    .fetch_one(&app.pool)
    .await
    .unwrap()
}

pub(crate) async fn status(app: &TestApp, id: i64) -> String {
    sqlx::query_scalar("SELECT status::text FROM subscribers WHERE id = $1")
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

/// Queues one marketing message, as a campaign would.
pub(crate) async fn queue(app: &TestApp, subscriber_id: i64, key: &str) -> i64 {
    let draft = Draft {
        subject: "This week".into(),
        preheader: String::new(),
        body: "Hello {{ subscriber.name or \"reader\" }}.".into(),
        format: BodyFormat::Markdown,
    };
    crate::harness::queue_message(app, subscriber_id, key, draft).await
}

/// Queues and sends (to the capture store) one message; its id and Message-ID header.
pub(crate) async fn sent(app: &TestApp, subscriber_id: i64, key: &str) -> (i64, String) {
    let id = queue(app, subscriber_id, key).await;
    assert_eq!(app.send_mail().await.sent, 1);
    let header: String = sqlx::query_scalar("SELECT message_id FROM messages WHERE id = $1")
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert!(header.starts_with('<') && header.ends_with('>'), "{header}");
    (id, header)
}

/// Events of `kind` for a subscriber: message id and data.
pub(crate) async fn events(
    app: &TestApp,
    subscriber_id: i64,
    kind: &str,
) -> Vec<(Option<i64>, Value)> {
    sqlx::query_as(
        "SELECT message_id, data FROM events WHERE subscriber_id = $1 AND kind = $2 ORDER BY id",
    )
    .bind(subscriber_id)
    .bind(kind)
    .fetch_all(&app.pool)
    .await
    .unwrap()
}

pub(crate) async fn event_count(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&app.pool)
        .await
        .unwrap()
}

async fn post(
    app: &TestApp,
    provider: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> (StatusCode, Value) {
    let mut req = app
        .client()
        .http
        .post(format!("{}/webhooks/{provider}", app.base))
        .header("content-type", "application/json")
        .body(body.to_vec());
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let res = req.send().await.unwrap();
    let status = res.status();
    let text = res.text().await.unwrap();
    let json = serde_json::from_str(&text)
        .unwrap_or_else(|_| panic!("{provider}: not JSON ({status}): {text}"));
    (status, json)
}

/// A Mailgun webhook body (its documented `failed` event), signed with `key`.
fn mailgun_body(key: &str, timestamp: i64, token: &str, event_data: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "signature": {
            "timestamp": timestamp.to_string(),
            "token": token,
            "signature": feedback::mailgun_signature(key.as_bytes(), timestamp, token),
        },
        "event-data": event_data,
    }))
    .unwrap()
}

fn mailgun_failed(email: &str, message_id: &str, now: i64) -> Value {
    json!({
        "event": "failed",
        "id": "G9Bn5sl1TC6nu79C8C0bwg",
        "timestamp": now as f64 + 0.6585283,
        "log-level": "error",
        "severity": "permanent",
        "reason": "bounce",
        "recipient": email,
        "recipient-domain": "example.com",
        "envelope": { "sender": "news@example.com", "targets": email, "transport": "smtp" },
        "delivery-status": {
            "attempt-no": 1,
            "code": 550,
            "message": "5.1.1 The email account that you tried to reach does not exist.",
            "description": "",
            "session-seconds": 0.4
        },
        "flags": { "is-authenticated": true, "is-test-mode": false },
        "message": {
            "headers": {
                "to": email,
                "message-id": message_id.trim_start_matches('<').trim_end_matches('>'),
                "from": "news@example.com",
                "subject": "This week"
            },
            "size": 111
        },
        "tags": [],
        "user-variables": {}
    })
}

#[tokio::test]
async fn mailgun_hard_bounce_marks_the_subscriber_bounced_on_its_message_once() {
    let sg = SendGridSigner::new();
    let app = app(&sg, None).await;
    let sid = subscriber(&app, "Gone@Example.com").await;
    let (mid, header) = sent(&app, sid, "c1:gone").await;
    let now = app.clock.now().timestamp();

    let event = mailgun_failed("gone@example.com", &header, now);
    let body = mailgun_body(
        MAILGUN_KEY,
        now,
        "token-0000000000000000000000000000000000000001",
        event.clone(),
    );
    let (code, res) = post(&app, "mailgun", &[], &body).await;
    assert_eq!(code, StatusCode::OK, "{res}");
    assert_eq!(res["result"]["recorded"], 1);

    assert_eq!(status(&app, sid).await, "bounced");
    let bounced = events(&app, sid, "bounced").await;
    assert_eq!(bounced.len(), 1, "{bounced:?}");
    let (linked, data) = &bounced[0];
    assert_eq!(*linked, Some(mid));
    assert_eq!(data["provider"], "mailgun");
    assert_eq!(data["hard"], true);
    assert_eq!(data["matched_by"], "message-id");
    assert!(data["reason"].as_str().unwrap().contains("550"), "{data}");
    let msg_status: String = sqlx::query_scalar("SELECT status::text FROM messages WHERE id = $1")
        .bind(mid)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(msg_status, "bounced");

    // The same request again (a replay): acknowledged, nothing new.
    let before = event_count(&app).await;
    let (code, res) = post(&app, "mailgun", &[], &body).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(res["status"], "already received");
    // Mailgun's retry of the same event, freshly signed: still one event.
    let retry = mailgun_body(
        MAILGUN_KEY,
        now + 60,
        "token-0000000000000000000000000000000000000002",
        event.clone(),
    );
    let (code, res) = post(&app, "mailgun", &[], &retry).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(res["result"]["duplicates"], 1);
    assert_eq!(event_count(&app).await, before);

    // A wrong key, or a signature older than five minutes: 401, nothing written.
    let other = subscriber(&app, "other@example.com").await;
    let forged = mailgun_body(
        "not-the-key",
        now,
        "token-0000000000000000000000000000000000000003",
        mailgun_failed("other@example.com", "<x@example.com>", now),
    );
    let (code, res) = post(&app, "mailgun", &[], &forged).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED, "{res}");
    let stale = mailgun_body(
        MAILGUN_KEY,
        now - 301,
        "token-0000000000000000000000000000000000000004",
        mailgun_failed("other@example.com", "<x@example.com>", now),
    );
    let (code, _) = post(&app, "mailgun", &[], &stale).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    assert_eq!(status(&app, other).await, "active");
    assert_eq!(event_count(&app).await, before);

    // Not JSON: 400 with the reason.
    let (code, res) = post(&app, "mailgun", &[], b"{\"signature\": ").await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert!(res["error"]["message"].as_str().unwrap().contains("JSON"));
}

#[tokio::test]
async fn sendgrid_batches_apply_in_one_go_and_need_sendgrids_signature() {
    let sg = SendGridSigner::new();
    let app = app(&sg, None).await;
    let complainer = subscriber(&app, "complainer@example.com").await;
    let bouncer = subscriber(&app, "bouncer@example.com").await;
    let blocked = subscriber(&app, "blocked@example.com").await;
    let (cmid, cheader) = sent(&app, complainer, "c1:complainer").await;
    let (bmid, bheader) = sent(&app, bouncer, "c1:bouncer").await;
    let now = app.clock.now().timestamp();

    // As in SendGrid's Event Webhook reference: an array of events.
    let batch = json!([
        { "email": "complainer@example.com", "timestamp": now, "smtp-id": cheader, "event": "processed",
          "category": "cat facts", "sg_event_id": "sg-processed-1", "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0" },
        { "email": "complainer@example.com", "timestamp": now, "smtp-id": cheader, "event": "spamreport",
          "category": "cat facts", "sg_event_id": "sg-spam-1", "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0" },
        { "email": "bouncer@example.com", "timestamp": now, "smtp-id": bheader, "event": "bounce",
          "category": "cat facts", "sg_event_id": "sg-bounce-1", "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.1",
          "reason": "500 unknown recipient", "status": "5.0.0", "type": "bounce", "bounce_classification": "Invalid Address" },
        { "email": "blocked@example.com", "timestamp": now, "event": "bounce", "sg_event_id": "sg-blocked-1",
          "reason": "550 5.7.1 blocked by reputation", "status": "5.7.1", "type": "blocked" },
        { "email": "stranger@example.com", "timestamp": now, "event": "spamreport", "sg_event_id": "sg-spam-2" }
    ]);
    let body = serde_json::to_vec(&batch).unwrap();
    let signed = |ts: i64, body: &[u8], signer: &SendGridSigner| {
        vec![
            (
                "X-Twilio-Email-Event-Webhook-Signature",
                signer.sign(ts, body),
            ),
            ("X-Twilio-Email-Event-Webhook-Timestamp", ts.to_string()),
        ]
    };

    // Signed with another key: 401 and nothing written.
    let impostor = SendGridSigner::new();
    let (code, _) = post(&app, "sendgrid", &signed(now, &body, &impostor), &body).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    let (code, _) = post(&app, "sendgrid", &[], &body).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    assert_eq!(status(&app, complainer).await, "active");
    assert!(events(&app, complainer, "complained").await.is_empty());

    let (code, res) = post(&app, "sendgrid", &signed(now, &body, &sg), &body).await;
    assert_eq!(code, StatusCode::OK, "{res}");
    assert_eq!(res["result"]["recorded"], 3);
    assert_eq!(res["result"]["unknown"], 1);
    assert_eq!(res["result"]["ignored"], 1);

    assert_eq!(status(&app, complainer).await, "complained");
    let complained = events(&app, complainer, "complained").await;
    assert_eq!(complained.len(), 1);
    assert_eq!(complained[0].0, Some(cmid));
    assert_eq!(complained[0].1["provider"], "sendgrid");
    assert_eq!(
        complained[0].1["provider_message_id"],
        "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0"
    );

    assert_eq!(status(&app, bouncer).await, "bounced");
    let bounced = events(&app, bouncer, "bounced").await;
    assert_eq!(bounced.len(), 1);
    assert_eq!(bounced[0].0, Some(bmid));
    assert_eq!(bounced[0].1["hard"], true);

    // A soft bounce is an event only; the subscriber stays.
    assert_eq!(status(&app, blocked).await, "active");
    let soft = events(&app, blocked, "bounced").await;
    assert_eq!(soft.len(), 1);
    assert_eq!(soft[0].1["hard"], false);

    // SendGrid retries the whole batch later: nothing doubles.
    let before = event_count(&app).await;
    let (code, res) = post(&app, "sendgrid", &signed(now + 90, &body, &sg), &body).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(res["result"]["duplicates"], 4);
    assert_eq!(event_count(&app).await, before);

    // Correctly signed but not JSON, or not an array: 400.
    let junk = b"[{\"event\": \"bounce\"";
    let (code, res) = post(&app, "sendgrid", &signed(now, junk, &sg), junk).await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert!(
        res["error"]["message"].as_str().unwrap().contains("JSON"),
        "{res}"
    );
    let object = b"{\"event\": \"bounce\"}";
    let (code, _) = post(&app, "sendgrid", &signed(now, object, &sg), object).await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn postmark_spam_complaint_needs_its_credentials_and_is_matched_by_recipient() {
    let sg = SendGridSigner::new();
    let app = app(&sg, None).await;
    let sid = subscriber(&app, "john@example.com").await;
    let (mid, _) = sent(&app, sid, "c1:john").await;
    let now = app.clock.now();

    // Postmark's spam complaint webhook (its MessageID is Postmark's own).
    let body = serde_json::to_vec(&json!({
        "RecordType": "SpamComplaint",
        "MessageStream": "outbound",
        "ID": 42,
        "Type": "SpamComplaint",
        "TypeCode": 512,
        "Name": "Spam complaint",
        "Tag": "Test",
        "MessageID": "00000000-0000-0000-0000-000000000000",
        "Metadata": { "a_key": "a_value" },
        "ServerID": 1234,
        "Description": "The subscriber explicitly marked this message as spam.",
        "Details": "Test spam complaint details",
        "Email": "john@example.com",
        "From": "news@example.com",
        "BouncedAt": now.to_rfc3339(),
        "DumpAvailable": true,
        "Inactive": true,
        "CanActivate": false,
        "Subject": "This week",
        "Content": "<Abuse report dump content>"
    }))
    .unwrap();
    let basic = |user: &str, password: &str| {
        vec![(
            "Authorization",
            format!("Basic {}", B64.encode(format!("{user}:{password}"))),
        )]
    };

    for wrong in [
        basic(POSTMARK_USER, "guess"),
        basic("admin", POSTMARK_PASSWORD),
        vec![],
    ] {
        let res = app
            .client()
            .http
            .post(format!("{}/webhooks/postmark", app.base))
            .headers(
                wrong
                    .iter()
                    .map(|(k, v)| (k.parse().unwrap(), v.parse().unwrap()))
                    .collect(),
            )
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
        assert!(res.headers().contains_key("www-authenticate"));
    }
    assert_eq!(status(&app, sid).await, "active");

    let good = basic(POSTMARK_USER, POSTMARK_PASSWORD);
    let (code, res) = post(&app, "postmark", &good, &body).await;
    assert_eq!(code, StatusCode::OK, "{res}");
    assert_eq!(status(&app, sid).await, "complained");
    let complained = events(&app, sid, "complained").await;
    assert_eq!(complained.len(), 1);
    assert_eq!(complained[0].0, Some(mid));
    assert_eq!(complained[0].1["matched_by"], "recipient");
    assert_eq!(complained[0].1["provider"], "postmark");

    // Postmark retries until it gets a 2xx: the retry is acknowledged, not doubled.
    let (code, res) = post(&app, "postmark", &good, &body).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(res["result"]["duplicates"], 1);
    assert_eq!(events(&app, sid, "complained").await.len(), 1);

    let (code, _) = post(&app, "postmark", &good, b"not json").await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn generic_webhook_verifies_the_documented_signature() {
    let sg = SendGridSigner::new();
    let app = app(&sg, None).await;
    let sid = subscriber(&app, "reader@example.com").await;
    let (mid, header) = sent(&app, sid, "c1:reader").await;
    let now = app.clock.now().timestamp();
    let sign = |ts: i64, body: &[u8]| {
        vec![(
            "Loopline-Signature",
            feedback::generic_signature(GENERIC_SECRET.as_bytes(), ts, body),
        )]
    };

    let body = serde_json::to_vec(&json!([
        { "id": "evt-1", "type": "hard_bounce", "email": "reader@example.com", "message_id": header,
          "reason": "550 5.1.1 user unknown" },
        { "id": "evt-2", "type": "complaint", "email": "nobody@example.com" }
    ]))
    .unwrap();
    let (code, _) = post(&app, "generic", &sign(now, b"something else"), &body).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    let (code, _) = post(&app, "generic", &sign(now - 600, &body), &body).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    assert_eq!(event_count(&app).await, 1, "only the send so far");

    let (code, res) = post(&app, "generic", &sign(now, &body), &body).await;
    assert_eq!(code, StatusCode::OK, "{res}");
    // An address that is not a subscriber is acknowledged: nothing to do.
    assert_eq!(res["result"]["recorded"], 1);
    assert_eq!(res["result"]["unknown"], 1);
    assert_eq!(status(&app, sid).await, "bounced");
    let bounced = events(&app, sid, "bounced").await;
    assert_eq!(bounced[0].0, Some(mid));
    assert_eq!(bounced[0].1["reason"], "550 5.1.1 user unknown");

    let bad = br#"{"id": "evt-3", "type": "opened", "email": "reader@example.com"}"#;
    let (code, res) = post(&app, "generic", &sign(now, bad), bad).await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert!(
        res["error"]["message"].as_str().unwrap().contains("type"),
        "{res}"
    );
}

#[tokio::test]
async fn webhooks_without_configuration_do_not_exist() {
    let app = TestApp::spawn().await;
    for provider in ["mailgun", "sendgrid", "postmark", "generic", "ses"] {
        let (code, _) = post(&app, provider, &[], b"[]").await;
        assert_eq!(code, StatusCode::NOT_FOUND, "{provider}");
    }
}

#[tokio::test]
async fn after_a_complaint_marketing_mail_is_suppressed_and_the_profile_shows_it() {
    let smtp = SmtpServer::start();
    let sg = SendGridSigner::new();
    let app = app(&sg, Some(&smtp)).await;
    let complainer = subscriber(&app, "complainer@example.com").await;
    let reader = subscriber(&app, "reader@example.com").await;
    let now = app.clock.now().timestamp();

    let body = serde_json::to_vec(&json!({
        "id": "complaint-1", "type": "complaint", "email": "complainer@example.com",
        "reason": "abuse report via feedback loop"
    }))
    .unwrap();
    let sig = feedback::generic_signature(GENERIC_SECRET.as_bytes(), now, &body);
    let (code, res) = post(&app, "generic", &[("Loopline-Signature", sig)], &body).await;
    assert_eq!(code, StatusCode::OK, "{res}");
    assert_eq!(status(&app, complainer).await, "complained");

    // A campaign to both: only the reader gets it.
    queue(&app, complainer, "c2:complainer").await;
    queue(&app, reader, "c2:reader").await;
    let round = app.send_mail().await;
    assert_eq!((round.sent, round.suppressed), (1, 1), "{round:?}");
    let received = smtp.wait_for(1).await;
    assert_eq!(received.len(), 1);
    let raw = String::from_utf8_lossy(&received[0]);
    assert!(raw.contains("reader@example.com"));
    assert!(!raw.contains("complainer@example.com"));

    // The marketer sees why on the subscriber's timeline.
    let (client, _) = app.signed_in(Role::Viewer).await;
    let page = client
        .page(&format!("/audience/subscribers/{complainer}"))
        .await;
    assert_eq!(page.status, StatusCode::OK);
    let items = page.select("#timeline li[data-kind=complained]");
    assert_eq!(items.len(), 1, "{items:?}");
    assert!(items[0].contains("generic"), "{}", items[0]);
    assert!(items[0].contains("abuse report"), "{}", items[0]);
}

/// A shop reports a purchase through the generic webhook: it is credited to the mail
/// whose link the buyer last clicked as a person — not to a later mail they only
/// received, nor to one a link scanner "clicked" — recorded once however often the shop
/// retries, with its value on the timeline.
#[tokio::test]
async fn a_conversion_is_attributed_to_the_last_human_click() {
    use loopline::tracking::tokens::{Click, click_token};
    let sg = SendGridSigner::new();
    let app = app(&sg, None).await;
    let sid = subscriber(&app, "buyer@example.kr").await;
    let (clicked, _) = sent(&app, sid, "conv:1").await;
    let (scanned, _) = sent(&app, sid, "conv:2").await;
    let (_received_only, _) = sent(&app, sid, "conv:3").await;
    app.advance(chrono::Duration::minutes(20));

    let link = |message_id: i64| {
        click_token(
            &app.state.keys,
            &Click {
                message_id,
                subscriber_id: Some(sid),
                position: 1,
                label: Some("purchase".into()),
                url: "https://shop.example.kr/item/7".into(),
            },
        )
    };
    let http = app.client().http;
    let res = http
        .get(format!("{}/c/{}", app.base, link(clicked)))
        .header("user-agent", "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FOUND);
    app.advance(chrono::Duration::minutes(5));
    // A security scanner follows the later mail's link (HEAD, scanner agent).
    let res = http
        .head(format!("{}/c/{}", app.base, link(scanned)))
        .header("user-agent", "Barracuda Sentinel (EE)")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FOUND);
    app.advance(chrono::Duration::hours(2));

    let now = app.clock.now().timestamp();
    let sign = |body: &[u8]| {
        vec![(
            "Loopline-Signature",
            feedback::generic_signature(GENERIC_SECRET.as_bytes(), now, body),
        )]
    };
    let body = serde_json::to_vec(&json!({
        "id": "order-1001", "type": "conversion", "email": "Buyer@Example.kr",
        "value": 39000, "currency": "krw", "name": "봄 시즌 패키지"
    }))
    .unwrap();
    for _ in 0..2 {
        let (code, res) = post(&app, "generic", &sign(&body), &body).await;
        assert_eq!(code, StatusCode::OK, "{res}");
    }
    let converted = events(&app, sid, "converted").await;
    assert_eq!(converted.len(), 1, "a retried order counts once");
    assert_eq!(converted[0].0, Some(clicked), "credited to the human click");
    assert_eq!(converted[0].1["value"], 39000);
    assert_eq!(converted[0].1["currency"], "KRW");
    assert_eq!(converted[0].1["name"], "봄 시즌 패키지");
    assert_eq!(converted[0].1["matched_by"], "last-human-click");

    // Bad values are refused whole, with the reason.
    let bad = serde_json::to_vec(&json!({
        "id": "order-1002", "type": "conversion", "email": "buyer@example.kr", "value": "a lot"
    }))
    .unwrap();
    let (code, res) = post(&app, "generic", &sign(&bad), &bad).await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert!(
        res["error"]["message"].as_str().unwrap().contains("value"),
        "{res}"
    );
    assert_eq!(events(&app, sid, "converted").await.len(), 1);

    // Past the attribution window a conversion is still recorded, credited to no mail.
    app.advance(chrono::Duration::days(31));
    let now = app.clock.now().timestamp();
    let late = serde_json::to_vec(&json!({
        "id": "order-1003", "type": "conversion", "email": "buyer@example.kr"
    }))
    .unwrap();
    let sig = vec![(
        "Loopline-Signature",
        feedback::generic_signature(GENERIC_SECRET.as_bytes(), now, &late),
    )];
    let (code, _) = post(&app, "generic", &sig, &late).await;
    assert_eq!(code, StatusCode::OK);
    let converted = events(&app, sid, "converted").await;
    assert_eq!((converted.len(), converted[1].0), (2, None));
}

/// Postmark sends under its own Message-ID, so its reports carry ours as the custom
/// metadata it read from `X-PM-Metadata-loopline-message`. That reference finds the
/// exact message — not the latest one to the address, as recipient matching would —
/// and only for the address it was sent to: a reference copied into another address's
/// report, or altered, is not trusted.
#[tokio::test]
async fn postmark_reports_find_their_message_by_the_metadata_the_mail_carried() {
    use mailparse::MailHeaderMap;
    let smtp = SmtpServer::start();
    let sg = SendGridSigner::new();
    let app = app(&sg, Some(&smtp)).await;
    let kim = subscriber(&app, "kim@example.com").await;
    let lee = subscriber(&app, "lee@example.com").await;
    let first = queue(&app, kim, "c1:kim").await;
    assert_eq!(app.send_mail().await.sent, 1);
    app.advance(chrono::Duration::hours(1));
    let second = queue(&app, kim, "c2:kim").await;
    let lees = queue(&app, lee, "c2:lee").await;
    assert_eq!(app.send_mail().await.sent, 2);

    // Every received mail carries its reference the way each configured provider reads
    // it; the reference is also its Message-ID's local part.
    let received = smtp.wait_for(3).await;
    assert_eq!(received.len(), 3);
    let mut references = std::collections::HashMap::new();
    for raw in &received {
        let mail = mailparse::parse_mail(raw).unwrap();
        let h = &mail.headers;
        let reference = h
            .get_first_value("X-PM-Metadata-loopline-message")
            .expect("the Postmark metadata header");
        let message_id = h.get_first_value("Message-ID").unwrap();
        assert_eq!(message_id, format!("<{reference}@example.com>"));
        let mailgun: Value =
            serde_json::from_str(&h.get_first_value("X-Mailgun-Variables").unwrap()).unwrap();
        assert_eq!(mailgun["loopline-message"], reference.as_str());
        let sendgrid: Value =
            serde_json::from_str(&h.get_first_value("X-SMTPAPI").unwrap()).unwrap();
        assert_eq!(
            sendgrid["unique_args"]["loopline-message"],
            reference.as_str()
        );
        let id: i64 = reference.split('.').next().unwrap().parse().unwrap();
        let stored: String = sqlx::query_scalar("SELECT message_id FROM messages WHERE id = $1")
            .bind(id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
        assert_eq!(stored, message_id);
        references.insert(id, reference);
    }
    let first_ref = references[&first].clone();

    let basic = vec![(
        "Authorization",
        format!(
            "Basic {}",
            B64.encode(format!("{POSTMARK_USER}:{POSTMARK_PASSWORD}"))
        ),
    )];
    let now = app.clock.now();
    // Postmark's bounce webhook: its MessageID is one we never saw; only the metadata
    // names our message.
    let bounce = |id: i64, kind: &str, email: &str, reference: &str| {
        serde_json::to_vec(&json!({
            "RecordType": "Bounce", "MessageStream": "outbound", "ID": id, "Type": kind,
            "TypeCode": 1, "Name": "Hard bounce", "Tag": "",
            "MessageID": format!("b7bc2f4a-e38e-4336-af7d-e6c39{id:07}"),
            "Metadata": { "loopline-message": reference },
            "ServerID": 23, "Description": "The server was unable to deliver your message (ex: unknown user, mailbox not found).",
            "Details": "smtp;550 5.1.1 The email account that you tried to reach does not exist.",
            "Email": email, "From": "news@example.com", "BouncedAt": now.to_rfc3339(),
            "DumpAvailable": false, "Inactive": true, "CanActivate": true, "Subject": "This week"
        }))
        .unwrap()
    };
    let (code, res) = post(
        &app,
        "postmark",
        &basic,
        &bounce(4001, "HardBounce", "kim@example.com", &first_ref),
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{res}");
    assert_eq!(res["result"]["recorded"], 1);
    assert_eq!(status(&app, kim).await, "bounced");
    let bounced = events(&app, kim, "bounced").await;
    assert_eq!(bounced.len(), 1);
    assert_eq!(bounced[0].0, Some(first), "the message the metadata names");
    assert_eq!(bounced[0].1["matched_by"], "metadata");
    assert_eq!(bounced[0].1["hard"], true);
    let message_status = |id: i64| {
        let pool = app.pool.clone();
        async move {
            sqlx::query_scalar::<_, String>("SELECT status::text FROM messages WHERE id = $1")
                .bind(id)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    assert_eq!(message_status(first).await, "bounced");
    assert_eq!(message_status(second).await, "sent");

    // Kim's reference in a report about Lee (valid credentials, real reference): not
    // trusted for Lee; matched the ordinary way, to Lee's own mail.
    let (code, _) = post(
        &app,
        "postmark",
        &basic,
        &bounce(4002, "Transient", "lee@example.com", &first_ref),
    )
    .await;
    assert_eq!(code, StatusCode::OK);
    let soft = events(&app, lee, "bounced").await;
    assert_eq!(soft.len(), 1);
    assert_eq!(soft[0].0, Some(lees));
    assert_eq!(soft[0].1["matched_by"], "recipient");
    // An altered reference (another id under the first one's tag): not trusted either.
    let tag = first_ref.split_once('.').unwrap().1;
    let (code, _) = post(
        &app,
        "postmark",
        &basic,
        &bounce(
            4003,
            "Transient",
            "kim@example.com",
            &format!("{second}.{tag}"),
        ),
    )
    .await;
    assert_eq!(code, StatusCode::OK);
    let bounced = events(&app, kim, "bounced").await;
    assert_eq!(bounced.len(), 2);
    assert_eq!(bounced[1].1["matched_by"], "recipient");
    assert_eq!(message_status(first).await, "bounced");
    assert_eq!(message_status(second).await, "sent");

    // On Kim's timeline, with the provider and its reason.
    let (client, _) = app.signed_in(Role::Viewer).await;
    let page = client.page(&format!("/audience/subscribers/{kim}")).await;
    assert_eq!(page.status, StatusCode::OK);
    let items = page.select("#timeline li[data-kind=bounced]");
    assert_eq!(items.len(), 2, "{items:?}");
    assert!(
        items
            .iter()
            .any(|i| i.contains("postmark") && i.contains("550 5.1.1")),
        "{items:?}"
    );
}

/// Mailgun and SendGrid echo the reference too (`user-variables`, unique args as event
/// fields), which wins over a Message-ID they echo.
#[tokio::test]
async fn mailgun_and_sendgrid_reports_find_their_message_by_the_echoed_reference() {
    let sg = SendGridSigner::new();
    let app = app(&sg, None).await;
    let park = subscriber(&app, "park@example.com").await;
    let choi = subscriber(&app, "choi@example.com").await;
    let (park_first, _) = sent(&app, park, "c1:park").await;
    let (_, park_latest_header) = sent(&app, park, "c2:park").await;
    let (choi_first, _) = sent(&app, choi, "c1:choi").await;
    sent(&app, choi, "c2:choi").await;
    let reference = |id: i64, sid: i64| feedback::message_ref(&app.state.keys, id, Some(sid));
    let now = app.clock.now().timestamp();

    let mut event = mailgun_failed("park@example.com", &park_latest_header, now);
    event["user-variables"] = json!({ "loopline-message": reference(park_first, park) });
    let body = mailgun_body(
        MAILGUN_KEY,
        now,
        "token-0000000000000000000000000000000000000101",
        event,
    );
    let (code, res) = post(&app, "mailgun", &[], &body).await;
    assert_eq!(code, StatusCode::OK, "{res}");
    let bounced = events(&app, park, "bounced").await;
    assert_eq!(bounced[0].0, Some(park_first));
    assert_eq!(bounced[0].1["matched_by"], "metadata");

    let batch = serde_json::to_vec(&json!([
        { "email": "choi@example.com", "timestamp": now, "event": "spamreport", "sg_event_id": "sg-ref-1",
          "sg_message_id": "sg-never-seen.filter0001", "loopline-message": reference(choi_first, choi) }
    ]))
    .unwrap();
    let headers = vec![
        (
            "X-Twilio-Email-Event-Webhook-Signature",
            sg.sign(now, &batch),
        ),
        ("X-Twilio-Email-Event-Webhook-Timestamp", now.to_string()),
    ];
    let (code, res) = post(&app, "sendgrid", &headers, &batch).await;
    assert_eq!(code, StatusCode::OK, "{res}");
    let complained = events(&app, choi, "complained").await;
    assert_eq!(complained[0].0, Some(choi_first));
    assert_eq!(complained[0].1["matched_by"], "metadata");
}

/// The `mailto:` of `List-Unsubscribe`, end to end: the mail that arrives over SMTP
/// offers `UNSUBSCRIBE_MAILTO` with a subject; the request a mail app sends there comes
/// back through Postmark's inbound webhook (or the generic `inbound_mail` event) and
/// unsubscribes the subscriber its token names. A forged token, a reply and a retry
/// change nothing.
#[tokio::test]
async fn an_unsubscribe_sent_by_mail_comes_back_through_the_inbound_webhook() {
    use mailparse::MailHeaderMap;
    let sg = SendGridSigner::new();
    let smtp = SmtpServer::start();
    let app = app(&sg, Some(&smtp)).await;
    let sid = subscriber(&app, "john@example.com").await;
    let other = subscriber(&app, "jane@example.com").await;
    queue(&app, sid, "mailto:john").await;
    queue(&app, other, "mailto:jane").await;
    assert_eq!(app.send_mail().await.sent, 2);
    let received = smtp.wait_for(2).await;
    // Each mail's mailto: address and subject, as a mail app reads them.
    let mailto = |raw: &[u8]| {
        let mail = mailparse::parse_mail(raw).unwrap();
        let to = mail.headers.get_first_value("To").unwrap();
        let header = mail.headers.get_first_value("List-Unsubscribe").unwrap();
        let uri = header
            .split(',')
            .map(|p| p.trim().trim_start_matches('<').trim_end_matches('>'))
            .find(|p| p.starts_with("mailto:"))
            .unwrap()
            .to_string();
        let (address, query) = uri["mailto:".len()..].split_once('?').unwrap();
        let subject = query.strip_prefix("subject=").unwrap().replace("%20", " ");
        (to, address.to_string(), subject)
    };
    let (mut john, mut jane) = (None, None);
    for raw in &received {
        let (to, address, subject) = mailto(raw);
        assert_eq!(address, "unsubscribe@example.com");
        assert!(subject.starts_with("unsubscribe "), "{subject}");
        if to.contains("john@") {
            john = Some(subject);
        } else {
            jane = Some(subject);
        }
    }
    let (john, jane) = (john.unwrap(), jane.unwrap());

    // Postmark's inbound webhook, as it posts a received message.
    let inbound = |message_id: &str, from: &str, subject: &str| {
        serde_json::to_vec(&json!({
            "FromName": "John",
            "MessageStream": "inbound",
            "From": from,
            "FromFull": { "Email": from, "Name": "John", "MailboxHash": "" },
            "To": "unsubscribe@example.com",
            "ToFull": [{ "Email": "unsubscribe@example.com", "Name": "", "MailboxHash": "" }],
            "Cc": "", "CcFull": [], "Bcc": "", "BccFull": [],
            "OriginalRecipient": "unsubscribe@example.com",
            "Subject": subject,
            "MessageID": message_id,
            "ReplyTo": "",
            "MailboxHash": "",
            "Date": "Thu, 26 Nov 2026 10:00:00 +0900",
            "TextBody": "",
            "HtmlBody": "",
            "StrippedTextReply": "",
            "Tag": "",
            "Headers": [],
            "Attachments": []
        }))
        .unwrap()
    };
    let basic = vec![(
        "Authorization",
        format!(
            "Basic {}",
            B64.encode(format!("{POSTMARK_USER}:{POSTMARK_PASSWORD}"))
        ),
    )];

    // A forged token (Jane's id with John's signature), even from Jane's address:
    // nothing changes. The token names the subscriber, not the sender.
    let (_, sig) = john["unsubscribe ".len()..].split_once('.').unwrap();
    let forged = format!("unsubscribe {other}.{sig}");
    let (code, res) = post(
        &app,
        "postmark",
        &basic,
        &inbound("c2b4e3c1-forged", "jane@example.com", &forged),
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{res}");
    assert_eq!(res["result"]["unknown"], 1);
    // A reply to the newsletter is not an unsubscribe request.
    let (code, res) = post(
        &app,
        "postmark",
        &basic,
        &inbound("c2b4e3c1-reply", "john@example.com", "Re: This week"),
    )
    .await;
    assert_eq!(code, StatusCode::OK, "{res}");
    assert_eq!(res["result"]["ignored"], 1);
    assert_eq!(status(&app, sid).await, "active");
    assert_eq!(status(&app, other).await, "active");

    // John's mail app sends the request, with the subject as offered.
    let body = inbound("c2b4e3c1-john", "john@example.com", &john);
    let (code, res) = post(&app, "postmark", &basic, &body).await;
    assert_eq!(code, StatusCode::OK, "{res}");
    assert_eq!(res["result"]["recorded"], 1);
    assert_eq!(status(&app, sid).await, "unsubscribed");
    let left = events(&app, sid, "unsubscribed").await;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].1["via"], "mailto");
    assert_eq!(left[0].1["provider"], "postmark");
    // Postmark retries until it gets a 2xx: once.
    let (_, res) = post(&app, "postmark", &basic, &body).await;
    assert_eq!(res["result"]["duplicates"], 1);
    assert_eq!(events(&app, sid, "unsubscribed").await.len(), 1);

    // The same through the generic signed webhook, from whatever receives that address.
    let event = serde_json::to_vec(&json!({
        "id": "<CAF=jane-1@mail.example.com>",
        "type": "inbound_mail",
        "email": "jane@example.com",
        "subject": format!("Re: UNSUBSCRIBE {}", &jane["unsubscribe ".len()..]),
    }))
    .unwrap();
    let now = app.clock.now().timestamp();
    let signed = vec![(
        "Loopline-Signature",
        feedback::generic_signature(GENERIC_SECRET.as_bytes(), now, &event),
    )];
    let (code, res) = post(&app, "generic", &signed, &event).await;
    assert_eq!(code, StatusCode::OK, "{res}");
    assert_eq!(res["result"]["recorded"], 1);
    assert_eq!(status(&app, other).await, "unsubscribed");
    assert_eq!(
        events(&app, other, "unsubscribed").await[0].1["via"],
        "mailto"
    );

    // A Mailgun route's forward (a form, signed like its webhooks) for a third reader.
    let third = subscriber(&app, "kim@example.com").await;
    queue(&app, third, "mailto:kim").await;
    assert_eq!(app.send_mail().await.sent, 1);
    let got = smtp.wait_for(3).await;
    let (_, _, kim) = got
        .iter()
        .map(|raw| mailto(raw))
        .find(|(to, _, _)| to.contains("kim@"))
        .unwrap();
    let form = |token: &str, signature: &str, subject: &str| {
        url::form_urlencoded::Serializer::new(String::new())
            .append_pair("recipient", "unsubscribe@example.com")
            .append_pair("sender", "kim@example.com")
            .append_pair("from", "김 <kim@example.com>")
            .append_pair("subject", subject)
            .append_pair("body-plain", "")
            .append_pair("Message-Id", "<CAF=kim-1@mail.example.com>")
            .append_pair("timestamp", &now.to_string())
            .append_pair("token", token)
            .append_pair("signature", signature)
            .finish()
    };
    let mailgun = |body: String| {
        let http = app.client().http;
        let url = format!("{}/webhooks/mailgun", app.base);
        async move {
            http.post(url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body)
                .send()
                .await
                .unwrap()
        }
    };
    let token = "a".repeat(50);
    let res = mailgun(form(&token, &"0".repeat(64), &kim)).await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let signature = feedback::mailgun_signature(MAILGUN_KEY.as_bytes(), now, &token);
    let res = mailgun(form(&token, &signature, &kim)).await;
    assert_eq!(
        res.status(),
        StatusCode::OK,
        "{}",
        res.text().await.unwrap()
    );
    assert_eq!(status(&app, third).await, "unsubscribed");
    // The same request again (same one-time token): refused as a replay.
    let res = mailgun(form(&token, &signature, &kim)).await;
    let res: Value = res.json().await.unwrap();
    assert_eq!(res["status"], "already received");
    assert_eq!(events(&app, third, "unsubscribed").await.len(), 1);
    // With attachments Mailgun posts multipart: never an unsubscribe, not retried.
    let res = app
        .client()
        .http
        .post(format!("{}/webhooks/mailgun", app.base))
        .header("content-type", "multipart/form-data; boundary=x")
        .body("--x--")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_ACCEPTABLE);
}
