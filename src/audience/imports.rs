//! Running a CSV import: the upload is stored in PostgreSQL (so any process can run the
//! job), the mapping confirmed, then the job streams the file through the parser
//! (`audience::import`) and applies rows in batches. Each batch is one transaction that
//! also records how far the import got, so a crash or a cancel leaves no half-applied
//! batch and a restarted job resumes after the last applied line.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};

use super::import::{ImportFailure, ImportStatus, ReportCode};
use crate::{AppError, AppResult, Problem};

pub const IMPORT_JOB: &str = "audience.import";
/// Upload chunk size in the database.
pub const CHUNK_BYTES: usize = 1 << 20;
/// Rows per applied batch (one transaction each).
pub const BATCH_ROWS: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Add new addresses and update existing ones.
    AddUpdate,
    /// Add new addresses; leave existing ones as they are.
    AddOnly,
    /// Update existing addresses; add no one new.
    UpdateOnly,
}

impl Mode {
    pub const ALL: [Mode; 3] = [Mode::AddUpdate, Mode::AddOnly, Mode::UpdateOnly];

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::AddUpdate => "add_update",
            Mode::AddOnly => "add_only",
            Mode::UpdateOnly => "update_only",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.as_str() == s)
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Import {
    pub id: i64,
    pub filename: String,
    pub size_bytes: i64,
    pub encoding: Option<String>,
    pub vendor: Option<String>,
    pub headers: Vec<String>,
    pub mapping: Vec<String>,
    pub mode: String,
    pub tags: Vec<String>,
    pub status: String,
    pub lines_done: i64,
    pub bytes_done: i64,
    pub added: i64,
    pub updated: i64,
    pub skipped: i64,
    pub failed: i64,
    /// The English technical detail of a failure (shown second).
    pub error: Option<String>,
    /// Why it failed, as an [`ImportFailure`] code; `None` before codes existed.
    pub error_code: Option<String>,
    pub error_params: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl Import {
    /// Why it ended without importing (all of) its file, when the code is known.
    pub fn failure(&self) -> Option<ImportFailure> {
        ImportFailure::from_stored(self.error_code.as_deref()?, &self.error_params)
    }

    /// Percent of the file processed, for the progress bar.
    pub fn percent(&self) -> i64 {
        if self.status == "done" {
            100
        } else if self.size_bytes > 0 {
            (self.bytes_done * 100 / self.size_bytes).clamp(0, 100)
        } else {
            0
        }
    }
}

const COLUMNS: &str = "id, filename, size_bytes, encoding, vendor, headers, mapping, mode, tags, status::text AS status, \
     lines_done, bytes_done, added, updated, skipped, failed, error, error_code, error_params, created_at, finished_at";

pub async fn get(pool: &PgPool, id: i64) -> sqlx::Result<Option<Import>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM imports WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(pool)
    .await
}

pub async fn recent(pool: &PgPool, limit: i64) -> sqlx::Result<Vec<Import>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM imports ORDER BY id DESC LIMIT $1"
    )))
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Writes an upload into the database as it arrives: chunks, then the size. One
/// transaction, so a broken upload leaves nothing behind.
pub struct Upload {
    tx: sqlx::Transaction<'static, sqlx::Postgres>,
    id: i64,
    seq: i32,
    buf: Vec<u8>,
    size: i64,
}

impl Upload {
    pub async fn begin(pool: &PgPool, filename: &str, user_id: Option<i64>) -> sqlx::Result<Self> {
        let mut tx = pool.begin().await?;
        let name: String = filename
            .chars()
            .filter(|c| !c.is_control())
            .take(200)
            .collect();
        let id = sqlx::query_scalar(
            "INSERT INTO imports (filename, created_by) VALUES ($1, $2) RETURNING id",
        )
        .bind(if name.is_empty() {
            "upload.csv".to_string()
        } else {
            name
        })
        .bind(user_id)
        .fetch_one(&mut *tx)
        .await?;
        Ok(Self {
            tx,
            id,
            seq: 0,
            buf: Vec::with_capacity(CHUNK_BYTES),
            size: 0,
        })
    }

    pub async fn write(&mut self, mut data: &[u8]) -> sqlx::Result<()> {
        self.size += data.len() as i64;
        while !data.is_empty() {
            let room = CHUNK_BYTES - self.buf.len();
            let take = room.min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buf.len() == CHUNK_BYTES {
                self.flush().await?;
            }
        }
        Ok(())
    }

    async fn flush(&mut self) -> sqlx::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        sqlx::query("INSERT INTO import_chunks (import_id, seq, data) VALUES ($1, $2, $3)")
            .bind(self.id)
            .bind(self.seq)
            .bind(&self.buf)
            .execute(&mut *self.tx)
            .await?;
        self.seq += 1;
        self.buf.clear();
        Ok(())
    }

    pub fn size(&self) -> i64 {
        self.size
    }

    pub async fn finish(mut self) -> sqlx::Result<(i64, i64)> {
        self.flush().await?;
        sqlx::query("UPDATE imports SET size_bytes = $2 WHERE id = $1")
            .bind(self.id)
            .bind(self.size)
            .execute(&mut *self.tx)
            .await?;
        self.tx.commit().await?;
        Ok((self.id, self.size))
    }
}

/// Reads chunk `seq` of an upload.
pub async fn chunk(pool: &PgPool, id: i64, seq: i32) -> sqlx::Result<Option<Vec<u8>>> {
    sqlx::query_scalar("SELECT data FROM import_chunks WHERE import_id = $1 AND seq = $2")
        .bind(id)
        .bind(seq)
        .fetch_optional(pool)
        .await
}

/// One row ready to apply (already validated by the parser).
#[derive(Debug, Clone)]
pub struct StagedRow {
    pub line: u64,
    pub email: String,
    pub name: String,
    pub status: Option<ImportStatus>,
    pub subscribed_at: Option<DateTime<Utc>>,
    pub tags: Vec<String>,
    pub fields: serde_json::Map<String, serde_json::Value>,
}

