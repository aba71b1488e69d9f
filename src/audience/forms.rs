//! Signup forms: a hosted page each, an embeddable HTML snippet and a JSON endpoint.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::tags;
use crate::{AppError, AppResult, Problem};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Form {
    pub id: i64,
    pub slug: String,
    pub name: String,
    pub double_opt_in: bool,
    pub tag_ids: Vec<i64>,
    /// The language the form speaks (`en`, `ko`); `None`: the visitor's browser decides.
    pub language: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// A validated new form.
#[derive(Debug, Clone)]
pub struct NewForm {
    pub name: String,
    pub slug: String,
    pub double_opt_in: bool,
    pub tags: Vec<String>,
    /// A language code the caller has checked (`web::Lang::code`), or `None`.
    pub language: Option<String>,
}

impl NewForm {
    pub fn parse(name: &str, slug: &str, double_opt_in: bool, tags: &str) -> Result<Self, Problem> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 100 {
            return Err(Problem::FormName);
        }
        let slug = slug.trim().to_ascii_lowercase();
        let ok = !slug.is_empty()
            && slug.len() <= 63
            && slug
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphanumeric())
            && slug
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !ok {
            return Err(Problem::FormSlug);
        }
        Ok(Self {
            name: name.to_string(),
            slug,
            double_opt_in,
            tags: tags::clean_names(tags.split(',')),
            language: None,
        })
    }
}

const COLUMNS: &str = "id, slug, name, double_opt_in, tag_ids, language, created_at";

pub async fn create(pool: &PgPool, form: &NewForm) -> AppResult<Form> {
    let mut tx = pool.begin().await?;
    let tag_ids = tags::ensure(&mut tx, &form.tags).await?;
    let row = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO forms (slug, name, double_opt_in, tag_ids, language) VALUES ($1, $2, $3, $4, $5) RETURNING {COLUMNS}"
    )))
    .bind(&form.slug)
    .bind(&form.name)
    .bind(form.double_opt_in)
    .bind(&tag_ids)
    .bind(&form.language)
    .fetch_one(&mut *tx)
    .await
    .map_err(|e| match AppError::from(e) {
        AppError::Conflict(_) => AppError::Conflict(Problem::FormSlugTaken),
        other => other,
    })?;
    tx.commit().await?;
    Ok(row)
}

pub async fn by_slug(pool: &PgPool, slug: &str) -> sqlx::Result<Option<Form>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM forms WHERE slug = $1"
    )))
    .bind(slug)
    .fetch_optional(pool)
    .await
}

pub async fn by_id(pool: &PgPool, id: i64) -> sqlx::Result<Option<Form>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM forms WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(pool)
    .await
}

pub async fn list(pool: &PgPool) -> sqlx::Result<Vec<Form>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM forms ORDER BY created_at DESC, id DESC"
    )))
    .fetch_all(pool)
    .await
}

/// Sets (or, with `None`, clears) the language a form speaks. `false` if there is no
/// such form.
pub async fn set_language(pool: &PgPool, id: i64, language: Option<&str>) -> AppResult<bool> {
    let r = sqlx::query("UPDATE forms SET language = $2 WHERE id = $1")
        .bind(id)
        .bind(language)
        .execute(pool)
        .await?;
    Ok(r.rows_affected() == 1)
}
