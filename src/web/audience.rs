//! Audience pages of the dashboard: the subscriber list, profiles, signup forms and the
//! lifecycle thresholds.

use askama::Template;
use axum::{
    Extension, Form, Json,
    extract::{Path, Query, State},
    http::{StatusCode, header},
    response::{Html, IntoResponse, Redirect, Response},
};
use serde::Deserialize;
use sqlx::{Postgres, QueryBuilder};

use super::{
    AppState,
    i18n::{Lang, PublicStrings, public_strings_for},
    pages::{Chrome, render},
};
use crate::{
    AppError, AppResult, Problem,
    accounts::Session,
    audience::{
        forms::{self, NewForm},
        lifecycle::{Lifecycle, Stage},
        links,
        live_index::{ListFilter, fold_case},
        segments,
        subscribers::{self, Event, Status, Subscriber},
        tags::{self, TagName, TagRow},
    },
};

const PAGE_SIZE: i64 = 50;

#[derive(Deserialize, Default)]
pub struct ListQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    tag: String,
    #[serde(default)]
    stage: String,
    #[serde(default)]
    segment: String,
    /// Keyset pagination: show subscribers with an id below this.
    after: Option<i64>,
}

pub struct Row {
    pub id: i64,
    pub email: String,
    pub name: String,
    pub status: &'static str,
    pub stage: &'static str,
    pub created: String,
}

#[derive(Template)]
#[template(path = "audience/list.html")]
struct ListPage {
    chrome: Chrome,
    rows: Vec<Row>,
    q: String,
    status: String,
    tag: String,
    stage: String,
    segment: String,
    segments: Vec<(i64, String)>,
    statuses: [Status; 5],
    stages: [Stage; 4],
    tags: Vec<TagName>,
    next: Option<String>,
    total: i64,
}

/// Escapes LIKE wildcards so a search for `50%` means the text "50%".
fn like_pattern(q: &str) -> String {
    let escaped = fold_case(q)
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("%{escaped}%")
}

/// The list's filters, compiled into one page query.
struct Filters<'a> {
    q: &'a ListQuery,
    lifecycle: &'a Lifecycle,
    fields: &'a [crate::audience::fields::FieldDef],
    segment: Option<&'a segments::Condition>,
    /// The search text, trimmed, without NUL (PostgreSQL text cannot hold it).
    search: &'a str,
    now: chrono::DateTime<chrono::Utc>,
}

impl Filters<'_> {
    /// Newest first below `before`, at most `limit` rows. With `ids` (what the live index
    /// found), only those; without, the search is a `LIKE`.
    fn query(
        &self,
        ids: Option<&[i64]>,
        before: Option<i64>,
        limit: i64,
    ) -> QueryBuilder<Postgres> {
        let q = self.q;
        let mut qb: QueryBuilder<Postgres> = QueryBuilder::new("SELECT ");
        let columns: Vec<String> = subscribers::COLUMNS
            .split(',')
            .map(|c| format!("s.{}", c.trim()))
            .collect();
        qb.push(columns.join(", "));
        qb.push(" FROM subscribers s, (SELECT ");
        qb.push_bind(self.now);
        qb.push("::timestamptz AS now) p WHERE true");
        let search = self.search;
        match ids {
            Some(ids) => {
                qb.push(" AND s.id = ANY(");
                qb.push_bind(ids.to_vec());
                qb.push(")");
            }
            None if !search.is_empty() => {
                qb.push(" AND (lower(s.email) LIKE ");
                qb.push_bind(like_pattern(search));
                qb.push(" OR lower(s.name) LIKE ");
                qb.push_bind(like_pattern(search));
                qb.push(")");
            }
            None => {}
        }
        if let Some(status) = Status::parse(&q.status) {
            qb.push(" AND s.status = ");
            qb.push_bind(status);
        }
        if let Ok(tag_id) = q.tag.parse::<i64>() {
            qb.push(" AND s.tag_ids @> ARRAY[");
            qb.push_bind(tag_id);
            qb.push("::bigint]");
        }
        if let Some(stage) = Stage::parse(&q.stage) {
            qb.push(" AND ");
            qb.push(self.lifecycle.sql_condition(stage, "p.now"));
        }
        if let Some(cond) = self.segment {
            let ctx = segments::Context {
                fields: self.fields,
                lifecycle: self.lifecycle,
            };
            qb.push(" AND ");
            segments::push_condition(&mut qb, cond, &ctx);
        }
        if let Some(before) = before {
            qb.push(" AND s.id < ");
            qb.push_bind(before);
        }
        qb.push(" ORDER BY s.id DESC LIMIT ");
        qb.push_bind(limit);
        qb
    }
}

