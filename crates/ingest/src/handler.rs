//! `POST /v1/events`, and the steps every ingest route shares: admission (key, rate
//! limit), bounded body reading and decompression, encoding and the durable append.
//!
//! A request refused before its body is read to the end (rate limit, no slot at the
//! edge, any error) first has the rest of its body read and discarded
//! ([`finish_refusal`]), up to [`DRAIN_MAX_BYTES`] and for at most [`DRAIN_PATIENCE`],
//! and only then is answered. hyper closes a connection whose request body was not
//! read to its end, and it has no lingering close: closing a socket with unread bytes
//! in its receive buffer makes the kernel answer the client's next segment with a
//! reset, which discards the refusal still in flight, so a client in the middle of a
//! large upload sees a transport error instead of the 503 and its `Retry-After`. Read
//! to its end, the body leaves the connection clean: the answer arrives and the
//! connection stays open for the retry. Answering first with `Connection: close` does
//! not help, for the same reset. Draining costs the network what accepting would have,
//! but no memory (each chunk is dropped as it arrives, outside the byte budget) and no
//! request slot; refusals draining at once are bounded like requests in flight
//! ([`crate::pressure::Pressure::enter_drain`]). A body declared or found longer than
//! the cap, a client that waits for `100 Continue`, a slow upload past the patience, or
//! a refusal past the bound of drains is answered at once with `Connection: close`.

use std::time::{Duration, Instant};

use ais_log::RecordBatch;
use ais_model::auth::Principal;
use ais_model::decode::{self, BodyFormat, ContentEncoding, Rejection, ValidationContext};
use ais_model::report::{Source, Tally};
use ais_model::time::{duration_ms, unix_now_ms};
use ais_model::{wire, Event};
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use http_body::Body as _;
use http_body_util::BodyExt;
use serde::Serialize;

use crate::error::{ErrorResponse, IngestError};
use crate::pressure::{Held, Overloaded};
use crate::IngestState;

/// The 202 body.
#[derive(Debug, Serialize)]
pub struct IngestResponse {
    pub accepted: usize,
    pub rejected: Vec<RejectionBody>,
}

#[derive(Debug, Serialize)]
pub struct RejectionBody {
    pub index: usize,
    pub error: String,
}

impl From<Rejection> for RejectionBody {
    fn from(rejection: Rejection) -> Self {
        Self {
            index: rejection.index,
            error: rejection.error,
        }
    }
}

/// Bytes reserved per event in the record batch before encoding; a typical encoded
/// event is 150–300 bytes, so one reservation usually serves the whole batch.
const ENCODED_BYTES_PER_EVENT_HINT: usize = 256;

/// Most body bytes read and discarded after a refusal: a batch of 1,000 events with
/// short prompts (a few hundred KB) several times over, far below the 16 MiB a body
/// may have. Past it the connection is closed instead.
pub const DRAIN_MAX_BYTES: usize = 2 * 1024 * 1024;
/// Longest a refusal waits for the rest of the body: a client uploading a body within
/// [`DRAIN_MAX_BYTES`] slower than this is better off with the reset.
pub const DRAIN_PATIENCE: Duration = Duration::from_secs(2);

pub async fn post_events(
    State(state): State<IngestState>,
    headers: HeaderMap,
    mut body: Body,
) -> Response {
    let started = Instant::now();
    let response = match ingest(&state, &headers, &mut body).await {
        Ok(ok) => {
            metrics::counter!("ais_ingest_events_total", "outcome" => "accepted")
                .increment(ok.accepted as u64);
            metrics::counter!("ais_ingest_events_total", "outcome" => "rejected")
                .increment(ok.rejected.len() as u64);
            (StatusCode::ACCEPTED, Json(ok)).into_response()
        }
        Err(error) => {
            if error.error.status().is_server_error() {
                tracing::warn!(error = %error.error, "ingest request refused");
            } else {
                tracing::debug!(error = %error.error, "ingest request refused");
            }
            finish_refusal(&state, &headers, &mut body, error.into_response()).await
        }
    };
    metrics::counter!("ais_ingest_requests_total", "code" => status_label(response.status()))
        .increment(1);
    metrics::histogram!("ais_ingest_request_seconds").record(started.elapsed().as_secs_f64());
    response
}

