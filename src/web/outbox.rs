//! The Outbox: every message with its status and the server's reply; captured mail
//! (no SMTP configured) shown as it would arrive; write a message, preview it at desktop
//! and mobile widths, send it as a test to any address.

use askama::Template;
use axum::{
    Extension,
    extract::{Path, Query, State},
    http::header,
    response::{Html, IntoResponse, Redirect, Response},
};
use serde::Deserialize;
use serde_json::json;

use super::{
    AppState, FormPairs,
    pages::{Chrome, NoticeQuery, render},
};
use crate::{
    AppError, AppResult, Problem,
    accounts::Session,
    address::EmailAddress,
    delivery::{
        outbox::{self, MessageRow, NewBody, NewMessage},
        render::{self, BodyFormat, Draft},
    },
};

const PAGE: i64 = 50;

/// What the author typed, kept on the page when something is wrong.
#[derive(Default, Clone)]
pub struct DraftInput {
    pub to: String,
    pub subject: String,
    pub preheader: String,
    pub body: String,
    pub html: bool,
}

impl DraftInput {
    fn from_form(f: &FormPairs) -> Self {
        Self {
            to: f.get("to"),
            subject: f.get("subject"),
            preheader: f.get("preheader"),
            body: f.all("body").next().unwrap_or_default().to_string(),
            html: f.get("format") == "html",
        }
    }

    fn draft(&self) -> Draft {
        Draft {
            subject: self.subject.clone(),
            preheader: self.preheader.clone(),
            body: self.body.clone(),
            format: if self.html {
                BodyFormat::Html
            } else {
                BodyFormat::Markdown
            },
        }
    }
}

/// A rendered preview with sample merge data.
pub struct Preview {
    pub subject: String,
    pub html: String,
    pub text: String,
}

#[derive(Template)]
#[template(path = "outbox/index.html")]
struct OutboxPage {
    chrome: Chrome,
    capture: bool,
    counts: Vec<(String, i64)>,
    messages: Vec<MessageRow>,
    older: Option<i64>,
    draft: DraftInput,
    errors: Vec<Problem>,
    preview: Option<Preview>,
    /// Names this rendering of the form: sending it twice (a double click, a resubmit
    /// after going back) queues one test message.
    send_key: uuid::Uuid,
}

#[derive(Deserialize, Default)]
pub struct ListQuery {
    before: Option<i64>,
    #[serde(flatten)]
    notice: NoticeQuery,
}

async fn page(
    state: &AppState,
    s: &Session,
    before: Option<i64>,
    notice: Option<&str>,
    draft: DraftInput,
    errors: Vec<Problem>,
    preview: Option<Preview>,
) -> AppResult<Html<String>> {
    let messages = outbox::recent(&state.pool, before, PAGE, state.clock.now()).await?;
    let older = (messages.len() as i64 == PAGE)
        .then(|| messages.last().map(|m| m.id))
        .flatten();
    render(OutboxPage {
        chrome: Chrome::new(state, s, "outbox", notice),
        capture: state.config.smtp.is_none(),
        counts: outbox::counts(&state.pool, state.clock.now()).await?,
        messages,
        older,
        draft,
        errors,
        preview,
        send_key: uuid::Uuid::new_v4(),
    })
}

pub async fn index(
    State(state): State<AppState>,
    Extension(s): Extension<Session>,
    Query(q): Query<ListQuery>,
) -> AppResult<Html<String>> {
    // A sample draft in the user's own language.
    let t = Chrome::new(&state, &s, "outbox", None).t;
    let draft = DraftInput {
        to: s.user.email.as_str().to_string(),
        subject: t.out_sample_subject.into(),
        body: t.out_sample_body.into(),
        ..Default::default()
    };
    page(&state, &s, q.before, q.notice.notice(), draft, vec![], None).await
}

/// Sample merge data for previews and tests: the signed-in user as the subscriber.
fn sample_data(s: &Session) -> serde_json::Value {
    json!({
        "subscriber": {
            "email": s.user.email.as_str(),
            "name": "홍길동",
            "first_name": "길동",
            "fields": {},
        },
        "unsubscribe_url": "#unsubscribe",
        "preferences_url": "#preferences",
    })
}

