//! Amazon SES bounce, complaint and delivery reports, as the `Message` of an SNS
//! notification (verified first by [`super::sns`]).
//!
//! Two shapes carry the same records: identity notifications (`notificationType`) and
//! configuration-set event publishing (`eventType`). Bounce `Permanent` is a hard
//! bounce; `Transient` and `Undetermined` are soft (recorded, nothing changes);
//! `Complaint` a complaint; `Delivery` a delivery. One record may name several
//! recipients; each is its own event, keyed by the SNS `MessageId` and the address, so
//! SNS's retries apply once. Other records (sends, opens, clicks, rejects, delays,
//! SES's own "subscription succeeded" notice) are counted as ignored.
//!
//! Our message is found by the `loopline-message` tag the mail carried
//! (`X-SES-MESSAGE-TAGS`, echoed in `mail.tags` by event publishing), else by our
//! `Message-ID` in `mail.headers` (when "include original headers" is on) or
//! `mail.commonHeaders.messageId`, else by recipient, as for every provider.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::{ECHO_KEY, Feedback, Kind, Parsed, bracketed, join_reason, rfc3339, text};

/// The header SES reads message tags from (removed before the mail leaves SES).
pub const TAGS_HEADER: &str = "X-SES-MESSAGE-TAGS";

/// A [`super::message_ref`] as an SES tag value. SES allows only ASCII letters, digits,
/// `_` and `-` in tag values (at most 256), so the `.` after the outbox id becomes `-`;
/// the id is digits only, so the first `-` is always that one. The tag half is
/// URL-safe base64, already within the alphabet.
pub fn tag_value(reference: &str) -> String {
    reference.replacen('.', "-", 1)
}

/// The reference back from a tag value; `None` if it is not one of ours.
pub fn reference_from_tag(value: &str) -> Option<String> {
    let (id, tag) = value.trim().split_once('-')?;
    (!id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) && !tag.is_empty())
        .then(|| format!("{id}.{tag}"))
}

/// `addr` from `addr` or `Name <addr>`.
/// The items of an array field (none when it is missing or not an array).
fn array<'a>(m: &'a Map<String, Value>, key: &str) -> impl Iterator<Item = &'a Value> {
    m.get(key).and_then(Value::as_array).into_iter().flatten()
}

/// The objects in an array field.
fn objects<'a>(
    m: &'a Map<String, Value>,
    key: &str,
) -> impl Iterator<Item = &'a Map<String, Value>> {
    array(m, key).filter_map(Value::as_object)
}

fn bare_address(s: &str) -> String {
    match (s.rfind('<'), s.rfind('>')) {
        (Some(a), Some(b)) if a < b => s[a + 1..b].trim().to_string(),
        _ => s.trim().to_string(),
    }
}

/// Our reference from `mail.tags` (values are arrays of strings).
fn tag_reference(mail: &Map<String, Value>) -> Option<String> {
    let tags = mail.get("tags")?.as_object()?;
    let (_, v) = tags
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(ECHO_KEY))?;
    let first = match v {
        Value::Array(a) => a.first()?.as_str()?,
        Value::String(s) => s.as_str(),
        _ => return None,
    };
    (first.len() <= 100)
        .then(|| reference_from_tag(first))
        .flatten()
}

/// Our `Message-ID` as SES saw it: the original header if SES included headers, else
/// `commonHeaders.messageId`.
fn header_message_id(mail: &Map<String, Value>) -> Option<String> {
    let from_headers = mail
        .get("headers")
        .and_then(Value::as_array)
        .and_then(|headers| {
            headers.iter().find_map(|h| {
                let h = h.as_object()?;
                text(h, "name")
                    .filter(|n| n.eq_ignore_ascii_case("message-id"))
                    .and_then(|_| text(h, "value"))
            })
        });
    bracketed(from_headers.or_else(|| {
        mail.get("commonHeaders")
            .and_then(Value::as_object)
            .and_then(|c| text(c, "messageId"))
    }))
}

