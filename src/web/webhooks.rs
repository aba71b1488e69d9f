//! `POST /webhooks/{provider}`: bounce and complaint reports from mail providers, and
//! mail received at `UNSUBSCRIBE_MAILTO` (Postmark inbound, a Mailgun route's forward,
//! the generic `inbound_mail` event). Public
//! (no session, no CSRF): the provider's signature or credentials are the authority.
//! Answers are JSON: 200 with counts, 401 for a bad signature, 400 for a body that is
//! not the provider's format, 404 for a provider that is not configured, 503 when the
//! database cannot take the events (the provider retries).
//!
//! `POST /webhooks/ses` takes Amazon SNS messages (JSON, sent as `text/plain`): 403 for a
//! topic not in `SES_SNS_TOPIC_ARNS`, 401 for a signature or certificate that does not
//! verify or a stale message, 503 when SNS's certificate or confirmation link cannot be
//! reached now; a subscription confirmation is confirmed (GET of its `SubscribeURL`).

use axum::{
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Json, Response},
};
use serde_json::json;

use super::AppState;
use crate::delivery::feedback::{self, Provider, Rejection, ses, sns};

/// Largest webhook body (SendGrid batches stay well under it).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(json!({ "error": { "status": status.as_u16(), "message": message } })),
    )
        .into_response()
}

pub async fn receive(
    State(state): State<AppState>,
    Path(provider): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(provider) = Provider::parse(&provider)
        .filter(|p| *p != Provider::Ses && state.config.webhooks.enabled(*p))
    else {
        return error(StatusCode::NOT_FOUND, "no such webhook");
    };
    let now = state.clock.now();
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    // A Mailgun route forwards mail with attachments as multipart: never an unsubscribe
    // request. 406 tells Mailgun not to retry.
    if provider == Provider::Mailgun
        && header("content-type").is_some_and(|t| t.starts_with("multipart/"))
    {
        return error(
            StatusCode::NOT_ACCEPTABLE,
            "mail with attachments is not taken here",
        );
    }
    let verified = match feedback::verify(provider, &state.config.webhooks, &header, &body, now) {
        Ok(v) => v,
        Err(Rejection::Disabled) => return error(StatusCode::NOT_FOUND, "no such webhook"),
        Err(Rejection::Malformed(m)) => return error(StatusCode::BAD_REQUEST, &m),
        Err(Rejection::Unauthorized(why)) => {
            tracing::warn!(
                provider = provider.as_str(),
                reason = why,
                "webhook refused"
            );
            let mut res = error(StatusCode::UNAUTHORIZED, why);
            if provider == Provider::Postmark {
                res.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"Loopline webhooks\""),
                );
            }
            return res;
        }
    };
    let parsed = match feedback::parse(provider, &body) {
        Ok(p) => p,
        Err(m) => return error(StatusCode::BAD_REQUEST, &m),
    };
    apply(&state, provider, &verified, &parsed).await
}

async fn apply(
    state: &AppState,
    provider: Provider,
    verified: &feedback::Verified,
    parsed: &feedback::Parsed,
) -> Response {
    let now = state.clock.now();
    match feedback::apply(&state.pool, &state.keys, provider, verified, parsed, now).await {
        Ok(applied) => {
            tracing::info!(
                provider = provider.as_str(),
                recorded = applied.recorded,
                duplicates = applied.duplicates,
                unknown = applied.unknown,
                ignored = applied.ignored,
                "webhook received"
            );
            Json(json!({ "status": if applied.replay { "already received" } else { "ok" }, "result": applied }))
                .into_response()
        }
        Err(e) => {
            tracing::error!(provider = provider.as_str(), error = %e, "recording webhook events failed");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "the events could not be stored now; retry later",
            )
        }
    }
}

fn sns_refusal(rejection: sns::Rejection, topic: &str) -> Response {
    let (status, message) = match rejection {
        sns::Rejection::Malformed(m) => (StatusCode::BAD_REQUEST, m),
        sns::Rejection::Forbidden(m) => (StatusCode::FORBIDDEN, m),
        sns::Rejection::Unauthorized(m) => (StatusCode::UNAUTHORIZED, m),
        sns::Rejection::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, m),
    };
    tracing::warn!(provider = "ses", topic, status = status.as_u16(), reason = %message, "SNS message refused");
    error(status, &message)
}

/// `POST /webhooks/ses`: an SNS message from one of the configured topics.
pub async fn receive_ses(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (Some(ses_config), Some(verifier)) = (&state.config.webhooks.ses, &state.sns) else {
        return error(StatusCode::NOT_FOUND, "no such webhook");
    };
    let envelope = match sns::Envelope::parse(&body) {
        Ok(e) => e,
        Err(m) => return error(StatusCode::BAD_REQUEST, &m),
    };
    let topic = envelope.topic_arn.as_str();
    if let Some(declared) = headers
        .get("x-amz-sns-message-type")
        .and_then(|v| v.to_str().ok())
        && declared != envelope.kind.as_str()
    {
        return sns_refusal(
            sns::Rejection::Malformed(
                "the x-amz-sns-message-type header does not match the message's Type".into(),
            ),
            topic,
        );
    }
    // Before anything is fetched: only our own topics make Loopline reach out to SNS.
    if !ses_config.topic_arns.iter().any(|t| t == topic) {
        return sns_refusal(
            sns::Rejection::Forbidden("this SNS topic is not one of SES_SNS_TOPIC_ARNS".into()),
            topic,
        );
    }
    if let Err(r) = verifier.verify(&envelope, state.clock.now()).await {
        return sns_refusal(r, topic);
    }
    match envelope.kind {
        sns::MessageType::SubscriptionConfirmation => {
            match verifier.confirm_subscription(&envelope).await {
                Ok(()) => {
                    tracing::info!(provider = "ses", topic, "SNS subscription confirmed");
                    Json(json!({ "status": "subscribed" })).into_response()
                }
                Err(r) => sns_refusal(r, topic),
            }
        }
        sns::MessageType::UnsubscribeConfirmation => {
            tracing::warn!(
                provider = "ses",
                topic,
                "SNS reports this endpoint unsubscribed from the topic; SES feedback stops until it is subscribed again"
            );
            Json(json!({ "status": "ok" })).into_response()
        }
        sns::MessageType::Notification => {
            let parsed = ses::parse(&envelope.message_id, &envelope.message);
            apply(
                &state,
                Provider::Ses,
                &feedback::Verified::default(),
                &parsed,
            )
            .await
        }
    }
}
