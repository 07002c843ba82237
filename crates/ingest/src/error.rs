//! Every way an ingest request can fail, and its HTTP answer: status, `{"error": "…"}`
//! and `Retry-After` where the caller should come back. Mapping lives here alone;
//! building the response has no side effects (the handler records metrics).

use std::time::Duration;

use ais_log::LogError;
use ais_model::auth::AuthError;
use ais_model::decode::DecodeError;
use ais_model::otlp::{self, OtlpDecodeError, OtlpEncoding};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("unsupported media type {found:?}: send application/json or application/x-ndjson")]
    MediaType { found: String },
    #[error("unsupported content encoding {found:?}: send gzip, zstd or no Content-Encoding")]
    Encoding { found: String },
    #[error("body is larger than {limit} bytes; split it into smaller requests")]
    BodyTooLarge { limit: usize },
    #[error("body could not be read: {0}")]
    BodyRead(String),
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error(transparent)]
    Otlp(#[from] OtlpDecodeError),
    #[error("unsupported media type {found:?}: send application/x-protobuf or application/json")]
    OtlpMediaType { found: String },
    #[error("pipeline is saturated ({0}); retry later")]
    Saturated(String),
    #[error("log is unavailable ({0}); retry later")]
    LogUnavailable(String),
    #[error("log is unavailable and its overflow buffer is full ({0}); retry later")]
    OverflowFull(String),
    #[error("tenant is over its rate limit of {limit} events/s; retry after {retry_after_s} s")]
    RateLimited {
        limit: f64,
        retry_after_s: u64,
        reset_s: u64,
    },
}

/// Every `reason` of `ais_ingest_rejected_total`.
pub const REFUSAL_REASONS: [&str; 4] = [
    "rate_limited",
    "overloaded",
    "log_unavailable",
    "overflow_full",
];

impl IngestError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Auth(AuthError::Missing | AuthError::Unknown) => StatusCode::UNAUTHORIZED,
            Self::Auth(AuthError::WrongKind { .. }) => StatusCode::FORBIDDEN,
            Self::MediaType { .. } | Self::OtlpMediaType { .. } | Self::Encoding { .. } => {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            Self::BodyTooLarge { .. }
            | Self::Decode(DecodeError::TooLarge { .. } | DecodeError::TooManyEvents { .. })
            | Self::Otlp(
                OtlpDecodeError::TooManySpans { .. } | OtlpDecodeError::TooManyElements { .. },
            ) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BodyRead(_) | Self::Decode(_) | Self::Otlp(_) => StatusCode::BAD_REQUEST,
            Self::Saturated(_) | Self::LogUnavailable(_) | Self::OverflowFull(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    /// The gRPC status code of the same refusal, as the OTLP specification assigns
    /// them: retryable (`UNAVAILABLE`, `RESOURCE_EXHAUSTED`) only where a retry can
    /// succeed; a body too large is `INVALID_ARGUMENT`, since resending it fails again.
    pub fn grpc_code(&self) -> tonic::Code {
        match self.status() {
            StatusCode::UNAUTHORIZED => tonic::Code::Unauthenticated,
            StatusCode::FORBIDDEN => tonic::Code::PermissionDenied,
            StatusCode::TOO_MANY_REQUESTS => tonic::Code::ResourceExhausted,
            StatusCode::SERVICE_UNAVAILABLE => tonic::Code::Unavailable,
            _ => tonic::Code::InvalidArgument,
        }
    }

    /// The `reason` label of `ais_ingest_rejected_total` for a refusal the client
    /// should retry (a closed set); `None` for requests that are wrong as sent.
    /// The `reason` label of `ais_ingest_rejected_total`: one of [`REFUSAL_REASONS`].
    pub fn refusal_reason(&self) -> Option<&'static str> {
        match self {
            Self::RateLimited { .. } => Some("rate_limited"),
            Self::Saturated(_) => Some("overloaded"),
            Self::LogUnavailable(_) => Some("log_unavailable"),
            Self::OverflowFull(_) => Some("overflow_full"),
            _ => None,
        }
    }

    /// Maps a log failure: full or closed is back-pressure, anything else an outage.
    pub fn from_log(error: LogError) -> (Self, Option<Duration>) {
        match error {
            LogError::Full {
                detail,
                retry_after,
            } => (Self::Saturated(detail), Some(retry_after)),
            LogError::OverflowFull {
                detail,
                retry_after,
            } => (Self::OverflowFull(detail), Some(retry_after)),
            LogError::Closed => (Self::Saturated("shutting down".to_string()), None),
            other => (Self::LogUnavailable(other.to_string()), None),
        }
    }
}

/// An error with the `Retry-After` to send, if any.
pub struct ErrorResponse {
    pub error: IngestError,
    pub retry_after: Option<Duration>,
}

impl ErrorResponse {
    /// The OTLP/HTTP form: a `google.rpc.Status` in the request's encoding, with the
    /// same status and headers as the native form.
    pub fn into_otlp_response(self, encoding: OtlpEncoding) -> Response {
        let status = self.error.status();
        let body = otlp::encode_status(
            self.error.grpc_code() as i32,
            &self.error.to_string(),
            encoding,
        );
        let mut response = (status, body).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, otlp_content_type(encoding));
        self.add_headers(status, &mut response);
        response
    }

    fn add_headers(&self, status: StatusCode, response: &mut Response) {
        if let IngestError::RateLimited { limit, reset_s, .. } = &self.error {
            // IETF httpapi RateLimit header fields (draft): quota per 1 s window.
            let headers = response.headers_mut();
            for (name, value) in [
                ("ratelimit-limit", format!("{}", limit.round() as u64)),
                ("ratelimit-remaining", "0".to_string()),
                ("ratelimit-reset", reset_s.to_string()),
            ] {
                if let Ok(value) = HeaderValue::from_str(&value) {
                    headers.insert(name, value);
                }
            }
        }
        if let Some(after) = self.retry_after_for(status) {
            // Whole seconds, at least 1 (RFC 9110 delay-seconds).
            let seconds = after.as_secs().max(1);
            if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
        }
    }

    /// The delay to announce: the one given, else 1 s for every retryable refusal.
    pub fn retry_after_for(&self, status: StatusCode) -> Option<Duration> {
        match (status, self.retry_after) {
            (_, Some(after)) => Some(after),
            (StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS, None) => {
                Some(Duration::from_secs(1))
            }
            _ => None,
        }
    }
}

/// The media type of an OTLP/HTTP answer, the request's own.
pub fn otlp_content_type(encoding: OtlpEncoding) -> HeaderValue {
    HeaderValue::from_static(match encoding {
        OtlpEncoding::Protobuf => "application/x-protobuf",
        OtlpEncoding::Json => "application/json",
    })
}

impl IntoResponse for ErrorResponse {
    fn into_response(self) -> Response {
        let status = self.error.status();
        let body = Json(serde_json::json!({ "error": self.error.to_string() }));
        let mut response = (status, body).into_response();
        self.add_headers(status, &mut response);
        response
    }
}
