//! One call through the gateway, from the caller's key to the answer: OpenAI's routes
//! to `openai` upstreams, Anthropic's `/v1/messages` to `anthropic` ones.
//!
//! Admission (key → tenant, then the tenant's rate limit and the cap on calls in
//! flight), the body read within its limit and parsed, the model
//! resolved (aliases), then attempts: a replica picked by [`Model::pick`], the request
//! sent with the upstream's credential, its answer awaited up to its first byte within
//! the attempt's timeout. An attempt that fails before that byte (refused connection,
//! reset, timeout, 5xx, 429) counts against the replica's breaker and the call moves
//! to another replica, then to the fallback models in order, within `max_attempts` and
//! the call's timeout. Once the first byte is in hand the answer is committed: a
//! non-streamed answer is relayed whole, a stream chunk by chunk ([`Relay`]). When
//! nothing answered: 502, or 504 when the last attempt timed out. With the cache on, a
//! request answered before is answered from it without going upstream. With budgets,
//! the call's estimate is held before it goes upstream (429 when a budget has no
//! room) and settled with its real spend; a call whose caller goes away while it is
//! routed settles at once with what it is known to have spent (its guard's drop,
//! [`CallGuard::count_cut_short`]). With the semantic cache, the prompt's embedding
//! is asked for first, and that call is an event of the caller's tenant too.
//!
//! Every call of a known tenant is one event, refusals included: from the moment the
//! key names a tenant a [`CallGuard`] carries the call, so a call refused by the rate
//! limit, the cap on calls in flight or its body is recorded with the refusal's code as
//! `error_type` (and [`UNREAD_MODEL`] as its model when the body named none). A call
//! without a valid key has no tenant: it is only counted, in
//! `ais_gateway_calls_without_tenant_total{code}`.

use std::sync::Arc;

use ais_ingest::error::IngestError;
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Limited};
use serde_json::{Map, Value};

use crate::budget::{Caller, Hold, Reserved, BYTES_PER_TOKEN};
use crate::cache::{self, Cached};
use crate::config::Provider;
use crate::error::GatewayError;
use crate::record::{AnthropicUsage, CallGuard, CallRecord, Usage};
use crate::registry::{Model, Replica};
use crate::relay::{Fill, Relay, RelayParts};
use crate::semantic::{self, SemanticCache, SemanticKey};
use crate::sse::SseScan;
use crate::GatewayState;

/// The OpenAI routes the gateway serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Chat,
    Completion,
    Embeddings,
    /// Anthropic's `POST /v1/messages`, to models of provider `anthropic`.
    Messages,
}

impl Operation {
    /// The path below the replica's base URL.
    fn path(self) -> &'static str {
        match self {
            Self::Chat => "/chat/completions",
            Self::Completion => "/completions",
            Self::Embeddings => "/embeddings",
            Self::Messages => "/messages",
        }
    }

    /// The event's `operation` (GenAI names).
    fn name(self) -> &'static str {
        match self {
            Self::Chat | Self::Messages => "chat",
            Self::Completion => "text_completion",
            Self::Embeddings => "embeddings",
        }
    }

    fn streams(self) -> bool {
        !matches!(self, Self::Embeddings)
    }
}

/// The `anthropic-version` sent upstream when the caller sent none.
const ANTHROPIC_VERSION: &str = "2023-06-01";

/// The most of an upstream's error body read for its message.
const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;

pub async fn chat(state: State<GatewayState>, headers: HeaderMap, body: Body) -> Response {
    call(state, Operation::Chat, headers, body).await
}

pub async fn completion(state: State<GatewayState>, headers: HeaderMap, body: Body) -> Response {
    call(state, Operation::Completion, headers, body).await
}

pub async fn embeddings(state: State<GatewayState>, headers: HeaderMap, body: Body) -> Response {
    call(state, Operation::Embeddings, headers, body).await
}

pub async fn messages(state: State<GatewayState>, headers: HeaderMap, body: Body) -> Response {
    call(state, Operation::Messages, headers, body).await
}

