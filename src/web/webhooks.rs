//! `POST /webhooks/{provider}`: bounce and complaint reports from mail providers. Public
//! (no session, no CSRF): the provider's signature or credentials are the authority.
//! Answers are JSON: 200 with counts, 401 for a bad signature, 400 for a body that is
//! not the provider's format, 404 for a provider that is not configured, 503 when the
//! database cannot take the events (the provider retries).

use axum::{
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Json, Response},
};
use serde_json::json;

use super::AppState;
use crate::delivery::feedback::{self, Provider, Rejection};

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
    let Some(provider) = Provider::parse(&provider).filter(|p| state.config.webhooks.enabled(*p))
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
    match feedback::apply(&state.pool, &state.keys, provider, &verified, &parsed, now).await {
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
