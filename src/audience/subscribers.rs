//! The subscriber store: rows, consent, status changes, the timeline, export and erasure.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use sqlx::{PgExecutor, PgPool, types::Json};

use super::lifecycle::{Lifecycle, Stage};
use crate::{AppError, AppResult};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, sqlx::Type)]
#[sqlx(type_name = "subscriber_status", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Unconfirmed,
    Active,
    Unsubscribed,
    Bounced,
    Complained,
}

impl Status {
    pub const ALL: [Status; 5] = [
        Status::Unconfirmed,
        Status::Active,
        Status::Unsubscribed,
        Status::Bounced,
        Status::Complained,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Unconfirmed => "unconfirmed",
            Status::Active => "active",
            Status::Unsubscribed => "unsubscribed",
            Status::Bounced => "bounced",
            Status::Complained => "complained",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// Marketing mail may go only to these.
    pub fn is_mailable(self) -> bool {
        self == Status::Active
    }
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Subscriber {
    pub id: i64,
    pub email: String,
    pub name: String,
    pub status: Status,
    pub fields: Json<Map<String, Value>>,
    pub source: String,
    pub timezone: Option<String>,
    pub language: Option<String>,
    pub consent_at: Option<DateTime<Utc>>,
    pub consent_method: Option<String>,
    pub consent_form_id: Option<i64>,
    pub consent_ip: Option<String>,
    pub confirmed_at: Option<DateTime<Utc>>,
    pub unsubscribed_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub last_open_at: Option<DateTime<Utc>>,
    pub last_click_at: Option<DateTime<Utc>>,
    pub last_engaged_at: Option<DateTime<Utc>>,
    pub consecutive_unopened: i32,
}

impl Subscriber {
    pub fn stage(&self, lifecycle: &Lifecycle, now: DateTime<Utc>) -> Stage {
        lifecycle.stage(self.created_at, self.last_engaged_at, now)
    }
}

pub const COLUMNS: &str = "id, email, name, status, fields, source, timezone, language, consent_at, consent_method, \
     consent_form_id, consent_ip, confirmed_at, unsubscribed_at, created_at, last_open_at, last_click_at, \
     last_engaged_at, consecutive_unopened";

/// The time zone names subscribers may choose: PostgreSQL's own list (so whatever is
/// stored works in `AT TIME ZONE`), without the legacy aliases. Read once per process.
pub async fn timezones(pool: &PgPool) -> sqlx::Result<&'static [String]> {
    static ZONES: tokio::sync::OnceCell<Vec<String>> = tokio::sync::OnceCell::const_new();
    ZONES
        .get_or_try_init(|| async {
            sqlx::query_scalar(
                "SELECT name FROM pg_timezone_names
                 WHERE (name ~ '^(Africa|America|Antarctica|Asia|Atlantic|Australia|Europe|Indian|Pacific)/'
                        OR name = 'UTC')
                 ORDER BY name",
            )
            .fetch_all(pool)
            .await
        })
        .await
        .map(Vec::as_slice)
}

pub async fn get(pool: &PgPool, id: i64) -> sqlx::Result<Option<Subscriber>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM subscribers WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(pool)
    .await
}

pub async fn find_by_email<'e>(
    db: impl PgExecutor<'e>,
    email: &str,
) -> sqlx::Result<Option<Subscriber>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM subscribers WHERE lower(email) = lower($1)"
    )))
    .bind(email)
    .fetch_optional(db)
    .await
}

/// The number of subscribers: exact while counting is cheap, the planner's estimate
/// (kept fresh by autovacuum) once the table is large.
pub async fn approximate_count(pool: &PgPool) -> sqlx::Result<i64> {
    let estimate: f32 =
        sqlx::query_scalar("SELECT reltuples FROM pg_class WHERE oid = 'subscribers'::regclass")
            .fetch_one(pool)
            .await?;
    if estimate < 200_000.0 {
        return sqlx::query_scalar("SELECT count(*) FROM subscribers")
            .fetch_one(pool)
            .await;
    }
    Ok(estimate as i64)
}

