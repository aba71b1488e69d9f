//! Recording opens and clicks: judged human or machine, stored with the verdict and its
//! reason, committed before the response goes out, and folded into the subscriber's
//! engagement counters (human events only) for segments and rules.

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::PgPool;

use super::{
    classify::{
        self, BURST_WINDOW_SECS, ClickSignal, IpPrivacy, Method, OpenSignal, Reason, Verdict,
    },
    tokens::Click,
};

/// What the request carried, for the verdict and the event.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub method: Method,
    pub user_agent: Option<String>,
    pub ip: Option<IpAddr>,
    pub purpose_header: Option<String>,
}

/// How IPs are stored, with the key for hashed storage.
#[derive(Debug, Clone)]
pub struct Privacy {
    pub mode: IpPrivacy,
    pub key: [u8; 16],
}

impl Privacy {
    fn store(&self, ip: Option<IpAddr>) -> Option<String> {
        ip.map(|ip| classify::ip_for_storage(ip, self.mode, &self.key))
    }
}

/// The message an event belongs to: who got it and when.
#[derive(sqlx::FromRow)]
struct Sent {
    subscriber_id: Option<i64>,
    sent_at: Option<DateTime<Utc>>,
    links: i64,
}

async fn sent(
    pool: &PgPool,
    message_id: i64,
    now: DateTime<Utc>,
) -> sqlx::Result<Option<(Sent, i64)>> {
    type Row = (Option<i64>, Option<DateTime<Utc>>, i64, i64);
    let row: Option<Row> = sqlx::query_as(
        "SELECT m.subscriber_id, m.sent_at,
                coalesce((m.data->>'links')::bigint, 0),
                (SELECT count(DISTINCT e.data->>'position') FROM events e
                 WHERE e.message_id = m.id AND e.kind = 'clicked' AND e.at > $2 - make_interval(secs => $3))
         FROM messages m WHERE m.id = $1",
    )
    .bind(message_id)
    .bind(now)
    .bind(BURST_WINDOW_SECS as f64)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(subscriber_id, sent_at, links, recent)| {
        (
            Sent {
                subscriber_id,
                sent_at,
                links,
            },
            recent,
        )
    }))
}

fn verdict_json(reason: Reason) -> (bool, &'static str) {
    (reason.verdict() == Verdict::Human, reason.as_str())
}

/// Records an open. `false` when the message is unknown (deleted since).
pub async fn record_open(
    pool: &PgPool,
    message_id: i64,
    req: &Request,
    privacy: &Privacy,
    now: DateTime<Utc>,
) -> sqlx::Result<bool> {
    let Some((m, _)) = sent(pool, message_id, now).await? else {
        return Ok(false);
    };
    let secs = m.sent_at.map(|t| (now - t).num_seconds());
    let c = classify::classify_open(&OpenSignal {
        method: req.method,
        user_agent: req.user_agent.as_deref(),
        ip: req.ip,
        secs_since_sent: secs,
        purpose_header: req.purpose_header.as_deref(),
    });
    let (human, reason) = verdict_json(c.reason);
    let mut tx = pool.begin().await?;
    sqlx::query("INSERT INTO events (subscriber_id, message_id, kind, at, data) VALUES ($1, $2, 'opened', $3, $4)")
        .bind(m.subscriber_id)
        .bind(message_id)
        .bind(now)
        .bind(json!({
            "human": human, "reason": reason, "ua": req.user_agent, "ip": privacy.store(req.ip),
            "secs_since_sent": secs,
        }))
        .execute(&mut *tx)
        .await?;
    if human && let Some(sid) = m.subscriber_id {
        engage(&mut tx, sid, "last_open_at", now).await?;
    }
    tx.commit().await?;
    Ok(true)
}

/// A human open or click: the engagement counters segments and rules read.
async fn engage(
    conn: &mut sqlx::PgConnection,
    subscriber_id: i64,
    column: &'static str,
    now: DateTime<Utc>,
) -> sqlx::Result<()> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE subscribers SET {column} = greatest({column}, $2), last_engaged_at = greatest(last_engaged_at, $2),
                consecutive_unopened = 0 WHERE id = $1"
    )))
    .bind(subscriber_id)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Records a click on a verified link. `false` when the message is unknown.
pub async fn record_click(
    pool: &PgPool,
    click: &Click,
    req: &Request,
    privacy: &Privacy,
    now: DateTime<Utc>,
) -> sqlx::Result<bool> {
    let Some((m, recent)) = sent(pool, click.message_id, now).await? else {
        return Ok(false);
    };
    let secs = m.sent_at.map(|t| (now - t).num_seconds());
    let c = classify::classify_click(&ClickSignal {
        method: req.method,
        user_agent: req.user_agent.as_deref(),
        ip: req.ip,
        secs_since_sent: secs,
        purpose_header: req.purpose_header.as_deref(),
        distinct_links_in_burst: recent as u32 + 1,
        links_in_message: m.links as u32,
    });
    let (human, reason) = verdict_json(c.reason);
    let mut tx = pool.begin().await?;
    sqlx::query("INSERT INTO events (subscriber_id, message_id, kind, at, data) VALUES ($1, $2, 'clicked', $3, $4)")
        .bind(m.subscriber_id)
        .bind(click.message_id)
        .bind(now)
        .bind(json!({
            "position": click.position, "url": click.url, "label": click.label,
            "human": human, "reason": reason, "ua": req.user_agent, "ip": privacy.store(req.ip),
            "secs_since_sent": secs,
        }))
        .execute(&mut *tx)
        .await?;
    if c.reason == Reason::LinkBurst {
        // The burst shows what the first clicks of it were: judge them again.
        sqlx::query(
            "UPDATE events SET data = data || jsonb_build_object('human', false, 'reason', 'link_burst', 'rejudged', true)
             WHERE message_id = $1 AND kind = 'clicked' AND at > $2 - make_interval(secs => $3) AND data->>'human' = 'true'",
        )
        .bind(click.message_id)
        .bind(now)
        .bind(BURST_WINDOW_SECS as f64)
        .execute(&mut *tx)
        .await?;
    }
    if human && let Some(sid) = m.subscriber_id {
        engage(&mut tx, sid, "last_click_at", now).await?;
    }
    tx.commit().await?;
    Ok(true)
}

/// How far back a human click still earns a conversion.
pub const ATTRIBUTION_DAYS: i32 = 30;

/// The message a conversion at `at` is attributed to: the one whose link the subscriber
/// last clicked as a human (machine clicks never earn credit), within
/// [`ATTRIBUTION_DAYS`] before it.
pub async fn attributed_message(
    conn: &mut sqlx::PgConnection,
    subscriber_id: i64,
    at: DateTime<Utc>,
) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar(
        "SELECT message_id FROM events
         WHERE subscriber_id = $1 AND kind = 'clicked' AND data->>'human' = 'true'
           AND message_id IS NOT NULL AND at <= $2 AND at > $2 - make_interval(days => $3)
         ORDER BY at DESC, id DESC LIMIT 1",
    )
    .bind(subscriber_id)
    .bind(at)
    .bind(ATTRIBUTION_DAYS)
    .fetch_optional(conn)
    .await
}
