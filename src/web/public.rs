//! The pages subscribers see: signup forms, confirmation, unsubscribe (a confirm page
//! on GET; only POST unsubscribes, so link scanners never do), RFC 8058 one-click,
//! preferences, self-service export and erasure. Every link carries a signed token.

use askama::Template;
use axum::{
    Extension, Form, Json,
    extract::{Path, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Deserialize;

use super::{
    AppState, ClientIp,
    i18n::{AcceptLanguage, Lang, PublicStrings, public_strings_for},
    pages::render,
};
use crate::{
    AppError, AppResult, Problem,
    audience::{
        data_requests,
        forms::{self, Form as SignupForm},
        links::{self, ConfirmCheck, DataAction},
        signup::{self, Signup, SignupContext, SignupError},
        subscribers::{self, Status, Subscriber},
        tags,
    },
    ratelimit,
};

/// The language of a page reached through a subscriber's own link: theirs if Loopline
/// has it, else what the browser asks for, else English.
fn lang_of(sub: &Subscriber, accept: Option<Lang>) -> Lang {
    Lang::pick([sub.language.as_deref().and_then(Lang::from_tag), accept])
}

#[derive(Template)]
#[template(path = "public/signup.html")]
struct SignupPage {
    p: &'static PublicStrings,
    form_name: String,
    slug: String,
    email: String,
    name: String,
    message: Option<&'static str>,
    error: Option<&'static str>,
    show_form: bool,
}

#[derive(Template)]
#[template(path = "public/message.html")]
struct MessagePage {
    p: &'static PublicStrings,
    title: &'static str,
    message: &'static str,
    action: Option<String>,
    /// The words before and after the address.
    question: Option<[&'static str; 2]>,
    email: String,
    button: &'static str,
    secondary: Option<String>,
    secondary_label: &'static str,
}

impl MessagePage {
    fn plain(p: &'static PublicStrings, title: &'static str, message: &'static str) -> Self {
        Self {
            p,
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

    fn respond(self, status: StatusCode) -> AppResult<Response> {
        Ok((status, render(self)?).into_response())
    }
}

/// The language a form was set to speak, if Loopline has it.
fn form_lang(form: &SignupForm) -> Option<Lang> {
    form.language.as_deref().and_then(Lang::from_tag)
}

async fn form_or_404(state: &AppState, slug: &str) -> AppResult<SignupForm> {
    forms::by_slug(&state.pool, slug)
        .await?
        .ok_or(AppError::NotFound)
}

pub async fn signup_page(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    AcceptLanguage(accept): AcceptLanguage,
) -> AppResult<Response> {
    let form = form_or_404(&state, &slug).await?;
    Ok(render(SignupPage {
        p: public_strings_for(Lang::pick([form_lang(&form), accept])),
        form_name: form.name,
        slug: form.slug,
        email: String::new(),
        name: String::new(),
        message: None,
        error: None,
        show_form: true,
    })?
    .into_response())
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

impl SignupInput {
    /// The language to answer in: the one the submission names, else the form's own,
    /// else the browser's, else English.
    fn lang(&self, form: &SignupForm, accept: Option<Lang>) -> Lang {
        Lang::pick([
            self.language.as_deref().and_then(Lang::from_tag),
            form_lang(form),
            accept,
        ])
    }
}

/// What the visitor is told. With double opt-in every outcome reads the same.
enum Reply {
    Done(&'static str),
    Invalid(SignupError),
    Limited,
}

async fn handle_signup(
    state: &AppState,
    slug: &str,
    ip: &str,
    input: &SignupInput,
    accept: Option<Lang>,
) -> AppResult<(SignupForm, Reply)> {
    let form = form_or_404(state, slug).await?;
    let p = public_strings_for(input.lang(&form, accept));
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
    // Without a language in the submission, the form's own, else the one the browser
    // asked for (the page was shown in it) is the subscriber's: their confirmation mail
    // and pages follow it.
    let language = input
        .language
        .as_deref()
        .or(form_lang(&form).map(Lang::code))
        .or(accept.map(Lang::code));
    let signup = match Signup::parse(&input.email, &input.name, language, ip) {
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
    AcceptLanguage(accept): AcceptLanguage,
    Form(input): Form<SignupInput>,
) -> AppResult<Response> {
    let (form, reply) = handle_signup(&state, &slug, &ip.0, &input, accept).await?;
    let p = public_strings_for(input.lang(&form, accept));
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
            page.error = Some(p.signup_error(&e));
            page.show_form = true;
            StatusCode::UNPROCESSABLE_ENTITY
        }
        Reply::Limited => {
            page.error = Some(p.signup_rate_limited);
            StatusCode::TOO_MANY_REQUESTS
        }
    };
    Ok((status, render(page)?).into_response())
}

/// `POST /api/v1/forms/{slug}/subscribe` with a JSON body, for custom forms and apps.
/// Messages are in the body's `language`, else the `Accept-Language` one, else English.
pub async fn signup_json(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    Extension(ip): Extension<ClientIp>,
    AcceptLanguage(accept): AcceptLanguage,
    Json(input): Json<SignupInput>,
) -> AppResult<Response> {
    let (form, reply) = handle_signup(&state, &slug, &ip.0, &input, accept).await?;
    let p = public_strings_for(input.lang(&form, accept));
    Ok(match reply {
        Reply::Done(m) => Json(serde_json::json!({ "status": "ok", "message": m })).into_response(),
        Reply::Invalid(e) => {
            return Err(AppError::Unprocessable(Problem::Said(
                p.signup_error(&e).into(),
            )));
        }
        Reply::Limited => {
            return Err(AppError::TooManyRequests(Problem::Said(
                p.signup_rate_limited.into(),
            )));
        }
    })
}

/// The subscriber a confirmation token was issued to, when its signature holds (valid
/// or expired). A forged token names nobody, so its page reveals nothing of anyone.
async fn confirm_target(
    state: &AppState,
    token: &str,
) -> AppResult<(Option<Subscriber>, ConfirmCheck)> {
    let Some(id) = links::confirm_token_id(token) else {
        return Ok((None, ConfirmCheck::Invalid));
    };
    let Some(sub) = subscribers::get(&state.pool, id).await? else {
        return Ok((None, ConfirmCheck::Invalid));
    };
    Ok(
        match links::check_confirm_token(&state.keys, token, &sub.email, state.clock.now()) {
            ConfirmCheck::Invalid => (None, ConfirmCheck::Invalid),
            check => (Some(sub), check),
        },
    )
}

/// The page for a confirmation link that does not work (any more).
fn confirm_problem(
    sub: Option<&Subscriber>,
    check: ConfirmCheck,
    accept: Option<Lang>,
) -> AppResult<Response> {
    let p = public_strings_for(sub.map_or(Lang::pick([accept]), |s| lang_of(s, accept)));
    let msg = if check == ConfirmCheck::Expired {
        p.confirm_expired
    } else {
        p.link_invalid
    };
    MessagePage::plain(p, p.confirm_title, msg).respond(StatusCode::NOT_FOUND)
}

pub async fn confirm_page(
    State(state): State<AppState>,
    Path(token): Path<String>,
    AcceptLanguage(accept): AcceptLanguage,
) -> AppResult<Response> {
    let (sub, check) = confirm_target(&state, &token).await?;
    let sub = match (sub, check) {
        (Some(sub), ConfirmCheck::Valid) => sub,
        (sub, check) => return confirm_problem(sub.as_ref(), check, accept),
    };
    let p = public_strings_for(lang_of(&sub, accept));
    if sub.status == Status::Active {
        return MessagePage::plain(p, p.confirm_title, p.confirm_done).respond(StatusCode::OK);
    }
    MessagePage {
        action: Some(format!("/confirm/{token}")),
        email: sub.email,
        button: p.confirm_button,
        ..MessagePage::plain(p, p.confirm_title, p.confirm_intro)
    }
    .respond(StatusCode::OK)
}

pub async fn confirm_submit(
    State(state): State<AppState>,
    Path(token): Path<String>,
    Extension(ip): Extension<ClientIp>,
    AcceptLanguage(accept): AcceptLanguage,
) -> AppResult<Response> {
    let (sub, check) = confirm_target(&state, &token).await?;
    let sub = match (sub, check) {
        (Some(sub), ConfirmCheck::Valid) => sub,
        (sub, check) => return confirm_problem(sub.as_ref(), check, accept),
    };
    let p = public_strings_for(lang_of(&sub, accept));
    let issued = links::confirm_token_expiry(&token).unwrap_or_default()
        - chrono::Duration::days(signup::CONFIRM_VALID_DAYS);
    if !subscribers::confirm(&state.pool, sub.id, state.clock.now(), &ip.0, issued).await?
        && sub.status != Status::Active
    {
        // They left after this link was sent: the old link does not bring them back.
        return MessagePage::plain(p, p.confirm_title, p.confirm_expired).respond(StatusCode::GONE);
    }
    MessagePage::plain(p, p.confirm_title, p.confirm_done).respond(StatusCode::OK)
}

/// The subscriber behind a signed link, or the 404 page (in the browser's language:
/// a link that does not verify names nobody) to answer with instead.
async fn subscriber_from_link(
    state: &AppState,
    token: &str,
    accept: Option<Lang>,
) -> AppResult<Result<Subscriber, Response>> {
    let sub = match links::verify_subscriber_token(&state.keys, token) {
        Some(id) => subscribers::get(&state.pool, id).await?,
        None => None,
    };
    Ok(match sub {
        Some(sub) => Ok(sub),
        None => {
            let p = public_strings_for(Lang::pick([accept]));
            Err(MessagePage::plain(p, p.unsub_title, p.link_invalid)
                .respond(StatusCode::NOT_FOUND)?)
        }
    })
}

pub async fn unsubscribe_page(
    State(state): State<AppState>,
    Path(token): Path<String>,
    AcceptLanguage(accept): AcceptLanguage,
) -> AppResult<Response> {
    let sub = match subscriber_from_link(&state, &token, accept).await? {
        Ok(sub) => sub,
        Err(page) => return Ok(page),
    };
    let p = public_strings_for(lang_of(&sub, accept));
    let page = if matches!(sub.status, Status::Active | Status::Unconfirmed) {
        MessagePage {
            action: Some(format!("/u/{token}")),
            question: Some(p.unsub_question),
            email: sub.email,
            button: p.unsub_button,
            secondary: Some(format!("/p/{token}")),
            secondary_label: p.prefs_link,
            ..MessagePage::plain(p, p.unsub_title, "")
        }
    } else {
        MessagePage::plain(p, p.unsub_title, p.unsub_already)
    };
    page.respond(StatusCode::OK)
}

/// The unsubscribe button, and RFC 8058 one-click (`List-Unsubscribe=One-Click` posted
/// by the mail client): no session, no CSRF token — the signed link is the authority.
pub async fn unsubscribe_submit(
    State(state): State<AppState>,
    Path(token): Path<String>,
    AcceptLanguage(accept): AcceptLanguage,
    body: axum::body::Bytes,
) -> AppResult<Response> {
    let sub = match subscriber_from_link(&state, &token, accept).await? {
        Ok(sub) => sub,
        Err(page) => return Ok(page),
    };
    let one_click = body.windows(26).any(|w| w == b"List-Unsubscribe=One-Click");
    let how = if one_click { "one-click" } else { "link" };
    subscribers::unsubscribe(&state.pool, sub.id, state.clock.now(), how).await?;
    let p = public_strings_for(lang_of(&sub, accept));
    MessagePage::plain(p, p.unsub_title, p.unsub_done).respond(StatusCode::OK)
}

#[derive(Template)]
#[template(path = "public/preferences.html")]
struct PreferencesPage {
    p: &'static PublicStrings,
    token: String,
    email: String,
    name: String,
    language: &'static str,
    languages: Vec<(&'static str, &'static str)>,
    timezone: String,
    timezones: &'static [String],
    topics: Vec<(i64, String, bool)>,
    saved: bool,
    error: Option<&'static str>,
}

/// A message on the preferences page, picked once the page's language is known.
type PrefsError = fn(&PublicStrings) -> &'static str;

/// The preferences page, in the subscriber's language as stored now (so a language
/// just saved is the one the answer is written in).
async fn preferences(
    state: &AppState,
    token: String,
    accept: Option<Lang>,
    saved: bool,
    error: Option<PrefsError>,
) -> AppResult<Response> {
    let sub = match subscriber_from_link(state, &token, accept).await? {
        Ok(sub) => sub,
        Err(page) => return Ok(page),
    };
    let p = public_strings_for(lang_of(&sub, accept));
    let topics = tags::topics_for(&state.pool, sub.id).await?;
    let languages = std::iter::once(("", p.prefs_language_auto))
        .chain(Lang::ALL.map(|l| (l.code(), l.native_name())))
        .collect();
    let page = PreferencesPage {
        p,
        token,
        email: sub.email,
        name: sub.name,
        language: sub
            .language
            .as_deref()
            .and_then(Lang::from_tag)
            .map_or("", Lang::code),
        languages,
        timezone: sub.timezone.unwrap_or_default(),
        timezones: subscribers::timezones(&state.pool).await?,
        topics,
        saved,
        error: error.map(|e| e(p)),
    };
    let status = if error.is_some() {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    Ok((status, render(page)?).into_response())
}

pub async fn preferences_page(
    State(state): State<AppState>,
    Path(token): Path<String>,
    AcceptLanguage(accept): AcceptLanguage,
) -> AppResult<Response> {
    preferences(&state, token, accept, false, None).await
}

pub async fn preferences_submit(
    State(state): State<AppState>,
    Path(token): Path<String>,
    AcceptLanguage(accept): AcceptLanguage,
    form: super::FormPairs,
) -> AppResult<Response> {
    let sub = match subscriber_from_link(&state, &token, accept).await? {
        Ok(sub) => sub,
        Err(page) => return Ok(page),
    };
    let get = |k: &str| form.get(k);
    let name = get("name");
    if name.chars().count() > 200 || name.chars().any(char::is_control) {
        return preferences(&state, token, accept, false, Some(|p| p.prefs_name_invalid)).await;
    }
    let language = get("language");
    let language = if language.is_empty() {
        ""
    } else if let Some(l) = Lang::ALL.into_iter().find(|l| l.code() == language) {
        l.code()
    } else {
        return preferences(
            &state,
            token,
            accept,
            false,
            Some(|p| p.prefs_language_invalid),
        )
        .await;
    };
    let timezone = get("timezone");
    let timezone = timezone.trim();
    if !timezone.is_empty()
        && !subscribers::timezones(&state.pool)
            .await?
            .iter()
            .any(|z| z == timezone)
    {
        return preferences(
            &state,
            token,
            accept,
            false,
            Some(|p| p.prefs_timezone_invalid),
        )
        .await;
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
    preferences(&state, token, accept, true, None).await
}

/// POST from the preferences page: mails a one-hour export link to the address.
pub async fn export_request(
    State(state): State<AppState>,
    Path(token): Path<String>,
    AcceptLanguage(accept): AcceptLanguage,
) -> AppResult<Response> {
    data_request(&state, &token, DataAction::Export, accept).await
}

/// POST from the preferences page: mails a one-hour erasure link to the address.
pub async fn erase_request(
    State(state): State<AppState>,
    Path(token): Path<String>,
    AcceptLanguage(accept): AcceptLanguage,
) -> AppResult<Response> {
    data_request(&state, &token, DataAction::Erase, accept).await
}

async fn data_request(
    state: &AppState,
    token: &str,
    action: DataAction,
    accept: Option<Lang>,
) -> AppResult<Response> {
    let sub = match subscriber_from_link(state, token, accept).await? {
        Ok(sub) => sub,
        Err(page) => return Ok(page),
    };
    data_requests::request(
        &state.pool,
        &state.keys,
        &state.config.public_url,
        sub.id,
        action,
        state.clock.now(),
    )
    .await?;
    let p = public_strings_for(lang_of(&sub, accept));
    MessagePage::plain(p, data_title(p, action), p.data_link_sent).respond(StatusCode::OK)
}

fn data_title(p: &PublicStrings, action: DataAction) -> &'static str {
    match action {
        DataAction::Export => p.prefs_export,
        DataAction::Erase => p.prefs_erase_title,
    }
}

/// The subscriber behind a mailed data link, or the page to show instead (in their
/// language if the link was signed for them, else in the browser's).
async fn data_target(
    state: &AppState,
    token: &str,
    action: DataAction,
    accept: Option<Lang>,
) -> AppResult<Result<Subscriber, Response>> {
    let check =
        data_requests::verify(&state.pool, &state.keys, token, action, state.clock.now()).await?;
    let id = match check {
        Ok(id) => Some(id),
        // Expired but signed for them: the page may speak their language.
        Err(ConfirmCheck::Expired) => links::confirm_token_id(token),
        Err(_) => None,
    };
    let sub = match id {
        Some(id) => subscribers::get(&state.pool, id).await?,
        None => None,
    };
    if let (Ok(_), Some(sub)) = (check, &sub) {
        return Ok(Ok(sub.clone()));
    }
    let p = public_strings_for(
        sub.as_ref()
            .map_or(Lang::pick([accept]), |s| lang_of(s, accept)),
    );
    let msg = if check == Err(ConfirmCheck::Expired) {
        p.data_link_expired
    } else {
        p.link_invalid
    };
    Ok(Err(
        MessagePage::plain(p, data_title(p, action), msg).respond(StatusCode::NOT_FOUND)?
    ))
}

/// GET of the mailed export link: the JSON download (reading only, so a link scanner
/// fetching it changes nothing).
pub async fn export_download(
    State(state): State<AppState>,
    Path(token): Path<String>,
    AcceptLanguage(accept): AcceptLanguage,
) -> AppResult<Response> {
    let sub = match data_target(&state, &token, DataAction::Export, accept).await? {
        Ok(sub) => sub,
        Err(page) => return Ok(page),
    };
    let data = subscribers::export(&state.pool, sub.id).await?;
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
    AcceptLanguage(accept): AcceptLanguage,
) -> AppResult<Response> {
    let sub = match data_target(&state, &token, DataAction::Erase, accept).await? {
        Ok(sub) => sub,
        Err(page) => return Ok(page),
    };
    let p = public_strings_for(lang_of(&sub, accept));
    MessagePage {
        action: Some(format!("/d/erase/{token}")),
        question: Some(p.erase_question),
        email: sub.email,
        button: p.prefs_erase_button,
        ..MessagePage::plain(p, p.prefs_erase_title, p.prefs_erase_intro)
    }
    .respond(StatusCode::OK)
}

pub async fn erase_submit(
    State(state): State<AppState>,
    Path(token): Path<String>,
    AcceptLanguage(accept): AcceptLanguage,
) -> AppResult<Response> {
    let sub = match data_target(&state, &token, DataAction::Erase, accept).await? {
        Ok(sub) => sub,
        Err(page) => return Ok(page),
    };
    // The language is read before erasure takes it with the rest.
    let p = public_strings_for(lang_of(&sub, accept));
    subscribers::erase(&state.pool, sub.id, state.clock.now()).await?;
    MessagePage::plain(p, p.prefs_erase_title, p.erased_done).respond(StatusCode::OK)
}
