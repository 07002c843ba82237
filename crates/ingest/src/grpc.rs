//! OTLP/gRPC: `opentelemetry.proto.collector.trace.v1.TraceService/Export`.
//!
//! A tonic service on its own listener, started by the binary beside the HTTP server.
//! The request message arrives as raw bytes ([`RawCodec`]) and goes through the same
//! bounded decoder and mapping as OTLP/HTTP, so a small message cannot decode into a
//! huge tree; tonic handles framing, `grpc-encoding` (gzip, zstd) and the message size
//! limit. Refusals carry the gRPC codes the OTLP specification assigns, and the
//! retryable ones (`UNAVAILABLE`, `RESOURCE_EXHAUSTED`) a `RetryInfo` with the delay.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use ais_model::otlp::{ExportTraceServiceResponse, OtlpEncoding};
use ais_model::report::Source;
use bytes::{Buf, Bytes};
use prost::Message;
use tonic::codec::{
    Codec, CompressionEncoding, DecodeBuf, Decoder, EnabledCompressionEncodings, EncodeBuf, Encoder,
};
use tonic::codegen::{http, Body, BoxFuture, StdError};
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::{Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::error::ErrorResponse;
use crate::otlp_http::{export_spans, log_refusal};
use crate::{handler, IngestState};

const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// The trace service, ready for `tonic::transport::Server::add_service`.
#[derive(Clone)]
pub struct TraceService {
    state: Arc<IngestState>,
}

impl TraceService {
    pub fn new(state: IngestState) -> Self {
        Self {
            state: Arc::new(state),
        }
    }
}

impl NamedService for TraceService {
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
}

/// Serves OTLP/gRPC on `listener` until `shutdown` resolves, then finishes in-flight
/// exports (tonic's graceful shutdown) and returns.
pub async fn serve(
    state: IngestState,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    tonic::transport::Server::builder()
        .add_service(TraceService::new(state))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}

impl<B> tower_service::Service<http::Request<B>> for TraceService
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != EXPORT_PATH {
            return Box::pin(async move {
                Ok(Status::unimplemented("only TraceService/Export is served here").into_http())
            });
        }
        let limit = self.state.config.max_body_bytes;
        let export = Export(self.state.clone());
        let mut accepted = EnabledCompressionEncodings::default();
        accepted.enable(CompressionEncoding::Gzip);
        accepted.enable(CompressionEncoding::Zstd);
        Box::pin(async move {
            // Answers go uncompressed: they are a few bytes.
            let mut grpc = Grpc::new(RawCodec)
                .apply_compression_config(accepted, EnabledCompressionEncodings::default())
                .apply_max_message_size_config(Some(limit), None);
            Ok(grpc.unary(export, request).await)
        })
    }
}

struct Export(Arc<IngestState>);

impl UnaryService<Bytes> for Export {
    type Response = ExportTraceServiceResponse;
    type Future = BoxFuture<Response<Self::Response>, Status>;

    fn call(&mut self, request: Request<Bytes>) -> Self::Future {
        let state = self.0.clone();
        Box::pin(async move {
            let started = Instant::now();
            let outcome = export(&state, request).await;
            let code = match &outcome {
                Ok(_) => "OK",
                Err(status) => code_label(status.code()),
            };
            metrics::counter!("ais_otlp_requests_total", "transport" => "grpc", "code" => code)
                .increment(1);
            metrics::histogram!("ais_otlp_request_seconds", "transport" => "grpc")
                .record(started.elapsed().as_secs_f64());
            outcome
        })
    }
}

async fn export(
    state: &IngestState,
    request: Request<Bytes>,
) -> Result<Response<ExportTraceServiceResponse>, Status> {
    let authorization = request
        .metadata()
        .get("authorization")
        .map(|value| value.as_bytes().to_vec());
    let handler::Admitted {
        principal,
        mut held,
    } = handler::admit(state, authorization.as_deref()).map_err(to_status)?;
    let bytes = request.into_inner();
    // tonic has read the message already (within its size limit); it is held now.
    held.reserve(bytes.len())
        .map_err(|overloaded| to_status(handler::overloaded_response(state, overloaded)))?;
    let answer = export_spans(
        state,
        &principal,
        Source::OtlpGrpc,
        &bytes,
        OtlpEncoding::Protobuf,
    )
    .await
    .map_err(to_status)?;
    drop(held);
    Ok(Response::new(answer))
}

/// One refusal in gRPC terms; no side effects beyond the log line.
fn to_status(error: ErrorResponse) -> Status {
    log_refusal(&error);
    let code = error.error.grpc_code();
    let message = error.error.to_string();
    match error.retry_after_for(error.error.status()) {
        Some(delay)
            if matches!(
                code,
                tonic::Code::Unavailable | tonic::Code::ResourceExhausted
            ) =>
        {
            let mut status = Status::with_error_details(
                code,
                message,
                ErrorDetails::with_retry_info(Some(delay)),
            );
            // The OpenTelemetry Python exporter reads RetryInfo from this trailer rather
            // than from the status details; send it both ways.
            let retry_info = tonic_types::pb::RetryInfo {
                retry_delay: prost_types::Duration::try_from(delay).ok(),
            };
            status.metadata_mut().insert_bin(
                "google.rpc.retryinfo-bin",
                tonic::metadata::MetadataValue::from_bytes(&retry_info.encode_to_vec()),
            );
            status
        }
        _ => Status::new(code, message),
    }
}

/// gRPC codes as static labels, a closed set.
fn code_label(code: tonic::Code) -> &'static str {
    match code {
        tonic::Code::InvalidArgument => "INVALID_ARGUMENT",
        tonic::Code::Unauthenticated => "UNAUTHENTICATED",
        tonic::Code::PermissionDenied => "PERMISSION_DENIED",
        tonic::Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        tonic::Code::Unavailable => "UNAVAILABLE",
        _ => "other",
    }
}

/// Requests stay bytes (decoded later by the bounded decoder); responses are prost.
struct RawCodec;

impl Codec for RawCodec {
    type Encode = ExportTraceServiceResponse;
    type Decode = Bytes;
    type Encoder = ResponseEncoder;
    type Decoder = BytesDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        ResponseEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        BytesDecoder
    }
}

struct ResponseEncoder;

impl Encoder for ResponseEncoder {
    type Item = ExportTraceServiceResponse;
    type Error = Status;

    fn encode(&mut self, item: Self::Item, dst: &mut EncodeBuf<'_>) -> Result<(), Self::Error> {
        item.encode(dst)
            .map_err(|error| Status::internal(format!("cannot encode the response: {error}")))
    }
}

struct BytesDecoder;

impl Decoder for BytesDecoder {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Self::Error> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}
