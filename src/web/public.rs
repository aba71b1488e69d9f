//! The pages subscribers see: signup forms, confirmation, unsubscribe (a confirm page
//! on GET; only POST unsubscribes, so link scanners never do), RFC 8058 one-click,
//! preferences, self-service export and erasure. Every link carries a signed token.

use askama::Template;
use axum::{
    Extension, Form, Json,
    extract::{Path, State},
    http::{StatusCode, header},
    response::{Html, IntoResponse, Response},
};
use serde::Deserialize;

use super::{
    AppState, ClientIp,
    i18n::{PublicStrings, public_strings},
    pages::render,
};
use crate::{
    AppError, AppResult,
    audience::{
        data_requests,
        forms::{self, Form as SignupForm},
        links::{self, ConfirmCheck, DataAction},
        signup::{self, Signup, SignupContext},
        subscribers::{self, Status},
        tags,
    },
    ratelimit,
};

#[derive(Template)]
#[template(path = "public/signup.html")]
struct SignupPage {
    p: &'static PublicStrings,
    form_name: String,
    slug: String,
    email: String,
    name: String,
    message: Option<&'static str>,
    error: Option<String>,
    show_form: bool,
}

#[derive(Template)]
#[template(path = "public/message.html")]
struct MessagePage {
    title: &'static str,
    message: &'static str,
    action: Option<String>,
    question: Option<&'static str>,
    email: String,
    button: &'static str,
    secondary: Option<String>,
    secondary_label: &'static str,
}

impl MessagePage {
    fn plain(title: &'static str, message: &'static str) -> Self {
        Self {
            title,
            message,
            action: None,
            question: None,
            email: String::new(),
            button: "",
            secondary: None,
            secondary_label: "",
        }
    }
}

async fn form_or_404(state: &AppState, slug: &str) -> AppResult<SignupForm> {
    forms::by_slug(&state.pool, slug)
        .await?
        .ok_or(AppError::NotFound)
}

pub async fn signup_page(
    State(state): State<AppState>,
    Path(slug): Path<String>,
) -> AppResult<Html<String>> {
    let form = form_or_404(&state, &slug).await?;
    render(SignupPage {
        p: public_strings(),
        form_name: form.name,
        slug: form.slug,
        email: String::new(),
        name: String::new(),
        message: None,
        error: None,
        show_form: true,
    })
}

#[derive(Deserialize)]
pub struct SignupInput {
    #[serde(default)]
    email: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    language: Option<String>,
    /// The honeypot: people never see it, bots fill it in.
    #[serde(default)]
    website: String,
}

