//! Tags: created on the fly, many-to-many with subscribers. Topics are the tags a
//! subscriber may pick on their preference page.

use sqlx::{PgConnection, PgPool};

/// Normalises a list of tag names: trimmed, non-empty, at most 100 characters,
/// de-duplicated case-insensitively (first spelling wins).
pub fn clean_names<I: IntoIterator<Item = S>, S: AsRef<str>>(names: I) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for n in names {
        let n: String = n
            .as_ref()
            .trim()
            .chars()
            .filter(|c| !c.is_control())
            .take(100)
            .collect();
        if !n.is_empty() && !out.iter().any(|o| o.to_lowercase() == n.to_lowercase()) {
            out.push(n);
        }
    }
    out
}

/// Ids for tag names, creating the missing ones.
pub async fn ensure(conn: &mut PgConnection, names: &[String]) -> sqlx::Result<Vec<i64>> {
    if names.is_empty() {
        return Ok(vec![]);
    }
    sqlx::query(
        "INSERT INTO tags (name) SELECT unnest($1::text[]) ON CONFLICT (lower(name)) DO NOTHING",
    )
    .bind(names)
    .execute(&mut *conn)
    .await?;
    let lowered: Vec<String> = names.iter().map(|n| n.to_lowercase()).collect();
    sqlx::query_scalar("SELECT id FROM tags WHERE lower(name) = ANY($1)")
        .bind(&lowered)
        .fetch_all(&mut *conn)
        .await
}

/// Like [`ensure`], keyed by each spelling asked for (for imports, whose rows may spell
/// one tag differently). Case is folded by PostgreSQL, as the unique index does.
pub async fn ensure_named(
    conn: &mut PgConnection,
    names: &[String],
) -> sqlx::Result<std::collections::HashMap<String, i64>> {
    sqlx::query(
        "INSERT INTO tags (name) SELECT DISTINCT ON (lower(n)) n FROM unnest($1::text[]) n
         ON CONFLICT (lower(name)) DO NOTHING",
    )
    .bind(names)
    .execute(&mut *conn)
    .await?;
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT n, t.id FROM unnest($1::text[]) n JOIN tags t ON lower(t.name) = lower(n)",
    )
    .bind(names)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().collect())
}

/// Adds tags to one subscriber; the number of rows changed (0 if they had them all).
pub async fn apply(
    conn: &mut PgConnection,
    subscriber_id: i64,
    tag_ids: &[i64],
) -> sqlx::Result<u64> {
    let r = sqlx::query("UPDATE subscribers SET tag_ids = tag_ids_add(tag_ids, $2) WHERE id = $1 AND NOT tag_ids @> $2")
        .bind(subscriber_id)
        .bind(tag_ids)
        .execute(&mut *conn)
        .await?;
    Ok(r.rows_affected())
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TagRow {
    pub id: i64,
    pub name: String,
    pub is_topic: bool,
    pub subscribers: i64,
}

/// A tag without its subscriber count (cheap at any list size), for menus.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TagName {
    pub id: i64,
    pub name: String,
    pub is_topic: bool,
}

pub async fn names(pool: &PgPool) -> sqlx::Result<Vec<TagName>> {
    sqlx::query_as("SELECT id, name, is_topic FROM tags ORDER BY lower(name)")
        .fetch_all(pool)
        .await
}

/// Tags with how many subscribers carry each (for the tags page, not for menus): from
/// `counts` (the live index's) when given, else counted in one pass over the list.
pub async fn list(
    pool: &PgPool,
    counts: Option<&std::collections::HashMap<i64, u64>>,
) -> sqlx::Result<Vec<TagRow>> {
    let Some(counts) = counts else {
        return sqlx::query_as(
            "SELECT t.id, t.name, t.is_topic, coalesce(c.n, 0) AS subscribers
             FROM tags t LEFT JOIN (SELECT m.id, count(*) AS n FROM subscribers s, LATERAL (SELECT DISTINCT unnest(s.tag_ids) AS id) m GROUP BY 1) c USING (id)
             ORDER BY lower(t.name)",
        )
        .fetch_all(pool)
        .await;
    };
    Ok(names(pool)
        .await?
        .into_iter()
        .map(|t| TagRow {
            subscribers: counts.get(&t.id).map_or(0, |&n| n as i64),
            id: t.id,
            name: t.name,
            is_topic: t.is_topic,
        })
        .collect())
}

/// Topics with whether the subscriber has each (for the preference page).
pub async fn topics_for(
    pool: &PgPool,
    subscriber_id: i64,
) -> sqlx::Result<Vec<(i64, String, bool)>> {
    sqlx::query_as(
        "SELECT t.id, t.name, EXISTS (SELECT 1 FROM subscribers s WHERE s.id = $1 AND s.tag_ids @> ARRAY[t.id])
         FROM tags t WHERE t.is_topic ORDER BY lower(t.name)",
    )
    .bind(subscriber_id)
    .fetch_all(pool)
    .await
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_are_cleaned() {
        assert_eq!(
            super::clean_names([" VIP ", "vip", "", "마케팅", "Marketing", "marketing"]),
            vec!["VIP", "마케팅", "Marketing"]
        );
    }
}
