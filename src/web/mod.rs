//! The marketer's dashboard and the HTTP surface: the router, sessions and CSRF, the
//! error renderer and static files. Handlers stay thin: parse, call a module, render.
//!
//! Every route is declared once in [`routes`] with the access it needs; the router is
//! built from that table, and the test suite walks the same table to prove that no
//! dashboard route is reachable without a session and that roles are enforced.

mod assets;
mod audience;
mod auth;
pub mod errors;
mod i18n;
mod imports;
mod outbox;
mod pages;
mod public;
mod segments;
mod tracking;
mod webhooks;

use std::{net::SocketAddr, sync::Arc};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::DefaultBodyLimit,
    extract::{ConnectInfo, Request, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Json, Redirect, Response},
    routing::{MethodRouter, get, post},
};
use sqlx::PgPool;
use tower_http::{
    catch_panic::CatchPanicLayer,
    request_id::{MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer},
    set_header::SetResponseHeaderLayer,
    trace::TraceLayer,
};

pub use i18n::{Lang, Strings, strings_for};

use crate::{
    AppError,
    accounts::{self, LoginThrottle, Role, Session, SessionToken},
    clock::SharedClock,
    config::Config,
    signing::{SigningKey, random_token},
};

pub const SESSION_COOKIE: &str = "ll_session";
pub const ANON_COOKIE: &str = "ll_csrf";
pub const CSRF_FIELD: &str = "_csrf";
pub const CSRF_HEADER: &str = "x-csrf-token";
/// Largest CSV upload (streamed into the database, never held in memory).
pub(crate) const MAX_UPLOAD_BYTES: usize = 2 * 1024 * 1024 * 1024;
/// Largest urlencoded form body the CSRF check will read.
const MAX_FORM_BYTES: usize = 2 * 1024 * 1024;

/// Shared state for handlers. Cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<StateInner>);

pub struct StateInner {
    pub pool: PgPool,
    pub config: Config,
    pub clock: SharedClock,
    pub keys: SigningKey,
    pub throttle: LoginThrottle,
    /// How opens and clicks store IPs.
    pub privacy: crate::tracking::events::Privacy,
    /// Writes opens and clicks in group commits (one writer per process).
    pub recorder: crate::tracking::events::Recorder,
    /// Checks SNS messages for `/webhooks/ses` (certificates cached per process), when
    /// SES feedback is configured.
    pub sns: Option<Arc<crate::delivery::feedback::sns::Verifier>>,
    /// Answers the dashboard's segment counts and list searches from memory when it can.
    pub live_index: crate::audience::live_index::LiveIndex,
}

impl std::ops::Deref for AppState {
    type Target = StateInner;
    fn deref(&self) -> &StateInner {
        &self.0
    }
}

impl AppState {
    /// Starts the open/click writer (on a thread of its own, with two database
    /// connections of its own).
    pub fn new(pool: PgPool, config: Config, clock: SharedClock, keys: SigningKey) -> Self {
        let privacy = crate::tracking::events::Privacy {
            mode: config.mail.track_ip,
            key: keys.short_tag("tracking/ip-storage", b""),
        };
        let recorder = crate::tracking::events::Recorder::start(pool.clone(), privacy.clone());
        let sns = config.webhooks.ses.as_ref().map(|ses| {
            Arc::new(crate::delivery::feedback::sns::Verifier::new(
                ses.trust.clone(),
            ))
        });
        Self(Arc::new(StateInner {
            sns,
            pool,
            clock,
            privacy,
            recorder,
            config,
            keys,
            throttle: LoginThrottle::default(),
            live_index: Default::default(),
        }))
    }

    /// The CSRF token bound to a session.
    pub fn session_csrf(&self, token: &SessionToken) -> String {
        self.keys.sign("csrf/session", token.as_str().as_bytes())
    }

    /// The CSRF token for forms shown before sign-in, bound to the `ll_csrf` cookie.
    pub fn anon_csrf(&self, cookie: &str) -> String {
        self.keys.sign("csrf/anonymous", cookie.as_bytes())
    }
}

