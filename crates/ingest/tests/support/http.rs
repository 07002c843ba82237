//! A request of a case, its answer read whole, and the checks an answer must pass.

use ais_model::otlp::{ExportTraceServiceRequest, ExportTraceServiceResponse, RpcStatus};
use axum::http::{HeaderMap, Method, StatusCode};
use prost::Message;
use serde_json::Value;

use super::{JSON, KEY, PROTOBUF};

/// One request of a case.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: Method,
    pub path: &'static str,
    /// Sent as `Authorization: Bearer KEY`.
    pub key: Option<&'static str>,
    pub content_type: Option<&'static str>,
    pub encoding: Option<&'static str>,
    pub body: Vec<u8>,
}

impl Call {
    /// `POST /v1/events` of these bytes as JSON, with `KEY`.
    pub fn events_body(body: impl Into<Vec<u8>>) -> Self {
        Self {
            method: Method::POST,
            path: "/v1/events",
            key: Some(KEY),
            content_type: Some(JSON),
            encoding: None,
            body: body.into(),
        }
    }

    /// `POST /v1/events` of `body` as JSON, with `KEY`.
    pub fn events(body: &Value) -> Self {
        Self::events_body(body.to_string())
    }

    /// `POST /v1/traces` of a protobuf export request, with `KEY`.
    pub fn traces(request: &ExportTraceServiceRequest) -> Self {
        Self {
            path: "/v1/traces",
            content_type: Some(PROTOBUF),
            ..Self::events_body(request.encode_to_vec())
        }
    }

    pub fn key(self, key: Option<&'static str>) -> Self {
        Self { key, ..self }
    }

    pub fn content_type(self, content_type: Option<&'static str>) -> Self {
        Self {
            content_type,
            ..self
        }
    }

    pub fn encoding(self, encoding: &'static str) -> Self {
        Self {
            encoding: Some(encoding),
            ..self
        }
    }

    pub fn body(self, body: impl Into<Vec<u8>>) -> Self {
        Self {
            body: body.into(),
            ..self
        }
    }

    pub fn method(self, method: Method) -> Self {
        Self { method, ..self }
    }
}

/// An answer, read whole.
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    fn is_protobuf(&self) -> bool {
        self.header("content-type") == Some(PROTOBUF)
    }

    fn json(&self) -> Result<Value, String> {
        serde_json::from_slice(&self.body).map_err(|error| {
            format!(
                "body is not JSON ({error}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The `google.rpc.Status` of a failed OTLP export, in either encoding.
    fn rpc_status(&self) -> Result<RpcStatus, String> {
        if self.is_protobuf() {
            return RpcStatus::decode(self.body.as_slice())
                .map_err(|error| format!("body is not a google.rpc.Status: {error}"));
        }
        let body = self.json()?;
        Ok(RpcStatus {
            code: body["code"].as_i64().unwrap_or(-1) as i32,
            message: body["message"].as_str().unwrap_or("").to_string(),
        })
    }

    /// The error message: `error` of a JSON body (the OTLP/JSON status carries it too),
    /// `message` of a protobuf status.
    fn error(&self) -> Result<String, String> {
        if self.is_protobuf() {
            return self.rpc_status().map(|status| status.message);
        }
        let body = self.json()?;
        body["error"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("no error in {body}"))
    }

    /// `partial_success` of a successful OTLP export: (rejected spans, message).
    fn partial_success(&self) -> Result<Option<(i64, String)>, String> {
        if self.is_protobuf() {
            let response = ExportTraceServiceResponse::decode(self.body.as_slice())
                .map_err(|error| format!("body is no ExportTraceServiceResponse: {error}"))?;
            return Ok(response
                .partial_success
                .map(|partial| (partial.rejected_spans, partial.error_message)));
        }
        let body = self.json()?;
        let Some(partial) = body.get("partialSuccess") else {
            return Ok(None);
        };
        // int64 is a JSON string in OTLP/JSON.
        let rejected = partial["rejectedSpans"]
            .as_str()
            .and_then(|count| count.parse().ok())
            .ok_or_else(|| format!("rejectedSpans is no int64 string: {body}"))?;
        let message = partial["errorMessage"].as_str().unwrap_or("").to_string();
        Ok(Some((rejected, message)))
    }
}

/// What an answer must say besides its status.
#[derive(Debug, Clone)]
pub enum Check {
    /// The error message contains this.
    Error(&'static str),
    /// This header has this value.
    Header(&'static str, &'static str),
    /// The OTLP failure body carries this gRPC code.
    RpcCode(tonic::Code),
    /// `accepted` of the 202 body.
    Accepted(u64),
    /// `index` of every rejection of the 202 body, in order.
    RejectedIndexes(&'static [u64]),
    /// The rejection of the event at this index starts with this (the field it names).
    Rejection(u64, &'static str),
    /// The OTLP success body: no `partial_success`, or its rejected count and a part of
    /// its message.
    PartialSuccess(Option<(i64, &'static str)>),
}

impl Check {
    pub fn verify(&self, reply: &Reply) -> Result<(), String> {
        match self {
            Check::Error(part) => {
                let error = reply.error()?;
                expect(error.contains(part), || {
                    format!("error {error:?} lacks {part:?}")
                })
            }
            Check::Header(name, value) => expect(reply.header(name) == Some(value), || {
                format!("{name} is {:?}, not {value:?}", reply.header(name))
            }),
            Check::RpcCode(code) => {
                let status = reply.rpc_status()?;
                expect(status.code == *code as i32, || {
                    format!("gRPC code {} is not {code:?}", status.code)
                })
            }
            Check::Accepted(count) => {
                let body = reply.json()?;
                expect(body["accepted"] == *count, || {
                    format!("accepted is not {count}: {body}")
                })
            }
            Check::RejectedIndexes(indexes) => {
                let body = reply.json()?;
                let found: Vec<u64> = rejections(&body)?.iter().map(|(index, _)| *index).collect();
                expect(found == *indexes, || {
                    format!("rejected indexes {found:?}, not {indexes:?}: {body}")
                })
            }
            Check::Rejection(index, start) => {
                let body = reply.json()?;
                let message = rejections(&body)?
                    .into_iter()
                    .find(|(at, _)| at == index)
                    .map(|(_, message)| message);
                expect(
                    message
                        .as_deref()
                        .is_some_and(|message| message.starts_with(start)),
                    || format!("rejection {index} should start with {start:?}: {body}"),
                )
            }
            Check::PartialSuccess(expected) => {
                let found = reply.partial_success()?;
                let matches = match (expected, &found) {
                    (None, None) => true,
                    (Some((count, part)), Some((rejected, message))) => {
                        count == rejected && message.contains(part)
                    }
                    _ => false,
                };
                expect(matches, || {
                    format!("partial success {found:?}, not {expected:?}")
                })
            }
        }
    }
}

fn expect(holds: bool, problem: impl FnOnce() -> String) -> Result<(), String> {
    if holds {
        Ok(())
    } else {
        Err(problem())
    }
}

/// (index, error) of every rejection of a 202 body, which must have its `rejected` list.
fn rejections(body: &Value) -> Result<Vec<(u64, String)>, String> {
    let list = body["rejected"]
        .as_array()
        .ok_or_else(|| format!("no rejected list in {body}"))?;
    Ok(list
        .iter()
        .map(|rejection| {
            (
                rejection["index"].as_u64().unwrap_or(u64::MAX),
                rejection["error"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect())
}
