//! Query errors and their HTTP answers (`{"error": "…"}`), mapped in one place.

use ais_model::auth::AuthError;
use ais_model::dead_letter::DeadLetterError;
use ais_store::StoreError;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("only admin keys may read another tenant")]
    ForeignTenant,
    #[error("only admin keys may break down or filter by tenant")]
    TenantDimension,
    /// `include=payloads` or `q=` with a key whose kind `[payloads] readers` leaves out.
    #[error("{kind} keys may not read payloads (include=payloads, q=): [payloads] readers allows {allowed}")]
    PayloadsForbidden { kind: &'static str, allowed: String },
    #[error("{0}")]
    BadParameter(String),
    #[error("store unavailable: {0}")]
    Store(StoreError),
    /// A query stopped at one of its bounds (time, groups); the text names it.
    #[error("{0}")]
    Limit(String),
    /// The server has no such engine configured; the text says what to start it with.
    #[error("{0}")]
    NotConfigured(String),
    /// The dead-letter queue's engine failed; its text says which part.
    #[error(transparent)]
    DeadLetters(#[from] DeadLetterError),
    #[error("log unavailable: {0}")]
    Log(String),
    /// An engine the answer needs cannot be reached now; the text names it.
    #[error("{0}")]
    Unavailable(String),
}

impl QueryError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Auth(AuthError::Missing | AuthError::Unknown) => StatusCode::UNAUTHORIZED,
            Self::Auth(AuthError::WrongKind { .. })
            | Self::ForeignTenant
            | Self::TenantDimension
            | Self::PayloadsForbidden { .. } => StatusCode::FORBIDDEN,
            Self::BadParameter(_) => StatusCode::BAD_REQUEST,
            Self::Store(_)
            | Self::Limit(_)
            | Self::DeadLetters(DeadLetterError::Store(_) | DeadLetterError::Unavailable(_))
            | Self::Log(_)
            | Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::NotConfigured(_) => StatusCode::NOT_IMPLEMENTED,
        }
    }
}

impl From<StoreError> for QueryError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Limit(message) => Self::Limit(message),
            other => Self::Store(other),
        }
    }
}

impl IntoResponse for QueryError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut response = (
            status,
            Json(serde_json::json!({ "error": self.to_string() })),
        )
            .into_response();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            );
        }
        response
    }
}