/// A row not imported, for the report.
#[derive(Debug, Clone)]
pub struct Rejected {
    pub line: u64,
    pub value: String,
    pub reason: String,
    pub code: ReportCode,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BatchStats {
    pub added: i64,
    /// Of those added, how many went straight in by COPY (not stored; for tests and logs).
    pub copied: i64,
    pub updated: i64,
    pub skipped: i64,
    pub failed: i64,
}

fn status_sql(s: Option<ImportStatus>) -> &'static str {
    match s {
        None | Some(ImportStatus::Active) => "active",
        Some(ImportStatus::Unconfirmed) => "unconfirmed",
        Some(ImportStatus::Unsubscribed) => "unsubscribed",
        Some(ImportStatus::Bounced) => "bounced",
        Some(ImportStatus::Complained) => "complained",
    }
}

/// The ids of every tag a batch names (the rows' own and the import's), created when
/// missing, keyed by spelling. Run before the batch's transaction, in its own, so two
/// batches in flight never wait on each other's new tags; a rolled-back batch may leave
/// a tag with no one in it, as deleting its last member would.
pub async fn batch_tag_ids(
    conn: &mut PgConnection,
    rows: &[StagedRow],
    import_tags: &[String],
) -> sqlx::Result<std::collections::HashMap<String, i64>> {
    let distinct: std::collections::HashSet<&String> = import_tags
        .iter()
        .chain(rows.iter().flat_map(|r| &r.tags))
        .collect();
    let names: Vec<String> = distinct.into_iter().cloned().collect();
    if names.is_empty() {
        return Ok(Default::default());
    }
    super::tags::ensure_named(conn, &names).await
}

/// A row's tag ids (its own and the import's), sorted, into `ids`.
fn row_tag_ids(
    ids: &mut Vec<i64>,
    r: &StagedRow,
    import_tags: &[String],
    tag_ids: &std::collections::HashMap<String, i64>,
) {
    ids.clear();
    ids.extend(
        r.tags
            .iter()
            .chain(import_tags)
            .filter_map(|t| tag_ids.get(t)),
    );
    ids.sort_unstable();
    ids.dedup();
}

/// A row's custom fields as JSON, serialized straight from the row into `json`.
fn row_fields(json: &mut Vec<u8>, r: &StagedRow) -> sqlx::Result<()> {
    json.clear();
    serde_json::to_writer(&mut *json, &r.fields)
        .map_err(|e| sqlx::Error::Protocol(format!("encoding fields: {e}")))
}

/// The common case of an import, addresses new to the list, without staging: the rows
/// whose address is not suppressed go straight into `subscribers` by COPY (a multi-row
/// heap insert, where `INSERT … ON CONFLICT` inserts speculatively row by row), in a
/// savepoint. Returns how many were added, the rows left for the staged path (the
/// suppressed, or the whole batch when the COPY failed, which is rolled back so nothing
/// is half-applied) and whether it failed: an address already in the list, which the
/// unique index reports as an error, so the staged path decides instead.
async fn copy_new<'r>(
    conn: &mut PgConnection,
    import_id: i64,
    import_tags: &[String],
    tag_ids: &std::collections::HashMap<String, i64>,
    rows: &'r [StagedRow],
    now: DateTime<Utc>,
) -> sqlx::Result<(i64, Vec<&'r StagedRow>, bool)> {
    let hashes: Vec<Vec<u8>> = rows
        .iter()
        .map(|r| super::subscribers::email_hash(&r.email))
        .collect();
    let found: Vec<i64> = sqlx::query_scalar(
        "SELECT coalesce(array_agg(u.i), '{}') FROM unnest($1::bytea[]) WITH ORDINALITY AS u(h, i)
         WHERE EXISTS (SELECT 1 FROM suppressions sp WHERE sp.email_hash = u.h)",
    )
    .bind(&hashes)
    .fetch_one(&mut *conn)
    .await?;
    let mut staged = vec![false; rows.len()];
    for i in found {
        if let Some(s) = usize::try_from(i - 1).ok().and_then(|i| staged.get_mut(i)) {
            *s = true;
        }
    }
    let rest = |all: bool| -> Vec<&'r StagedRow> {
        rows.iter()
            .zip(&staged)
            .filter(|&(_, &s)| all || s)
            .map(|(r, _)| r)
            .collect()
    };
    if staged.iter().all(|&s| s) {
        return Ok((0, rest(true), false));
    }

    let source = format!("import:{import_id}");
    let mut data = crate::db::copy::BinaryCopy::with_capacity(rows.len() * 256);
    let (mut ids, mut json) = (Vec::new(), Vec::with_capacity(256));
    for (r, _) in rows.iter().zip(&staged).filter(|&(_, &s)| !s) {
        let status = status_sql(r.status);
        let since = r.subscribed_at.unwrap_or(now);
        row_tag_ids(&mut ids, r, import_tags, tag_ids);
        row_fields(&mut json, r)?;
        data.row(11);
        data.text(&r.email);
        data.text(&r.name);
        data.text(status);
        data.jsonb(&json);
        data.int8_array(&ids);
        data.text(&source);
        data.timestamptz(since); // consent_at
        data.text("import"); // consent_method
        data.timestamptz_or_null((status == "active").then_some(since)); // confirmed_at
        data.timestamptz_or_null((status == "unsubscribed").then_some(now)); // unsubscribed_at
        data.timestamptz(since); // created_at
    }
    sqlx::query("SAVEPOINT import_copy")
        .execute(&mut *conn)
        .await?;
    let copied = async {
        let mut copy = conn
            .copy_in_raw(
                "COPY subscribers (email, name, status, fields, tag_ids, source, consent_at, consent_method, confirmed_at, unsubscribed_at, created_at) FROM STDIN (FORMAT binary)",
            )
            .await?;
        copy.send(data.finish()).await?;
        copy.finish().await
    }
    .await;
    match copied {
        Ok(added) => {
            sqlx::query("RELEASE SAVEPOINT import_copy")
                .execute(&mut *conn)
                .await?;
            Ok((added as i64, rest(false), false))
        }
        // Only an address already in the list; anything else (a deadlock, a cancel)
        // would strike the staged path the same way.
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            tracing::debug!(import = import_id, error = %e, "an import batch is staged instead");
            sqlx::query("ROLLBACK TO SAVEPOINT import_copy")
                .execute(&mut *conn)
                .await?;
            Ok((0, rest(true), true))
        }
        Err(e) => Err(e),
    }
}

