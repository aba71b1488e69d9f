//! Feedback from mail providers: bounces, complaints, deliveries and unsubscribes
//! reported by webhook, after the mail left through the provider's SMTP relay.
//!
//! Three steps, each its own function so the first two are pure and tested without a
//! database: [`verify`] (the provider's signature or credentials), [`parse`] (its event
//! format, mapped to [`Kind`]) and [`apply`] (one transaction per request: receipts for
//! idempotency, subscriber status, events on the timeline linked to our outbox message).
//!
//! | provider | authenticity | replay |
//! | --- | --- | --- |
//! | Mailgun | HMAC-SHA256(signing key, timestamp + token) in the body | timestamp within 5 min; each token once |
//! | SendGrid | ECDSA P-256 over timestamp + raw body (`X-Twilio-Email-Event-Webhook-*`) | timestamp within 5 min |
//! | Postmark | HTTP basic auth (Postmark signs nothing) | event ids |
//! | generic | `Loopline-Signature: t=…,v1=hex(HMAC-SHA256(secret, "t.body"))` | timestamp within 5 min |
//! | Amazon SES (via SNS, `/webhooks/ses`) | SNS's RSA signature (v1 SHA-1, v2 SHA-256), its certificate fetched from an SNS host and chained to a root ([`sns`]); topic in `SES_SNS_TOPIC_ARNS` | timestamp within 65 min (SNS retries for up to an hour); each SNS `MessageId` once |
//!
//! Every provider event is applied at most once: its id (or, where a provider has none,
//! a hash of the event) is a row in `feedback_receipts`, written in the same
//! transaction as its effects, so a provider's retry changes nothing.
//!
//! An event is tied to our outbox message by, in order: the message reference the
//! provider echoes from its custom-data header ([`echo_headers`]: Postmark metadata,
//! Mailgun variables, SendGrid unique args, SES message tags; needed where the provider replaces our
//! `Message-ID`, as Postmark does), the `Message-ID` it echoes, or else the latest mail
//! sent to the address. The reference ([`message_ref`]) is the outbox id with an HMAC
//! over it and the recipient's subscriber id, so a webhook — even one with valid
//! credentials — can only name a message really sent to the address it reports on.

use std::fmt;

use base64::{
    Engine,
    engine::general_purpose::{STANDARD as B64, URL_SAFE_NO_PAD as URL_B64},
};
use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool};

use crate::{audience::subscribers, secrets::Secret, signing::SigningKey};

pub mod ses;
pub mod sns;

/// How far a signed timestamp may be from our clock.
pub const MAX_SKEW_SECS: i64 = 300;
/// Receipts are kept this long: longer than any provider retries.
const RECEIPT_DAYS: i64 = 30;
/// How long after a send a recipient-matched report is still attributed to it.
const MATCH_DAYS: i64 = 30;
const MAX_REASON_CHARS: usize = 500;
/// The key under which mail carries its [`message_ref`] to providers that echo custom
/// data in their webhooks.
pub const ECHO_KEY: &str = "loopline-message";
/// Postmark's custom-metadata header for [`ECHO_KEY`] (`X-PM-Metadata-{key}`).
const POSTMARK_ECHO_HEADER: &str = "X-PM-Metadata-loopline-message";
const MESSAGE_REF: &str = "delivery/message-ref";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    Mailgun,
    SendGrid,
    Postmark,
    Generic,
    /// Amazon SES, through SNS: its own route and verification (see [`sns`], [`ses`]).
    Ses,
}

impl Provider {
    pub const ALL: [Provider; 5] = [
        Provider::Mailgun,
        Provider::SendGrid,
        Provider::Postmark,
        Provider::Generic,
        Provider::Ses,
    ];

    /// The path segment in `/webhooks/{provider}`.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Mailgun => "mailgun",
            Provider::SendGrid => "sendgrid",
            Provider::Postmark => "postmark",
            Provider::Generic => "generic",
            Provider::Ses => "ses",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

/// The credentials for each provider's webhook; a provider without them is disabled.
#[derive(Debug, Clone, Default)]
pub struct WebhookKeys {
    /// Mailgun's "HTTP webhook signing key".
    pub mailgun: Option<Secret<String>>,
    /// SendGrid's signed Event Webhook verification key.
    pub sendgrid: Option<SendGridKey>,
    pub postmark: Option<BasicAuth>,
    /// The shared secret of the generic signed JSON webhook.
    pub generic: Option<Secret<String>>,
    /// Amazon SES feedback through SNS (`SES_SNS_TOPIC_ARNS`).
    pub ses: Option<SesConfig>,
}

/// Amazon SES feedback: which SNS topics are ours, and where SNS certificates and
/// confirmation links may come from.
#[derive(Debug, Clone)]
pub struct SesConfig {
    /// Messages from other topics are refused before anything is fetched.
    pub topic_arns: Vec<String>,
    /// [`sns::SnsTrust::aws`] from the environment; tests use their own.
    pub trust: sns::SnsTrust,
}

impl WebhookKeys {
    /// The providers whose webhooks are configured and can echo a header's data back:
    /// mail carries [`echo_headers`] for these.
    pub fn echoing(&self) -> Vec<Provider> {
        [
            Provider::Postmark,
            Provider::Mailgun,
            Provider::SendGrid,
            Provider::Ses,
        ]
        .into_iter()
        .filter(|p| self.enabled(*p))
        .collect()
    }

    pub fn enabled(&self, provider: Provider) -> bool {
        match provider {
            Provider::Mailgun => self.mailgun.is_some(),
            Provider::SendGrid => self.sendgrid.is_some(),
            Provider::Postmark => self.postmark.is_some(),
            Provider::Generic => self.generic.is_some(),
            Provider::Ses => self.ses.is_some(),
        }
    }
}

/// DER prefix of a P-256 SubjectPublicKeyInfo (id-ecPublicKey, prime256v1, bit string).
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// SendGrid's verification key: the public point of a P-256 key.
#[derive(Clone, PartialEq, Eq)]
pub struct SendGridKey(Vec<u8>);

impl SendGridKey {
    /// The key as SendGrid shows it: base64 of a DER SubjectPublicKeyInfo (PEM armour
    /// and line breaks are tolerated).
    pub fn parse(text: &str) -> Result<Self, String> {
        let b64: String = text
            .lines()
            .filter(|l| !l.trim_start().starts_with("-----"))
            .flat_map(|l| l.chars())
            .filter(|c| !c.is_whitespace())
            .collect();
        let der = B64.decode(b64.as_bytes()).map_err(|_| {
            "is not base64 (copy the verification key from SendGrid's Mail Settings)".to_string()
        })?;
        match der.strip_prefix(&P256_SPKI_PREFIX[..]) {
            Some(point) if point.len() == 65 && point[0] == 0x04 => Ok(Self(point.to_vec())),
            _ => Err("is not a P-256 (prime256v1) public key in DER form".into()),
        }
    }

    /// From an uncompressed point (tests build keys this way).
    pub fn from_point(point: &[u8]) -> Self {
        Self(point.to_vec())
    }

    /// The DER SubjectPublicKeyInfo, base64, as SendGrid shows it.
    pub fn to_base64(&self) -> String {
        let mut der = P256_SPKI_PREFIX.to_vec();
        der.extend_from_slice(&self.0);
        B64.encode(der)
    }
}

impl fmt::Debug for SendGridKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SendGridKey(..)")
    }
}

/// HTTP basic-auth credentials the provider sends (Postmark: set in the webhook URL).
#[derive(Debug, Clone)]
pub struct BasicAuth {
    pub user: String,
    pub password: Secret<String>,
}

/// Why a request was turned away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// The provider is not configured: the endpoint does not exist.
    Disabled,
    /// A missing, wrong or stale signature or credential (401).
    Unauthorized(&'static str),
    /// The body cannot be read as that provider's format (400).
    Malformed(String),
}

/// What verification learnt that applying needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verified {
    /// A one-time token to refuse a second time (Mailgun).
    pub replay_token: Option<String>,
}

