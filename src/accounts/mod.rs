//! The people who run Loopline: users, roles, passwords, sessions and login throttling.
//! (Subscribers live in `audience`; these are the marketer's accounts.)

mod password;
mod sessions;
mod throttle;

pub use password::{
    MAX_LEN as PASSWORD_MAX_LEN, MIN_LEN as PASSWORD_MIN_LEN, NewPassword, PasswordError,
    hash_password, verify_password,
};
pub use sessions::{
    Session, SessionToken, create_session, delete_other_sessions, delete_session, lookup_session,
    purge_expired_sessions,
};
pub use throttle::{LoginThrottle, clear_failures};

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use crate::{AppError, AppResult, address::EmailAddress};

/// What a user may do. Ordered: a higher role can do everything a lower one can.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, sqlx::Type)]
#[sqlx(type_name = "user_role", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads everything, changes nothing but their own password.
    Viewer,
    /// Creates and changes marketing work.
    Editor,
    /// Everything, including users and instance settings.
    Owner,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Owner, Role::Editor, Role::Viewer];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Editor => "editor",
            Role::Owner => "owner",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str() == s.trim().to_ascii_lowercase())
    }
}

#[derive(Debug, Clone, sqlx::FromRow, Serialize)]
pub struct User {
    pub id: i64,
    pub email: String,
    pub role: Role,
    pub created_at: DateTime<Utc>,
    /// The dashboard language the user chose (`en`, `ko`); `None` until they choose.
    pub language: Option<String>,
}

pub async fn user_count(pool: &PgPool) -> sqlx::Result<i64> {
    sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(pool)
        .await
}

pub async fn list_users(pool: &PgPool) -> sqlx::Result<Vec<User>> {
    sqlx::query_as(
        "SELECT id, email, role, created_at, language FROM users ORDER BY role DESC, lower(email)",
    )
    .fetch_all(pool)
    .await
}

/// Creates a user. A duplicate email becomes a 409 with a readable message.
pub async fn create_user(
    pool: &PgPool,
    email: &EmailAddress,
    password: NewPassword,
    role: Role,
) -> AppResult<User> {
    let hash = hash_password(password).await?;
    Ok(sqlx::query_as("INSERT INTO users (email, password_hash, role) VALUES ($1, $2, $3) RETURNING id, email, role, created_at, language")
        .bind(email.as_str())
        .bind(hash)
        .bind(role)
        .fetch_one(pool)
        .await?)
}

