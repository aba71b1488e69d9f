//! Self-service data requests. The long-lived preferences link (which travels in every
//! newsletter, and so in every forwarded one) only *asks*: the export or erasure link
//! itself is mailed to the subscriber's own address and works for an hour. One mail per
//! subscriber, action and hour, whatever the number of clicks.

use chrono::{DateTime, Duration, Utc};
use serde_json::json;
use sqlx::PgPool;

use super::links::{self, DataAction};
use crate::{
    delivery::{
        outbox::{self, NewMessage},
        system::{self, SystemMail},
    },
    signing::SigningKey,
};

/// How long a mailed export or erasure link works.
pub const VALID_MINUTES: i64 = 60;

/// Queues the mail carrying a short-lived link for `action`. Returns false when one was
/// already queued this hour (the page says the same either way).
pub async fn request(
    pool: &PgPool,
    keys: &SigningKey,
    public_url: &str,
    subscriber_id: i64,
    action: DataAction,
    now: DateTime<Utc>,
) -> sqlx::Result<bool> {
    let mut tx = pool.begin().await?;
    let row: Option<(String, String, Option<String>)> =
        sqlx::query_as("SELECT email, name, language FROM subscribers WHERE id = $1 FOR UPDATE")
            .bind(subscriber_id)
            .fetch_optional(&mut *tx)
            .await?;
    let Some((email, name, language)) = row else {
        return Ok(false);
    };
    let token = links::data_token(
        keys,
        action,
        subscriber_id,
        &email,
        now + Duration::minutes(VALID_MINUTES),
    );
    let (mail, path, key) = match action {
        DataAction::Export => (SystemMail::DataExport, "export", "data-export"),
        DataAction::Erase => (SystemMail::DataErasure, "erase", "data-erase"),
    };
    let body_id = system::body(&mut tx, mail, language.as_deref()).await?;
    let message = NewMessage {
        idempotency_key: format!("{key}:{subscriber_id}:{}", now.format("%Y-%m-%dT%H")),
        marketing: false,
        body_id,
        subscriber_id: Some(subscriber_id),
        to_email: email,
        to_name: name,
        data: json!({ "link": format!("{}/d/{path}/{token}", public_url.trim_end_matches('/')) }),
        run_at: now,
    };
    let queued = outbox::enqueue(&mut tx, &message, now).await?.is_some();
    tx.commit().await?;
    Ok(queued)
}

/// The subscriber a mailed data link names, if it is genuine, unexpired, for this
/// action and still matches their current address.
pub async fn verify(
    pool: &PgPool,
    keys: &SigningKey,
    token: &str,
    action: DataAction,
    now: DateTime<Utc>,
) -> sqlx::Result<Result<i64, links::ConfirmCheck>> {
    let Some(id) = links::confirm_token_id(token) else {
        return Ok(Err(links::ConfirmCheck::Invalid));
    };
    let email: Option<String> = sqlx::query_scalar("SELECT email FROM subscribers WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await?;
    let Some(email) = email else {
        return Ok(Err(links::ConfirmCheck::Invalid));
    };
    Ok(
        match links::check_data_token(keys, action, token, &email, now) {
            links::ConfirmCheck::Valid => Ok(id),
            other => Err(other),
        },
    )
}
