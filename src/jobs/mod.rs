//! The job runtime every background task plugs into.
//!
//! Jobs are rows in `jobs`. Workers claim due rows with `FOR UPDATE SKIP LOCKED`, so any
//! number of Loopline processes can share one database and each job runs once per
//! attempt. A claim is a lease: a worker that dies loses its jobs when the lease runs out
//! and another worker picks them up, so handlers must be idempotent (they write with
//! idempotency keys). Failures retry with exponential backoff until `max_attempts`, then
//! the job is `dead` with its last error. Inserting a queued job fires `NOTIFY
//! loopline_jobs`, which wakes idle workers at once; future work is slept on until due.
//!
//! Tests drive the runtime with [`JobRunner::run_until_idle`], deterministically.

use std::{
    collections::HashMap, future::Future, panic::AssertUnwindSafe, pin::Pin, sync::Arc,
    time::Duration,
};

use anyhow::Context;
use chrono::{DateTime, Utc};
use futures_util::FutureExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::{PgExecutor, PgPool, postgres::PgListener};
use tokio::{sync::Notify, task::JoinSet};
use tokio_util::sync::CancellationToken;

use crate::clock::SharedClock;

pub const NOTIFY_CHANNEL: &str = "loopline_jobs";
/// Longest idle sleep: a safety net should a notification ever be missed.
const IDLE_POLL: Duration = Duration::from_secs(30);
const DEFAULT_LEASE: Duration = Duration::from_secs(300);
/// How often a running worker looks for jobs whose lease ran out.
const RECLAIM_EVERY: Duration = Duration::from_secs(15);

/// Work to enqueue.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub kind: String,
    pub payload: Value,
    pub unique_key: Option<String>,
    pub run_at: Option<DateTime<Utc>>,
    pub max_attempts: i32,
}

impl NewJob {
    pub fn new(kind: impl Into<String>, payload: impl Serialize) -> Self {
        Self {
            kind: kind.into(),
            payload: serde_json::to_value(payload).unwrap_or(Value::Null),
            unique_key: None,
            run_at: None,
            max_attempts: 10,
        }
    }

    /// Enqueueing a second job with the same key is a no-op, for ever.
    pub fn unique(mut self, key: impl Into<String>) -> Self {
        self.unique_key = Some(key.into());
        self
    }

    pub fn run_at(mut self, at: DateTime<Utc>) -> Self {
        self.run_at = Some(at);
        self
    }

    pub fn max_attempts(mut self, n: i32) -> Self {
        self.max_attempts = n.max(1);
        self
    }
}

/// Enqueues a job, normally inside the transaction that decided it. Returns the new id,
/// or `None` when a job with the same unique key already exists.
pub async fn enqueue<'e>(
    db: impl PgExecutor<'e>,
    now: DateTime<Utc>,
    job: NewJob,
) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar(
        "INSERT INTO jobs (kind, payload, unique_key, run_at, max_attempts) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (unique_key) DO NOTHING RETURNING id",
    )
    .bind(&job.kind)
    .bind(&job.payload)
    .bind(&job.unique_key)
    .bind(job.run_at.unwrap_or(now))
    .bind(job.max_attempts)
    .fetch_optional(db)
    .await
}

/// A job a worker holds the lease on.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ClaimedJob {
    pub id: i64,
    pub kind: String,
    pub payload: Value,
    pub attempts: i32,
    pub max_attempts: i32,
}

/// How a handler failed.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// Worth trying again later (the default for any error).
    #[error("{0:#}")]
    Retry(anyhow::Error),
    /// Never going to work: the job goes straight to `dead`.
    #[error("{0:#}")]
    Fatal(anyhow::Error),
    /// No handler for this kind in this process.
    #[error("no handler for this kind of job")]
    Unhandled,
}

