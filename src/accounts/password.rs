//! Argon2id password hashing, always off the async threads.

use argon2::{Argon2, PasswordHasher, PasswordVerifier};

use crate::{AppError, AppResult, secrets::Secret};

/// A valid argon2id hash of a random string: verified against when the account does not
/// exist, so a login costs the same either way.
pub(crate) const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$2o9r6VEbpMK5kpU7CTc6IqNl7Rq6nRw2Qzj0WU3vSm8";

pub const MIN_LEN: usize = 10;
pub const MAX_LEN: usize = 1024;

/// A password that passed the policy: long enough, not absurdly long, confirmed.
#[derive(Debug)]
pub struct NewPassword(Secret<String>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    #[error("the password must be at least {MIN_LEN} characters long")]
    TooShort,
    #[error("the password must be at most {MAX_LEN} characters long")]
    TooLong,
    #[error("the two passwords do not match")]
    Mismatch,
}

impl NewPassword {
    pub fn parse(password: String, confirm: Option<&str>) -> Result<Self, PasswordError> {
        let chars = password.chars().count();
        if chars < MIN_LEN {
            return Err(PasswordError::TooShort);
        }
        if chars > MAX_LEN {
            return Err(PasswordError::TooLong);
        }
        if let Some(c) = confirm
            && c != password
        {
            return Err(PasswordError::Mismatch);
        }
        Ok(Self(Secret::new(password)))
    }
}

pub async fn hash_password(password: NewPassword) -> AppResult<String> {
    tokio::task::spawn_blocking(move || {
        Argon2::default()
            .hash_password(password.0.expose().as_bytes())
            .map(|h| h.to_string())
            .map_err(|e| AppError::internal(anyhow::anyhow!("hashing a password: {e}")))
    })
    .await
    .map_err(AppError::internal)?
}

pub async fn verify_password(password: String, hash: String) -> AppResult<bool> {
    tokio::task::spawn_blocking(move || {
        Argon2::default()
            .verify_password(password.as_bytes(), hash.as_str())
            .is_ok()
    })
    .await
    .map_err(AppError::internal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy() {
        assert_eq!(
            NewPassword::parse("short".into(), None).unwrap_err(),
            PasswordError::TooShort
        );
        assert_eq!(
            NewPassword::parse("long enough pw".into(), Some("different")).unwrap_err(),
            PasswordError::Mismatch
        );
        assert_eq!(
            NewPassword::parse("x".repeat(MAX_LEN + 1), None).unwrap_err(),
            PasswordError::TooLong
        );
        assert!(
            NewPassword::parse("비밀번호는열글자이상".into(), Some("비밀번호는열글자이상")).is_ok()
        );
    }

    #[tokio::test]
    async fn hashes_verify_and_the_dummy_hash_is_well_formed() {
        let h = hash_password(NewPassword::parse("correct horse battery".into(), None).unwrap())
            .await
            .unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(
            verify_password("correct horse battery".into(), h.clone())
                .await
                .unwrap()
        );
        assert!(
            !verify_password("wrong horse battery".into(), h)
                .await
                .unwrap()
        );
        // Well-formed (so it costs a real verification) and matches nothing typed.
        assert!(argon2::PasswordHash::new(DUMMY_HASH).is_ok());
        assert!(!verify_password("".into(), DUMMY_HASH.into()).await.unwrap());
    }
}