/// What the visitor is told. With double opt-in every outcome reads the same.
enum Reply {
    Done(&'static str),
    Invalid(String),
    Limited,
}

async fn handle_signup(
    state: &AppState,
    slug: &str,
    ip: &str,
    input: &SignupInput,
) -> AppResult<(SignupForm, Reply)> {
    let form = form_or_404(state, slug).await?;
    let p = public_strings();
    let thanks = if form.double_opt_in {
        p.signup_check_inbox
    } else {
        p.signup_thanks
    };
    if !input.website.trim().is_empty() {
        tracing::info!(form = %form.slug, "signup honeypot filled; ignored");
        return Ok((form, Reply::Done(thanks)));
    }
    let now = state.clock.now();
    if !ratelimit::hit(&state.pool, ratelimit::SIGNUPS_PER_IP, ip, now).await? {
        tracing::warn!(form = %form.slug, %ip, "signup rate limit reached");
        return Ok((form, Reply::Limited));
    }
    let signup = match Signup::parse(&input.email, &input.name, input.language.as_deref(), ip) {
        Ok(s) => s,
        Err(e) => return Ok((form, Reply::Invalid(e))),
    };
    let ctx = SignupContext {
        keys: &state.keys,
        public_url: &state.config.public_url,
        now,
    };
    let mut conn = state.pool.acquire().await?;
    let outcome = signup::signup(&mut conn, &ctx, &form, &signup).await?;
    tracing::info!(form = %form.slug, ?outcome, "signup");
    // Whatever the outcome (new, already subscribed, asked to confirm again), the page
    // reads the same: it reveals nothing about the address. The mail explains the rest.
    Ok((form, Reply::Done(thanks)))
}

pub async fn signup_submit(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    Extension(ip): Extension<ClientIp>,
    Form(input): Form<SignupInput>,
) -> AppResult<Response> {
    let (form, reply) = handle_signup(&state, &slug, &ip.0, &input).await?;
    let p = public_strings();
    let mut page = SignupPage {
        p,
        form_name: form.name,
        slug: form.slug,
        email: input.email.clone(),
        name: input.name.clone(),
        message: None,
        error: None,
        show_form: false,
    };
    let status = match reply {
        Reply::Done(m) => {
            page.message = Some(m);
            StatusCode::OK
        }
        Reply::Invalid(e) => {
            page.error = Some(e);
            page.show_form = true;
            StatusCode::UNPROCESSABLE_ENTITY
        }
        Reply::Limited => {
            page.error = Some(p.signup_rate_limited.into());
            StatusCode::TOO_MANY_REQUESTS
        }
    };
    Ok((status, render(page)?).into_response())
}

/// `POST /api/v1/forms/{slug}/subscribe` with a JSON body, for custom forms and apps.
pub async fn signup_json(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    Extension(ip): Extension<ClientIp>,
    Json(input): Json<SignupInput>,
) -> AppResult<Response> {
    let (_, reply) = handle_signup(&state, &slug, &ip.0, &input).await?;
    Ok(match reply {
        Reply::Done(m) => Json(serde_json::json!({ "status": "ok", "message": m })).into_response(),
        Reply::Invalid(e) => return Err(AppError::Unprocessable(e)),
        Reply::Limited => {
            return Err(AppError::TooManyRequests(
                public_strings().signup_rate_limited.into(),
            ));
        }
    })
}

/// Looks up the subscriber a confirmation token names and checks it against their address.
async fn confirm_target(
    state: &AppState,
    token: &str,
) -> AppResult<Result<subscribers::Subscriber, &'static str>> {
    let p = public_strings();
    let Some(id) = links::confirm_token_id(token) else {
        return Ok(Err(p.link_invalid));
    };
    let Some(sub) = subscribers::get(&state.pool, id).await? else {
        return Ok(Err(p.link_invalid));
    };
    Ok(
        match links::check_confirm_token(&state.keys, token, &sub.email, state.clock.now()) {
            ConfirmCheck::Valid => Ok(sub),
            ConfirmCheck::Expired => Err(p.confirm_expired),
            ConfirmCheck::Invalid => Err(p.link_invalid),
        },
    )
}

