//! Sender workers: claim due outbox rows (SKIP LOCKED, within the shared rate limits),
//! render and send them, and record each outcome with its SMTP reply.
//!
//! Nothing is lost: a claim is a lease, so mail held by a process that died goes out
//! after the lease expires (the only case where a recipient can get a message twice:
//! it was handed to the SMTP server and the process died before recording that; a
//! database that goes away for a moment is waited for, so its outcomes are kept). A
//! living sender renews the leases of its unrecorded claims, so a send slower than the
//! lease is not taken over and sent again by another process. SMTP
//! 4xx replies retry with backoff; 5xx replies mark the message bounced, and a hard
//! bounce suppresses the address. When the server cannot be reached at all, messages go
//! back to the queue without spending an attempt and the sender pauses.
//!
//! The queue is its own narrow table, `message_queue` (a row while a message waits or is
//! in flight): a claim changes only its unindexed lease columns (a message being sent
//! is a queued one with a live lease), and an outcome deletes it and changes only
//! unindexed columns of `messages`, so PostgreSQL can make both heap-only updates
//! instead of writing into every index of `messages`.
//!
//! Claiming, sending and recording overlap (see `Sender::drain`); rendering goes
//! through a per-sender [`RenderCache`].

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use chrono::{DateTime, Utc};
use lettre::message::{
    Mailbox, Message, MultiPart, SinglePart,
    header::{ContentType, HeaderName, HeaderValue},
};
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{
    outbox::parse_format,
    render::{Compiled, Draft, Link, RenderCache},
    smtp::{Chained, Opened, SendError, SmtpPool},
};
use crate::{
    audience::{links, subscribers},
    clock::SharedClock,
    db::Held,
    signing::SigningKey,
    tracking::tokens,
};

/// How long a recorder waits for more outcomes before a small group is written.
const GROUP_WAIT: Duration = Duration::from_millis(3);
/// Recorders writing outcomes at once (see `drain`).
const RECORDERS: usize = 2;
/// Mail sent (or being sent) and not yet recorded is held to this many claims' worth
/// (a claim is 4 × concurrency): what a `kill -9` can send twice. One claim's worth
/// kept the SMTP connections waiting on the recorders a third of the time.
pub const WINDOW_CLAIMS: usize = 2;

/// Where mail goes.
#[derive(Clone)]
pub enum Transport {
    Smtp(SmtpPool),
    /// No SMTP configured: keep the exact bytes in `captured_mail` (the Outbox preview).
    Capture,
}

impl Transport {
    /// From an `SMTP_URL`: `smtps://` is implicit TLS; `smtp://` requires STARTTLS unless
    /// the host is on this machine or the URL says `?tls=…` itself.
    /// `timeout` bounds opening a session and each message's exchange (`SMTP_TIMEOUT_SECS`).
    pub fn from_url(
        url: &str,
        pool_size: u32,
        timeout: Duration,
        extra_ca: Option<&[u8]>,
    ) -> anyhow::Result<Self> {
        let url = with_default_tls(url);
        let pool = SmtpPool::from_url(&url, pool_size as usize, timeout, extra_ca)?;
        Ok(Self::Smtp(pool))
    }
}

#[derive(Debug, Clone)]
pub struct SendSettings {
    /// Messages in flight at once per process (also the SMTP connection pool size).
    pub concurrency: usize,
    /// Shared across every process; 0 means no limit.
    pub per_second: i32,
    pub per_hour: i32,
    /// How long a claim holds before another sender may take the message.
    pub lease: chrono::Duration,
    pub from_email: String,
    /// The `mailto:` of `List-Unsubscribe` (mail to it reaches Loopline by an inbound
    /// webhook: `feedback::mailto_unsubscribe_token`).
    pub unsubscribe_mailto: String,
    pub from_name: String,
    pub public_url: String,
    /// Signs every message when configured.
    pub dkim: Option<Arc<super::dkim::DkimSigner>>,
    /// Providers whose webhooks are configured: mail carries the header each one echoes
    /// back (`feedback::echo_headers`), so their reports find the message.
    pub echo_to: Vec<super::feedback::Provider>,
}

/// Counts of one round, for tests and logs.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Round {
    pub sent: usize,
    pub deferred: usize,
    pub bounced: usize,
    pub failed: usize,
    pub suppressed: usize,
    /// Handed back without an attempt because the server could not be reached.
    pub unreachable: usize,
}

impl Round {
    fn add(&mut self, other: &Round) {
        self.sent += other.sent;
        self.deferred += other.deferred;
        self.bounced += other.bounced;
        self.failed += other.failed;
        self.suppressed += other.suppressed;
        self.unreachable += other.unreachable;
    }

    pub fn total(&self) -> usize {
        self.sent + self.deferred + self.bounced + self.failed + self.suppressed + self.unreachable
    }
}

#[derive(Clone)]
pub struct Sender {
    pool: PgPool,
    clock: SharedClock,
    keys: SigningKey,
    transport: Transport,
    settings: Arc<SendSettings>,
    worker: Uuid,
    /// What every message of a body shares, rendered once (see `render::RenderCache`).
    renders: RenderCache,
    /// Message bodies (never changed once written) with their templates compiled,
    /// fetched once per body instead of with every claimed row.
    bodies: Arc<Mutex<HashMap<i64, Arc<Body>>>>,
    /// Messages this sender has claimed and not yet recorded: their leases are renewed
    /// while they wait, are sent, and are recorded.
    held: Arc<Mutex<HashSet<i64>>>,
}

/// A claimed message with everything needed to send it.
#[derive(Clone, sqlx::FromRow)]
struct Claimed {
    id: i64,
    attempts: i32,
    max_attempts: i32,
    marketing: bool,
    body_id: i64,
    subscriber_id: Option<i64>,
    to_email: String,
    to_name: String,
    data: sqlx::types::Json<Value>,
    sub_status: Option<String>,
    sub_name: Option<String>,
    sub_language: Option<String>,
    sub_fields: Option<sqlx::types::Json<Value>>,
    /// The claim took over an expired lease (its sender died or stalled).
    taken_over: bool,
    /// Filled in by `claim` from the body cache.
    #[sqlx(skip)]
    body: Option<Arc<Body>>,
}

impl Claimed {
    fn body(&self) -> &Body {
        self.body.as_deref().expect("`claim` fills in every body")
    }
}

/// A message body as the sender uses it.
struct Body {
    purpose: String,
    from_name: String,
    /// The draft compiled, or why it does not compile (each message then fails).
    compiled: Result<Compiled, String>,
}

/// Bodies kept per sender; the cache starts over when full.
const BODIES_KEPT: usize = 256;

/// What the local capture store keeps of a message.
struct Captured {
    raw: Vec<u8>,
    subject: String,
    html: String,
    text: String,
}

/// A built message and what recording it needs.
struct Built {
    /// The bytes that go on the wire (DKIM-signed when configured).
    raw: Vec<u8>,
    envelope: lettre::address::Envelope,
    message_id: String,
    links: usize,
    subject: String,
    html: String,
    text: String,
}

enum Outcome {
    Sent {
        reply: String,
        message_id: String,
        links: usize,
        captured: Option<Captured>,
    },
    Deferred {
        reply: String,
    },
    Bounced {
        reply: String,
        hard: bool,
    },
    Failed {
        reason: String,
    },
    Suppressed {
        reason: &'static str,
    },
    Unreachable {
        reason: String,
    },
}

