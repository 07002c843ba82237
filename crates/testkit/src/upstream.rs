//! A model server for gateway tests: OpenAI's `POST /v1/chat/completions`,
//! `/v1/completions` and `/v1/embeddings`, answered whole or as server-sent events
//! with a `usage` block, with latency, time to first token, error status, resets and
//! held streams under the test's control, and counts of what it served.
//!
//! Every answer is a function of the request ([`reply`], [`reply_chunks`],
//! [`usage_of`], [`embedding_of`]), so a test knows what the caller must receive
//! without asking the server. Each server binds its own loopback port (port 0) and runs on the runtime it
//! is given.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::serve::ListenerExt;
use axum::Router;
use bytes::Bytes;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};

/// How the server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// As a model server does.
    Normal = 0,
    /// Headers, then the connection is cut before the first byte of the body.
    ResetBeforeFirstChunk = 1,
    /// A stream sends its role chunk and first content chunk, then holds until the
    /// caller goes away (counted in [`Upstream::cancelled`]).
    HoldAfterFirstChunk = 2,
    /// A stream sends its role chunk and first content chunk, holds until
    /// [`Upstream::cut_stream`], then its connection is cut (the upstream failing
    /// mid-answer, after the caller has surely seen the first chunk).
    CutAfterFirstChunk = 3,
}

#[derive(Default)]
struct Control {
    latency_ms: AtomicU64,
    ttft_ms: AtomicU64,
    status: AtomicU16,
    mode: AtomicU8,
    split_events: AtomicBool,
    hits: AtomicU64,
    cancelled: AtomicU64,
    finished: AtomicU64,
    last_body: Mutex<Option<Value>>,
    last_authorization: Mutex<Option<String>>,
    last_api_key: Mutex<Option<String>>,
    /// Released by [`Upstream::cut_stream`].
    cut: tokio::sync::Notify,
}

