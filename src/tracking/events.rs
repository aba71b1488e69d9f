//! Recording opens and clicks: judged human or machine, stored with the verdict and its
//! reason, committed before the response goes out, and folded into the subscriber's
//! engagement counters (human events only) for segments and rules. The endpoints go
//! through [`Recorder`], which commits concurrent reactions together (group commit).

use std::{collections::HashMap, net::IpAddr};

use crate::db::Held;
use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};

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

/// One open or click to record: what it was, what the request carried and when.
#[derive(Debug, Clone)]
pub enum Reaction {
    Open {
        message_id: i64,
        req: Request,
        at: DateTime<Utc>,
    },
    Click {
        click: Click,
        req: Request,
        at: DateTime<Utc>,
    },
}

impl Reaction {
    fn message_id(&self) -> i64 {
        match self {
            Reaction::Open { message_id, .. } => *message_id,
            Reaction::Click { click, .. } => click.message_id,
        }
    }

    fn at(&self) -> DateTime<Utc> {
        match self {
            Reaction::Open { at, .. } | Reaction::Click { at, .. } => *at,
        }
    }
}

/// The message an event belongs to: who got it, when, and how many tracked links it had.
struct Sent {
    subscriber_id: Option<i64>,
    sent_at: Option<DateTime<Utc>>,
    links: i64,
}

/// Records an open. `false` when the message is unknown (deleted since).
pub async fn record_open(
    pool: &PgPool,
    message_id: i64,
    req: &Request,
    privacy: &Privacy,
    now: DateTime<Utc>,
) -> sqlx::Result<bool> {
    let r = Reaction::Open {
        message_id,
        req: req.clone(),
        at: now,
    };
    Ok(record(pool, std::slice::from_ref(&r), privacy).await?[0])
}

/// Records a click on a verified link. `false` when the message is unknown.
pub async fn record_click(
    pool: &PgPool,
    click: &Click,
    req: &Request,
    privacy: &Privacy,
    now: DateTime<Utc>,
) -> sqlx::Result<bool> {
    let r = Reaction::Click {
        click: click.clone(),
        req: req.clone(),
        at: now,
    };
    Ok(record(pool, std::slice::from_ref(&r), privacy).await?[0])
}

/// One event row, judged, before it is written.
struct Row {
    subscriber_id: Option<i64>,
    message_id: i64,
    kind: &'static str,
    at: DateTime<Utc>,
    /// The link's position for a click; `None` for an open.
    position: Option<u16>,
    reason: Reason,
    rejudged: bool,
    data: serde_json::Value,
}

/// Records opens and clicks with one read and one write statement (the write is one
/// implicit transaction, so a batch is stored whole or not at all), judged in order as
/// if they had come one after another: a click sees the clicks before it, stored or in
/// this batch, for the link-burst rule, and a burst re-judges the earlier clicks of its
/// window (stored ones in the write statement, ones in this batch before they are
/// written). Engagement counters move for the events that are still human at the end.
/// Returns, per reaction, whether its message was known (an unknown one stores
/// nothing).
pub async fn record(
    pool: &PgPool,
    reactions: &[Reaction],
    privacy: &Privacy,
) -> sqlx::Result<Vec<bool>> {
    record_on(&mut *pool.acquire().await?, reactions, privacy).await
}

/// [`record`] on a given connection.
async fn record_on(
    conn: &mut sqlx::PgConnection,
    reactions: &[Reaction],
    privacy: &Privacy,
) -> sqlx::Result<Vec<bool>> {
    let judged = judge(conn, reactions, privacy, &Unstored::default()).await?;
    write(conn, &judged).await?;
    Ok(judged.found)
}

/// The first stage of [`Recorder`]'s pipeline, public so tests can run the stages by
/// hand: judges batches one after another, each also seeing the clicks of the batches
/// judged before it, whether or not they have been written yet. [`write`] is the
/// second stage; batches must be written in the order they were judged.
#[derive(Default)]
pub struct Judging {
    unstored: Unstored,
}

