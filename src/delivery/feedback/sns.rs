//! Amazon SNS messages posted to an HTTP(S) subscription: what they say ([`Envelope`])
//! and whether SNS said it ([`Verifier`]).
//!
//! SNS signs a canonical string of the message's fields (AWS: "Verifying the signatures
//! of Amazon SNS messages") with the key of a certificate it publishes at
//! `SigningCertURL`: RSA with SHA-1 for `SignatureVersion` 1, SHA-256 for 2. Loopline:
//!
//! 1. takes only topics the operator listed (`SES_SNS_TOPIC_ARNS`), before fetching
//!    anything;
//! 2. takes the certificate only from `https://sns.<region>.amazonaws.com[.cn]/….pem`,
//!    fetched through the guarded [`Fetcher`] (public addresses only, TLS verified);
//! 3. checks the certificate chains to a root in webpki-roots (intermediates from the
//!    file, or fetched once from the certificate's own "CA issuers" link on an
//!    `amazontrust.com` host) and is issued to `sns.amazonaws.com`;
//! 4. checks the signature over the string to sign;
//! 5. takes a message only within [`MAX_AGE_SECS`] of its `Timestamp`.
//!
//! Verified certificates are kept in memory by URL (re-checked against the clock each
//! time), so a busy topic fetches its certificate once per process.

use std::{collections::HashMap, fmt, sync::Mutex};

use base64::{Engine, engine::general_purpose::STANDARD as B64};
use chrono::{DateTime, Utc};
use rustls::pki_types::{
    AlgorithmIdentifier, CertificateDer, InvalidSignature, ServerName,
    SignatureVerificationAlgorithm, TrustAnchor, UnixTime, alg_id,
};
use serde_json::{Map, Value};
use url::Url;

use crate::net::{FetchError, Fetcher, Options};

/// How old a message may be. SNS keeps the first attempt's `Timestamp` and signature
/// on every retry, and its HTTP delivery policy retries for at most an hour (3,600 s is
/// the ceiling AWS allows; the default policy gives up within a minute); five minutes
/// more cover clock skew. Older messages are refused. Within the window a repeat is
/// recognised by its `MessageId` receipt, which is kept far longer.
pub const MAX_AGE_SECS: i64 = 3600 + 300;
/// How far in the future a `Timestamp` may be (clock skew).
pub const MAX_AHEAD_SECS: i64 = 300;
/// The name AWS issues SNS signing certificates to.
pub const SNS_CERT_NAME: &str = "sns.amazonaws.com";
const MAX_CERT_BYTES: usize = 64 * 1024;
const MAX_CACHED: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    SubscriptionConfirmation,
    Notification,
    UnsubscribeConfirmation,
}

impl MessageType {
    pub fn as_str(self) -> &'static str {
        match self {
            MessageType::SubscriptionConfirmation => "SubscriptionConfirmation",
            MessageType::Notification => "Notification",
            MessageType::UnsubscribeConfirmation => "UnsubscribeConfirmation",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureVersion {
    /// SHA1withRSA.
    V1,
    /// SHA256withRSA.
    V2,
}

/// An SNS message as posted, its fields exactly as signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub kind: MessageType,
    pub message_id: String,
    pub topic_arn: String,
    pub message: String,
    /// Notifications only, and only when the publisher gave one.
    pub subject: Option<String>,
    /// As sent (it is part of the signed string).
    pub timestamp: String,
    pub time: DateTime<Utc>,
    pub signature_version: SignatureVersion,
    pub signature: Vec<u8>,
    pub signing_cert_url: String,
    /// (Un)subscribe confirmations only.
    pub subscribe_url: Option<String>,
    pub token: Option<String>,
}

fn field(o: &Map<String, Value>, key: &str) -> Result<Option<String>, String> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("`{key}` must be a string")),
    }
}

fn required(o: &Map<String, Value>, key: &str) -> Result<String, String> {
    field(o, key)?.ok_or_else(|| format!("`{key}` is required"))
}