/// At most how many ids the live index hands to one page query at a time: a page's worth
/// first (SQL rejects only what changed since, or fails the stage filter), then more.
const INDEX_CHUNK: usize = 2000;

pub async fn list(
    State(state): State<AppState>,
    Extension(s): Extension<Session>,
    Query(q): Query<ListQuery>,
) -> AppResult<Html<String>> {
    let lifecycle = Lifecycle::load(&state.pool).await?;
    let now = state.clock.now();
    let fields = segments::field_defs(&state.pool).await?;
    let segment = match q.segment.parse::<i64>() {
        Ok(segment_id) => {
            let seg = segments::get(&state.pool, segment_id)
                .await?
                .ok_or(AppError::NotFound)?;
            let ctx = segments::Context {
                fields: &fields,
                lifecycle: &lifecycle,
            };
            seg.definition
                .0
                .validate(&ctx)
                .map_err(|e| AppError::Unprocessable(Problem::Segment(e)))?;
            Some(seg.definition.0)
        }
        Err(_) => None,
    };
    let search = q.q.trim().replace('\0', "");
    let search = search.as_str();
    let filters = Filters {
        q: &q,
        lifecycle: &lifecycle,
        fields: &fields,
        segment: segment.as_ref(),
        search,
        now,
    };
    // The live index answers the search and the status, tag and segment filters (a plain
    // list is the primary key's order). It declines when a filter it does not hold (the
    // stage, a segment on engagement) would have SQL reject most of many matches.
    let filter = ListFilter {
        needle: search,
        status: Status::parse(&q.status),
        tag: q.tag.parse().ok(),
        segment: segment.as_ref(),
    };
    let stage = Stage::parse(&q.stage);
    let mut use_index = !search.is_empty()
        || filter.status.is_some()
        || filter.tag.is_some()
        || filter.segment.is_some()
        || stage.is_some();
    let mut found: Vec<Subscriber> = Vec::new();
    let mut before = q.after;
    let mut chunk = PAGE_SIZE as usize + 1;
    // Newest first, a chunk of ids at a time, every filter checked in SQL too (the stage,
    // and anything changed since); SQL takes over if the index stops answering.
    while use_index {
        let Some(ids) = state
            .live_index
            .page(
                &state.pool,
                &filter,
                &fields,
                before,
                chunk,
                stage.is_some(),
            )
            .await
        else {
            use_index = false;
            break;
        };
        let Some(&last) = ids.last() else {
            break;
        };
        let mut qb = filters.query(Some(&ids), None, PAGE_SIZE + 1 - found.len() as i64);
        found.extend(
            qb.build_query_as::<Subscriber>()
                .fetch_all(&state.pool)
                .await?,
        );
        before = Some(last);
        if found.len() as i64 > PAGE_SIZE || ids.len() < chunk {
            break;
        }
        chunk = (chunk * 4).min(INDEX_CHUNK);
    }
    if !use_index {
        let mut qb = filters.query(None, before, PAGE_SIZE + 1 - found.len() as i64);
        found.extend(
            qb.build_query_as::<Subscriber>()
                .fetch_all(&state.pool)
                .await?,
        );
    }
    let more = found.len() as i64 > PAGE_SIZE;
    found.truncate(PAGE_SIZE as usize);
    let next = if more {
        found.last().map(|last| {
            serde_urlencoded::to_string([
                ("q", q.q.as_str()),
                ("status", &q.status),
                ("tag", &q.tag),
                ("stage", &q.stage),
                ("segment", &q.segment),
                ("after", &last.id.to_string()),
            ])
            .unwrap_or_default()
        })
    } else {
        None
    };
    let rows = found
        .into_iter()
        .map(|sub| Row {
            stage: sub.stage(&lifecycle, now).as_str(),
            status: sub.status.as_str(),
            created: sub.created_at.format("%Y-%m-%d").to_string(),
            id: sub.id,
            email: sub.email,
            name: sub.name,
        })
        .collect();
    let total = subscribers::approximate_count(&state.pool).await?;
    render(ListPage {
        chrome: Chrome::new(&state, &s, "audience", None),
        rows,
        q: q.q,
        status: q.status,
        tag: q.tag,
        stage: q.stage,
        segment: q.segment,
        segments: segments::list(&state.pool)
            .await?
            .into_iter()
            .map(|s| (s.id, s.name))
            .collect(),
        statuses: Status::ALL,
        stages: Stage::ALL,
        tags: tags::names(&state.pool).await?,
        next,
        total,
    })
}