/// Why a job attempt failed, as a stable code with its parameters: stored in
/// `jobs.error_code` / `error_params` beside the English detail in `last_error`, and
/// worded on the jobs page in the reader's language (`Strings::job_failure`). Handlers
/// attach one as the error (`JobError::Fatal(JobFailure::… .into())`) or as context;
/// anything else counts as [`JobFailure::Database`] when a database error is in its
/// chain, else [`JobFailure::Failed`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum JobFailure {
    /// The handler failed; nothing more specific is known (the detail says what).
    #[error("the job failed")]
    Failed,
    #[error("a database error")]
    Database,
    #[error("job handler panicked")]
    Panicked,
    /// The worker running it died or hung, and its lease ran out.
    #[error("the lease ran out (the worker died or hung while running it)")]
    LeaseExpired,
    /// No process handling this kind of job has picked it up yet.
    #[error("no handler for this kind of job here")]
    Unhandled,
    #[error("the job's payload could not be read")]
    BadPayload,
    #[error("import {import} no longer exists")]
    ImportGone { import: i64 },
    /// The import job gave up; the import says why.
    #[error("import {import} stopped")]
    ImportStopped { import: i64 },
    #[error("segment {segment} no longer exists")]
    SegmentGone { segment: i64 },
    /// The segment's definition no longer fits the custom fields.
    #[error("segment {segment} is no longer valid")]
    SegmentInvalid { segment: i64 },
    /// A bulk action without its tag or selection.
    #[error("the bulk action is incomplete")]
    BulkInvalid,
}

impl JobFailure {
    /// The code and parameters to store.
    pub fn to_stored(&self) -> (String, Value) {
        crate::error::to_stored(self)
    }

    /// Read back; `None` for rows without a code (older) or with one this version lacks.
    pub fn from_stored(code: &str, params: &Value) -> Option<Self> {
        crate::error::from_stored(code, params)
    }

    /// What a handler's error amounts to.
    pub fn of(err: &JobError) -> Self {
        match err {
            JobError::Unhandled => Self::Unhandled,
            JobError::Retry(e) | JobError::Fatal(e) => {
                if let Some(f) = e.downcast_ref::<JobFailure>() {
                    f.clone()
                } else if e.chain().any(|c| c.is::<sqlx::Error>()) {
                    Self::Database
                } else {
                    Self::Failed
                }
            }
        }
    }

    /// One of each, for tests of the wording.
    pub fn examples() -> Vec<Self> {
        let all = vec![
            Self::Failed,
            Self::Database,
            Self::Panicked,
            Self::LeaseExpired,
            Self::Unhandled,
            Self::BadPayload,
            Self::ImportGone { import: 12 },
            Self::ImportStopped { import: 12 },
            Self::SegmentGone { segment: 3 },
            Self::SegmentInvalid { segment: 3 },
            Self::BulkInvalid,
        ];
        // A new variant must be added above: this match stops compiling until it is.
        for f in &all {
            match f {
                Self::Failed
                | Self::Database
                | Self::Panicked
                | Self::LeaseExpired
                | Self::Unhandled
                | Self::BadPayload
                | Self::ImportGone { .. }
                | Self::ImportStopped { .. }
                | Self::SegmentGone { .. }
                | Self::SegmentInvalid { .. }
                | Self::BulkInvalid => {}
            }
        }
        all
    }
}

impl From<anyhow::Error> for JobError {
    fn from(e: anyhow::Error) -> Self {
        Self::Retry(e)
    }
}

impl From<sqlx::Error> for JobError {
    fn from(e: sqlx::Error) -> Self {
        Self::Retry(e.into())
    }
}

/// What a handler gets: the job, the database and the clock.
#[derive(Clone)]
pub struct JobContext {
    pub job: ClaimedJob,
    pub pool: PgPool,
    pub clock: SharedClock,
    worker_id: Arc<str>,
    lease: Duration,
}