impl Envelope {
    /// Reads an SNS POST body (JSON, whatever the `Content-Type` said). An error is a
    /// message for a 400 answer.
    pub fn parse(body: &[u8]) -> Result<Self, String> {
        let doc: Value =
            serde_json::from_slice(body).map_err(|e| format!("the body is not valid JSON: {e}"))?;
        let o = doc
            .as_object()
            .ok_or("the body must be an SNS message (a JSON object)")?;
        let kind = match required(o, "Type")?.as_str() {
            "SubscriptionConfirmation" => MessageType::SubscriptionConfirmation,
            "Notification" => MessageType::Notification,
            "UnsubscribeConfirmation" => MessageType::UnsubscribeConfirmation,
            other => return Err(format!("`Type` {other:?} is not an SNS message type")),
        };
        let signature_version = match required(o, "SignatureVersion")?.as_str() {
            "1" => SignatureVersion::V1,
            "2" => SignatureVersion::V2,
            other => return Err(format!("`SignatureVersion` {other:?} is not 1 or 2")),
        };
        let signature = B64
            .decode(required(o, "Signature")?.trim().as_bytes())
            .map_err(|_| "`Signature` is not base64".to_string())?;
        let timestamp = required(o, "Timestamp")?;
        let time = DateTime::parse_from_rfc3339(&timestamp)
            .map_err(|_| "`Timestamp` is not an ISO 8601 time".to_string())?
            .with_timezone(&Utc);
        let confirmation = kind != MessageType::Notification;
        let (subscribe_url, token) = if confirmation {
            (
                Some(required(o, "SubscribeURL")?),
                Some(required(o, "Token")?),
            )
        } else {
            (None, None)
        };
        let message_id = required(o, "MessageId")?;
        if message_id.is_empty() || message_id.len() > 200 {
            return Err("`MessageId` must be 1 to 200 characters".into());
        }
        Ok(Self {
            kind,
            message_id,
            topic_arn: required(o, "TopicArn")?,
            message: required(o, "Message")?,
            subject: if confirmation {
                None
            } else {
                field(o, "Subject")?
            },
            timestamp,
            time,
            signature_version,
            signature,
            signing_cert_url: required(o, "SigningCertURL")?,
            subscribe_url,
            token,
        })
    }

    /// The canonical string SNS signs: `name\nvalue\n` for each field in byte order of
    /// the names — for a notification Message, MessageId, Subject (when present),
    /// Timestamp, TopicArn, Type; for (un)subscribe confirmations Message, MessageId,
    /// SubscribeURL, Timestamp, Token, TopicArn, Type.
    pub fn string_to_sign(&self) -> String {
        let mut pairs: Vec<(&str, &str)> =
            vec![("Message", &self.message), ("MessageId", &self.message_id)];
        match self.kind {
            MessageType::Notification => {
                if let Some(s) = &self.subject {
                    pairs.push(("Subject", s));
                }
                pairs.push(("Timestamp", &self.timestamp));
            }
            _ => {
                pairs.push(("SubscribeURL", self.subscribe_url.as_deref().unwrap_or("")));
                pairs.push(("Timestamp", &self.timestamp));
                pairs.push(("Token", self.token.as_deref().unwrap_or("")));
            }
        }
        pairs.push(("TopicArn", &self.topic_arn));
        pairs.push(("Type", self.kind.as_str()));
        let mut out = String::new();
        for (k, v) in pairs {
            out.push_str(k);
            out.push('\n');
            out.push_str(v);
            out.push('\n');
        }
        out
    }
}

/// Which hosts SNS links may point at.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Hosts {
    /// `sns.<region>.amazonaws.com[.cn]` for certificates and subscription links, an
    /// `amazontrust.com` host for issuer certificates.
    Aws,
    /// One host (and port) for everything: tests serving from this machine.
    Only(String),
}

/// Where SNS certificates and links may come from and how they are fetched.
#[derive(Debug, Clone)]
pub struct SnsTrust {
    fetcher: Fetcher,
    hosts: Hosts,
}

impl Default for SnsTrust {
    fn default() -> Self {
        Self::aws()
    }
}

impl SnsTrust {
    /// Production: AWS's hosts, Mozilla's roots, public addresses only.
    pub fn aws() -> Self {
        Self {
            fetcher: Fetcher::new(),
            hosts: Hosts::Aws,
        }
    }

    /// Tests: every SNS link must be on `host` (e.g. `localhost:4443`), fetched with
    /// `fetcher` (the test's CA among its roots, which also anchor the signing
    /// certificate's chain). No configuration variable leads here.
    pub fn for_tests(fetcher: Fetcher, host: &str) -> Self {
        Self {
            fetcher,
            hosts: Hosts::Only(host.to_ascii_lowercase()),
        }
    }

