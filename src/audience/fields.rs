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