/// Appends to the event log (the subscriber's timeline, and everything downstream).
pub async fn record_event<'e>(
    db: impl PgExecutor<'e>,
    subscriber_id: i64,
    kind: &str,
    at: DateTime<Utc>,
    data: Value,
) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO events (subscriber_id, kind, at, data) VALUES ($1, $2, $3, $4)")
        .bind(subscriber_id)
        .bind(kind)
        .bind(at)
        .bind(data)
        .execute(db)
        .await?;
    Ok(())
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Event {
    pub kind: String,
    pub at: DateTime<Utc>,
    pub data: Json<Value>,
}

pub async fn timeline(pool: &PgPool, subscriber_id: i64, limit: i64) -> sqlx::Result<Vec<Event>> {
    // An import writes no event per new row; its entry comes from the row's `source`.
    sqlx::query_as(
        "SELECT kind, at, data FROM (
             SELECT kind, at, data, id FROM events WHERE subscriber_id = $1
             UNION ALL
             SELECT 'imported', created_at, jsonb_build_object('import', substr(source, 8)::bigint), 0
             FROM subscribers WHERE id = $1 AND source ~ '^import:[0-9]+$'
         ) e ORDER BY at DESC, id DESC LIMIT $2",
    )
        .bind(subscriber_id)
        .bind(limit)
        .fetch_all(pool)
        .await
}

/// Unsubscribes; `false` if they already were not subscribed. `how` names the path
/// (link, one-click, dashboard, complaint) for the timeline.
pub async fn unsubscribe(
    pool: &PgPool,
    id: i64,
    now: DateTime<Utc>,
    how: &str,
) -> sqlx::Result<bool> {
    let mut tx = pool.begin().await?;
    let changed = sqlx::query(
        "UPDATE subscribers SET status = 'unsubscribed', unsubscribed_at = $2
         WHERE id = $1 AND status IN ('active', 'unconfirmed')",
    )
    .bind(id)
    .bind(now)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if changed {
        record_event(&mut *tx, id, "unsubscribed", now, json!({ "via": how })).await?;
    }
    tx.commit().await?;
    Ok(changed)
}

/// A hard bounce or a complaint: the address gets no more mail (dated like an
/// unsubscribe, so an older confirmation link cannot bring it back).
pub async fn mark_left(
    conn: &mut sqlx::PgConnection,
    id: i64,
    status: Status,
    now: DateTime<Utc>,
) -> sqlx::Result<bool> {
    let changed = leave(&mut *conn, id, status, now).await?;
    if changed {
        record_event(&mut *conn, id, status.as_str(), now, json!({})).await?;
    }
    Ok(changed)
}

/// [`mark_left`] without its event, for callers that record a richer one themselves
/// (a provider's bounce or complaint report).
pub async fn leave(
    conn: &mut sqlx::PgConnection,
    id: i64,
    status: Status,
    now: DateTime<Utc>,
) -> sqlx::Result<bool> {
    Ok(sqlx::query(
        "UPDATE subscribers SET status = $2, unsubscribed_at = coalesce(unsubscribed_at, $3)
         WHERE id = $1 AND status <> $2 AND status <> 'complained'",
    )
    .bind(id)
    .bind(status)
    .bind(now)
    .execute(&mut *conn)
    .await?
    .rows_affected()
        == 1)
}

/// New consent from the address's owner lifts an erasure suppression.
pub async fn lift_suppression<'e>(db: impl PgExecutor<'e>, email: &str) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM suppressions WHERE email_hash = $1")
        .bind(email_hash(email))
        .execute(db)
        .await?;
    Ok(())
}

/// Confirms a double opt-in with a link issued at `issued`. `Ok(false)` when there was
/// nothing to confirm, or the person has unsubscribed since the link was sent (an old
/// link must not bring back someone who left).
pub async fn confirm(
    pool: &PgPool,
    id: i64,
    now: DateTime<Utc>,
    ip: &str,
    issued: DateTime<Utc>,
) -> sqlx::Result<bool> {
    let mut tx = pool.begin().await?;
    let changed = sqlx::query(
        "UPDATE subscribers SET status = 'active', confirmed_at = $2, unsubscribed_at = NULL,
                consent_at = $2, consent_method = 'double_opt_in', consent_ip = $3
         WHERE id = $1 AND status <> 'active' AND (unsubscribed_at IS NULL OR unsubscribed_at < $4)",
    )
    .bind(id)
    .bind(now)
    .bind(ip)
    .bind(issued)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if changed {
        record_event(&mut *tx, id, "confirmed", now, json!({})).await?;
        let email: String = sqlx::query_scalar("SELECT email FROM subscribers WHERE id = $1")
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
        lift_suppression(&mut *tx, &email).await?;
    }
    tx.commit().await?;
    Ok(changed)
}

