//! `POST /v1/traces`: OTLP/HTTP, protobuf or JSON, gzip or zstd.
//!
//! The same steps as `POST /v1/events` (admission, bounded body, durable append); only
//! decoding differs. Answers follow the OTLP/HTTP specification: 200 with an
//! `ExportTraceServiceResponse` (its `partial_success` counts skipped and rejected
//! spans), and failures as a `google.rpc.Status`, both in the request's encoding;
//! 429 and 503 carry `Retry-After`, which OTLP exporters honour.

use std::time::Instant;

use ais_model::auth::Principal;
use ais_model::otlp::{self, OtlpEncoding};
use ais_model::report::{Source, Tally};
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::error::{otlp_content_type, ErrorResponse, IngestError};
use crate::handler::{self, fail};
use crate::IngestState;

pub async fn post_traces(
    State(state): State<IngestState>,
    headers: HeaderMap,
    mut body: Body,
) -> Response {
    let started = Instant::now();
    // Without a recognisable media type, answer in protobuf: the OTLP default.
    let encoding = otlp_encoding(&headers);
    let response = match export(&state, &headers, &mut body).await {
        Ok((encoding, answer)) => {
            let mut response = (StatusCode::OK, answer).into_response();
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, otlp_content_type(encoding));
            response
        }
        Err(error) => {
            log_refusal(&error);
            let refusal = error.into_otlp_response(encoding.unwrap_or(OtlpEncoding::Protobuf));
            handler::finish_refusal(&state, &headers, &mut body, refusal).await
        }
    };
    metrics::counter!("ais_otlp_requests_total", "transport" => "http", "code" => handler::status_label(response.status()))
        .increment(1);
    metrics::histogram!("ais_otlp_request_seconds", "transport" => "http")
        .record(started.elapsed().as_secs_f64());
    response
}

pub(crate) fn log_refusal(error: &ErrorResponse) {
    if error.error.status().is_server_error() {
        tracing::warn!(error = %error.error, "otlp export refused");
    } else {
        tracing::debug!(error = %error.error, "otlp export refused");
    }
}

async fn export(
    state: &IngestState,
    headers: &HeaderMap,
    body: &mut Body,
) -> Result<(OtlpEncoding, Vec<u8>), ErrorResponse> {
    let handler::Admitted {
        principal,
        mut held,
    } = handler::admit(state, handler::authorization(headers))?;
    let encoding = otlp_encoding(headers).ok_or_else(|| {
        fail(IngestError::OtlpMediaType {
            found: headers
                .get(header::CONTENT_TYPE)
                .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
                .unwrap_or_default(),
        })
    })?;
    let body = handler::read_body(state, headers, body, &mut held).await?;
    let answer = export_spans(state, &principal, Source::OtlpHttp, body.bytes(), encoding).await?;
    drop(held);
    Ok((encoding, otlp::encode_response(&answer, encoding)))
}

/// Decodes, maps and appends one export request: shared by OTLP/HTTP and OTLP/gRPC.
pub(crate) async fn export_spans(
    state: &IngestState,
    principal: &Principal,
    source: Source,
    bytes: &[u8],
    encoding: OtlpEncoding,
) -> Result<otlp::ExportTraceServiceResponse, ErrorResponse> {
    let request = otlp::decode_request(bytes, encoding, state.config.max_events).map_err(fail)?;
    let context = handler::validation_context(state);
    let mut mapped = otlp::map_request(&request, &context);
    let accepted = mapped.events.len();
    let tenant = principal.tenant.as_str();
    state.limiter.charge(tenant, accepted);
    crate::payloads::apply(state.config.payloads.as_deref(), tenant, &mut mapped.events);
    let batch = handler::encode_batch(principal, &mapped.events);
    let partial_success = mapped.partial_success();
    let (skipped, rejected) = (mapped.skipped, mapped.rejected);
    let mut tally = Tally::default();
    tally.rejected = rejected as u64;
    tally.skipped = skipped as u64;
    tally.deprecated = mapped.deprecated;
    tally.add_events(&mapped.events);
    // The events borrow the request; encoded now, both are freed before the wait.
    drop(mapped);
    drop(request);
    handler::append(state, batch).await?;
    metrics::counter!("ais_otlp_spans_total", "outcome" => "accepted").increment(accepted as u64);
    metrics::counter!("ais_otlp_spans_total", "outcome" => "skipped").increment(skipped as u64);
    metrics::counter!("ais_otlp_spans_total", "outcome" => "rejected").increment(rejected as u64);
    metrics::counter!("ais_ingest_events_total", "outcome" => "accepted")
        .increment(accepted as u64);
    metrics::counter!("ais_ingest_events_total", "outcome" => "rejected")
        .increment(rejected as u64);
    state.report.record(tenant, source, tally);
    Ok(otlp::response(partial_success))
}

fn otlp_encoding(headers: &HeaderMap) -> Option<OtlpEncoding> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())?;
    let essence = content_type.split(';').next()?.trim().to_ascii_lowercase();
    match essence.as_str() {
        "application/x-protobuf" | "application/protobuf" => Some(OtlpEncoding::Protobuf),
        "application/json" => Some(OtlpEncoding::Json),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn media_types_pick_the_encoding() {
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_str(value).expect("header"),
            );
            otlp_encoding(&headers)
        };
        assert_eq!(with("application/x-protobuf"), Some(OtlpEncoding::Protobuf));
        assert_eq!(
            with("Application/JSON; charset=utf-8"),
            Some(OtlpEncoding::Json)
        );
        assert_eq!(with("text/plain"), None);
        assert_eq!(otlp_encoding(&HeaderMap::new()), None);
    }
}
