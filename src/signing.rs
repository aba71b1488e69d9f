//! The instance signing key: HMAC-SHA256 over purpose-separated messages. Used for CSRF
//! tokens now and for every public link (unsubscribe, tracking, confirm) later.
//!
//! From `SECRET_KEY` when set; otherwise generated on first start and kept in
//! `instance_settings`, so links survive restarts and all processes sign alike.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD as B64};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use sqlx::PgPool;

use crate::secrets::Secret;

#[derive(Clone, Debug)]
pub struct SigningKey(Secret<Vec<u8>>);

impl SigningKey {
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        Self(Secret::new(bytes))
    }

    /// `configured` wins; otherwise the key stored in the database, created if missing.
    pub async fn load_or_create(
        pool: &PgPool,
        configured: Option<&Secret<String>>,
    ) -> anyhow::Result<Self> {
        if let Some(k) = configured {
            return Ok(Self::from_bytes(k.expose().as_bytes().to_vec()));
        }
        let fresh = B64.encode(random_bytes::<32>());
        sqlx::query("INSERT INTO instance_settings (key, value) VALUES ('signing_key', $1) ON CONFLICT (key) DO NOTHING")
            .bind(&fresh)
            .execute(pool)
            .await?;
        let stored: String =
            sqlx::query_scalar("SELECT value FROM instance_settings WHERE key = 'signing_key'")
                .fetch_one(pool)
                .await?;
        Ok(Self::from_bytes(B64.decode(stored.as_bytes())?))
    }

    fn mac(&self, purpose: &str, data: &[u8]) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(self.0.expose())
            .expect("HMAC takes any key length");
        mac.update(purpose.as_bytes());
        mac.update(&[0]);
        mac.update(data);
        mac
    }

    /// A URL-safe signature of `data` for `purpose`.
    pub fn sign(&self, purpose: &str, data: &[u8]) -> String {
        B64.encode(self.mac(purpose, data).finalize().into_bytes())
    }

    /// A 128-bit tag of `data` for `purpose`: for links where length matters (tracking).
    pub fn short_tag(&self, purpose: &str, data: &[u8]) -> [u8; 16] {
        let full = self.mac(purpose, data).finalize().into_bytes();
        let mut out = [0u8; 16];
        out.copy_from_slice(&full[..16]);
        out
    }

    /// Constant-time check of a [`SigningKey::short_tag`].
    pub fn verify_short_tag(&self, purpose: &str, data: &[u8], tag: &[u8]) -> bool {
        tag.len() == 16 && self.mac(purpose, data).verify_truncated_left(tag).is_ok()
    }

    /// Constant-time check of a signature made by [`SigningKey::sign`].
    pub fn verify(&self, purpose: &str, data: &[u8], signature: &str) -> bool {
        match B64.decode(signature.as_bytes()) {
            Ok(sig) => self.mac(purpose, data).verify_slice(&sig).is_ok(),
            Err(_) => false,
        }
    }
}

/// Cryptographically random bytes from the OS-seeded thread RNG.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    rand::random()
}

/// A random URL-safe token with `N` bytes of entropy.
pub fn random_token<const N: usize>() -> String {
    B64.encode(random_bytes::<N>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_bound_to_purpose_and_data() {
        let k = SigningKey::from_bytes(b"0123456789abcdef0123456789abcdef".to_vec());
        let s = k.sign("csrf", b"abc");
        assert!(k.verify("csrf", b"abc", &s));
        assert!(!k.verify("unsubscribe", b"abc", &s));
        assert!(!k.verify("csrf", b"abd", &s));
        assert!(!k.verify("csrf", b"abc", "not base64 !"));
        let other = SigningKey::from_bytes(b"another key another key another!".to_vec());
        assert!(!other.verify("csrf", b"abc", &s));
    }
}