pub async fn tag_names(pool: &PgPool, subscriber_id: i64) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar("SELECT t.name FROM subscribers s JOIN tags t ON t.id = ANY(s.tag_ids) WHERE s.id = $1 ORDER BY lower(t.name)")
        .bind(subscriber_id)
        .fetch_all(pool)
        .await
}

/// Everything Loopline holds about one subscriber, as JSON (self-service and dashboard).
pub async fn export(pool: &PgPool, id: i64) -> AppResult<Value> {
    let s = get(pool, id).await?.ok_or(AppError::NotFound)?;
    let tags = tag_names(pool, id).await?;
    let events = timeline(pool, id, 10_000).await?;
    Ok(json!({
        "subscriber": s,
        "tags": tags,
        "events": events,
    }))
}

/// Erasure: the row and its personal data go; events stay, detached and scrubbed, so
/// aggregate counts survive. The address is kept only as a hash, so an import cannot
/// silently add it back.
pub async fn erase(pool: &PgPool, id: i64, now: DateTime<Utc>) -> AppResult<()> {
    // Erasure locks the subscriber, then their messages; a click being stored locks a
    // message and its subscriber in the order PostgreSQL picks. Should the two meet,
    // PostgreSQL aborts one: the click batch is retried by its writer, the erasure here.
    let mut tries = 0;
    loop {
        match erase_once(pool, id, now).await {
            Err(e) if tries < 3 && is_deadlock(&e) => tries += 1,
            Ok(true) => return Ok(()),
            Ok(false) => return Err(AppError::NotFound),
            Err(e) => return Err(e.into()),
        }
    }
}

fn is_deadlock(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.code().as_deref() == Some("40P01"))
}

/// One try at [`erase`]; `false` when there is no such subscriber.
async fn erase_once(pool: &PgPool, id: i64, now: DateTime<Utc>) -> sqlx::Result<bool> {
    let mut tx = pool.begin().await?;
    let email: Option<String> =
        sqlx::query_scalar("SELECT email FROM subscribers WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
    let Some(email) = email else {
        return Ok(false);
    };
    sqlx::query("UPDATE events SET data = '{}' WHERE subscriber_id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    // Mail to them, before the row goes (deleting it sets their messages'
    // `subscriber_id` to NULL): what is queued is cancelled (a sender holding some
    // records nothing for it), and no copy keeps their address or which links they
    // clicked.
    sqlx::query(
        "WITH cancelled AS (
             DELETE FROM message_queue q USING messages m WHERE q.message_id = m.id AND m.subscriber_id = $1
         )
         UPDATE messages SET status = CASE WHEN status = 'queued' THEN 'cancelled' ELSE status END,
                to_email = '(erased)', to_name = '', data = '{}', recent_clicks = NULL
         WHERE subscriber_id = $1",
    )
    .bind(id)
    .execute(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM captured_mail c USING messages m WHERE c.message_id = m.id AND m.subscriber_id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM subscribers WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    // Import reports name rows by their address.
    sqlx::query("DELETE FROM import_report WHERE lower(value) = lower($1)")
        .bind(&email)
        .execute(&mut *tx)
        .await?;
    sqlx::query("INSERT INTO suppressions (email_hash, reason, created_at) VALUES ($1, 'erased', $2) ON CONFLICT (email_hash) DO NOTHING")
        .bind(email_hash(&email))
        .bind(now)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO events (subscriber_id, kind, at, data) VALUES (NULL, 'erased', $1, '{}')",
    )
    .bind(now)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(true)
}

/// The suppression key of an address: SHA-256 of its lower-cased form.
pub fn email_hash(email: &str) -> Vec<u8> {
    Sha256::digest(email.trim().to_lowercase().as_bytes()).to_vec()
}