    fn authority(url: &Url) -> String {
        match url.port() {
            Some(p) => format!("{}:{p}", url.host_str().unwrap_or("")),
            None => url.host_str().unwrap_or("").to_string(),
        }
        .to_ascii_lowercase()
    }

    /// An https URL on an SNS host, with no credentials.
    fn sns_url(&self, raw: &str, what: &'static str) -> Result<Url, Rejection> {
        let bad = || {
            Rejection::Unauthorized(format!(
                "{what} is not an https URL on an SNS host (sns.<region>.amazonaws.com)"
            ))
        };
        let url = Url::parse(raw).map_err(|_| bad())?;
        if url.scheme() != "https" || !url.username().is_empty() || url.password().is_some() {
            return Err(bad());
        }
        let ok = match &self.hosts {
            Hosts::Aws => url.port().is_none() && url.host_str().is_some_and(is_sns_host),
            Hosts::Only(h) => Self::authority(&url) == *h,
        };
        if ok { Ok(url) } else { Err(bad()) }
    }

    /// Issuer certificates ("CA issuers" links) may come over http: they are checked
    /// against the roots like any intermediate.
    fn issuer_url_allowed(&self, url: &Url) -> bool {
        if !matches!(url.scheme(), "http" | "https") || !url.username().is_empty() {
            return false;
        }
        match &self.hosts {
            Hosts::Aws => {
                url.port().is_none()
                    && url.host_str().is_some_and(|h| {
                        let h = h.to_ascii_lowercase();
                        h == "amazontrust.com" || h.ends_with(".amazontrust.com")
                    })
            }
            Hosts::Only(h) => Self::authority(url) == *h,
        }
    }
}

/// `sns.<region>.amazonaws.com` or `sns.<region>.amazonaws.com.cn`, the region one
/// label of letters, digits and inner hyphens.
pub fn is_sns_host(host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    let Some(rest) = host.strip_prefix("sns.") else {
        return false;
    };
    let region = rest
        .strip_suffix(".amazonaws.com")
        .or_else(|| rest.strip_suffix(".amazonaws.com.cn"));
    region.is_some_and(|r| {
        !r.is_empty()
            && r.len() <= 40
            && r.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !r.starts_with('-')
            && !r.ends_with('-')
    })
}

/// `arn:<partition>:sns:<region>:<12-digit account>:<topic>`.
pub fn is_topic_arn(arn: &str) -> bool {
    let parts: Vec<&str> = arn.split(':').collect();
    let [arn_, partition, service, region, account, topic] = parts[..] else {
        return false;
    };
    arn_ == "arn"
        && partition.starts_with("aws")
        && service == "sns"
        && !region.is_empty()
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && account.len() == 12
        && account.bytes().all(|b| b.is_ascii_digit())
        && (1..=256).contains(&topic.len())
        && topic
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// Why an SNS message was turned away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// Not an SNS message (400).
    Malformed(String),
    /// A topic not in `SES_SNS_TOPIC_ARNS` (403).
    Forbidden(String),
    /// A bad or stale signature, or a certificate that is not SNS's (401).
    Unauthorized(String),
    /// SNS's certificate or confirmation link could not be reached now (503, so SNS
    /// retries).
    Unavailable(String),
}

/// SNS's signature algorithms, verified with ring over the certificate's RSA key.
struct SnsRsa(&'static ring::signature::RsaParameters);

impl fmt::Debug for SnsRsa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SnsRsa")
    }
}

impl SignatureVerificationAlgorithm for SnsRsa {
    fn verify_signature(
        &self,
        public_key: &[u8],
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), InvalidSignature> {
        ring::signature::UnparsedPublicKey::new(self.0, public_key)
            .verify(message, signature)
            .map_err(|_| InvalidSignature)
    }

    fn public_key_alg_id(&self) -> AlgorithmIdentifier {
        alg_id::RSA_ENCRYPTION
    }

    /// Not consulted for a message signature (only the key's algorithm is).
    fn signature_alg_id(&self) -> AlgorithmIdentifier {
        alg_id::RSA_PKCS1_SHA256
    }

    fn fips(&self) -> bool {
        false
    }
}