impl Judging {
    /// Reads what judging needs (one statement) and judges the batch.
    pub async fn judge(
        &mut self,
        conn: &mut sqlx::PgConnection,
        reactions: &[Reaction],
        privacy: &Privacy,
    ) -> sqlx::Result<Judged> {
        let judged = judge(conn, reactions, privacy, &self.unstored).await?;
        self.unstored.note(&judged);
        Ok(judged)
    }
}

/// Clicks this process has judged whose batch may not be committed yet, per message
/// and link position: the latest time. The next batch is judged while the previous
/// one is being written, so its read cannot see them yet.
#[derive(Default)]
struct Unstored {
    clicks: HashMap<i64, HashMap<u16, DateTime<Utc>>>,
    /// When entries older than the burst window were last dropped.
    pruned: Option<DateTime<Utc>>,
}

impl Unstored {
    fn note(&mut self, judged: &Judged) {
        let mut newest = None;
        for &(message_id, position, at) in &judged.clicks {
            let latest = self
                .clicks
                .entry(message_id)
                .or_default()
                .entry(position)
                .or_insert(at);
            *latest = (*latest).max(at);
            newest = newest.max(Some(at));
        }
        // Anything older than the window is of no use to a later click; dropped about
        // once a window so the map stays small without a walk per batch.
        let Some(newest) = newest else { return };
        let window = chrono::Duration::seconds(BURST_WINDOW_SECS);
        if self.pruned.is_none_or(|p| newest - p > window) {
            let since = newest - window;
            self.clicks.retain(|_, links| {
                links.retain(|_, at| *at > since);
                !links.is_empty()
            });
            self.pruned = Some(newest);
        }
    }
}

/// A batch judged and ready to be written by [`write`].
pub struct Judged {
    /// Per reaction, whether its message was known.
    found: Vec<bool>,
    /// The batch's clicks: message, link position, time.
    clicks: Vec<(i64, u16, DateTime<Utc>)>,
    /// The same grouped per message, for `messages.recent_clicks`.
    latest: LatestClicks,
    rows: Rows,
}

/// Per message clicked in a batch, the latest click of each of its links (epoch ms), as
/// the write statement merges them into `messages.recent_clicks`: one link as
/// `position` and `at_ms`; several as a JSON object in `several`.
#[derive(Default)]
struct LatestClicks {
    message_ids: Vec<i64>,
    positions: Vec<String>,
    at_ms: Vec<i64>,
    several: Vec<Option<serde_json::Value>>,
}

impl LatestClicks {
    /// From a batch's clicks (message, link position, time).
    fn of(clicks: &[(i64, u16, DateTime<Utc>)]) -> Self {
        // In message order: with the usual plan (a nested loop over the arrays) the
        // UPDATE then locks rows in the same order as another process's batch does,
        // so the two do not deadlock.
        let mut per_message: std::collections::BTreeMap<i64, Vec<(u16, i64)>> = Default::default();
        for &(message_id, position, at) in clicks {
            let links = per_message.entry(message_id).or_default();
            let at = at.timestamp_millis();
            match links.iter_mut().find(|(p, _)| *p == position) {
                Some((_, latest)) => *latest = (*latest).max(at),
                None => links.push((position, at)),
            }
        }
        let mut out = LatestClicks::default();
        for (message_id, links) in per_message {
            out.message_ids.push(message_id);
            if let [(position, at)] = links[..] {
                out.positions.push(position.to_string());
                out.at_ms.push(at);
                out.several.push(None);
            } else {
                out.positions.push(String::new());
                out.at_ms.push(0);
                out.several.push(Some(serde_json::Value::Object(
                    links
                        .into_iter()
                        .map(|(p, at)| (p.to_string(), at.into()))
                        .collect(),
                )));
            }
        }
        out
    }
}

impl Judged {
    /// Per reaction, whether its message was known (an unknown one stores nothing).
    pub fn found(&self) -> &[bool] {
        &self.found
    }
}

