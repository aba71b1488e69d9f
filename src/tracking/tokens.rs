//! Signed tracking tokens. A click token carries everything the redirect needs (message,
//! subscriber, link position, the author's label and the destination) under a 128-bit
//! HMAC, so the click endpoint needs no lookup to know where to send someone, and a
//! tampered or forged token is a fast 404: nothing from the request is ever a redirect
//! target. Personalised links (merge fields in the URL) work for the same reason.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD as B64};

use crate::signing::SigningKey;

const CLICK: &str = "track/click";
const OPEN: &str = "track/open";
const VERSION: u8 = 1;
/// Tokens longer than this are refused before any decoding (a URL has limits anyway).
const MAX_TOKEN: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Click {
    pub message_id: i64,
    pub subscriber_id: Option<i64>,
    /// 1-based position of the link in the message.
    pub position: u16,
    pub label: Option<String>,
    pub url: String,
}

fn seal(keys: &SigningKey, purpose: &str, payload: &[u8]) -> String {
    format!(
        "{}.{}",
        B64.encode(payload),
        B64.encode(keys.short_tag(purpose, payload))
    )
}

fn open_seal(keys: &SigningKey, purpose: &str, token: &str) -> Option<Vec<u8>> {
    if token.len() > MAX_TOKEN {
        return None;
    }
    let (payload, tag) = token.split_once('.')?;
    let payload = B64.decode(payload).ok()?;
    let tag = B64.decode(tag).ok()?;
    keys.verify_short_tag(purpose, &payload, &tag)
        .then_some(payload)
}

pub fn click_token(keys: &SigningKey, c: &Click) -> String {
    let label = c.label.as_deref().unwrap_or("");
    let mut p = Vec::with_capacity(20 + label.len() + c.url.len());
    p.push(VERSION);
    p.extend_from_slice(&c.message_id.to_be_bytes());
    p.extend_from_slice(&c.subscriber_id.unwrap_or(0).to_be_bytes());
    p.extend_from_slice(&c.position.to_be_bytes());
    p.push(label.len().min(255) as u8);
    p.extend_from_slice(&label.as_bytes()[..label.len().min(255)]);
    p.extend_from_slice(c.url.as_bytes());
    seal(keys, CLICK, &p)
}

pub fn verify_click(keys: &SigningKey, token: &str) -> Option<Click> {
    let p = open_seal(keys, CLICK, token)?;
    if p.len() < 20 || p[0] != VERSION {
        return None;
    }
    let message_id = i64::from_be_bytes(p[1..9].try_into().ok()?);
    let subscriber = i64::from_be_bytes(p[9..17].try_into().ok()?);
    let position = u16::from_be_bytes(p[17..19].try_into().ok()?);
    let label_len = p[19] as usize;
    let label = std::str::from_utf8(p.get(20..20 + label_len)?).ok()?;
    let url = std::str::from_utf8(p.get(20 + label_len..)?).ok()?;
    // Signed by us, but only ever a web address.
    let lower = url.to_ascii_lowercase();
    if !(lower.starts_with("https://") || lower.starts_with("http://")) {
        return None;
    }
    Some(Click {
        message_id,
        subscriber_id: (subscriber != 0).then_some(subscriber),
        position,
        label: (!label.is_empty()).then(|| label.to_string()),
        url: url.to_string(),
    })
}

/// The open pixel's token: message and subscriber.
pub fn open_token(keys: &SigningKey, message_id: i64, subscriber_id: Option<i64>) -> String {
    let mut p = Vec::with_capacity(17);
    p.push(VERSION);
    p.extend_from_slice(&message_id.to_be_bytes());
    p.extend_from_slice(&subscriber_id.unwrap_or(0).to_be_bytes());
    seal(keys, OPEN, &p)
}

pub fn verify_open(keys: &SigningKey, token: &str) -> Option<(i64, Option<i64>)> {
    let p = open_seal(keys, OPEN, token)?;
    if p.len() != 17 || p[0] != VERSION {
        return None;
    }
    let message_id = i64::from_be_bytes(p[1..9].try_into().ok()?);
    let subscriber = i64::from_be_bytes(p[9..17].try_into().ok()?);
    Some((message_id, (subscriber != 0).then_some(subscriber)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> SigningKey {
        SigningKey::from_bytes(b"k".repeat(32))
    }

    fn click() -> Click {
        Click {
            message_id: 42,
            subscriber_id: Some(7),
            position: 3,
            label: Some("topic:마케팅".into()),
            url: "https://shop.example/제품?a=1&b=2".into(),
        }
    }

    #[test]
    fn click_tokens_round_trip_and_are_url_safe() {
        let t = click_token(&keys(), &click());
        assert!(
            t.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        );
        assert_eq!(verify_click(&keys(), &t), Some(click()));
        let none = Click {
            subscriber_id: None,
            label: None,
            ..click()
        };
        assert_eq!(
            verify_click(&keys(), &click_token(&keys(), &none)),
            Some(none)
        );
    }

    #[test]
    fn tampered_forged_or_foreign_tokens_are_refused() {
        let t = click_token(&keys(), &click());
        let (payload, tag) = t.split_once('.').unwrap();
        // Another destination under the same tag.
        let mut raw = B64.decode(payload).unwrap();
        let n = raw.len();
        raw[n - 1] ^= 1;
        assert_eq!(
            verify_click(&keys(), &format!("{}.{tag}", B64.encode(&raw))),
            None
        );
        // Another key.
        let other = SigningKey::from_bytes(b"x".repeat(32));
        assert_eq!(verify_click(&other, &t), None);
        // An open token is not a click token, and junk is nothing.
        let o = open_token(&keys(), 42, Some(7));
        assert_eq!(verify_click(&keys(), &o), None);
        assert_eq!(verify_open(&keys(), &o), Some((42, Some(7))));
        assert_eq!(verify_open(&keys(), &t), None);
        for junk in ["", ".", "abc", "abc.def", &"a".repeat(5000)] {
            assert_eq!(verify_click(&keys(), junk), None);
        }
    }

    #[test]
    fn only_web_addresses_are_ever_redirect_targets() {
        let js = Click {
            url: "javascript:alert(1)".into(),
            ..click()
        };
        assert_eq!(verify_click(&keys(), &click_token(&keys(), &js)), None);
    }
}