static SHA1_RSA: SnsRsa = SnsRsa(&ring::signature::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY);
static SHA256_RSA: SnsRsa = SnsRsa(&ring::signature::RSA_PKCS1_2048_8192_SHA256);

/// A signing certificate that chained to a root once, and the intermediates it took.
#[derive(Debug, Clone)]
struct Chain {
    leaf: CertificateDer<'static>,
    intermediates: Vec<CertificateDer<'static>>,
}

/// Checks SNS messages; one per process, shared by all requests.
pub struct Verifier {
    trust: SnsTrust,
    anchors: Vec<TrustAnchor<'static>>,
    cache: Mutex<HashMap<String, Chain>>,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("trust", &self.trust)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    pub fn new(trust: SnsTrust) -> Self {
        let mut anchors: Vec<TrustAnchor<'static>> = webpki_roots::TLS_SERVER_ROOTS.to_vec();
        for der in trust.fetcher.extra_roots() {
            match webpki::anchor_from_trusted_cert(der) {
                Ok(a) => anchors.push(a.to_owned()),
                Err(e) => {
                    tracing::warn!(error = %e, "an extra root certificate is not usable as an anchor")
                }
            }
        }
        Self {
            trust,
            anchors,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Timestamp window and signature. The caller has already checked the topic.
    pub async fn verify(&self, env: &Envelope, now: DateTime<Utc>) -> Result<(), Rejection> {
        let age = (now - env.time).num_seconds();
        if age > MAX_AGE_SECS {
            return Err(Rejection::Unauthorized(format!(
                "the message is older than {} minutes (Timestamp {})",
                MAX_AGE_SECS / 60,
                env.timestamp
            )));
        }
        if -age > MAX_AHEAD_SECS {
            return Err(Rejection::Unauthorized(
                "the message Timestamp is more than 5 minutes ahead of our clock".into(),
            ));
        }
        let url = self
            .trust
            .sns_url(&env.signing_cert_url, "SigningCertURL")?;
        if !url.path().ends_with(".pem") || url.query().is_some() {
            return Err(Rejection::Unauthorized(
                "SigningCertURL must name a .pem file".into(),
            ));
        }
        let chain = self.chain(url.as_str(), now).await?;
        let leaf = webpki::EndEntityCert::try_from(&chain.leaf).map_err(|e| {
            Rejection::Unauthorized(format!("the signing certificate cannot be read: {e}"))
        })?;
        let alg: &dyn SignatureVerificationAlgorithm = match env.signature_version {
            SignatureVersion::V1 => &SHA1_RSA,
            SignatureVersion::V2 => &SHA256_RSA,
        };
        leaf.verify_signature(alg, env.string_to_sign().as_bytes(), &env.signature)
            .map_err(|_| Rejection::Unauthorized("the signature does not match".into()))
    }

    /// Visits `SubscribeURL` (which must be on an SNS host and confirm this topic), as
    /// SNS asks of a new subscriber. Call only for a verified confirmation message.
    pub async fn confirm_subscription(&self, env: &Envelope) -> Result<(), Rejection> {
        let raw = env.subscribe_url.as_deref().unwrap_or("");
        let url = self.trust.sns_url(raw, "SubscribeURL")?;
        let query: HashMap<String, String> = url.query_pairs().into_owned().collect();
        if query.get("Action").map(String::as_str) != Some("ConfirmSubscription")
            || query.get("TopicArn").is_some_and(|t| *t != env.topic_arn)
        {
            return Err(Rejection::Unauthorized(
                "SubscribeURL does not confirm a subscription to this topic".into(),
            ));
        }
        self.trust
            .fetcher
            .get_with(
                url.as_str(),
                Options {
                    max_bytes: Some(MAX_CERT_BYTES),
                    ..Options::default()
                },
            )
            .await
            .map(|_| ())
            .map_err(|e| fetch_rejection("confirming the subscription", &e))
    }

    /// The certificate at `url`, its chain checked at `now` and its name SNS's.
    async fn chain(&self, url: &str, now: DateTime<Utc>) -> Result<Chain, Rejection> {
        let cached = self.lock().get(url).cloned();
        if let Some(chain) = cached {
            // Checked again: the clock moves, and a certificate expires.
            if self.check(&chain, now).is_ok() {
                return Ok(chain);
            }
            self.lock().remove(url);
        }
        let pem = self
            .trust
            .fetcher
            .get_with(
                url,
                Options {
                    max_bytes: Some(MAX_CERT_BYTES),
                    ..Options::default()
                },
            )
            .await
            .map_err(|e| fetch_rejection("fetching the signing certificate", &e))?;
        let mut certs = pem_certificates(&pem).into_iter();
        let leaf = certs.next().ok_or_else(|| {
            Rejection::Unauthorized("SigningCertURL holds no PEM certificate".into())
        })?;
        let mut chain = Chain {
            leaf,
            intermediates: certs.collect(),
        };
        match self.check(&chain, now) {
            Ok(()) => {}
            // The usual case for SNS: the file holds the leaf alone. Its issuer comes
            // from the leaf's own "CA issuers" link, and is checked like any other.
            Err(CheckError::UnknownIssuer) => {
                let issuers = ca_issuer_urls(&chain.leaf);
                let Some(issuer_url) = issuers
                    .iter()
                    .filter_map(|u| Url::parse(u).ok())
                    .find(|u| self.trust.issuer_url_allowed(u))
                else {
                    return Err(Rejection::Unauthorized(
                        "the signing certificate does not chain to a trusted root".into(),
                    ));
                };
                let body = self
                    .trust
                    .fetcher
                    .get_with(
                        issuer_url.as_str(),
                        Options {
                            allow_http: true,
                            max_bytes: Some(MAX_CERT_BYTES),
                        },
                    )
                    .await
                    .map_err(|e| fetch_rejection("fetching the certificate's issuer", &e))?;
                let issuer = match pem_certificates(&body) {
                    v if !v.is_empty() => v,
                    _ => vec![CertificateDer::from(body)],
                };
                chain.intermediates.extend(issuer);
                self.check(&chain, now).map_err(CheckError::rejection)?;
            }
            Err(e) => return Err(e.rejection()),
        }
        let mut cache = self.lock();
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        cache.insert(url.to_string(), chain.clone());
        Ok(chain)
    }

    fn check(&self, chain: &Chain, now: DateTime<Utc>) -> Result<(), CheckError> {
        let leaf = webpki::EndEntityCert::try_from(&chain.leaf).map_err(|e| {
            CheckError::Other(format!("the signing certificate cannot be read: {e}"))
        })?;
        let time = UnixTime::since_unix_epoch(std::time::Duration::from_secs(
            now.timestamp().max(0) as u64,
        ));
        leaf.verify_for_usage(
            webpki::ALL_VERIFICATION_ALGS,
            &self.anchors,
            &chain.intermediates,
            time,
            webpki::KeyUsage::server_auth(),
            None,
            None,
        )
        .map_err(|e| match e {
            webpki::Error::UnknownIssuer => CheckError::UnknownIssuer,
            other => CheckError::Other(format!("the signing certificate is not valid: {other}")),
        })?;
        let name = ServerName::try_from(SNS_CERT_NAME).expect("a valid DNS name");
        leaf.verify_is_valid_for_subject_name(&name).map_err(|_| {
            CheckError::Other(format!(
                "the signing certificate is not issued to {SNS_CERT_NAME}"
            ))
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Chain>> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }
}

enum CheckError {
    UnknownIssuer,
    Other(String),
}

impl CheckError {
    fn rejection(self) -> Rejection {
        match self {
            CheckError::UnknownIssuer => Rejection::Unauthorized(
                "the signing certificate does not chain to a trusted root".into(),
            ),
            CheckError::Other(m) => Rejection::Unauthorized(m),
        }
    }
}

/// A network failure is worth SNS's retry (503); anything else about the URL or the
/// answer is the sender's fault (401).
fn fetch_rejection(doing: &str, e: &FetchError) -> Rejection {
    tracing::warn!(error = %e, "SNS: {doing} failed");
    if e.is_transient() {
        Rejection::Unavailable(format!("{doing} failed for now: {e}"))
    } else {
        Rejection::Unauthorized(format!("{doing} failed: {e}"))
    }
}

/// The certificates in a PEM file, in order.
fn pem_certificates(pem: &[u8]) -> Vec<CertificateDer<'static>> {
    let Ok(text) = std::str::from_utf8(pem) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let line = line.trim();
        if line == "-----BEGIN CERTIFICATE-----" {
            current = Some(String::new());
        } else if line == "-----END CERTIFICATE-----" {
            if let Some(b64) = current.take()
                && let Ok(der) = B64.decode(b64.as_bytes())
            {
                out.push(CertificateDer::from(der));
            }
        } else if let Some(b64) = current.as_mut() {
            b64.push_str(line);
        }
    }
    out
}

/// One DER element: tag, contents, and what follows it.
fn der(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | *b as usize);
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

fn der_elements(mut input: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    std::iter::from_fn(move || {
        let (tag, contents, rest) = der(input)?;
        input = rest;
        Some((tag, contents))
    })
}

/// id-pe-authorityInfoAccess (1.3.6.1.5.5.7.1.1).
const OID_AIA: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x01, 0x01];
/// id-ad-caIssuers (1.3.6.1.5.5.7.48.2).
const OID_CA_ISSUERS: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x02];