/// First-run setup: creates the owner only while there are no users at all. Two
/// concurrent setups cannot both win (the table is locked for the check).
pub async fn create_first_owner(
    pool: &PgPool,
    email: &EmailAddress,
    password: NewPassword,
) -> AppResult<User> {
    let hash = hash_password(password).await?;
    let mut tx = pool.begin().await?;
    sqlx::query("LOCK TABLE users IN SHARE ROW EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await?;
    let existing: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(&mut *tx)
        .await?;
    if existing > 0 {
        return Err(AppError::Conflict(crate::Problem::AlreadySetUp));
    }
    let user: User = sqlx::query_as("INSERT INTO users (email, password_hash, role) VALUES ($1, $2, 'owner') RETURNING id, email, role, created_at, language")
        .bind(email.as_str())
        .bind(hash)
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(user)
}

/// Checks a login. Always spends the time of one password verification, so response
/// times do not reveal whether the address has an account.
pub async fn authenticate(pool: &PgPool, email: &str, password: String) -> AppResult<Option<User>> {
    type Row = (i64, String, Role, DateTime<Utc>, Option<String>, String);
    let row: Option<Row> =
        sqlx::query_as("SELECT id, email, role, created_at, language, password_hash FROM users WHERE lower(email) = lower($1)")
            .bind(email.trim())
            .fetch_optional(pool)
            .await?;
    let (user, hash) = match row {
        Some((id, email, role, created_at, language, hash)) => (
            Some(User {
                id,
                email,
                role,
                created_at,
                language,
            }),
            hash,
        ),
        None => (None, password::DUMMY_HASH.to_string()),
    };
    let ok = verify_password(password, hash).await?;
    Ok(if ok { user } else { None })
}

/// Changes a password after checking the current one; revokes every other session.
pub async fn change_password(
    pool: &PgPool,
    user_id: i64,
    current: String,
    new: NewPassword,
    keep_session: &SessionToken,
) -> AppResult<()> {
    let hash: String = sqlx::query_scalar("SELECT password_hash FROM users WHERE id = $1")
        .bind(user_id)
        .fetch_one(pool)
        .await?;
    if !verify_password(current, hash).await? {
        return Err(AppError::Unprocessable(
            crate::Problem::WrongCurrentPassword,
        ));
    }
    let new_hash = hash_password(new).await?;
    let mut tx = pool.begin().await?;
    sqlx::query("UPDATE users SET password_hash = $2 WHERE id = $1")
        .bind(user_id)
        .bind(new_hash)
        .execute(&mut *tx)
        .await?;
    delete_other_sessions(&mut *tx, user_id, keep_session).await?;
    tx.commit().await?;
    Ok(())
}

/// Sets a password without the old one (the command line's `user create` on an existing
/// account, or an owner's reset). Revokes all of that user's sessions.
pub async fn reset_password(pool: &PgPool, user_id: i64, new: NewPassword) -> AppResult<()> {
    let new_hash = hash_password(new).await?;
    let mut tx = pool.begin().await?;
    sqlx::query("UPDATE users SET password_hash = $2 WHERE id = $1")
        .bind(user_id)
        .bind(new_hash)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM sessions WHERE user_id = $1")
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// Sets the dashboard language a user chose (`None`: follow the browser). The caller
/// passes a code Loopline has pages in.
pub async fn set_language(pool: &PgPool, user_id: i64, language: Option<&str>) -> AppResult<()> {
    let r = sqlx::query("UPDATE users SET language = $2 WHERE id = $1")
        .bind(user_id)
        .bind(language)
        .execute(pool)
        .await?;
    if r.rows_affected() == 0 {
        return Err(AppError::NotFound);
    }
    Ok(())
}

/// Changes a role, refusing to leave the instance without an owner.
pub async fn set_role(pool: &PgPool, user_id: i64, role: Role) -> AppResult<()> {
    let mut tx = pool.begin().await?;
    guard_last_owner(&mut tx, user_id, role != Role::Owner).await?;
    let r = sqlx::query("UPDATE users SET role = $2 WHERE id = $1")
        .bind(user_id)
        .bind(role)
        .execute(&mut *tx)
        .await?;
    if r.rows_affected() == 0 {
        return Err(AppError::NotFound);
    }
    tx.commit().await?;
    Ok(())
}

/// Deletes a user (and their sessions), refusing to delete the last owner.
pub async fn delete_user(pool: &PgPool, user_id: i64) -> AppResult<()> {
    let mut tx = pool.begin().await?;
    guard_last_owner(&mut tx, user_id, true).await?;
    let r = sqlx::query("DELETE FROM users WHERE id = $1")
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
    if r.rows_affected() == 0 {
        return Err(AppError::NotFound);
    }
    tx.commit().await?;
    Ok(())
}

async fn guard_last_owner(
    tx: &mut sqlx::PgConnection,
    user_id: i64,
    removing_owner: bool,
) -> AppResult<()> {
    if !removing_owner {
        return Ok(());
    }
    // Serialise owner changes so two concurrent demotions cannot remove both owners.
    let owners: Vec<i64> =
        sqlx::query_scalar("SELECT id FROM users WHERE role = 'owner' FOR UPDATE")
            .fetch_all(&mut *tx)
            .await?;
    if owners == [user_id] {
        return Err(AppError::Conflict(crate::Problem::LastOwner));
    }
    Ok(())
}

pub async fn find_user_by_email(pool: &PgPool, email: &str) -> sqlx::Result<Option<User>> {
    sqlx::query_as(
        "SELECT id, email, role, created_at, language FROM users WHERE lower(email) = lower($1)",
    )
    .bind(email.trim())
    .fetch_optional(pool)
    .await
}
