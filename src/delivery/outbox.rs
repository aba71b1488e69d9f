//! The outbox: every message is a row written in the transaction that decided to send
//! it, under a unique idempotency key, so no retry, crash or second process can make a
//! second one. Senders (`delivery::sender`) claim rows and do the I/O.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::{PgConnection, PgPool};

use super::render::{BodyFormat, Draft};

/// What a message says; stored once and shared by every message that uses it.
#[derive(Debug, Clone)]
pub struct NewBody {
    /// What it is for ('confirmation', 'test', 'campaign', …), shown in the Outbox.
    pub purpose: String,
    pub draft: Draft,
    pub from_name: String,
}

pub async fn insert_body(conn: &mut PgConnection, body: &NewBody) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "INSERT INTO message_bodies (purpose, subject, preheader, body, format, from_name)
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
    )
    .bind(&body.purpose)
    .bind(&body.draft.subject)
    .bind(&body.draft.preheader)
    .bind(&body.draft.body)
    .bind(format_str(&body.draft.format))
    .bind(&body.from_name)
    .fetch_one(&mut *conn)
    .await
}

pub fn format_str(f: &BodyFormat) -> &'static str {
    match f {
        BodyFormat::Markdown => "markdown",
        BodyFormat::Html => "html",
    }
}

pub fn parse_format(s: &str) -> BodyFormat {
    if s == "html" {
        BodyFormat::Html
    } else {
        BodyFormat::Markdown
    }
}

/// One message to queue.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub idempotency_key: String,
    /// Marketing mail goes only to active subscribers; transactional mail (confirmations,
    /// tests) also to the unconfirmed. Both are checked again when sending.
    pub marketing: bool,
    pub body_id: i64,
    pub subscriber_id: Option<i64>,
    pub to_email: String,
    pub to_name: String,
    /// Merge data beyond the subscriber's own.
    pub data: Value,
    pub run_at: DateTime<Utc>,
}

/// Queues a message in the caller's transaction. `None` when a message with the same
/// idempotency key already exists (the decision was already taken).
pub async fn enqueue(
    conn: &mut PgConnection,
    m: &NewMessage,
    now: DateTime<Utc>,
) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar(
        "WITH m AS (
             INSERT INTO messages (idempotency_key, marketing, body_id, subscriber_id, to_email, to_name, data, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $9)
             ON CONFLICT (idempotency_key) DO NOTHING RETURNING id
         )
         INSERT INTO message_queue (message_id, run_at) SELECT id, $8 FROM m RETURNING message_id",
    )
    .bind(&m.idempotency_key)
    .bind(m.marketing)
    .bind(m.body_id)
    .bind(m.subscriber_id)
    .bind(&m.to_email)
    .bind(&m.to_name)
    .bind(&m.data)
    .bind(m.run_at)
    .bind(now)
    .fetch_optional(&mut *conn)
    .await
}

/// A message as the Outbox page lists it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct MessageRow {
    pub id: i64,
    pub purpose: String,
    pub subject: String,
    pub to_email: String,
    pub to_name: String,
    pub status: String,
    pub attempts: i32,
    pub smtp_reply: Option<String>,
    pub created_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
    pub captured: bool,
}

/// The status as users see it: a message being sent is a queued one whose lease
/// (`$now`, the parameter holding the current time) has not run out (see `sender`).
fn shown_status(now: &str) -> String {
    format!(
        "CASE WHEN m.status = 'queued' AND q.lease_until > {now} THEN 'sending' ELSE m.status::text END"
    )
}

/// The subject as sent when the message was captured, the template otherwise.
fn row(now: &str) -> String {
    format!(
        "m.id, b.purpose, coalesce(c.subject, b.subject) AS subject, m.to_email, m.to_name, {} AS status,
         coalesce(q.attempts, m.attempts) AS attempts, m.smtp_reply, m.created_at, m.sent_at, c.message_id IS NOT NULL AS captured",
        shown_status(now)
    )
}
const FROM: &str = "messages m JOIN message_bodies b ON b.id = m.body_id LEFT JOIN captured_mail c ON c.message_id = m.id
     LEFT JOIN message_queue q ON q.message_id = m.id";

/// The newest messages, before `before` (keyset paging).
pub async fn recent(
    pool: &PgPool,
    before: Option<i64>,
    limit: i64,
    now: DateTime<Utc>,
) -> sqlx::Result<Vec<MessageRow>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {} FROM {FROM} WHERE ($1::bigint IS NULL OR m.id < $1) ORDER BY m.id DESC LIMIT $2",
        row("$3")
    )))
    .bind(before)
    .bind(limit)
    .bind(now)
    .fetch_all(pool)
    .await
}

pub async fn get(pool: &PgPool, id: i64, now: DateTime<Utc>) -> sqlx::Result<Option<MessageRow>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {} FROM {FROM} WHERE m.id = $1",
        row("$2")
    )))
    .bind(id)
    .bind(now)
    .fetch_optional(pool)
    .await
}

/// The exact bytes a captured message would have been sent as.
pub async fn captured(pool: &PgPool, id: i64) -> sqlx::Result<Option<Vec<u8>>> {
    sqlx::query_scalar("SELECT raw FROM captured_mail WHERE message_id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await
}

/// Counts by status as users see it (queued, sending, sent, …), for the Outbox header.
pub async fn counts(pool: &PgPool, now: DateTime<Utc>) -> sqlx::Result<Vec<(String, i64)>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT shown, count(*) FROM (SELECT {} AS shown FROM messages m LEFT JOIN message_queue q ON q.message_id = m.id) s
         GROUP BY shown ORDER BY shown::message_status",
        shown_status("$1")
    )))
    .bind(now)
    .fetch_all(pool)
    .await
}
