//! One application error type. Handlers return `AppResult<T>`; the response is rendered
//! by [`crate::web::errors`] as an HTML page for the dashboard or JSON under `/api`.
//! Internal errors are logged with their whole cause chain and never shown to users.

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
};

pub type AppResult<T, E = AppError> = Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("not found")]
    NotFound,
    #[error("you do not have permission to do that")]
    Forbidden,
    #[error("{0}")]
    BadRequest(Problem),
    #[error("{0}")]
    Conflict(Problem),
    #[error("{0}")]
    Unprocessable(Problem),
    #[error("{0}")]
    TooManyRequests(Problem),
    #[error("{0}")]
    PayloadTooLarge(Problem),
    #[error("the form expired or was sent from another site; reload the page and try again")]
    Csrf,
    #[error("the service is not ready: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// A problem a person can do something about, kept as a value until a page or a JSON
/// answer puts it into words: `web::i18n` has a text for every variant in every
/// language (`Strings::problem`); `Display` is the English text, for logs and the API.
/// Handlers and modules pass these around, never English sentences.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    // Requests.
    FormTooLarge,
    FormUnreadable,
    UploadUnreadable,
    UploadInterrupted,
    /// The upload is larger than Loopline accepts (the limit in MiB).
    UploadTooLarge {
        max_mib: u64,
    },
    FileEmpty,
    ChooseFile,
    // Constraints without a more precise message.
    AlreadyExists,
    StillReferenced,
    InvalidValues,
    // Accounts.
    AlreadySetUp,
    UserEmailTaken,
    UserEmailLength,
    WrongCurrentPassword,
    LastOwner,
    CannotRemoveSelf,
    ChooseRole,
    ChooseLanguage,
    SignInThrottled {
        minutes: i64,
    },
    Password(crate::accounts::PasswordError),
    Address(crate::address::AddressError),
    JobNotFailed,
    // Audience.
    ChooseAction,
    ChooseSegment,
    BulkNeedsTag,
    BulkNeedsSelection,
    LifecycleRange,
    LifecycleAtLeastOneDay,
    LifecycleChurnAfterActive,
    FieldKey,
    FieldLabel,
    FieldType,
    FieldChoices,
    FieldTaken,
    FormName,
    FormSlug,
    FormSlugTaken,
    SegmentName,
    SegmentTaken,
    Segment(crate::audience::segments::SegmentError),
    /// A row of the segment builder (counted from 1) that is not filled in right.
    SegmentRow {
        row: usize,
        problem: SegmentRowProblem,
    },
    /// The advanced JSON definition does not parse (or is not a definition) here.
    SegmentJson {
        line: usize,
        column: usize,
    },
    ImportUnknownChoice {
        column: usize,
    },
    ImportUnknownField {
        column: usize,
    },
    ImportNoEmail,
    ImportEmailTwice {
        first: usize,
        second: usize,
    },
    /// Two columns set to the same target (a `Target::key`, e.g. `status`).
    ImportTargetTwice {
        target: String,
        first: usize,
        second: usize,
    },
    ImportStarted,
    ImportFinished,
    // Outbox.
    TestRecipient(crate::address::AddressError),
    TestSubject,
    /// The mail template does not compile or render: where, and what kind of problem
    /// (`Problem::detail` has the template engine's own English words).
    Template(crate::delivery::render::RenderError),
    /// Words already in the reader's language (the subscriber pages pick their own).
    Said(String),
}

/// What is wrong with one row of the segment builder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentRowProblem {
    ChooseStatus,
    ChooseStage,
    ChooseTag,
    ChooseComparison,
    Days,
    Mails,
    UnknownCondition,
}

impl Problem {
    /// Technical detail in English to show second (under the worded problem), if any.
    pub fn detail(&self) -> Option<&str> {
        match self {
            Problem::Template(e) => e.detail(),
            _ => None,
        }
    }
}