/// Applies one batch in the caller's transaction: new addresses straight in by COPY
/// ([`copy_new`]); the rest staged with COPY: set aside suppressed addresses, insert the
/// new, update the existing (never re-activating anyone who left), tag, log events, and
/// record the report lines.
#[allow(clippy::too_many_arguments)] // one batch's whole context, called from one place
pub async fn apply_batch(
    conn: &mut PgConnection,
    import_id: i64,
    mode: Mode,
    import_tags: &[String],
    tag_ids: &std::collections::HashMap<String, i64>,
    rows: &[StagedRow],
    rejected: &[Rejected],
    now: DateTime<Utc>,
    copy_first: &std::sync::atomic::AtomicBool,
) -> sqlx::Result<BatchStats> {
    use std::sync::atomic::Ordering::Relaxed;
    let mut stats = BatchStats {
        failed: rejected.len() as i64,
        ..Default::default()
    };
    if !rejected.is_empty() {
        let lines: Vec<i64> = rejected.iter().map(|r| r.line as i64).collect();
        let values: Vec<String> = rejected
            .iter()
            .map(|r| r.value.chars().take(500).collect())
            .collect();
        let reasons: Vec<String> = rejected.iter().map(|r| r.reason.clone()).collect();
        let codes: Vec<&str> = rejected.iter().map(|r| r.code.as_str()).collect();
        sqlx::query("INSERT INTO import_report (import_id, line, value, reason, code) SELECT $1, * FROM unnest($2::bigint[], $3::text[], $4::text[], $5::text[]) ON CONFLICT DO NOTHING")
            .bind(import_id)
            .bind(&lines)
            .bind(&values)
            .bind(&reasons)
            .bind(&codes)
            .execute(&mut *conn)
            .await?;
    }
    if rows.is_empty() {
        return Ok(stats);
    }
    // New addresses go straight in; only the rest are staged.
    let rows: Vec<&StagedRow> = if mode == Mode::UpdateOnly || !copy_first.load(Relaxed) {
        rows.iter().collect()
    } else {
        let (added, rest, failed) =
            copy_new(conn, import_id, import_tags, tag_ids, rows, now).await?;
        if failed {
            // The file holds addresses already in the list: stage the batches after.
            copy_first.store(false, Relaxed);
        }
        stats.added += added;
        stats.copied += added;
        rest
    };
    if rows.is_empty() {
        return Ok(stats);
    }
    sqlx::query(
        "CREATE TEMP TABLE IF NOT EXISTS import_stage (
             line bigint, email text, email_hash bytea, name text, status subscriber_status, subscribed_at timestamptz,
             tag_ids bigint[], fields jsonb, subscriber_id bigint
         ) ON COMMIT DELETE ROWS",
    )
    .execute(&mut *conn)
    .await?;

    // Binary, as `copy_new` writes (this runs once per row on the runtime).
    let mut data = crate::db::copy::BinaryCopy::with_capacity(rows.len() * 256);
    let (mut ids, mut json) = (Vec::new(), Vec::with_capacity(256));
    for &r in &rows {
        row_tag_ids(&mut ids, r, import_tags, tag_ids);
        row_fields(&mut json, r)?;
        data.row(8);
        data.int8(r.line as i64);
        data.text(&r.email);
        data.bytea(&super::subscribers::email_hash(&r.email));
        data.text(&r.name);
        data.text(status_sql(r.status));
        data.timestamptz_or_null(r.subscribed_at);
        data.int8_array(&ids);
        data.jsonb(&json);
    }
    let mut copy = conn
        .copy_in_raw(
            "COPY import_stage (line, email, email_hash, name, status, subscribed_at, tag_ids, fields) FROM STDIN (FORMAT binary)",
        )
        .await?;
    copy.send(data.finish()).await?;
    copy.finish().await?;

    // `$5` is free for the condition.
    let report = |code: ReportCode, condition: &'static str| {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "WITH gone AS (DELETE FROM import_stage st WHERE {condition} RETURNING line, email)
             INSERT INTO import_report (import_id, line, value, reason, code)
             SELECT $1, line, CASE WHEN $3 THEN '(erased address)' ELSE email END, $2, $4 FROM gone ON CONFLICT DO NOTHING"
        )))
        .bind(import_id)
        .bind(code.english())
        .bind(code == ReportCode::Erased)
        .bind(code.as_str())
    };
    // Erased at their request: only their own new signup may bring them back.
    stats.skipped += report(
        ReportCode::Erased,
        "EXISTS (SELECT 1 FROM suppressions sp WHERE sp.email_hash = st.email_hash)",
    )
    .execute(&mut *conn)
    .await?
    .rows_affected() as i64;
    // Who is already in the list. Adding modes find out from the insert itself (its
    // unique-index check is the lookup, so new addresses are probed once, not twice);
    // only the rows it did not insert are then matched, one index probe each (a join
    // would hash the whole table per batch).
    let source = format!("import:{import_id}");
    let existing: Vec<i64> = match mode {
        Mode::UpdateOnly => Vec::new(),
        Mode::AddUpdate | Mode::AddOnly => {
            let (added, not_inserted): (i64, Vec<i64>) = sqlx::query_as(
                "WITH ins AS (
                     INSERT INTO subscribers (email, name, status, fields, tag_ids, source, consent_at, consent_method, confirmed_at, unsubscribed_at, created_at)
                     SELECT st.email, st.name, st.status, st.fields, st.tag_ids, $1, coalesce(st.subscribed_at, $2), 'import',
                            CASE WHEN st.status = 'active' THEN coalesce(st.subscribed_at, $2) END,
                            CASE WHEN st.status = 'unsubscribed' THEN $2 END,
                            coalesce(st.subscribed_at, $2)
                     FROM import_stage st
                     ON CONFLICT (lower(email)) DO NOTHING
                     RETURNING lower(email) AS e)
                 SELECT (SELECT count(*) FROM ins),
                        ARRAY(SELECT st.line FROM import_stage st WHERE NOT EXISTS (SELECT 1 FROM ins WHERE ins.e = lower(st.email)))",
            )
            .bind(&source)
            .bind(now)
            .fetch_one(&mut *conn)
            .await?;
            stats.added += added;
            not_inserted
        }
    };
    if mode == Mode::AddOnly {
        if !existing.is_empty() {
            stats.skipped += report(ReportCode::Exists, "st.line = ANY($5)")
                .bind(&existing)
                .execute(&mut *conn)
                .await?
                .rows_affected() as i64;
        }
        return Ok(stats);
    }
    if mode == Mode::AddUpdate && existing.is_empty() {
        return Ok(stats);
    }
    // Rows inserted above were new (a second row for the same address in one batch
    // counts as that address, as before); the rest are matched to their subscriber.
    let only_lines = mode == Mode::AddUpdate;
    sqlx::query(
        "UPDATE import_stage st SET subscriber_id = (SELECT s.id FROM subscribers s WHERE lower(s.email) = lower(st.email))
         WHERE NOT $1 OR st.line = ANY($2)",
    )
    .bind(only_lines)
    .bind(&existing)
    .execute(&mut *conn)
    .await?;
    if only_lines {
        // Not inserted yet not there: deleted by someone else while importing.
        stats.skipped += report(
            ReportCode::Changed,
            "st.line = ANY($5) AND st.subscriber_id IS NULL",
        )
        .bind(&existing)
        .execute(&mut *conn)
        .await?
        .rows_affected() as i64;
    } else {
        stats.skipped += report(ReportCode::Missing, "st.subscriber_id IS NULL")
            .execute(&mut *conn)
            .await?
            .rows_affected() as i64;
    }

    // Existing subscribers: fill in, never re-activate anyone who unsubscribed, bounced or
    // complained; a row saying they left is respected.
    stats.updated += sqlx::query(
        "UPDATE subscribers s SET
             name = CASE WHEN st.name <> '' THEN st.name ELSE s.name END,
             fields = s.fields || st.fields,
             tag_ids = CASE WHEN st.tag_ids <@ s.tag_ids THEN s.tag_ids ELSE tag_ids_add(s.tag_ids, st.tag_ids) END,
             status = CASE WHEN st.status IN ('unsubscribed', 'bounced', 'complained') AND s.status IN ('active', 'unconfirmed') THEN st.status ELSE s.status END,
             unsubscribed_at = CASE WHEN st.status = 'unsubscribed' AND s.status IN ('active', 'unconfirmed') THEN $1 ELSE s.unsubscribed_at END
         FROM import_stage st WHERE st.subscriber_id = s.id",
    )
    .bind(now)
    .execute(&mut *conn)
    .await?
    .rows_affected() as i64;

    // New subscribers' "imported" timeline entry is derived from their `source`
    // (`subscribers::timeline`); changes to existing ones are events.
    sqlx::query(
        "INSERT INTO events (subscriber_id, kind, at, data)
         SELECT subscriber_id, 'import_updated', $1, jsonb_build_object('import', $2::bigint, 'line', line)
         FROM import_stage WHERE subscriber_id IS NOT NULL",
    )
    .bind(now)
    .bind(import_id)
    .execute(&mut *conn)
    .await?;
    Ok(stats)
}