impl JobContext {
    /// Records progress for the dashboard's progress bars and renews the lease, so long
    /// jobs should call it regularly.
    pub async fn progress(&self, done: i64, total: i64) -> sqlx::Result<()> {
        let until = self.clock.now() + chrono::Duration::from_std(self.lease).unwrap_or_default();
        sqlx::query(
            "UPDATE jobs SET progress_done = $2, progress_total = $3, locked_until = $4
             WHERE id = $1 AND locked_by = $5 AND attempts = $6 AND status = 'running'",
        )
        .bind(self.job.id)
        .bind(done)
        .bind(total)
        .bind(until)
        .bind(&*self.worker_id)
        .bind(self.job.attempts)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub fn payload<T: serde::de::DeserializeOwned>(&self) -> Result<T, JobError> {
        serde_json::from_value(self.job.payload.clone()).map_err(|e| {
            JobError::Fatal(
                anyhow::anyhow!("bad payload for {}: {e}", self.job.kind)
                    .context(JobFailure::BadPayload),
            )
        })
    }
}

pub type JobFuture = Pin<Box<dyn Future<Output = Result<(), JobError>> + Send>>;

pub trait JobHandler: Send + Sync + 'static {
    fn run(&self, ctx: JobContext) -> JobFuture;
}

impl<F, Fut> JobHandler for F
where
    F: Fn(JobContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), JobError>> + Send + 'static,
{
    fn run(&self, ctx: JobContext) -> JobFuture {
        Box::pin(self(ctx))
    }
}

/// Which handler runs which kind of job. Each module registers its own kinds.
#[derive(Default, Clone)]
pub struct JobRegistry {
    handlers: HashMap<String, Arc<dyn JobHandler>>,
}

impl JobRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn register(mut self, kind: &str, handler: impl JobHandler) -> Self {
        self.handlers.insert(kind.to_string(), Arc::new(handler));
        self
    }
}

/// The outcome of one job attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Done,
    Retrying,
    Dead,
    /// No handler here: back in the queue, attempts not spent.
    Waiting,
    /// Our lease was taken over (we were too slow); the result was not recorded.
    LostLease,
}

/// Claims and runs jobs. Cheap to clone; every clone is the same worker.
#[derive(Clone)]
pub struct JobRunner {
    pool: PgPool,
    clock: SharedClock,
    handlers: Arc<HashMap<String, Arc<dyn JobHandler>>>,
    worker_id: Arc<str>,
    concurrency: usize,
    lease: Duration,
}

impl JobRunner {
    pub fn new(
        pool: PgPool,
        clock: SharedClock,
        registry: JobRegistry,
        concurrency: usize,
    ) -> Self {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let short = &uuid::Uuid::new_v4().simple().to_string()[..8];
        let worker_id = format!("{}-{}-{short}", host.trim(), std::process::id());
        Self {
            pool,
            clock,
            handlers: Arc::new(registry.handlers),
            worker_id: worker_id.into(),
            concurrency: concurrency.max(1),
            lease: DEFAULT_LEASE,
        }
    }

    pub fn worker_id(&self) -> &str {
        &self.worker_id
    }

