//! Dashboard pages: one askama struct per page, all sharing [`Chrome`].

use askama::Template;
use axum::{
    Extension, Form,
    extract::{Path, Query, State},
    http::StatusCode,
    response::{Html, IntoResponse, Redirect, Response},
};
use serde::Deserialize;

use super::{
    AppState,
    i18n::{Lang, Strings, strings_for},
};
use crate::{
    AppError, AppResult, Problem,
    accounts::{self, NewPassword, Role, Session, User},
    address::EmailAddress,
    jobs::{self, JobRow, JobStats},
};

pub fn render(page: impl Template) -> AppResult<Html<String>> {
    Ok(Html(page.render()?))
}

/// The frame around every signed-in page: navigation, user, CSRF token, notice.
pub struct Chrome {
    pub t: &'static Strings,
    pub email: String,
    pub role_label: &'static str,
    pub is_owner: bool,
    pub can_edit: bool,
    pub csrf: String,
    pub active: &'static str,
    pub notice: Option<&'static str>,
    pub asset_v: &'static str,
    pub htmx: &'static str,
}

impl Chrome {
    pub fn new(
        state: &AppState,
        session: &Session,
        active: &'static str,
        notice: Option<&str>,
    ) -> Self {
        // The guard has already put the browser's language in place of a missing choice.
        let t = strings_for(Lang::pick([session
            .user
            .language
            .as_deref()
            .and_then(Lang::from_tag)]));
        Self {
            t,
            email: session.user.email.clone(),
            role_label: t.role_label(session.user.role),
            is_owner: session.user.role >= Role::Owner,
            can_edit: session.user.role >= Role::Editor,
            csrf: state.session_csrf(&session.token),
            active,
            notice: notice.and_then(|n| t.notice(n)),
            asset_v: super::assets::version(),
            htmx: super::assets::HTMX,
        }
    }