/// Confirms the mapping and queues the import job, in one transaction.
pub async fn queue(
    pool: &PgPool,
    id: i64,
    mapping: &[String],
    mode: Mode,
    tags: &[String],
    now: DateTime<Utc>,
) -> AppResult<()> {
    let emails = mapping.iter().filter(|m| m.as_str() == "email").count();
    if emails != 1 {
        return Err(AppError::Unprocessable(Problem::ImportNoEmail));
    }
    let mut tx = pool.begin().await?;
    let updated = sqlx::query("UPDATE imports SET mapping = $2, mode = $3, tags = $4, status = 'queued' WHERE id = $1 AND status = 'uploaded'")
        .bind(id)
        .bind(mapping)
        .bind(mode.as_str())
        .bind(tags)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if updated == 0 {
        return Err(AppError::Conflict(Problem::ImportStarted));
    }
    crate::jobs::enqueue(
        &mut *tx,
        now,
        crate::jobs::NewJob::new(IMPORT_JOB, serde_json::json!({ "import_id": id }))
            .unique(format!("import:{id}")),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Asks a queued or running import to stop after its current batch.
pub async fn cancel(pool: &PgPool, id: i64, now: DateTime<Utc>) -> AppResult<()> {
    let r = sqlx::query("UPDATE imports SET status = 'cancelled', finished_at = $2, error_code = 'cancelled', error_params = '{}' WHERE id = $1 AND status IN ('uploaded', 'queued', 'running')")
        .bind(id)
        .bind(now)
        .execute(pool)
        .await?;
    if r.rows_affected() == 0 {
        return Err(AppError::Conflict(Problem::ImportFinished));
    }
    drop_file(pool, id).await?;
    Ok(())
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ReportLine {
    pub line: i64,
    pub value: String,
    pub reason: String,
    /// A `ReportCode` (empty for lines written before codes existed).
    pub code: String,
}

pub async fn report(pool: &PgPool, id: i64) -> sqlx::Result<Vec<ReportLine>> {
    sqlx::query_as(
        "SELECT line, value, reason, code FROM import_report WHERE import_id = $1 ORDER BY line",
    )
    .bind(id)
    .fetch_all(pool)
    .await
}

// ---- Reading the stored file, inspecting it, and the import job ----

use std::{
    io::Read,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use super::{
    fields::FieldDef,
    import::{ColumnMapping, Rows, Target, implied_status, preview},
    segments,
};
use crate::jobs::{JobContext, JobError};

/// A blocking `Read` over chunks fed by an async task, counting raw bytes consumed.
struct ChunkReader {
    rx: tokio::sync::mpsc::Receiver<Result<Vec<u8>, String>>,
    buf: Vec<u8>,
    pos: usize,
    consumed: Arc<AtomicU64>,
}

impl Read for ChunkReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.pos >= self.buf.len() {
            match self.rx.blocking_recv() {
                Some(Ok(next)) => {
                    self.buf = next;
                    self.pos = 0;
                }
                // A failed read must not look like the end of the file.
                Some(Err(e)) => return Err(std::io::Error::other(e)),
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        self.consumed.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// The first chunks of an upload, enough for a preview.
async fn head(pool: &PgPool, id: i64) -> sqlx::Result<Vec<u8>> {
    let mut out = Vec::new();
    for seq in 0..2 {
        match chunk(pool, id, seq).await? {
            Some(c) => out.extend_from_slice(&c),
            None => break,
        }
    }
    Ok(out)
}

/// After upload: detect encoding, header and vendor, guess the mapping, store them.
/// A file that is not a CSV at all is marked failed with the reason.
pub async fn inspect(pool: &PgPool, id: i64) -> AppResult<()> {
    let bytes = head(pool, id).await?;
    let fields = segments::field_defs(pool).await?;
    match preview(bytes.as_slice(), &fields, 20) {
        Ok(p) => {
            let mut mapping: Vec<String> = p
                .headers
                .iter()
                .enumerate()
                .map(|(i, _)| {
                    p.mapping
                        .columns
                        .get(i)
                        .map(Target::key)
                        .unwrap_or_else(|| "ignore".into())
                })
                .collect();
            // No header says "email": take the unmapped column whose cells look like
            // addresses (exports with headers like "Subscriber" or "Contact").
            if !mapping.iter().any(|m| m == "email") {
                let looks_like = |i: usize| {
                    p.records
                        .iter()
                        .filter(|r| r.get(i).is_some_and(|c| c.contains('@')))
                        .count()
                };
                if let Some(best) = (0..mapping.len())
                    .filter(|&i| mapping[i] == "ignore")
                    .max_by_key(|&i| looks_like(i))
                    && looks_like(best) * 2 > p.records.len()
                {
                    mapping[best] = "email".into();
                }
            }
            sqlx::query("UPDATE imports SET encoding = $2, vendor = $3, headers = $4, mapping = $5 WHERE id = $1")
                .bind(id)
                .bind(p.encoding.label())
                .bind(p.vendor.map(|v| v.label()))
                .bind(&p.headers)
                .bind(&mapping)
                .execute(pool)
                .await?;
            Ok(())
        }
        Err(e) => {
            let (code, params) = ImportFailure::from(&e).to_stored();
            sqlx::query("UPDATE imports SET status = 'failed', error = $2, error_code = $3, error_params = $4, finished_at = now() WHERE id = $1")
                .bind(id)
                .bind(e.to_string())
                .bind(code)
                .bind(params)
                .execute(pool)
                .await?;
            drop_file(pool, id).await?;
            Ok(())
        }
    }
}

/// The first `n` records, raw, for the mapping screen.
pub async fn preview_rows(pool: &PgPool, import: &Import, n: usize) -> AppResult<Vec<Vec<String>>> {
    let bytes = head(pool, import.id).await?;
    Ok(preview(bytes.as_slice(), &[], n)
        .map(|p| p.records)
        .unwrap_or_default())
}

/// Choices for a column: (key, label), each target named by `name` (which gets the
/// key; a custom field's key is `field:` and its label).
pub fn target_choices(fields: &[FieldDef], name: impl Fn(&str) -> String) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = [
        Target::Ignore,
        Target::Email,
        Target::Name,
        Target::FirstName,
        Target::LastName,
        Target::Status,
        Target::SubscribedAt,
        Target::Tags,
    ]
    .into_iter()
    .map(|t| {
        let key = t.key();
        let label = name(&key);
        (key, label)
    })
    .collect();
    out.extend(fields.iter().map(|f| {
        (
            Target::Field(f.key.clone()).key(),
            name(&format!("field:{}", f.label)),
        )
    }));
    out
}

/// Checks a mapping from the form before anything is queued.
pub fn check_mapping(mapping: &[String], fields: &[FieldDef]) -> Result<(), Problem> {
    use super::import::FileError;
    let mut columns = Vec::with_capacity(mapping.len());
    for (i, key) in mapping.iter().enumerate() {
        let t = Target::from_key(key).ok_or(Problem::ImportUnknownChoice { column: i + 1 })?;
        if let Target::Field(k) = &t
            && !fields.iter().any(|f| &f.key == k)
        {
            return Err(Problem::ImportUnknownField { column: i + 1 });
        }
        columns.push(t);
    }
    super::import::validate(&ColumnMapping { columns }).map_err(|e| match e {
        FileError::DuplicateEmailColumn { first, second } => {
            Problem::ImportEmailTwice { first, second }
        }
        FileError::DuplicateColumn {
            target,
            first,
            second,
        } => Problem::ImportTargetTwice {
            target,
            first,
            second,
        },
        // `validate` finds only duplicates and a missing email column.
        _ => Problem::ImportNoEmail,
    })
}

/// Rows the parser accepts but PostgreSQL would refuse (and so fail the whole batch on
/// every retry) are reported instead: over-long names, NUL characters.
fn storable(
    r: super::import::ImportRow,
) -> Result<super::import::ImportRow, super::import::RowReport> {
    let reject = |reason: &str| super::import::RowReport {
        code: ReportCode::Name,
        line: r.line,
        value: r.email.as_str().to_string(),
        reason: reason.to_string(),
    };
    if r.name.chars().count() > 200 {
        return Err(reject("the name is longer than 200 characters"));
    }
    let has_nul = |v: &serde_json::Value| v.as_str().is_some_and(|s| s.contains('\0'));
    if r.name.contains('\0')
        || r.tags.iter().any(|t| t.contains('\0'))
        || r.fields.values().any(has_nul)
    {
        return Err(reject("contains a NUL character"));
    }
    Ok(r)
}

enum Parsed {
    Batch {
        rows: Vec<StagedRow>,
        rejected: Vec<Rejected>,
        last_line: u64,
        bytes: u64,
    },
    FileError(ImportFailure, String),
    End {
        io_error: Option<String>,
        bytes: u64,
    },
}

#[derive(Deserialize)]
struct JobPayload {
    import_id: i64,
}

/// Ends a running import: `done`, or `failed` with why (and the English detail).
async fn finish(
    pool: &PgPool,
    id: i64,
    failure: Option<(&ImportFailure, &str)>,
    now: DateTime<Utc>,
) -> sqlx::Result<()> {
    let status = if failure.is_some() { "failed" } else { "done" };
    let (code, params) = failure.map(|(f, _)| f.to_stored()).unzip();
    sqlx::query("UPDATE imports SET status = $2::import_status, error = $3, finished_at = $4, error_code = $5, error_params = coalesce($6, '{}') WHERE id = $1 AND status = 'running'")
        .bind(id)
        .bind(status)
        .bind(failure.map(|(_, detail)| detail))
        .bind(now)
        .bind(code)
        .bind(params)
        .execute(pool)
        .await?;
    drop_file(pool, id).await
}

/// The raw file holds personal data; once an import has ended it is not kept.
async fn drop_file(pool: &PgPool, id: i64) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM import_chunks WHERE import_id = $1")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

/// What became of one batch.
enum Applied {
    Committed {
        bytes: u64,
    },
    /// Cancelled, or a predecessor did not commit: rolled back, nothing applied.
    Stopped,
}

/// One batch on its way into the database (owned, so it runs on its own task).
struct BatchJob {
    pool: PgPool,
    id: i64,
    mode: Mode,
    tags: Arc<Vec<String>>,
    rows: Vec<StagedRow>,
    rejected: Vec<Rejected>,
    /// The progress mark the previous batch leaves when it commits.
    after: u64,
    /// This batch's place in the run: it holds its [`turn`] `seq` until it ends.
    seq: i32,
    /// Resolves once the previous batch holds its turn (dropped if it never will).
    previous: Option<tokio::sync::oneshot::Receiver<()>>,
    /// Tells the next batch this one holds its turn.
    holding: Option<tokio::sync::oneshot::Sender<()>>,
    last_line: u64,
    bytes: u64,
    now: DateTime<Utc>,
    /// Whether batches try [`copy_new`] first: until one finds its addresses in the list.
    copy_first: Arc<std::sync::atomic::AtomicBool>,
}

/// Waits for (and then holds, until the transaction ends) batch `seq`'s turn of import
/// `import`. A batch takes its own turn first thing and, before it commits, the turn of
/// the batch before it: so batches commit in file order, and that wait is a lock
/// PostgreSQL knows about. When two batches' rows hold each other up (addresses the
/// unique index folds together that the file's duplicate check does not, under a
/// locale whose `lower()` folds more than ASCII), the earlier batch waits for the later
/// one's row while the later one waits for the earlier one's turn: PostgreSQL's
/// deadlock detector sees the cycle and breaks it within `deadlock_timeout`, where a
/// wait inside Loopline would hang ([`run_job`] then goes on one batch at a time past
/// the two). The same goes for a cycle through another import's batches, which the
/// job's retry picks up.
///
/// The two-`int4` advisory keys are used nowhere else. The import id is folded into
/// 32 bits, and a second run of the same import (a worker taking over an expired
/// lease) counts `seq` from 1 again: a shared key only ever means a needless wait, as
/// each commit is still guarded by the progress mark.
async fn turn(conn: &mut PgConnection, import: i64, seq: i32) -> sqlx::Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock($1, $2)")
        .bind((import ^ (import >> 32)) as i32)
        .bind(seq)
        .execute(conn)
        .await?;
    Ok(())
}

impl BatchJob {
    async fn apply(mut self) -> Result<Applied, JobError> {
        // Take our turn only once the previous batch holds its own, so that we queue
        // behind it, not it behind us.
        let follows = match self.previous.take() {
            Some(previous) => {
                if previous.await.is_err() {
                    return Ok(Applied::Stopped);
                }
                true
            }
            None => false,
        };
        let tag_ids = {
            let mut conn = self.pool.acquire().await?;
            batch_tag_ids(&mut conn, &self.rows, &self.tags).await?
        };
        let mut tx = self.pool.begin().await?;
        match self.write(&mut tx, &tag_ids, follows).await {
            Ok(true) => {
                tx.commit().await?;
                Ok(Applied::Committed { bytes: self.bytes })
            }
            Ok(false) => {
                tx.rollback().await?;
                tracing::info!(
                    import = self.id,
                    "import stopped before line {}",
                    self.last_line
                );
                Ok(Applied::Stopped)
            }
            Err(e) => {
                // End the transaction now, not when the connection is next used: the
                // next batch is waiting for our turn.
                let _ = tx.rollback().await;
                Err(e.into())
            }
        }
    }

    /// Applies the batch and moves the progress mark in `tx`; whether it may commit.
    async fn write(
        &mut self,
        tx: &mut PgConnection,
        tag_ids: &std::collections::HashMap<String, i64>,
        follows: bool,
    ) -> sqlx::Result<bool> {
        turn(tx, self.id, self.seq).await?;
        if let Some(holding) = self.holding.take() {
            let _ = holding.send(());
        }
        let stats = apply_batch(
            tx,
            self.id,
            self.mode,
            &self.tags,
            tag_ids,
            &self.rows,
            &self.rejected,
            self.now,
            &self.copy_first,
        )
        .await?;
        // Commit in file order: only after the previous batch has ended.
        if follows {
            turn(tx, self.id, self.seq.wrapping_sub(1)).await?;
        }
        // The progress mark commits with the batch, and only moves on from the mark the
        // previous batch left: if that one rolled back (an error, a cancel, anything
        // unforeseen), so does this one.
        let advanced = sqlx::query(
            "UPDATE imports SET lines_done = $2, bytes_done = greatest(bytes_done, $3), added = added + $4,
                    updated = updated + $5, skipped = skipped + $6, failed = failed + $7
             WHERE id = $1 AND status = 'running' AND lines_done = $8",
        )
        .bind(self.id)
        .bind(self.last_line as i64)
        .bind(self.bytes as i64)
        .bind(stats.added)
        .bind(stats.updated)
        .bind(stats.skipped)
        .bind(stats.failed)
        .bind(self.after as i64)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        Ok(advanced)
    }
}

/// Waits, oldest first, until at most `keep` batches are in flight. `Some(())` when the
/// import stopped (cancelled) and the job should end quietly.
async fn settle(
    ctx: &JobContext,
    inflight: &mut std::collections::VecDeque<tokio::task::JoinHandle<Result<Applied, JobError>>>,
    keep: usize,
    size: i64,
) -> Result<Option<()>, JobError> {
    while inflight.len() > keep {
        let Some(task) = inflight.pop_front() else {
            break;
        };
        let applied = task
            .await
            .map_err(|e| JobError::Retry(anyhow::anyhow!("an import batch task failed: {e}")))??;
        match applied {
            Applied::Committed { bytes } => ctx.progress(bytes as i64, size).await?,
            Applied::Stopped => return Ok(Some(())),
        }
    }
    Ok(None)
}

/// The `audience.import` job: stream, parse on a blocking thread, apply in batches.
/// Resumes after `lines_done` when run again after a crash.
pub async fn run_job(ctx: JobContext) -> Result<(), JobError> {
    let JobPayload { import_id: id } = ctx.payload()?;
    // Two of its batches may hold each other up (see [`turn`]) until PostgreSQL rolls
    // one back: then go on from the last committed batch, one batch at a time as far as
    // the batches that were in flight, and two at a time after. Again for each such
    // pair, as long as each round gets further.
    let (mut serial_until, mut dispatched, mut stuck_at) = (0, 0, None);
    let result = loop {
        let result = run(&ctx, id, serial_until, &mut dispatched).await;
        if !result.as_ref().is_err_and(is_deadlock) {
            break result;
        }
        let done = get(&ctx.pool, id).await?.map(|i| i.lines_done);
        if stuck_at == Some(done) {
            break result;
        }
        stuck_at = Some(done);
        serial_until = dispatched;
        tracing::warn!(
            import = id,
            "two import batches deadlocked (addresses the database's lower() folds together, \
             or another import of the same people); going on one batch at a time up to line {dispatched}"
        );
    };
    // The job is about to die: say so on the import instead of leaving it "running".
    match result {
        Err(e) if matches!(e, JobError::Fatal(_)) || ctx.job.attempts >= ctx.job.max_attempts => {
            let failure = match &e {
                JobError::Retry(a) | JobError::Fatal(a) => {
                    a.downcast_ref::<ImportFailure>().cloned()
                }
                JobError::Unhandled => None,
            }
            .unwrap_or(match crate::jobs::JobFailure::of(&e) {
                crate::jobs::JobFailure::Database => ImportFailure::Database,
                _ => ImportFailure::Stopped,
            });
            let detail = format!("the import stopped: {e}");
            let _ = finish(&ctx.pool, id, Some((&failure, &detail)), ctx.clock.now()).await;
            // The job's own record points at the import, whose page says why (unless it
            // already says something more precise, like the import being gone).
            if !matches!(
                crate::jobs::JobFailure::of(&e),
                crate::jobs::JobFailure::Failed | crate::jobs::JobFailure::Database
            ) {
                return Err(e);
            }
            Err(match e {
                JobError::Retry(a) => JobError::Retry(
                    a.context(crate::jobs::JobFailure::ImportStopped { import: id }),
                ),
                JobError::Fatal(a) => JobError::Fatal(
                    a.context(crate::jobs::JobFailure::ImportStopped { import: id }),
                ),
                other => other,
            })
        }
        other => other,
    }
}

/// Whether a job error is PostgreSQL breaking a deadlock.
fn is_deadlock(e: &JobError) -> bool {
    match e {
        JobError::Retry(a) | JobError::Fatal(a) => a.chain().any(|c| {
            c.downcast_ref::<sqlx::Error>()
                .and_then(|e| e.as_database_error())
                .and_then(|d| d.code())
                .is_some_and(|code| code == "40P01")
        }),
        JobError::Unhandled => false,
    }
}

/// Applies the import from its last committed batch on, two batches in flight at once
/// but one at a time up to line `serial_until`; `dispatched` follows the last line of
/// the batches handed out.
async fn run(
    ctx: &JobContext,
    id: i64,
    serial_until: u64,
    dispatched: &mut u64,
) -> Result<(), JobError> {
    let pool = ctx.pool.clone();
    let Some(imp) = get(&pool, id).await? else {
        return Err(JobError::Fatal(
            crate::jobs::JobFailure::ImportGone { import: id }.into(),
        ));
    };
    if !matches!(imp.status.as_str(), "queued" | "running") {
        return Ok(());
    }
    let now = ctx.clock.now();
    sqlx::query("UPDATE imports SET status = 'running', started_at = coalesce(started_at, $2) WHERE id = $1 AND status IN ('queued', 'running')")
        .bind(id)
        .bind(now)
        .execute(&pool)
        .await?;
    let fields = segments::field_defs(&pool).await?;
    let mapping = ColumnMapping {
        columns: imp
            .mapping
            .iter()
            .map(|k| Target::from_key(k).unwrap_or(Target::Ignore))
            .collect(),
    };
    let mode = Mode::parse(&imp.mode).unwrap_or(Mode::AddUpdate);
    let resume_after = imp.lines_done.max(0) as u64;
    let default_status = implied_status(&imp.headers, Some(&imp.filename));

    let (chunk_tx, chunk_rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, String>>(2);
    let fetch_pool = pool.clone();
    let fetcher = tokio::spawn(async move {
        for seq in 0.. {
            match chunk(&fetch_pool, id, seq).await {
                Ok(Some(data)) => {
                    if chunk_tx.send(Ok(data)).await.is_err() {
                        return;
                    }
                }
                Ok(None) => return,
                Err(e) => {
                    let _ = chunk_tx
                        .send(Err(format!("reading the upload from the database: {e}")))
                        .await;
                    return;
                }
            }
        }
    });

    let (batch_tx, mut batch_rx) = tokio::sync::mpsc::channel::<Parsed>(2);
    let consumed = Arc::new(AtomicU64::new(0));
    let parser_consumed = consumed.clone();
    let parser = tokio::task::spawn_blocking(move || {
        let reader = ChunkReader {
            rx: chunk_rx,
            buf: Vec::new(),
            pos: 0,
            consumed: parser_consumed.clone(),
        };
        let mut rows = match Rows::new(reader, mapping, &fields) {
            Ok(r) => r.with_default_status(default_status),
            Err(e) => {
                let _ = batch_tx.blocking_send(Parsed::FileError((&e).into(), e.to_string()));
                return;
            }
        };
        let (mut staged, mut rejected, mut last_line) =
            (Vec::with_capacity(BATCH_ROWS), Vec::new(), 0u64);
        for item in rows.by_ref() {
            let line = match &item {
                Ok(r) => r.line,
                Err(r) => r.line,
            };
            last_line = line;
            if line <= resume_after {
                continue;
            }
            match item.and_then(storable) {
                Ok(r) => staged.push(StagedRow {
                    line: r.line,
                    email: r.email.as_str().to_string(),
                    name: r.name,
                    status: r.status,
                    subscribed_at: r.subscribed_at,
                    tags: r.tags,
                    fields: r.fields,
                }),
                Err(r) => rejected.push(Rejected {
                    line: r.line,
                    value: r.value,
                    reason: r.reason,
                    code: r.code,
                }),
            }
            if staged.len() + rejected.len() >= BATCH_ROWS {
                let batch = Parsed::Batch {
                    rows: std::mem::replace(&mut staged, Vec::with_capacity(BATCH_ROWS)),
                    rejected: std::mem::take(&mut rejected),
                    last_line,
                    bytes: parser_consumed.load(Ordering::Relaxed),
                };
                if batch_tx.blocking_send(batch).is_err() {
                    return;
                }
            }
        }
        let io_error = rows.io_error().map(|e| e.to_string());
        let bytes = parser_consumed.load(Ordering::Relaxed);
        if !staged.is_empty() || !rejected.is_empty() {
            let _ = batch_tx.blocking_send(Parsed::Batch {
                rows: staged,
                rejected,
                last_line,
                bytes,
            });
        }
        let _ = batch_tx.blocking_send(Parsed::End { io_error, bytes });
    });

    // Two batches are applied at once (one per core), each in its own transaction, but
    // they commit in file order (see [`turn`]): a batch's progress mark only moves from
    // the mark its predecessor set, so if that one rolled back (error, crash, cancel) so
    // does this one, and a restart resumes exactly after the last committed batch.
    let tags = Arc::new(imp.tags.clone());
    let mut inflight: std::collections::VecDeque<
        tokio::task::JoinHandle<Result<Applied, JobError>>,
    > = Default::default();
    let mut mark = resume_after;
    let copy_first = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let mut previous: Option<tokio::sync::oneshot::Receiver<()>> = None;
    let mut seq: i32 = 0;
    let outcome = async {
        while let Some(msg) = batch_rx.recv().await {
            match msg {
                Parsed::FileError(failure, detail) => {
                    if let Some(stop) = settle(ctx, &mut inflight, 0, imp.size_bytes).await? {
                        return Ok(stop);
                    }
                    finish(&pool, id, Some((&failure, &detail)), ctx.clock.now()).await?;
                    return Ok(());
                }
                Parsed::Batch {
                    rows,
                    rejected,
                    last_line,
                    bytes,
                } => {
                    let (holding, next) = tokio::sync::oneshot::channel();
                    seq = seq.wrapping_add(1);
                    let batch = BatchJob {
                        previous: previous.replace(next),
                        holding: Some(holding),
                        seq,
                        pool: pool.clone(),
                        id,
                        mode,
                        tags: tags.clone(),
                        rows,
                        rejected,
                        after: mark,
                        last_line,
                        bytes,
                        now: ctx.clock.now(),
                        copy_first: copy_first.clone(),
                    };
                    mark = last_line;
                    *dispatched = last_line;
                    inflight.push_back(tokio::spawn(batch.apply()));
                    let keep = usize::from(last_line > serial_until);
                    if let Some(stop) = settle(ctx, &mut inflight, keep, imp.size_bytes).await? {
                        return Ok(stop);
                    }
                }
                Parsed::End { io_error, bytes } => {
                    if let Some(stop) = settle(ctx, &mut inflight, 0, imp.size_bytes).await? {
                        return Ok(stop);
                    }
                    if let Some(e) = io_error {
                        return Err(JobError::Retry(
                            anyhow::anyhow!("reading the upload failed: {e}")
                                .context(ImportFailure::Interrupted),
                        ));
                    }
                    sqlx::query("UPDATE imports SET bytes_done = $2 WHERE id = $1")
                        .bind(id)
                        .bind(bytes as i64)
                        .execute(&pool)
                        .await?;
                    finish(&pool, id, None, ctx.clock.now()).await?;
                    return Ok(());
                }
            }
        }
        Err(JobError::Retry(anyhow::anyhow!(
            "the import parser stopped unexpectedly"
        )))
    }
    .await;
    // Whatever is still in flight after an error rolls back on its own (its mark no
    // longer matches); wait so the job ends only once nothing is writing.
    for task in inflight {
        let _ = task.await;
    }
    drop(batch_rx);
    let _ = parser.await;
    let _ = fetcher.await;
    outcome
}