/// Status codes as static labels, so the label set stays bounded.
pub(crate) fn status_label(status: StatusCode) -> &'static str {
    match status.as_u16() {
        200 => "200",
        202 => "202",
        400 => "400",
        401 => "401",
        403 => "403",
        413 => "413",
        415 => "415",
        429 => "429",
        503 => "503",
        _ => "other",
    }
}

pub(crate) fn fail(error: impl Into<IngestError>) -> ErrorResponse {
    ErrorResponse {
        error: error.into(),
        retry_after: None,
    }
}

async fn ingest(
    state: &IngestState,
    headers: &HeaderMap,
    body: &mut Body,
) -> Result<IngestResponse, ErrorResponse> {
    let Admitted {
        principal,
        mut held,
    } = admit(state, authorization(headers))?;
    let format = body_format(headers).map_err(fail)?;
    let body = read_body(state, headers, body, &mut held).await?;
    let context = validation_context(state);
    let mut decoded = decode::decode_events(body.bytes(), format, &context).map_err(fail)?;

    let accepted = decoded.events.len();
    state.limiter.charge(&principal.tenant, accepted);
    let mut tally = Tally::default();
    tally.rejected = decoded.rejected.len() as u64;
    tally.add_events(&decoded.events);
    let rejected: Vec<RejectionBody> = decoded.rejected.into_iter().map(Into::into).collect();
    crate::payloads::apply(
        state.config.payloads.as_deref(),
        &principal.tenant,
        &mut decoded.events,
    );
    let batch = encode_batch(&principal, &decoded.events);
    // The events borrow the body; they are encoded now, so free both before waiting
    // on the log.
    drop(decoded.events);
    drop(body);
    append(state, batch).await?;
    drop(held);
    state
        .report
        .record(&principal.tenant, Source::HttpJson, tally);
    Ok(IngestResponse { accepted, rejected })
}

pub(crate) fn authorization(headers: &HeaderMap) -> Option<&[u8]> {
    headers
        .get(header::AUTHORIZATION)
        .map(|value| value.as_bytes())
}

/// An admitted request: who sent it, and its share of the edge's capacity, held
/// until it is answered.
pub(crate) struct Admitted {
    pub(crate) principal: Principal,
    pub(crate) held: Held,
}

/// Authenticates the key, checks the tenant's rate limit and takes a request slot,
/// before any body is read.
pub(crate) fn admit(
    state: &IngestState,
    authorization: Option<&[u8]>,
) -> Result<Admitted, ErrorResponse> {
    let principal =
        crate::admit_caller(&state.keyring, &state.limiter, authorization).map_err(|error| {
            match error {
                IngestError::RateLimited { retry_after_s, .. } => {
                    refuse(error, std::time::Duration::from_secs(retry_after_s))
                }
                other => fail(other),
            }
        })?;
    let held = state
        .pressure
        .enter()
        .map_err(|overloaded| overloaded_response(state, overloaded))?;
    Ok(Admitted { principal, held })
}

/// A refusal the client should retry later: counted by reason, sent with
/// `Retry-After`.
pub(crate) fn refuse(error: IngestError, retry_after: std::time::Duration) -> ErrorResponse {
    if let Some(reason) = error.refusal_reason() {
        metrics::counter!("ais_ingest_rejected_total", "reason" => reason).increment(1);
    }
    ErrorResponse {
        error,
        retry_after: Some(retry_after),
    }
}

pub(crate) fn overloaded_response(state: &IngestState, overloaded: Overloaded) -> ErrorResponse {
    refuse(
        IngestError::Saturated(overloaded.to_string()),
        state.config.retry_after,
    )
}

/// A request body, read within the limit and decompressed within it.
pub(crate) struct ReadBody {
    raw: Bytes,
    decompressed: Option<Vec<u8>>,
}

impl ReadBody {
    pub(crate) fn bytes(&self) -> &[u8] {
        self.decompressed.as_deref().unwrap_or(&self.raw)
    }
}

