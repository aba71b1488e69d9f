//! Signing up through a form: the decision and its confirmation mail are written in one
//! transaction. Double opt-in by default; whatever the address's history, the answer the
//! visitor sees is the same, so the form reveals nothing about who is subscribed.

use chrono::{DateTime, Duration, Utc};
use serde_json::json;
use sqlx::PgConnection;

use super::{
    forms::Form,
    links,
    subscribers::{self, Status},
    tags,
};
use crate::{
    AppResult,
    address::EmailAddress,
    delivery::{
        outbox::{self, NewMessage},
        system,
    },
    signing::SigningKey,
};

/// How long a confirmation link works.
pub const CONFIRM_VALID_DAYS: i64 = 7;

/// Why a signup was refused. `Display` reads in English; pages show it in the
/// visitor's language (`web::i18n`).
#[derive(Debug, Clone, thiserror::Error)]
pub enum SignupError {
    #[error(transparent)]
    Address(#[from] crate::address::AddressError),
    #[error("the name is too long")]
    NameTooLong,
    #[error("the name contains characters that are not allowed")]
    NameNotAllowed,
}

/// A validated signup.
#[derive(Debug, Clone)]
pub struct Signup {
    pub email: EmailAddress,
    pub name: String,
    pub language: Option<String>,
    pub ip: String,
}

impl Signup {
    pub fn parse(
        email: &str,
        name: &str,
        language: Option<&str>,
        ip: &str,
    ) -> Result<Self, SignupError> {
        let email = EmailAddress::parse(email)?;
        let name = name.trim();
        if name.chars().count() > 200 {
            return Err(SignupError::NameTooLong);
        }
        if name.chars().any(|c| c.is_control()) {
            return Err(SignupError::NameNotAllowed);
        }
        let language = language
            .map(str::trim)
            .filter(|l| {
                !l.is_empty()
                    && l.len() <= 16
                    && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            })
            .map(str::to_string);
        Ok(Self {
            email,
            name: name.to_string(),
            language,
            ip: ip.to_string(),
        })
    }
}

/// What happened, for the caller's bookkeeping. Visitors see the same message for all
/// outcomes of a form with double opt-in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A confirmation mail was queued.
    ConfirmationQueued,
    /// Subscribed at once (single opt-in, new address).
    Subscribed,
    /// Already subscribed: nothing changed (the form's tags were added).
    AlreadyActive,
    /// A confirmation for this address was queued within the last hour; not another.
    ConfirmationRecentlySent,
}

pub struct SignupContext<'a> {
    pub keys: &'a SigningKey,
    pub public_url: &'a str,
    pub now: DateTime<Utc>,
}

pub async fn signup(
    conn: &mut PgConnection,
    ctx: &SignupContext<'_>,
    form: &Form,
    s: &Signup,
) -> AppResult<Outcome> {
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    let now = ctx.now;
    // Serialise concurrent signups of one address (a double-clicked submit).
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended(lower($1), 42))")
        .bind(s.email.as_str())
        .execute(&mut *tx)
        .await?;
    let existing = subscribers::find_by_email(&mut *tx, s.email.as_str()).await?;
    let (id, needs_confirmation) = match existing {
        None => {
            let status = if form.double_opt_in {
                Status::Unconfirmed
            } else {
                Status::Active
            };
            let method = if form.double_opt_in {
                "double_opt_in"
            } else {
                "single_opt_in"
            };
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO subscribers (email, name, status, source, language, consent_at, consent_method, consent_form_id, consent_ip, confirmed_at, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $6) RETURNING id",
            )
            .bind(s.email.as_str())
            .bind(&s.name)
            .bind(status)
            .bind(format!("form:{}", form.slug))
            .bind(&s.language)
            .bind(now)
            .bind(method)
            .bind(form.id)
            .bind(&s.ip)
            .bind((!form.double_opt_in).then_some(now))
            .fetch_one(&mut *tx)
            .await?;
            subscribers::record_event(
                &mut *tx,
                id,
                "subscribed",
                now,
                json!({ "form": form.slug, "double_opt_in": form.double_opt_in }),
            )
            .await?;
            if !form.double_opt_in {
                // Signing up again is new consent, even after an erasure. With double
                // opt-in the suppression goes only when the mailbox owner confirms.
                subscribers::lift_suppression(&mut *tx, s.email.as_str()).await?;
            }
            (id, form.double_opt_in)
        }
        Some(sub) if sub.status == Status::Active => {
            tags::apply(&mut tx, sub.id, &form.tag_ids).await?;
            tx.commit().await?;
            return Ok(Outcome::AlreadyActive);
        }
        // Unconfirmed, or previously unsubscribed/bounced/complained: only the owner of
        // the mailbox may bring the address back, so always confirm by mail.
        Some(sub) => {
            if sub.name.is_empty() && !s.name.is_empty() {
                sqlx::query("UPDATE subscribers SET name = $2 WHERE id = $1")
                    .bind(sub.id)
                    .bind(&s.name)
                    .execute(&mut *tx)
                    .await?;
            }
            subscribers::record_event(
                &mut *tx,
                sub.id,
                "signup_again",
                now,
                json!({ "form": form.slug, "status": sub.status.as_str() }),
            )
            .await?;
            (sub.id, true)
        }
    };
    tags::apply(&mut tx, id, &form.tag_ids).await?;

    let outcome = if needs_confirmation {
        let token = links::confirm_token(
            ctx.keys,
            id,
            s.email.as_str(),
            now + Duration::days(CONFIRM_VALID_DAYS),
        );
        let confirm_url = format!("{}/confirm/{token}", ctx.public_url);
        let body_id = system::confirmation_body(&mut tx, s.language.as_deref()).await?;
        // One confirmation per address per hour, whatever the number of submits.
        let message = NewMessage {
            idempotency_key: format!("confirm:{id}:{}", now.format("%Y-%m-%dT%H")),
            marketing: false,
            body_id,
            subscriber_id: Some(id),
            to_email: s.email.as_str().to_string(),
            to_name: s.name.clone(),
            data: json!({ "confirm_url": confirm_url, "form": form.name }),
            run_at: now,
        };
        match outbox::enqueue(&mut tx, &message, now).await? {
            Some(_) => Outcome::ConfirmationQueued,
            None => Outcome::ConfirmationRecentlySent,
        }
    } else {
        Outcome::Subscribed
    };
    tx.commit().await?;
    Ok(outcome)
}
