//! Segments: a tree of conditions on fields, tags, status, lifecycle stage and
//! engagement, combined with AND/OR groups, compiled into one parameterised SQL
//! condition. Values are always bound, never spliced into the SQL text. Campaigns and
//! automations use [`push_condition`] to select recipients; the dashboard uses [`count`].

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgPool, Postgres, QueryBuilder};

use super::{
    fields::{FieldDef, FieldType},
    lifecycle::{Lifecycle, Stage},
    live_index::LiveIndex,
    subscribers::Status,
};
use crate::{AppError, AppResult, Problem};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Match {
    All,
    Any,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldOp {
    Is,
    IsNot,
    Contains,
    GreaterThan,
    LessThan,
    IsSet,
    IsNotSet,
}

/// One node of a segment definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Condition {
    Group {
        r#match: Match,
        conditions: Vec<Condition>,
    },
    Status {
        is: Status,
    },
    Stage {
        is: Stage,
    },
    Tag {
        tag_id: i64,
        has: bool,
    },
    Field {
        key: String,
        op: FieldOp,
        #[serde(default)]
        value: String,
    },
    /// A human open within the last `days` (or none, with `negate`).
    Opened {
        days: i64,
        #[serde(default)]
        negate: bool,
    },
    Clicked {
        days: i64,
        #[serde(default)]
        negate: bool,
    },
    /// Did not open the last `mails` mails in a row.
    UnopenedInARow {
        mails: i32,
    },
    /// Clicked a link the author labelled (e.g. `purchase`, `review`, `topic:marketing`).
    ClickedLabel {
        label: String,
        #[serde(default)]
        days: Option<i64>,
    },
    /// Was sent a given piece of content.
    Received {
        content_id: i64,
    },
    /// Any event of this kind happened (within `days`, if given).
    Event {
        kind: String,
        #[serde(default)]
        days: Option<i64>,
        #[serde(default)]
        negate: bool,
    },
}

/// Why a definition is refused; worded per language by `web::i18n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SegmentError {
    TooManyConditions {
        max: usize,
    },
    TooDeep {
        max: usize,
    },
    NoField {
        key: String,
    },
    NotNumber {
        value: String,
    },
    NotDate {
        value: String,
    },
    NotBoolean,
    /// `op` and `field_type` are the JSON names (`greater_than`, `text`).
    OpDoesNotApply {
        op: String,
        field_type: String,
    },
    Days,
    Mails,
    NeedLabel,
    NeedEvent,
}

impl std::fmt::Display for SegmentError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        crate::Problem::Segment(self.clone()).fmt(f)
    }
}

impl std::error::Error for SegmentError {}

/// The JSON name of a serde enum value (`FieldOp::GreaterThan` → `greater_than`).
fn json_name(v: &impl Serialize) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

const MAX_DEPTH: usize = 5;
const MAX_CONDITIONS: usize = 100;

/// What compiling needs besides the tree.
pub struct Context<'a> {
    pub fields: &'a [FieldDef],
    pub lifecycle: &'a Lifecycle,
}

impl Condition {
    /// Checks the tree against the field definitions before any SQL is built.
    pub fn validate(&self, ctx: &Context<'_>) -> Result<(), SegmentError> {
        let mut count = 0;
        self.validate_at(ctx, 0, &mut count)
    }

