//! Public tracking endpoints: the open pixel and the click redirect. A token that does
//! not verify is a plain 404 before any database work; the redirect target only ever
//! comes from a verified token.

use axum::{
    Extension,
    extract::{Path, State},
    http::{HeaderMap, Method, StatusCode, header},
    response::{IntoResponse, Response},
};

use super::{AppState, ClientIp};
use crate::tracking::{
    classify,
    events::{Reaction, Request},
    tokens,
};

/// A transparent 1×1 GIF.
const PIXEL: &[u8] = &[
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00,
    0xff, 0xff, 0xff, 0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00,
    0x01, 0x00, 0x01, 0x00, 0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3b,
];

fn request(method: &Method, headers: &HeaderMap, ip: &str) -> Request {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    Request {
        method: match *method {
            Method::GET => classify::Method::Get,
            Method::HEAD => classify::Method::Head,
            _ => classify::Method::Other,
        },
        user_agent: text("user-agent"),
        ip: ip.parse().ok(),
        purpose_header: ["purpose", "sec-purpose", "x-moz", "x-purpose"]
            .iter()
            .find_map(|h| text(h)),
    }
}

fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found").into_response()
}

pub async fn open(
    State(state): State<AppState>,
    Path(token): Path<String>,
    method: Method,
    headers: HeaderMap,
    Extension(ClientIp(ip)): Extension<ClientIp>,
) -> Response {
    let token = token.trim_end_matches(".gif");
    let Some((message_id, _)) = tokens::verify_open(&state.keys, token) else {
        return not_found();
    };
    let reaction = Reaction::Open {
        message_id,
        req: request(&method, &headers, &ip),
        at: state.clock.now(),
    };
    // Committed (with whatever else arrived meanwhile) before the image goes out.
    if let Err(e) = state.recorder.record(reaction).await {
        // The reader still gets the image; the failure is logged, not shown.
        tracing::error!(error = %e, message = message_id, "recording an open failed");
    }
    (
        [
            (header::CONTENT_TYPE, "image/gif"),
            (header::CACHE_CONTROL, "no-store, max-age=0"),
        ],
        PIXEL,
    )
        .into_response()
}

pub async fn click(
    State(state): State<AppState>,
    Path(token): Path<String>,
    method: Method,
    headers: HeaderMap,
    Extension(ClientIp(ip)): Extension<ClientIp>,
) -> Response {
    let Some(click) = tokens::verify_click(&state.keys, &token) else {
        return not_found();
    };
    let message_id = click.message_id;
    let location = click.url.clone();
    let reaction = Reaction::Click {
        click,
        req: request(&method, &headers, &ip),
        at: state.clock.now(),
    };
    // Durable before the redirect (group commit); if the database is down the reader
    // still gets where they were going.
    if let Err(e) = state.recorder.record(reaction).await {
        tracing::error!(error = %e, message = message_id, "recording a click failed");
    }
    (
        StatusCode::FOUND,
        [
            (header::LOCATION, location.as_str()),
            (header::CACHE_CONTROL, "no-store"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
    )
        .into_response()
}
