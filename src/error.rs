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
    BadRequest(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unprocessable(String),
    #[error("{0}")]
    TooManyRequests(String),
    #[error("the form expired or was sent from another site; reload the page and try again")]
    Csrf,
    #[error("the service is not ready: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// What the error renderer needs, carried in the response's extensions.
#[derive(Debug, Clone)]
pub struct ErrorInfo {
    pub status: StatusCode,
    pub message: String,
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
        let message = match &self {
            Self::Internal(e) => {
                tracing::error!(error = %format!("{e:#}"), "internal error");
                "something went wrong on our side; it has been logged".to_string()
            }
            other => other.to_string(),
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
                        constraint_message(constraint)
                            .unwrap_or("that already exists")
                            .to_string(),
                    );
                }
                Some("23503") => {
                    return Self::Conflict(
                        constraint_message(constraint)
                            .unwrap_or(
                                "it refers to something that no longer exists, or is still in use",
                            )
                            .to_string(),
                    );
                }
                Some(
                    "23514" | "23502" | "22001" | "22P02" | "22P05" | "22003" | "22021" | "22007"
                    | "22008",
                ) => {
                    return Self::Unprocessable(
                        constraint_message(constraint)
                            .unwrap_or("some of the values are not valid")
                            .to_string(),
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

/// Human messages for named constraints. Modules add theirs here as they grow.
fn constraint_message(name: &str) -> Option<&'static str> {
    Some(match name {
        "users_email_key" => "a user with that email address already exists",
        "users_email_check" => "that email address is too short or too long",
        _ => return None,
    })
}
