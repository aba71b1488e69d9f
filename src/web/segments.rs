//! The segment builder: rows of conditions (no JavaScript needed), an advanced JSON
//! editor for nested groups, a live count (htmx re-posts the form on change), saving.

use askama::Template;
use axum::{
    Extension,
    extract::State,
    http::StatusCode,
    response::{Html, IntoResponse, Redirect, Response},
};

use super::{
    AppState, FormPairs,
    pages::{Chrome, render},
};
use crate::error::SegmentRowProblem as R;
use crate::{
    AppError, AppResult, Problem,
    accounts::Session,
    audience::{
        fields::FieldDef,
        lifecycle::Stage,
        segments::{self, Condition, FieldOp, Match},
        subscribers::Status,
        tags::{self, TagName},
    },
};

pub const ROWS: usize = 6;

#[derive(Default, Clone)]
pub struct RowInput {
    pub kind: String,
    pub arg: String,
    pub op: String,
    pub value: String,
}

#[derive(Template)]
#[template(path = "audience/segments.html")]
struct SegmentsPage {
    chrome: Chrome,
    saved: Vec<(i64, String, i64)>,
    name: String,
    match_any: bool,
    rows: Vec<RowInput>,
    advanced: String,
    kinds: Vec<(&'static str, &'static str)>,
    field_ops: Vec<(&'static str, &'static str)>,
    statuses: [Status; 5],
    stages: [Stage; 4],
    tags: Vec<TagName>,
    fields: Vec<FieldDef>,
    count: Option<i64>,
    errors: Vec<Problem>,
}

struct Input {
    name: String,
    match_any: bool,
    rows: Vec<RowInput>,
    advanced: String,
}

fn parse_input(form: &FormPairs) -> Input {
    let get = |k: &str| form.get(k);
    let rows = (0..ROWS)
        .map(|i| RowInput {
            kind: get(&format!("c{i}_kind")),
            arg: get(&format!("c{i}_arg")),
            op: get(&format!("c{i}_op")),
            value: get(&format!("c{i}_value")),
        })
        .collect();
    Input {
        name: get("name"),
        match_any: get("match") == "any",
        rows,
        advanced: get("advanced"),
    }
}

/// Turns the builder's rows (or the advanced JSON, when given) into a condition tree.
fn to_condition(input: &Input) -> Result<Condition, Problem> {
    if !input.advanced.trim().is_empty() {
        return serde_json::from_str(&input.advanced).map_err(|e| Problem::SegmentJson {
            line: e.line(),
            column: e.column(),
        });
    }
    let mut conditions = Vec::new();
    for (i, r) in input.rows.iter().enumerate() {
        let row = i + 1;
        let bad = |problem| Problem::SegmentRow { row, problem };
        let days = |v: &str| v.trim().parse::<i64>().map_err(|_| bad(R::Days));
        let c = match r.kind.as_str() {
            "" => continue,
            "status" => Condition::Status {
                is: Status::parse(&r.arg).ok_or(bad(R::ChooseStatus))?,
            },
            "stage" => Condition::Stage {
                is: Stage::parse(&r.arg).ok_or(bad(R::ChooseStage))?,
            },
            "tag" | "no_tag" => Condition::Tag {
                tag_id: r.arg.parse().map_err(|_| bad(R::ChooseTag))?,
                has: r.kind == "tag",
            },
            "field" => {
                let op: FieldOp = serde_json::from_value(serde_json::Value::String(r.op.clone()))
                    .map_err(|_| bad(R::ChooseComparison))?;
                Condition::Field {
                    key: r.arg.clone(),
                    op,
                    value: r.value.clone(),
                }
            }
            "opened" => Condition::Opened {
                days: days(&r.arg)?,
                negate: false,
            },
            "not_opened" => Condition::Opened {
                days: days(&r.arg)?,
                negate: true,
            },
            "clicked" => Condition::Clicked {
                days: days(&r.arg)?,
                negate: false,
            },
            "unopened" => Condition::UnopenedInARow {
                mails: r.arg.trim().parse().map_err(|_| bad(R::Mails))?,
            },
            "clicked_label" => Condition::ClickedLabel {
                label: r.arg.clone(),
                days: None,
            },
            "event" => Condition::Event {
                kind: r.arg.clone(),
                days: None,
                negate: false,
            },
            _ => return Err(bad(R::UnknownCondition)),
        };
        conditions.push(c);
    }
    Ok(Condition::Group {
        r#match: if input.match_any {
            Match::Any
        } else {
            Match::All
        },
        conditions,
    })
}

async fn page(
    state: &AppState,
    s: &Session,
    input: Input,
    count: Option<i64>,
    errors: Vec<Problem>,
) -> AppResult<Html<String>> {
    let now = state.clock.now();
    let mut saved = Vec::new();
    for seg in segments::list(&state.pool).await? {
        let n = segments::count_live(&state.pool, &state.live_index, &seg.definition.0, now)
            .await
            .unwrap_or(-1);
        saved.push((seg.id, seg.name, n));
    }
    let chrome = Chrome::new(state, s, "audience", None);
    let (kinds, field_ops) = (chrome.t.seg_kind_options(), chrome.t.seg_op_options());
    render(SegmentsPage {
        chrome,
        saved,
        name: input.name,
        match_any: input.match_any,
        rows: input.rows,
        advanced: input.advanced,
        kinds,
        field_ops,
        statuses: Status::ALL,
        stages: Stage::ALL,
        tags: tags::names(&state.pool).await?,
        fields: segments::field_defs(&state.pool).await?,
        count,
        errors,
    })
}

pub async fn index(
    State(state): State<AppState>,
    Extension(s): Extension<Session>,
) -> AppResult<Html<String>> {
    let empty = Input {
        name: String::new(),
        match_any: false,
        rows: vec![RowInput::default(); ROWS],
        advanced: String::new(),
    };
    page(&state, &s, empty, None, vec![]).await
}

/// Counts the subscribers the form's conditions select (the live preview).
pub async fn preview(
    State(state): State<AppState>,
    Extension(s): Extension<Session>,
    form: FormPairs,
) -> AppResult<Response> {
    let input = parse_input(&form);
    match to_condition(&input) {
        Ok(cond) => {
            match segments::count_live(&state.pool, &state.live_index, &cond, state.clock.now())
                .await
            {
                Ok(n) => Ok(page(&state, &s, input, Some(n), vec![])
                    .await?
                    .into_response()),
                Err(AppError::Unprocessable(e)) => Ok((
                    StatusCode::UNPROCESSABLE_ENTITY,
                    page(&state, &s, input, None, vec![e]).await?,
                )
                    .into_response()),
                Err(e) => Err(e),
            }
        }
        Err(e) => Ok((
            StatusCode::UNPROCESSABLE_ENTITY,
            page(&state, &s, input, None, vec![e]).await?,
        )
            .into_response()),
    }
}

pub async fn create(
    State(state): State<AppState>,
    Extension(s): Extension<Session>,
    form: FormPairs,
) -> AppResult<Response> {
    let input = parse_input(&form);
    let result = match to_condition(&input) {
        Ok(cond) => segments::save(&state.pool, &input.name, &cond).await,
        Err(e) => Err(AppError::Unprocessable(e)),
    };
    match result {
        Ok(id) => Ok(Redirect::to(&format!("/audience?segment={id}")).into_response()),
        Err(AppError::Unprocessable(e) | AppError::Conflict(e)) => Ok((
            StatusCode::UNPROCESSABLE_ENTITY,
            page(&state, &s, input, None, vec![e]).await?,
        )
            .into_response()),
        Err(e) => Err(e),
    }
}
