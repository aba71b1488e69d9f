//! DKIM signing (RFC 6376, relaxed/relaxed; RFC 8463 for Ed25519) of the finished
//! message bytes, with `ring` doing the cryptography.
//!
//! Signing happens on the bytes that go on the wire, after lettre has formatted the
//! message, so what is signed is exactly what is sent (and what the capture store keeps).
//! The headers that one-click unsubscribe depends on (`List-Unsubscribe`,
//! `List-Unsubscribe-Post`) are covered, as Gmail and Yahoo require; `From`, `To` and
//! `Subject` are over-signed so a relay cannot add a second one.

use base64::{Engine, engine::general_purpose::STANDARD as B64};
use ring::{
    rand::SystemRandom,
    signature::{self, Ed25519KeyPair, KeyPair, RsaKeyPair},
};
use sha2::{Digest, Sha256};

/// Headers signed when present, in this order.
const SIGNED: &[&str] = &[
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "MIME-Version",
    "Content-Type",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "Feedback-ID",
    "Reply-To",
];
/// Listed once more than they occur, so an added copy breaks the signature.
const OVERSIGNED: &[&str] = &["From", "To", "Subject"];

enum Key {
    Rsa(RsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

/// A configured signing identity: `d=` domain, `s=` selector and the private key.
pub struct DkimSigner {
    domain: String,
    selector: String,
    key: Key,
    rng: SystemRandom,
}

impl std::fmt::Debug for DkimSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DkimSigner")
            .field("domain", &self.domain)
            .field("selector", &self.selector)
            .field("algorithm", &self.algorithm())
            .finish_non_exhaustive()
    }
}