/// Checks that a request comes from the provider. Headers are looked up by lower-case
/// name.
pub fn verify(
    provider: Provider,
    keys: &WebhookKeys,
    header: &dyn Fn(&str) -> Option<String>,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<Verified, Rejection> {
    match provider {
        Provider::Mailgun => {
            let key = keys.mailgun.as_ref().ok_or(Rejection::Disabled)?;
            verify_mailgun(key.expose().as_bytes(), body, now)
        }
        Provider::SendGrid => {
            let key = keys.sendgrid.as_ref().ok_or(Rejection::Disabled)?;
            verify_sendgrid(key, header, body, now)
        }
        Provider::Postmark => {
            let auth = keys.postmark.as_ref().ok_or(Rejection::Disabled)?;
            verify_basic(auth, header("authorization").as_deref())
        }
        Provider::Generic => {
            let secret = keys.generic.as_ref().ok_or(Rejection::Disabled)?;
            verify_generic(
                secret.expose().as_bytes(),
                header("loopline-signature").as_deref(),
                body,
                now,
            )
        }
        // SNS messages need their certificate fetched: `/webhooks/ses` verifies them
        // with `sns::Verifier`, never through here.
        Provider::Ses => Err(Rejection::Disabled),
    }
}

fn fresh(timestamp: &str, now: DateTime<Utc>) -> Result<(), Rejection> {
    let t: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| Rejection::Unauthorized("the signature timestamp is not a number"))?;
    if (now.timestamp() - t).abs() > MAX_SKEW_SECS {
        return Err(Rejection::Unauthorized(
            "the signature timestamp is more than 5 minutes away from our clock",
        ));
    }
    Ok(())
}

fn hmac_sha256(key: &[u8]) -> Hmac<Sha256> {
    <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC takes any key length")
}

/// A Mailgun route's forward of received mail: a form (`application/x-www-form-urlencoded`)
/// with the parsed message's fields and the same signature fields as its event
/// webhooks, which are JSON. `None` for JSON.
fn mailgun_form(body: &[u8]) -> Option<std::collections::HashMap<String, String>> {
    if body.trim_ascii_start().first() == Some(&b'{') {
        return None;
    }
    Some(url::form_urlencoded::parse(body).into_owned().collect())
}

fn verify_mailgun(key: &[u8], body: &[u8], now: DateTime<Utc>) -> Result<Verified, Rejection> {
    let fields = match mailgun_form(body) {
        Some(form) => ["timestamp", "token", "signature"].map(|k| form.get(k).cloned()),
        None => {
            let doc: Value = serde_json::from_slice(body).map_err(|e| malformed_json(&e))?;
            let sig = doc
                .get("signature")
                .and_then(Value::as_object)
                .ok_or(Rejection::Unauthorized("the body has no signature object"))?;
            ["timestamp", "token", "signature"].map(|k| match sig.get(k) {
                Some(Value::String(s)) => Some(s.clone()),
                Some(Value::Number(n)) => Some(n.to_string()),
                _ => None,
            })
        }
    };
    let [Some(timestamp), Some(token), Some(signature)] = fields else {
        return Err(Rejection::Unauthorized(
            "the signature needs timestamp, token and signature",
        ));
    };
    let given =
        hex_decode(&signature).ok_or(Rejection::Unauthorized("the signature is not hex"))?;
    let mut mac = hmac_sha256(key);
    mac.update(timestamp.as_bytes());
    mac.update(token.as_bytes());
    mac.verify_slice(&given)
        .map_err(|_| Rejection::Unauthorized("the signature does not match"))?;
    fresh(&timestamp, now)?;
    if token.is_empty() || token.len() > 200 {
        return Err(Rejection::Unauthorized("the signature token is not valid"));
    }
    Ok(Verified {
        replay_token: Some(token),
    })
}

fn verify_sendgrid(
    key: &SendGridKey,
    header: &dyn Fn(&str) -> Option<String>,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<Verified, Rejection> {
    let (Some(signature), Some(timestamp)) = (
        header("x-twilio-email-event-webhook-signature"),
        header("x-twilio-email-event-webhook-timestamp"),
    ) else {
        return Err(Rejection::Unauthorized(
            "the X-Twilio-Email-Event-Webhook-Signature and -Timestamp headers are required",
        ));
    };
    let sig = B64
        .decode(signature.trim().as_bytes())
        .map_err(|_| Rejection::Unauthorized("the signature is not base64"))?;
    let mut signed = Vec::with_capacity(timestamp.len() + body.len());
    signed.extend_from_slice(timestamp.as_bytes());
    signed.extend_from_slice(body);
    ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_ASN1, &key.0)
        .verify(&signed, &sig)
        .map_err(|_| Rejection::Unauthorized("the signature does not match"))?;
    fresh(&timestamp, now)?;
    Ok(Verified::default())
}

fn verify_basic(auth: &BasicAuth, given: Option<&str>) -> Result<Verified, Rejection> {
    let missing = Rejection::Unauthorized("HTTP basic authentication is required");
    let given = given.ok_or(missing.clone())?;
    let (scheme, encoded) = given.trim().split_once(' ').ok_or(missing.clone())?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(missing);
    }
    let decoded = B64.decode(encoded.trim().as_bytes()).unwrap_or_default();
    let expected = format!("{}:{}", auth.user, auth.password.expose());
    // Digests first, so neither the length nor the content leaks through timing.
    let a = Sha256::digest(&decoded);
    let b = Sha256::digest(expected.as_bytes());
    if constant_time_eq(&a, &b) {
        Ok(Verified::default())
    } else {
        Err(Rejection::Unauthorized("the credentials are wrong"))
    }
}

fn verify_generic(
    secret: &[u8],
    header: Option<&str>,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<Verified, Rejection> {
    let header = header.ok_or(Rejection::Unauthorized(
        "the Loopline-Signature header is required",
    ))?;
    let mut timestamp = None;
    let mut candidates = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = Some(t.trim().to_string()),
            Some(("v1", v)) => candidates.extend(hex_decode(v.trim())),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(Rejection::Unauthorized(
        "the Loopline-Signature header needs t=<unix time>",
    ))?;
    let mut mac = hmac_sha256(secret);
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    // Several v1 values are allowed, so a sender can roll its secret.
    if !candidates
        .iter()
        .any(|c| mac.clone().verify_slice(c).is_ok())
    {
        return Err(Rejection::Unauthorized("the signature does not match"));
    }
    fresh(&timestamp, now)?;
    Ok(Verified::default())
}

/// The generic webhook's signature header for `body` (senders' reference, and tests).
pub fn generic_signature(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut mac = hmac_sha256(secret);
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={timestamp},v1={}", hex(&mac.finalize().into_bytes()))
}

/// A Mailgun signature object (tests, and anyone checking their key).
pub fn mailgun_signature(key: &[u8], timestamp: i64, token: &str) -> String {
    let mut mac = hmac_sha256(key);
    mac.update(timestamp.to_string().as_bytes());
    mac.update(token.as_bytes());
    hex(&mac.finalize().into_bytes())
}

fn ref_payload(message_id: i64, subscriber_id: Option<i64>) -> [u8; 16] {
    let mut p = [0u8; 16];
    p[..8].copy_from_slice(&message_id.to_be_bytes());
    p[8..].copy_from_slice(&subscriber_id.unwrap_or(0).to_be_bytes());
    p
}

/// A message's reference as it travels with the mail: `{outbox id}.{tag}`, the tag a
/// 128-bit HMAC over the outbox id and the recipient's subscriber id. Stable across a
/// message's attempts; also the local part of its `Message-ID`.
pub fn message_ref(keys: &SigningKey, message_id: i64, subscriber_id: Option<i64>) -> String {
    let tag = keys.short_tag(MESSAGE_REF, &ref_payload(message_id, subscriber_id));
    format!("{message_id}.{}", URL_B64.encode(tag))
}

/// The outbox id in `reference`, if we made it for a message to `subscriber_id`.
pub fn verify_message_ref(keys: &SigningKey, reference: &str, subscriber_id: i64) -> Option<i64> {
    if reference.len() > 100 {
        return None;
    }
    let (id, tag) = reference.split_once('.')?;
    let id: i64 = id.parse().ok().filter(|id| *id > 0)?;
    let tag = URL_B64.decode(tag).ok()?;
    keys.verify_short_tag(MESSAGE_REF, &ref_payload(id, Some(subscriber_id)), &tag)
        .then_some(id)
}

/// Headers that make each provider in `providers` echo `reference` in its webhook
/// events: Postmark's custom metadata, Mailgun's variables, SendGrid's unique args
/// and SES's message tags (each provider reads its own header when relaying; see
/// [`WebhookKeys::echoing`]).
pub fn echo_headers(providers: &[Provider], reference: &str) -> Vec<(&'static str, String)> {
    providers
        .iter()
        .filter_map(|p| match p {
            Provider::Postmark => Some((POSTMARK_ECHO_HEADER, reference.to_string())),
            Provider::Mailgun => Some((
                "X-Mailgun-Variables",
                json!({ ECHO_KEY: reference }).to_string(),
            )),
            Provider::SendGrid => Some((
                "X-SMTPAPI",
                json!({ "unique_args": { ECHO_KEY: reference } }).to_string(),
            )),
            Provider::Ses => Some((
                ses::TAGS_HEADER,
                format!("{ECHO_KEY}={}", ses::tag_value(reference)),
            )),
            Provider::Generic => None,
        })
        .collect()
}

/// The reference a provider echoed under [`ECHO_KEY`] in `data` (its metadata object).
fn echoed(data: Option<&Value>) -> Option<String> {
    let (_, v) = data?
        .as_object()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(ECHO_KEY))?;
    v.as_str()
        .map(str::trim)
        .filter(|r| !r.is_empty() && r.len() <= 100)
        .map(str::to_string)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || s.len() > 256 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn malformed_json(e: &serde_json::Error) -> Rejection {
    Rejection::Malformed(format!("the body is not valid JSON: {e}"))
}

/// What a provider event means for Loopline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Permanent: the address does not work. The subscriber becomes `bounced`.
    HardBounce,
    /// Transient (mailbox full, greylisted, blocked): recorded, nothing changes.
    SoftBounce,
    /// A spam report: the subscriber becomes `complained`: no more marketing mail, only
    /// mail they ask for themselves (a confirmation, their data export).
    Complaint,
    Delivered,
    /// Unsubscribed at the provider (its own link or suppression list).
    Unsubscribed,
    /// A purchase or other goal reached (generic webhook only, e.g. from a shop),
    /// attributed to the message whose link the subscriber last clicked as a human.
    Converted,
}

