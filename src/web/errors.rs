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
use crate::error::{ErrorInfo, Message};

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    t: &'static Strings,
    status: u16,
    reason: &'static str,
    message: String,
    /// Subscribers' pages offer no way into the dashboard.
    back: bool,
}

/// Pages subscribers reach from a mail or a signup form (not the dashboard's).
fn is_subscriber_page(path: &str) -> bool {
    ["/f/", "/confirm/", "/u/", "/p/", "/d/", "/o/", "/c/"]
        .iter()
        .any(|p| path.starts_with(p))
}

impl Strings {
    /// An error response's explanation in this language.
    pub fn message(&self, m: &Message) -> String {
        match m {
            Message::NotFound => self.err_not_found.into(),
            Message::Forbidden => self.err_forbidden.into(),
            Message::Csrf => self.err_csrf.into(),
            Message::Internal => self.err_internal.into(),
            Message::Unavailable(detail) => match self.lang {
                // The detail is for operators, who read the English log anyway.
                Lang::En => format!("{}: {detail}", self.err_unavailable),
                _ => self.err_unavailable.into(),
            },
            Message::Problem(p) => self.problem(p),
            Message::Rejection(status, text) => (self.err_rejected)(*status, text),
        }
    }
}

pub async fn render(req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let is_api = path == "/api" || path.starts_with("/api/");
    let back = !is_subscriber_page(path);
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
            let _ = parts;
            ErrorInfo {
                status,
                message: Message::Rejection(status.as_u16(), text),
            }
        }
    };
    let t = strings_for(lang);
    let message = t.message(&info.message);
    let mut out = if is_api {
        (info.status, Json(serde_json::json!({ "error": { "status": info.status.as_u16(), "message": message } }))).into_response()
    } else {
        let page = ErrorPage {
            t,
            status: info.status.as_u16(),
            reason: (t.status_name)(info.status.as_u16()),
            message,
            back,
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