/// The caller's key: `Authorization: Bearer`, or Anthropic's `x-api-key` (what its SDK
/// sends) as the same bearer key.
fn caller_key(headers: &HeaderMap) -> Option<Vec<u8>> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        return Some(value.as_bytes().to_vec());
    }
    headers
        .get("x-api-key")
        .map(|key| [b"Bearer ".as_slice(), key.as_bytes()].concat())
}

/// `GET /v1/models`: every name a caller may ask for.
pub async fn models(State(state): State<GatewayState>, headers: HeaderMap) -> Response {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    if let Err(error) = state.keyring.authorize_ingest(authorization) {
        return GatewayError::Admission(error.into()).into_response();
    }
    let data: Vec<Value> = state
        .registry
        .names()
        .iter()
        .map(|name| serde_json::json!({"id": name, "object": "model", "created": 0, "owned_by": "ais"}))
        .collect();
    Json(serde_json::json!({"object": "list", "data": data})).into_response()
}

async fn call(
    State(state): State<GatewayState>,
    operation: Operation,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let response = match answer(&state, operation, &headers, body).await {
        Ok(response) => response,
        Err(error) => {
            if error.status().is_server_error() {
                tracing::warn!(%error, "gateway call failed");
            }
            if operation == Operation::Messages {
                error.into_anthropic_response()
            } else {
                error.into_response()
            }
        }
    };
    metrics::counter!("ais_gateway_requests_total", "code" => status_label(response.status()))
        .increment(1);
    response
}

/// Status codes as static labels, so the label set stays bounded.
fn status_label(status: StatusCode) -> &'static str {
    match status.as_u16() {
        200 => "200",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        413 => "413",
        429 => "429",
        502 => "502",
        503 => "503",
        504 => "504",
        code if code < 500 => "4xx",
        _ => "5xx",
    }
}

/// The parts of a request body the gateway reads.
struct Asked {
    body: Map<String, Value>,
    model: String,
    stream: bool,
    /// The caller asked for the usage chunk of a stream itself.
    wants_usage: bool,
    user: Option<String>,
    /// `anthropic-version` and `anthropic-beta` as the caller sent them.
    anthropic_headers: Vec<(&'static str, HeaderValue)>,
}

fn parse(bytes: &[u8], operation: Operation) -> Result<Asked, GatewayError> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|error| GatewayError::InvalidJson(error.to_string()))?;
    let Value::Object(body) = value else {
        return Err(GatewayError::InvalidJson("expected an object".to_string()));
    };
    let model = body
        .get("model")
        .and_then(Value::as_str)
        .filter(|model| !model.is_empty())
        .ok_or(GatewayError::MissingModel)?
        .to_string();
    let stream = operation.streams() && body.get("stream").and_then(Value::as_bool) == Some(true);
    let wants_usage = body
        .get("stream_options")
        .and_then(|options| options.get("include_usage"))
        .and_then(Value::as_bool)
        == Some(true);
    // Anthropic's caller id is `metadata.user_id`.
    let user = body
        .get("user")
        .or_else(|| {
            body.get("metadata")
                .and_then(|metadata| metadata.get("user_id"))
        })
        .and_then(Value::as_str)
        .map(str::to_string);
    Ok(Asked {
        body,
        model,
        stream,
        wants_usage,
        user,
        anthropic_headers: Vec::new(),
    })
}

async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, GatewayError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<usize>().ok());
    if declared.is_some_and(|length| length > limit) {
        return Err(GatewayError::BodyTooLarge { limit });
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => {
            Err(GatewayError::BodyTooLarge { limit })
        }
        Err(error) => Err(GatewayError::BodyRead(error.to_string())),
    }
}

/// The event's `model` for a call refused before its body named one (over the rate
/// limit, the gateway full, a body too large or not JSON, no model in it).
pub const UNREAD_MODEL: &str = "unknown";

/// The call ends refused: its event says why.
fn refuse(call: &mut CallGuard, error: GatewayError) -> GatewayError {
    call.finish(Some(error.code()));
    error
}