/// The write statement's parameters, column by column.
#[derive(Default)]
struct Rows {
    sids: Vec<Option<i64>>,
    mids: Vec<i64>,
    kinds: Vec<&'static str>,
    ats: Vec<DateTime<Utc>>,
    datas: Vec<serde_json::Value>,
    burst_mids: Vec<i64>,
    burst_froms: Vec<DateTime<Utc>>,
    /// The subscribers of `burst_mids`: whose stored clicks a burst may re-judge.
    burst_sids: Vec<i64>,
    engaged_ids: Vec<i64>,
    opens: Vec<Option<DateTime<Utc>>>,
    clicks: Vec<Option<DateTime<Utc>>>,
}

/// Reads what judging needs (one statement) and judges the batch. `unstored` adds the
/// clicks of batches judged before this one and maybe not committed yet.
async fn judge(
    conn: &mut sqlx::PgConnection,
    reactions: &[Reaction],
    privacy: &Privacy,
    unstored: &Unstored,
) -> sqlx::Result<Judged> {
    if reactions.is_empty() {
        return Ok(Judged {
            found: Vec::new(),
            clicks: Vec::new(),
            latest: LatestClicks::default(),
            rows: Rows::default(),
        });
    }
    let window = chrono::Duration::seconds(BURST_WINDOW_SECS);
    let mut ids: Vec<i64> = reactions.iter().map(Reaction::message_id).collect();
    ids.sort_unstable();
    ids.dedup();
    // One read: each message, and (for a batch with clicks) the latest click of each of
    // its links, kept on the message row (`recent_clicks`), of which those within the
    // window of the batch's earliest click count (enough to count distinct links for
    // every click in the batch). The small object is filtered here: unnesting it in SQL
    // (`jsonb_each_text`, two aggregates) made the read cost twice as much.
    let since = reactions
        .iter()
        .filter(|r| matches!(r, Reaction::Click { .. }))
        .map(Reaction::at)
        .min()
        .map(|earliest| earliest - window);
    type SentRow = (
        i64,
        Option<i64>,
        Option<DateTime<Utc>>,
        i64,
        Option<sqlx::types::Json<HashMap<String, serde_json::Value>>>,
    );
    let found_rows: Vec<SentRow> = sqlx::query_as(
        "SELECT id, subscriber_id, sent_at, coalesce((data->>'links')::bigint, 0),
                CASE WHEN $2 THEN recent_clicks END
         FROM messages WHERE id = ANY($1)",
    )
    .bind(&ids)
    .bind(since.is_some())
    .fetch_all(&mut *conn)
    .await?;
    let since_ms = since.map(|t| t.timestamp_millis());
    let mut sent: HashMap<i64, Sent> = HashMap::with_capacity(found_rows.len());
    let mut recent: HashMap<i64, HashMap<u16, DateTime<Utc>>> = HashMap::new();
    for (id, subscriber_id, sent_at, links, kept) in found_rows {
        sent.insert(
            id,
            Sent {
                subscriber_id,
                sent_at,
                links,
            },
        );
        let links = recent.entry(id).or_default();
        if let (Some(kept), Some(since_ms)) = (kept, since_ms) {
            // Anything but a link position and epoch milliseconds (never written by
            // Loopline) is skipped: these are hints for the burst rule.
            for (position, at_ms) in kept.0 {
                if let Some(at_ms) = at_ms.as_i64()
                    && at_ms > since_ms
                    && let Ok(position) = position.parse::<u16>()
                    && let Some(at) = DateTime::from_timestamp_millis(at_ms)
                {
                    links.insert(position, at);
                }
            }
        }
        if let Some(mine) = unstored.clicks.get(&id) {
            for (&position, &at) in mine {
                let latest = links.entry(position).or_insert(at);
                *latest = (*latest).max(at);
            }
        }
    }

    let mut found = Vec::with_capacity(reactions.len());
    let mut rows: Vec<Row> = Vec::with_capacity(reactions.len());
    // Messages whose stored clicks a burst re-judges, from when.
    let mut bursts: HashMap<i64, DateTime<Utc>> = HashMap::new();
    for r in reactions {
        let Some(m) = sent.get(&r.message_id()) else {
            found.push(false);
            continue;
        };
        found.push(true);
        let now = r.at();
        let secs = m.sent_at.map(|t| (now - t).num_seconds());
        let row = match r {
            Reaction::Open {
                message_id, req, ..
            } => {
                let c = classify::classify_open(&OpenSignal {
                    method: req.method,
                    user_agent: req.user_agent.as_deref(),
                    ip: req.ip,
                    secs_since_sent: secs,
                    purpose_header: req.purpose_header.as_deref(),
                });
                let (human, reason) = verdict_json(c.reason);
                Row {
                    subscriber_id: m.subscriber_id,
                    message_id: *message_id,
                    kind: "opened",
                    at: now,
                    position: None,
                    reason: c.reason,
                    rejudged: false,
                    data: json!({
                        "human": human, "reason": reason, "ua": req.user_agent,
                        "ip": privacy.store(req.ip), "secs_since_sent": secs,
                    }),
                }
            }
            Reaction::Click { click, req, .. } => {
                let links = recent.entry(click.message_id).or_default();
                let since = now - window;
                let distinct = links
                    .iter()
                    .filter(|&(&p, &at)| p != click.position && at > since)
                    .count()
                    + 1;
                let c = classify::classify_click(&ClickSignal {
                    method: req.method,
                    user_agent: req.user_agent.as_deref(),
                    ip: req.ip,
                    secs_since_sent: secs,
                    purpose_header: req.purpose_header.as_deref(),
                    distinct_links_in_burst: distinct as u32,
                    links_in_message: m.links as u32,
                });
                let latest = links.entry(click.position).or_insert(now);
                *latest = (*latest).max(now);
                if c.reason == Reason::LinkBurst {
                    // The burst shows what the first clicks of it were: judge them again.
                    let from = bursts.entry(click.message_id).or_insert(since);
                    *from = (*from).min(since);
                    for earlier in rows.iter_mut().filter(|e| {
                        e.message_id == click.message_id
                            && e.position.is_some()
                            && e.at > since
                            && e.reason.verdict() == Verdict::Human
                    }) {
                        earlier.reason = Reason::LinkBurst;
                        earlier.rejudged = true;
                    }
                }
                let (human, reason) = verdict_json(c.reason);
                Row {
                    subscriber_id: m.subscriber_id,
                    message_id: click.message_id,
                    kind: "clicked",
                    at: now,
                    position: Some(click.position),
                    reason: c.reason,
                    rejudged: false,
                    data: json!({
                        "position": click.position, "url": click.url, "label": click.label,
                        "human": human, "reason": reason, "ua": req.user_agent,
                        "ip": privacy.store(req.ip), "secs_since_sent": secs,
                    }),
                }
            }
        };
        rows.push(row);
    }
    let clicks_judged: Vec<(i64, u16, DateTime<Utc>)> = rows
        .iter()
        .filter_map(|r| r.position.map(|p| (r.message_id, p, r.at)))
        .collect();
    let latest = LatestClicks::of(&clicks_judged);

    // Counters: per subscriber, the latest human open and click of the batch.
    let mut engaged: HashMap<i64, LatestHuman> = HashMap::new();
    let n = rows.len();
    let (mut sids, mut mids, mut kinds, mut ats, mut datas) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for mut row in rows {
        if row.rejudged {
            let (human, reason) = verdict_json(row.reason);
            if let Some(d) = row.data.as_object_mut() {
                d.insert("human".into(), human.into());
                d.insert("reason".into(), reason.into());
                d.insert("rejudged".into(), true.into());
            }
        }
        if row.reason.verdict() == Verdict::Human
            && let Some(sid) = row.subscriber_id
        {
            let (open, click) = engaged.entry(sid).or_default();
            let slot = if row.kind == "opened" { open } else { click };
            *slot = (*slot).max(Some(row.at));
        }
        sids.push(row.subscriber_id);
        mids.push(row.message_id);
        kinds.push(row.kind);
        ats.push(row.at);
        datas.push(row.data);
    }
    let (burst_mids, burst_froms): (Vec<i64>, Vec<DateTime<Utc>>) = bursts.into_iter().unzip();
    let burst_sids: Vec<i64> = burst_mids
        .iter()
        .filter_map(|m| sent.get(m).and_then(|s| s.subscriber_id))
        .collect();
    let mut engaged: Vec<_> = engaged.into_iter().collect();
    engaged.sort_unstable_by_key(|(sid, _)| *sid);
    let engaged_ids: Vec<i64> = engaged.iter().map(|(sid, _)| *sid).collect();
    let opens: Vec<Option<DateTime<Utc>>> = engaged.iter().map(|(_, (o, _))| *o).collect();
    let clicks: Vec<Option<DateTime<Utc>>> = engaged.iter().map(|(_, (_, c))| *c).collect();
    Ok(Judged {
        found,
        clicks: clicks_judged,
        latest,
        rows: Rows {
            sids,
            mids,
            kinds,
            ats,
            datas,
            burst_mids,
            burst_froms,
            burst_sids,
            engaged_ids,
            opens,
            clicks,
        },
    })
}