/// Reads the body within the size limit, reserving its bytes (and, once decompressed,
/// those too) from the edge's byte budget as they arrive.
pub(crate) async fn read_body(
    state: &IngestState,
    headers: &HeaderMap,
    body: &mut Body,
    held: &mut Held,
) -> Result<ReadBody, ErrorResponse> {
    let encoding = content_encoding(headers).map_err(fail)?;
    let limit = state.config.max_body_bytes;
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut length = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|error| {
            // axum reports an exceeded limit as a length-limit error somewhere in the chain.
            if is_length_limit(&error) {
                fail(IngestError::BodyTooLarge { limit })
            } else {
                fail(IngestError::BodyRead(error.to_string()))
            }
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        length += data.len();
        if length > limit {
            return Err(fail(IngestError::BodyTooLarge { limit }));
        }
        held.reserve(data.len())
            .map_err(|overloaded| overloaded_response(state, overloaded))?;
        chunks.push(data);
    }
    // Most bodies arrive in one chunk: kept as it is, not copied.
    let raw = if chunks.len() == 1 {
        chunks.pop().unwrap_or_default()
    } else {
        let mut joined = Vec::with_capacity(length);
        for chunk in &chunks {
            joined.extend_from_slice(chunk);
        }
        Bytes::from(joined)
    };
    let decompressed = match encoding {
        ContentEncoding::Identity => None,
        other => {
            // Reserved once decompressed: the size is unknown before, and at most one
            // decompression per worker thread runs at a time, each within the limit.
            let mut out = Vec::new();
            decode::decompress_into(&raw, other, limit, &mut out).map_err(fail)?;
            held.reserve(out.len())
                .map_err(|overloaded| overloaded_response(state, overloaded))?;
            Some(out)
        }
    };
    Ok(ReadBody { raw, decompressed })
}

/// Sends `refusal` once the rest of the request's body is read and discarded (see the
/// module docs), or at once with `Connection: close` where it is not.
pub(crate) async fn finish_refusal(
    state: &IngestState,
    headers: &HeaderMap,
    body: &mut Body,
    mut refusal: Response,
) -> Response {
    if !drain(state, headers, body).await {
        refusal.headers_mut().insert(
            header::CONNECTION,
            header::HeaderValue::from_static("close"),
        );
    }
    refusal
}

/// Reads what is left of `body` and drops it; whether it was read to its end.
async fn drain(state: &IngestState, headers: &HeaderMap, body: &mut Body) -> bool {
    if body.is_end_stream() {
        return true;
    }
    // Such a client sends the body only once told to continue, which polling it
    // would do: answered now, it never sends it.
    let expects_continue = headers
        .get(header::EXPECT)
        .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|text| text.trim().parse::<u64>().ok());
    if expects_continue || declared.is_some_and(|length| length > DRAIN_MAX_BYTES as u64) {
        return false;
    }
    let Some(_draining) = state.pressure.enter_drain() else {
        return false;
    };
    let drained = tokio::time::timeout(DRAIN_PATIENCE, discard(body, DRAIN_MAX_BYTES))
        .await
        .unwrap_or(false);
    let outcome = if drained { "drained" } else { "closed" };
    metrics::counter!("ais_ingest_refusal_bodies_total", "outcome" => outcome).increment(1);
    drained
}

/// Reads `body` to its end, dropping each chunk, unless it holds more than `cap` bytes.
pub(crate) async fn discard(body: &mut Body, cap: usize) -> bool {
    let mut read = 0usize;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return false;
        };
        if let Some(data) = frame.data_ref() {
            read += data.len();
            if read > cap {
                return false;
            }
        }
    }
    true
}

pub(crate) fn validation_context(state: &IngestState) -> ValidationContext<'_> {
    ValidationContext {
        now_ms: unix_now_ms(),
        max_age_ms: duration_ms(state.config.max_event_age),
        max_future_ms: duration_ms(state.config.max_event_future),
        max_events: state.config.max_events,
        prices: &state.prices,
        payload_max_bytes: state
            .config
            .payloads
            .as_ref()
            .map(|capture| capture.max_bytes),
    }
}

