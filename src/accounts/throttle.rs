//! Login rate limiting per IP and per account, in PostgreSQL so it holds across every
//! Loopline process sharing the database.

use chrono::{DateTime, Duration, Utc};
use sqlx::PgPool;

use crate::AppError;

#[derive(Debug, Clone, Copy)]
pub struct LoginThrottle {
    pub window: Duration,
    pub max_per_account: i64,
    pub max_per_ip: i64,
}

impl Default for LoginThrottle {
    fn default() -> Self {
        Self {
            window: Duration::minutes(15),
            max_per_account: 5,
            max_per_ip: 20,
        }
    }
}

impl LoginThrottle {
    /// Refuses (429) when either the account or the IP has too many recent failures.
    pub async fn check(
        &self,
        pool: &PgPool,
        email: &str,
        ip: &str,
        now: DateTime<Utc>,
    ) -> Result<(), AppError> {
        let since = now - self.window;
        let (by_account, by_ip): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM login_failures WHERE lower(email) = lower($1) AND at > $3),
                    (SELECT count(*) FROM login_failures WHERE ip = $2 AND at > $3)",
        )
        .bind(email.trim())
        .bind(ip)
        .bind(since)
        .fetch_one(pool)
        .await?;
        if by_account >= self.max_per_account || by_ip >= self.max_per_ip {
            return Err(AppError::TooManyRequests(format!(
                "too many failed sign-in attempts; wait {} minutes and try again",
                self.window.num_minutes()
            )));
        }
        Ok(())
    }
}

pub async fn record_failure(
    pool: &PgPool,
    email: &str,
    ip: &str,
    now: DateTime<Utc>,
) -> sqlx::Result<()> {
    let email: String = email.trim().chars().take(320).collect();
    sqlx::query("INSERT INTO login_failures (email, ip, at) VALUES ($1, $2, $3)")
        .bind(email)
        .bind(ip)
        .bind(now)
        .execute(pool)
        .await?;
    // Keep the table small: anything older than a day is irrelevant.
    sqlx::query("DELETE FROM login_failures WHERE at < $1")
        .bind(now - Duration::days(1))
        .execute(pool)
        .await?;
    Ok(())
}

pub async fn clear_failures(pool: &PgPool, email: &str) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM login_failures WHERE lower(email) = lower($1)")
        .bind(email.trim())
        .execute(pool)
        .await?;
    Ok(())
}