impl Kind {
    /// The event kind on the timeline.
    pub fn event_kind(self) -> &'static str {
        match self {
            Kind::HardBounce | Kind::SoftBounce => "bounced",
            Kind::Complaint => "complained",
            Kind::Delivered => "delivered",
            Kind::Unsubscribed => "unsubscribed",
            Kind::Converted => "converted",
        }
    }
}

/// One provider event, in Loopline's terms.
#[derive(Debug, Clone, PartialEq)]
pub struct Feedback {
    /// Unique per provider event (its id), so a retry is recognised.
    pub key: String,
    pub kind: Kind,
    pub email: String,
    /// The provider's diagnostic (SMTP reply, bounce description, …).
    pub reason: String,
    /// Our `Message-ID` header as the provider echoed it, in angle brackets.
    pub message_id: Option<String>,
    /// The provider's own id for the message.
    pub provider_message_id: Option<String>,
    /// Our [`message_ref`] as the provider echoed it from its custom-data header
    /// (unverified until applied).
    pub reference: Option<String>,
    pub occurred_at: Option<DateTime<Utc>>,
    /// Conversions: `value`, `currency` and `name`, as sent.
    pub details: Value,
    /// An unsubscribe request by mail (the `mailto:` of `List-Unsubscribe`): the
    /// subscriber link token its subject carried (unverified until applied). It, not
    /// the sender's address, names the subscriber.
    pub unsubscribe_token: Option<String>,
}

/// A request's events: the ones that matter, and how many were of kinds Loopline does
/// not act on (opens, clicks and deferrals are measured by Loopline itself).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Parsed {
    pub events: Vec<Feedback>,
    pub ignored: usize,
}

/// Reads a provider's event format. An error is a message for a 400 response; events
/// that are merely incomplete (no recipient) are ignored, not fatal, so one odd event
/// cannot block a whole batch.
pub fn parse(provider: Provider, body: &[u8]) -> Result<Parsed, String> {
    let mut parsed = Parsed::default();
    if provider == Provider::Mailgun
        && let Some(form) = mailgun_form(body)
    {
        // Mail received by a route: the message's own Message-Id names it (a retry
        // brings the same), else the request's one-time token.
        let id = form
            .get("Message-Id")
            .or_else(|| form.get("token"))
            .ok_or("the form has neither Message-Id nor token")?;
        let from = form.get("sender").cloned();
        let subject = form.get("subject").map(String::as_str).unwrap_or("");
        match inbound_unsubscribe(format!("Inbound:{id}"), from, subject) {
            Some(f) => parsed.events.push(f),
            None => parsed.ignored += 1,
        }
        return Ok(parsed);
    }
    let doc: Value =
        serde_json::from_slice(body).map_err(|e| format!("the body is not valid JSON: {e}"))?;
    fn push(parsed: &mut Parsed, f: Option<Feedback>) {
        match f {
            Some(f) => parsed.events.push(f),
            None => parsed.ignored += 1,
        }
    }
    match provider {
        Provider::Mailgun => {
            let data = doc
                .get("event-data")
                .and_then(Value::as_object)
                .ok_or("the body has no event-data object")?;
            let token = doc
                .pointer("/signature/token")
                .and_then(Value::as_str)
                .unwrap_or("");
            push(&mut parsed, mailgun_event(data, token));
        }
        Provider::SendGrid => {
            let events = doc
                .as_array()
                .ok_or("the body must be a JSON array of events")?;
            for e in events {
                let e = e.as_object().ok_or("every event must be a JSON object")?;
                push(&mut parsed, sendgrid_event(e));
            }
        }
        Provider::Postmark => {
            let e = doc.as_object().ok_or("the body must be a JSON object")?;
            push(&mut parsed, postmark_event(e));
        }
        Provider::Generic => {
            let events: Vec<&Value> = match &doc {
                Value::Array(a) => a.iter().collect(),
                Value::Object(o) => match o.get("events") {
                    Some(Value::Array(a)) => a.iter().collect(),
                    _ => vec![&doc],
                },
                _ => return Err("the body must be a JSON object or an array of them".into()),
            };
            for (i, e) in events.into_iter().enumerate() {
                let e = e
                    .as_object()
                    .ok_or_else(|| format!("event {i}: must be a JSON object"))?;
                push(
                    &mut parsed,
                    generic_event(e).map_err(|m| format!("event {i}: {m}"))?,
                );
            }
        }
        Provider::Ses => {
            return Err("SES reports arrive as SNS messages at /webhooks/ses".into());
        }
    }
    Ok(parsed)
}