/// The "CA issuers" URLs of a certificate's Authority Information Access extension.
fn ca_issuer_urls(cert: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    let Some((0x30, cert, _)) = der(cert) else {
        return out;
    };
    let Some((0x30, tbs, _)) = der(cert) else {
        return out;
    };
    let Some((_, extensions)) = der_elements(tbs).find(|(tag, _)| *tag == 0xa3) else {
        return out;
    };
    let Some((0x30, extensions, _)) = der(extensions) else {
        return out;
    };
    for (_, ext) in der_elements(extensions).filter(|(tag, _)| *tag == 0x30) {
        let mut parts = der_elements(ext);
        if parts.next() != Some((0x06, OID_AIA)) {
            continue;
        }
        let Some((_, value)) = parts.find(|(tag, _)| *tag == 0x04) else {
            continue;
        };
        let Some((0x30, descriptions, _)) = der(value) else {
            continue;
        };
        for (_, description) in der_elements(descriptions) {
            let mut d = der_elements(description);
            if d.next() == Some((0x06, OID_CA_ISSUERS))
                && let Some((0x86, uri)) = d.next()
                && let Ok(uri) = std::str::from_utf8(uri)
            {
                out.push(uri.to_string());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn notification() -> Value {
        json!({
            "Type": "Notification",
            "MessageId": "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
            "TopicArn": "arn:aws:sns:us-west-2:123456789012:MyTopic",
            "Subject": "My First Message",
            "Message": "Hello world!",
            "Timestamp": "2012-05-02T00:54:06.655Z",
            "SignatureVersion": "1",
            "Signature": "EXAMPLEw6JRNwm1LFQL4ICB0bnXrdB8ClRMTQFGBqwLpGbM78tJ4etTwC5zU7O3tS6tGpey3ejedNdOJ+1fkIp9F2/LmNVKb5aFlYq+9rk9ZiPph5YlLmWsDcyC5T+Sy9/umic5S0UQc2PEtgdpVBahwNOdMW4JPwk0kAJJztnc=",
            "SigningCertURL": "https://sns.us-west-2.amazonaws.com/SimpleNotificationService-f3ecfb7224c7233fe7bb5f59f96de52f.pem",
            "UnsubscribeURL": "https://sns.us-west-2.amazonaws.com/?Action=Unsubscribe&SubscriptionArn=arn:aws:sns:us-west-2:123456789012:MyTopic:c9135db0-26c4-47ec-8998-413945fb5a96"
        })
    }

    /// The documented notification example: its fields in the documented order.
    #[test]
    fn notifications_sign_their_fields_in_order_with_subject_only_when_present() {
        let env = Envelope::parse(&serde_json::to_vec(&notification()).unwrap()).unwrap();
        assert_eq!(env.kind, MessageType::Notification);
        assert_eq!(env.signature_version, SignatureVersion::V1);
        assert_eq!(
            env.string_to_sign(),
            "Message\nHello world!\nMessageId\n22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324\n\
             Subject\nMy First Message\nTimestamp\n2012-05-02T00:54:06.655Z\n\
             TopicArn\narn:aws:sns:us-west-2:123456789012:MyTopic\nType\nNotification\n"
        );
        for subject in [None, Some(Value::Null)] {
            let mut n = notification();
            match &subject {
                None => {
                    n.as_object_mut().unwrap().remove("Subject");
                }
                Some(v) => n["Subject"] = v.clone(),
            }
            n["SignatureVersion"] = json!("2");
            let env = Envelope::parse(&serde_json::to_vec(&n).unwrap()).unwrap();
            assert_eq!(env.signature_version, SignatureVersion::V2);
            assert!(!env.string_to_sign().contains("Subject"));
            assert!(
                env.string_to_sign()
                    .starts_with("Message\nHello world!\nMessageId\n")
            );
        }
        // A JSON-escaped Message is signed in its decoded form.
        let mut n = notification();
        n["Message"] = json!("{\"a\":\"line\\nbreak\"}");
        let env = Envelope::parse(&serde_json::to_vec(&n).unwrap()).unwrap();
        assert!(
            env.string_to_sign()
                .starts_with("Message\n{\"a\":\"line\\nbreak\"}\nMessageId")
        );
    }

    #[test]
    fn confirmations_sign_subscribe_url_and_token() {
        let body = json!({
            "Type": "SubscriptionConfirmation",
            "MessageId": "165545c9-2a5c-472c-8df2-7ff2be2b3b1b",
            "Token": "2336412f37",
            "TopicArn": "arn:aws:sns:us-west-2:123456789012:MyTopic",
            "Message": "You have chosen to subscribe to the topic arn:aws:sns:us-west-2:123456789012:MyTopic.\nTo confirm the subscription, visit the SubscribeURL included in this message.",
            "SubscribeURL": "https://sns.us-west-2.amazonaws.com/?Action=ConfirmSubscription&TopicArn=arn:aws:sns:us-west-2:123456789012:MyTopic&Token=2336412f37",
            "Timestamp": "2012-04-26T20:45:04.751Z",
            "SignatureVersion": "1",
            "Signature": "AAAA",
            "SigningCertURL": "https://sns.us-west-2.amazonaws.com/SimpleNotificationService-f3ecfb7224c7233fe7bb5f59f96de52f.pem"
        });
        let env = Envelope::parse(&serde_json::to_vec(&body).unwrap()).unwrap();
        assert_eq!(env.kind, MessageType::SubscriptionConfirmation);
        assert_eq!(
            env.string_to_sign(),
            "Message\nYou have chosen to subscribe to the topic arn:aws:sns:us-west-2:123456789012:MyTopic.\n\
             To confirm the subscription, visit the SubscribeURL included in this message.\n\
             MessageId\n165545c9-2a5c-472c-8df2-7ff2be2b3b1b\n\
             SubscribeURL\nhttps://sns.us-west-2.amazonaws.com/?Action=ConfirmSubscription&TopicArn=arn:aws:sns:us-west-2:123456789012:MyTopic&Token=2336412f37\n\
             Timestamp\n2012-04-26T20:45:04.751Z\nToken\n2336412f37\n\
             TopicArn\narn:aws:sns:us-west-2:123456789012:MyTopic\nType\nSubscriptionConfirmation\n"
        );
        let mut unsub = body.clone();
        unsub["Type"] = json!("UnsubscribeConfirmation");
        let env = Envelope::parse(&serde_json::to_vec(&unsub).unwrap()).unwrap();
        assert!(
            env.string_to_sign()
                .ends_with("Type\nUnsubscribeConfirmation\n")
        );
        // A confirmation without its token or link is not one.
        let mut no_token = body.clone();
        no_token.as_object_mut().unwrap().remove("Token");
        assert!(Envelope::parse(&serde_json::to_vec(&no_token).unwrap()).is_err());
    }

    #[test]
    fn malformed_envelopes_are_refused_with_a_reason() {
        for (key, value) in [
            ("Type", json!("Surprise")),
            ("SignatureVersion", json!("3")),
            ("SignatureVersion", json!(1)),
            ("Signature", json!("not base64!")),
            ("Timestamp", json!("yesterday")),
            ("MessageId", json!("")),
            ("TopicArn", Value::Null),
            ("Message", json!(42)),
        ] {
            let mut n = notification();
            n[key] = value.clone();
            let e = Envelope::parse(&serde_json::to_vec(&n).unwrap()).unwrap_err();
            assert!(!e.is_empty(), "{key}={value}");
        }
        assert!(Envelope::parse(b"[]").is_err());
        assert!(Envelope::parse(b"{").is_err());
    }

    #[test]
    fn sns_hosts_are_regional_amazonaws_hosts_only() {
        for ok in [
            "sns.us-east-1.amazonaws.com",
            "SNS.eu-west-3.amazonaws.com",
            "sns.cn-north-1.amazonaws.com.cn",
            "sns.us-gov-west-1.amazonaws.com",
        ] {
            assert!(is_sns_host(ok), "{ok}");
        }
        for bad in [
            "sns.amazonaws.com",
            "sns..amazonaws.com",
            "sns.us-east-1.amazonaws.com.evil.com",
            "sns.evil.com",
            "evil.sns.us-east-1.amazonaws.com",
            "sns.us-east-1.evil.amazonaws.com",
            "sns.-x.amazonaws.com",
            "sqs.us-east-1.amazonaws.com",
            "sns.us_east.amazonaws.com",
        ] {
            assert!(!is_sns_host(bad), "{bad}");
        }
        let trust = SnsTrust::aws();
        assert!(
            trust
                .sns_url("https://sns.us-east-1.amazonaws.com/x.pem", "u")
                .is_ok()
        );
        for bad in [
            "http://sns.us-east-1.amazonaws.com/x.pem",
            "https://sns.us-east-1.amazonaws.com:8443/x.pem",
            "https://a:b@sns.us-east-1.amazonaws.com/x.pem",
            "https://sns.us-east-1.amazonaws.com.evil.com/x.pem",
            "https://169.254.169.254/x.pem",
            "//sns.us-east-1.amazonaws.com/x.pem",
        ] {
            assert!(
                matches!(trust.sns_url(bad, "u"), Err(Rejection::Unauthorized(_))),
                "{bad}"
            );
        }
        let issuer = |u: &str| trust.issuer_url_allowed(&Url::parse(u).unwrap());
        assert!(issuer("http://crt.r2m02.amazontrust.com/r2m02.cer"));
        assert!(!issuer("http://crt.evil.com/amazontrust.com.cer"));
        assert!(!issuer("ftp://crt.r2m02.amazontrust.com/r2m02.cer"));
        assert!(!issuer("http://crt.r2m02.amazontrust.com:81/r2m02.cer"));
    }

    #[test]
    fn topic_arns_have_the_sns_shape() {
        for ok in [
            "arn:aws:sns:us-east-1:123456789012:ses-feedback",
            "arn:aws-cn:sns:cn-north-1:123456789012:t",
            "arn:aws:sns:eu-west-1:123456789012:orders.fifo",
        ] {
            assert!(is_topic_arn(ok), "{ok}");
        }
        for bad in [
            "",
            "arn:aws:sqs:us-east-1:123456789012:q",
            "arn:aws:sns:us-east-1:1234:t",
            "arn:aws:sns:us-east-1:123456789012:",
            "arn:aws:sns:us-east-1:123456789012:a:b",
            "arn:aws:sns::123456789012:t",
            "arn:aws:sns:us-east-1:123456789012:t t",
        ] {
            assert!(!is_topic_arn(bad), "{bad}");
        }
    }

    #[test]
    fn pem_files_yield_their_certificates_in_order() {
        let pem = "junk\n-----BEGIN CERTIFICATE-----\nAQID\nBA==\n-----END CERTIFICATE-----\n\
                   -----BEGIN CERTIFICATE-----\nBQY=\n-----END CERTIFICATE-----\n";
        let certs = pem_certificates(pem.as_bytes());
        assert_eq!(certs.len(), 2);
        assert_eq!(certs[0].as_ref(), &[1, 2, 3, 4]);
        assert_eq!(certs[1].as_ref(), &[5, 6]);
        assert!(pem_certificates(b"\xff\xfe").is_empty());
    }

    #[test]
    fn der_reader_handles_long_lengths_and_refuses_truncation() {
        let mut long = vec![0x04, 0x82, 0x01, 0x00];
        long.extend(std::iter::repeat_n(7u8, 256));
        long.push(0x05);
        let (tag, contents, rest) = der(&long).unwrap();
        assert_eq!((tag, contents.len(), rest), (0x04, 256, &[0x05][..]));
        assert!(der(&[0x04, 0x82, 0x01]).is_none());
        assert!(der(&[0x04, 0x05, 1, 2]).is_none());
        assert!(der(&[0x04, 0x80]).is_none());
        assert!(ca_issuer_urls(b"not a certificate").is_empty());
    }
}
