//! CSV export of a segment or the whole list, streamed page by page (keyset on id), so
//! a million subscribers never sit in memory.

use std::io;

use axum::body::Bytes;
use chrono::{DateTime, Utc};
use futures_util::Stream;
use sqlx::{PgPool, Row};

use super::{
    lifecycle::Lifecycle,
    segments::{self, Condition, Context},
};
use crate::{AppError, AppResult};

const PAGE: i64 = 5_000;

/// Spreadsheet programs run cells that start with `=`, `+`, `-` or `@` as formulas; a
/// name typed into a public form must not become one. Such cells get a leading `'`.
pub fn csv_safe(cell: String) -> String {
    if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{cell}")
    } else {
        cell
    }
}

/// Validates the condition, then streams `email, name, status, subscribed_at, tags,
/// <custom fields…>` as CSV (UTF-8 with a BOM, so spreadsheet programs read Korean).
pub async fn stream(
    pool: PgPool,
    cond: Option<Condition>,
    now: DateTime<Utc>,
) -> AppResult<impl Stream<Item = Result<Bytes, io::Error>>> {
    let fields = segments::field_defs(&pool).await?;
    let lifecycle = Lifecycle::load(&pool).await?;
    if let Some(c) = &cond {
        c.validate(&Context {
            fields: &fields,
            lifecycle: &lifecycle,
        })
        .map_err(|e| AppError::Unprocessable(crate::Problem::Segment(e)))?;
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, io::Error>>(4);
    tokio::spawn(async move {
        let mut header = csv::Writer::from_writer(b"\xEF\xBB\xBF".to_vec());
        let mut cols = vec![
            "email".to_string(),
            "name".into(),
            "status".into(),
            "subscribed_at".into(),
            "tags".into(),
        ];
        cols.extend(fields.iter().map(|f| f.key.clone()));
        let _ = header.write_record(&cols);
        if tx
            .send(Ok(Bytes::from(header.into_inner().unwrap_or_default())))
            .await
            .is_err()
        {
            return;
        }
        let mut last_id = 0i64;
        loop {
            let mut qb = segments::query_frame(
                "s.id, s.email, s.name, s.status::text AS status, s.created_at, s.fields,
                 (SELECT string_agg(t.name, ', ' ORDER BY lower(t.name)) FROM tags t WHERE t.id = ANY(s.tag_ids)) AS tags",
                now,
            );
            match &cond {
                Some(c) => segments::push_condition(
                    &mut qb,
                    c,
                    &Context {
                        fields: &fields,
                        lifecycle: &lifecycle,
                    },
                ),
                None => {
                    qb.push("true");
                }
            }
            qb.push(" AND s.id > ");
            qb.push_bind(last_id);
            qb.push(" ORDER BY s.id LIMIT ");
            qb.push_bind(PAGE);
            let rows = match qb.build().fetch_all(&pool).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, "export query failed");
                    let _ = tx.send(Err(io::Error::other("export failed"))).await;
                    return;
                }
            };
            if rows.is_empty() {
                return;
            }
            let mut w = csv::Writer::from_writer(Vec::with_capacity(rows.len() * 80));
            for r in &rows {
                last_id = r.get("id");
                let fields_json: sqlx::types::Json<serde_json::Map<String, serde_json::Value>> =
                    r.get("fields");
                let created: DateTime<Utc> = r.get("created_at");
                let mut rec = vec![
                    r.get::<String, _>("email"),
                    r.get::<String, _>("name"),
                    r.get::<String, _>("status"),
                    created.to_rfc3339(),
                    r.get::<Option<String>, _>("tags").unwrap_or_default(),
                ];
                for f in &fields {
                    rec.push(match fields_json.0.get(&f.key) {
                        None | Some(serde_json::Value::Null) => String::new(),
                        Some(serde_json::Value::String(s)) => s.clone(),
                        Some(v) => v.to_string(),
                    });
                }
                let _ = w.write_record(rec.into_iter().map(csv_safe));
            }
            let chunk = w.into_inner().unwrap_or_default();
            if tx.send(Ok(Bytes::from(chunk))).await.is_err() {
                return;
            }
            if (rows.len() as i64) < PAGE {
                return;
            }
        }
    });
    Ok(futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }))
}
