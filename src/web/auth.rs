//! First-run setup, sign-in and sign-out.

use askama::Template;
use axum::{
    Extension, Form,
    extract::{Query, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Redirect, Response},
};
use serde::Deserialize;

use super::{
    AppState, ClientIp, SESSION_COOKIE, anon_cookie, current_session,
    i18n::{Lang, Strings, strings_for},
    pages::render,
    safe_next, set_cookie,
};
use crate::{
    AppError, AppResult,
    accounts::{self, NewPassword, Session},
    address::EmailAddress,
};

/// What the sign-in and setup pages share (no navigation: nobody is signed in).
pub struct AuthChrome {
    pub t: &'static Strings,
    pub csrf: String,
    pub asset_v: &'static str,
    pub notice: Option<&'static str>,
}

/// Builds the chrome and, for a first visit, the cookie that anchors its CSRF token.
fn auth_chrome(
    state: &AppState,
    headers: &HeaderMap,
    notice: Option<&str>,
) -> (AuthChrome, Option<axum::http::HeaderValue>) {
    let (cookie, fresh) = anon_cookie(headers);
    let t = strings_for(Lang::pick([Lang::from_headers(headers)]));
    let chrome = AuthChrome {
        t,
        csrf: state.anon_csrf(&cookie),
        asset_v: super::assets::version(),
        notice: notice.and_then(|n| t.notice(n)),
    };
    let set = fresh.then(|| set_cookie(&state.config, super::ANON_COOKIE, &cookie, None));
    (chrome, set)
}

fn with_cookie(mut res: Response, cookie: Option<axum::http::HeaderValue>) -> Response {
    if let Some(c) = cookie {
        res.headers_mut().append(header::SET_COOKIE, c);
    }
    res
}

#[derive(Template)]
#[template(path = "setup.html")]
struct SetupPage {
    a: AuthChrome,
    email: String,
    errors: Vec<crate::Problem>,
}

#[derive(Deserialize)]
pub struct SetupForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    password_confirm: String,
}

pub async fn setup_page(State(state): State<AppState>, headers: HeaderMap) -> AppResult<Response> {
    if accounts::user_count(&state.pool).await? > 0 {
        return Ok(Redirect::to("/login").into_response());
    }
    let (a, cookie) = auth_chrome(&state, &headers, None);
    Ok(with_cookie(
        render(SetupPage {
            a,
            email: String::new(),
            errors: vec![],
        })?
        .into_response(),
        cookie,
    ))
}

pub async fn setup_submit(
    State(state): State<AppState>,
    Extension(ip): Extension<ClientIp>,
    headers: HeaderMap,
    Form(form): Form<SetupForm>,
) -> AppResult<Response> {
    if accounts::user_count(&state.pool).await? > 0 {
        return Ok(Redirect::to("/login").into_response());
    }
    let email = EmailAddress::parse(&form.email);
    let password = NewPassword::parse(form.password, Some(&form.password_confirm));
    let (email, password) = match (email, password) {
        (Ok(e), Ok(p)) => (e, p),
        (e, p) => {
            let errors = [
                e.err().map(crate::Problem::Address),
                p.err().map(crate::Problem::Password),
            ]
            .into_iter()
            .flatten()
            .collect();
            let (a, cookie) = auth_chrome(&state, &headers, None);
            let page = render(SetupPage {
                a,
                email: form.email,
                errors,
            })?;
            return Ok(with_cookie(
                (StatusCode::UNPROCESSABLE_ENTITY, page).into_response(),
                cookie,
            ));
        }
    };
    let user = match accounts::create_first_owner(&state.pool, &email, password).await {
        Ok(u) => u,
        Err(AppError::Conflict(_)) => return Ok(Redirect::to("/login").into_response()),
        Err(e) => return Err(e),
    };
    tracing::info!(user_id = user.id, "owner account created");
    sign_in(&state, user.id, &ip.0, &headers, "/").await
}

async fn sign_in(
    state: &AppState,
    user_id: i64,
    ip: &str,
    headers: &HeaderMap,
    next: &str,
) -> AppResult<Response> {
    let ua = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok());
    let token = accounts::create_session(
        &state.pool,
        user_id,
        state.clock.now(),
        state.config.session_ttl,
        Some(ip),
        ua,
    )
    .await?;
    let mut res = Redirect::to(next).into_response();
    res.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(
            &state.config,
            SESSION_COOKIE,
            token.as_str(),
            Some(state.config.session_ttl),
        ),
    );
    Ok(res)
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    a: AuthChrome,
    email: String,
    next: String,
    error: Option<String>,
}

#[derive(Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
    notice: Option<String>,
}

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    next: String,
}

pub async fn login_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<LoginQuery>,
) -> AppResult<Response> {
    if accounts::user_count(&state.pool).await? == 0 {
        return Ok(Redirect::to("/setup").into_response());
    }
    let next = safe_next(q.next.as_deref());
    if current_session(&state, &headers).await?.is_some() {
        return Ok(Redirect::to(&next).into_response());
    }
    let (a, cookie) = auth_chrome(&state, &headers, q.notice.as_deref());
    Ok(with_cookie(
        render(LoginPage {
            a,
            email: String::new(),
            next,
            error: None,
        })?
        .into_response(),
        cookie,
    ))
}

pub async fn login_submit(
    State(state): State<AppState>,
    Extension(ip): Extension<ClientIp>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> AppResult<Response> {
    let now = state.clock.now();
    let next = safe_next(Some(&form.next));
    let t = strings_for(Lang::pick([Lang::from_headers(&headers)]));
    let refuse = |status: StatusCode, error: String| -> AppResult<Response> {
        let (a, cookie) = auth_chrome(&state, &headers, None);
        let page = render(LoginPage {
            a,
            email: form.email.clone(),
            next: next.clone(),
            error: Some(error),
        })?;
        Ok(with_cookie((status, page).into_response(), cookie))
    };
    // Nothing a database would refuse (NUL, absurd length) reaches a query.
    if form.email.contains('\0') || form.email.len() > 320 || form.password.len() > 4096 {
        return refuse(StatusCode::UNAUTHORIZED, t.login_failed.to_string());
    }
    match state
        .throttle
        .attempt(&state.pool, &form.email, &ip.0, now)
        .await
    {
        Ok(()) => {}
        Err(AppError::TooManyRequests(msg)) => {
            tracing::warn!(ip = %ip.0, "sign-in throttled");
            return refuse(StatusCode::TOO_MANY_REQUESTS, t.problem(&msg));
        }
        Err(e) => return Err(e),
    }
    match accounts::authenticate(&state.pool, &form.email, form.password.clone()).await? {
        Some(user) => {
            accounts::clear_failures(&state.pool, &user.email).await?;
            accounts::purge_expired_sessions(&state.pool, now).await?;
            tracing::info!(user_id = user.id, "signed in");
            sign_in(&state, user.id, &ip.0, &headers, &next).await
        }
        None => refuse(StatusCode::UNAUTHORIZED, t.login_failed.to_string()),
    }
}

pub async fn logout(
    State(state): State<AppState>,
    Extension(session): Extension<Session>,
) -> AppResult<Response> {
    accounts::delete_session(&state.pool, &session.token).await?;
    let mut res = Redirect::to("/login?notice=signed-out").into_response();
    res.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(
            &state.config,
            SESSION_COOKIE,
            "",
            Some(std::time::Duration::ZERO),
        ),
    );
    Ok(res)
}