fn text(o: &Map<String, Value>, key: &str) -> Option<String> {
    match o.get(key)? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn at_path(v: &Value, path: &str) -> Option<String> {
    match v.pointer(path)? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn unix_time(v: Option<&Value>) -> Option<DateTime<Utc>> {
    let secs = match v? {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => s.trim().parse().ok()?,
        _ => return None,
    };
    DateTime::from_timestamp_millis((secs * 1000.0) as i64)
}

fn rfc3339(s: Option<String>) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(&s?)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// `<id@host>`, whether or not the provider kept the angle brackets.
fn bracketed(id: Option<String>) -> Option<String> {
    let id = id?;
    let bare = id.trim().trim_start_matches('<').trim_end_matches('>');
    (!bare.is_empty() && bare.len() <= 900).then(|| format!("<{bare}>"))
}

fn clip(s: String) -> String {
    if s.chars().count() <= MAX_REASON_CHARS {
        s
    } else {
        s.chars().take(MAX_REASON_CHARS).collect()
    }
}

fn join_reason(parts: &[Option<String>]) -> String {
    let mut out: Vec<&str> = Vec::new();
    for p in parts.iter().flatten() {
        if !out.contains(&p.as_str()) {
            out.push(p);
        }
    }
    clip(out.join(" — "))
}

fn digest_key(v: &Map<String, Value>) -> String {
    let canonical = serde_json::to_vec(v).unwrap_or_default();
    format!("sha256:{}", hex(&Sha256::digest(&canonical)))
}

/// Mailgun's `event-data` (the JSON webhooks): `failed` with `severity`, `complained`,
/// `delivered`, `unsubscribed`.
fn mailgun_event(e: &Map<String, Value>, token: &str) -> Option<Feedback> {
    let event = text(e, "event")?;
    let reason_code = text(e, "reason").unwrap_or_default();
    let kind = match event.as_str() {
        "failed" => match (text(e, "severity").as_deref(), reason_code.as_str()) {
            (_, "suppress-complaint") => Kind::Complaint,
            (_, "suppress-unsubscribe") => Kind::Unsubscribed,
            (Some("permanent"), _) => Kind::HardBounce,
            _ => Kind::SoftBounce,
        },
        "complained" => Kind::Complaint,
        "delivered" => Kind::Delivered,
        "unsubscribed" => Kind::Unsubscribed,
        _ => return None,
    };
    let v = Value::Object(e.clone());
    let timestamp = e.get("timestamp");
    // Mailgun event ids are unique within a day; with the event's time they are unique.
    let key = match text(e, "id") {
        Some(id) => format!(
            "{id}@{}",
            timestamp.map(Value::to_string).unwrap_or_default()
        ),
        None if !token.is_empty() => format!("token:{token}"),
        None => digest_key(e),
    };
    Some(Feedback {
        key,
        kind,
        email: text(e, "recipient")?,
        reason: join_reason(&[
            at_path(&v, "/delivery-status/code"),
            at_path(&v, "/delivery-status/message"),
            at_path(&v, "/delivery-status/description"),
            (!reason_code.is_empty()).then_some(reason_code),
        ]),
        message_id: bracketed(at_path(&v, "/message/headers/message-id")),
        provider_message_id: None,
        reference: echoed(e.get("user-variables")),
        occurred_at: unix_time(timestamp),
        details: Value::Null,
        unsubscribe_token: None,
    })
}

/// One event of SendGrid's Event Webhook batch.
fn sendgrid_event(e: &Map<String, Value>) -> Option<Feedback> {
    let event = text(e, "event")?;
    let reason = text(e, "reason");
    let kind = match event.as_str() {
        // `blocked` is the receiving side refusing for now (reputation, content).
        "bounce" if text(e, "type").as_deref() == Some("blocked") => Kind::SoftBounce,
        "bounce" => Kind::HardBounce,
        "dropped" => match reason.as_deref() {
            Some("Bounced Address" | "Invalid") => Kind::HardBounce,
            Some("Spam Reporting Address") => Kind::Complaint,
            Some("Unsubscribed Address") => Kind::Unsubscribed,
            _ => return None,
        },
        "spamreport" => Kind::Complaint,
        "delivered" => Kind::Delivered,
        "unsubscribe" | "group_unsubscribe" => Kind::Unsubscribed,
        _ => return None,
    };
    Some(Feedback {
        key: text(e, "sg_event_id").unwrap_or_else(|| digest_key(e)),
        kind,
        email: text(e, "email")?,
        reason: join_reason(&[
            text(e, "status"),
            reason,
            text(e, "bounce_classification"),
            text(e, "response"),
        ]),
        message_id: bracketed(text(e, "smtp-id")),
        provider_message_id: text(e, "sg_message_id"),
        // Unique args arrive as top-level fields of each event.
        reference: echoed(Some(&Value::Object(e.clone()))),
        occurred_at: unix_time(e.get("timestamp")),
        details: Value::Null,
        unsubscribe_token: None,
    })
}

/// The subscriber link token of an unsubscribe request by mail: the subject our
/// `List-Unsubscribe` header's `mailto:` asks for is `unsubscribe <token>`. A mail client
/// or provider may prefix it (`Re:`, `[ext]`); case and spacing do not matter.
pub fn mailto_unsubscribe_token(subject: &str) -> Option<String> {
    let words: Vec<&str> = subject.split_whitespace().collect();
    words.windows(2).find_map(|w| {
        let token = w[1];
        (w[0].eq_ignore_ascii_case("unsubscribe")
            && token.len() <= 200
            && token.split_once('.').is_some_and(|(id, sig)| {
                !id.is_empty()
                    && id.bytes().all(|b| b.is_ascii_digit())
                    && !sig.is_empty()
                    && sig
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            }))
        .then(|| token.to_string())
    })
}

/// Mail received at the address of our `List-Unsubscribe` `mailto:` and handed over
/// by the provider: an unsubscribe request when its subject carries a subscriber
/// token, otherwise not ours to act on (a reply, say).
fn inbound_unsubscribe(key: String, from: Option<String>, subject: &str) -> Option<Feedback> {
    let token = mailto_unsubscribe_token(subject)?;
    Some(Feedback {
        key,
        kind: Kind::Unsubscribed,
        email: from.unwrap_or_default(),
        reason: "mailto".into(),
        message_id: None,
        provider_message_id: None,
        reference: None,
        occurred_at: None,
        details: Value::Null,
        unsubscribe_token: Some(token),
    })
}

/// A Postmark webhook: `Bounce`, `SpamComplaint`, `Delivery` or `SubscriptionChange`,
/// or an inbound message (its inbound webhook: `MessageStream` "inbound", no
/// `RecordType`).
fn postmark_event(e: &Map<String, Value>) -> Option<Feedback> {
    if e.get("RecordType").is_none()
        && (text(e, "MessageStream").as_deref() == Some("inbound") || e.contains_key("FromFull"))
    {
        let v = Value::Object(e.clone());
        let key = format!(
            "Inbound:{}",
            text(e, "MessageID").unwrap_or_else(|| digest_key(e))
        );
        let from = at_path(&v, "/FromFull/Email").or_else(|| text(e, "From"));
        return inbound_unsubscribe(key, from, &text(e, "Subject").unwrap_or_default());
    }
    let record = text(e, "RecordType").unwrap_or_else(|| "Bounce".into());
    let pm_id = text(e, "MessageID");
    let (kind, email, key, at) = match record.as_str() {
        "Bounce" | "SpamComplaint" => {
            let kind = match text(e, "Type").as_deref() {
                _ if record == "SpamComplaint" => Kind::Complaint,
                Some("HardBounce" | "BadEmailAddress") => Kind::HardBounce,
                Some("SpamComplaint" | "SpamNotification") => Kind::Complaint,
                Some("Unsubscribe") => Kind::Unsubscribed,
                Some(
                    "Transient" | "SoftBounce" | "DnsError" | "Blocked" | "Unknown"
                    | "SMTPApiError" | "DMARCPolicy",
                ) => Kind::SoftBounce,
                _ => return None,
            };
            let key = match text(e, "ID") {
                Some(id) => format!("{record}:{id}"),
                None => digest_key(e),
            };
            (kind, text(e, "Email")?, key, text(e, "BouncedAt"))
        }
        "Delivery" => {
            let to = text(e, "Recipient")?;
            let key = format!("Delivery:{}:{to}", pm_id.clone()?);
            (Kind::Delivered, to, key, text(e, "DeliveredAt"))
        }
        "SubscriptionChange" => {
            // Bounces and complaints arrive by their own webhooks; this one only adds
            // a manual suppression (the recipient unsubscribed at Postmark).
            let manual = e.get("SuppressSending") == Some(&Value::Bool(true))
                && text(e, "SuppressionReason").as_deref() == Some("ManualSuppression");
            if !manual {
                return None;
            }
            let to = text(e, "Recipient")?;
            let changed = text(e, "ChangedAt");
            let key = format!(
                "SubscriptionChange:{}:{to}:{}",
                pm_id.clone().unwrap_or_default(),
                changed.clone().unwrap_or_default()
            );
            (Kind::Unsubscribed, to, key, changed)
        }
        _ => return None,
    };
    Some(Feedback {
        key,
        kind,
        email,
        reason: join_reason(&[text(e, "Description"), text(e, "Details")]),
        message_id: None,
        provider_message_id: pm_id,
        reference: echoed(e.get("Metadata")),
        occurred_at: rfc3339(at),
        details: Value::Null,
        unsubscribe_token: None,
    })
}

/// Loopline's own format (README: "Generic signed webhook").
/// `None` for mail received (`inbound_mail`) that is not an unsubscribe request.
fn generic_event(e: &Map<String, Value>) -> Result<Option<Feedback>, String> {
    let id = text(e, "id").ok_or("`id` (a unique event id) is required")?;
    if id.len() > 200 {
        return Err("`id` is longer than 200 characters".into());
    }
    if text(e, "type").as_deref() == Some("inbound_mail") {
        let subject = text(e, "subject").ok_or("`subject` is required for inbound_mail")?;
        return Ok(inbound_unsubscribe(id, text(e, "email"), &subject));
    }
    let kind = match text(e, "type").as_deref() {
        Some("hard_bounce") => Kind::HardBounce,
        Some("soft_bounce") => Kind::SoftBounce,
        Some("complaint") => Kind::Complaint,
        Some("delivered") => Kind::Delivered,
        Some("unsubscribe") => Kind::Unsubscribed,
        Some("conversion") => Kind::Converted,
        _ => {
            return Err(
                "`type` must be hard_bounce, soft_bounce, complaint, delivered, unsubscribe, conversion or inbound_mail"
                    .into(),
            );
        }
    };
    let mut details = Value::Null;
    if kind == Kind::Converted {
        let value = match e.get("value") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) if n.as_f64().is_some_and(f64::is_finite) => Some(n.clone()),
            Some(_) => return Err("`value` must be a number".into()),
        };
        let currency = text(e, "currency");
        if let Some(c) = &currency
            && !(c.len() == 3 && c.bytes().all(|b| b.is_ascii_alphabetic()))
        {
            return Err("`currency` must be a three-letter code like KRW or USD".into());
        }
        let name = text(e, "name");
        if name.as_ref().is_some_and(|n| n.chars().count() > 200) {
            return Err("`name` is longer than 200 characters".into());
        }
        details = json!({
            "value": value,
            "currency": currency.map(|c| c.to_ascii_uppercase()),
            "name": name,
        });
    }
    let email = text(e, "email").ok_or("`email` is required")?;
    let occurred_at = match text(e, "occurred_at") {
        None => None,
        Some(s) => Some(rfc3339(Some(s)).ok_or("`occurred_at` must be an RFC 3339 time")?),
    };
    Ok(Some(Feedback {
        key: id,
        kind,
        email,
        reason: join_reason(&[text(e, "reason")]),
        message_id: bracketed(text(e, "message_id")),
        provider_message_id: None,
        reference: None,
        occurred_at,
        details,
        unsubscribe_token: None,
    }))
}

