//! Turns error responses into what the caller can use: a styled HTML page on the
//! dashboard, JSON under `/api`. Handlers only return `AppError`; framework rejections
//! (a malformed form, an unknown method) get the same treatment.

use askama::Template;
use axum::{
    extract::Request,
    http::{HeaderValue, StatusCode, header},
    middleware::Next,
    response::{Html, IntoResponse, Json, Response},
};

use super::i18n::{Lang, Strings, UiLang, strings_for};
use crate::error::ErrorInfo;

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    t: &'static Strings,
    status: u16,
    reason: &'static str,
    message: String,
}

pub async fn render(req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let is_api = path == "/api" || path.starts_with("/api/");
    let accept = Lang::from_headers(req.headers());
    let res = next.run(req).await;
    // A signed-in user's own choice, else the browser's.
    let lang = Lang::pick([res.extensions().get::<UiLang>().map(|l| l.0), accept]);
    let status = res.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return res;
    }
    let content_type = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    // A page or JSON document rendered on purpose (a form shown again with its errors).
    let deliberate =
        content_type.starts_with("text/html") || content_type.starts_with("application/json");
    let info = match res.extensions().get::<ErrorInfo>() {
        Some(info) => info.clone(),
        None if deliberate => return res,
        None => {
            // A rejection from the framework: its plain-text body explains a 4xx well
            // enough; a 5xx body is never shown.
            let (parts, body) = res.into_parts();
            let text = if status.is_client_error() {
                axum::body::to_bytes(body, 4096)
                    .await
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default()
            } else {
                String::new()
            };
            let message = if text.trim().is_empty() {
                status.canonical_reason().unwrap_or("error").to_lowercase()
            } else {
                text
            };
            let _ = parts;
            ErrorInfo { status, message }
        }
    };
    let mut out = if is_api {
        (info.status, Json(serde_json::json!({ "error": { "status": info.status.as_u16(), "message": info.message } }))).into_response()
    } else {
        let page = ErrorPage {
            t: strings_for(lang),
            status: info.status.as_u16(),
            reason: info.status.canonical_reason().unwrap_or(""),
            message: info.message,
        };
        match page.render() {
            Ok(html) => (info.status, Html(html)).into_response(),
            Err(_) => (info.status, "error").into_response(),
        }
    };
    if info.status == StatusCode::TOO_MANY_REQUESTS {
        out.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("900"));
    }
    out
}