    fn validate_at(
        &self,
        ctx: &Context<'_>,
        depth: usize,
        count: &mut usize,
    ) -> Result<(), SegmentError> {
        *count += 1;
        if *count > MAX_CONDITIONS {
            return Err(SegmentError::TooManyConditions {
                max: MAX_CONDITIONS,
            });
        }
        let days_ok = |d: i64| (1..=3650).contains(&d);
        match self {
            Condition::Group { conditions, .. } => {
                if depth >= MAX_DEPTH {
                    return Err(SegmentError::TooDeep { max: MAX_DEPTH });
                }
                for c in conditions {
                    c.validate_at(ctx, depth + 1, count)?;
                }
            }
            Condition::Field { key, op, value } => {
                let def = ctx
                    .fields
                    .iter()
                    .find(|f| &f.key == key)
                    .ok_or_else(|| SegmentError::NoField { key: key.clone() })?;
                match (def.field_type, op) {
                    (_, FieldOp::IsSet | FieldOp::IsNotSet) => {}
                    (
                        FieldType::Number,
                        FieldOp::Is | FieldOp::IsNot | FieldOp::GreaterThan | FieldOp::LessThan,
                    ) => {
                        value
                            .trim()
                            .parse::<f64>()
                            .map_err(|_| SegmentError::NotNumber {
                                value: value.clone(),
                            })?;
                    }
                    (
                        FieldType::Date,
                        FieldOp::Is | FieldOp::IsNot | FieldOp::GreaterThan | FieldOp::LessThan,
                    ) => {
                        chrono::NaiveDate::parse_from_str(value.trim(), "%Y-%m-%d").map_err(
                            |_| SegmentError::NotDate {
                                value: value.clone(),
                            },
                        )?;
                    }
                    (FieldType::Boolean, FieldOp::Is | FieldOp::IsNot) => {
                        if !matches!(value.trim(), "true" | "false") {
                            return Err(SegmentError::NotBoolean);
                        }
                    }
                    (
                        FieldType::Text | FieldType::Choice,
                        FieldOp::Is | FieldOp::IsNot | FieldOp::Contains,
                    ) => {}
                    (t, op) => {
                        return Err(SegmentError::OpDoesNotApply {
                            op: json_name(op),
                            field_type: json_name(&t),
                        });
                    }
                }
            }
            Condition::Opened { days, .. } | Condition::Clicked { days, .. } if !days_ok(*days) => {
                return Err(SegmentError::Days);
            }
            Condition::UnopenedInARow { mails } if !(1..=1000).contains(mails) => {
                return Err(SegmentError::Mails);
            }
            Condition::ClickedLabel { label, days } => {
                if label.trim().is_empty() || label.len() > 100 {
                    return Err(SegmentError::NeedLabel);
                }
                if days.is_some_and(|d| !days_ok(d)) {
                    return Err(SegmentError::Days);
                }
            }
            Condition::Event { kind, days, .. } => {
                if kind.trim().is_empty() || kind.len() > 100 {
                    return Err(SegmentError::NeedEvent);
                }
                if days.is_some_and(|d| !days_ok(d)) {
                    return Err(SegmentError::Days);
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// Appends the SQL for `cond` to `qb`. The query must have the subscriber table aliased
/// `s` and the evaluation time as `p.now` (see [`count`]). Validate first.
pub fn push_condition(qb: &mut QueryBuilder<Postgres>, cond: &Condition, ctx: &Context<'_>) {
    match cond {
        Condition::Group {
            r#match,
            conditions,
        } => {
            if conditions.is_empty() {
                // An empty "all" matches everyone; an empty "any" matches no one.
                qb.push(if *r#match == Match::All {
                    "true"
                } else {
                    "false"
                });
                return;
            }
            qb.push("(");
            for (i, c) in conditions.iter().enumerate() {
                if i > 0 {
                    qb.push(if *r#match == Match::All {
                        " AND "
                    } else {
                        " OR "
                    });
                }
                push_condition(qb, c, ctx);
            }
            qb.push(")");
        }
        Condition::Status { is } => {
            qb.push("s.status = ");
            qb.push_bind(*is);
        }
        Condition::Stage { is } => {
            qb.push(ctx.lifecycle.sql_condition(*is, "p.now"));
        }
        Condition::Tag { tag_id, has } => {
            qb.push(if *has {
                "s.tag_ids @> ARRAY["
            } else {
                "NOT s.tag_ids @> ARRAY["
            });
            qb.push_bind(*tag_id);
            qb.push("::bigint]");
        }
        Condition::Field { key, op, value } => push_field(qb, key, *op, value, ctx),
        Condition::Opened { days, negate } => push_recent(qb, "s.last_open_at", *days, *negate),
        Condition::Clicked { days, negate } => push_recent(qb, "s.last_click_at", *days, *negate),
        Condition::UnopenedInARow { mails } => {
            qb.push("s.consecutive_unopened >= ");
            qb.push_bind(*mails);
        }
        Condition::ClickedLabel { label, days } => {
            qb.push("EXISTS (SELECT 1 FROM events e WHERE e.subscriber_id = s.id AND e.kind = 'clicked' AND coalesce((e.data->>'human')::boolean, true) AND e.data->>'label' = ");
            qb.push_bind(label.trim().to_string());
            if let Some(d) = days {
                qb.push(" AND e.at > p.now - make_interval(days => ");
                qb.push_bind(*d as i32);
                qb.push(")");
            }
            qb.push(")");
        }
        Condition::Received { content_id } => {
            qb.push("EXISTS (SELECT 1 FROM events e WHERE e.subscriber_id = s.id AND e.kind = 'sent' AND e.data->>'content_id' = ");
            qb.push_bind(content_id.to_string());
            qb.push(")");
        }
        Condition::Event { kind, days, negate } => {
            qb.push(if *negate { "NOT EXISTS" } else { "EXISTS" });
            qb.push(" (SELECT 1 FROM events e WHERE e.subscriber_id = s.id AND e.kind = ");
            qb.push_bind(kind.trim().to_string());
            if let Some(d) = days {
                qb.push(" AND e.at > p.now - make_interval(days => ");
                qb.push_bind(*d as i32);
                qb.push(")");
            }
            qb.push(")");
        }
    }
}

fn push_recent(qb: &mut QueryBuilder<Postgres>, column: &'static str, days: i64, negate: bool) {
    if negate {
        qb.push(format!(
            "({column} IS NULL OR {column} <= p.now - make_interval(days => "
        ));
    } else {
        qb.push(format!("({column} > p.now - make_interval(days => "));
    }
    qb.push_bind(days as i32);
    qb.push("))");
}

fn push_field(
    qb: &mut QueryBuilder<Postgres>,
    key: &str,
    op: FieldOp,
    value: &str,
    ctx: &Context<'_>,
) {
    let field_type = ctx
        .fields
        .iter()
        .find(|f| f.key == key)
        .map(|f| f.field_type)
        .unwrap_or(FieldType::Text);
    let value = value.trim();
    // The key is bound too: `s.fields -> $n`.
    match op {
        FieldOp::IsSet | FieldOp::IsNotSet => {
            qb.push(if op == FieldOp::IsSet {
                "(s.fields ? "
            } else {
                "NOT (s.fields ? "
            });
            qb.push_bind(key.to_string());
            qb.push(")");
            return;
        }
        _ => {}
    }
    let (cast, bind_value): (&str, Option<String>) = match field_type {
        FieldType::Number => ("numeric", Some(value.to_string())),
        FieldType::Date => ("date", Some(value.to_string())),
        FieldType::Boolean => ("boolean", Some(value.to_string())),
        FieldType::Text | FieldType::Choice => ("text", None),
    };
    if op == FieldOp::IsNot {
        qb.push("NOT coalesce(");
    } else {
        qb.push("coalesce(");
    }
    if cast == "text" {
        qb.push("lower(s.fields ->> ");
        qb.push_bind(key.to_string());
        qb.push(")");
        match op {
            FieldOp::Contains => {
                qb.push(" LIKE ");
                let escaped = value
                    .to_lowercase()
                    .replace('\\', "\\\\")
                    .replace('%', "\\%")
                    .replace('_', "\\_");
                qb.push_bind(format!("%{escaped}%"));
            }
            _ => {
                qb.push(" = ");
                qb.push_bind(value.to_lowercase());
            }
        }
    } else {
        // NULL for a stored value that does not cast, never an error (one such value,
        // written outside Loopline, would fail the whole query).
        if field_type == FieldType::Date {
            // A silent jsonpath `datetime()`: `YYYY-MM-DD` (one-digit month and day too)
            // or nothing, at ~2.5 times the plain cast (a regular expression or a
            // PL/pgSQL check per row cost 5–8 times).
            qb.push("(jsonb_path_query_first(s.fields, ");
            qb.push_bind(format!(
                "$.\"{}\".datetime(\"YYYY-MM-DD\")",
                key.replace('\\', "\\\\").replace('"', "\\\"")
            ));
            qb.push("::jsonpath, '{}', true) #>> '{}')::date");
        } else {
            // Inline for JSON numbers and booleans (migration 22).
            qb.push(format!("field_{cast}(s.fields -> "));
            qb.push_bind(key.to_string());
            qb.push(")");
        }
        qb.push(match op {
            FieldOp::GreaterThan => " > ",
            FieldOp::LessThan => " < ",
            _ => " = ",
        });
        qb.push_bind(bind_value.unwrap_or_default());
        qb.push(format!("::{cast}"));
    }
    qb.push(", false)");
}

/// `SELECT … FROM subscribers s, (SELECT $now) p WHERE <condition>` — the frame every
/// segment query uses.
pub fn query_frame(select: &str, now: DateTime<Utc>) -> QueryBuilder<Postgres> {
    let mut qb = QueryBuilder::new(format!("SELECT {select} FROM subscribers s, (SELECT "));
    qb.push_bind(now);
    qb.push("::timestamptz AS now) p WHERE ");
    qb
}

pub async fn field_defs(pool: &PgPool) -> sqlx::Result<Vec<FieldDef>> {
    sqlx::query_as("SELECT key, label, type, choices FROM custom_fields ORDER BY key")
        .fetch_all(pool)
        .await
}

/// How many subscribers match, now, counted in SQL (what recipients are selected by).
pub async fn count(pool: &PgPool, cond: &Condition, now: DateTime<Utc>) -> AppResult<i64> {
    let fields = field_defs(pool).await?;
    validate_fields(cond, &fields)?;
    count_in_sql(pool, cond, now, &fields).await
}

/// How many subscribers match, now: from the live index when it holds every condition
/// (the dashboard's live preview and saved-segment counts), else in SQL.
pub async fn count_live(
    pool: &PgPool,
    index: &LiveIndex,
    cond: &Condition,
    now: DateTime<Utc>,
) -> AppResult<i64> {
    let fields = field_defs(pool).await?;
    validate_fields(cond, &fields)?;
    if let Some(n) = index.count(pool, cond, &fields).await {
        return Ok(i64::try_from(n).unwrap_or(i64::MAX));
    }
    count_in_sql(pool, cond, now, &fields).await
}

fn validate_fields(cond: &Condition, fields: &[FieldDef]) -> AppResult<()> {
    let lifecycle = Lifecycle::default();
    let ctx = Context {
        fields,
        lifecycle: &lifecycle,
    };
    cond.validate(&ctx)
        .map_err(|e| AppError::Unprocessable(Problem::Segment(e)))
}

/// Counts a validated `cond`.
async fn count_in_sql(
    pool: &PgPool,
    cond: &Condition,
    now: DateTime<Utc>,
    fields: &[FieldDef],
) -> AppResult<i64> {
    let lifecycle = Lifecycle::load(pool).await?;
    let ctx = Context {
        fields,
        lifecycle: &lifecycle,
    };
    let mut qb = query_frame("count(*)", now);
    push_condition(&mut qb, cond, &ctx);
    Ok(qb.build_query_scalar().fetch_one(pool).await?)
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Segment {
    pub id: i64,
    pub name: String,
    pub definition: sqlx::types::Json<Condition>,
}

pub async fn save(pool: &PgPool, name: &str, cond: &Condition) -> AppResult<i64> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(AppError::Unprocessable(Problem::SegmentName));
    }
    let fields = field_defs(pool).await?;
    let lifecycle = Lifecycle::load(pool).await?;
    cond.validate(&Context {
        fields: &fields,
        lifecycle: &lifecycle,
    })
    .map_err(|e| AppError::Unprocessable(Problem::Segment(e)))?;
    sqlx::query_scalar("INSERT INTO segments (name, definition) VALUES ($1, $2) RETURNING id")
        .bind(name)
        .bind(sqlx::types::Json(cond))
        .fetch_one(pool)
        .await
        .map_err(|e| match AppError::from(e) {
            AppError::Conflict(_) => AppError::Conflict(Problem::SegmentTaken),
            other => other,
        })
}

pub async fn get(pool: &PgPool, id: i64) -> sqlx::Result<Option<Segment>> {
    sqlx::query_as("SELECT id, name, definition FROM segments WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await
}

pub async fn list(pool: &PgPool) -> sqlx::Result<Vec<Segment>> {
    sqlx::query_as("SELECT id, name, definition FROM segments ORDER BY lower(name)")
        .fetch_all(pool)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx_fields() -> Vec<FieldDef> {
        vec![
            FieldDef {
                key: "city".into(),
                label: "City".into(),
                field_type: FieldType::Text,
                choices: vec![],
            },
            FieldDef {
                key: "orders".into(),
                label: "Orders".into(),
                field_type: FieldType::Number,
                choices: vec![],
            },
        ]
    }

    #[test]
    fn values_are_bound_never_spliced() {
        let fields = ctx_fields();
        let lc = Lifecycle::default();
        let ctx = Context {
            fields: &fields,
            lifecycle: &lc,
        };
        let evil = "x'); DROP TABLE subscribers; --";
        let cond = Condition::Group {
            r#match: Match::Any,
            conditions: vec![
                Condition::Field {
                    key: "city".into(),
                    op: FieldOp::Is,
                    value: evil.into(),
                },
                Condition::Event {
                    kind: evil.into(),
                    days: Some(7),
                    negate: false,
                },
            ],
        };
        cond.validate(&ctx).unwrap();
        let mut qb = query_frame("count(*)", Utc::now());
        push_condition(&mut qb, &cond, &ctx);
        let sql = qb.sql().as_str().to_string();
        assert!(!sql.contains("DROP TABLE"), "{sql}");
        assert!(sql.contains(" OR "));
    }

    #[test]
    fn validation_names_the_problem() {
        let fields = ctx_fields();
        let lc = Lifecycle::default();
        let ctx = Context {
            fields: &fields,
            lifecycle: &lc,
        };
        let bad = |c: Condition| c.validate(&ctx).unwrap_err().to_string();
        assert!(
            bad(Condition::Field {
                key: "nope".into(),
                op: FieldOp::Is,
                value: "1".into()
            })
            .contains("no field")
        );
        assert!(
            bad(Condition::Field {
                key: "orders".into(),
                op: FieldOp::GreaterThan,
                value: "many".into()
            })
            .contains("not a number")
        );
        assert!(
            bad(Condition::Field {
                key: "orders".into(),
                op: FieldOp::Contains,
                value: "1".into()
            })
            .contains("does not apply")
        );
        assert!(
            bad(Condition::Opened {
                days: 0,
                negate: false
            })
            .contains("days")
        );
        let mut deep = Condition::Status { is: Status::Active };
        for _ in 0..7 {
            deep = Condition::Group {
                r#match: Match::All,
                conditions: vec![deep],
            };
        }
        assert!(bad(deep).contains("nested"));
    }

    #[test]
    fn definitions_round_trip_as_json() {
        let json = r#"{"type":"group","match":"all","conditions":[{"type":"tag","tag_id":3,"has":true},{"type":"unopened_in_a_row","mails":3},{"type":"clicked_label","label":"purchase"}]}"#;
        let c: Condition = serde_json::from_str(json).unwrap();
        assert!(serde_json::to_string(&c).unwrap().len() > 10);
        assert!(matches!(
            c,
            Condition::Group {
                r#match: Match::All,
                ..
            }
        ));
    }
}