pub async fn confirm_page(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> AppResult<Response> {
    let p = public_strings();
    match confirm_target(&state, &token).await? {
        Ok(sub) if sub.status == Status::Active => {
            Ok(render(MessagePage::plain(p.confirm_title, p.confirm_done))?.into_response())
        }
        Ok(sub) => {
            let page = MessagePage {
                action: Some(format!("/confirm/{token}")),
                email: sub.email,
                button: p.confirm_button,
                ..MessagePage::plain(p.confirm_title, p.confirm_intro)
            };
            Ok(render(page)?.into_response())
        }
        Err(msg) => Ok((
            StatusCode::NOT_FOUND,
            render(MessagePage::plain(p.confirm_title, msg))?,
        )
            .into_response()),
    }
}

pub async fn confirm_submit(
    State(state): State<AppState>,
    Path(token): Path<String>,
    Extension(ip): Extension<ClientIp>,
) -> AppResult<Response> {
    let p = public_strings();
    match confirm_target(&state, &token).await? {
        Ok(sub) => {
            let issued = links::confirm_token_expiry(&token).unwrap_or_default()
                - chrono::Duration::days(signup::CONFIRM_VALID_DAYS);
            if !subscribers::confirm(&state.pool, sub.id, state.clock.now(), &ip.0, issued).await?
                && sub.status != Status::Active
            {
                // They left after this link was sent: the old link does not bring them back.
                return Ok((
                    StatusCode::GONE,
                    render(MessagePage::plain(p.confirm_title, p.confirm_expired))?,
                )
                    .into_response());
            }
            Ok(render(MessagePage::plain(p.confirm_title, p.confirm_done))?.into_response())
        }
        Err(msg) => Ok((
            StatusCode::NOT_FOUND,
            render(MessagePage::plain(p.confirm_title, msg))?,
        )
            .into_response()),
    }
}

async fn subscriber_from_link(state: &AppState, token: &str) -> AppResult<subscribers::Subscriber> {
    let id = links::verify_subscriber_token(&state.keys, token).ok_or(AppError::NotFound)?;
    subscribers::get(&state.pool, id)
        .await?
        .ok_or(AppError::NotFound)
}

pub async fn unsubscribe_page(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> AppResult<Response> {
    let p = public_strings();
    let sub = subscriber_from_link(&state, &token).await?;
    let prefs = Some(format!("/p/{token}"));
    let page = if matches!(sub.status, Status::Active | Status::Unconfirmed) {
        MessagePage {
            action: Some(format!("/u/{token}")),
            question: Some(p.unsub_question),
            email: sub.email,
            button: p.unsub_button,
            secondary: prefs,
            secondary_label: p.prefs_link,
            ..MessagePage::plain(p.unsub_title, "")
        }
    } else {
        MessagePage::plain(p.unsub_title, p.unsub_already)
    };
    Ok(render(page)?.into_response())
}

/// The unsubscribe button, and RFC 8058 one-click (`List-Unsubscribe=One-Click` posted
/// by the mail client): no session, no CSRF token — the signed link is the authority.
pub async fn unsubscribe_submit(
    State(state): State<AppState>,
    Path(token): Path<String>,
    body: axum::body::Bytes,
) -> AppResult<Response> {
    let p = public_strings();
    let sub = subscriber_from_link(&state, &token).await?;
    let one_click = body.windows(26).any(|w| w == b"List-Unsubscribe=One-Click");
    let how = if one_click { "one-click" } else { "link" };
    subscribers::unsubscribe(&state.pool, sub.id, state.clock.now(), how).await?;
    Ok(render(MessagePage::plain(p.unsub_title, p.unsub_done))?.into_response())
}

#[derive(Template)]
#[template(path = "public/preferences.html")]
struct PreferencesPage {
    p: &'static PublicStrings,
    token: String,
    email: String,
    name: String,
    language: String,
    languages: [(&'static str, &'static str); 3],
    timezone: String,
    timezones: &'static [String],
    topics: Vec<(i64, String, bool)>,
    saved: bool,
    error: Option<String>,
}

const LANGUAGES: [(&str, &str); 3] = [("", "—"), ("ko", "한국어"), ("en", "English")];

async fn preferences(
    state: &AppState,
    token: String,
    saved: bool,
    error: Option<String>,
) -> AppResult<Html<String>> {
    let sub = subscriber_from_link(state, &token).await?;
    let topics = tags::topics_for(&state.pool, sub.id).await?;
    render(PreferencesPage {
        p: public_strings(),
        token,
        email: sub.email,
        name: sub.name,
        language: sub.language.unwrap_or_default(),
        languages: LANGUAGES,
        timezone: sub.timezone.unwrap_or_default(),
        timezones: subscribers::timezones(&state.pool).await?,
        topics,
        saved,
        error,
    })
}

pub async fn preferences_page(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> AppResult<Html<String>> {
    preferences(&state, token, false, None).await
}

pub async fn preferences_submit(
    State(state): State<AppState>,
    Path(token): Path<String>,
    form: super::FormPairs,
) -> AppResult<Response> {
    let sub = subscriber_from_link(&state, &token).await?;
    let get = |k: &str| form.get(k);
    let name = get("name");
    let language = get("language");
    if name.chars().count() > 200 || name.chars().any(char::is_control) {
        return Ok((
            StatusCode::UNPROCESSABLE_ENTITY,
            preferences(
                &state,
                token,
                false,
                Some("the name is too long or contains characters that are not allowed".into()),
            )
            .await?,
        )
            .into_response());
    }
    let language = LANGUAGES
        .iter()
        .find(|(code, _)| *code == language)
        .map(|(c, _)| *c)
        .ok_or_else(|| AppError::Unprocessable("choose a language from the list".into()))?;
    let timezone = get("timezone");
    let timezone = timezone.trim();
    if !timezone.is_empty()
        && !subscribers::timezones(&state.pool)
            .await?
            .iter()
            .any(|z| z == timezone)
    {
        let msg = public_strings().prefs_timezone_invalid.to_string();
        return Ok((
            StatusCode::UNPROCESSABLE_ENTITY,
            preferences(&state, token, false, Some(msg)).await?,
        )
            .into_response());
    }
    let chosen: Vec<i64> = form.all("topic").filter_map(|v| v.parse().ok()).collect();
    let now = state.clock.now();
    let mut tx = state.pool.begin().await?;
    sqlx::query(
        "UPDATE subscribers SET name = $2, language = NULLIF($3, ''), timezone = NULLIF($4, '') WHERE id = $1",
    )
    .bind(sub.id)
    .bind(&name)
    .bind(language)
    .bind(timezone)
    .execute(&mut *tx)
    .await?;
    // Topics: only tags marked as topics can be changed from here.
    sqlx::query(
        "UPDATE subscribers SET tag_ids = tag_ids_add(
             ARRAY(SELECT t FROM unnest(tag_ids) t WHERE t NOT IN (SELECT id FROM tags WHERE is_topic)),
             ARRAY(SELECT id FROM tags WHERE is_topic AND id = ANY($2)))
         WHERE id = $1",
    )
    .bind(sub.id)
    .bind(&chosen)
    .execute(&mut *tx)
    .await?;
    subscribers::record_event(
        &mut *tx,
        sub.id,
        "preferences_changed",
        now,
        serde_json::json!({ "topics": chosen, "language": language, "timezone": timezone }),
    )
    .await?;
    tx.commit().await?;
    Ok(preferences(&state, token, true, None)
        .await?
        .into_response())
}

/// POST from the preferences page: mails a one-hour export link to the address.
pub async fn export_request(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> AppResult<Response> {
    data_request(&state, &token, DataAction::Export).await
}

/// POST from the preferences page: mails a one-hour erasure link to the address.
pub async fn erase_request(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> AppResult<Response> {
    data_request(&state, &token, DataAction::Erase).await
}

async fn data_request(state: &AppState, token: &str, action: DataAction) -> AppResult<Response> {
    let sub = subscriber_from_link(state, token).await?;
    data_requests::request(
        &state.pool,
        &state.keys,
        &state.config.public_url,
        sub.id,
        action,
        state.clock.now(),
    )
    .await?;
    let p = public_strings();
    Ok(render(MessagePage::plain(data_title(action), p.data_link_sent))?.into_response())
}

fn data_title(action: DataAction) -> &'static str {
    let p = public_strings();
    match action {
        DataAction::Export => p.prefs_export,
        DataAction::Erase => p.prefs_erase_title,
    }
}

/// The subscriber behind a mailed data link, or the page to show instead.
async fn data_target(
    state: &AppState,
    token: &str,
    action: DataAction,
) -> AppResult<Result<i64, Response>> {
    let p = public_strings();
    let title = data_title(action);
    match data_requests::verify(&state.pool, &state.keys, token, action, state.clock.now()).await? {
        Ok(id) => Ok(Ok(id)),
        Err(check) => {
            let msg = if check == ConfirmCheck::Expired {
                p.data_link_expired
            } else {
                p.link_invalid
            };
            Ok(Err((
                StatusCode::NOT_FOUND,
                render(MessagePage::plain(title, msg))?,
            )
                .into_response()))
        }
    }
}

/// GET of the mailed export link: the JSON download (reading only, so a link scanner
/// fetching it changes nothing).
pub async fn export_download(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> AppResult<Response> {
    let id = match data_target(&state, &token, DataAction::Export).await? {
        Ok(id) => id,
        Err(page) => return Ok(page),
    };
    let data = subscribers::export(&state.pool, id).await?;
    Ok((
        [(
            header::CONTENT_DISPOSITION,
            "attachment; filename=\"my-data.json\"".to_string(),
        )],
        Json(data),
    )
        .into_response())
}

/// GET of the mailed erasure link: a confirm button (scanners never erase on GET).
pub async fn erase_page(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> AppResult<Response> {
    let p = public_strings();
    let id = match data_target(&state, &token, DataAction::Erase).await? {
        Ok(id) => id,
        Err(page) => return Ok(page),
    };
    let sub = subscribers::get(&state.pool, id)
        .await?
        .ok_or(AppError::NotFound)?;
    let page = MessagePage {
        action: Some(format!("/d/erase/{token}")),
        question: Some(p.erase_question),
        email: sub.email,
        button: p.prefs_erase_button,
        ..MessagePage::plain(p.prefs_erase_title, p.prefs_erase_intro)
    };
    Ok(render(page)?.into_response())
}

pub async fn erase_submit(
    State(state): State<AppState>,
    Path(token): Path<String>,
) -> AppResult<Response> {
    let p = public_strings();
    let id = match data_target(&state, &token, DataAction::Erase).await? {
        Ok(id) => id,
        Err(page) => return Ok(page),
    };
    subscribers::erase(&state.pool, id, state.clock.now()).await?;
    Ok(render(MessagePage::plain(p.prefs_erase_title, p.erased_done))?.into_response())
}