/// Writes a judged batch in one statement, so one implicit transaction and one commit:
/// re-judge stored clicks of bursts (the statement's snapshot does not see the rows it
/// inserts), insert the events, keep each message's latest click per link
/// (`messages.recent_clicks`, what judging reads), move the counters of human events. The
/// `cardinality(…) > 0` gates are evaluated once, so an empty part scans nothing
/// whatever plan PostgreSQL picked.
///
/// A batch with a burst may re-judge clicks that earlier batches stored as human, and
/// those moved their subscriber's counters (last click, last engagement, unopened in a
/// row back to 0). Such a batch is written in a transaction of its own, and the
/// re-judged subscribers' counters are counted again from what is then stored before it
/// commits ([`recount_engagement`]), so a scanner's first click never leaves its
/// subscriber looking engaged.
pub async fn write(conn: &mut sqlx::PgConnection, judged: &Judged) -> sqlx::Result<()> {
    use sqlx::Connection;
    if judged.rows.mids.is_empty() {
        return Ok(());
    }
    if judged.rows.burst_mids.is_empty() {
        write_statement(conn, judged).await?;
        return Ok(());
    }
    let mut tx = conn.begin().await?;
    // Every subscriber the batch may change, locked first and in id order (the order
    // the write statement and other batches update them in). So the recount, a later
    // statement with a later snapshot, counts whatever a sender or another process's
    // batch committed for them before, and whatever they commit after waits and
    // applies on top.
    let mut changing: Vec<i64> = judged
        .rows
        .engaged_ids
        .iter()
        .chain(&judged.rows.burst_sids)
        .copied()
        .collect();
    changing.sort_unstable();
    changing.dedup();
    sqlx::query("SELECT 1 FROM subscribers WHERE id = ANY($1) ORDER BY id FOR UPDATE")
        .bind(&changing)
        .execute(&mut *tx)
        .await?;
    let rejudged = write_statement(&mut tx, judged).await?;
    if !rejudged.is_empty() {
        recount_engagement(&mut tx, &rejudged).await?;
    }
    tx.commit().await
}