/// What to do with a claimed message (see `Sender::prepare`).
enum Prepared {
    Done(Outcome),
    Smtp(Built),
}

/// A claimed message a slot holds with its window place: built if it was ready, and
/// opened if its commands already went out behind the previous body.
struct Carried {
    m: Claimed,
    permit: OwnedSemaphorePermit,
    built: Option<Built>,
    opened: Option<Opened>,
}

impl Carried {
    fn new(m: Claimed, permit: OwnedSemaphorePermit, built: Option<Built>) -> Self {
        Self {
            m,
            permit,
            built,
            opened: None,
        }
    }
}

/// What the sending slots of one `drain` share.
#[derive(Clone)]
struct Ways {
    /// Claimed messages, in claim order.
    claimed: Arc<tokio::sync::Mutex<mpsc::Receiver<Claimed>>>,
    /// Places for messages sent or sending and not yet recorded.
    window: Arc<Semaphore>,
    /// The server was unreachable: what is not yet tried goes back unspent.
    stop: Arc<AtomicBool>,
    to_record: mpsc::Sender<(Claimed, Outcome, OwnedSemaphorePermit)>,
}

impl Ways {
    async fn record(&self, m: Claimed, outcome: Outcome, permit: OwnedSemaphorePermit) {
        // Only fails if the recorder panicked; its error is reported by `drain`.
        let _ = self.to_record.send((m, outcome, permit)).await;
    }

    /// An outcome that says the server is unreachable stops the sending.
    fn judged(&self, outcome: Outcome) -> Outcome {
        if matches!(outcome, Outcome::Unreachable { .. }) {
            self.stop.store(true, Ordering::Relaxed);
        }
        outcome
    }

    /// The next claimed message with its window place, if both are there right now.
    fn next_waiting(&self) -> Option<(Claimed, OwnedSemaphorePermit)> {
        let permit = self.window.clone().try_acquire_owned().ok()?;
        let m = self.claimed.try_lock().ok()?.try_recv().ok()?;
        Some((m, permit))
    }
}

/// The outcome of a message the SMTP server was given.
fn sent_outcome(
    b: Built,
    reply: Result<lettre::transport::smtp::response::Response, SendError>,
) -> Outcome {
    match reply {
        Ok(r) => Outcome::Sent {
            reply: format!("{} {}", r.code(), r.message().collect::<Vec<_>>().join(" ")),
            message_id: b.message_id,
            links: b.links,
            captured: None,
        },
        Err(e) => classify_error(&e),
    }
}

impl Sender {
    pub fn new(
        pool: PgPool,
        clock: SharedClock,
        keys: SigningKey,
        transport: Transport,
        settings: SendSettings,
    ) -> Self {
        Self {
            pool,
            clock,
            keys,
            transport,
            settings: Arc::new(settings),
            worker: Uuid::new_v4(),
            renders: RenderCache::default(),
            bodies: Arc::default(),
            held: Arc::default(),
        }
    }

    /// Sends everything due now; returns the totals. For tests and the CLI: no sleeps.
    pub async fn run_until_idle(&self) -> anyhow::Result<Round> {
        let mut total = Round::default();
        loop {
            let round = self.drain(CancellationToken::new()).await?;
            if round.total() == 0 {
                return Ok(total);
            }
            total.add(&round);
            if round.unreachable > 0 {
                return Ok(total);
            }
        }
    }

