//! Sessions live in PostgreSQL. The cookie carries a random token; the table stores
//! only its SHA-256, so a leaked table does not leak live sessions.

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use sqlx::{PgExecutor, PgPool};

use super::{Role, User};
use crate::signing::random_token;

/// The secret token from the cookie.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionToken(String);

impl std::fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionToken([redacted])")
    }
}

impl SessionToken {
    pub fn new_random() -> Self {
        Self(random_token::<32>())
    }

    pub fn from_cookie(value: &str) -> Option<Self> {
        (value.len() >= 40
            && value.len() <= 64
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
        .then(|| Self(value.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    fn id(&self) -> Vec<u8> {
        Sha256::digest(self.0.as_bytes()).to_vec()
    }
}

/// A live session and its user.
#[derive(Debug, Clone)]
pub struct Session {
    pub token: SessionToken,
    pub user: User,
    pub expires_at: DateTime<Utc>,
}

pub async fn create_session(
    pool: &PgPool,
    user_id: i64,
    now: DateTime<Utc>,
    ttl: std::time::Duration,
    ip: Option<&str>,
    user_agent: Option<&str>,
) -> sqlx::Result<SessionToken> {
    let token = SessionToken::new_random();
    let expires = now + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::days(14));
    sqlx::query("INSERT INTO sessions (id, user_id, created_at, last_seen_at, expires_at, ip, user_agent) VALUES ($1, $2, $3, $3, $4, $5, $6)")
        .bind(token.id())
        .bind(user_id)
        .bind(now)
        .bind(expires)
        .bind(ip)
        .bind(user_agent.map(|ua| ua.chars().take(300).collect::<String>()))
        .execute(pool)
        .await?;
    Ok(token)
}

/// The session for a token, if it exists and has not expired. Sliding expiry: activity
/// pushes the expiry out (written at most once a minute to keep reads cheap).
pub async fn lookup_session(
    pool: &PgPool,
    token: &SessionToken,
    now: DateTime<Utc>,
    ttl: std::time::Duration,
) -> sqlx::Result<Option<Session>> {
    type Row = (
        i64,
        String,
        Role,
        DateTime<Utc>,
        Option<String>,
        DateTime<Utc>,
        DateTime<Utc>,
    );
    let row: Option<Row> = sqlx::query_as(
        "SELECT u.id, u.email, u.role, u.created_at, u.language, s.expires_at, s.last_seen_at
         FROM sessions s JOIN users u ON u.id = s.user_id
         WHERE s.id = $1 AND s.expires_at > $2",
    )
    .bind(token.id())
    .bind(now)
    .fetch_optional(pool)
    .await?;
    let Some((id, email, role, created_at, language, mut expires_at, last_seen)) = row else {
        return Ok(None);
    };
    if now - last_seen > chrono::Duration::minutes(1) {
        expires_at = now + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::days(14));
        sqlx::query("UPDATE sessions SET last_seen_at = $2, expires_at = $3 WHERE id = $1")
            .bind(token.id())
            .bind(now)
            .bind(expires_at)
            .execute(pool)
            .await?;
    }
    Ok(Some(Session {
        token: token.clone(),
        user: User {
            id,
            email,
            role,
            created_at,
            language,
        },
        expires_at,
    }))
}

pub async fn delete_session(pool: &PgPool, token: &SessionToken) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM sessions WHERE id = $1")
        .bind(token.id())
        .execute(pool)
        .await?;
    Ok(())
}

pub async fn delete_other_sessions<'e>(
    db: impl PgExecutor<'e>,
    user_id: i64,
    keep: &SessionToken,
) -> sqlx::Result<u64> {
    let r = sqlx::query("DELETE FROM sessions WHERE user_id = $1 AND id <> $2")
        .bind(user_id)
        .bind(keep.id())
        .execute(db)
        .await?;
    Ok(r.rows_affected())
}

pub async fn purge_expired_sessions(pool: &PgPool, now: DateTime<Utc>) -> sqlx::Result<u64> {
    let r = sqlx::query("DELETE FROM sessions WHERE expires_at <= $1")
        .bind(now)
        .execute(pool)
        .await?;
    Ok(r.rows_affected())
}