/// Preview, or queue a test message: `action=preview` only renders.
pub async fn submit(
    State(state): State<AppState>,
    Extension(s): Extension<Session>,
    form: FormPairs,
) -> AppResult<Response> {
    let input = DraftInput::from_form(&form);
    let draft = input.draft();
    if form.get("action") == "preview" {
        return match render::render(&draft, &sample_data(&s), &mut |_| None) {
            Ok(r) => {
                let preview = Preview {
                    subject: r.subject,
                    html: r.html,
                    text: r.text,
                };
                Ok(page(&state, &s, None, None, input, vec![], Some(preview))
                    .await?
                    .into_response())
            }
            Err(e) => Ok(page(
                &state,
                &s,
                None,
                None,
                input,
                vec![Problem::Template(e)],
                None,
            )
            .await?
            .into_response()),
        };
    }
    let mut errors = Vec::new();
    let to = match EmailAddress::parse(&input.to) {
        Ok(a) => Some(a),
        Err(e) => {
            errors.push(Problem::TestRecipient(e));
            None
        }
    };
    if input.subject.trim().is_empty() {
        errors.push(Problem::TestSubject);
    }
    if let Err(e) = render::check(&draft) {
        errors.push(Problem::Template(e));
    }
    let (Some(to), true) = (to, errors.is_empty()) else {
        return Ok(page(&state, &s, None, None, input, errors, None)
            .await?
            .into_response());
    };
    let now = state.clock.now();
    let mut tx = state.pool.begin().await?;
    let body_id = outbox::insert_body(
        &mut tx,
        &NewBody {
            purpose: "test".into(),
            draft,
            from_name: String::new(),
        },
    )
    .await?;
    // The form's key when it sent a well-formed one: the same form sent again queues
    // nothing more (and its body is rolled back with the transaction).
    let send_key =
        uuid::Uuid::parse_str(form.get("send_key").trim()).unwrap_or_else(|_| uuid::Uuid::new_v4());
    let queued = outbox::enqueue(
        &mut tx,
        &NewMessage {
            idempotency_key: format!("test:{send_key}"),
            marketing: false,
            body_id,
            subscriber_id: None,
            to_email: to.as_str().to_string(),
            to_name: String::new(),
            data: sample_data(&s),
            run_at: now,
        },
        now,
    )
    .await?;
    if queued.is_none() {
        // Rolled back: its body is not kept either.
        return Ok(Redirect::to("/outbox?notice=test-already-queued").into_response());
    }
    tx.commit().await?;
    Ok(Redirect::to("/outbox?notice=test-queued").into_response())
}

#[derive(Template)]
#[template(path = "outbox/message.html")]
struct MessagePage {
    chrome: Chrome,
    m: MessageRow,
    html: Option<String>,
    text: Option<String>,
}

pub async fn show(
    State(state): State<AppState>,
    Extension(s): Extension<Session>,
    Path(id): Path<i64>,
) -> AppResult<Html<String>> {
    let m = outbox::get(&state.pool, id, state.clock.now())
        .await?
        .ok_or(AppError::NotFound)?;
    let parts: Option<(String, String)> =
        sqlx::query_as("SELECT html, text FROM captured_mail WHERE message_id = $1")
            .bind(id)
            .fetch_optional(&state.pool)
            .await?;
    let (html, text) = parts.map_or((None, None), |(h, t)| (Some(h), Some(t)));
    render(MessagePage {
        chrome: Chrome::new(&state, &s, "outbox", None),
        m,
        html,
        text,
    })
}

pub async fn raw(State(state): State<AppState>, Path(id): Path<i64>) -> AppResult<Response> {
    let raw = outbox::captured(&state.pool, id)
        .await?
        .ok_or(AppError::NotFound)?;
    Ok((
        [
            (header::CONTENT_TYPE, "message/rfc822".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"message-{id}.eml\""),
            ),
        ],
        raw,
    )
        .into_response())
}
