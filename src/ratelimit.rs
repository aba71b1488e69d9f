//! Rate limits that hold across every Loopline process sharing the database.
//! Each hit is recorded before the count is taken, so concurrent requests cannot all
//! slip through between a check and a record.

use chrono::{DateTime, Duration, Utc};
use sqlx::PgPool;

#[derive(Debug, Clone, Copy)]
pub struct Limit {
    pub bucket: &'static str,
    pub max: i64,
    pub window: Duration,
}

/// Signups from one IP address.
pub const SIGNUPS_PER_IP: Limit = Limit {
    bucket: "signup-ip",
    max: 20,
    window: Duration::hours(1),
};

/// Records a hit for `key`; `false` when the limit is exceeded. Concurrent hits on one
/// key take turns (advisory lock), so a burst cannot slip past the count.
pub async fn hit(pool: &PgPool, limit: Limit, key: &str, now: DateTime<Utc>) -> sqlx::Result<bool> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1 || ':' || $2, 7))")
        .bind(limit.bucket)
        .bind(key)
        .execute(&mut *tx)
        .await?;
    // Old hits of this key go first: the table never outgrows the live windows.
    sqlx::query("DELETE FROM rate_hits WHERE bucket = $1 AND key = $2 AND at <= $3")
        .bind(limit.bucket)
        .bind(key)
        .bind(now - limit.window)
        .execute(&mut *tx)
        .await?;
    let count: i64 = sqlx::query_scalar(
        "WITH h AS (INSERT INTO rate_hits (bucket, key, at) VALUES ($1, $2, $3))
         SELECT count(*) + 1 FROM rate_hits WHERE bucket = $1 AND key = $2 AND at > $4",
    )
    .bind(limit.bucket)
    .bind(key)
    .bind(now)
    .bind(now - limit.window)
    .fetch_one(&mut *tx)
    .await?;
    // Now and then, the keys that never came back too.
    if rand::random::<u8>() < 3 {
        sqlx::query("DELETE FROM rate_hits WHERE bucket = $1 AND at <= $2")
            .bind(limit.bucket)
            .bind(now - limit.window)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(count <= limit.max)
}