/// Sets the engagement counters of `subscribers` from their stored events, as if only
/// the events human now had ever moved them: the latest human open and click, and the
/// marketing mail sent since the later of the two (what the sender counts up and a
/// human open or click resets).
async fn recount_engagement(
    conn: &mut sqlx::PgConnection,
    subscribers: &[i64],
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE subscribers s
         SET last_open_at = h.open_at, last_click_at = h.click_at,
             last_engaged_at = greatest(h.open_at, h.click_at),
             consecutive_unopened = (
                 SELECT count(*)::int FROM messages m
                 WHERE m.subscriber_id = s.id AND m.marketing AND m.sent_at IS NOT NULL
                   AND m.sent_at > coalesce(greatest(h.open_at, h.click_at), '-infinity'))
         FROM (SELECT sid,
                      (SELECT max(e.at) FROM events e WHERE e.subscriber_id = sid
                          AND e.kind = 'opened' AND e.data->>'human' = 'true') AS open_at,
                      (SELECT max(e.at) FROM events e WHERE e.subscriber_id = sid
                          AND e.kind = 'clicked' AND e.data->>'human' = 'true') AS click_at
               FROM unnest($1::bigint[]) AS sid) h
         WHERE s.id = h.sid",
    )
    .bind(subscribers)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The statement of [`write`]; returns the subscribers whose stored clicks it re-judged