/// What a request changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Applied {
    /// Events recorded on a subscriber's timeline.
    pub recorded: usize,
    /// Events already received before (provider retries).
    pub duplicates: usize,
    /// Events for addresses that are not subscribers.
    pub unknown: usize,
    /// Events of kinds Loopline does not act on.
    pub ignored: usize,
    /// The whole request was a replay of one already received (same one-time token).
    pub replay: bool,
}

/// Applies a verified request's events in one transaction.
pub async fn apply(
    pool: &PgPool,
    signing: &SigningKey,
    provider: Provider,
    verified: &Verified,
    parsed: &Parsed,
    now: DateTime<Utc>,
) -> sqlx::Result<Applied> {
    let p = provider.as_str();
    let mut out = Applied {
        ignored: parsed.ignored,
        ..Applied::default()
    };
    let mut tx = pool.begin().await?;
    sqlx::query(
        "DELETE FROM feedback_receipts
         WHERE received_at < $1 - make_interval(days => $2)
            OR (received_at < $1 - interval '1 hour' AND key LIKE 'token:%')",
    )
    .bind(now)
    .bind(RECEIPT_DAYS as i32)
    .execute(&mut *tx)
    .await?;
    if let Some(token) = &verified.replay_token {
        let fresh = sqlx::query(
            "INSERT INTO feedback_receipts (provider, key, received_at) VALUES ($1, $2, $3)
             ON CONFLICT DO NOTHING",
        )
        .bind(p)
        .bind(format!("token:{token}"))
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if !fresh {
            out.replay = true;
            out.duplicates = parsed.events.len();
            return Ok(out);
        }
    }

    // Receipts for the whole batch in one statement, in key order (two deliveries of
    // overlapping batches then lock in the same order).
    let mut keys: Vec<String> = parsed
        .events
        .iter()
        .map(|f| format!("event:{}", f.key))
        .collect();
    keys.sort();
    keys.dedup();
    let new_keys: Vec<String> = sqlx::query_scalar(
        "INSERT INTO feedback_receipts (provider, key, received_at)
         SELECT $1, k, $3 FROM unnest($2::text[]) AS k
         ON CONFLICT DO NOTHING RETURNING key",
    )
    .bind(p)
    .bind(&keys)
    .bind(now)
    .fetch_all(&mut *tx)
    .await?;
    let new_keys: std::collections::HashSet<String> = new_keys.into_iter().collect();

    let mut seen = std::collections::HashSet::new();
    let mut todo: Vec<&Feedback> = Vec::new();
    for f in &parsed.events {
        let k = format!("event:{}", f.key);
        if new_keys.contains(&k) && seen.insert(k) {
            todo.push(f);
        } else {
            out.duplicates += 1;
        }
    }
    // Subscriber rows are locked in address order, the same in every transaction (a
    // request by mail by the address of the subscriber its token names).
    let mut found = Vec::with_capacity(todo.len());
    for f in todo {
        match subscriber_of(&mut tx, signing, f).await? {
            Some((address, sid)) => found.push((address, sid, f)),
            None => {
                out.unknown += 1;
                tracing::debug!(
                    provider = p,
                    event = %f.key,
                    "feedback for an address that is not a subscriber; nothing to do"
                );
            }
        }
    }
    found.sort_by(|(a, _, f), (b, _, g)| (a, f.occurred_at).cmp(&(b, g.occurred_at)));
    for (_, sid, f) in found {
        apply_one(&mut tx, signing, provider, sid, f, now).await?;
        out.recorded += 1;
    }
    tx.commit().await?;
    Ok(out)
}