/// Who may use a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone; no CSRF (health checks, static files; later tracking and unsubscribe,
    /// which carry signed tokens of their own).
    Public,
    /// Forms used before signing in (setup, login): CSRF bound to an anonymous cookie.
    Anonymous,
    /// A signed-in user with at least this role; CSRF bound to the session.
    Signed(Role),
}

/// One row of the route table.
#[derive(Debug, Clone)]
pub struct RouteInfo {
    pub method: Method,
    pub path: &'static str,
    pub access: Access,
}

type Entry = (RouteInfo, MethodRouter<AppState>);

fn entry(
    method: Method,
    path: &'static str,
    access: Access,
    handler: MethodRouter<AppState>,
) -> Entry {
    (
        RouteInfo {
            method,
            path,
            access,
        },
        handler,
    )
}

/// The whole route table.
#[rustfmt::skip]
fn table() -> Vec<Entry> {
    use Access::*;
    use Role::*;
    let g = Method::GET;
    let p = Method::POST;
    vec![
        entry(g.clone(), "/healthz", Public, get(healthz)),
        entry(g.clone(), "/readyz", Public, get(readyz)),
        entry(g.clone(), "/static/{*path}", Public, get(assets::serve)),
        entry(g.clone(), "/f/{slug}", Public, get(public::signup_page)),
        entry(p.clone(), "/f/{slug}", Public, post(public::signup_submit)),
        entry(p.clone(), "/api/v1/forms/{slug}/subscribe", Public, post(public::signup_json)),
        entry(g.clone(), "/confirm/{token}", Public, get(public::confirm_page)),
        entry(p.clone(), "/confirm/{token}", Public, post(public::confirm_submit)),
        entry(g.clone(), "/o/{token}", Public, get(tracking::open)),
        entry(g.clone(), "/c/{token}", Public, get(tracking::click)),
        entry(p.clone(), "/webhooks/ses", Public, post(webhooks::receive_ses).layer(DefaultBodyLimit::max(webhooks::MAX_BODY_BYTES))),
        entry(p.clone(), "/webhooks/{provider}", Public, post(webhooks::receive).layer(DefaultBodyLimit::max(webhooks::MAX_BODY_BYTES))),
        entry(g.clone(), "/u/{token}", Public, get(public::unsubscribe_page)),
        entry(p.clone(), "/u/{token}", Public, post(public::unsubscribe_submit)),
        entry(g.clone(), "/p/{token}", Public, get(public::preferences_page)),
        entry(p.clone(), "/p/{token}", Public, post(public::preferences_submit)),
        entry(p.clone(), "/p/{token}/export", Public, post(public::export_request)),
        entry(p.clone(), "/p/{token}/erase", Public, post(public::erase_request)),
        entry(g.clone(), "/d/export/{token}", Public, get(public::export_download)),
        entry(g.clone(), "/d/erase/{token}", Public, get(public::erase_page)),
        entry(p.clone(), "/d/erase/{token}", Public, post(public::erase_submit)),
        entry(g.clone(), "/setup", Anonymous, get(auth::setup_page)),
        entry(p.clone(), "/setup", Anonymous, post(auth::setup_submit)),
        entry(g.clone(), "/login", Anonymous, get(auth::login_page)),
        entry(p.clone(), "/login", Anonymous, post(auth::login_submit)),
        entry(p.clone(), "/logout", Signed(Viewer), post(auth::logout)),
        entry(g.clone(), "/", Signed(Viewer), get(pages::dashboard)),
        entry(g.clone(), "/calendar", Signed(Viewer), get(pages::calendar)),
        entry(g.clone(), "/audience", Signed(Viewer), get(audience::list)),
        entry(g.clone(), "/audience/subscribers/{id}", Signed(Viewer), get(audience::profile)),
        entry(p.clone(), "/audience/subscribers/{id}/unsubscribe", Signed(Editor), post(audience::unsubscribe)),
        entry(g.clone(), "/audience/subscribers/{id}/export", Signed(Editor), get(audience::export)),
        entry(p.clone(), "/audience/subscribers/{id}/erase", Signed(Editor), post(audience::erase)),
        entry(g.clone(), "/audience/forms", Signed(Viewer), get(audience::forms)),
        entry(g.clone(), "/audience/segments", Signed(Viewer), get(segments::index)),
        entry(g.clone(), "/audience/fields", Signed(Viewer), get(audience::fields)),
        entry(p.clone(), "/audience/bulk", Signed(Editor), post(audience::bulk)),
        entry(p.clone(), "/audience/fields", Signed(Editor), post(audience::create_field)),
        entry(p.clone(), "/audience/tags/{id}/topic", Signed(Editor), post(audience::toggle_topic)),
        entry(g.clone(), "/audience/imports", Signed(Viewer), get(imports::index)),
        entry(p.clone(), "/audience/imports", Signed(Editor), post(imports::upload).layer(DefaultBodyLimit::max(MAX_UPLOAD_BYTES))),
        entry(g.clone(), "/audience/imports/{id}", Signed(Viewer), get(imports::show)),
        entry(p.clone(), "/audience/imports/{id}/start", Signed(Editor), post(imports::start)),
        entry(p.clone(), "/audience/imports/{id}/cancel", Signed(Editor), post(imports::cancel)),
        entry(g.clone(), "/audience/imports/{id}/report.csv", Signed(Viewer), get(imports::report_csv)),
        entry(g.clone(), "/audience/export.csv", Signed(Editor), get(imports::export_csv)),
        entry(p.clone(), "/audience/segments/preview", Signed(Viewer), post(segments::preview)),
        entry(p.clone(), "/audience/segments", Signed(Editor), post(segments::create)),
        entry(p.clone(), "/audience/forms", Signed(Editor), post(audience::create_form)),
        entry(p.clone(), "/audience/forms/{id}/language", Signed(Editor), post(audience::set_form_language)),
        entry(g.clone(), "/settings/audience", Signed(Viewer), get(audience::settings)),
        entry(p.clone(), "/settings/audience", Signed(Owner), post(audience::save_settings)),
        entry(g.clone(), "/campaigns", Signed(Viewer), get(pages::campaigns)),
        entry(g.clone(), "/automations", Signed(Viewer), get(pages::automations)),
        entry(g.clone(), "/insights", Signed(Viewer), get(pages::insights)),
        entry(g.clone(), "/outbox", Signed(Viewer), get(outbox::index)),
        entry(p.clone(), "/outbox/test", Signed(Editor), post(outbox::submit)),
        entry(g.clone(), "/outbox/{id}", Signed(Viewer), get(outbox::show)),
        entry(g.clone(), "/outbox/{id}/raw", Signed(Viewer), get(outbox::raw)),
        entry(g.clone(), "/settings", Signed(Viewer), get(pages::settings)),
        entry(g.clone(), "/settings/account", Signed(Viewer), get(pages::account)),
        entry(p.clone(), "/settings/account/password", Signed(Viewer), post(pages::change_password)),
        entry(p.clone(), "/settings/account/language", Signed(Viewer), post(pages::set_language)),
        entry(g.clone(), "/settings/jobs", Signed(Viewer), get(pages::jobs)),
        entry(p.clone(), "/settings/jobs/{id}/retry", Signed(Editor), post(pages::retry_job)),
        entry(g.clone(), "/settings/users", Signed(Owner), get(pages::users)),
        entry(p.clone(), "/settings/users", Signed(Owner), post(pages::create_user)),
        entry(p.clone(), "/settings/users/{id}/role", Signed(Owner), post(pages::set_role)),
        entry(p.clone(), "/settings/users/{id}/delete", Signed(Owner), post(pages::delete_user)),
    ]
}