/// The events in one SNS notification's `Message` (`sns_message_id` keys them).
pub fn parse(sns_message_id: &str, message: &str) -> Parsed {
    let mut parsed = Parsed::default();
    let Ok(Value::Object(doc)) = serde_json::from_str::<Value>(message) else {
        parsed.ignored = 1;
        return parsed;
    };
    let record = text(&doc, "eventType").or_else(|| text(&doc, "notificationType"));
    let empty = Map::new();
    let mail = doc.get("mail").and_then(Value::as_object).unwrap_or(&empty);
    let section = |key: &str| doc.get(key).and_then(Value::as_object);

    // (kind, address, reason) for each recipient, and when it happened.
    let mut found: Vec<(Kind, String, String)> = Vec::new();
    let at;
    match record.as_deref() {
        Some("Bounce") => {
            let Some(b) = section("bounce") else {
                parsed.ignored = 1;
                return parsed;
            };
            let bounce_type = text(b, "bounceType").unwrap_or_default();
            let kind = if bounce_type == "Permanent" {
                Kind::HardBounce
            } else {
                Kind::SoftBounce
            };
            let classification = match text(b, "bounceSubType") {
                Some(sub) => format!("{bounce_type}/{sub}"),
                None => bounce_type.clone(),
            };
            at = text(b, "timestamp");
            for r in objects(b, "bouncedRecipients") {
                if let Some(addr) = text(r, "emailAddress") {
                    let reason = join_reason(&[
                        text(r, "status"),
                        text(r, "diagnosticCode"),
                        Some(classification.clone()).filter(|c| !c.is_empty()),
                    ]);
                    found.push((kind, bare_address(&addr), reason));
                }
            }
        }
        Some("Complaint") => {
            let Some(c) = section("complaint") else {
                parsed.ignored = 1;
                return parsed;
            };
            at = text(c, "timestamp");
            let reason = join_reason(&[
                text(c, "complaintFeedbackType"),
                text(c, "complaintSubType"),
            ]);
            for r in objects(c, "complainedRecipients") {
                if let Some(addr) = text(r, "emailAddress") {
                    found.push((Kind::Complaint, bare_address(&addr), reason.clone()));
                }
            }
        }
        Some("Delivery") => {
            let Some(d) = section("delivery") else {
                parsed.ignored = 1;
                return parsed;
            };
            at = text(d, "timestamp");
            let reason = join_reason(&[text(d, "smtpResponse")]);
            for addr in array(d, "recipients").filter_map(Value::as_str) {
                found.push((Kind::Delivered, bare_address(addr), reason.clone()));
            }
        }
        _ => {
            parsed.ignored = 1;
            return parsed;
        }
    }
    if found.is_empty() {
        parsed.ignored = 1;
        return parsed;
    }
    let occurred_at = rfc3339(at);
    let message_id = header_message_id(mail);
    let provider_message_id = text(mail, "messageId");
    let reference = tag_reference(mail);
    let mut seen = std::collections::HashSet::new();
    for (kind, email, reason) in found {
        if email.is_empty() || !seen.insert(email.to_lowercase()) {
            continue;
        }
        let mut key = format!("{sns_message_id}:{}", email.to_lowercase());
        // Receipt keys are bounded (300); a long address is keyed by its digest.
        if key.len() > 200 {
            key = format!("sha256:{}", super::hex(&Sha256::digest(key.as_bytes())));
        }
        parsed.events.push(Feedback {
            key,
            kind,
            email,
            reason,
            message_id: message_id.clone(),
            provider_message_id: provider_message_id.clone(),
            reference: reference.clone(),
            occurred_at,
            details: Value::Null,
            unsubscribe_token: None,
        });
    }
    parsed
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// SES's documented bounce notification with two recipients (abridged headers).
    fn bounce() -> Value {
        json!({
            "notificationType": "Bounce",
            "bounce": {
                "bounceType": "Permanent",
                "reportingMTA": "dns; email.example.com",
                "bouncedRecipients": [
                    { "emailAddress": "jane@example.com", "status": "5.1.1", "action": "failed",
                      "diagnosticCode": "smtp; 550 5.1.1 <jane@example.com>... User" },
                    { "emailAddress": "\"Rich\" <richard@example.com>", "status": "5.1.1", "action": "failed" }
                ],
                "bounceSubType": "General",
                "timestamp": "2016-01-27T14:59:38.237Z",
                "feedbackId": "00000138111222aa-33322211-cccc-cccc-cccc-ddddaaaa068a-000000",
                "remoteMtaIp": "127.0.2.0"
            },
            "mail": {
                "timestamp": "2016-01-27T14:59:38.237Z",
                "source": "john@example.com",
                "sourceArn": "arn:aws:ses:us-east-1:888888888888:identity/example.com",
                "sourceIp": "127.0.3.0",
                "sendingAccountId": "123456789012",
                "messageId": "00000138111222aa-33322211-cccc-cccc-cccc-ddddaaaa0680-000000",
                "destination": ["jane@example.com", "mary@example.com", "richard@example.com"],
                "headersTruncated": false,
                "headers": [
                    { "name": "From", "value": "\"John Doe\" <john@example.com>" },
                    { "name": "Message-ID", "value": "<42.abc@example.com>" }
                ],
                "commonHeaders": {
                    "from": ["John Doe <john@example.com>"],
                    "date": "Wed, 27 Jan 2016 14:05:45 +0000",
                    "to": ["Jane Doe <jane@example.com>, Mary Doe <mary@example.com>, Richard Doe <richard@example.com>"],
                    "messageId": "custom-message-ID",
                    "subject": "Hello"
                }
            }
        })
    }

    fn parse_value(v: &Value) -> Parsed {
        parse("sns-1", &v.to_string())
    }

    #[test]
    fn a_permanent_bounce_is_hard_for_every_recipient() {
        let p = parse_value(&bounce());
        assert_eq!(p.events.len(), 2);
        assert_eq!(p.ignored, 0);
        let jane = &p.events[0];
        assert_eq!(jane.kind, Kind::HardBounce);
        assert_eq!(jane.email, "jane@example.com");
        assert_eq!(jane.key, "sns-1:jane@example.com");
        assert_eq!(
            jane.reason,
            "5.1.1 — smtp; 550 5.1.1 <jane@example.com>... User — Permanent/General"
        );
        assert_eq!(jane.message_id.as_deref(), Some("<42.abc@example.com>"));
        assert_eq!(
            jane.provider_message_id.as_deref(),
            Some("00000138111222aa-33322211-cccc-cccc-cccc-ddddaaaa0680-000000")
        );
        assert_eq!(
            jane.occurred_at.unwrap().to_rfc3339(),
            "2016-01-27T14:59:38.237+00:00"
        );
        assert_eq!(p.events[1].email, "richard@example.com");
        // A long address still makes a receipt key that fits.
        let long = format!("{}@example.com", "x".repeat(240));
        let mut b = bounce();
        b["bounce"]["bouncedRecipients"] = json!([{ "emailAddress": long }]);
        let key = &parse("m".repeat(200).as_str(), &b.to_string()).events[0].key;
        assert!(key.starts_with("sha256:") && key.len() < 100, "{key}");
        assert_eq!(p.events[1].reason, "5.1.1 — Permanent/General");
    }

    #[test]
    fn transient_and_undetermined_bounces_are_soft() {
        for t in ["Transient", "Undetermined"] {
            let mut b = bounce();
            b["bounce"]["bounceType"] = json!(t);
            let p = parse_value(&b);
            assert!(p.events.iter().all(|f| f.kind == Kind::SoftBounce), "{t}");
        }
    }

    /// Event publishing says `eventType` and carries the message tags.
    #[test]
    fn event_publishing_records_carry_the_echoed_tag() {
        let mut c = bounce();
        let o = c.as_object_mut().unwrap();
        o.remove("notificationType");
        o.remove("bounce");
        o.insert("eventType".into(), json!("Complaint"));
        o.insert(
            "complaint".into(),
            json!({
                "complainedRecipients": [{ "emailAddress": "recipient@example.com" }],
                "timestamp": "2017-08-05T00:41:02.669Z",
                "feedbackId": "0100015db0f1e59e-aeb8b8d3-2e2f-4e44-b1d9-1a4ee3f0e1df-000000",
                "userAgent": "Mozilla/5.0",
                "complaintFeedbackType": "abuse",
                "arrivalDate": "2017-08-05T00:41:02.669Z"
            }),
        );
        c["mail"]["tags"] = json!({
            "ses:configuration-set": ["ConfigSet"],
            "loopline-message": ["42-Ab_c-9"]
        });
        c["mail"].as_object_mut().unwrap().remove("headers");
        let p = parse_value(&c);
        assert_eq!(p.events.len(), 1);
        let f = &p.events[0];
        assert_eq!(f.kind, Kind::Complaint);
        assert_eq!(f.reason, "abuse");
        assert_eq!(f.reference.as_deref(), Some("42.Ab_c-9"));
        // No original headers: the common header's Message-ID.
        assert_eq!(f.message_id.as_deref(), Some("<custom-message-ID>"));
    }

    #[test]
    fn deliveries_name_each_recipient() {
        let d = json!({
            "notificationType": "Delivery",
            "mail": { "messageId": "m", "destination": ["a@example.com", "b@example.com"] },
            "delivery": {
                "timestamp": "2016-01-27T14:59:38.237Z",
                "recipients": ["a@example.com", "B@example.com", "a@example.com"],
                "processingTimeMillis": 546,
                "smtpResponse": "250 ok:  Message 64111812 accepted"
            }
        });
        let p = parse_value(&d);
        let who: Vec<_> = p
            .events
            .iter()
            .map(|f| (f.kind, f.email.as_str()))
            .collect();
        assert_eq!(
            who,
            [
                (Kind::Delivered, "a@example.com"),
                (Kind::Delivered, "B@example.com")
            ]
        );
        assert_eq!(p.events[0].reason, "250 ok:  Message 64111812 accepted");
    }

    #[test]
    fn other_records_and_non_ses_messages_are_ignored() {
        for m in [
            json!({ "eventType": "Open", "mail": {}, "open": {} }).to_string(),
            json!({ "eventType": "Send", "mail": {}, "send": {} }).to_string(),
            json!({ "notificationType": "AmazonSnsSubscriptionSucceeded", "message": "You have successfully subscribed" }).to_string(),
            json!({ "notificationType": "Bounce", "bounce": { "bounceType": "Permanent", "bouncedRecipients": [] } }).to_string(),
            json!({ "notificationType": "Bounce" }).to_string(),
            "Hello from the console".to_string(),
            "[1,2]".to_string(),
        ] {
            let p = parse("x", &m);
            assert_eq!((p.events.len(), p.ignored), (0, 1), "{m}");
        }
    }

    #[test]
    fn references_survive_the_tag_alphabet() {
        let k = crate::signing::SigningKey::from_bytes(b"k".repeat(32));
        for (id, sid) in [
            (1, Some(1)),
            (42, Some(7)),
            (i64::MAX, None),
            (9_876_543, Some(5)),
        ] {
            let r = super::super::message_ref(&k, id, sid);
            let v = tag_value(&r);
            assert!(
                v.len() <= 256
                    && v.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
                "{v}"
            );
            assert_eq!(reference_from_tag(&v).as_deref(), Some(r.as_str()));
        }
        for junk in ["", "-abc", "abc-def", "42-", "42"] {
            assert_eq!(reference_from_tag(junk), None, "{junk}");
        }
    }
}