    /// Claims up to `limit` due jobs. The query walks the partial index of queued jobs
    /// only; expired leases are put back in the queue by [`JobRunner::reclaim_expired`].
    pub async fn claim(&self, limit: usize) -> sqlx::Result<Vec<ClaimedJob>> {
        let now = self.clock.now();
        let until = now + chrono::Duration::from_std(self.lease).unwrap_or_default();
        sqlx::query_as(
            "WITH next AS (
                 SELECT id FROM jobs
                 WHERE status = 'queued' AND run_at <= $1
                 ORDER BY run_at, id
                 LIMIT $4
                 FOR UPDATE SKIP LOCKED)
             UPDATE jobs j SET status = 'running', attempts = j.attempts + 1, locked_by = $3, locked_until = $2
             FROM next WHERE j.id = next.id
             RETURNING j.id, j.kind, j.payload, j.attempts, j.max_attempts",
        )
        .bind(now)
        .bind(until)
        .bind(&*self.worker_id)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await
    }

    /// Jobs whose lease ran out (their worker died or hung) go back to the queue, or,
    /// if that was their last allowed attempt, to `dead`: a job that kills its worker
    /// every time must not take down the next one for ever. Returns how many moved.
    pub async fn reclaim_expired(&self) -> sqlx::Result<u64> {
        let r = sqlx::query(
            "UPDATE jobs SET
                 status = CASE WHEN attempts >= max_attempts THEN 'dead'::job_status ELSE 'queued'::job_status END,
                 run_at = $1,
                 finished_at = CASE WHEN attempts >= max_attempts THEN $1 END,
                 last_error = CASE WHEN attempts >= max_attempts
                     THEN 'the lease ran out on every attempt (the worker died or hung while running it)'
                     ELSE 'the lease ran out (the worker died or hung while running it)' END,
                 error_code = 'lease_expired', error_params = '{}',
                 locked_by = NULL, locked_until = NULL
             WHERE status = 'running' AND locked_until < $1",
        )
        .bind(self.clock.now())
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }

    /// Runs one claimed job and records the outcome.
    pub async fn execute(&self, job: ClaimedJob) -> anyhow::Result<Outcome> {
        let (id, kind, attempts, max_attempts) =
            (job.id, job.kind.clone(), job.attempts, job.max_attempts);
        let result = match self.handlers.get(&kind) {
            // Work for a capability this process does not have (an older version during
            // a rolling upgrade, or one not built yet): wait for one that does, without
            // spending the job's attempts.
            None => Err(JobError::Unhandled),
            Some(handler) => {
                let ctx = JobContext {
                    job,
                    pool: self.pool.clone(),
                    clock: self.clock.clone(),
                    worker_id: self.worker_id.clone(),
                    lease: self.lease,
                };
                let span = tracing::info_span!("job", id, kind = %kind, attempt = attempts);
                match AssertUnwindSafe(tracing::Instrument::instrument(handler.run(ctx), span))
                    .catch_unwind()
                    .await
                {
                    Ok(r) => r,
                    Err(_) => Err(JobError::Retry(JobFailure::Panicked.into())),
                }
            }
        };
        let now = self.clock.now();
        let failure = result.as_ref().err().map(|e| JobFailure::of(e).to_stored());
        let (outcome, run_at, error) = match result {
            Ok(()) => (Outcome::Done, None, None),
            Err(JobError::Unhandled) => (
                Outcome::Waiting,
                Some(now + chrono::Duration::minutes(5)),
                Some(format!("waiting for a Loopline that handles `{kind}` jobs")),
            ),
            Err(err) => {
                let message = err.to_string();
                if matches!(err, JobError::Fatal(_)) || attempts >= max_attempts {
                    tracing::error!(job_id = id, kind = %kind, attempts, error = %message, "job is dead");
                    (Outcome::Dead, None, Some(message))
                } else {
                    let retry_at = now + backoff(attempts);
                    tracing::warn!(job_id = id, kind = %kind, attempts, error = %message, %retry_at, "job failed; will retry");
                    (Outcome::Retrying, Some(retry_at), Some(message))
                }
            }
        };
        let status = match outcome {
            Outcome::Done => "done",
            Outcome::Dead => "dead",
            _ => "queued",
        };
        // Only the claim that ran it may record it: same worker, same attempt, still running.
        let rows = sqlx::query(
            "UPDATE jobs SET status = $2::job_status, run_at = coalesce($3, run_at), last_error = $4,
                    error_code = $9, error_params = coalesce($10, '{}'),
                    attempts = attempts - $8,
                    finished_at = CASE WHEN $2 = 'queued' THEN NULL ELSE $5 END,
                    locked_by = NULL, locked_until = NULL
             WHERE id = $1 AND locked_by = $6 AND attempts = $7 AND status = 'running'",
        )
        .bind(id)
        .bind(status)
        .bind(run_at)
        .bind(error)
        .bind(now)
        .bind(&*self.worker_id)
        .bind(attempts)
        .bind(i32::from(outcome == Outcome::Waiting))
        .bind(failure.as_ref().map(|(code, _)| code))
        .bind(failure.as_ref().map(|(_, params)| params))
        .execute(&self.pool)
        .await
        .context("recording the job's outcome")?
        .rows_affected();
        Ok(if rows == 1 {
            outcome
        } else {
            Outcome::LostLease
        })
    }

    /// Runs every due job, one at a time, until none is due; returns how many ran.
    /// Jobs a failure pushed into the future are not due until the clock gets there.
    pub async fn run_until_idle(&self) -> anyhow::Result<usize> {
        let mut ran = 0usize;
        loop {
            self.reclaim_expired().await?;
            let batch = self.claim(self.concurrency).await?;
            if batch.is_empty() {
                return Ok(ran);
            }
            for job in batch {
                self.execute(job).await?;
                ran += 1;
            }
        }
    }

    /// The background loop: runs up to `concurrency` jobs at once, sleeps until the next
    /// job is due or a notification arrives. On shutdown it stops claiming, gives running
    /// jobs `grace` to finish, then aborts the rest and hands their claims back.
    pub async fn run(self, shutdown: CancellationToken, grace: Duration) -> anyhow::Result<()> {
        let wake = Arc::new(Notify::new());
        let listener = tokio::spawn(listen(
            self.pool.clone(),
            NOTIFY_CHANNEL,
            wake.clone(),
            shutdown.clone(),
        ));
        let mut running: JoinSet<()> = JoinSet::new();
        tracing::info!(worker = %self.worker_id, concurrency = self.concurrency, "job worker started");

        let mut last_reclaim: Option<std::time::Instant> = None;
        while !shutdown.is_cancelled() {
            if last_reclaim.is_none_or(|t| t.elapsed() >= RECLAIM_EVERY) {
                match self.reclaim_expired().await {
                    Ok(0) => {}
                    Ok(n) => tracing::warn!(jobs = n, "took back jobs whose worker died or hung"),
                    Err(e) => tracing::warn!(error = %e, "checking for expired leases failed"),
                }
                last_reclaim = Some(std::time::Instant::now());
            }
            let free = self.concurrency - running.len();
            let mut claimed = 0;
            // Claim in batches (when half the slots are free, or all are): one claim
            // round trip per job would make the claiming loop the bottleneck.
            let batch_ready = free > 0 && (free * 2 >= self.concurrency || running.is_empty());
            if batch_ready {
                match self.claim(free).await {
                    Ok(jobs) => {
                        claimed = jobs.len();
                        for job in jobs {
                            let me = self.clone();
                            running.spawn(async move {
                                if let Err(e) = me.execute(job).await {
                                    tracing::error!(error = %format!("{e:#}"), "job bookkeeping failed; the lease will expire and the job rerun");
                                }
                            });
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "claiming jobs failed; retrying shortly");
                        tokio::select! {
                            _ = shutdown.cancelled() => break,
                            _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        }
                    }
                }
            }
            if claimed > 0 && running.len() < self.concurrency {
                continue;
            }
            let wait = if !batch_ready && !running.is_empty() {
                IDLE_POLL
            } else {
                self.time_until_due().await
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                Some(_) = running.join_next(), if !running.is_empty() => {}
                _ = wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }

        let drained = tokio::time::timeout(grace, async {
            while running.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            running.abort_all();
            while running.join_next().await.is_some() {}
            let released = self.release_claims().await.unwrap_or(0);
            tracing::warn!(
                released,
                "shutdown grace ran out; handed unfinished jobs back"
            );
        }
        listener.abort();
        tracing::info!("job worker stopped");
        Ok(())
    }

    /// Hands this worker's running jobs back to the queue, as if never attempted.
    pub async fn release_claims(&self) -> sqlx::Result<u64> {
        let r = sqlx::query(
            "UPDATE jobs SET status = 'queued', attempts = greatest(attempts - 1, 0), locked_by = NULL, locked_until = NULL
             WHERE status = 'running' AND locked_by = $1",
        )
        .bind(&*self.worker_id)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }

    async fn time_until_due(&self) -> Duration {
        let next: Option<DateTime<Utc>> = sqlx::query_scalar(
            "SELECT least((SELECT min(run_at) FROM jobs WHERE status = 'queued'),
                          (SELECT min(locked_until) FROM jobs WHERE status = 'running'))",
        )
        .fetch_one(&self.pool)
        .await
        .unwrap_or(None);
        match next {
            None => IDLE_POLL,
            Some(t) => (t - self.clock.now())
                .to_std()
                .unwrap_or_default()
                .clamp(Duration::from_millis(50), IDLE_POLL),
        }
    }
}