/// Every route with its method and access, as the router serves them.
pub fn routes() -> Vec<RouteInfo> {
    table().into_iter().map(|(info, _)| info).collect()
}

/// The complete application router.
pub fn router(state: AppState) -> Router {
    let mut app = Router::new();
    for (info, handler) in table() {
        let guarded = handler.route_layer(middleware::from_fn_with_state(
            (state.clone(), info.access),
            guard,
        ));
        app = app.route(info.path, guarded);
    }
    // Unknown paths are 404s: JSON under /api, a page elsewhere (errors::render decides).
    // The layers go on as one stack (outermost first): each `Router::layer` call would
    // box the router again, and every request would pass through one more boxed service
    // and future per layer (measured on the click path: a tenth of the HTTP workers'
    // time went to allocating and moving them).
    app.fallback(|| async { AppError::NotFound })
        .with_state(state)
        .layer(
            tower::ServiceBuilder::new()
                .layer(SetRequestIdLayer::x_request_id(FastRequestId))
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(request_span)
                        .on_response(
                            |res: &axum::http::Response<_>,
                             latency: std::time::Duration,
                             span: &tracing::Span| {
                                // Only for requests whose span is logged (see `request_span`).
                                if !span.is_disabled() {
                                    tracing::info!(
                                        status = res.status().as_u16(),
                                        latency_ms = latency.as_secs_f64() * 1e3,
                                        "finished processing request"
                                    );
                                }
                            },
                        ),
                )
                .layer(PropagateRequestIdLayer::x_request_id())
                .layer(SetResponseHeaderLayer::if_not_present(
                    header::X_FRAME_OPTIONS,
                    HeaderValue::from_static("DENY"),
                ))
                .layer(SetResponseHeaderLayer::if_not_present(
                    header::REFERRER_POLICY,
                    HeaderValue::from_static("same-origin"),
                ))
                .layer(SetResponseHeaderLayer::if_not_present(
                    header::X_CONTENT_TYPE_OPTIONS,
                    HeaderValue::from_static("nosniff"),
                ))
                .layer(SetResponseHeaderLayer::if_not_present(
                    header::CONTENT_SECURITY_POLICY,
                    HeaderValue::from_static(CSP),
                ))
                .layer(CatchPanicLayer::custom(|_| {
                    tracing::error!("a request handler panicked");
                    AppError::Internal(anyhow::anyhow!("handler panicked")).into_response()
                }))
                .layer(middleware::from_fn(errors::render)),
        )
}

