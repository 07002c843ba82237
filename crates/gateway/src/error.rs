//! Every way a call through the gateway can fail, and its answer in OpenAI's error
//! format (Anthropic's for `/v1/messages`): `{"error": {"message", "type", "param", "code"}}` with the status an OpenAI
//! SDK expects (401, 404, 413, 429, 502, 504, …). The mapping lives here alone;
//! building the response has no side effects. An upstream's own error body is never
//! relayed verbatim: its message is carried inside our format.

use std::time::Duration;

use ais_ingest::error::IngestError;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// A missing, unknown or wrong-kind key, or the tenant over its rate limit.
    #[error(transparent)]
    Admission(IngestError),
    /// A budget of the tenant has no room for the call's estimate.
    #[error("{0}")]
    OverBudget(String),
    #[error("the gateway holds {limit} calls, its most at once; retry shortly")]
    Overloaded { limit: usize },
    #[error("request body is larger than {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("request body could not be read: {0}")]
    BodyRead(String),
    #[error("request body is not a JSON object: {0}")]
    InvalidJson(String),
    #[error("request body has no \"model\" string")]
    MissingModel,
    #[error("the model {0:?} does not exist or you do not have access to it")]
    UnknownModel(String),
    #[error("the model {model:?} is served by {provider} upstreams: call it through their API (/v1/chat/completions for openai, /v1/messages for anthropic)")]
    WrongApi {
        model: String,
        provider: &'static str,
    },
    /// The upstream refused the request as sent (a 4xx other than 408 and 429): the
    /// caller's to fix, so not retried.
    #[error("upstream refused the request: {message}")]
    UpstreamRefused { status: StatusCode, message: String },
    #[error("every upstream of model {model:?} failed ({last})")]
    Unavailable { model: String, last: String },
    #[error("no upstream of model {model:?} answered in time ({last})")]
    Timeout { model: String, last: String },
}

impl GatewayError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Admission(error) => error.status(),
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BodyRead(_)
            | Self::InvalidJson(_)
            | Self::MissingModel
            | Self::WrongApi { .. } => StatusCode::BAD_REQUEST,
            Self::UnknownModel(_) => StatusCode::NOT_FOUND,
            Self::UpstreamRefused { status, .. } => *status,
            Self::Overloaded { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::OverBudget(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable { .. } => StatusCode::BAD_GATEWAY,
            Self::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// OpenAI's `type` of the error.
    fn kind(&self) -> &'static str {
        if matches!(self, Self::OverBudget(_)) {
            // OpenAI's type for a spending limit reached.
            return "insufficient_quota";
        }
        match self.status() {
            StatusCode::UNAUTHORIZED => "authentication_error",
            StatusCode::FORBIDDEN => "permission_error",
            StatusCode::NOT_FOUND => "invalid_request_error",
            StatusCode::TOO_MANY_REQUESTS => "rate_limit_error",
            status if status.is_server_error() => "api_error",
            _ => "invalid_request_error",
        }
    }

    /// OpenAI's `code`, and the `error_type` of the call's event: a closed set.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Admission(IngestError::RateLimited { .. }) => "rate_limit_exceeded",
            Self::Admission(error) if error.status() == StatusCode::FORBIDDEN => {
                "insufficient_permissions"
            }
            Self::Admission(_) => "invalid_api_key",
            Self::Overloaded { .. } => "overloaded",
            Self::OverBudget(_) => "over_budget",
            Self::BodyTooLarge { .. } => "request_too_large",
            Self::BodyRead(_) | Self::InvalidJson(_) => "invalid_json",
            Self::MissingModel => "missing_model",
            Self::UnknownModel(_) => "model_not_found",
            Self::WrongApi { .. } => "wrong_api",
            Self::UpstreamRefused { .. } => "upstream_refused",
            Self::Unavailable { .. } => "upstream_unavailable",
            Self::Timeout { .. } => "timeout",
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Admission(IngestError::RateLimited { retry_after_s, .. }) => {
                Some(Duration::from_secs(*retry_after_s))
            }
            Self::Unavailable { .. } | Self::Overloaded { .. } => Some(Duration::from_secs(1)),
            _ => None,
        }
    }
}

impl GatewayError {
    /// The same failure in Anthropic's error format, for `/v1/messages`:
    /// `{"type": "error", "error": {"type", "message"}}`.
    pub fn into_anthropic_response(self) -> Response {
        let status = self.status();
        let kind = match status {
            StatusCode::UNAUTHORIZED => "authentication_error",
            StatusCode::FORBIDDEN => "permission_error",
            StatusCode::NOT_FOUND => "not_found_error",
            StatusCode::PAYLOAD_TOO_LARGE => "request_too_large",
            StatusCode::TOO_MANY_REQUESTS => "rate_limit_error",
            StatusCode::SERVICE_UNAVAILABLE => "overloaded_error",
            status if status.is_server_error() => "api_error",
            _ => "invalid_request_error",
        };
        let body = serde_json::json!({
            "type": "error",
            "error": {"type": kind, "message": self.to_string()},
        });
        let mut response = (status, Json(body)).into_response();
        if let Some(after) = self.retry_after() {
            if let Ok(value) = HeaderValue::from_str(&after.as_secs().max(1).to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        response
    }
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        let status = self.status();
        let param = matches!(self, Self::MissingModel | Self::UnknownModel(_)).then_some("model");
        let body = serde_json::json!({
            "error": {
                "message": self.to_string(),
                "type": self.kind(),
                "param": param,
                "code": self.code(),
            }
        });
        let mut response = (status, Json(body)).into_response();
        if let Some(after) = self.retry_after() {
            if let Ok(value) = HeaderValue::from_str(&after.as_secs().max(1).to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use ais_model::auth::AuthError;
    use http_body_util::BodyExt;

    use super::*;

    async fn body_of(error: GatewayError) -> (StatusCode, serde_json::Value) {
        let response = error.into_response();
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        (status, serde_json::from_slice(&bytes).expect("json"))
    }

    #[tokio::test]
    async fn errors_take_openai_shape_and_status() {
        let (status, body) = body_of(GatewayError::UnknownModel("gpt-9".into())).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body["error"]["code"], "model_not_found");
        assert_eq!(body["error"]["param"], "model");
        assert!(body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("gpt-9")));
        let (status, body) = body_of(GatewayError::Admission(IngestError::Auth(
            AuthError::Unknown,
        )))
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body["error"]["type"], "authentication_error");
        let (status, _) = body_of(GatewayError::Timeout {
            model: "m".into(),
            last: "attempt timed out".into(),
        })
        .await;
        assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
    }
}