/// One running test upstream.
pub struct Upstream {
    /// Its base URL, `http://127.0.0.1:PORT/v1`.
    pub base: String,
    pub address: SocketAddr,
    control: Arc<Control>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Upstream {
    /// Binds a free loopback port and serves on `runtime`.
    pub fn start(runtime: &tokio::runtime::Handle) -> Upstream {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        listener.set_nonblocking(true).expect("non-blocking");
        let address = listener.local_addr().expect("bound address");
        let control = Arc::new(Control::default());
        let app = Router::new()
            .route("/v1/chat/completions", post(chat))
            .route("/v1/completions", post(completion))
            .route("/v1/embeddings", post(embeddings))
            .route("/v1/messages", post(messages))
            .with_state(control.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener)
                .expect("tokio listener")
                // Events go out as they are written, as a model server's do.
                .tap_io(|tcp| {
                    let _ = tcp.set_nodelay(true);
                });
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
        });
        Upstream {
            base: format!("http://{address}/v1"),
            address,
            control,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stops listening and closes idle connections: later calls are refused.
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// Delay before the answer's headers.
    pub fn set_latency(&self, latency: Duration) {
        self.control
            .latency_ms
            .store(latency.as_millis() as u64, Ordering::SeqCst);
    }

    /// Delay between a stream's role chunk and its first content chunk.
    pub fn set_ttft(&self, ttft: Duration) {
        self.control
            .ttft_ms
            .store(ttft.as_millis() as u64, Ordering::SeqCst);
    }

    /// Answer every call with this status and an OpenAI error body; 0 or 200: answer.
    pub fn set_status(&self, status: u16) {
        self.control.status.store(status, Ordering::SeqCst);
    }

    pub fn set_mode(&self, mode: Mode) {
        self.control.mode.store(mode as u8, Ordering::SeqCst);
    }

    /// Send each server-sent event in two writes, cut inside its JSON.
    pub fn set_split_events(&self, split: bool) {
        self.control.split_events.store(split, Ordering::SeqCst);
    }

    /// Cuts a stream held by [`Mode::CutAfterFirstChunk`] (the next one to be held,
    /// if none is held yet).
    pub fn cut_stream(&self) {
        self.control.cut.notify_one();
    }

    /// Requests received.
    pub fn hits(&self) -> u64 {
        self.control.hits.load(Ordering::SeqCst)
    }

    /// Requests and streams whose caller went away before their end.
    pub fn cancelled(&self) -> u64 {
        self.control.cancelled.load(Ordering::SeqCst)
    }

    /// Streams sent to their end.
    pub fn finished(&self) -> u64 {
        self.control.finished.load(Ordering::SeqCst)
    }

    /// The JSON body of the last request.
    pub fn last_body(&self) -> Option<Value> {
        self.control
            .last_body
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The `x-api-key` header of the last request (Anthropic's credential).
    pub fn last_api_key(&self) -> Option<String> {
        self.control
            .last_api_key
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The `Authorization` header of the last request.
    pub fn last_authorization(&self) -> Option<String> {
        self.control
            .last_authorization
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The text answered to `prompt`: not ASCII only, so a relay that mangles bytes shows.
pub fn reply(prompt: &str) -> String {
    format!("You said «{prompt}». Héllo → ✓ done.")
}

/// [`reply`] as a stream sends it: pieces of up to five characters.
pub fn reply_chunks(prompt: &str) -> Vec<String> {
    let characters: Vec<char> = reply(prompt).chars().collect();
    characters
        .chunks(5)
        .map(|piece| piece.iter().collect())
        .collect()
}

/// (prompt tokens, completion tokens) of the answer to `prompt`.
pub fn usage_of(prompt: &str) -> (u64, u64) {
    (
        prompt.split_whitespace().count() as u64 + 3,
        reply_chunks(prompt).len() as u64,
    )
}

/// Dimensions of [`embedding_of`]'s vectors.
pub const EMBEDDING_DIMENSIONS: usize = 64;

/// The embedding of `text`: a bag of words hashed into [`EMBEDDING_DIMENSIONS`]
/// signed counts (each lowercase alphanumeric word adds ±1 at a place its hash picks).
/// Texts sharing most of their words point the same way, texts sharing none are close
/// to orthogonal: what a semantic cache needs to be tested honestly. The counts are
/// whole numbers, exact in any float format.
pub fn embedding_of(text: &str) -> Vec<f64> {
    let mut vector = vec![0.0; EMBEDDING_DIMENSIONS];
    for word in text
        .split(|character: char| !character.is_alphanumeric())
        .filter(|word| !word.is_empty())
    {
        // FNV-1a: stable across runs and platforms.
        let hash = word
            .to_lowercase()
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325u64, |hash, byte| {
                (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
            });
        let place = (hash % EMBEDDING_DIMENSIONS as u64) as usize;
        vector[place] += if hash & (1 << 63) == 0 { 1.0 } else { -1.0 };
    }
    vector
}

/// The texts of an embeddings request's `input`: one string or a list of them.
fn inputs_of(request: &Value) -> Vec<String> {
    match &request["input"] {
        Value::String(text) => vec![text.clone()],
        Value::Array(items) => items
            .iter()
            .map(|item| item.as_str().unwrap_or_default().to_string())
            .collect(),
        _ => vec![String::new()],
    }
}

fn usage_json(prompt: &str) -> Value {
    let (input, output) = usage_of(prompt);
    json!({"prompt_tokens": input, "completion_tokens": output, "total_tokens": input + output})
}

/// Input tokens an Anthropic answer reports as read from the prompt cache, beside
/// [`usage_of`]'s (which Anthropic's `input_tokens` then leaves out).
pub const ANTHROPIC_CACHE_READ_TOKENS: u64 = 2;

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Chat,
    Completion,
    Embeddings,
    Messages,
}

async fn chat(state: State<Arc<Control>>, headers: HeaderMap, body: Bytes) -> Response {
    serve(state, headers, body, Kind::Chat).await
}

async fn completion(state: State<Arc<Control>>, headers: HeaderMap, body: Bytes) -> Response {
    serve(state, headers, body, Kind::Completion).await
}

async fn embeddings(state: State<Arc<Control>>, headers: HeaderMap, body: Bytes) -> Response {
    serve(state, headers, body, Kind::Embeddings).await
}

async fn messages(state: State<Arc<Control>>, headers: HeaderMap, body: Bytes) -> Response {
    serve(state, headers, body, Kind::Messages).await
}

/// Anthropic's usage: input without the cache reads, which it counts apart.
fn anthropic_usage(prompt: &str, output: Option<u64>) -> Value {
    let (input, all_output) = usage_of(prompt);
    json!({"input_tokens": input.saturating_sub(ANTHROPIC_CACHE_READ_TOKENS),
        "cache_read_input_tokens": ANTHROPIC_CACHE_READ_TOKENS,
        "output_tokens": output.unwrap_or(all_output)})
}

/// The text of the last message (chat), the prompt, or the input.
fn prompt_of(request: &Value, kind: Kind) -> String {
    let text = |value: &Value| match value {
        Value::String(text) => text.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|part| part.as_str().or_else(|| part["text"].as_str()))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    };
    match kind {
        Kind::Chat | Kind::Messages => request["messages"]
            .as_array()
            .and_then(|messages| messages.last())
            .map(|message| text(&message["content"]))
            .unwrap_or_default(),
        Kind::Completion => text(&request["prompt"]),
        Kind::Embeddings => text(&request["input"]),
    }
}

async fn serve(
    State(control): State<Arc<Control>>,
    headers: HeaderMap,
    body: Bytes,
    kind: Kind,
) -> Response {
    let mut waiting = Waiting(Some(control.clone()));
    let response = answer(control, headers, body, kind).await;
    waiting.0 = None;
    response
}

/// Counts a request whose caller went away before its answer was sent (the server
/// drops the handler) in [`Upstream::cancelled`].
struct Waiting(Option<Arc<Control>>);

impl Drop for Waiting {
    fn drop(&mut self) {
        if let Some(control) = self.0.take() {
            control.cancelled.fetch_add(1, Ordering::SeqCst);
        }
    }
}

async fn answer(control: Arc<Control>, headers: HeaderMap, body: Bytes, kind: Kind) -> Response {
    control.hits.fetch_add(1, Ordering::SeqCst);
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    *control
        .last_body
        .lock()
        .unwrap_or_else(PoisonError::into_inner) = Some(request.clone());
    *control
        .last_authorization
        .lock()
        .unwrap_or_else(PoisonError::into_inner) = headers
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .map(str::to_string);
    *control
        .last_api_key
        .lock()
        .unwrap_or_else(PoisonError::into_inner) = headers
        .get("x-api-key")
        .and_then(|value| value.to_str().ok())
        .map(str::to_string);
    let latency = control.latency_ms.load(Ordering::SeqCst);
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    let status = control.status.load(Ordering::SeqCst);
    if status != 0 && status != 200 {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let error = json!({"error": {"message": format!("test upstream answers {}", status.as_u16()), "type": "server_error", "code": null}});
        return (status, axum::Json(error)).into_response();
    }
    let mode = control.mode.load(Ordering::SeqCst);
    if mode == Mode::ResetBeforeFirstChunk as u8 {
        let failing = futures_once_error();
        return (StatusCode::OK, Body::from_stream(failing)).into_response();
    }
    let model = request["model"].as_str().unwrap_or("unknown").to_string();
    let prompt = prompt_of(&request, kind);
    let stream = kind != Kind::Embeddings && request["stream"].as_bool() == Some(true);
    if !stream {
        let answer = match kind {
            Kind::Chat => json!({
                "id": "chatcmpl-test", "object": "chat.completion", "created": 0, "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": reply(&prompt)}, "finish_reason": "stop"}],
                "usage": usage_json(&prompt),
            }),
            Kind::Completion => json!({
                "id": "cmpl-test", "object": "text_completion", "created": 0, "model": model,
                "choices": [{"index": 0, "text": reply(&prompt), "finish_reason": "stop"}],
                "usage": usage_json(&prompt),
            }),
            Kind::Messages => json!({
                "id": "msg_test", "type": "message", "role": "assistant", "model": model,
                "content": [{"type": "text", "text": reply(&prompt)}],
                "stop_reason": "end_turn", "stop_sequence": null,
                "usage": anthropic_usage(&prompt, None),
            }),
            Kind::Embeddings => json!({
                "object": "list", "model": model,
                "data": inputs_of(&request).iter().enumerate()
                    .map(|(index, text)| json!({"object": "embedding", "index": index, "embedding": embedding_of(text)}))
                    .collect::<Vec<_>>(),
                "usage": {"prompt_tokens": usage_of(&prompt).0, "total_tokens": usage_of(&prompt).0},
            }),
        };
        return axum::Json(answer).into_response();
    }
    let include_usage = request["stream_options"]["include_usage"].as_bool() == Some(true);
    let (sender, receiver) = mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::spawn(stream_answer(
        control.clone(),
        sender,
        kind,
        model,
        prompt,
        include_usage,
        mode,
    ));
    (
        StatusCode::OK,
        [("content-type", "text/event-stream")],
        Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(receiver)),
    )
        .into_response()
}

