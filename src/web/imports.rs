//! Import and export pages: upload (streamed into the database), confirm the column
//! mapping on a preview, watch the progress bar, download the per-row report; export a
//! segment or the whole list as CSV, streamed.

use askama::Template;
use axum::{
    Extension,
    body::Body,
    extract::{Multipart, Path, Query, State},
    http::{StatusCode, header},
    response::{Html, IntoResponse, Redirect, Response},
};
use serde::Deserialize;

use super::{
    AppState,
    pages::{Chrome, render},
};
use crate::{
    AppError, AppResult, Problem,
    accounts::Session,
    audience::{
        export,
        imports::{self, Import, Mode},
        segments, tags,
    },
};

#[derive(Template)]
#[template(path = "audience/imports.html")]
struct ImportsPage {
    chrome: Chrome,
    imports: Vec<Import>,
    any_running: bool,
}

pub async fn index(
    State(state): State<AppState>,
    Extension(s): Extension<Session>,
) -> AppResult<Html<String>> {
    let imports = imports::recent(&state.pool, 30).await?;
    let any_running = imports
        .iter()
        .any(|i| matches!(i.status.as_str(), "queued" | "running"));
    render(ImportsPage {
        chrome: Chrome::new(&state, &s, "audience", None),
        imports,
        any_running,
    })
}

/// Streams the uploaded file into the database; never holds it in memory.
pub async fn upload(
    State(state): State<AppState>,
    Extension(s): Extension<Session>,
    mut multipart: Multipart,
) -> AppResult<Redirect> {
    while let Some(mut field) = multipart.next_field().await.map_err(|e| {
        tracing::info!(error = %e, "upload unreadable");
        AppError::BadRequest(Problem::UploadUnreadable)
    })? {
        if field.name() != Some("file") {
            continue;
        }
        let filename = field.file_name().unwrap_or("upload.csv").to_string();
        let mut upload = imports::Upload::begin(&state.pool, &filename, Some(s.user.id)).await?;
        while let Some(chunk) = field.chunk().await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                tracing::info!(error = %e, "upload too large");
                return AppError::PayloadTooLarge(Problem::UploadTooLarge {
                    max_mib: (super::MAX_UPLOAD_BYTES >> 20) as u64,
                });
            }
            tracing::info!(error = %e, "upload interrupted");
            AppError::BadRequest(Problem::UploadInterrupted)
        })? {
            upload.write(&chunk).await?;
        }
        if upload.size() == 0 {
            // Dropping the upload rolls its transaction back: nothing is left behind.
            return Err(AppError::Unprocessable(Problem::FileEmpty));
        }
        let (id, _) = upload.finish().await?;
        imports::inspect(&state.pool, id).await?;
        return Ok(Redirect::to(&format!("/audience/imports/{id}")));
    }
    Err(AppError::Unprocessable(Problem::ChooseFile))
}

#[derive(Template)]
#[template(path = "audience/import.html")]
struct ImportPage {
    chrome: Chrome,
    import: Import,
    columns: Vec<(usize, String, String, Vec<String>)>,
    targets: Vec<(String, String)>,
    modes: [(&'static str, &'static str); 3],
    report: Vec<imports::ReportLine>,
    errors: Vec<Problem>,
}

async fn import_page(
    state: &AppState,
    s: &Session,
    id: i64,
    errors: Vec<Problem>,
) -> AppResult<Html<String>> {
    let chrome = Chrome::new(state, s, "audience", None);
    let import = imports::get(&state.pool, id)
        .await?
        .ok_or(AppError::NotFound)?;
    let fields = segments::field_defs(&state.pool).await?;
    let (columns, targets) = if import.status == "uploaded" {
        let preview = imports::preview_rows(&state.pool, &import, 5).await?;
        let columns = import
            .headers
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let samples = preview
                    .iter()
                    .map(|r| r.get(i).cloned().unwrap_or_default())
                    .collect();
                (
                    i,
                    h.clone(),
                    import
                        .mapping
                        .get(i)
                        .cloned()
                        .unwrap_or_else(|| "ignore".into()),
                    samples,
                )
            })
            .collect();
        (
            columns,
            imports::target_choices(&fields, |key| chrome.t.import_target(key)),
        )
    } else {
        (vec![], vec![])
    };
    let report = imports::report(&state.pool, id)
        .await?
        .into_iter()
        .take(20)
        .collect();
    let modes = chrome.t.import_mode_options();
    render(ImportPage {
        chrome,
        import,
        columns,
        targets,
        modes,
        report,
        errors,
    })
}