/// Delay before attempt `attempts + 1`: 5 s, 10 s, 20 s … capped at one hour.
pub fn backoff(attempts: i32) -> chrono::Duration {
    let exp = attempts.clamp(1, 20) - 1;
    let secs = 5i64.saturating_mul(1i64 << exp).min(3600);
    chrono::Duration::seconds(secs)
}

/// Forwards notifications on `channel` to a worker loop; reconnects if the connection
/// drops (and wakes the loop then, in case it missed one).
pub async fn listen(
    pool: PgPool,
    channel: &'static str,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
) {
    while !shutdown.is_cancelled() {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "job listener could not connect; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if let Err(e) = listener.listen(channel).await {
            tracing::warn!(error = %e, "LISTEN failed; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        loop {
            match listener.recv().await {
                Ok(_) => wake.notify_one(),
                Err(e) => {
                    tracing::warn!(error = %e, "job listener lost its connection");
                    wake.notify_one();
                    break;
                }
            }
        }
    }
}

/// Counts per status, for the dashboard and health checks.
#[derive(Debug, Default, Clone, Serialize)]
pub struct JobStats {
    pub queued: i64,
    pub running: i64,
    pub done: i64,
    pub dead: i64,
}

pub async fn stats(pool: &PgPool) -> sqlx::Result<JobStats> {
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT status::text, count(*) FROM jobs GROUP BY status")
            .fetch_all(pool)
            .await?;
    let mut s = JobStats::default();
    for (status, n) in rows {
        match status.as_str() {
            "queued" => s.queued = n,
            "running" => s.running = n,
            "done" => s.done = n,
            "dead" => s.dead = n,
            _ => {}
        }
    }
    Ok(s)
}