async fn answer(
    state: &GatewayState,
    operation: Operation,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, GatewayError> {
    let started = state.clock.now();
    let timestamp_ms = state.clock.now_ms();
    let deadline = tokio::time::Instant::now() + state.limits.timeout;
    let authorization = caller_key(headers);
    // A caller without a valid key has no tenant to record the call for: counted only.
    let principal = state
        .keyring
        .authorize_ingest(authorization.as_deref())
        .map_err(|error| {
            let error = GatewayError::Admission(error.into());
            metrics::counter!("ais_gateway_calls_without_tenant_total", "code" => error.code())
                .increment(1);
            error
        })?;
    let attributes = state
        .header_attributes
        .iter()
        .filter_map(|(header, attribute)| {
            let value = headers.get(header)?.to_str().ok()?;
            Some((attribute.clone(), value.to_string()))
        })
        .collect();
    let tenant = principal.tenant.clone();
    let caller_key = principal.key.clone();
    // From here every call is its tenant's event, refusals included: the model is
    // named once the body is read.
    let mut call = CallGuard::new(
        state.recorder.clone(),
        CallRecord {
            tenant: principal.tenant,
            timestamp_ms,
            started,
            model: UNREAD_MODEL.to_string(),
            operation: operation.name(),
            provider: None,
            response_model: None,
            upstream: None,
            attempts: 0,
            user_id: None,
            key: principal.key,
            reservation_id: None,
            attributes,
            ttft: None,
            usage: None,
            input: None,
            output: None,
        },
    );
    if let Err(refusal) = state.limiter.admit(&tenant) {
        let error = GatewayError::Admission(IngestError::RateLimited {
            limit: refusal.limit,
            retry_after_s: refusal.retry_after.as_secs_f64().ceil().max(1.0) as u64,
            reset_s: refusal.reset.as_secs_f64().ceil() as u64,
        });
        return Err(refuse(&mut call, error));
    }
    // Full: refused at once; a queue in front of busy upstreams only adds latency.
    let Ok(permit) = state.in_flight.clone().try_acquire_owned() else {
        let error = GatewayError::Overloaded {
            limit: state.limits.max_in_flight_calls,
        };
        return Err(refuse(&mut call, error));
    };
    // An admitted call is one event against the tenant's rate limit, whatever its fate.
    state.limiter.charge(&tenant, 1);
    let bytes = match read_body(headers, body, state.limits.max_body_bytes).await {
        Ok(bytes) => bytes,
        Err(error) => return Err(refuse(&mut call, error)),
    };
    let mut asked = match parse(&bytes, operation) {
        Ok(asked) => asked,
        Err(error) => return Err(refuse(&mut call, error)),
    };
    // What a call cut short is taken to have read, when its upstream never said.
    let request_tokens = (bytes.len() as u64).div_ceil(BYTES_PER_TOKEN as u64);
    drop(bytes);
    for name in ["anthropic-version", "anthropic-beta"] {
        if let Some(value) = headers.get(name) {
            asked.anthropic_headers.push((name, value.clone()));
        }
    }
    let payload_cap = state.recorder.payload_cap();
    if let Some(record) = call.record() {
        record.model = asked.model.clone();
        record.user_id = asked.user.take();
        record.input = payload_cap.and_then(|cap| crate::record::input_of(&asked.body, cap));
    }
    let Some(model) = state.registry.get(&asked.model).cloned() else {
        let error = GatewayError::UnknownModel(asked.model.clone());
        call.finish(Some(error.code()));
        return Err(error);
    };
    if let Some(record) = call.record() {
        record.model = model.name.clone();
        record.provider = Some(model.provider.as_str());
    }
    // Each API goes to upstreams that speak it.
    if (operation == Operation::Messages) != (model.provider == Provider::Anthropic) {
        let error = GatewayError::WrongApi {
            model: model.name.clone(),
            provider: model.provider.as_str(),
        };
        call.finish(Some(error.code()));
        return Err(error);
    }
    let opted_out = cache::opted_out(headers);
    let cache = state.cache.as_ref().filter(|_| !opted_out).map(|cache| {
        let key = cache::key(&tenant, operation.name(), &model.name, &asked.body);
        (cache.clone(), key)
    });
    if let Some((cache, key)) = &cache {
        if let Some(hit) = cache.get(*key) {
            let scan = scan_for(operation, &asked);
            return Ok(replay(
                state,
                Replayed {
                    hit,
                    similarity: None,
                },
                asked.stream,
                scan,
                call,
                deadline,
                permit,
            ));
        }
    }
    let semantic = match &state.semantic_cache {
        Some(semantic) if !opted_out && operation != Operation::Embeddings => {
            let prompt = semantic.prompt_of(&asked.body).map(|prompt| {
                let context = prompt.context(&tenant, operation.name(), &model.name);
                (context, prompt.text)
            });
            match prompt {
                None => {
                    semantic::Outcome::Bypass.count();
                    None
                }
                Some((context, text)) => {
                    match embed(state, semantic, text, &call, deadline).await {
                        None => {
                            semantic::Outcome::EmbeddingFailed.count();
                            None
                        }
                        Some(vector) => {
                            let key = SemanticKey { context, vector };
                            if let Some((hit, similarity)) = semantic.get(&key) {
                                semantic::Outcome::Hit.count();
                                let scan = scan_for(operation, &asked);
                                return Ok(replay(
                                    state,
                                    Replayed {
                                        hit,
                                        similarity: Some(similarity),
                                    },
                                    asked.stream,
                                    scan,
                                    call,
                                    deadline,
                                    permit,
                                ));
                            }
                            semantic::Outcome::Miss.count();
                            Some((semantic.clone(), key))
                        }
                    }
                }
            }
        }
        _ => None,
    };
    if let Some(budgets) = &state.budgets {
        let estimate = budgets.estimate(&model.name, &asked.body);
        let record = call.record();
        let caller = Caller {
            tenant: &tenant,
            model: &model.name,
            user_id: record.as_ref().and_then(|record| record.user_id.as_deref()),
            key: caller_key.as_deref(),
            attributes: record.as_ref().map_or(&[], |record| &record.attributes[..]),
        };
        match budgets.gate.reserve(&caller, estimate).await {
            // The call's event names its hold, which its commit then settles.
            Reserved::Granted(Some(id)) => call.keep_hold(Hold {
                budgets: budgets.clone(),
                id,
                model: model.name.clone(),
            }),
            Reserved::Granted(None) => {}
            Reserved::Refused(reason) => {
                let error = GatewayError::OverBudget(reason);
                call.finish(Some(error.code()));
                return Err(error);
            }
        }
    }
    // From here a caller that goes away leaves the call with what it is known to have
    // spent (the guard's drop), its hold settled with that at once.
    call.going_upstream(request_tokens);
    let result = route(state, operation, model, &mut asked, &mut call, deadline).await;
    match result {
        Ok(Answered::Whole { body }) => {
            let answer = if operation == Operation::Messages {
                serde_json::from_slice::<WholeAnthropicAnswer>(&body)
                    .ok()
                    .map(|answer| WholeAnswer {
                        model: answer.model,
                        usage: answer.usage.map(AnthropicUsage::to_usage),
                    })
            } else {
                serde_json::from_slice::<WholeAnswer>(&body).ok()
            };
            if let Some(record) = call.record() {
                if let Some(answer) = answer {
                    record.usage = answer.usage;
                    if answer.model.is_some() {
                        record.response_model = answer.model;
                    }
                }
                if let Some(cap) = payload_cap {
                    record.output = crate::record::output_of(&body, cap);
                }
                let cached = Cached {
                    body: body.clone(),
                    usage: record.usage,
                    response_model: record.response_model.clone(),
                    provider: record.provider,
                };
                if let Some((semantic, key)) = semantic {
                    semantic.put(key, cached.clone());
                }
                if let Some((cache, key)) = &cache {
                    cache.put(*key, cached);
                }
            }
            call.finish(None);
            Ok(whole_response(body))
        }
        Ok(Answered::Stream { upstream, first }) => {
            let fill = (cache.is_some() || semantic.is_some()).then(|| Fill {
                exact: cache,
                semantic,
                bytes: BytesMut::new(),
            });
            let relay = Relay::new(
                upstream,
                first,
                RelayParts {
                    call,
                    scan: scan_for(operation, &asked),
                    deadline,
                    clock: state.clock.clone(),
                    permit,
                    fill,
                    payload_cap,
                },
            );
            Ok(stream_response(relay))
        }
        Err(error) => {
            // Nothing was answered: nothing spent, the hold settled with no usage.
            call.finish(Some(error.code()));
            Err(error)
        }
    }
}

fn whole_response(body: Bytes) -> Response {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

fn stream_response(relay: Relay) -> Response {
    (
        StatusCode::OK,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        Body::new(relay),
    )
        .into_response()
}

/// An answer from a cache: the exact one, or the semantic one with the similarity of
/// the prompt it answered.
struct Replayed {
    hit: Cached,
    similarity: Option<f32>,
}

/// A cached answer, sent again: whole, or replayed as a stream through the relay (the
/// usage chunk taken out for a caller that did not ask for it). Its event says
/// `attributes.cache = "hit"` (`"semantic_hit"` with `attributes.cache_similarity`
/// from the semantic cache), with the tokens the answer carried.
fn replay(
    state: &GatewayState,
    replayed: Replayed,
    stream: bool,
    scan: SseScan,
    mut call: CallGuard,
    deadline: tokio::time::Instant,
    permit: tokio::sync::OwnedSemaphorePermit,
) -> Response {
    let Replayed { hit, similarity } = replayed;
    if let Some(record) = call.record() {
        match similarity {
            None => record
                .attributes
                .push(("cache".to_string(), "hit".to_string())),
            Some(similarity) => {
                record
                    .attributes
                    .push(("cache".to_string(), "semantic_hit".to_string()));
                record
                    .attributes
                    .push(("cache_similarity".to_string(), format!("{similarity:.4}")));
            }
        }
        record.usage = hit.usage;
        record.response_model = hit.response_model.clone();
        record.provider = hit.provider;
    }
    let payload_cap = state.recorder.payload_cap();
    if !stream {
        if let (Some(cap), Some(record)) = (payload_cap, call.record()) {
            record.output = crate::record::output_of(&hit.body, cap);
        }
        call.finish(None);
        return whole_response(hit.body);
    }
    let relay = Relay::new(
        Box::pin(reqwest::Body::from(Bytes::new())),
        hit.body,
        RelayParts {
            call,
            scan,
            deadline,
            clock: state.clock.clone(),
            permit,
            fill: None,
            payload_cap,
        },
    );
    stream_response(relay)
}

#[derive(serde::Deserialize)]
struct WholeAnthropicAnswer {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    usage: Option<AnthropicUsage>,
}

/// How a streamed answer is read: Anthropic's events, or OpenAI's with the usage
/// chunk taken out for a caller that did not ask for it.
fn scan_for(operation: Operation, asked: &Asked) -> SseScan {
    if operation == Operation::Messages {
        SseScan::anthropic()
    } else {
        SseScan::new(!asked.wants_usage)
    }
}

#[derive(serde::Deserialize)]
struct WholeAnswer {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    usage: Option<Usage>,
}

/// An answer with its first byte in hand.
enum Answered {
    Whole {
        body: Bytes,
    },
    Stream {
        upstream: std::pin::Pin<Box<reqwest::Body>>,
        first: Bytes,
    },
}

/// Why one attempt produced no answer.
#[derive(Debug)]
enum AttemptError {
    /// The upstream answered the request as wrong (4xx but 408 and 429): the answer.
    Refused {
        status: StatusCode,
        message: String,
    },
    /// Anything worth another replica.
    Failed(String),
    TimedOut,
}

/// Tries the model's replicas, then its fallbacks', until one answers.
async fn route(
    state: &GatewayState,
    operation: Operation,
    first: Arc<Model>,
    asked: &mut Asked,
    call: &mut CallGuard,
    deadline: tokio::time::Instant,
) -> Result<Answered, GatewayError> {
    if asked.stream && !asked.wants_usage && operation != Operation::Messages {
        // The usage chunk is how a stream's tokens are counted; the caller that did not
        // ask for it will not see it (the relay takes it out).
        let options = asked
            .body
            .entry("stream_options")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(options) = options {
            options.insert("include_usage".into(), Value::Bool(true));
        }
    }
    let mut chain = vec![first.clone()];
    chain.extend(
        first
            .fallbacks
            .iter()
            .filter_map(|name| state.registry.get(name).cloned()),
    );
    let mut attempts = 0usize;
    let mut last = AttemptError::Failed("no replica could be tried".to_string());
    'models: for model in &chain {
        asked
            .body
            .insert("model".into(), Value::String(model.name.clone()));
        let body = Bytes::from(serde_json::to_vec(&asked.body).unwrap_or_default());
        let mut tried = Vec::new();
        loop {
            if attempts >= state.limits.max_attempts {
                break 'models;
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                last = AttemptError::TimedOut;
                break 'models;
            }
            let Some((index, admission)) = model.pick(&tried, &mut rand::rng()) else {
                break;
            };
            tried.push(index);
            attempts += 1;
            let replica = model.replicas[index].clone();
            if let Some(record) = call.record() {
                record.attempts = attempts as u32;
            }
            let patience = state.limits.attempt_timeout.min(deadline - now);
            let attempt = Attempt {
                replica: &replica,
                admission: Some(admission),
            };
            let in_flight = replica.ewma.start();
            let outcome = tokio::time::timeout(
                patience,
                send(
                    state,
                    model,
                    &replica,
                    operation,
                    body.clone(),
                    asked.stream,
                    &asked.anthropic_headers,
                ),
            )
            .await
            .unwrap_or(Err(AttemptError::TimedOut));
            in_flight.finish();
            match outcome {
                Ok(answered) => {
                    attempt.settle(true);
                    metrics::counter!("ais_gateway_upstream_attempts_total", "outcome" => "ok")
                        .increment(1);
                    if let Some(record) = call.record() {
                        record.upstream = Some(replica.url.clone());
                        record.provider = Some(model.provider.as_str());
                        record.response_model = Some(model.name.clone());
                    }
                    return Ok(answered);
                }
                Err(AttemptError::Refused { status, message }) => {
                    // The replica is healthy: the request is what it refused.
                    attempt.settle(true);
                    metrics::counter!("ais_gateway_upstream_attempts_total", "outcome" => "refused")
                        .increment(1);
                    if let Some(record) = call.record() {
                        record.upstream = Some(replica.url.clone());
                        record.provider = Some(model.provider.as_str());
                    }
                    return Err(GatewayError::UpstreamRefused { status, message });
                }
                Err(error) => {
                    attempt.settle(false);
                    let label = if matches!(error, AttemptError::TimedOut) {
                        "timeout"
                    } else {
                        "failed"
                    };
                    metrics::counter!("ais_gateway_upstream_attempts_total", "outcome" => label)
                        .increment(1);
                    tracing::debug!(upstream = %replica.url, ?error, "attempt failed; trying another replica");
                    last = error;
                }
            }
        }
    }
    let model = first.name.clone();
    Err(match last {
        AttemptError::TimedOut => GatewayError::Timeout {
            model,
            last: "the last attempt timed out".to_string(),
        },
        AttemptError::Failed(detail)
        | AttemptError::Refused {
            message: detail, ..
        } => GatewayError::Unavailable {
            model,
            last: detail,
        },
    })
}

/// A breaker's leave for one attempt; abandoned (a probe's slot freed) if the attempt
/// is dropped before its outcome, as when the caller goes away.
struct Attempt<'a> {
    replica: &'a Replica,
    admission: Option<crate::breaker::Admission>,
}