pub async fn show(
    State(state): State<AppState>,
    Extension(s): Extension<Session>,
    Path(id): Path<i64>,
) -> AppResult<Html<String>> {
    import_page(&state, &s, id, vec![]).await
}

pub async fn start(
    State(state): State<AppState>,
    Extension(s): Extension<Session>,
    Path(id): Path<i64>,
    form: super::FormPairs,
) -> AppResult<Response> {
    let get = |k: &str| Some(form.get(k)).filter(|v| !v.is_empty());
    let import = imports::get(&state.pool, id)
        .await?
        .ok_or(AppError::NotFound)?;
    let mapping: Vec<String> = (0..import.headers.len())
        .map(|i| get(&format!("col{i}")).unwrap_or_else(|| "ignore".into()))
        .collect();
    let mode = get("mode")
        .and_then(|m| Mode::parse(&m))
        .unwrap_or(Mode::AddUpdate);
    let tag_names = tags::clean_names(get("tags").unwrap_or_default().split(','));
    let fields = segments::field_defs(&state.pool).await?;
    let result = match imports::check_mapping(&mapping, &fields) {
        Ok(()) => {
            imports::queue(
                &state.pool,
                id,
                &mapping,
                mode,
                &tag_names,
                state.clock.now(),
            )
            .await
        }
        Err(e) => Err(AppError::Unprocessable(e)),
    };
    match result {
        Ok(()) => Ok(Redirect::to(&format!("/audience/imports/{id}")).into_response()),
        Err(AppError::Unprocessable(e) | AppError::Conflict(e)) => Ok((
            StatusCode::UNPROCESSABLE_ENTITY,
            import_page(&state, &s, id, vec![e]).await?,
        )
            .into_response()),
        Err(e) => Err(e),
    }
}

pub async fn cancel(State(state): State<AppState>, Path(id): Path<i64>) -> AppResult<Redirect> {
    imports::cancel(&state.pool, id, state.clock.now()).await?;
    Ok(Redirect::to(&format!("/audience/imports/{id}")))
}

/// The rows not imported, as CSV: line, value, reason.
pub async fn report_csv(State(state): State<AppState>, Path(id): Path<i64>) -> AppResult<Response> {
    imports::get(&state.pool, id)
        .await?
        .ok_or(AppError::NotFound)?;
    let lines = imports::report(&state.pool, id).await?;
    let mut w = csv::Writer::from_writer(Vec::new());
    // Stable codes (see `ReportCode`) beside the English reasons: a file for people and
    // for scripts alike.
    let _ = w.write_record(["line", "value", "code", "reason"]);
    for l in lines {
        let _ = w.write_record([
            l.line.to_string(),
            export::csv_safe(l.value),
            l.code,
            l.reason,
        ]);
    }
    let body = w
        .into_inner()
        .map_err(|e| AppError::internal(anyhow::anyhow!("{e}")))?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"import-{id}-report.csv\""),
            ),
        ],
        [&b"\xEF\xBB\xBF"[..], &body].concat(),
    )
        .into_response())
}

#[derive(Deserialize)]
pub struct ExportQuery {
    #[serde(default)]
    segment: String,
}

/// A segment (or everyone) as CSV, streamed page by page.
pub async fn export_csv(
    State(state): State<AppState>,
    Query(q): Query<ExportQuery>,
) -> AppResult<Response> {
    let segment = match q.segment.parse::<i64>() {
        Ok(id) => Some(
            segments::get(&state.pool, id)
                .await?
                .ok_or(AppError::NotFound)?,
        ),
        Err(_) => None,
    };
    let name = segment
        .as_ref()
        .map(|s| format!("segment-{}", s.id))
        .unwrap_or_else(|| "subscribers".into());
    let stream = export::stream(
        state.pool.clone(),
        segment.map(|s| s.definition.0),
        state.clock.now(),
    )
    .await?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}.csv\""),
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}