/// (in id order).
async fn write_statement(conn: &mut sqlx::PgConnection, judged: &Judged) -> sqlx::Result<Vec<i64>> {
    let r = &judged.rows;
    sqlx::query_scalar(
        "WITH rejudged AS (
             UPDATE events e
             SET data = e.data || jsonb_build_object('human', false, 'reason', 'link_burst', 'rejudged', true)
             FROM unnest($6::bigint[], $7::timestamptz[]) AS b(message_id, since)
             WHERE cardinality($6::bigint[]) > 0
               AND e.message_id = b.message_id AND e.kind = 'clicked' AND e.at > b.since
               AND e.data->>'human' = 'true'
             RETURNING e.subscriber_id
         ), inserted AS (
             INSERT INTO events (subscriber_id, message_id, kind, at, data)
             SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::timestamptz[], $5::jsonb[])
             RETURNING 1
         ), latest_clicks AS (
             -- Each message's latest click per link, read by the next batches' judging:
             -- merged key by key keeping the later time (batches of different processes
             -- may commit out of order).
             -- One row per message (grouped by the caller). The usual case, one link
             -- clicked in the batch, is one key compared and maybe replaced; only a
             -- message with several takes the general merge (CASE evaluates it for
             -- those rows alone).
             UPDATE messages m
             SET recent_clicks = CASE
                 WHEN l.several IS NULL THEN
                     CASE WHEN (m.recent_clicks->>l.position)::bigint >= l.at_ms THEN m.recent_clicks
                          ELSE coalesce(m.recent_clicks, '{}') || jsonb_build_object(l.position, l.at_ms) END
                 ELSE (
                     SELECT jsonb_object_agg(k, latest)
                     FROM (SELECT key AS k, max(value::bigint) AS latest
                           FROM (SELECT * FROM jsonb_each_text(m.recent_clicks)
                                 UNION ALL SELECT * FROM jsonb_each_text(l.several)) both_sides
                           GROUP BY key) merged)
             END
             FROM unnest($11::bigint[], $12::text[], $13::bigint[], $14::jsonb[]) AS l(message_id, position, at_ms, several)
             WHERE cardinality($11::bigint[]) > 0 AND m.id = l.message_id
             RETURNING 1
         ), engaged AS (
             UPDATE subscribers s
             SET last_open_at = greatest(s.last_open_at, v.open_at),
                 last_click_at = greatest(s.last_click_at, v.click_at),
                 last_engaged_at = greatest(s.last_engaged_at, v.open_at, v.click_at),
                 consecutive_unopened = 0
             FROM unnest($8::bigint[], $9::timestamptz[], $10::timestamptz[]) AS v(id, open_at, click_at)
             WHERE cardinality($8::bigint[]) > 0 AND s.id = v.id
             RETURNING 1
         )
         SELECT coalesce(array_agg(DISTINCT subscriber_id ORDER BY subscriber_id)
                         FILTER (WHERE subscriber_id IS NOT NULL), '{}')
         FROM rejudged",
    )
    .bind(&r.sids)
    .bind(&r.mids)
    .bind(&r.kinds)
    .bind(&r.ats)
    .bind(&r.datas)
    .bind(&r.burst_mids)
    .bind(&r.burst_froms)
    .bind(&r.engaged_ids)
    .bind(&r.opens)
    .bind(&r.clicks)
    .bind(&judged.latest.message_ids)
    .bind(&judged.latest.positions)
    .bind(&judged.latest.at_ms)
    .bind(&judged.latest.several)
    .fetch_one(&mut *conn)
    .await
}