/// Request ids: random v4 UUIDs from the thread's generator (tower-http's own
/// `MakeRequestUuid` asks the kernel for randomness on every request, a system call on
/// the click path).
#[derive(Clone, Copy)]
struct FastRequestId;

impl MakeRequestId for FastRequestId {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        let id = uuid::Builder::from_random_bytes(rand::random()).into_uuid();
        HeaderValue::from_str(&id.to_string())
            .ok()
            .map(RequestId::new)
    }
}

/// Every request runs in a span with its request id. Opens and clicks log at DEBUG, the
/// rest at INFO: their paths carry a subscriber's signed token, each one is already an
/// event row (with time, agent and address per the privacy setting) that erasure
/// reaches and a log file does not, and at campaign volume the lines would be most of
/// the log (and a tenth of the click path's CPU).
fn request_span(req: &Request) -> tracing::Span {
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    let path = req.uri().path();
    if path.starts_with("/c/") || path.starts_with("/o/") {
        tracing::debug_span!("request", request_id = %id, method = %req.method(), path = %path)
    } else {
        tracing::info_span!("request", request_id = %id, method = %req.method(), path = %path)
    }
}

const CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'";

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

async fn readyz(State(state): State<AppState>) -> Response {
    match crate::db::readiness(&state.pool).await {
        Ok(()) => Json(serde_json::json!({ "status": "ready" })).into_response(),
        Err(reason) => {
            // The detail goes to the log, not to whoever asks.
            tracing::warn!(%reason, "not ready");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(serde_json::json!({ "status": "not ready" })),
            )
                .into_response()
        }
    }
}

/// Enforces a route's [`Access`]: session, role and CSRF, in that order, so a visitor
/// without a session is sent to sign in rather than told about tokens.
async fn guard(
    State((state, access)): State<(AppState, Access)>,
    req: Request,
    next: Next,
) -> Response {
    match guard_inner(&state, access, req).await {
        Ok(req) => {
            // The signed-in user's language travels on the response to the error
            // renderer, which runs outside this guard.
            let lang = req.extensions().get::<i18n::UiLang>().copied();
            let mut res = next.run(req).await;
            if let Some(lang) = lang {
                res.extensions_mut().insert(lang);
            }
            res
        }
        Err(res) => res,
    }
}

/// The client's address as [`client_ip`] decided it, for handlers.
#[derive(Debug, Clone)]
pub struct ClientIp(pub String);