#[derive(Template)]
#[template(path = "audience/profile.html")]
struct ProfilePage {
    chrome: Chrome,
    sub: Subscriber,
    stage: &'static str,
    tags: Vec<String>,
    fields: Vec<(String, String)>,
    events: Vec<Event>,
    form_name: Option<String>,
    unsubscribe_url: String,
    preferences_url: String,
}

#[derive(Deserialize, Default)]
pub struct NoticeQuery {
    notice: Option<String>,
}

pub async fn profile(
    State(state): State<AppState>,
    Extension(s): Extension<Session>,
    Path(id): Path<i64>,
    Query(n): Query<NoticeQuery>,
) -> AppResult<Html<String>> {
    let sub = subscribers::get(&state.pool, id)
        .await?
        .ok_or(AppError::NotFound)?;
    let lifecycle = Lifecycle::load(&state.pool).await?;
    let stage = sub.stage(&lifecycle, state.clock.now()).as_str();
    let tags = subscribers::tag_names(&state.pool, id).await?;
    let events = subscribers::timeline(&state.pool, id, 200).await?;
    let fields = sub
        .fields
        .0
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string()),
            )
        })
        .collect();
    let form_name = match sub.consent_form_id {
        Some(fid) => forms::by_id(&state.pool, fid).await?.map(|f| f.name),
        None => None,
    };
    let token = links::subscriber_token(&state.keys, id);
    let base = &state.config.public_url;
    render(ProfilePage {
        chrome: Chrome::new(&state, &s, "audience", n.notice.as_deref()),
        stage,
        tags,
        fields,
        events,
        form_name,
        unsubscribe_url: format!("{base}/u/{token}"),
        preferences_url: format!("{base}/p/{token}"),
        sub,
    })
}

pub async fn unsubscribe(
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> AppResult<Redirect> {
    subscribers::get(&state.pool, id)
        .await?
        .ok_or(AppError::NotFound)?;
    subscribers::unsubscribe(&state.pool, id, state.clock.now(), "dashboard").await?;
    Ok(Redirect::to(&format!(
        "/audience/subscribers/{id}?notice=unsubscribed"
    )))
}

pub async fn export(State(state): State<AppState>, Path(id): Path<i64>) -> AppResult<Response> {
    let data = subscribers::export(&state.pool, id).await?;
    let disposition = format!("attachment; filename=\"subscriber-{id}.json\"");
    Ok(([(header::CONTENT_DISPOSITION, disposition)], Json(data)).into_response())
}

pub async fn erase(State(state): State<AppState>, Path(id): Path<i64>) -> AppResult<Redirect> {
    subscribers::erase(&state.pool, id, state.clock.now()).await?;
    Ok(Redirect::to("/audience?notice=erased"))
}

#[derive(Template)]
#[template(path = "audience/forms.html")]
struct FormsPage {
    chrome: Chrome,
    forms: Vec<(forms::Form, String)>,
    public_url: String,
    errors: Vec<Problem>,
    /// The languages a form can speak: (code, name in itself).
    languages: Vec<(&'static str, &'static str)>,
}

async fn forms_page(
    state: &AppState,
    s: &Session,
    notice: Option<&str>,
    errors: Vec<Problem>,
) -> AppResult<Html<String>> {
    let all = forms::list(&state.pool).await?;
    let public_url = state.config.public_url.clone();
    let chrome = Chrome::new(state, s, "audience", notice);
    let with_snippets = all
        .into_iter()
        .map(|f| {
            // The form's own language, else the dashboard user's.
            let lang = f
                .language
                .as_deref()
                .and_then(Lang::from_tag)
                .unwrap_or(chrome.t.lang);
            let snippet = embed_snippet(&public_url, &f.slug, public_strings_for(lang));
            (f, snippet)
        })
        .collect();
    render(FormsPage {
        chrome,
        forms: with_snippets,
        public_url,
        errors,
        languages: Lang::ALL
            .into_iter()
            .map(|l| (l.code(), l.native_name()))
            .collect(),
    })
}

/// The HTML a site owner pastes into their page: a plain form posting to the hosted
/// endpoint, with the honeypot field hidden inline. Its words and its `language` field
/// are the form's language (else the dashboard user's), so signups through it get
/// pages and mail in that language.
pub fn embed_snippet(public_url: &str, slug: &str, p: &PublicStrings) -> String {
    // Only a validated slug, the configured URL and our own fixed strings go in (none
    // holds a quote or `<`); nothing from a request.
    let (lang, name, submit, honeypot) = (
        p.lang.code(),
        p.name_optional,
        p.signup_submit,
        p.honeypot_label,
    );
    format!(
        "<form method=\"post\" action=\"{public_url}/f/{slug}\" lang=\"{lang}\">\n  <input type=\"hidden\" name=\"language\" value=\"{lang}\">\n  <input type=\"text\" inputmode=\"email\" name=\"email\" placeholder=\"you@example.com\" required>\n  <input type=\"text\" name=\"name\" placeholder=\"{name}\">\n  <div style=\"position:absolute;left:-10000px\" aria-hidden=\"true\"><label>{honeypot} <input type=\"text\" name=\"website\" tabindex=\"-1\" autocomplete=\"off\"></label></div>\n  <button type=\"submit\">{submit}</button>\n</form>"
    )
}

pub async fn forms(
    State(state): State<AppState>,
    Extension(s): Extension<Session>,
    Query(q): Query<super::pages::NoticeQuery>,
) -> AppResult<Html<String>> {
    forms_page(&state, &s, q.notice(), vec![]).await
}

#[derive(Deserialize)]
pub struct NewFormInput {
    #[serde(default)]
    name: String,
    #[serde(default)]
    slug: String,
    #[serde(default)]
    single_opt_in: Option<String>,
    #[serde(default)]
    tags: String,
    /// A language code, or empty for "the visitor's browser decides".
    #[serde(default)]
    language: String,
}

/// A form language from the editor: empty is none; anything else must be one Loopline
/// has pages in.
fn form_language(v: &str) -> Result<Option<&'static str>, Problem> {
    if v.trim().is_empty() {
        return Ok(None);
    }
    Lang::ALL
        .into_iter()
        .find(|l| l.code() == v.trim())
        .map(|l| Some(l.code()))
        .ok_or(Problem::ChooseLanguage)
}