/// A subscriber's latest human open and latest human click in a batch.
type LatestHuman = (Option<DateTime<Utc>>, Option<DateTime<Utc>>);

fn verdict_json(reason: Reason) -> (bool, &'static str) {
    (reason.verdict() == Verdict::Human, reason.as_str())
}

/// Why a reaction could not be recorded.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// The whole batch failed for a reason not specific to this reaction.
    #[error("{0}")]
    Batch(std::sync::Arc<sqlx::Error>),
    #[error("the event writer has stopped")]
    Stopped,
}

/// Most reactions written in one transaction.
const MAX_BATCH: usize = 512;

type Pending = (Reaction, Reply);

/// Group commit for opens and clicks. Requests hand their reaction to one writer per
/// process and wait for its answer; the writer takes everything that has arrived (up
/// to [`MAX_BATCH`]), records it in one transaction, and answers each request after the
/// commit. So every event is durable before its response, and under load one commit
/// (one WAL flush) serves hundreds of requests.
///
/// The writer is a two-stage pipeline, each stage on a connection it keeps while there
/// is work: the next batch is read and judged while the previous one is being written
/// and committed, so a batch cycle costs the longer of the two, not their sum. Writes
/// stay one after another, in arrival order, so each sees the clicks committed before
/// it; a batch judged while its predecessor was still in flight also counts that
/// predecessor's clicks (held in memory until the window passes) for the link-burst
/// rule. A batch the database refused is retried one reaction at a time, so one bad row
/// fails only its own request; a lost connection fails the batch at once.
#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::Sender<Pending>,
}

impl Recorder {
    /// Starts the writer on a thread of its own, with a Tokio runtime and two database
    /// connections of its own (to the database `pool` connects to: two more than
    /// `DATABASE_MAX_CONNECTIONS` per process). It ends when the last `Recorder` clone
    /// is dropped, after answering everything queued, and closes its connections.
    ///
    /// Its own thread because every request waits on it: as a task among the HTTP
    /// connections' tasks, each of its awaits on the database queued it behind hundreds
    /// of them, which stretched each batch's cycle (and so every request's wait) by
    /// milliseconds under load. A thread that mostly sleeps is woken at once by the
    /// operating system.
    pub fn start(pool: PgPool, privacy: Privacy) -> Self {
        let (tx, rx) = mpsc::channel(8 * MAX_BATCH);
        let options = pool.connect_options().as_ref().clone();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("building the event writer's runtime");
        std::thread::Builder::new()
            .name("event-writer".into())
            .spawn(move || {
                let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    runtime.block_on(async move {
                        // One connection per stage (a one-by-one retry uses the
                        // writing stage's).
                        let pool = crate::db::pool_options(2).connect_lazy_with(options);
                        let (judged_tx, judged_rx) = mpsc::channel(1);
                        let judging = tokio::spawn(judge_batches(
                            pool.clone(),
                            privacy.clone(),
                            rx,
                            judged_tx,
                        ));
                        write_batches(pool.clone(), privacy, judged_rx).await;
                        if judging.await.is_err() {
                            tracing::error!("the open and click judging stage panicked");
                        }
                        pool.close().await;
                    })
                }));
                if ran.is_err() {
                    tracing::error!(
                        "the open and click writer panicked: opens and clicks are no longer recorded until Loopline restarts"
                    );
                }
            })
            .expect("starting the event writer's thread");
        Self { tx }
    }

    /// Records one reaction; returns once it is committed. `false` when its message is
    /// unknown.
    pub async fn record(&self, reaction: Reaction) -> Result<bool, RecordError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send((reaction, reply))
            .await
            .map_err(|_| RecordError::Stopped)?;
        answer.await.map_err(|_| RecordError::Stopped)?
    }
}

