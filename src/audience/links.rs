//! Signed public links for subscribers: unsubscribe and preferences (never expire) and
//! double opt-in confirmation and self-service data requests (expire, bound to the
//! address they were sent to). A forged or
//! altered token is simply invalid; nothing from the request is ever echoed as a URL.

use chrono::{DateTime, Utc};

use crate::signing::SigningKey;

const SUBSCRIBER: &str = "link/subscriber";
const CONFIRM: &str = "link/confirm";

/// What a short-lived data-request link lets its holder do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataAction {
    Export,
    Erase,
}

impl DataAction {
    fn scope(self) -> &'static str {
        match self {
            Self::Export => "link/data-export",
            Self::Erase => "link/data-erase",
        }
    }
}

/// `<id>.<signature>`: identifies a subscriber for unsubscribe and preferences.
pub fn subscriber_token(keys: &SigningKey, id: i64) -> String {
    format!("{id}.{}", keys.sign(SUBSCRIBER, id.to_string().as_bytes()))
}

pub fn verify_subscriber_token(keys: &SigningKey, token: &str) -> Option<i64> {
    let (id, sig) = token.split_once('.')?;
    let id_num: i64 = id.parse().ok()?;
    keys.verify(SUBSCRIBER, id.as_bytes(), sig)
        .then_some(id_num)
}

fn confirm_message(id: i64, expires: i64, email: &str) -> String {
    format!("{id}|{expires}|{}", email.to_lowercase())
}

fn expiring_token(
    keys: &SigningKey,
    scope: &str,
    id: i64,
    email: &str,
    expires: DateTime<Utc>,
) -> String {
    let exp = expires.timestamp();
    format!(
        "{id}.{exp}.{}",
        keys.sign(scope, confirm_message(id, exp, email).as_bytes())
    )
}

/// `<id>.<expiry>.<signature>` over the id, the expiry and the address.
pub fn confirm_token(keys: &SigningKey, id: i64, email: &str, expires: DateTime<Utc>) -> String {
    expiring_token(keys, CONFIRM, id, email, expires)
}

/// A short-lived link (sent to the subscriber's own address) for export or erasure, so
/// that holding a forwarded newsletter's preferences link is not enough.
pub fn data_token(
    keys: &SigningKey,
    action: DataAction,
    id: i64,
    email: &str,
    expires: DateTime<Utc>,
) -> String {
    expiring_token(keys, action.scope(), id, email, expires)
}

pub fn check_data_token(
    keys: &SigningKey,
    action: DataAction,
    token: &str,
    email: &str,
    now: DateTime<Utc>,
) -> ConfirmCheck {
    check_expiring(keys, action.scope(), token, email, now)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfirmCheck {
    Valid,
    Expired,
    Invalid,
}

/// The subscriber id a confirmation token names (check it with [`check_confirm_token`]
/// once the subscriber's address is known).
pub fn confirm_token_id(token: &str) -> Option<i64> {
    token.split('.').next()?.parse().ok()
}

/// When a confirmation token stops working.
pub fn confirm_token_expiry(token: &str) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(token.split('.').nth(1)?.parse().ok()?, 0)
}

pub fn check_confirm_token(
    keys: &SigningKey,
    token: &str,
    email: &str,
    now: DateTime<Utc>,
) -> ConfirmCheck {
    check_expiring(keys, CONFIRM, token, email, now)
}

fn check_expiring(
    keys: &SigningKey,
    scope: &str,
    token: &str,
    email: &str,
    now: DateTime<Utc>,
) -> ConfirmCheck {
    let mut parts = token.splitn(3, '.');
    let (Some(id), Some(exp), Some(sig)) = (parts.next(), parts.next(), parts.next()) else {
        return ConfirmCheck::Invalid;
    };
    let (Ok(id), Ok(exp)) = (id.parse::<i64>(), exp.parse::<i64>()) else {
        return ConfirmCheck::Invalid;
    };
    if !keys.verify(scope, confirm_message(id, exp, email).as_bytes(), sig) {
        return ConfirmCheck::Invalid;
    }
    if now.timestamp() > exp {
        ConfirmCheck::Expired
    } else {
        ConfirmCheck::Valid
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> SigningKey {
        SigningKey::from_bytes(b"test key test key test key test key".to_vec())
    }

    #[test]
    fn subscriber_tokens_cannot_be_forged_or_moved_to_another_subscriber() {
        let k = keys();
        let t = subscriber_token(&k, 42);
        assert_eq!(verify_subscriber_token(&k, &t), Some(42));
        let sig = t.split_once('.').unwrap().1;
        assert_eq!(verify_subscriber_token(&k, &format!("43.{sig}")), None);
        assert_eq!(verify_subscriber_token(&k, "42.AAAA"), None);
        assert_eq!(verify_subscriber_token(&k, "garbage"), None);
    }

    #[test]
    fn confirm_tokens_expire_and_are_bound_to_the_address() {
        let k = keys();
        let now = Utc::now();
        let t = confirm_token(&k, 7, "Hong@Example.kr", now + chrono::Duration::days(7));
        assert_eq!(confirm_token_id(&t), Some(7));
        assert_eq!(
            check_confirm_token(&k, &t, "hong@example.kr", now),
            ConfirmCheck::Valid
        );
        assert_eq!(
            check_confirm_token(&k, &t, "other@example.kr", now),
            ConfirmCheck::Invalid
        );
        assert_eq!(
            check_confirm_token(&k, &t, "hong@example.kr", now + chrono::Duration::days(8)),
            ConfirmCheck::Expired
        );
        let export = data_token(&k, DataAction::Export, 7, "hong@example.kr", now);
        assert_eq!(
            check_data_token(&k, DataAction::Export, &export, "hong@example.kr", now),
            ConfirmCheck::Valid
        );
        for (action, token) in [(DataAction::Erase, &export), (DataAction::Export, &t)] {
            assert_eq!(
                check_data_token(&k, action, token, "hong@example.kr", now),
                ConfirmCheck::Invalid,
                "a link for one purpose never works for another"
            );
        }
        let tampered = t.replacen(".", ".9", 1);
        assert_eq!(
            check_confirm_token(&k, &tampered, "hong@example.kr", now),
            ConfirmCheck::Invalid
        );
    }
}