impl DkimSigner {
    /// Reads a PEM private key: RSA as PKCS#1 (`BEGIN RSA PRIVATE KEY`, what
    /// `openssl genrsa` writes) or PKCS#8 (`BEGIN PRIVATE KEY`, RSA or Ed25519).
    pub fn from_pem(domain: &str, selector: &str, pem: &str) -> Result<Self, String> {
        let domain = domain.trim().trim_end_matches('.').to_ascii_lowercase();
        let selector = selector.trim().to_ascii_lowercase();
        let label_ok = |s: &str| {
            !s.is_empty()
                && s.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && l.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                })
        };
        if !label_ok(&domain) {
            return Err(format!("{domain:?} is not a domain name"));
        }
        if !label_ok(&selector) {
            return Err(format!("{selector:?} is not a DKIM selector"));
        }
        let (label, der) = pem_block(pem).ok_or("not a PEM private key")?;
        let key = match label.as_str() {
            "RSA PRIVATE KEY" => {
                Key::Rsa(RsaKeyPair::from_der(&der).map_err(|e| format!("RSA key refused: {e}"))?)
            }
            "PRIVATE KEY" => match RsaKeyPair::from_pkcs8(&der) {
                Ok(k) => Key::Rsa(k),
                Err(_) => Key::Ed25519(
                    Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der)
                        .map_err(|e| format!("neither an RSA nor an Ed25519 key: {e}"))?,
                ),
            },
            other => return Err(format!("unsupported PEM block {other:?}")),
        };
        if let Key::Rsa(k) = &key
            && k.public().modulus_len() < 128
        {
            return Err("RSA keys shorter than 1024 bits are refused by receivers".into());
        }
        Ok(Self {
            domain,
            selector,
            key,
            rng: SystemRandom::new(),
        })
    }

    pub fn algorithm(&self) -> &'static str {
        match self.key {
            Key::Rsa(_) => "rsa-sha256",
            Key::Ed25519(_) => "ed25519-sha256",
        }
    }

    /// Where the public key must be published.
    pub fn dns_name(&self) -> String {
        format!("{}._domainkey.{}", self.selector, self.domain)
    }

    /// The TXT record to publish at [`Self::dns_name`].
    pub fn dns_record(&self) -> String {
        match &self.key {
            Key::Rsa(k) => format!(
                "v=DKIM1; k=rsa; p={}",
                B64.encode(rsa_spki(k.public().as_ref()))
            ),
            Key::Ed25519(k) => format!(
                "v=DKIM1; k=ed25519; p={}",
                B64.encode(k.public_key().as_ref())
            ),
        }
    }

    /// Returns `raw` with a `DKIM-Signature` header prepended. `now` is the Unix time
    /// written as `t=`.
    pub fn sign(&self, raw: &[u8], now: i64) -> Result<Vec<u8>, String> {
        let split = find(raw, b"\r\n\r\n").ok_or("message has no header/body separator")?;
        let (head, body) = (&raw[..split + 2], &raw[split + 4..]);
        let headers = parse_headers(head);

        let bh = B64.encode(Sha256::digest(canonical_body(body)));
        let mut names: Vec<&str> = Vec::new();
        for name in SIGNED {
            let count = headers
                .iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                .count();
            let extra = usize::from(OVERSIGNED.contains(name));
            names.extend(std::iter::repeat_n(*name, count + extra));
        }
        if !names.contains(&"From") || !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("From"))
        {
            return Err("message has no From header".into());
        }

        // Per RFC 6376 5.4.2: repeated names take instances from the bottom up.
        let mut data = Vec::with_capacity(1024);
        let mut used: Vec<usize> = Vec::new();
        for name in &names {
            let instance = headers
                .iter()
                .enumerate()
                .rev()
                .find(|(i, (n, _))| n.eq_ignore_ascii_case(name) && !used.contains(i));
            if let Some((i, (n, v))) = instance {
                used.push(i);
                data.extend_from_slice(canonical_header(n, v).as_bytes());
            }
        }
        let h = names
            .iter()
            .map(|n| n.to_ascii_lowercase())
            .collect::<Vec<_>>()
            .join(":");
        let unsigned = format!(
            "v=1; a={}; c=relaxed/relaxed; d={}; s={};\r\n\tt={}; h={};\r\n\tbh={};\r\n\tb=",
            self.algorithm(),
            self.domain,
            self.selector,
            now,
            h,
            bh
        );
        let canon = canonical_header("DKIM-Signature", &unsigned);
        data.extend_from_slice(canon.trim_end_matches("\r\n").as_bytes());

        let signature = match &self.key {
            Key::Rsa(k) => {
                let mut sig = vec![0; k.public().modulus_len()];
                k.sign(&signature::RSA_PKCS1_SHA256, &self.rng, &data, &mut sig)
                    .map_err(|_| "RSA signing failed")?;
                sig
            }
            Key::Ed25519(k) => k.sign(&Sha256::digest(&data)).as_ref().to_vec(),
        };
        let b = B64.encode(signature);
        let mut out = Vec::with_capacity(raw.len() + unsigned.len() + b.len() + 64);
        out.extend_from_slice(b"DKIM-Signature: ");
        out.extend_from_slice(unsigned.as_bytes());
        for (i, chunk) in b.as_bytes().chunks(72).enumerate() {
            if i > 0 {
                out.extend_from_slice(b"\r\n\t ");
            }
            out.extend_from_slice(chunk);
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(raw);
        Ok(out)
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The first PEM block's label and decoded contents.
fn pem_block(pem: &str) -> Option<(String, Vec<u8>)> {
    let start = pem.find("-----BEGIN ")?;
    let rest = &pem[start + 11..];
    let label_end = rest.find("-----")?;
    let label = rest[..label_end].to_string();
    let body = &rest[label_end + 5..];
    let end = body.find(&format!("-----END {label}-----"))?;
    let b64: String = body[..end].chars().filter(|c| !c.is_whitespace()).collect();
    Some((label, B64.decode(b64).ok()?))
}

/// Header fields as (name, value including folding), in order. `head` ends in CRLF.
fn parse_headers(head: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(head);
    let mut out: Vec<(String, String)> = Vec::new();
    for line in text.split("\r\n").filter(|l| !l.is_empty()) {
        if line.starts_with([' ', '\t']) {
            if let Some((_, v)) = out.last_mut() {
                v.push_str("\r\n");
                v.push_str(line);
            }
        } else if let Some((n, v)) = line.split_once(':') {
            out.push((n.to_string(), v.to_string()));
        }
    }
    out
}

/// Relaxed header canonicalisation (RFC 6376 3.4.2).
fn canonical_header(name: &str, value: &str) -> String {
    let unfolded = value.replace("\r\n", "");
    let mut v = String::with_capacity(unfolded.len());
    let mut space = false;
    for c in unfolded.chars() {
        if c == ' ' || c == '\t' {
            space = true;
        } else {
            if space && !v.is_empty() {
                v.push(' ');
            }
            space = false;
            v.push(c);
        }
    }
    format!("{}:{}\r\n", name.trim().to_ascii_lowercase(), v)
}

/// Relaxed body canonicalisation (RFC 6376 3.4.4).
fn canonical_body(body: &[u8]) -> Vec<u8> {
    let mut lines: Vec<Vec<u8>> = Vec::new();
    let body = body.strip_suffix(b"\r\n").unwrap_or(body);
    if body.is_empty() {
        return Vec::new();
    }
    for line in body.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let mut out = Vec::with_capacity(line.len());
        let mut space = false;
        for &b in line {
            if b == b' ' || b == b'\t' {
                space = true;
            } else {
                if space {
                    out.push(b' ');
                }
                space = false;
                out.push(b);
            }
        }
        lines.push(out);
    }
    while lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    let mut out = Vec::with_capacity(body.len() + 2);
    for l in lines {
        out.extend_from_slice(&l);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Wraps a PKCS#1 RSAPublicKey in a SubjectPublicKeyInfo (what `p=` carries).
fn rsa_spki(pkcs1: &[u8]) -> Vec<u8> {
    fn der(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        let n = content.len();
        if n < 128 {
            out.push(n as u8);
        } else {
            let bytes: Vec<u8> = n
                .to_be_bytes()
                .into_iter()
                .skip_while(|&b| b == 0)
                .collect();
            out.push(0x80 | bytes.len() as u8);
            out.extend(bytes);
        }
        out.extend_from_slice(content);
        out
    }
    // SEQUENCE { OID rsaEncryption, NULL }
    const ALGORITHM: &[u8] = &[
        0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ];
    let mut bits = vec![0u8];
    bits.extend_from_slice(pkcs1);
    let mut content = ALGORITHM.to_vec();
    content.extend(der(0x03, &bits));
    der(0x30, &content)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;

    fn ed25519() -> DkimSigner {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        let pem = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            B64.encode(pkcs8.as_ref())
        );
        DkimSigner::from_pem("Example.KR.", "mail2026", &pem).unwrap()
    }

    const MAIL: &[u8] = b"From: =?utf-8?b?7ZmN6ri464+Z?= <a@example.kr>\r\nTo: b@example.com\r\nSubject: Hi\r\n\tthere\r\nList-Unsubscribe: <https://x/u/t>\r\n\r\nHello  world \r\n\r\n\r\n";

    #[test]
    fn canonical_forms_follow_the_rfc_examples() {
        // RFC 6376 3.4.5.
        assert_eq!(canonical_header("A", " X\r\n"), "a:X\r\n");
        assert_eq!(canonical_header("B ", " Y\t\r\n\tZ  "), "b:Y Z\r\n");
        assert_eq!(
            canonical_body(b" C \r\nD \t E\r\n\r\n\r\n"),
            b" C\r\nD E\r\n"
        );
        assert_eq!(canonical_body(b""), b"");
        assert_eq!(canonical_body(b"\r\n\r\n"), b"");
    }

    #[test]
    fn ed25519_signature_verifies_and_covers_the_headers() {
        let s = ed25519();
        assert_eq!(s.dns_name(), "mail2026._domainkey.example.kr");
        let signed = s.sign(MAIL, 1_790_000_000).unwrap();
        let text = String::from_utf8(signed.clone()).unwrap();
        assert!(text.starts_with(
            "DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed; d=example.kr; s=mail2026;"
        ));
        assert!(text.contains("h=from:from:to:to:subject:subject:list-unsubscribe;"));
        assert!(text.ends_with(std::str::from_utf8(MAIL).unwrap()));

        // Verify as a receiver would: rebuild the signed data, check with the public key.
        let p = s.dns_record();
        let public = B64.decode(p.rsplit_once("p=").unwrap().1).unwrap();
        let (sig_header, _) = text.split_once("\r\nFrom:").unwrap();
        let value = sig_header.strip_prefix("DKIM-Signature:").unwrap();
        let (unsigned, b) = value.split_once("b=").unwrap();
        let sig = B64
            .decode(b.chars().filter(|c| !c.is_whitespace()).collect::<String>())
            .unwrap();
        let heads = parse_headers(&MAIL[..find(MAIL, b"\r\n\r\n").unwrap() + 2]);
        let mut data = String::new();
        for n in ["From", "To", "Subject", "List-Unsubscribe"] {
            let (name, v) = heads.iter().find(|(h, _)| h == n).unwrap();
            data.push_str(&canonical_header(name, v));
        }
        data.push_str(
            canonical_header("DKIM-Signature", &format!("{unsigned}b=")).trim_end_matches("\r\n"),
        );
        let key = signature::UnparsedPublicKey::new(&signature::ED25519, &public);
        key.verify(&Sha256::digest(data.as_bytes()), &sig).unwrap();
        // The body hash is of the relaxed body.
        let bh = B64.encode(Sha256::digest(b"Hello world\r\n"));
        assert!(text.contains(&format!("bh={bh};")));
        // A changed subject no longer verifies.
        let tampered = data.replace("subject:Hi there", "subject:Hi thera");
        assert!(
            key.verify(&Sha256::digest(tampered.as_bytes()), &sig)
                .is_err()
        );
    }

    #[test]
    fn bad_keys_and_names_are_refused_with_a_reason() {
        assert!(DkimSigner::from_pem("example.kr", "s1", "hello").is_err());
        let e = DkimSigner::from_pem(
            "example.kr",
            "s1",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----",
        )
        .unwrap_err();
        assert!(e.contains("CERTIFICATE"), "{e}");
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        let pem = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            B64.encode(pkcs8.as_ref())
        );
        assert!(DkimSigner::from_pem("exa mple.kr", "s1", &pem).is_err());
        assert!(DkimSigner::from_pem("example.kr", "s;1", &pem).is_err());
        assert!(ed25519().sign(b"From: a@b\r\nno separator", 0).is_err());
    }
}
