//! Shared set-up for benchmarks: a private, durable PostgreSQL cluster in a temp dir.

#![allow(dead_code)]

use std::path::PathBuf;

use loopline::db::{
    self,
    embedded::{EmbeddedOptions, EmbeddedPostgres},
};
use sqlx::PgPool;

pub struct Bench {
    pub pg: EmbeddedPostgres,
    pub pool: PgPool,
    pub dir: PathBuf,
}

pub async fn start(name: &str, pool_size: u32) -> anyhow::Result<Bench> {
    let dir = std::env::temp_dir().join(format!("loopline-bench-{name}-{}", std::process::id()));
    let opts = EmbeddedOptions {
        cluster_dir: dir.join("postgres"),
        ephemeral: false,
        max_connections: 100,
    };
    let again = opts.clone();
    let mut pg = tokio::task::spawn_blocking(move || EmbeddedPostgres::start(&opts)).await??;
    if statements_wanted() {
        // pg_stat_statements must be loaded at server start: set it, then restart.
        let pool = db::pool(pg.connect_options("postgres"), 1).await?;
        sqlx::query("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
            .execute(&pool)
            .await?;
        pool.close().await;
        drop(pg);
        pg = tokio::task::spawn_blocking(move || EmbeddedPostgres::start(&again)).await??;
        // Planning time too (the module is loaded now): a statement planned on every call
        // shows it.
        let pool = db::pool(pg.connect_options("postgres"), 1).await?;
        sqlx::query("ALTER SYSTEM SET pg_stat_statements.track_planning = on")
            .execute(&pool)
            .await?;
        sqlx::query("SELECT pg_reload_conf()")
            .execute(&pool)
            .await?;
        pool.close().await;
    }
    db::ensure_database(pg.connect_options("postgres"), "bench").await?;
    let pool = db::pool(pg.connect_options("bench"), pool_size).await?;
    db::migrate(&pool).await?;
    // For trying a schema change in a benchmark before writing its migration.
    if let Some(sql) = std::env::var("LOOPLINE_BENCH_SQL")
        .ok()
        .filter(|s| !s.is_empty())
    {
        eprintln!("{name}: applying LOOPLINE_BENCH_SQL after the migrations: {sql}");
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&pool)
            .await?;
    }
    if statements_wanted() {
        sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            .execute(&pool)
            .await?;
    }
    Ok(Bench { pg, pool, dir })
}

/// `LOOPLINE_BENCH_STATEMENTS=1`: load `pg_stat_statements` for a per-statement breakdown
/// of where PostgreSQL's time goes (it costs a little, so only on request).
pub fn statements_wanted() -> bool {
    std::env::var_os("LOOPLINE_BENCH_STATEMENTS").is_some_and(|v| !v.is_empty() && v != "0")
}

/// Forgets what `pg_stat_statements` has seen so far (no-op when it is not loaded).
pub async fn reset_statements(pool: &PgPool) -> anyhow::Result<()> {
    if statements_wanted() {
        sqlx::query("SELECT pg_stat_statements_reset()")
            .execute(pool)
            .await?;
    }
    Ok(())
}

/// The statements that took the most execution time since the last reset, one line each
/// (empty when `pg_stat_statements` is not loaded).
pub async fn top_statements(pool: &PgPool, n: i64) -> anyhow::Result<Vec<String>> {
    if !statements_wanted() {
        return Ok(vec![]);
    }
    let rows: Vec<(String, i64, f64, f64, i64, i64, i64)> = sqlx::query_as(
        "SELECT regexp_replace(query, '\\s+', ' ', 'g'), calls, total_exec_time, total_plan_time, rows,
                wal_records, shared_blks_dirtied
         FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
         ORDER BY total_exec_time DESC LIMIT $1",
    )
    .bind(n)
    .fetch_all(pool)
    .await?;
    let total: f64 = sqlx::query_scalar(
        "SELECT coalesce(sum(total_exec_time), 0)::float8 FROM pg_stat_statements
         WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .fetch_one(pool)
    .await?;
    let mut out = vec![format!(
        "{:>9} {:>7} {:>9} {:>9} {:>8} {:>8} {:>8}  statement (all statements: {total:.0} ms executing)",
        "total ms", "calls", "µs/call", "plan µs", "rows", "WAL rec", "dirtied"
    )];
    for (q, calls, ms, plan_ms, rows, wal, dirtied) in rows {
        let q: String = q.chars().take(110).collect();
        let per_call = |ms: f64| ms * 1000.0 / calls.max(1) as f64;
        out.push(format!(
            "{ms:>9.0} {calls:>7} {:>9.0} {:>9.0} {rows:>8} {wal:>8} {dirtied:>8}  {q}",
            per_call(ms),
            per_call(plan_ms)
        ));
    }
    Ok(out)
}

/// Updates of `table` so far, and how many of them were heap-only (HOT). Statistics reach
/// this view within about a second of a backend going idle.
pub async fn table_updates(pool: &PgPool, table: &str) -> anyhow::Result<(i64, i64)> {
    Ok(sqlx::query_as(
        "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = $1",
    )
    .bind(table)
    .fetch_optional(pool)
    .await?
    .unwrap_or((0, 0)))
}

impl Bench {
    pub async fn stop(self) {
        self.pool.close().await;
        drop(self.pg);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Peak resident memory of this process so far, in MiB.
pub fn peak_rss_mib() -> f64 {
    memory_mib("VmHWM:")
}

/// Resident memory of this process now, in MiB.
pub fn rss_mib() -> f64 {
    memory_mib("VmRSS:")
}

fn memory_mib(key: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// Puts the fresh cluster's WAL where a server that has been running for a while has it:
/// writes about `mb` MB of WAL and checkpoints, so the segments are recycled for the run
/// instead of each new 16 MB segment being created and zero-filled on a commit's path
/// (seen as `WALInitSync` waits of 16–20 ms in the click write). A long-running server
/// recycles its segments at every checkpoint the same way.
pub async fn warm_wal(pool: &PgPool, mb: i64) -> anyhow::Result<()> {
    // ~250 bytes of WAL per row.
    sqlx::query(
        "CREATE TABLE bench_wal_warmup AS SELECT g, repeat('x', 200) AS filler FROM generate_series(1, $1::bigint) g",
    )
    .bind(mb * 4_000)
    .execute(pool)
    .await?;
    sqlx::query("DROP TABLE bench_wal_warmup")
        .execute(pool)
        .await?;
    sqlx::query("CHECKPOINT").execute(pool).await?;
    Ok(())
}