async fn guard_inner(
    state: &AppState,
    access: Access,
    mut req: Request,
) -> Result<Request, Response> {
    let ip = client_ip(
        state,
        req.headers(),
        req.extensions().get::<ConnectInfo<SocketAddr>>(),
    );
    req.extensions_mut().insert(ClientIp(ip));
    let unsafe_method = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    match access {
        Access::Public => Ok(req),
        Access::Anonymous => {
            if unsafe_method {
                let expected = cookie(req.headers(), ANON_COOKIE).map(|c| state.anon_csrf(c));
                req = check_csrf(req, expected).await?;
            }
            Ok(req)
        }
        Access::Signed(min) => {
            let session = current_session(state, req.headers())
                .await
                .map_err(IntoResponse::into_response)?;
            let Some(mut session) = session else {
                let users = accounts::user_count(&state.pool)
                    .await
                    .map_err(|e| AppError::from(e).into_response())?;
                if users == 0 {
                    return Err(Redirect::to("/setup").into_response());
                }
                let target = if req.method() == Method::GET {
                    format!("/login?next={}", urlencode(req.uri().path()))
                } else {
                    "/login".into()
                };
                return Err(Redirect::to(&target).into_response());
            };
            // Until the user chooses a language, the dashboard speaks the browser's.
            if session.user.language.is_none() {
                session.user.language = Lang::from_headers(req.headers()).map(|l| l.code().into());
            }
            let lang = i18n::UiLang(Lang::pick([session
                .user
                .language
                .as_deref()
                .and_then(Lang::from_tag)]));
            if session.user.role < min {
                let mut res = AppError::Forbidden.into_response();
                res.extensions_mut().insert(lang);
                return Err(res);
            }
            req.extensions_mut().insert(lang);
            if unsafe_method {
                let expected = Some(state.session_csrf(&session.token));
                req = check_csrf(req, expected).await?;
            }
            req.extensions_mut().insert(session);
            Ok(req)
        }
    }
}

/// The session named by the request's cookie, if it is live.
pub async fn current_session(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<Session>, AppError> {
    let Some(token) = cookie(headers, SESSION_COOKIE).and_then(SessionToken::from_cookie) else {
        return Ok(None);
    };
    Ok(accounts::lookup_session(
        &state.pool,
        &token,
        state.clock.now(),
        state.config.session_ttl,
    )
    .await?)
}

/// Checks the CSRF token from the `x-csrf-token` header (htmx) or the `_csrf` field of
/// an urlencoded form (or, for multipart uploads, the query string). Buffers the form
/// body to read it and hands the request on intact.
async fn check_csrf(req: Request, expected: Option<String>) -> Result<Request, Response> {
    let fail = || AppError::Csrf.into_response();
    let Some(expected) = expected else {
        return Err(fail());
    };
    let matches = |given: &str| constant_time_eq(given.as_bytes(), expected.as_bytes());

    if let Some(given) = req.headers().get(CSRF_HEADER).and_then(|v| v.to_str().ok()) {
        return if matches(given) { Ok(req) } else { Err(fail()) };
    }
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if content_type.starts_with("multipart/form-data") {
        let given = req
            .uri()
            .query()
            .and_then(|q| form_field(q.as_bytes(), CSRF_FIELD));
        return if given.as_deref().is_some_and(matches) {
            Ok(req)
        } else {
            Err(fail())
        };
    }
    if !content_type.starts_with("application/x-www-form-urlencoded") {
        return Err(fail());
    }
    let (parts, body) = req.into_parts();
    let bytes: Bytes = axum::body::to_bytes(body, MAX_FORM_BYTES)
        .await
        .map_err(|_| AppError::BadRequest(crate::Problem::FormTooLarge).into_response())?;
    let given = form_field(&bytes, CSRF_FIELD);
    if given.as_deref().is_some_and(matches) {
        Ok(Request::from_parts(parts, Body::from(bytes)))
    } else {
        Err(fail())
    }
}

fn form_field(body: &[u8], name: &str) -> Option<String> {
    url_decode_pairs(body)
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

fn url_decode_pairs(body: &[u8]) -> impl Iterator<Item = (String, String)> + '_ {
    serde_urlencoded::from_bytes::<Vec<(String, String)>>(body)
        .unwrap_or_default()
        .into_iter()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A cookie's value from the request headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A `Set-Cookie` value: always HttpOnly and SameSite=Lax, Secure over https.
pub fn set_cookie(
    config: &Config,
    name: &str,
    value: &str,
    max_age: Option<std::time::Duration>,
) -> HeaderValue {
    let mut c = format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax");
    if let Some(age) = max_age {
        c.push_str(&format!("; Max-Age={}", age.as_secs()));
    }
    if config.secure_cookies() {
        c.push_str("; Secure");
    }
    HeaderValue::from_str(&c).expect("cookie values are URL-safe tokens")
}

/// The anonymous CSRF cookie: reuses the visitor's, or mints one to set.
pub fn anon_cookie(headers: &HeaderMap) -> (String, bool) {
    match cookie(headers, ANON_COOKIE).filter(|c| c.len() >= 20 && c.len() <= 64) {
        Some(c) => (c.to_string(), false),
        None => (random_token::<18>(), true),
    }
}

/// The client's IP: the socket peer, or the last `X-Forwarded-For` hop (the one your
/// proxy appended; earlier entries are whatever the client sent) when
/// `TRUST_PROXY_HEADERS` is on.
pub fn client_ip(
    state: &AppState,
    headers: &HeaderMap,
    peer: Option<&ConnectInfo<SocketAddr>>,
) -> String {
    if state.config.trust_proxy_headers
        && let Some(last) = headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
    {
        return last.trim().to_string();
    }
    peer.map(|c| c.0.ip().to_string())
        .unwrap_or_else(|| "unknown".into())
}

fn urlencode(s: &str) -> String {
    serde_urlencoded::to_string([("", s)])
        .map(|e| e.trim_start_matches('=').to_string())
        .unwrap_or_default()
}

/// A `next` target is only ever a local path: never another site (no open redirect).
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        // Browsers drop tabs and newlines from Location and read `\` as `/`, so any
        // control character or backslash could turn a local path into another site.
        Some(n)
            if n.starts_with('/')
                && !n.starts_with("//")
                && !n.contains("://")
                && !n.bytes().any(|b| b < 0x20 || b == 0x7f || b == b'\\') =>
        {
            n.to_string()
        }
        _ => "/".to_string(),
    }
}