pub async fn create_form(
    State(state): State<AppState>,
    Extension(s): Extension<Session>,
    Form(f): Form<NewFormInput>,
) -> AppResult<Response> {
    let parsed =
        NewForm::parse(&f.name, &f.slug, f.single_opt_in.is_none(), &f.tags).and_then(|new| {
            Ok(NewForm {
                language: form_language(&f.language)?.map(str::to_string),
                ..new
            })
        });
    let result = match parsed {
        Ok(new) => forms::create(&state.pool, &new).await.map(|_| ()),
        Err(e) => Err(AppError::Unprocessable(e)),
    };
    match result {
        Ok(()) => Ok(Redirect::to("/audience/forms").into_response()),
        Err(AppError::Unprocessable(m) | AppError::Conflict(m)) => Ok((
            StatusCode::UNPROCESSABLE_ENTITY,
            forms_page(&state, &s, None, vec![m]).await?,
        )
            .into_response()),
        Err(e) => Err(e),
    }
}

#[derive(Deserialize)]
pub struct FormLanguageInput {
    #[serde(default)]
    language: String,
}

/// Changes the language a form speaks (the hosted page, the snippet, the mail).
pub async fn set_form_language(
    State(state): State<AppState>,
    Extension(s): Extension<Session>,
    Path(id): Path<i64>,
    Form(f): Form<FormLanguageInput>,
) -> AppResult<Response> {
    let language = match form_language(&f.language) {
        Ok(l) => l,
        Err(e) => {
            return Ok((
                StatusCode::UNPROCESSABLE_ENTITY,
                forms_page(&state, &s, None, vec![e]).await?,
            )
                .into_response());
        }
    };
    if !forms::set_language(&state.pool, id, language).await? {
        return Err(AppError::NotFound);
    }
    Ok(Redirect::to("/audience/forms?notice=settings-saved").into_response())
}

#[derive(Template)]
#[template(path = "audience/settings.html")]
struct SettingsPage {
    chrome: Chrome,
    lifecycle: Lifecycle,
    errors: Vec<Problem>,
}

pub async fn settings(
    State(state): State<AppState>,
    Extension(s): Extension<Session>,
    Query(n): Query<NoticeQuery>,
) -> AppResult<Html<String>> {
    let lifecycle = Lifecycle::load(&state.pool).await?;
    render(SettingsPage {
        chrome: Chrome::new(&state, &s, "settings", n.notice.as_deref()),
        lifecycle,
        errors: vec![],
    })
}

#[derive(Deserialize)]
pub struct LifecycleInput {
    new_days: String,
    active_days: String,
    churn_days: String,
}