impl Attempt<'_> {
    fn settle(mut self, success: bool) {
        if let Some(admission) = self.admission.take() {
            self.replica.breaker.record(admission, success);
        }
        self.replica.publish();
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if let Some(admission) = self.admission.take() {
            self.replica.breaker.abandon(admission);
            self.replica.publish();
        }
    }
}

/// One attempt: the request to one replica, up to the first byte of its answer.
async fn send(
    state: &GatewayState,
    model: &Arc<Model>,
    replica: &Replica,
    operation: Operation,
    body: Bytes,
    stream: bool,
    anthropic_headers: &[(&'static str, HeaderValue)],
) -> Result<Answered, AttemptError> {
    let url = format!("{}{}", replica.url, operation.path());
    let mut request = state
        .client
        .post(url)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body);
    if stream {
        request = request.header(header::ACCEPT, "text/event-stream");
    }
    if let Some(credential) = &model.credential {
        request = match model.provider {
            Provider::OpenAi => request.bearer_auth(credential),
            Provider::Anthropic => request.header("x-api-key", credential),
        };
    }
    if model.provider == Provider::Anthropic {
        // The caller's API version and betas when it sent them, else the stable version.
        let mut versioned = false;
        for (name, value) in anthropic_headers {
            versioned |= *name == "anthropic-version";
            request = request.header(*name, value.clone());
        }
        if !versioned {
            request = request.header("anthropic-version", ANTHROPIC_VERSION);
        }
    }
    let response = request
        .send()
        .await
        .map_err(|error| AttemptError::Failed(describe(&error)))?;
    let status = response.status();
    if !status.is_success() {
        let mut upstream: std::pin::Pin<Box<reqwest::Body>> = Box::pin(response.into());
        let text = Limited::new(upstream.as_mut(), MAX_ERROR_BODY_BYTES)
            .collect()
            .await
            .map(|collected| collected.to_bytes())
            .unwrap_or_default();
        let message = upstream_message(&text)
            .unwrap_or_else(|| format!("upstream answered {}", status.as_u16()));
        let refused = status.is_client_error()
            && status != StatusCode::REQUEST_TIMEOUT
            && status != StatusCode::TOO_MANY_REQUESTS;
        return Err(if refused {
            AttemptError::Refused { status, message }
        } else {
            AttemptError::Failed(format!("{}: {message}", status.as_u16()))
        });
    }
    let mut upstream: std::pin::Pin<Box<reqwest::Body>> = Box::pin(response.into());
    if !stream {
        let body = Limited::new(upstream, state.limits.max_response_bytes)
            .collect()
            .await
            .map_err(|error| AttemptError::Failed(format!("reading the answer: {error}")))?
            .to_bytes();
        return Ok(Answered::Whole { body });
    }
    // The first byte decides the attempt: a stream cut before it is retried elsewhere.
    loop {
        match upstream.frame().await {
            None => {
                return Err(AttemptError::Failed(
                    "the stream ended before its first byte".to_string(),
                ))
            }
            Some(Err(error)) => {
                return Err(AttemptError::Failed(format!(
                    "the stream failed before its first byte: {}",
                    describe(&error)
                )))
            }
            Some(Ok(frame)) => {
                if let Ok(first) = frame.into_data() {
                    if !first.is_empty() {
                        return Ok(Answered::Stream { upstream, first });
                    }
                }
            }
        }
    }
}

/// The embedding of a prompt from the semantic cache's embedding model: one attempt
/// on one replica within the attempt's timeout, counted against its breaker; `None`
/// when it failed (the call then goes upstream as if the cache were off).
///
/// The attempt spends the tenant's money, so it is an event of `caller`'s tenant like
/// any routed call ([`embedding_record`]), failed or not. It reserves nothing: its
/// spend is counted when its event lands, like any event without a reservation.
async fn embed(
    state: &GatewayState,
    semantic: &SemanticCache,
    text: String,
    caller: &CallGuard,
    deadline: tokio::time::Instant,
) -> Option<Arc<[f32]>> {
    let model = state
        .registry
        .get(&semantic.config().embedding_model)?
        .clone();
    let (index, admission) = model.pick(&[], &mut rand::rng())?;
    let replica = model.replicas[index].clone();
    let attempt = Attempt {
        replica: &replica,
        admission: Some(admission),
    };
    let mut request = Map::new();
    request.insert("model".into(), Value::String(model.name.clone()));
    request.insert("input".into(), Value::String(text));
    let body = serde_json::to_vec(&request).ok()?;
    let mut event = embedding_record(state, caller.record_so_far()?, &model, &replica, &request);
    // Cut short (the caller gone), it is taken to have read its request, as any call.
    event.going_upstream((body.len() as u64).div_ceil(BYTES_PER_TOKEN as u64));
    let patience = state
        .limits
        .attempt_timeout
        .min(deadline.saturating_duration_since(tokio::time::Instant::now()));
    let in_flight = replica.ewma.start();
    let outcome = tokio::time::timeout(
        patience,
        send(
            state,
            &model,
            &replica,
            Operation::Embeddings,
            Bytes::from(body),
            false,
            &[],
        ),
    )
    .await
    .unwrap_or(Err(AttemptError::TimedOut));
    in_flight.finish();
    match outcome {
        Ok(Answered::Whole { body }) => {
            attempt.settle(true);
            if let (Some(record), Ok(answer)) =
                (event.record(), serde_json::from_slice::<WholeAnswer>(&body))
            {
                record.usage = answer.usage;
                if answer.model.is_some() {
                    record.response_model = answer.model;
                }
            }
            event.finish(None);
            semantic::normalised(semantic::embedding_of_answer(&body)?)
        }
        Ok(Answered::Stream { .. }) => {
            // Not asked for (`stream` is false): the replica answered, with nothing usable.
            attempt.settle(true);
            event.finish(None);
            None
        }
        Err(AttemptError::Refused { status, message }) => {
            attempt.settle(true);
            let error = GatewayError::UpstreamRefused { status, message };
            event.finish(Some(error.code()));
            None
        }
        Err(error) => {
            attempt.settle(false);
            tracing::debug!(upstream = %replica.url, ?error, "the prompt could not be embedded");
            let model = model.name.clone();
            let error = match error {
                AttemptError::TimedOut => GatewayError::Timeout {
                    model,
                    last: "the attempt timed out".to_string(),
                },
                AttemptError::Failed(last) | AttemptError::Refused { message: last, .. } => {
                    GatewayError::Unavailable { model, last }
                }
            };
            event.finish(Some(error.code()));
            None
        }
    }
}

/// The event of an embedding the semantic cache asks for on behalf of `caller`'s call:
/// the caller's tenant, key, `user_id` and mapped headers, the embedding model and the
/// replica asked, and `attributes.purpose = "semantic_cache"`, which tells it apart
/// from the caller's own embeddings calls.
fn embedding_record(
    state: &GatewayState,
    caller: &CallRecord,
    model: &Model,
    replica: &Replica,
    request: &Map<String, Value>,
) -> CallGuard {
    let mut attributes = caller.attributes.clone();
    attributes.push(("purpose".to_string(), SEMANTIC_CACHE_PURPOSE.to_string()));
    let payload_cap = state.recorder.payload_cap();
    CallGuard::new(
        state.recorder.clone(),
        CallRecord {
            tenant: caller.tenant.clone(),
            timestamp_ms: state.clock.now_ms(),
            started: state.clock.now(),
            model: model.name.clone(),
            operation: Operation::Embeddings.name(),
            provider: Some(model.provider.as_str()),
            response_model: Some(model.name.clone()),
            upstream: Some(replica.url.clone()),
            attempts: 1,
            user_id: caller.user_id.clone(),
            key: caller.key.clone(),
            reservation_id: None,
            attributes,
            ttft: None,
            usage: None,
            input: payload_cap.and_then(|cap| crate::record::input_of(request, cap)),
            output: None,
        },
    )
}

/// `attributes.purpose` of the semantic cache's embedding calls.
pub const SEMANTIC_CACHE_PURPOSE: &str = "semantic_cache";

/// An error with its causes (reqwest's own message says little: "error sending request").
fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// `error.message` of an OpenAI-style error body, bounded.
fn upstream_message(body: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let message = value.get("error")?.get("message")?.as_str()?;
    Some(crate::record::clip(message, 512).to_string())
}