    /// The background loop: send while there is mail, sleep until the next is due or a
    /// notification arrives, pause when the SMTP server is unreachable.
    pub async fn run(self, shutdown: CancellationToken) {
        let wake = Arc::new(Notify::new());
        let listener = tokio::spawn(crate::jobs::listen(
            self.pool.clone(),
            "loopline_outbox",
            wake.clone(),
            shutdown.clone(),
        ));
        tracing::info!(worker = %self.worker, "sender started");
        while !shutdown.is_cancelled() {
            let pause = match self.drain(shutdown.clone()).await {
                Ok(r) if r.unreachable > 0 => Duration::from_secs(5),
                Ok(r) if r.total() > 0 => continue,
                Ok(_) => self.time_until_due().await,
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "sending round failed; retrying shortly");
                    Duration::from_secs(1)
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = wake.notified() => {}
                _ = tokio::time::sleep(pause) => {}
            }
        }
        listener.abort();
        // Anything still claimed (normally nothing: a round finishes what it claimed)
        // goes back at once rather than after the lease.
        let held: Vec<i64> = self.held().drain().collect();
        if !held.is_empty()
            && let Ok(mut conn) = self.pool.acquire().await
        {
            let _ = self.hand_back(&mut conn, &held).await;
        }
        tracing::info!("sender stopped");
    }

    /// Gives claimed mail back unsent, its attempt not spent (a failure leaves it to the
    /// lease, as a crash would).
    async fn hand_back(&self, conn: &mut PgConnection, ids: &[i64]) -> sqlx::Result<()> {
        sqlx::query(
            "UPDATE message_queue SET attempts = greatest(attempts - 1, 0), claimed_by = NULL, lease_until = NULL
             WHERE message_id = ANY($1) AND claimed_by = $2",
        )
        .bind(ids)
        .bind(self.worker)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashSet<i64>> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Until the next message may be claimed: the earliest due time of unleased mail or,
    /// when there is none due, the earliest end of another sender's lease (mail whose
    /// sender died goes out when its lease ends). Mail that is due but held back by the
    /// shared rate limits waits for the window that lets it go (at most the idle wait,
    /// 30 s, before looking again). Public for tests; the background loop sleeps this
    /// long unless woken.
    pub async fn time_until_due(&self) -> Duration {
        let now = self.clock.now();
        let next: sqlx::Result<Option<DateTime<Utc>>> = async {
            // Both walk `message_queue_due` from its start; leased rows (in flight, few)
            // are passed over by the first, and are all the second sees when nothing is due.
            let unleased: Option<DateTime<Utc>> = sqlx::query_scalar(
                "SELECT run_at FROM message_queue
                 WHERE lease_until IS NULL OR lease_until <= $1
                 ORDER BY run_at, message_id LIMIT 1",
            )
            .bind(now)
            .fetch_optional(&self.pool)
            .await?;
            if unleased.is_some_and(|t| t <= now) {
                return Ok(self.window_opens(now).await?.or(unleased));
            }
            let lease_ends: Option<DateTime<Utc>> = sqlx::query_scalar(
                "SELECT min(lease_until) FROM message_queue WHERE run_at <= $1 AND lease_until > $1",
            )
            .bind(now)
            .fetch_one(&self.pool)
            .await?;
            Ok(unleased.into_iter().chain(lease_ends).min())
        }
        .await;
        let idle = Duration::from_secs(30);
        match next.unwrap_or(None) {
            None => idle,
            Some(t) => (t - now)
                .to_std()
                .unwrap_or_default()
                .clamp(Duration::from_millis(20), idle),
        }
    }

    /// Extends the leases of this sender's unrecorded claims (claimed ahead, being sent,
    /// waiting to be recorded) every third of the lease, so a slow send is not taken over
    /// and sent again by another process. Rows being recorded right now are locked and
    /// skipped (their outcome is being written; waiting for them could deadlock).
    async fn renew_leases(&self, done: CancellationToken) {
        let every = (self.settings.lease / 3)
            .to_std()
            .unwrap_or_default()
            .max(Duration::from_millis(50));
        loop {
            tokio::select! {
                _ = done.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            let ids: Vec<i64> = self.held().iter().copied().collect();
            if ids.is_empty() {
                continue;
            }
            let renewed = sqlx::query(
                "UPDATE message_queue q SET lease_until = $3
                 FROM (SELECT message_id FROM message_queue WHERE message_id = ANY($1) AND claimed_by = $2
                       FOR UPDATE SKIP LOCKED) r
                 WHERE q.message_id = r.message_id",
            )
            .bind(&ids)
            .bind(self.worker)
            .bind(self.clock.now() + self.settings.lease)
            .execute(&self.pool)
            .await;
            match renewed {
                Ok(r) => tracing::debug!(
                    held = ids.len(),
                    renewed = r.rows_affected(),
                    "renewed mail claims"
                ),
                Err(e) => tracing::warn!(error = %e, "renewing mail claims failed; retrying"),
            }
        }
    }

    /// The shared rate limits' windows (`send_windows.scope`) and their limits (0: none).
    fn rate_windows(&self) -> [(&'static str, i32); 2] {
        [
            ("second", self.settings.per_second),
            ("hour", self.settings.per_hour),
        ]
    }

    /// When the shared rate limits let the next message go, if they let none go now: the
    /// end of each full window (the later one when both are full).
    async fn window_opens(&self, now: DateTime<Utc>) -> sqlx::Result<Option<DateTime<Utc>>> {
        let limits = self.rate_windows();
        if limits.iter().all(|&(_, limit)| limit <= 0) {
            return Ok(None);
        }
        let (scopes, limits): (Vec<&str>, Vec<i32>) = limits.into_iter().unzip();
        sqlx::query_scalar(
            "SELECT max(w.start + CASE w.scope WHEN 'second' THEN interval '1 second' ELSE interval '1 hour' END)
             FROM unnest($1::text[], $2::int[]) AS l(scope, max_used)
             JOIN send_windows w ON w.scope = l.scope AND w.start = date_trunc(l.scope, $3, 'UTC')
             WHERE l.max_used > 0 AND w.used >= l.max_used",
        )
        .bind(&scopes)
        .bind(&limits)
        .bind(now)
        .fetch_one(&self.pool)
        .await
    }

    /// How many messages the shared rate limits allow now, taken from the windows in
    /// the claim's transaction (so every process on the database shares them).
    async fn allowance(
        &self,
        tx: &mut sqlx::PgConnection,
        want: i64,
        now: DateTime<Utc>,
    ) -> sqlx::Result<i64> {
        let mut allowed = want;
        for (scope, limit) in self.rate_windows() {
            if limit <= 0 {
                continue;
            }
            let used: i32 = sqlx::query_scalar(
                "INSERT INTO send_windows (scope, start, used) VALUES ($1, date_trunc($1, $2, 'UTC'), 0)
                 ON CONFLICT (scope, start) DO UPDATE SET used = send_windows.used RETURNING used",
            )
            .bind(scope)
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
            allowed = allowed.min((limit - used).max(0) as i64);
        }
        Ok(allowed)
    }

    /// Counts `n` claimed messages against the windows. Taken at the claim, in its
    /// transaction, so no two processes can claim the same allowance; a claim handed back
    /// unsent (the server unreachable) keeps its count, so the limits err on the side of
    /// sending less, never more.
    async fn take_allowance(
        &self,
        tx: &mut sqlx::PgConnection,
        n: i64,
        now: DateTime<Utc>,
    ) -> sqlx::Result<()> {
        if n == 0 {
            return Ok(());
        }
        for (scope, limit) in self.rate_windows() {
            if limit > 0 {
                sqlx::query("UPDATE send_windows SET used = used + $3 WHERE scope = $1 AND start = date_trunc($1, $2, 'UTC')")
                    .bind(scope)
                    .bind(now)
                    .bind(n as i32)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        // Old windows are no longer needed.
        sqlx::query("DELETE FROM send_windows WHERE start < $1 - interval '2 hours'")
            .bind(now)
            .execute(&mut *tx)
            .await?;
        Ok(())
    }

    /// Claims due messages and holds them (their leases are renewed until recorded).
    async fn claim(&self, conn: &mut PgConnection) -> sqlx::Result<Vec<Claimed>> {
        let mut claimed = self.claim_due(conn).await?;
        if let Err(e) = self.fill_in_bodies(conn, &mut claimed).await {
            let ids: Vec<i64> = claimed.iter().map(|m| m.id).collect();
            let _ = self.hand_back(conn, &ids).await;
            return Err(e);
        }
        let taken_over = claimed.iter().filter(|m| m.taken_over).count();
        if taken_over > 0 {
            tracing::warn!(
                messages = taken_over,
                "took over mail whose sender's lease ran out (it died or stalled)"
            );
        }
        self.held().extend(claimed.iter().map(|m| m.id));
        Ok(claimed)
    }

    /// Gives each claimed message its body, fetching (and compiling) those not yet kept.
    async fn fill_in_bodies(
        &self,
        conn: &mut PgConnection,
        claimed: &mut [Claimed],
    ) -> sqlx::Result<()> {
        let missing: Vec<i64> = {
            let bodies = self.bodies.lock().unwrap_or_else(|e| e.into_inner());
            let mut ids: Vec<i64> = claimed
                .iter()
                .map(|m| m.body_id)
                .filter(|id| !bodies.contains_key(id))
                .collect();
            ids.sort_unstable();
            ids.dedup();
            ids
        };
        let mut fetched = HashMap::new();
        if !missing.is_empty() {
            let rows: Vec<(i64, String, String, String, String, String, String)> = sqlx::query_as(
                "SELECT id, purpose, subject, preheader, body, format, from_name FROM message_bodies WHERE id = ANY($1)",
            )
            .bind(&missing)
            .fetch_all(&mut *conn)
            .await?;
            for (id, purpose, subject, preheader, body, format, from_name) in rows {
                let draft = Draft {
                    subject,
                    preheader,
                    body,
                    format: parse_format(&format),
                };
                let compiled = Compiled::new(draft).map_err(|e| e.to_string());
                fetched.insert(
                    id,
                    Arc::new(Body {
                        purpose,
                        from_name,
                        compiled,
                    }),
                );
            }
        }
        let mut bodies = self.bodies.lock().unwrap_or_else(|e| e.into_inner());
        if bodies.len() + fetched.len() > BODIES_KEPT {
            bodies.clear();
        }
        bodies.extend(fetched.iter().map(|(id, b)| (*id, b.clone())));
        for m in claimed {
            // A message row cannot outlive its body (a foreign key without cascade).
            m.body = bodies
                .get(&m.body_id)
                .or_else(|| fetched.get(&m.body_id))
                .cloned();
            if m.body.is_none() {
                return Err(sqlx::Error::RowNotFound);
            }
        }
        Ok(())
    }

    async fn claim_due(&self, conn: &mut PgConnection) -> sqlx::Result<Vec<Claimed>> {
        let now = self.clock.now();
        let want = (self.settings.concurrency * 4).max(1) as i64;
        if self.settings.per_second <= 0 && self.settings.per_hour <= 0 {
            // No shared windows to read and take from: one statement, its own transaction.
            return self.claim_rows(conn, want, now).await;
        }
        let mut tx = conn.begin().await?;
        let n = self.allowance(&mut tx, want, now).await?;
        if n == 0 {
            tx.commit().await?;
            return Ok(vec![]);
        }
        let claimed = self.claim_rows(&mut tx, n, now).await?;
        self.take_allowance(&mut tx, claimed.len() as i64, now)
            .await?;
        tx.commit().await?;
        Ok(claimed)
    }

    /// Takes up to `n` due messages as this worker's lease: due, and not leased (or the
    /// lease ran out). Only the queue row changes, and only its unindexed columns, so
    /// the update can be heap-only; the message itself is only read.
    async fn claim_rows(
        &self,
        conn: &mut sqlx::PgConnection,
        n: i64,
        now: DateTime<Utc>,
    ) -> sqlx::Result<Vec<Claimed>> {
        sqlx::query_as(
            "WITH c AS (
                 SELECT message_id, lease_until FROM message_queue
                 WHERE run_at <= $1 AND (lease_until IS NULL OR lease_until <= $1)
                 ORDER BY run_at, message_id LIMIT $2 FOR UPDATE SKIP LOCKED
             ), q AS (
                 UPDATE message_queue q SET attempts = q.attempts + 1, claimed_by = $3, lease_until = $4
                 FROM c WHERE q.message_id = c.message_id
                 RETURNING q.message_id, q.attempts, c.lease_until IS NOT NULL AS taken_over
             )
             SELECT m.id, q.attempts, m.max_attempts, m.marketing, m.body_id, m.subscriber_id, m.to_email, m.to_name, m.data,
                    s.status::text AS sub_status, s.name AS sub_name, s.language AS sub_language, s.fields AS sub_fields,
                    q.taken_over
             FROM q JOIN messages m ON m.id = q.message_id LEFT JOIN subscribers s ON s.id = m.subscriber_id
             ORDER BY m.id",
        )
        .bind(now)
        .bind(n)
        .bind(self.worker)
        .bind(now + self.settings.lease)
        .fetch_all(&mut *conn)
        .await
    }

    /// Sends until nothing is due (or the SMTP server cannot be reached), as a pipeline:
    /// the next claim is taken while the last messages of the current one are out, and
    /// outcomes are recorded (one statement for whatever has arrived, by two recorders on
    /// their own held connections, so one writes while the other gathers) while the next
    /// messages are sent. At most [`WINDOW_CLAIMS`] claims' worth of messages is sent or
    /// sending and not yet recorded: that bounds what a crash can send twice. When the server is unreachable, claimed messages not yet tried go
    /// back unspent. `shutdown` stops claiming; what is claimed is finished. Meanwhile
    /// the leases of what is claimed and not yet recorded are renewed.
    async fn drain(&self, shutdown: CancellationToken) -> anyhow::Result<Round> {
        let concurrency = self.settings.concurrency.max(1);
        let done = CancellationToken::new();
        let _stop_renewing = done.clone().drop_guard();
        let _renewer = {
            let me = self.clone();
            tokio::spawn(async move { me.renew_leases(done).await })
        };
        let window = Arc::new(Semaphore::new(WINDOW_CLAIMS * 4 * concurrency));
        let stop = Arc::new(AtomicBool::new(false));
        let (to_record, outcomes) =
            mpsc::channel::<(Claimed, Outcome, OwnedSemaphorePermit)>(4 * concurrency);
        // Two recorders: while one writes its group, the other gathers the next (and can
        // write it meanwhile, on its own connection). Whoever holds the queue gathers.
        let outcomes = Arc::new(tokio::sync::Mutex::new(outcomes));
        let recorders: Vec<_> = (0..RECORDERS)
            .map(|_| {
                let (me, outcomes) = (self.clone(), outcomes.clone());
                tokio::spawn(async move { me.record_outcomes(&outcomes, concurrency).await })
            })
            .collect();
        // Claims are taken ahead by their own task, at most about one claim ahead.
        let (to_send, claimed) = mpsc::channel::<Claimed>(4 * concurrency);
        let claimer = {
            let (me, stop) = (self.clone(), stop.clone());
            tokio::spawn(async move {
                let mut held = Held::new(me.pool.clone());
                while !stop.load(Ordering::Relaxed) && !shutdown.is_cancelled() {
                    let claimed = match held.get().await {
                        Ok(conn) => me.claim(conn).await,
                        Err(e) => Err(e),
                    };
                    if claimed.is_err() {
                        held.release();
                    }
                    match claimed {
                        Ok(batch) if batch.is_empty() => break,
                        Ok(batch) => {
                            for m in batch {
                                if to_send.send(m).await.is_err() {
                                    return None;
                                }
                            }
                        }
                        Err(e) => return Some(anyhow::Error::from(e)),
                    }
                }
                None
            })
        };
        // The slots are tasks of their own, so the runtime's threads can run them at once.
        let ways = Ways {
            claimed: Arc::new(tokio::sync::Mutex::new(claimed)),
            window,
            stop,
            to_record,
        };
        let slots: Vec<_> = (0..concurrency)
            .map(|_| {
                let (me, ways) = (self.clone(), ways.clone());
                tokio::spawn(async move { me.slot(&ways).await })
            })
            .collect();
        drop(ways);
        // Every slot is waited for, even after one failed: leases are renewed until the
        // last message out is recorded.
        let mut slot_error = None;
        for slot in slots {
            if let Err(e) = slot.await {
                slot_error.get_or_insert(e);
            }
        }
        let mut round = Round::default();
        let mut record_error = None;
        for recorder in recorders {
            let (r, e) = recorder.await?;
            round.add(&r);
            if let Some(e) = e {
                record_error.get_or_insert(e);
            }
        }
        let claim_error = claimer.await?;
        if let Some(e) = slot_error {
            return Err(e.into());
        }
        match claim_error.or(record_error) {
            Some(e) => Err(e),
            None => Ok(round),
        }
    }

    /// One recorder: takes the outcomes that have arrived (letting a group build up for
    /// a moment), records them, and releases their window places, until the senders are
    /// done. Returns what it recorded and its first error.
    async fn record_outcomes(
        &self,
        outcomes: &tokio::sync::Mutex<mpsc::Receiver<(Claimed, Outcome, OwnedSemaphorePermit)>>,
        concurrency: usize,
    ) -> (Round, Option<anyhow::Error>) {
        let mut held = Held::new(self.pool.clone());
        let mut round = Round::default();
        let mut error = None;
        let mut arrived = Vec::new();
        loop {
            let dry = {
                let mut rx = outcomes.lock().await;
                if rx.recv_many(&mut arrived, 4 * concurrency).await == 0 {
                    break;
                }
                // A commit costs about the same for one row as for thirty: let a group
                // build up for a moment (sends go on meanwhile, the window has room).
                let until = tokio::time::Instant::now() + GROUP_WAIT;
                while arrived.len() < 2 * concurrency {
                    let room = 4 * concurrency - arrived.len();
                    match tokio::time::timeout_at(until, rx.recv_many(&mut arrived, room)).await {
                        Ok(n) if n > 0 => {}
                        _ => break,
                    }
                }
                rx.is_empty()
            };
            let (batch, permits): (Vec<_>, Vec<_>) =
                arrived.drain(..).map(|(m, o, p)| ((m, o), p)).unzip();
            let recorded = self.record_patiently(&mut held, &batch).await;
            // Recorded, or given up on (then the lease runs out and the mail goes again,
            // as after a crash): either way no longer renewed.
            {
                let mut held = self.held();
                for (m, _) in &batch {
                    held.remove(&m.id);
                }
            }
            match recorded {
                Ok(r) => round.add(&r),
                Err(e) => {
                    error.get_or_insert(e);
                }
            }
            drop(permits);
            if dry {
                held.release();
            }
        }
        (round, error)
    }

    /// Records outcomes of mail that is out, so they must be kept: dropped, it would all
    /// go again when the lease ends. While the database is away (a restart, a failover),
    /// retry, for at most half the lease (another sender could take the mail after it)
    /// and 30 s (so a shutdown is not held up for long).
    async fn record_patiently(
        &self,
        held: &mut Held,
        outcomes: &[(Claimed, Outcome)],
    ) -> anyhow::Result<Round> {
        let patience = (self.settings.lease / 2)
            .to_std()
            .unwrap_or_default()
            .min(Duration::from_secs(30));
        let give_up = tokio::time::Instant::now() + patience;
        let mut wait = Duration::from_millis(200);
        loop {
            let recorded = match held.get().await {
                Ok(conn) => self.record(conn, outcomes).await,
                Err(e) => Err(e.into()),
            };
            if recorded.is_err() {
                held.release();
            }
            match recorded {
                Err(e) if tokio::time::Instant::now() + wait < give_up => {
                    tracing::warn!(error = %format!("{e:#}"), messages = outcomes.len(), "recording sent mail failed; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(2));
                }
                result => return result,
            }
        }
    }

    /// One sending slot: takes claimed messages one at a time and sends each on its own
    /// held SMTP connection. When the next message is already claimed, it goes out with
    /// the current one's body (see [`super::smtp::Session`]): a message then costs one round trip.
    async fn slot(&self, ways: &Ways) {
        let mut session = match &self.transport {
            Transport::Smtp(smtp) => Some(smtp.session()),
            Transport::Capture => None,
        };
        // The next message, taken early to go out behind the current body.
        let mut carried: Option<Carried> = None;
        loop {
            let Carried {
                m,
                permit,
                built,
                opened,
            } = match carried.take() {
                Some(next) => next,
                None => {
                    let Some(m) = ways.claimed.lock().await.recv().await else {
                        break;
                    };
                    let permit = ways
                        .window
                        .clone()
                        .acquire_owned()
                        .await
                        .expect("never closed");
                    Carried::new(m, permit, None)
                }
            };
            if opened.is_none() && ways.stop.load(Ordering::Relaxed) {
                let outcome = Outcome::Unreachable {
                    reason: "not tried: the SMTP server was unreachable".into(),
                };
                ways.record(m, outcome, permit).await;
                continue;
            }
            let b = match built {
                Some(b) => b,
                None => match self.prepare(&m).await {
                    Prepared::Smtp(b) => b,
                    Prepared::Done(outcome) => {
                        ways.record(m, outcome, permit).await;
                        continue;
                    }
                },
            };
            let Some(session) = session.as_mut() else {
                unreachable!("only SMTP leaves a message to send");
            };
            let opened = match opened {
                Some(o) => o,
                None => match session.open(&b.envelope, &b.raw).await {
                    Ok(o) => o,
                    Err(e) => {
                        ways.record(m, ways.judged(classify_error(&e)), permit)
                            .await;
                        continue;
                    }
                },
            };
            let (mut next, mut decided) = (None, None);
            if !ways.stop.load(Ordering::Relaxed)
                && let Some((n, p)) = ways.next_waiting()
            {
                match self.prepare_cached(&n) {
                    // Recorded once the server has the current body (it is waiting).
                    Some(Prepared::Done(outcome)) => decided = Some((n, outcome, p)),
                    Some(Prepared::Smtp(nb)) => next = Some((n, p, nb)),
                    // Not rendered yet: it goes on its own, next.
                    None => carried = Some(Carried::new(n, p, None)),
                }
            }
            let along = next
                .as_ref()
                .map(|(_, _, nb)| (&nb.envelope, nb.raw.as_slice()));
            let (reply, chained) = session.finish(opened, along).await;
            ways.record(m, ways.judged(sent_outcome(b, reply)), permit)
                .await;
            if let Some((n, outcome, p)) = decided {
                ways.record(n, outcome, p).await;
            }
            if let Some((n, p, nb)) = next {
                match chained {
                    Chained::Opened(o) => {
                        carried = Some(Carried {
                            opened: Some(o),
                            ..Carried::new(n, p, Some(nb))
                        });
                    }
                    Chained::NotTried => carried = Some(Carried::new(n, p, Some(nb))),
                    Chained::Refused(e) => {
                        ways.record(n, ways.judged(classify_error(&e)), p).await;
                    }
                }
            }
        }
    }

    /// What to do with a claimed message: decided without the SMTP server (suppressed,
    /// not renderable, captured locally), or built and ready to send.
    async fn prepare(&self, m: &Claimed) -> Prepared {
        if let Some(p) = self.prepare_cached(m) {
            return p;
        }
        // Not cached: templates, layout and CSS go to a blocking thread.
        let me = self.clone();
        let input = m.clone();
        let built = match tokio::task::spawn_blocking(move || me.build(&input, false)).await {
            Ok(Ok(Some(b))) => Ok(b),
            Ok(Ok(None)) => Err("rendering stopped".into()),
            Ok(Err(e)) => Err(e),
            Err(e) => Err(format!("rendering stopped: {e}")),
        };
        self.built(built)
    }

    /// [`Sender::prepare`] when that needs no blocking thread: `None` when the message's
    /// skeleton is not in the render cache yet. A body whose skeleton is cached renders
    /// in microseconds.
    fn prepare_cached(&self, m: &Claimed) -> Option<Prepared> {
        if let Some(reason) = suppressed(m) {
            return Some(Prepared::Done(Outcome::Suppressed { reason }));
        }
        self.build(m, true).transpose().map(|b| self.built(b))
    }

    fn built(&self, built: Result<Built, String>) -> Prepared {
        match (built, &self.transport) {
            (Err(reason), _) => Prepared::Done(Outcome::Failed { reason }),
            (Ok(b), Transport::Capture) => Prepared::Done(Outcome::Sent {
                reply: "250 captured locally (no SMTP_URL set)".into(),
                message_id: b.message_id,
                links: b.links,
                captured: Some(Captured {
                    raw: b.raw,
                    subject: b.subject,
                    html: b.html,
                    text: b.text,
                }),
            }),
            (Ok(b), Transport::Smtp(_)) => Prepared::Smtp(b),
        }
    }

    /// Renders and assembles the MIME message (blocking: templates, layout, CSS).
    /// `cached_only`: `Ok(None)` unless the body's skeleton is in the render cache.
    fn build(&self, m: &Claimed, cached_only: bool) -> Result<Option<Built>, String> {
        let s = &self.settings;
        let base = s.public_url.trim_end_matches('/');
        let name = m.sub_name.as_deref().unwrap_or(&m.to_name);
        let mut data = json!({
            "subscriber": {
                "email": m.to_email,
                "name": name,
                "first_name": name.split_whitespace().next().unwrap_or(""),
                "language": m.sub_language,
                "fields": m.sub_fields.as_ref().map_or_else(|| json!({}), |f| f.0.clone()),
            },
        });
        let sub_token = m
            .subscriber_id
            .map(|id| links::subscriber_token(&self.keys, id));
        if let Some(t) = &sub_token {
            data["unsubscribe_url"] = json!(format!("{base}/u/{t}"));
            data["preferences_url"] = json!(format!("{base}/p/{t}"));
        }
        // The message's own data adds to the subscriber's; with no subscriber (a test
        // send) its sample subscriber stands in.
        if let (Value::Object(extra), Value::Object(d)) = (&m.data.0, &mut data) {
            for (k, v) in extra {
                if m.subscriber_id.is_none() {
                    d.insert(k.clone(), v.clone());
                } else {
                    d.entry(k.clone()).or_insert_with(|| v.clone());
                }
            }
        }
        let body = m.body();
        let compiled = body.compiled.as_ref().map_err(String::clone)?;
        let tracked = !super::system::UNTRACKED_PURPOSES.contains(&body.purpose.as_str());
        let keys = &self.keys;
        let mut track = |l: &Link| -> Option<String> {
            tracked.then(|| {
                let token = tokens::click_token(
                    keys,
                    &tokens::Click {
                        message_id: m.id,
                        subscriber_id: m.subscriber_id,
                        position: l.position.min(u16::MAX as u32) as u16,
                        label: l.label.clone(),
                        url: l.url.clone(),
                    },
                );
                format!("{base}/c/{token}")
            })
        };
        let rendered = if cached_only {
            match self.renders.render_if_cached(compiled, &data, &mut track) {
                Some(r) => r,
                None => return Ok(None),
            }
        } else {
            self.renders.render(compiled, &data, &mut track)
        }
        .map_err(|e| e.to_string())?;
        let mut html = rendered.html;
        if tracked {
            let pixel = format!(
                "<img src=\"{base}/o/{}\" width=\"1\" height=\"1\" alt=\"\" style=\"display:block;border:0;width:1px;height:1px\">",
                tokens::open_token(keys, m.id, m.subscriber_id)
            );
            match html.rfind("</body>") {
                Some(at) => html.insert_str(at, &pixel),
                None => html.push_str(&pixel),
            }
        }

        let from_name = if body.from_name.is_empty() {
            &s.from_name
        } else {
            &body.from_name
        };
        let from: Mailbox = Mailbox::new(
            (!from_name.is_empty()).then(|| from_name.clone()),
            s.from_email
                .parse()
                .map_err(|e| format!("the sender address: {e}"))?,
        );
        let to = Mailbox::new(
            (!m.to_name.is_empty()).then(|| m.to_name.clone()),
            m.to_email
                .parse()
                .map_err(|e| format!("the recipient address: {e}"))?,
        );
        let domain = s
            .from_email
            .rsplit_once('@')
            .map_or("localhost", |(_, d)| d);
        // The same on every attempt: a receiver that got the message from an attempt we
        // could not confirm (no final reply) can tell the retry is the same message.
        let reference = super::feedback::message_ref(keys, m.id, m.subscriber_id);
        let message_id = format!("<{reference}@{domain}>");
        let mut builder = Message::builder()
            .from(from)
            .to(to)
            .subject(rendered.subject.clone())
            .message_id(Some(message_id.clone()))
            .raw_header(header(
                "Feedback-ID",
                format!("{}:{}:loopline", m.body_id, body.purpose),
            ));
        for (name, value) in super::feedback::echo_headers(&s.echo_to, &reference) {
            builder = builder.raw_header(header(name, value));
        }
        if let Some(t) = &sub_token {
            builder = builder
                .raw_header(header(
                    "List-Unsubscribe",
                    format!(
                        "<{base}/u/{t}>, <mailto:{}?subject=unsubscribe%20{t}>",
                        s.unsubscribe_mailto
                    ),
                ))
                .raw_header(header(
                    "List-Unsubscribe-Post",
                    "List-Unsubscribe=One-Click".into(),
                ));
        }
        let links = rendered.links.len();
        let text = rendered.text;
        let message = builder
            .multipart(
                MultiPart::alternative()
                    .singlepart(
                        SinglePart::builder()
                            .header(ContentType::TEXT_PLAIN)
                            .body(super::mime::body(&text)),
                    )
                    .singlepart(
                        SinglePart::builder()
                            .header(ContentType::TEXT_HTML)
                            .body(super::mime::body(&html)),
                    ),
            )
            .map_err(|e| format!("assembling the message: {e}"))?;
        let envelope = message.envelope().clone();
        let mut raw = message.formatted();
        if let Some(dkim) = &s.dkim {
            raw = dkim.sign(&raw, self.clock.now().timestamp())?;
        }
        Ok(Some(Built {
            raw,
            envelope,
            message_id,
            links,
            subject: rendered.subject,
            html,
            text,
        }))
    }

    async fn record(
        &self,
        conn: &mut PgConnection,
        outcomes: &[(Claimed, Outcome)],
    ) -> anyhow::Result<Round> {
        let now = self.clock.now();
        let mut round = Round::default();
        if outcomes
            .iter()
            .all(|(_, o)| matches!(o, Outcome::Sent { captured: None, .. }))
        {
            // Only accepted mail: one statement, its own transaction.
            let all: Vec<_> = outcomes.iter().collect();
            round.sent = self.record_sent(conn, &all, now).await?;
            return Ok(round);
        }
        let mut tx = conn.begin().await?;
        // The common case, mail handed to the SMTP server, in three set-based statements
        // instead of three per message; everything else row by row below.
        let (sent, outcomes): (Vec<_>, Vec<_>) = outcomes
            .iter()
            .partition(|(_, o)| matches!(o, Outcome::Sent { captured: None, .. }));
        round.sent += self.record_sent(&mut tx, &sent, now).await?;
        for (m, outcome) in outcomes {
            let (status, event, reply): (&str, Option<(&str, Value)>, String) = match &outcome {
                Outcome::Sent { reply, .. } => (
                    "sent",
                    Some(("sent", json!({ "purpose": m.body().purpose }))),
                    reply.clone(),
                ),
                Outcome::Deferred { reply } if m.attempts < m.max_attempts => (
                    "queued",
                    Some(("deferred", json!({ "reply": reply, "attempt": m.attempts }))),
                    reply.clone(),
                ),
                Outcome::Deferred { reply } => (
                    "failed",
                    Some(("failed", json!({ "reply": reply }))),
                    reply.clone(),
                ),
                Outcome::Bounced { reply, hard } => (
                    "bounced",
                    Some((
                        "bounced",
                        json!({ "reply": reply, "hard": hard, "source": "smtp" }),
                    )),
                    reply.clone(),
                ),
                Outcome::Failed { reason } => (
                    "failed",
                    Some(("failed", json!({ "reason": reason }))),
                    reason.clone(),
                ),
                Outcome::Suppressed { reason } => ("suppressed", None, (*reason).to_string()),
                Outcome::Unreachable { reason } => ("queued", None, reason.clone()),
            };
            let links = match &outcome {
                Outcome::Sent { links, .. } => *links as i64,
                _ => 0,
            };
            let (sent_at, message_id, run_at, attempts_back) = match &outcome {
                Outcome::Sent { message_id, .. } => (Some(now), Some(message_id.clone()), now, 0),
                Outcome::Deferred { .. } => (
                    None,
                    None,
                    now + crate::jobs::backoff(m.attempts).max(chrono::Duration::seconds(30)),
                    0,
                ),
                Outcome::Unreachable { .. } => (None, None, now + chrono::Duration::seconds(30), 1),
                _ => (None, None, now, 0),
            };
            // Only if the claim is still ours (a lease that expired may have been retaken):
            // back in the queue to be tried again, or out of it.
            let attempts: Option<i32> = if status == "queued" {
                sqlx::query_scalar(
                    "UPDATE message_queue SET run_at = $3, attempts = attempts - $4, claimed_by = NULL, lease_until = NULL
                     WHERE message_id = $1 AND claimed_by = $2 RETURNING attempts",
                )
                .bind(m.id)
                .bind(self.worker)
                .bind(run_at)
                .bind(attempts_back)
                .fetch_optional(&mut *tx)
                .await?
            } else {
                sqlx::query_scalar(
                    "DELETE FROM message_queue WHERE message_id = $1 AND claimed_by = $2 RETURNING attempts",
                )
                .bind(m.id)
                .bind(self.worker)
                .fetch_optional(&mut *tx)
                .await?
            };
            let Some(attempts) = attempts else {
                continue;
            };
            sqlx::query(
                "UPDATE messages SET status = $2::message_status, smtp_reply = $3, sent_at = $4, message_id = coalesce($5, message_id),
                        attempts = $6, data = CASE WHEN $7 > 0 THEN data || jsonb_build_object('links', $7) ELSE data END
                 WHERE id = $1",
            )
            .bind(m.id)
            .bind(status)
            .bind(reply.chars().take(1000).collect::<String>())
            .bind(sent_at)
            .bind(message_id)
            .bind(attempts)
            .bind(links)
            .execute(&mut *tx)
            .await?;
            match &outcome {
                Outcome::Sent { captured, .. } => {
                    round.sent += 1;
                    if let Some(c) = captured {
                        sqlx::query(
                            "INSERT INTO captured_mail (message_id, raw, subject, html, text, captured_at) VALUES ($1, $2, $3, $4, $5, $6)
                             ON CONFLICT (message_id) DO UPDATE SET raw = excluded.raw, subject = excluded.subject, html = excluded.html, text = excluded.text",
                        )
                            .bind(m.id)
                            .bind(&c.raw)
                            .bind(&c.subject)
                            .bind(&c.html)
                            .bind(&c.text)
                            .bind(now)
                            .execute(&mut *tx)
                            .await?;
                    }
                    if m.marketing
                        && let Some(sid) = m.subscriber_id
                    {
                        // "N unopened in a row" counts from here; a human open resets it.
                        sqlx::query("UPDATE subscribers SET last_sent_at = $2, consecutive_unopened = consecutive_unopened + 1 WHERE id = $1")
                            .bind(sid)
                            .bind(now)
                            .execute(&mut *tx)
                            .await?;
                    }
                }
                Outcome::Deferred { .. } if status == "queued" => round.deferred += 1,
                Outcome::Deferred { .. } | Outcome::Failed { .. } => round.failed += 1,
                Outcome::Bounced { hard, .. } => {
                    round.bounced += 1;
                    // The `bounced` event below (with the message and reply) is the
                    // timeline entry; no second, bare one.
                    if *hard && let Some(sid) = m.subscriber_id {
                        subscribers::leave(&mut tx, sid, subscribers::Status::Bounced, now).await?;
                    }
                }
                Outcome::Suppressed { .. } => round.suppressed += 1,
                Outcome::Unreachable { reason } => {
                    round.unreachable += 1;
                    tracing::warn!(message = m.id, %reason, "SMTP server unreachable or refused the session; mail waits");
                }
            }
            if let (Some((kind, data)), Some(sid)) = (event, m.subscriber_id.or(Some(0))) {
                sqlx::query("INSERT INTO events (subscriber_id, message_id, kind, at, data) VALUES (NULLIF($1, 0), $2, $3, $4, $5)")
                    .bind(sid)
                    .bind(m.id)
                    .bind(kind)
                    .bind(now)
                    .bind(data)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await?;
        Ok(round)
    }
}

impl Sender {
    /// Records messages the SMTP server accepted: the row (only if the claim is still
    /// ours), the "unopened in a row" counter of marketing mail, the `sent` event.
    /// Returns how many were recorded.
    async fn record_sent(
        &self,
        tx: &mut sqlx::PgConnection,
        sent: &[&(Claimed, Outcome)],
        now: DateTime<Utc>,
    ) -> sqlx::Result<usize> {
        if sent.is_empty() {
            return Ok(0);
        }
        let mut ids = Vec::with_capacity(sent.len());
        let mut replies = Vec::with_capacity(sent.len());
        let mut message_ids = Vec::with_capacity(sent.len());
        let mut links = Vec::with_capacity(sent.len());
        let mut purposes = Vec::with_capacity(sent.len());
        for (m, outcome) in sent {
            if let Outcome::Sent {
                reply,
                message_id,
                links: n,
                ..
            } = outcome
            {
                ids.push(m.id);
                replies.push(reply.chars().take(1000).collect::<String>());
                message_ids.push(message_id.clone());
                links.push(*n as i64);
                purposes.push(m.body().purpose.clone());
            }
        }
        let recorded: i64 = sqlx::query_scalar(
            "WITH o AS (
                 SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[], $5::text[])
                     AS o(id, reply, message_id, links, purpose)
             ), d AS (
                 -- Only what is still ours (a lease that expired may have been retaken).
                 DELETE FROM message_queue q USING o WHERE q.message_id = o.id AND q.claimed_by = $7
                 RETURNING q.message_id, q.attempts
             ), u AS (
                 -- Unindexed columns only: a heap-only update.
                 UPDATE messages m SET status = 'sent', smtp_reply = o.reply, sent_at = $6, message_id = o.message_id,
                        attempts = d.attempts,
                        data = CASE WHEN o.links > 0 THEN m.data || jsonb_build_object('links', o.links) ELSE m.data END
                 FROM d JOIN o ON o.id = d.message_id WHERE m.id = d.message_id
                 RETURNING m.id, m.subscriber_id, m.marketing, o.purpose
             ), counters AS (
                 -- N unopened in a row counts from here; a human open resets it.
                 UPDATE subscribers s SET last_sent_at = $6, consecutive_unopened = s.consecutive_unopened + c.n
                 FROM (SELECT subscriber_id, count(*)::int AS n FROM u WHERE marketing AND subscriber_id IS NOT NULL GROUP BY 1) c
                 WHERE s.id = c.subscriber_id
             ), events AS (
                 INSERT INTO events (subscriber_id, message_id, kind, at, data)
                 SELECT subscriber_id, id, 'sent', $6, jsonb_build_object('purpose', purpose) FROM u
             )
             SELECT count(*) FROM u",
        )
        .bind(&ids)
        .bind(&replies)
        .bind(&message_ids)
        .bind(&links)
        .bind(&purposes)
        .bind(now)
        .bind(self.worker)
        .fetch_one(&mut *tx)
        .await?;
        Ok(recorded as usize)
    }
}

/// Checked at send time, not only when queued: whoever left since gets nothing.
fn suppressed(m: &Claimed) -> Option<&'static str> {
    match (m.subscriber_id, m.sub_status.as_deref()) {
        // A test message, to any address.
        (None, _) if m.body().purpose == "test" => None,
        (None, _) | (Some(_), None) => Some("not sent: the subscriber no longer exists"),
        (Some(_), Some("active")) => None,
        (Some(_), Some(_)) if m.marketing => Some("not sent: the subscriber is not active"),
        (Some(_), Some("bounced")) => Some("not sent: the address bounced"),
        (Some(_), Some(_)) => None,
    }
}

/// `smtp://` to anything but this machine means STARTTLS unless `tls=` says otherwise:
/// a password never crosses a network in the clear by default.
fn with_default_tls(url: &str) -> String {
    let mut url = url.to_string();
    let authority = url
        .split_once("://")
        .map(|(_, rest)| rest.split(['/', '?']).next().unwrap_or(""))
        .unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if host_port.starts_with('[') {
        host_port.split_inclusive(']').next().unwrap_or("")
    } else {
        host_port.split(':').next().unwrap_or("")
    };
    let local = ["localhost", "127.0.0.1", "[::1]"].contains(&host);
    if url.starts_with("smtp://") && !url.contains("tls=") && !local {
        url.push_str(if url.contains('?') {
            "&tls=required"
        } else {
            "?tls=required"
        });
    }
    url
}

/// SMTP replies: 5xx is permanent (a bounce; hard when it is about the address), 4xx,
/// timeouts and connections lost mid-message retry; no session at all means the server
/// is unreachable.
fn classify_error(e: &SendError) -> Outcome {
    let reply = e.to_string();
    match e.status() {
        Some(code) if e.is_permanent() => {
            let hard = hard_bounce(&code.to_string(), &reply);
            Outcome::Bounced { reply, hard }
        }
        Some(_) => Outcome::Deferred { reply },
        // Nothing was attempted (no session): the server is unreachable, not the message.
        None if e.no_session() => Outcome::Unreachable { reason: reply },
        // The server went silent or hung up mid-message: it may have taken it, so the
        // attempt counts (retries are bounded) and it goes again after the backoff.
        None if e.is_timeout() || e.is_lost() => Outcome::Deferred { reply },
        // The server lacks an extension this message needs: retrying cannot help, and
        // the address is not at fault.
        None if e.is_unsupported() => Outcome::Failed { reason: reply },
        None => Outcome::Unreachable { reason: reply },
    }
}

/// Whether a permanent refusal says the address itself is bad (a hard bounce, which
/// suppresses it) rather than this message or the sending system (a soft one: the
/// message is bounced, the address kept). The enhanced status code (RFC 3463), the
/// first word of the server's text (RFC 2034), decides where it is plain: 5.1.x (bad or
/// moved mailbox, bad destination, syntax, null MX) and 5.2.1 (mailbox disabled) are the
/// address; 5.7.x (policy, spam, authentication), 5.2.2 and 5.2.3 (mailbox full, message
/// too big), 5.3.x (the receiving system) and 5.6.x (the content) are the message. So
/// `550 5.7.1` refused as spam is soft and `554 5.1.1` is hard. Anything else, or no
/// enhanced code, goes by the basic code: 550, 551 and 553 (mailbox unavailable, not
/// local, name not allowed) are hard, as in Outlook's `550 5.5.0 … mailbox unavailable`.
fn hard_bounce(code: &str, reply: &str) -> bool {
    // lettre shows a refusal as `permanent error (550): <the server's text>`.
    let text = reply.split_once("): ").map_or(reply, |(_, t)| t);
    let enhanced = text.split_whitespace().next().and_then(|word| {
        let word = word.trim_end_matches(['.', ',', ';', ':']);
        let mut parts = word.split('.');
        let (class, subject, detail) = (parts.next()?, parts.next()?, parts.next()?);
        let digits = |p: &str| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit());
        (parts.next().is_none() && class == "5" && digits(subject) && digits(detail))
            .then_some((subject, detail))
    });
    match enhanced {
        Some(("1", _) | ("2", "1")) => true,
        Some(("7" | "3" | "6", _) | ("2", "2" | "3")) => false,
        _ => ["550", "551", "553"].iter().any(|c| code.starts_with(c)),
    }
}

fn header(name: &'static str, value: String) -> HeaderValue {
    HeaderValue::new(HeaderName::new_from_ascii_str(name), value)
}

#[cfg(test)]
mod tests {
    use super::{hard_bounce, with_default_tls};

    #[test]
    fn the_enhanced_status_code_tells_a_bad_address_from_a_refused_message() {
        for (code, reply, hard) in [
            (
                "550",
                "permanent error (550): 5.1.1 No such user here",
                true,
            ),
            (
                "554",
                "permanent error (554): 5.1.1 <a@example.kr>: Recipient address rejected",
                true,
            ),
            (
                "553",
                "permanent error (553): 5.1.3 Bad recipient address syntax",
                true,
            ),
            (
                "550",
                "permanent error (550): 5.2.1 The email account that you tried to reach is disabled",
                true,
            ),
            (
                "550",
                "permanent error (550): 5.1.10 Recipient address has null MX",
                true,
            ),
            (
                "550",
                "permanent error (550): 5.7.1 Message rejected as spam",
                false,
            ),
            ("552", "permanent error (552): 5.2.2 Mailbox full", false),
            (
                "554",
                "permanent error (554): 5.7.1 Service unavailable; client host blocked",
                false,
            ),
            (
                "550",
                "permanent error (550): Requested action not taken: mailbox unavailable",
                true,
            ),
            (
                "553",
                "permanent error (553): mailbox name not allowed",
                true,
            ),
            ("554", "permanent error (554): Transaction failed", false),
            // Only the first word of the text is a status code.
            (
                "554",
                "permanent error (554): rejected by filter 5.1.1 see a.b.c",
                false,
            ),
            ("554", "permanent error (554): 5.1.1.2 rejected", false),
            (
                "550",
                "permanent error (550): 5.7.1. Rejected by policy",
                false,
            ),
            // Other codes go by the basic code: Outlook's unknown mailbox, Exchange's
            // directory-based blocking.
            (
                "550",
                "permanent error (550): 5.5.0 Requested action not taken: mailbox unavailable",
                true,
            ),
            (
                "550",
                "permanent error (550): 5.4.1 Recipient address rejected: Access denied",
                true,
            ),
            (
                "554",
                "permanent error (554): 5.4.7 Delivery time expired",
                false,
            ),
        ] {
            assert_eq!(hard_bounce(code, reply), hard, "{reply}");
        }
    }

    #[test]
    fn only_this_machine_may_be_reached_without_tls_by_default() {
        for (url, expected) in [
            (
                "smtp://mail.example.com:587",
                "smtp://mail.example.com:587?tls=required",
            ),
            (
                "smtp://u:p@relay.example.com",
                "smtp://u:p@relay.example.com?tls=required",
            ),
            (
                "smtp://localhost.evil.example:25",
                "smtp://localhost.evil.example:25?tls=required",
            ),
            (
                "smtp://127.0.0.1.nip.io:25",
                "smtp://127.0.0.1.nip.io:25?tls=required",
            ),
            ("smtp://u:p@localhost:2525", "smtp://u:p@localhost:2525"),
            ("smtp://127.0.0.1:25", "smtp://127.0.0.1:25"),
            ("smtp://[::1]:25", "smtp://[::1]:25"),
            (
                "smtp://host?tls=opportunistic",
                "smtp://host?tls=opportunistic",
            ),
            (
                "smtps://u:p@mail.example.com",
                "smtps://u:p@mail.example.com",
            ),
        ] {
            assert_eq!(with_default_tls(url), expected, "{url}");
        }
    }
}
