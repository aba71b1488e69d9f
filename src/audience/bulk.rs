//! Bulk actions (tag, untag, unsubscribe, delete) on a selection or a whole segment,
//! run as a job with progress. Each page of subscribers is one transaction, and every
//! action is idempotent, so a retried job simply finishes the work.

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{
    lifecycle::Lifecycle,
    segments::{self, Condition, Context},
    tags,
};
use crate::{
    AppError, AppResult, Problem,
    jobs::{JobContext, JobError, JobFailure, NewJob},
};

pub const BULK_JOB: &str = "audience.bulk";
const PAGE: i64 = 1_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Tag,
    Untag,
    Unsubscribe,
    Delete,
}

impl Action {
    pub fn parse(s: &str) -> Option<Self> {
        serde_json::from_value(serde_json::Value::String(s.to_string())).ok()
    }
}

/// Who the action applies to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    Ids(Vec<i64>),
    Segment(i64),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Bulk {
    pub action: Action,
    #[serde(default)]
    pub tag: Option<String>,
    pub scope: Scope,
}

impl Bulk {
    pub fn validate(&self) -> Result<(), Problem> {
        if matches!(self.action, Action::Tag | Action::Untag)
            && self
                .tag
                .as_deref()
                .is_none_or(|t| tags::clean_names([t]).is_empty())
        {
            return Err(Problem::BulkNeedsTag);
        }
        if let Scope::Ids(ids) = &self.scope
            && ids.is_empty()
        {
            return Err(Problem::BulkNeedsSelection);
        }
        Ok(())
    }
}

/// Queues the bulk action; returns the job id.
pub async fn queue(
    pool: &sqlx::PgPool,
    bulk: &Bulk,
    now: chrono::DateTime<chrono::Utc>,
) -> AppResult<i64> {
    bulk.validate().map_err(AppError::Unprocessable)?;
    if let Scope::Segment(id) = bulk.scope {
        segments::get(pool, id).await?.ok_or(AppError::NotFound)?;
    }
    let job = NewJob::new(BULK_JOB, bulk).unique(format!("bulk:{}", uuid::Uuid::new_v4()));
    crate::jobs::enqueue(pool, now, job)
        .await?
        .ok_or_else(|| AppError::internal(anyhow::anyhow!("bulk job key collided")))
}

/// The next page of target ids after `after`.
async fn page(
    pool: &sqlx::PgPool,
    scope: &Scope,
    cond: Option<&(Condition, Vec<super::fields::FieldDef>, Lifecycle)>,
    after: i64,
    now: chrono::DateTime<chrono::Utc>,
) -> sqlx::Result<Vec<i64>> {
    match (scope, cond) {
        (Scope::Segment(_), Some((c, fields, lifecycle))) => {
            let mut qb = segments::query_frame("s.id", now);
            segments::push_condition(&mut qb, c, &Context { fields, lifecycle });
            qb.push(" AND s.id > ");
            qb.push_bind(after);
            qb.push(" ORDER BY s.id LIMIT ");
            qb.push_bind(PAGE);
            qb.build_query_scalar().fetch_all(pool).await
        }
        (Scope::Ids(ids), _) => {
            sqlx::query_scalar(
                "SELECT id FROM subscribers WHERE id = ANY($1) AND id > $2 ORDER BY id LIMIT $3",
            )
            .bind(ids)
            .bind(after)
            .bind(PAGE)
            .fetch_all(pool)
            .await
        }
        _ => Ok(vec![]),
    }
}

