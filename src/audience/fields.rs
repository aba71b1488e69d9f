//! Custom fields: typed values stored in `subscribers.fields` (JSONB), defined in
//! `custom_fields`.

use serde::{Deserialize, Serialize};

/// The type of a custom field. Values are stored as JSON: text and choice as strings,
/// number as a JSON number, date as an ISO `YYYY-MM-DD` string, boolean as true/false.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type)]
#[sqlx(type_name = "field_type", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum FieldType {
    Text,
    Number,
    Date,
    Boolean,
    Choice,
}

/// A field definition.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct FieldDef {
    pub key: String,
    pub label: String,
    #[sqlx(rename = "type")]
    pub field_type: FieldType,
    pub choices: Vec<String>,
}

/// A validated new field definition.
#[derive(Debug, Clone)]
pub struct NewField {
    pub key: String,
    pub label: String,
    pub field_type: FieldType,
    pub choices: Vec<String>,
}

impl NewField {
    pub fn parse(
        key: &str,
        label: &str,
        field_type: &str,
        choices: &str,
    ) -> Result<Self, crate::Problem> {
        use crate::Problem;
        let key = key.trim().to_ascii_lowercase();
        let ok = key.len() <= 63
            && key.chars().next().is_some_and(|c| c.is_ascii_lowercase())
            && key
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !ok {
            return Err(Problem::FieldKey);
        }
        let label = label.trim();
        if label.is_empty() || label.chars().count() > 100 {
            return Err(Problem::FieldLabel);
        }
        let field_type: FieldType =
            serde_json::from_value(serde_json::Value::String(field_type.to_string()))
                .map_err(|_| Problem::FieldType)?;
        let choices: Vec<String> = choices
            .split(',')
            .map(|c| c.trim().to_string())
            .filter(|c| !c.is_empty())
            .collect();
        if field_type == FieldType::Choice && choices.is_empty() {
            return Err(Problem::FieldChoices);
        }
        Ok(Self {
            key,
            label: label.to_string(),
            field_type,
            choices,
        })
    }
}

pub async fn create(pool: &sqlx::PgPool, f: &NewField) -> crate::AppResult<()> {
    sqlx::query("INSERT INTO custom_fields (key, label, type, choices) VALUES ($1, $2, $3, $4)")
        .bind(&f.key)
        .bind(&f.label)
        .bind(f.field_type)
        .bind(&f.choices)
        .execute(pool)
        .await
        .map_err(|e| match crate::AppError::from(e) {
            crate::AppError::Conflict(_) => crate::AppError::Conflict(crate::Problem::FieldTaken),
            other => other,
        })?;
    Ok(())
}