/// A job as the dashboard lists it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JobRow {
    pub id: i64,
    pub kind: String,
    pub status: String,
    pub attempts: i32,
    pub max_attempts: i32,
    pub run_at: DateTime<Utc>,
    /// The English technical detail of the last failure.
    pub last_error: Option<String>,
    /// The last failure as a code ([`JobFailure`]); `None` before codes existed.
    pub error_code: Option<String>,
    pub error_params: Value,
    pub progress_done: Option<i64>,
    pub progress_total: Option<i64>,
    pub updated_at: DateTime<Utc>,
}

impl JobRow {
    /// The last failure, if it has a code this version knows.
    pub fn failure(&self) -> Option<JobFailure> {
        JobFailure::from_stored(self.error_code.as_deref()?, &self.error_params)
    }
}

/// The most recent jobs that are not done (queued, running, dead), newest first.
pub async fn recent_unfinished(pool: &PgPool, limit: i64) -> sqlx::Result<Vec<JobRow>> {
    sqlx::query_as(
        "SELECT id, kind, status::text AS status, attempts, max_attempts, run_at, last_error, error_code, error_params, progress_done, progress_total, updated_at
         FROM jobs WHERE status <> 'done' ORDER BY updated_at DESC, id DESC LIMIT $1",
    )
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Puts a dead job back in the queue with a fresh set of attempts. `false` if it was not dead.
pub async fn retry_dead(pool: &PgPool, id: i64, now: DateTime<Utc>) -> sqlx::Result<bool> {
    let r = sqlx::query("UPDATE jobs SET status = 'queued', run_at = $2, attempts = 0, finished_at = NULL WHERE id = $1 AND status = 'dead'")
        .bind(id)
        .bind(now)
        .execute(pool)
        .await?;
    Ok(r.rows_affected() == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(1).num_seconds(), 5);
        assert_eq!(backoff(2).num_seconds(), 10);
        assert_eq!(backoff(3).num_seconds(), 20);
        assert_eq!(backoff(30).num_seconds(), 3600);
    }
}