/// A body whose first and only item is an error: hyper cuts the connection.
fn futures_once_error() -> tokio_stream::Once<Result<Bytes, std::io::Error>> {
    tokio_stream::once(Err(std::io::Error::other(
        "test upstream resets the stream",
    )))
}

async fn stream_answer(
    control: Arc<Control>,
    sender: mpsc::Sender<Result<Bytes, std::io::Error>>,
    kind: Kind,
    model: String,
    prompt: String,
    include_usage: bool,
    mode: u8,
) {
    let split = control.split_events.load(Ordering::SeqCst);
    let chunk = |choices: Value, usage: Option<Value>| {
        let mut value = json!({"id": "chatcmpl-test", "object": if kind == Kind::Chat { "chat.completion.chunk" } else { "text_completion" }, "created": 0, "model": model, "choices": choices});
        if let Some(usage) = usage {
            value["usage"] = usage;
        }
        format!("data: {value}\n\n")
    };
    let send = |text: String| {
        let sender = sender.clone();
        async move {
            let bytes = text.into_bytes();
            let parts: Vec<Vec<u8>> = if split && bytes.len() > 12 {
                vec![bytes[..12].to_vec(), bytes[12..].to_vec()]
            } else {
                vec![bytes]
            };
            for part in parts {
                if sender.send(Ok(Bytes::from(part))).await.is_err() {
                    return false;
                }
            }
            true
        }
    };
    let mut events = Vec::new();
    if kind == Kind::Messages {
        let event = |name: &str, data: Value| format!("event: {name}\ndata: {data}\n\n");
        events.push(event(
            "message_start",
            json!({"type": "message_start", "message": {
            "id": "msg_test", "type": "message", "role": "assistant", "model": model, "content": [],
            "stop_reason": null, "usage": anthropic_usage(&prompt, Some(1))}}),
        ));
        events.push(event(
            "content_block_start",
            json!({"type": "content_block_start", "index": 0,
            "content_block": {"type": "text", "text": ""}}),
        ));
        for piece in reply_chunks(&prompt) {
            events.push(event(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": piece}}),
            ));
        }
        events.push(event(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ));
        events.push(event(
            "message_delta",
            json!({"type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": null},
            "usage": {"output_tokens": usage_of(&prompt).1}}),
        ));
        events.push(event("message_stop", json!({"type": "message_stop"})));
    } else if kind == Kind::Chat {
        events.push(chunk(json!([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]), None));
    }
    if kind != Kind::Messages {
        for piece in reply_chunks(&prompt) {
            let choice = match kind {
                Kind::Chat => {
                    json!([{"index": 0, "delta": {"content": piece}, "finish_reason": null}])
                }
                _ => json!([{"index": 0, "text": piece, "finish_reason": null}]),
            };
            events.push(chunk(choice, None));
        }
        let finish = match kind {
            Kind::Chat => json!([{"index": 0, "delta": {}, "finish_reason": "stop"}]),
            _ => json!([{"index": 0, "text": "", "finish_reason": "stop"}]),
        };
        events.push(chunk(finish, None));
        if include_usage {
            events.push(chunk(json!([]), Some(usage_json(&prompt))));
        }
        events.push("data: [DONE]\n\n".to_string());
    }

    // The role chunk (chat) or message and block starts (messages) come before it.
    let first_content = match kind {
        Kind::Chat => 1,
        Kind::Messages => 2,
        _ => 0,
    };
    for (index, event) in events.into_iter().enumerate() {
        if index == first_content {
            let ttft = control.ttft_ms.load(Ordering::SeqCst);
            if ttft > 0 {
                tokio::time::sleep(Duration::from_millis(ttft)).await;
            }
        }
        if !send(event).await {
            control.cancelled.fetch_add(1, Ordering::SeqCst);
            return;
        }
        if index == first_content && mode == Mode::CutAfterFirstChunk as u8 {
            control.cut.notified().await;
            let _ = sender
                .send(Err(std::io::Error::other("test upstream cuts the stream")))
                .await;
            return;
        }
        if index == first_content && mode == Mode::HoldAfterFirstChunk as u8 {
            sender.closed().await;
            control.cancelled.fetch_add(1, Ordering::SeqCst);
            return;
        }
    }
    control.finished.fetch_add(1, Ordering::SeqCst);
}