    /// Navigation entries: (key, href, label, built yet).
    pub fn nav(&self) -> [(&'static str, &'static str, &'static str, bool); 8] {
        let t = self.t;
        [
            ("dashboard", "/", t.nav_dashboard, true),
            ("calendar", "/calendar", t.nav_calendar, false),
            ("audience", "/audience", t.nav_audience, true),
            ("campaigns", "/campaigns", t.nav_campaigns, false),
            ("automations", "/automations", t.nav_automations, false),
            ("insights", "/insights", t.nav_insights, false),
            ("outbox", "/outbox", t.nav_outbox, true),
            ("settings", "/settings", t.nav_settings, true),
        ]
    }
}

#[derive(Deserialize, Default)]
pub struct NoticeQuery {
    notice: Option<String>,
}

impl NoticeQuery {
    pub fn notice(&self) -> Option<&str> {
        self.notice.as_deref()
    }
}

#[derive(Template)]
#[template(path = "dashboard.html")]
struct DashboardPage {
    chrome: Chrome,
    jobs: JobStats,
    users: i64,
}

pub async fn dashboard(
    State(state): State<AppState>,
    Extension(s): Extension<Session>,
    Query(q): Query<NoticeQuery>,
) -> AppResult<Html<String>> {
    let jobs = jobs::stats(&state.pool).await?;
    let users = accounts::user_count(&state.pool).await?;
    render(DashboardPage {
        chrome: Chrome::new(&state, &s, "dashboard", q.notice.as_deref()),
        jobs,
        users,
    })
}

/// Areas that later releases fill in; the page says what is coming.
#[derive(Template)]
#[template(path = "area.html")]
struct AreaPage {
    chrome: Chrome,
    title: &'static str,
    description: &'static str,
}

fn area(
    state: &AppState,
    s: &Session,
    key: &'static str,
    pick: fn(&Strings) -> (&'static str, &'static str),
) -> AppResult<Html<String>> {
    let chrome = Chrome::new(state, s, key, None);
    let (title, description) = pick(chrome.t);
    render(AreaPage {
        chrome,
        title,
        description,
    })
}

pub async fn calendar(
    State(state): State<AppState>,
    Extension(s): Extension<Session>,
) -> AppResult<Html<String>> {
    area(&state, &s, "calendar", |t| {
        (t.nav_calendar, t.area_calendar)
    })
}
pub async fn campaigns(
    State(state): State<AppState>,
    Extension(s): Extension<Session>,
) -> AppResult<Html<String>> {
    area(&state, &s, "campaigns", |t| {
        (t.nav_campaigns, t.area_campaigns)
    })
}
pub async fn automations(
    State(state): State<AppState>,
    Extension(s): Extension<Session>,
) -> AppResult<Html<String>> {
    area(&state, &s, "automations", |t| {
        (t.nav_automations, t.area_automations)
    })
}
pub async fn insights(
    State(state): State<AppState>,
    Extension(s): Extension<Session>,
) -> AppResult<Html<String>> {
    area(&state, &s, "insights", |t| {
        (t.nav_insights, t.area_insights)
    })
}

#[derive(Template)]
#[template(path = "settings/index.html")]
struct SettingsPage {
    chrome: Chrome,
}

pub async fn settings(
    State(state): State<AppState>,
    Extension(s): Extension<Session>,
) -> AppResult<Html<String>> {
    render(SettingsPage {
        chrome: Chrome::new(&state, &s, "settings", None),
    })
}

#[derive(Template)]
#[template(path = "settings/account.html")]
struct AccountPage {
    chrome: Chrome,
    errors: Vec<Problem>,
    /// (code, name in itself) for the language picker.
    languages: [(&'static str, &'static str); 2],
}

impl AccountPage {
    fn new(chrome: Chrome, errors: Vec<Problem>) -> Self {
        Self {
            chrome,
            errors,
            languages: Lang::ALL.map(|l| (l.code(), l.native_name())),
        }
    }
}

pub async fn account(
    State(state): State<AppState>,
    Extension(s): Extension<Session>,
    Query(q): Query<NoticeQuery>,
) -> AppResult<Html<String>> {
    render(AccountPage::new(
        Chrome::new(&state, &s, "settings", q.notice.as_deref()),
        vec![],
    ))
}

#[derive(Deserialize)]
pub struct LanguageForm {
    #[serde(default)]
    language: String,
}

/// The dashboard language a user chooses for themselves; the next page speaks it.
pub async fn set_language(
    State(state): State<AppState>,
    Extension(s): Extension<Session>,
    Form(f): Form<LanguageForm>,
) -> AppResult<Redirect> {
    let lang = Lang::ALL
        .into_iter()
        .find(|l| l.code() == f.language.trim())
        .ok_or(AppError::Unprocessable(Problem::ChooseLanguage))?;
    accounts::set_language(&state.pool, s.user.id, Some(lang.code())).await?;
    Ok(Redirect::to("/settings/account?notice=language-saved"))
}

#[derive(Deserialize)]
pub struct PasswordForm {
    #[serde(default)]
    current_password: String,
    #[serde(default)]
    new_password: String,
    #[serde(default)]
    new_password_confirm: String,
}

pub async fn change_password(
    State(state): State<AppState>,
    Extension(s): Extension<Session>,
    Form(f): Form<PasswordForm>,
) -> AppResult<Response> {
    let result = match NewPassword::parse(f.new_password, Some(&f.new_password_confirm)) {
        Ok(new) => {
            accounts::change_password(&state.pool, s.user.id, f.current_password, new, &s.token)
                .await
        }
        Err(e) => Err(AppError::Unprocessable(Problem::Password(e))),
    };
    match result {
        Ok(()) => Ok(Redirect::to("/settings/account?notice=password-changed").into_response()),
        Err(AppError::Unprocessable(msg)) => {
            let page = render(AccountPage::new(
                Chrome::new(&state, &s, "settings", None),
                vec![msg],
            ))?;
            Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response())
        }
        Err(e) => Err(e),
    }
}

#[derive(Template)]
#[template(path = "settings/jobs.html")]
struct JobsPage {
    chrome: Chrome,
    stats: JobStats,
    jobs: Vec<JobRow>,
}