pub async fn save_settings(
    State(state): State<AppState>,
    Extension(s): Extension<Session>,
    Form(f): Form<LifecycleInput>,
) -> AppResult<Response> {
    let parse = |v: &str| {
        v.trim()
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=3650).contains(n))
    };
    let candidate = match (
        parse(&f.new_days),
        parse(&f.active_days),
        parse(&f.churn_days),
    ) {
        (Some(n), Some(a), Some(c)) => Lifecycle {
            new_days: n,
            active_days: a,
            churn_days: c,
        },
        _ => {
            let page = SettingsPage {
                chrome: Chrome::new(&state, &s, "settings", None),
                lifecycle: Lifecycle::load(&state.pool).await?,
                errors: vec![Problem::LifecycleRange],
            };
            return Ok((StatusCode::UNPROCESSABLE_ENTITY, render(page)?).into_response());
        }
    };
    if let Err(e) = candidate.validate() {
        let page = SettingsPage {
            chrome: Chrome::new(&state, &s, "settings", None),
            lifecycle: candidate,
            errors: vec![e],
        };
        return Ok((StatusCode::UNPROCESSABLE_ENTITY, render(page)?).into_response());
    }
    candidate.save(&state.pool).await?;
    Ok(Redirect::to("/settings/audience?notice=settings-saved").into_response())
}

#[derive(Template)]
#[template(path = "audience/fields.html")]
struct FieldsPage {
    chrome: Chrome,
    fields: Vec<crate::audience::fields::FieldDef>,
    tags: Vec<TagRow>,
    errors: Vec<Problem>,
}

async fn fields_page(
    state: &AppState,
    s: &Session,
    errors: Vec<Problem>,
) -> AppResult<Html<String>> {
    let fields = segments::field_defs(&state.pool).await?;
    let counts = state.live_index.tag_counts(&state.pool, &fields).await;
    render(FieldsPage {
        chrome: Chrome::new(state, s, "audience", None),
        tags: tags::list(&state.pool, counts.as_ref()).await?,
        fields,
        errors,
    })
}

/// Custom fields and tags: definitions, and which tags subscribers may pick as topics.
pub async fn fields(
    State(state): State<AppState>,
    Extension(s): Extension<Session>,
) -> AppResult<Html<String>> {
    fields_page(&state, &s, vec![]).await
}

#[derive(Deserialize)]
pub struct NewFieldInput {
    #[serde(default)]
    key: String,
    #[serde(default)]
    label: String,
    #[serde(default)]
    field_type: String,
    #[serde(default)]
    choices: String,
}

pub async fn create_field(
    State(state): State<AppState>,
    Extension(s): Extension<Session>,
    Form(f): Form<NewFieldInput>,
) -> AppResult<Response> {
    let result =
        match crate::audience::fields::NewField::parse(&f.key, &f.label, &f.field_type, &f.choices)
        {
            Ok(new) => crate::audience::fields::create(&state.pool, &new).await,
            Err(e) => Err(AppError::Unprocessable(e)),
        };
    match result {
        Ok(()) => Ok(Redirect::to("/audience/fields").into_response()),
        Err(AppError::Unprocessable(m) | AppError::Conflict(m)) => Ok((
            StatusCode::UNPROCESSABLE_ENTITY,
            fields_page(&state, &s, vec![m]).await?,
        )
            .into_response()),
        Err(e) => Err(e),
    }
}

pub async fn toggle_topic(
    State(state): State<AppState>,
    Path(id): Path<i64>,
) -> AppResult<Redirect> {
    let r = sqlx::query("UPDATE tags SET is_topic = NOT is_topic WHERE id = $1")
        .bind(id)
        .execute(&state.pool)
        .await?;
    if r.rows_affected() == 0 {
        return Err(AppError::NotFound);
    }
    Ok(Redirect::to("/audience/fields"))
}

/// Bulk actions from the list: on the ticked subscribers, or on a whole segment.
pub async fn bulk(State(state): State<AppState>, form: super::FormPairs) -> AppResult<Redirect> {
    use crate::audience::bulk::{self, Action, Bulk, Scope};
    let get = |k: &str| form.get(k);
    let action =
        Action::parse(&get("action")).ok_or(AppError::Unprocessable(Problem::ChooseAction))?;
    let scope = match get("scope").as_str() {
        "segment" => Scope::Segment(
            get("segment")
                .parse()
                .map_err(|_| AppError::Unprocessable(Problem::ChooseSegment))?,
        ),
        _ => Scope::Ids(form.all("id").filter_map(|v| v.parse().ok()).collect()),
    };
    let tag = Some(get("tag")).filter(|t| !t.is_empty());
    bulk::queue(&state.pool, &Bulk { action, tag, scope }, state.clock.now()).await?;
    Ok(Redirect::to("/settings/jobs?notice=bulk-queued"))
}