/// The subscriber an event is about (lower-cased address and id): by its address, or
/// for a request by mail by the signed token it carries; `None` when there is none, or
/// the token does not verify (forged, or signed with another key).
async fn subscriber_of(
    tx: &mut PgConnection,
    keys: &SigningKey,
    f: &Feedback,
) -> sqlx::Result<Option<(String, i64)>> {
    match &f.unsubscribe_token {
        Some(token) => match crate::audience::links::verify_subscriber_token(keys, token) {
            Some(id) => {
                sqlx::query_as("SELECT lower(email), id FROM subscribers WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await
            }
            None => Ok(None),
        },
        None => {
            sqlx::query_as(
                "SELECT lower(email), id FROM subscribers WHERE lower(email) = lower($1)",
            )
            .bind(&f.email)
            .fetch_optional(&mut *tx)
            .await
        }
    }
}

/// Applies one event to subscriber `sid`.
async fn apply_one(
    tx: &mut PgConnection,
    keys: &SigningKey,
    provider: Provider,
    sid: i64,
    f: &Feedback,
    now: DateTime<Utc>,
) -> sqlx::Result<()> {
    // A provider's clock may run ahead of ours; the timeline never shows the future.
    let at = f.occurred_at.filter(|t| *t <= now).unwrap_or(now);

    // Our message: by the reference the provider echoed (valid only for a message sent
    // to this subscriber), by the Message-ID it echoed, else the latest one sent to
    // this subscriber before the event.
    let mut matched = "";
    let mut message: Option<i64> = None;
    if f.kind == Kind::Converted {
        // A conversion belongs to the mail that brought the reader, not the last one sent.
        message = crate::tracking::events::attributed_message(&mut *tx, sid, at).await?;
        if message.is_some() {
            matched = "last-human-click";
        }
    } else if let Some(reference) = &f.reference {
        match verify_message_ref(keys, reference, sid) {
            Some(id) => {
                message = sqlx::query_scalar(
                    "SELECT id FROM messages WHERE id = $1 AND subscriber_id = $2",
                )
                .bind(id)
                .bind(sid)
                .fetch_optional(&mut *tx)
                .await?;
                if message.is_some() {
                    matched = "metadata";
                }
            }
            None => tracing::debug!(
                provider = provider.as_str(),
                event = %f.key,
                "echoed message reference is not one we sent to this address; ignored"
            ),
        }
    }
    if message.is_none()
        && f.kind != Kind::Converted
        && let Some(mid) = &f.message_id
    {
        // Our Message-IDs are `<{reference}@{domain}>`: the reference names the message.
        let reference = mid.trim_start_matches('<').split('@').next().unwrap_or("");
        if let Some(id) = verify_message_ref(keys, reference, sid) {
            message = sqlx::query_scalar(
                "SELECT id FROM messages WHERE id = $1 AND subscriber_id = $2 AND message_id = $3",
            )
            .bind(id)
            .bind(sid)
            .bind(mid)
            .fetch_optional(&mut *tx)
            .await?;
        }
        if message.is_some() {
            matched = "message-id";
        }
    }
    if message.is_none() && f.kind != Kind::Converted {
        message = sqlx::query_scalar(
            "SELECT id FROM messages
             WHERE subscriber_id = $1 AND sent_at IS NOT NULL
               AND sent_at <= $2 + interval '5 minutes' AND sent_at > $2 - make_interval(days => $3)
             ORDER BY sent_at DESC, id DESC LIMIT 1",
        )
        .bind(sid)
        .bind(at)
        .bind(MATCH_DAYS as i32)
        .fetch_optional(&mut *tx)
        .await?;
        if message.is_some() {
            matched = "recipient";
        }
    }

    let mut data = json!({ "provider": provider.as_str(), "reason": f.reason });
    if let Some(pm) = &f.provider_message_id {
        data["provider_message_id"] = json!(pm);
    }
    if !matched.is_empty() {
        data["matched_by"] = json!(matched);
    }
    let record = match f.kind {
        Kind::HardBounce => {
            data["hard"] = json!(true);
            subscribers::leave(&mut *tx, sid, subscribers::Status::Bounced, at).await?;
            if let Some(m) = message {
                sqlx::query(
                    "UPDATE messages SET status = 'bounced', smtp_reply = left($2, 1000)
                     WHERE id = $1 AND status = 'sent'",
                )
                .bind(m)
                .bind(format!("{}: {}", provider.as_str(), f.reason))
                .execute(&mut *tx)
                .await?;
            }
            true
        }
        Kind::SoftBounce => {
            data["hard"] = json!(false);
            true
        }
        Kind::Complaint => {
            subscribers::leave(&mut *tx, sid, subscribers::Status::Complained, at).await?;
            true
        }
        Kind::Delivered => true,
        Kind::Converted => {
            if let (Value::Object(d), Value::Object(extra)) = (&mut data, &f.details) {
                for (k, v) in extra {
                    if !v.is_null() {
                        d.insert(k.clone(), v.clone());
                    }
                }
            }
            true
        }
        Kind::Unsubscribed => {
            // Only news if they had not already left (usually through our own link).
            data["via"] = json!(if f.unsubscribe_token.is_some() {
                "mailto"
            } else {
                provider.as_str()
            });
            sqlx::query(
                "UPDATE subscribers SET status = 'unsubscribed', unsubscribed_at = $2
                 WHERE id = $1 AND status IN ('active', 'unconfirmed')",
            )
            .bind(sid)
            .bind(at)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1
        }
    };
    if record {
        sqlx::query(
            "INSERT INTO events (subscriber_id, message_id, kind, at, data) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(sid)
        .bind(message)
        .bind(f.kind.event_kind())
        .bind(at)
        .bind(data)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unsubscribe_mail_is_known_by_the_token_in_its_subject() {
        use super::mailto_unsubscribe_token as token;
        assert_eq!(token("unsubscribe 42.aB-_9z").as_deref(), Some("42.aB-_9z"));
        assert_eq!(token("Re: UNSUBSCRIBE   42.aB9").as_deref(), Some("42.aB9"));
        assert_eq!(
            token("[ext] unsubscribe 7.x please").as_deref(),
            Some("7.x")
        );
        for not_one in [
            "unsubscribe",
            "please unsubscribe me",
            "unsubscribe 42",
            "unsubscribe abc.def",
            "unsubscribe 42.",
            "unsubscribe 42.ab$c",
            "Re: This week",
            "",
        ] {
            assert_eq!(token(not_one), None, "{not_one}");
        }
    }
    use chrono::TimeZone;

    fn no_headers(_: &str) -> Option<String> {
        None
    }

    fn at(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(secs, 0).unwrap()
    }

    fn keys() -> WebhookKeys {
        WebhookKeys {
            mailgun: Some(Secret::new("mg-signing-key".into())),
            sendgrid: None,
            postmark: Some(BasicAuth {
                user: "postmark".into(),
                password: Secret::new("pm-password-123".into()),
            }),
            generic: Some(Secret::new("generic-secret-0123456789".into())),
            ses: None,
        }
    }

    #[test]
    fn providers_without_keys_are_disabled() {
        let none = WebhookKeys::default();
        for p in Provider::ALL {
            assert_eq!(
                verify(p, &none, &no_headers, b"{}", at(0)),
                Err(Rejection::Disabled),
                "{p:?}"
            );
            assert_eq!(Provider::parse(p.as_str()), Some(p));
        }
        assert_eq!(Provider::parse("amazon"), None);
    }

    /// SendGrid's own test vector (from its SDKs' signature tests).
    #[test]
    fn sendgrid_signatures_verify_with_the_published_test_vector() {
        let key = SendGridKey::parse("MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEEDr2LjtURuePQzplybdC+u4CwrqDqBaWjcMMsTbhdbcwHBcepxo7yAQGhHPTnlvFYPAZFceEu/1FwCM/QmGUhA==").unwrap();
        let keys = WebhookKeys {
            sendgrid: Some(key.clone()),
            ..WebhookKeys::default()
        };
        let sig = "MEUCIQCtIHJeH93Y+qpYeWrySphQgpNGNr/U+UyUlBkU6n7RAwIgJTz2C+8a8xonZGi6BpSzoQsbVRamr2nlxFDWYNH2j/0=";
        let headers = |h: &str| match h {
            "x-twilio-email-event-webhook-signature" => Some(sig.to_string()),
            "x-twilio-email-event-webhook-timestamp" => Some("1588788367".to_string()),
            _ => None,
        };
        let body = b"{\"category\":\"example_payload\",\"event\":\"test_event\",\"message_id\":\"message_id\"}";
        let now = at(1588788367 + 10);
        assert_eq!(
            verify(Provider::SendGrid, &keys, &headers, body, now),
            Ok(Verified::default())
        );
        // One byte changed, or too old: refused.
        let tampered = b"{\"category\":\"example_payload\",\"event\":\"test_event\",\"message_id\":\"message_iD\"}";
        assert!(matches!(
            verify(Provider::SendGrid, &keys, &headers, tampered, now),
            Err(Rejection::Unauthorized(_))
        ));
        assert!(matches!(
            verify(
                Provider::SendGrid,
                &keys,
                &headers,
                body,
                at(1588788367 + 301)
            ),
            Err(Rejection::Unauthorized(_))
        ));
        assert!(matches!(
            verify(Provider::SendGrid, &keys, &no_headers, body, now),
            Err(Rejection::Unauthorized(_))
        ));
        // The key round-trips through the form SendGrid shows, PEM armour or not.
        assert_eq!(SendGridKey::parse(&key.to_base64()).unwrap(), key);
        let pem = format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            key.to_base64()
        );
        assert_eq!(SendGridKey::parse(&pem).unwrap(), key);
        assert!(SendGridKey::parse("not base64!").is_err());
        assert!(SendGridKey::parse("AAAA").is_err());
    }

    #[test]
    fn mailgun_signatures_are_checked_fresh_and_carry_their_token() {
        let keys = keys();
        let now = at(1_770_000_000);
        let token = "e0b5477167110d68991efc6b9f89f0a11066af27834600e123";
        let body = |ts: i64, sig: &str| {
            serde_json::to_vec(&json!({
                "signature": { "timestamp": ts.to_string(), "token": token, "signature": sig },
                "event-data": { "event": "complained", "id": "x", "recipient": "a@example.com" }
            }))
            .unwrap()
        };
        let ts = now.timestamp() - 30;
        let good = mailgun_signature(b"mg-signing-key", ts, token);
        assert_eq!(
            verify(Provider::Mailgun, &keys, &no_headers, &body(ts, &good), now),
            Ok(Verified {
                replay_token: Some(token.into())
            })
        );
        let wrong = mailgun_signature(b"another-key", ts, token);
        assert!(matches!(
            verify(
                Provider::Mailgun,
                &keys,
                &no_headers,
                &body(ts, &wrong),
                now
            ),
            Err(Rejection::Unauthorized(_))
        ));
        let old = now.timestamp() - 600;
        let stale = mailgun_signature(b"mg-signing-key", old, token);
        assert!(matches!(
            verify(
                Provider::Mailgun,
                &keys,
                &no_headers,
                &body(old, &stale),
                now
            ),
            Err(Rejection::Unauthorized(_))
        ));
        assert!(matches!(
            verify(Provider::Mailgun, &keys, &no_headers, b"{not json", now),
            Err(Rejection::Malformed(_))
        ));
    }

    #[test]
    fn generic_signatures_follow_the_documented_scheme() {
        let keys = keys();
        let now = at(1_770_000_000);
        let body = br#"{"id":"e1","type":"complaint","email":"a@example.com"}"#;
        let sig = generic_signature(b"generic-secret-0123456789", now.timestamp(), body);
        let h = |name: &str| (name == "loopline-signature").then(|| sig.clone());
        assert_eq!(
            verify(Provider::Generic, &keys, &h, body, now),
            Ok(Verified::default())
        );
        // A second v1 (secret rotation) is accepted alongside a wrong one.
        let rotated = format!(
            "{},v1={}",
            sig.replace("v1=", "v1=00"),
            &sig[sig.find("v1=").unwrap() + 3..]
        );
        let h2 = |name: &str| (name == "loopline-signature").then(|| rotated.clone());
        assert_eq!(
            verify(Provider::Generic, &keys, &h2, body, now),
            Ok(Verified::default())
        );
        assert!(matches!(
            verify(Provider::Generic, &keys, &h, b"{}", now),
            Err(Rejection::Unauthorized(_))
        ));
        assert!(matches!(
            verify(
                Provider::Generic,
                &keys,
                &h,
                body,
                at(now.timestamp() + 400)
            ),
            Err(Rejection::Unauthorized(_))
        ));
    }

    #[test]
    fn postmark_needs_its_basic_auth_credentials() {
        let keys = keys();
        let basic = |u: &str, p: &str| format!("Basic {}", B64.encode(format!("{u}:{p}")));
        let ok = basic("postmark", "pm-password-123");
        let h = |name: &str| (name == "authorization").then(|| ok.clone());
        assert!(verify(Provider::Postmark, &keys, &h, b"{}", at(0)).is_ok());
        for bad in [
            basic("postmark", "pm-password-12"),
            basic("other", "pm-password-123"),
            "Bearer x".to_string(),
            "Basic !!!".to_string(),
        ] {
            let h = |name: &str| (name == "authorization").then(|| bad.clone());
            assert!(
                matches!(
                    verify(Provider::Postmark, &keys, &h, b"{}", at(0)),
                    Err(Rejection::Unauthorized(_))
                ),
                "{bad}"
            );
        }
        assert!(verify(Provider::Postmark, &keys, &no_headers, b"{}", at(0)).is_err());
    }

    /// Mailgun's documented `failed` payload shape.
    #[test]
    fn mailgun_events_map_by_event_and_severity() {
        let body = json!({
            "signature": { "timestamp": "1770146431", "token": "t0k", "signature": "00" },
            "event-data": {
                "event": "failed",
                "id": "G9Bn5sl1TC6nu79C8C0bwg",
                "timestamp": 1770146431.6585283,
                "severity": "permanent",
                "reason": "bounce",
                "recipient": "Alice@Example.com",
                "delivery-status": {
                    "code": 550,
                    "message": "5.1.1 The email account that you tried to reach does not exist",
                    "description": ""
                },
                "message": { "headers": { "message-id": "20260203192638.000be97f99f8cea1@sample.mailgun.com" } }
            }
        });
        let p = parse(Provider::Mailgun, &serde_json::to_vec(&body).unwrap()).unwrap();
        assert_eq!(p.events.len(), 1);
        let f = &p.events[0];
        assert_eq!(f.kind, Kind::HardBounce);
        assert_eq!(f.email, "Alice@Example.com");
        assert_eq!(
            f.message_id.as_deref(),
            Some("<20260203192638.000be97f99f8cea1@sample.mailgun.com>")
        );
        assert!(f.reason.starts_with("550 — 5.1.1"), "{}", f.reason);
        assert_eq!(f.occurred_at.unwrap().timestamp(), 1770146431);

        let mut soft = body.clone();
        soft["event-data"]["severity"] = json!("temporary");
        let p = parse(Provider::Mailgun, &serde_json::to_vec(&soft).unwrap()).unwrap();
        assert_eq!(p.events[0].kind, Kind::SoftBounce);

        let mut opened = body.clone();
        opened["event-data"]["event"] = json!("opened");
        let p = parse(Provider::Mailgun, &serde_json::to_vec(&opened).unwrap()).unwrap();
        assert_eq!((p.events.len(), p.ignored), (0, 1));

        assert!(parse(Provider::Mailgun, b"{}").is_err());
    }

    /// Events as in SendGrid's Event Webhook reference (a batch is an array).
    #[test]
    fn sendgrid_batches_map_each_event() {
        let body = json!([
            { "email": "example@test.com", "timestamp": 1513299569, "smtp-id": "<14c5d75ce93.dfd.64b469@ismtpd-555>",
              "event": "processed", "category": "cat facts", "sg_event_id": "p1", "sg_message_id": "m1" },
            { "email": "example@test.com", "timestamp": 1513299569, "smtp-id": "<14c5d75ce93.dfd.64b469@ismtpd-555>",
              "event": "bounce", "category": "cat facts", "sg_event_id": "b1", "sg_message_id": "m1",
              "reason": "500 unknown recipient", "status": "5.0.0", "type": "bounce", "bounce_classification": "Invalid Address" },
            { "email": "example@test.com", "timestamp": 1513299569, "event": "bounce", "sg_event_id": "b2",
              "reason": "550 blocked by reputation", "status": "5.7.1", "type": "blocked" },
            { "email": "example@test.com", "timestamp": 1513299569, "event": "spamreport", "sg_event_id": "s1", "sg_message_id": "m1" },
            { "email": "example@test.com", "timestamp": 1513299569, "event": "dropped", "reason": "Bounced Address", "sg_event_id": "d1" },
            { "email": "not an email address", "timestamp": 1386636115, "reason": "Invalid", "event": "dropped" },
            { "email": "example@test.com", "timestamp": 1513299569, "event": "delivered", "response": "250 OK", "sg_event_id": "v1" },
            { "timestamp": 1513299569, "event": "bounce", "sg_event_id": "no-email" }
        ]);
        let p = parse(Provider::SendGrid, &serde_json::to_vec(&body).unwrap()).unwrap();
        let kinds: Vec<Kind> = p.events.iter().map(|f| f.kind).collect();
        assert_eq!(
            kinds,
            [
                Kind::HardBounce,
                Kind::SoftBounce,
                Kind::Complaint,
                Kind::HardBounce,
                Kind::HardBounce,
                Kind::Delivered
            ]
        );
        assert_eq!(p.ignored, 2);
        let b = &p.events[0];
        assert_eq!(b.key, "b1");
        assert_eq!(
            b.message_id.as_deref(),
            Some("<14c5d75ce93.dfd.64b469@ismtpd-555>")
        );
        assert_eq!(b.provider_message_id.as_deref(), Some("m1"));
        assert_eq!(b.reason, "5.0.0 — 500 unknown recipient — Invalid Address");
        // An event without an id is keyed by its content: the same event, the same key.
        assert!(p.events[4].key.starts_with("sha256:"));
        let again = parse(Provider::SendGrid, &serde_json::to_vec(&body).unwrap()).unwrap();
        assert_eq!(again.events[4].key, p.events[4].key);

        assert!(parse(Provider::SendGrid, b"{\"event\":\"bounce\"}").is_err());
        assert!(parse(Provider::SendGrid, b"[1]").is_err());
    }

    /// Postmark's documented bounce and spam complaint webhooks.
    #[test]
    fn postmark_records_map_by_type() {
        let bounce = json!({
            "RecordType": "Bounce", "ID": 42, "Type": "HardBounce", "TypeCode": 1, "Name": "Hard bounce",
            "Tag": "Test", "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
            "Description": "The server was unable to deliver your message (ex: unknown user, mailbox not found).",
            "Details": "Test bounce details", "Email": "john@example.com",
            "BouncedAt": "2014-08-01T13:28:10.2735393-04:00", "DumpAvailable": true, "Inactive": true,
            "CanActivate": true, "Subject": "Test subject", "MessageStream": "outbound"
        });
        let p = parse(Provider::Postmark, &serde_json::to_vec(&bounce).unwrap()).unwrap();
        let f = &p.events[0];
        assert_eq!(f.kind, Kind::HardBounce);
        assert_eq!(f.key, "Bounce:42");
        assert_eq!(f.email, "john@example.com");
        assert_eq!(
            f.provider_message_id.as_deref(),
            Some("883953f4-6105-42a2-a16a-77a8eac79483")
        );
        assert_eq!(
            f.occurred_at.unwrap().to_rfc3339(),
            "2014-08-01T17:28:10.273539300+00:00"
        );

        let mut spam = bounce.clone();
        spam["RecordType"] = json!("SpamComplaint");
        spam["Type"] = json!("SpamComplaint");
        spam["TypeCode"] = json!(512);
        let p = parse(Provider::Postmark, &serde_json::to_vec(&spam).unwrap()).unwrap();
        assert_eq!(p.events[0].kind, Kind::Complaint);
        assert_eq!(p.events[0].key, "SpamComplaint:42");

        let mut soft = bounce.clone();
        soft["Type"] = json!("Transient");
        let p = parse(Provider::Postmark, &serde_json::to_vec(&soft).unwrap()).unwrap();
        assert_eq!(p.events[0].kind, Kind::SoftBounce);

        let open =
            json!({ "RecordType": "Open", "MessageID": "x", "Recipient": "john@example.com" });
        let p = parse(Provider::Postmark, &serde_json::to_vec(&open).unwrap()).unwrap();
        assert_eq!((p.events.len(), p.ignored), (0, 1));
        assert!(parse(Provider::Postmark, b"[]").is_err());
    }

    #[test]
    fn message_refs_name_only_a_message_sent_to_that_subscriber() {
        let k = SigningKey::from_bytes(b"k".repeat(32));
        let r = message_ref(&k, 42, Some(7));
        assert!(r.starts_with("42.") && r.len() < 80, "{r}");
        assert_eq!(message_ref(&k, 42, Some(7)), r, "stable across attempts");
        assert_eq!(verify_message_ref(&k, &r, 7), Some(42));
        // Another subscriber, another id under the same tag, another key, junk: none.
        assert_eq!(verify_message_ref(&k, &r, 8), None);
        let (_, tag) = r.split_once('.').unwrap();
        assert_eq!(verify_message_ref(&k, &format!("43.{tag}"), 7), None);
        let other = SigningKey::from_bytes(b"o".repeat(32));
        assert_eq!(verify_message_ref(&other, &r, 7), None);
        for junk in ["", "42", "42.", "x.y", "-1.AAAA", &"9".repeat(200)] {
            assert_eq!(verify_message_ref(&k, junk, 7), None, "{junk}");
        }
        // A test send (no subscriber) matches no subscriber's report.
        assert_eq!(
            verify_message_ref(&k, &message_ref(&k, 5, None), 0),
            Some(5)
        );
    }

    #[test]
    fn echo_headers_are_each_providers_own_convention() {
        assert!(echo_headers(&[], "1.x").is_empty());
        assert!(echo_headers(&[Provider::Generic], "1.x").is_empty());
        let h = echo_headers(
            &[Provider::Postmark, Provider::Mailgun, Provider::SendGrid],
            "1.x",
        );
        assert_eq!(h[0], ("X-PM-Metadata-loopline-message", "1.x".to_string()));
        assert_eq!(h[1].0, "X-Mailgun-Variables");
        let v: Value = serde_json::from_str(&h[1].1).unwrap();
        assert_eq!(v, json!({ "loopline-message": "1.x" }));
        assert_eq!(h[2].0, "X-SMTPAPI");
        let v: Value = serde_json::from_str(&h[2].1).unwrap();
        assert_eq!(v, json!({ "unique_args": { "loopline-message": "1.x" } }));
        // SES tag values allow no `.`: the reference travels with `-` in its place.
        let h = echo_headers(&[Provider::Ses], "12.a-b_C");
        assert_eq!(
            h,
            [(
                "X-SES-MESSAGE-TAGS",
                "loopline-message=12-a-b_C".to_string()
            )]
        );
        let mut keys = keys();
        assert_eq!(keys.echoing(), [Provider::Postmark, Provider::Mailgun]);
        keys.postmark = None;
        assert_eq!(keys.echoing(), [Provider::Mailgun]);
        keys.ses = Some(SesConfig {
            topic_arns: vec!["arn:aws:sns:us-east-1:123456789012:ses".into()],
            trust: sns::SnsTrust::aws(),
        });
        assert_eq!(keys.echoing(), [Provider::Mailgun, Provider::Ses]);
    }

    #[test]
    fn echoed_references_are_read_from_each_providers_payload() {
        let pm = json!({ "RecordType": "Bounce", "ID": 1, "Type": "HardBounce", "Email": "a@example.com",
                         "MessageID": "p", "Metadata": { "Loopline-Message": " 42.abc " } });
        let p = parse(Provider::Postmark, &serde_json::to_vec(&pm).unwrap()).unwrap();
        assert_eq!(p.events[0].reference.as_deref(), Some("42.abc"));
        let mg = json!({ "signature": {}, "event-data": { "event": "complained", "id": "e", "recipient": "a@example.com",
                         "user-variables": { "loopline-message": "42.abc" } } });
        let p = parse(Provider::Mailgun, &serde_json::to_vec(&mg).unwrap()).unwrap();
        assert_eq!(p.events[0].reference.as_deref(), Some("42.abc"));
        let sg = json!([{ "event": "spamreport", "email": "a@example.com", "sg_event_id": "s", "loopline-message": "42.abc" }]);
        let p = parse(Provider::SendGrid, &serde_json::to_vec(&sg).unwrap()).unwrap();
        assert_eq!(p.events[0].reference.as_deref(), Some("42.abc"));
        // Absent, not a string, or absurdly long: no reference (the event still counts).
        for meta in [
            json!({}),
            json!({ "loopline-message": 42 }),
            json!({ "loopline-message": "x".repeat(101) }),
        ] {
            let mut pm = pm.clone();
            pm["Metadata"] = meta;
            let p = parse(Provider::Postmark, &serde_json::to_vec(&pm).unwrap()).unwrap();
            assert_eq!(p.events[0].reference, None);
        }
    }

    #[test]
    fn generic_events_are_strict() {
        let one = br#"{"id":"e1","type":"hard_bounce","email":"a@example.com","message_id":"123.abc@example.com","reason":"550 no such user","occurred_at":"2026-11-25T10:00:00Z"}"#;
        let p = parse(Provider::Generic, one).unwrap();
        assert_eq!(p.events[0].kind, Kind::HardBounce);
        assert_eq!(
            p.events[0].message_id.as_deref(),
            Some("<123.abc@example.com>")
        );
        let batch = br#"{"events":[{"id":"e1","type":"complaint","email":"a@example.com"},{"id":"e2","type":"delivered","email":"b@example.com"}]}"#;
        assert_eq!(parse(Provider::Generic, batch).unwrap().events.len(), 2);
        for bad in [
            &br#"{"type":"complaint","email":"a@example.com"}"#[..],
            br#"{"id":"e1","type":"opened","email":"a@example.com"}"#,
            br#"{"id":"e1","type":"complaint"}"#,
            br#"{"id":"e1","type":"complaint","email":"a@example.com","occurred_at":"yesterday"}"#,
            br#"[{"id":"e1","type":"complaint","email":"a@example.com"}, 7]"#,
            b"42",
            b"",
        ] {
            let e = parse(Provider::Generic, bad).unwrap_err();
            assert!(!e.is_empty());
        }
    }
}