pub async fn jobs(
    State(state): State<AppState>,
    Extension(s): Extension<Session>,
    Query(q): Query<NoticeQuery>,
) -> AppResult<Html<String>> {
    let stats = jobs::stats(&state.pool).await?;
    let jobs = jobs::recent_unfinished(&state.pool, 100).await?;
    render(JobsPage {
        chrome: Chrome::new(&state, &s, "settings", q.notice.as_deref()),
        stats,
        jobs,
    })
}

pub async fn retry_job(State(state): State<AppState>, Path(id): Path<i64>) -> AppResult<Redirect> {
    if !jobs::retry_dead(&state.pool, id, state.clock.now()).await? {
        return Err(AppError::Conflict(Problem::JobNotFailed));
    }
    Ok(Redirect::to("/settings/jobs?notice=job-retried"))
}

#[derive(Template)]
#[template(path = "settings/users.html")]
struct UsersPage {
    chrome: Chrome,
    me: i64,
    users: Vec<User>,
    roles: [(&'static str, &'static str); 3],
    email: String,
    errors: Vec<Problem>,
}

fn role_options(t: &Strings) -> [(&'static str, &'static str); 3] {
    Role::ALL.map(|r| (r.as_str(), t.role_label(r)))
}

async fn users_page(
    state: &AppState,
    s: &Session,
    notice: Option<&str>,
    email: String,
    errors: Vec<Problem>,
) -> AppResult<Html<String>> {
    let users = accounts::list_users(&state.pool).await?;
    let chrome = Chrome::new(state, s, "settings", notice);
    let roles = role_options(chrome.t);
    render(UsersPage {
        chrome,
        me: s.user.id,
        users,
        roles,
        email,
        errors,
    })
}

pub async fn users(
    State(state): State<AppState>,
    Extension(s): Extension<Session>,
    Query(q): Query<NoticeQuery>,
) -> AppResult<Html<String>> {
    users_page(&state, &s, q.notice.as_deref(), String::new(), vec![]).await
}

#[derive(Deserialize)]
pub struct NewUserForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    role: String,
}

pub async fn create_user(
    State(state): State<AppState>,
    Extension(s): Extension<Session>,
    Form(f): Form<NewUserForm>,
) -> AppResult<Response> {
    let email = EmailAddress::parse(&f.email).map_err(Problem::Address);
    let password = NewPassword::parse(f.password, None).map_err(Problem::Password);
    let role = Role::parse(&f.role).ok_or(Problem::ChooseRole);
    let errors = match (email, password, role) {
        (Ok(e), Ok(p), Ok(r)) => match accounts::create_user(&state.pool, &e, p, r).await {
            Ok(_) => {
                return Ok(Redirect::to("/settings/users?notice=user-created").into_response());
            }
            Err(AppError::Unprocessable(p) | AppError::Conflict(p)) => vec![p],
            Err(e) => return Err(e),
        },
        (e, p, r) => [e.err(), p.err(), r.err()].into_iter().flatten().collect(),
    };
    let page = users_page(&state, &s, None, f.email, errors).await?;
    Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response())
}

#[derive(Deserialize)]
pub struct RoleForm {
    #[serde(default)]
    role: String,
}

pub async fn set_role(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    Form(f): Form<RoleForm>,
) -> AppResult<Redirect> {
    let role = Role::parse(&f.role).ok_or(AppError::Unprocessable(Problem::ChooseRole))?;
    accounts::set_role(&state.pool, id, role).await?;
    Ok(Redirect::to("/settings/users?notice=role-changed"))
}

pub async fn delete_user(
    State(state): State<AppState>,
    Extension(s): Extension<Session>,
    Path(id): Path<i64>,
) -> AppResult<Redirect> {
    if id == s.user.id {
        return Err(AppError::Conflict(Problem::CannotRemoveSelf));
    }
    accounts::delete_user(&state.pool, id).await?;
    Ok(Redirect::to("/settings/users?notice=user-deleted"))
}