/// An urlencoded form read as ordered pairs, for forms with repeated fields (ticked
/// checkboxes, topics, mapping columns) that a struct cannot describe.
pub struct FormPairs(Vec<(String, String)>);

impl FormPairs {
    /// The first value of `key`, trimmed; empty when absent.
    pub fn get(&self, key: &str) -> String {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default()
    }

    /// Whether `key` was sent at all.
    pub fn has(&self, key: &str) -> bool {
        self.0.iter().any(|(k, _)| k == key)
    }

    /// Every value of a repeated `key`.
    pub fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.0
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

impl<S: Send + Sync> axum::extract::FromRequest<S> for FormPairs {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|_| AppError::BadRequest(crate::Problem::FormUnreadable))?;
        serde_urlencoded::from_bytes(&bytes)
            .map(FormPairs)
            .map_err(|_| AppError::BadRequest(crate::Problem::FormUnreadable))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_targets_stay_local() {
        assert_eq!(safe_next(Some("/settings")), "/settings");
        for bad in [
            "//evil.example",
            "https://evil.example",
            "/\\evil.example",
            "evil",
            "/x?u=http://e",
            "/\t/evil.example",
            "/\n/evil.example",
            "/a\r\nSet-Cookie: x=1",
        ] {
            assert_eq!(safe_next(Some(bad)), "/", "{bad}");
        }
        assert_eq!(safe_next(None), "/");
    }

    #[test]
    fn cookies_parse_from_several_headers() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; ll_session=abc"),
        );
        h.append(header::COOKIE, HeaderValue::from_static("ll_csrf=xyz"));
        assert_eq!(cookie(&h, "ll_session"), Some("abc"));
        assert_eq!(cookie(&h, "ll_csrf"), Some("xyz"));
        assert_eq!(cookie(&h, "nope"), None);
    }

    #[test]
    fn route_paths_are_unique_per_method() {
        let mut seen = std::collections::HashSet::new();
        for r in routes() {
            assert!(
                seen.insert((r.method.clone(), r.path)),
                "{} {} declared twice",
                r.method,
                r.path
            );
        }
    }
}