/// The log records of `events`, under the caller's tenant and stamped with its key.
pub(crate) fn encode_batch(principal: &Principal, events: &[Event<'_>]) -> RecordBatch {
    let mut batch = RecordBatch::with_capacity(events.len() * ENCODED_BYTES_PER_EVENT_HINT);
    let key = principal.key.as_deref();
    for event in events {
        batch.push_with(|buf| wire::encode_keyed(&principal.tenant, key, event, buf));
    }
    batch
}

/// Appends to the log and waits until the batch is durable.
pub(crate) async fn append(state: &IngestState, batch: RecordBatch) -> Result<(), ErrorResponse> {
    if batch.is_empty() {
        return Ok(());
    }
    state.log.append(batch).await.map_err(|error| {
        let (error, retry_after) = IngestError::from_log(error);
        refuse(error, retry_after.unwrap_or(state.config.retry_after))
    })?;
    Ok(())
}

fn is_length_limit(error: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = source {
        if current.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = current.source();
    }
    false
}

fn body_format(headers: &HeaderMap) -> Result<BodyFormat, IngestError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "application/json" => Ok(BodyFormat::Json),
        "application/x-ndjson" | "application/ndjson" | "application/jsonl" => {
            Ok(BodyFormat::Ndjson)
        }
        _ => Err(IngestError::MediaType {
            found: content_type.to_string(),
        }),
    }
}

pub(crate) fn content_encoding(headers: &HeaderMap) -> Result<ContentEncoding, IngestError> {
    let Some(value) = headers.get(header::CONTENT_ENCODING) else {
        return Ok(ContentEncoding::Identity);
    };
    let text = value.to_str().unwrap_or("").trim().to_ascii_lowercase();
    match text.as_str() {
        "" | "identity" => Ok(ContentEncoding::Identity),
        "gzip" | "x-gzip" => Ok(ContentEncoding::Gzip),
        "zstd" => Ok(ContentEncoding::Zstd),
        _ => Err(IngestError::Encoding {
            found: String::from_utf8_lossy(value.as_bytes()).into_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(
                name.clone(),
                HeaderValue::from_str(value).expect("header value"),
            );
        }
        map
    }

    #[test]
    fn media_types_map_to_formats_with_parameters_and_case_ignored() {
        let json = headers(&[(header::CONTENT_TYPE, "Application/JSON; charset=utf-8")]);
        assert_eq!(body_format(&json).ok(), Some(BodyFormat::Json));
        let ndjson = headers(&[(header::CONTENT_TYPE, "application/x-ndjson")]);
        assert_eq!(body_format(&ndjson).ok(), Some(BodyFormat::Ndjson));
        let text = headers(&[(header::CONTENT_TYPE, "text/plain")]);
        let error = body_format(&text).expect_err("text/plain is refused");
        assert!(error.to_string().contains("\"text/plain\""), "{error}");
        assert!(body_format(&HeaderMap::new()).is_err());
    }

    #[test]
    fn encodings_map_and_unknown_ones_are_named() {
        assert_eq!(
            content_encoding(&HeaderMap::new()).ok(),
            Some(ContentEncoding::Identity)
        );
        let gzip = headers(&[(header::CONTENT_ENCODING, "GZIP")]);
        assert_eq!(content_encoding(&gzip).ok(), Some(ContentEncoding::Gzip));
        let zstd = headers(&[(header::CONTENT_ENCODING, "zstd")]);
        assert_eq!(content_encoding(&zstd).ok(), Some(ContentEncoding::Zstd));
        let brotli = headers(&[(header::CONTENT_ENCODING, "br")]);
        let error = content_encoding(&brotli).expect_err("br is refused");
        assert_eq!(error.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert!(error.to_string().contains("\"br\""), "{error}");
    }

    #[test]
    fn status_labels_are_a_closed_set() {
        assert_eq!(status_label(StatusCode::ACCEPTED), "202");
        assert_eq!(status_label(StatusCode::IM_A_TEAPOT), "other");
    }
}
