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

/// Records a hit for `key`; `false` when the limit is exceeded.
pub async fn hit(pool: &PgPool, limit: Limit, key: &str, now: DateTime<Utc>) -> sqlx::Result<bool> {
    let count: i64 = sqlx::query_scalar(
        "WITH h AS (INSERT INTO rate_hits (bucket, key, at) VALUES ($1, $2, $3))
         SELECT count(*) + 1 FROM rate_hits WHERE bucket = $1 AND key = $2 AND at > $4",
    )
    .bind(limit.bucket)
    .bind(key)
    .bind(now)
    .bind(now - limit.window)
    .fetch_one(pool)
    .await?;
    if count % 50 == 0 {
        sqlx::query("DELETE FROM rate_hits WHERE bucket = $1 AND at < $2")
            .bind(limit.bucket)
            .bind(now - limit.window)
            .execute(pool)
            .await?;
    }
    Ok(count <= limit.max)
}
