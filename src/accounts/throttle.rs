//! Login rate limiting per IP and per account, in PostgreSQL so it holds across every
//! Loopline process sharing the database.
//!
//! Each attempt is recorded *before* its password is checked and the count taken after,
//! so concurrent guesses cannot all slip through between a check and a record. A
//! successful sign-in clears the account's attempts.

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
    /// Records an attempt, then refuses (429) when the account or the IP has made more
    /// attempts in the window than allowed.
    pub async fn attempt(
        &self,
        pool: &PgPool,
        email: &str,
        ip: &str,
        now: DateTime<Utc>,
    ) -> Result<(), AppError> {
        let email: String = email.trim().chars().take(320).collect();
        let (by_account, by_ip): (i64, i64) = sqlx::query_as(
            "WITH attempt AS (INSERT INTO login_failures (email, ip, at) VALUES ($1, $2, $3))
             SELECT (SELECT count(*) + 1 FROM login_failures WHERE lower(email) = lower($1) AND at > $4),
                    (SELECT count(*) + 1 FROM login_failures WHERE ip = $2 AND at > $4)",
        )
        .bind(&email)
        .bind(ip)
        .bind(now)
        .bind(now - self.window)
        .fetch_one(pool)
        .await?;
        // Keep the table small: anything older than a day is irrelevant.
        sqlx::query("DELETE FROM login_failures WHERE at < $1")
            .bind(now - Duration::days(1))
            .execute(pool)
            .await?;
        if by_account > self.max_per_account || by_ip > self.max_per_ip {
            return Err(AppError::TooManyRequests(crate::Problem::SignInThrottled {
                minutes: self.window.num_minutes(),
            }));
        }
        Ok(())
    }
}

/// Forgets an account's attempts after it signed in successfully.
pub async fn clear_failures(pool: &PgPool, email: &str) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM login_failures WHERE lower(email) = lower($1)")
        .bind(email.trim())
        .execute(pool)
        .await?;
    Ok(())
}