/// A failure stored as a code and its parameters (`error_code`, `error_params` columns)
/// from a `#[serde(tag = "code")]` enum: the pair to store.
pub fn to_stored<T: serde::Serialize>(value: &T) -> (String, serde_json::Value) {
    let mut v = serde_json::to_value(value).unwrap_or_default();
    let code = v
        .as_object_mut()
        .and_then(|o| o.remove("code"))
        .and_then(|c| c.as_str().map(str::to_string))
        .unwrap_or_default();
    (code, v)
}

/// Reads back what [`to_stored`] wrote; `None` for a code this version does not know
/// (or parameters that do not fit it).
pub fn from_stored<T: serde::de::DeserializeOwned>(
    code: &str,
    params: &serde_json::Value,
) -> Option<T> {
    let mut v = match params {
        serde_json::Value::Object(o) => o.clone(),
        _ => serde_json::Map::new(),
    };
    v.insert("code".into(), code.into());
    serde_json::from_value(serde_json::Value::Object(v)).ok()
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&crate::web::strings_for(crate::web::Lang::En).problem(self))
    }
}

/// What the error renderer needs, carried in the response's extensions.
#[derive(Debug, Clone)]
pub struct ErrorInfo {
    pub status: StatusCode,
    pub message: Message,
}

/// An error response's explanation, worded by the renderer in the reader's language.
#[derive(Debug, Clone)]
pub enum Message {
    NotFound,
    Forbidden,
    Csrf,
    Internal,
    Unavailable(String),
    Problem(Problem),
    /// A rejection from the framework: the status and its own English words.
    Rejection(u16, String),
}

impl AppError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::Forbidden | Self::Csrf => StatusCode::FORBIDDEN,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn internal(e: impl Into<anyhow::Error>) -> Self {
        Self::Internal(e.into())
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = match self {
            Self::Internal(e) => {
                tracing::error!(error = %format!("{e:#}"), "internal error");
                Message::Internal
            }
            Self::NotFound => Message::NotFound,
            Self::Forbidden => Message::Forbidden,
            Self::Csrf => Message::Csrf,
            Self::Unavailable(m) => Message::Unavailable(m),
            Self::BadRequest(p)
            | Self::Conflict(p)
            | Self::Unprocessable(p)
            | Self::TooManyRequests(p)
            | Self::PayloadTooLarge(p) => Message::Problem(p),
        };
        let mut res = status.into_response();
        res.extensions_mut().insert(ErrorInfo { status, message });
        res
    }
}

/// Database errors: a violated constraint is the user's problem (4xx with a message
/// they understand); anything else is ours (500).
impl From<sqlx::Error> for AppError {
    fn from(e: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &e {
            let constraint = db.constraint().unwrap_or_default();
            match db.code().as_deref() {
                Some("23505") => {
                    return Self::Conflict(
                        constraint_problem(constraint).unwrap_or(Problem::AlreadyExists),
                    );
                }
                Some("23503") => {
                    return Self::Conflict(
                        constraint_problem(constraint).unwrap_or(Problem::StillReferenced),
                    );
                }
                Some(
                    "23514" | "23502" | "22001" | "22P02" | "22P05" | "22003" | "22021" | "22007"
                    | "22008",
                ) => {
                    return Self::Unprocessable(
                        constraint_problem(constraint).unwrap_or(Problem::InvalidValues),
                    );
                }
                _ => {}
            }
        }
        Self::Internal(anyhow::Error::new(e).context("database error"))
    }
}

impl From<askama::Error> for AppError {
    fn from(e: askama::Error) -> Self {
        Self::Internal(anyhow::Error::new(e).context("rendering a template"))
    }
}

/// What a named constraint means to a person. Modules add theirs here as they grow.
fn constraint_problem(name: &str) -> Option<Problem> {
    Some(match name {
        "users_email_key" => Problem::UserEmailTaken,
        "users_email_check" => Problem::UserEmailLength,
        _ => return None,
    })
}