type Reply = oneshot::Sender<Result<bool, RecordError>>;

/// What the judging stage hands to the writing stage.
enum Work {
    /// Judged: write it, then answer (the reactions are kept for a one-by-one retry).
    Judged(Vec<Reaction>, Box<Judged>, Vec<Reply>),
    /// The database refused to read for this batch: record each on its own.
    OneByOne(Vec<Reaction>, Vec<Reply>),
}

fn fail_all(replies: Vec<Reply>, e: sqlx::Error) {
    let e = std::sync::Arc::new(e);
    for reply in replies {
        let _ = reply.send(Err(RecordError::Batch(e.clone())));
    }
}

async fn judge_batches(
    pool: PgPool,
    privacy: Privacy,
    mut rx: mpsc::Receiver<Pending>,
    out: mpsc::Sender<Work>,
) {
    let mut held = Held::new(pool);
    let mut judging = Judging::default();
    let mut pending: Vec<Pending> = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut pending, MAX_BATCH).await > 0 {
        let (reactions, replies): (Vec<Reaction>, Vec<_>) = pending.drain(..).unzip();
        let judged = match held.get().await {
            Ok(conn) => judging.judge(conn, &reactions, &privacy).await,
            Err(e) => Err(e),
        };
        let work = match judged {
            Ok(judged) => Work::Judged(reactions, Box::new(judged), replies),
            Err(sqlx::Error::Database(e)) if reactions.len() > 1 => {
                tracing::warn!(error = %e, batch = reactions.len(), "judging a batch of opens and clicks failed; recording them one by one");
                Work::OneByOne(reactions, replies)
            }
            Err(e) => {
                held.release();
                fail_all(replies, e);
                continue;
            }
        };
        if rx.is_empty() {
            held.release();
        }
        if out.send(work).await.is_err() {
            return;
        }
    }
}

async fn write_batches(pool: PgPool, privacy: Privacy, mut rx: mpsc::Receiver<Work>) {
    let mut held = Held::new(pool);
    while let Some(work) = rx.recv().await {
        match work {
            Work::Judged(reactions, judged, replies) => {
                let written = match held.get().await {
                    Ok(conn) => write(conn, &judged).await,
                    Err(e) => Err(e),
                };
                match written {
                    Ok(()) => {
                        for (reply, found) in replies.into_iter().zip(judged.found) {
                            let _ = reply.send(Ok(found));
                        }
                    }
                    // A statement the database refused (a row it would not take): find
                    // which by recording each on its own. Anything else (no
                    // connection, the pool timed out) would fail each retry the same
                    // way, slowly: answer at once.
                    Err(sqlx::Error::Database(e)) if replies.len() > 1 => {
                        tracing::warn!(error = %e, batch = replies.len(), "recording a batch of opens and clicks failed; retrying one by one");
                        held.release();
                        one_by_one(&mut held, &privacy, reactions, replies).await;
                    }
                    Err(e) => {
                        held.release();
                        fail_all(replies, e);
                    }
                }
            }
            Work::OneByOne(reactions, replies) => {
                one_by_one(&mut held, &privacy, reactions, replies).await;
            }
        }
        if rx.is_empty() {
            held.release();
        }
    }
}

/// Records each reaction on its own, so one the database refuses fails only its own
/// request; on the writing stage's connection, so the retry never waits for one more
/// (the judging stage may be holding the other while it waits to hand over its next
/// batch).
async fn one_by_one(
    held: &mut Held,
    privacy: &Privacy,
    reactions: Vec<Reaction>,
    replies: Vec<Reply>,
) {
    for (reaction, reply) in reactions.into_iter().zip(replies) {
        let result = match held.get().await {
            Ok(conn) => record_on(conn, std::slice::from_ref(&reaction), privacy).await,
            Err(e) => Err(e),
        };
        if result.is_err() {
            held.release();
        }
        let _ = reply.send(result.map(|found| found[0]).map_err(RecordError::from));
    }
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