pub async fn run_job(ctx: JobContext) -> Result<(), JobError> {
    let bulk: Bulk = ctx.payload()?;
    bulk.validate()
        .map_err(|e| JobError::Fatal(anyhow::anyhow!(e).context(JobFailure::BulkInvalid)))?;
    let pool = ctx.pool.clone();
    let now = ctx.clock.now();
    let cond = match bulk.scope {
        Scope::Segment(id) => {
            let seg = segments::get(&pool, id)
                .await?
                .ok_or_else(|| JobError::Fatal(JobFailure::SegmentGone { segment: id }.into()))?;
            let fields = segments::field_defs(&pool).await?;
            let lifecycle = Lifecycle::load(&pool).await?;
            seg.definition
                .0
                .validate(&Context {
                    fields: &fields,
                    lifecycle: &lifecycle,
                })
                .map_err(|e| {
                    JobError::Fatal(
                        anyhow::anyhow!("{e}").context(JobFailure::SegmentInvalid { segment: id }),
                    )
                })?;
            Some((seg.definition.0, fields, lifecycle))
        }
        Scope::Ids(_) => None,
    };
    let total: i64 = match &bulk.scope {
        Scope::Ids(ids) => ids.len() as i64,
        Scope::Segment(_) => {
            let (c, fields, lifecycle) = cond.as_ref().expect("segment condition");
            let mut qb = segments::query_frame("count(*)", now);
            segments::push_condition(&mut qb, c, &Context { fields, lifecycle });
            qb.build_query_scalar().fetch_one(&pool).await?
        }
    };
    let tag_names = bulk
        .tag
        .as_deref()
        .map(|t| tags::clean_names([t]))
        .unwrap_or_default();
    let (mut after, mut done) = (0i64, 0i64);
    loop {
        let ids = page(&pool, &bulk.scope, cond.as_ref(), after, now).await?;
        let Some(&last) = ids.last() else { break };
        let mut tx = pool.begin().await?;
        match bulk.action {
            Action::Tag => {
                let tag_ids = tags::ensure(&mut tx, &tag_names).await?;
                sqlx::query("UPDATE subscribers SET tag_ids = tag_ids_add(tag_ids, $2) WHERE id = ANY($1) AND NOT tag_ids @> $2")
                    .bind(&ids)
                    .bind(&tag_ids)
                    .execute(&mut *tx)
                    .await?;
                record(
                    &mut tx,
                    &ids,
                    "tagged",
                    json!({ "tag": tag_names[0], "bulk": true }),
                    now,
                )
                .await?;
            }
            Action::Untag => {
                sqlx::query("UPDATE subscribers SET tag_ids = array_remove(tag_ids, t.id) FROM tags t WHERE lower(t.name) = lower($2) AND id = ANY($1) AND tag_ids @> ARRAY[t.id]")
                    .bind(&ids)
                    .bind(&tag_names[0])
                    .execute(&mut *tx)
                    .await?;
                record(
                    &mut tx,
                    &ids,
                    "untagged",
                    json!({ "tag": tag_names[0], "bulk": true }),
                    now,
                )
                .await?;
            }
            Action::Unsubscribe => {
                let changed: Vec<i64> = sqlx::query_scalar(
                    "UPDATE subscribers SET status = 'unsubscribed', unsubscribed_at = $2 WHERE id = ANY($1) AND status IN ('active', 'unconfirmed') RETURNING id",
                )
                .bind(&ids)
                .bind(now)
                .fetch_all(&mut *tx)
                .await?;
                record(
                    &mut tx,
                    &changed,
                    "unsubscribed",
                    json!({ "via": "bulk" }),
                    now,
                )
                .await?;
            }
            Action::Delete => {
                sqlx::query("DELETE FROM subscribers WHERE id = ANY($1)")
                    .bind(&ids)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await?;
        done += ids.len() as i64;
        after = last;
        ctx.progress(done.min(total), total.max(done)).await?;
    }
    tracing::info!(action = ?bulk.action, done, "bulk action finished");
    Ok(())
}

async fn record(
    tx: &mut sqlx::PgConnection,
    ids: &[i64],
    kind: &str,
    data: serde_json::Value,
    now: chrono::DateTime<chrono::Utc>,
) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO events (subscriber_id, kind, at, data) SELECT unnest($1::bigint[]), $2, $3, $4").bind(ids).bind(kind).bind(now).bind(data).execute(&mut *tx).await?;
    Ok(())
}
