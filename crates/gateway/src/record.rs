//! Each call becomes one v1 event, written into the same log as ingest.
//!
//! A [`CallGuard`] travels with the call and turns into an event once: when the call
//! is answered (or its stream ends), or when it is dropped unanswered (the caller went
//! away: `error_type = "cancelled"`). It owns the call's budget hold and settles it as
//! the event is recorded, so however a call ends its hold keeps only what it spent: a
//! call cut short after it went upstream counts what it is known to have spent
//! ([`CallGuard::count_cut_short`]). The [`Recorder`] takes the event without waiting:
//! it goes into a bounded queue; a writer task validates queued events with the same
//! rules as ingest (`ais_model::decode`, the price table computing the cost), encodes
//! them in batches and appends each batch to an [`EventSink`], whose append returns
//! once the batch is durable. A full queue or a failed append drops the events,
//! counted in `ais_gateway_events_total{outcome="dropped"}`: the log's trouble never
//! fails or delays a caller's model call.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ais_log::{Log, RecordBatch};
use ais_model::decode::{self, BodyFormat, ValidationContext};
use ais_model::price::PriceTable;
use ais_model::time::{duration_ms, Clock};
use ais_model::wire;
use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;

use crate::budget::Hold;

/// Where events go: the log, in-process or remote.
#[async_trait]
pub trait EventSink: Send + Sync + 'static {
    /// Appends the batch; returns once it is durable, or why not.
    async fn append(&self, batch: RecordBatch) -> Result<(), String>;
}

/// The log of `ais serve` (the embedded WAL) or of any [`Log`] engine.
pub struct LogSink(pub Arc<dyn Log>);

#[async_trait]
impl EventSink for LogSink {
    async fn append(&self, batch: RecordBatch) -> Result<(), String> {
        self.0
            .append(batch)
            .await
            .map(|_| ())
            .map_err(|error| error.to_string())
    }
}

/// Events per append at most: one WAL frame or one Kafka produce call.
const MAX_EVENTS_PER_APPEND: usize = 1024;
/// Bytes reserved per event in a batch before encoding.
const ENCODED_BYTES_PER_EVENT_HINT: usize = 256;
/// The event's limits on string fields (the v1 schema), applied before validation so a
/// long client value is clipped rather than losing the whole event.
const MAX_KEY_BYTES: usize = 128;
const MAX_ATTRIBUTE_VALUE_BYTES: usize = 256;

/// Token counts from an OpenAI `usage` block (an Anthropic one is turned into it by
/// [`AnthropicUsage::to_usage`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct Usage {
    #[serde(default)]
    pub prompt_tokens: Option<u64>,
    #[serde(default)]
    pub completion_tokens: Option<u64>,
    #[serde(default)]
    pub prompt_tokens_details: Option<PromptDetails>,
    #[serde(default)]
    pub completion_tokens_details: Option<CompletionDetails>,
    /// Input tokens written to the provider's prompt cache (Anthropic's
    /// `cache_creation_input_tokens`); OpenAI reports none.
    #[serde(skip)]
    pub cache_creation_tokens: Option<u64>,
}

impl Usage {
    /// Takes the counts `later` has, keeps the others: a stream may report input and
    /// output in different events.
    pub fn merge(&mut self, later: Usage) {
        self.prompt_tokens = later.prompt_tokens.or(self.prompt_tokens);
        self.completion_tokens = later.completion_tokens.or(self.completion_tokens);
        self.prompt_tokens_details = later.prompt_tokens_details.or(self.prompt_tokens_details);
        self.completion_tokens_details = later
            .completion_tokens_details
            .or(self.completion_tokens_details);
        self.cache_creation_tokens = later.cache_creation_tokens.or(self.cache_creation_tokens);
    }
}

/// Anthropic's `usage` block: `input_tokens` there leaves out the cached parts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct AnthropicUsage {
    #[serde(default)]
    pub input_tokens: Option<u64>,
    #[serde(default)]
    pub output_tokens: Option<u64>,
    #[serde(default)]
    pub cache_read_input_tokens: Option<u64>,
    #[serde(default)]
    pub cache_creation_input_tokens: Option<u64>,
}

impl AnthropicUsage {
    /// As the event counts tokens: every input token, cache reads and writes included
    /// (the README, "How tokens are priced").
    pub fn to_usage(self) -> Usage {
        let input = match (
            self.input_tokens,
            self.cache_read_input_tokens,
            self.cache_creation_input_tokens,
        ) {
            (None, None, None) => None,
            (input, read, write) => Some(
                input
                    .unwrap_or(0)
                    .saturating_add(read.unwrap_or(0))
                    .saturating_add(write.unwrap_or(0)),
            ),
        };
        Usage {
            prompt_tokens: input,
            completion_tokens: self.output_tokens,
            prompt_tokens_details: self.cache_read_input_tokens.map(|cached| PromptDetails {
                cached_tokens: Some(cached),
            }),
            completion_tokens_details: None,
            cache_creation_tokens: self.cache_creation_input_tokens,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct PromptDetails {
    #[serde(default)]
    pub cached_tokens: Option<u64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub struct CompletionDetails {
    #[serde(default)]
    pub reasoning_tokens: Option<u64>,
}

/// What is known of a call so far.
#[derive(Debug, Clone)]
pub struct CallRecord {
    pub tenant: String,
    pub timestamp_ms: i64,
    pub started: Instant,
    /// The model asked for (canonical once resolved).
    pub model: String,
    pub operation: &'static str,
    pub provider: Option<&'static str>,
    pub response_model: Option<String>,
    /// Base URL of the replica that answered.
    pub upstream: Option<String>,
    pub attempts: u32,
    pub user_id: Option<String>,
    /// The caller's key as usage names it: stamped on the event as ingest stamps it.
    pub key: Option<String>,
    /// The budget hold the call made, which its event settles.
    pub reservation_id: Option<String>,
    pub attributes: Vec<(String, String)>,
    pub ttft: Option<Duration>,
    pub usage: Option<Usage>,
    /// With payload capture on: what the call was sent and answered, each at most a
    /// little past the cap (validation cuts it there, with the marker).
    pub input: Option<String>,
    pub output: Option<String>,
}

impl CallRecord {
    /// Adds the answer's next piece, up to a little past `cap` bytes.
    pub fn push_output(&mut self, piece: &str, cap: usize) {
        let output = self.output.get_or_insert_with(String::new);
        let room = (cap + OVER_CAP).saturating_sub(output.len());
        output.push_str(clip(piece, room));
    }

    /// The v1 event as ingest accepts it, `error_type` set when the call failed.
    fn to_json(&self, latency: Duration, error_type: Option<&str>) -> Vec<u8> {
        let mut event = Map::new();
        event.insert("timestamp".into(), json!(self.timestamp_ms));
        event.insert("model".into(), json!(clip(&self.model, MAX_KEY_BYTES)));
        event.insert("operation".into(), json!(self.operation));
        event.insert("latency_ms".into(), json!(duration_secs_ms(latency)));
        if let Some(ttft) = self.ttft {
            event.insert("ttft_ms".into(), json!(duration_secs_ms(ttft)));
        }
        if let Some(provider) = self.provider {
            event.insert("provider".into(), json!(provider));
        }
        if let Some(response_model) = &self.response_model {
            event.insert(
                "response_model".into(),
                json!(clip(response_model, MAX_KEY_BYTES)),
            );
        }
        if let Some(user_id) = &self.user_id {
            event.insert("user_id".into(), json!(clip(user_id, MAX_KEY_BYTES)));
        }
        if let Some(id) = &self.reservation_id {
            event.insert("reservation_id".into(), json!(id));
        }
        if let Some(input) = &self.input {
            event.insert("input".into(), json!(input));
        }
        if let Some(output) = &self.output {
            event.insert("output".into(), json!(output));
        }
        if let Some(upstream) = &self.upstream {
            if upstream.len() <= MAX_KEY_BYTES {
                event.insert("endpoint".into(), json!(upstream));
            }
        }
        if let Some(usage) = &self.usage {
            if let Some(input) = usage.prompt_tokens {
                event.insert("input_tokens".into(), json!(input));
            }
            if let Some(output) = usage.completion_tokens {
                event.insert("output_tokens".into(), json!(output));
            }
            if let Some(cached) = usage.prompt_tokens_details.and_then(|d| d.cached_tokens) {
                event.insert("cache_read_input_tokens".into(), json!(cached));
            }
            if let Some(written) = usage.cache_creation_tokens {
                event.insert("cache_creation_input_tokens".into(), json!(written));
            }
            if let Some(reasoning) = usage
                .completion_tokens_details
                .and_then(|d| d.reasoning_tokens)
            {
                event.insert("reasoning_output_tokens".into(), json!(reasoning));
            }
        }
        match error_type {
            None => {
                event.insert("status".into(), json!("ok"));
            }
            Some(error_type) => {
                event.insert("status".into(), json!("error"));
                event.insert("error_type".into(), json!(error_type));
            }
        }
        let mut attributes = Map::new();
        for (key, value) in &self.attributes {
            attributes.insert(key.clone(), json!(clip(value, MAX_ATTRIBUTE_VALUE_BYTES)));
        }
        if let Some(upstream) = &self.upstream {
            attributes.insert(
                "upstream".into(),
                json!(clip(upstream, MAX_ATTRIBUTE_VALUE_BYTES)),
            );
        }
        if self.attempts > 0 {
            attributes.insert("attempts".into(), json!(self.attempts.to_string()));
        }
        if !attributes.is_empty() {
            event.insert("attributes".into(), Value::Object(attributes));
        }
        serde_json::to_vec(&Value::Object(event)).unwrap_or_default()
    }
}

/// How far past the payload cap a call's text is kept: enough for validation to see
/// that it is longer, and cut it with the marker.
const OVER_CAP: usize = 64;

/// The text a request sends, for its event's `input` (payload capture on): its
/// `messages` (chat, Anthropic) as their JSON, else its `prompt` or `input` (a string as
/// it is, else as JSON), up to a little past `cap` bytes.
pub fn input_of(body: &Map<String, Value>, cap: usize) -> Option<String> {
    let value = ["messages", "prompt", "input"]
        .iter()
        .find_map(|field| body.get(*field))?;
    let text = match value {
        Value::String(text) => clip(text, cap + OVER_CAP).to_string(),
        other => {
            let json = other.to_string();
            clip(&json, cap + OVER_CAP).to_string()
        }
    };
    Some(text)
}

/// The text of a whole answer, for its event's `output`: the choices' message content
/// or text (OpenAI), or the content blocks' text (Anthropic).
pub fn output_of(answer: &[u8], cap: usize) -> Option<String> {
    let value: Value = serde_json::from_slice(answer).ok()?;
    let mut text = String::new();
    if let Some(choices) = value["choices"].as_array() {
        for choice in choices {
            if let Some(piece) = choice["message"]["content"]
                .as_str()
                .or(choice["text"].as_str())
            {
                text.push_str(piece);
            }
        }
    }
    if let Some(blocks) = value["content"].as_array() {
        for block in blocks {
            if let Some(piece) = block["text"].as_str() {
                text.push_str(piece);
            }
        }
    }
    (!text.is_empty()).then(|| clip(&text, cap + OVER_CAP).to_string())
}

/// Milliseconds with microsecond precision.
fn duration_secs_ms(duration: Duration) -> f64 {
    (duration.as_micros() as f64) / 1000.0
}

/// The longest prefix of `text` within `max` bytes, on a character boundary.
pub fn clip(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// A call on its way to becoming an event: exactly one, however the call ends. The
/// call's budget hold, when it made one, is settled with the call's spend as its event
/// is recorded.
pub struct CallGuard {
    record: Option<CallRecord>,
    recorder: Arc<Recorder>,
    /// The budget hold the call made ([`CallGuard::keep_hold`]).
    hold: Option<Hold>,
    /// Set once the call may be spending upstream ([`CallGuard::going_upstream`]).
    request_tokens: Option<u64>,
}

impl CallGuard {
    pub fn new(recorder: Arc<Recorder>, record: CallRecord) -> Self {
        Self {
            record: Some(record),
            recorder,
            hold: None,
            request_tokens: None,
        }
    }

    /// The record, to fill in as the call proceeds.
    pub fn record(&mut self) -> Option<&mut CallRecord> {
        self.record.as_mut()
    }

    /// What is known of the call so far; `None` once it is over.
    pub fn record_so_far(&self) -> Option<&CallRecord> {
        self.record.as_ref()
    }

    /// The call's budget hold: its event names it, and the call's end settles it with
    /// what the call spent.
    pub fn keep_hold(&mut self, hold: Hold) {
        if let Some(record) = self.record.as_mut() {
            record.reservation_id = Some(hold.id.clone());
        }
        self.hold = Some(hold);
    }

    /// From here the call may be spending upstream: cut short, it is taken to have read
    /// its whole request, `request_tokens` (its body at one token per
    /// [`crate::budget::BYTES_PER_TOKEN`] bytes).
    pub fn going_upstream(&mut self, request_tokens: u64) {
        self.request_tokens = Some(request_tokens);
    }

    /// The call was cut short after it went upstream (the caller gone, a stream failed,
    /// the timeout), and was still paid for: the counts the upstream reported are kept;
    /// the input it did not report is the request's size, the output it did not report
    /// one token per content chunk relayed (`content_chunks`), and the event says they
    /// are estimates with `attributes.usage = "estimated"`. A call that never went
    /// upstream (a cache replay, a refusal) spent nothing and counts nothing.
    pub fn count_cut_short(&mut self, content_chunks: u64) {
        let (Some(request_tokens), Some(record)) = (self.request_tokens, self.record.as_mut())
        else {
            return;
        };
        let mut usage = record.usage.unwrap_or_default();
        if usage.prompt_tokens.is_some() && usage.completion_tokens.is_some() {
            return;
        }
        usage.prompt_tokens = usage.prompt_tokens.or(Some(request_tokens));
        usage.completion_tokens = usage.completion_tokens.or(Some(content_chunks));
        record.usage = Some(usage);
        record
            .attributes
            .push(("usage".to_string(), "estimated".to_string()));
    }

    /// The call is over: `None` for success, else its `error_type`. Its hold is settled
    /// with the usage recorded (none: nothing spent) before the event is queued.
    pub fn finish(&mut self, error_type: Option<&str>) {
        if let Some(record) = self.record.take() {
            if let Some(hold) = self.hold.take() {
                hold.settle(record.usage);
            }
            self.recorder.record(&record, error_type);
        }
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        // Dropped unanswered: the caller disconnected and the call was cancelled. What
        // it had sent upstream was still paid for; no content reached the caller.
        self.count_cut_short(0);
        self.finish(Some("cancelled"));
    }
}

/// What validation needs beyond the event: the price table and the accepted age.
#[derive(Debug, Clone)]
pub struct Validation {
    pub prices: Arc<PriceTable>,
    pub max_event_age: Duration,
    pub max_event_future: Duration,
    /// Payload capture, as ingest's (`[payloads]`): the calls' text is capped, sampled
    /// and redacted as ingest does before the log; `None`: none is kept.
    pub payloads: Option<Arc<ais_ingest::PayloadCapture>>,
}

struct Queued {
    tenant: String,
    key: Option<String>,
    json: Vec<u8>,
}

/// The bounded queue of events and the writer behind it.
pub struct Recorder {
    sender: mpsc::Sender<Queued>,
    clock: Arc<dyn Clock>,
    dropped: metrics::Counter,
    /// The payload cap while capture is on.
    payload_cap: Option<usize>,
}

impl Recorder {
    /// Starts the writer on the current runtime; it ends once every [`Recorder`] handle
    /// is dropped and the queue is drained.
    pub fn spawn(
        sink: Arc<dyn EventSink>,
        validation: Validation,
        capacity: usize,
        clock: Arc<dyn Clock>,
    ) -> (Arc<Self>, tokio::task::JoinHandle<()>) {
        let (sender, receiver) = mpsc::channel(capacity.max(1));
        for outcome in ["recorded", "dropped", "invalid"] {
            metrics::counter!("ais_gateway_events_total", "outcome" => outcome).increment(0);
        }
        let payload_cap = validation
            .payloads
            .as_ref()
            .map(|capture| capture.max_bytes);
        let writer = tokio::spawn(write(receiver, sink, validation, clock.clone()));
        let recorder = Arc::new(Self {
            payload_cap,
            sender,
            clock,
            dropped: metrics::counter!("ais_gateway_events_total", "outcome" => "dropped"),
        });
        (recorder, writer)
    }

    /// With payload capture on, how much of a call's text its event keeps.
    pub fn payload_cap(&self) -> Option<usize> {
        self.payload_cap
    }

    /// Queues the event of a finished call; never waits.
    pub fn record(&self, record: &CallRecord, error_type: Option<&str>) {
        let latency = self.clock.now().saturating_duration_since(record.started);
        let queued = Queued {
            tenant: record.tenant.clone(),
            key: record.key.clone(),
            json: record.to_json(latency, error_type),
        };
        if self.sender.try_send(queued).is_err() {
            self.dropped.increment(1);
        }
    }
}

async fn write(
    mut receiver: mpsc::Receiver<Queued>,
    sink: Arc<dyn EventSink>,
    validation: Validation,
    clock: Arc<dyn Clock>,
) {
    let recorded = metrics::counter!("ais_gateway_events_total", "outcome" => "recorded");
    let dropped = metrics::counter!("ais_gateway_events_total", "outcome" => "dropped");
    let invalid = metrics::counter!("ais_gateway_events_total", "outcome" => "invalid");
    let mut pending = Vec::with_capacity(MAX_EVENTS_PER_APPEND);
    while receiver
        .recv_many(&mut pending, MAX_EVENTS_PER_APPEND)
        .await
        > 0
    {
        let context = ValidationContext {
            now_ms: clock.now_ms(),
            max_age_ms: duration_ms(validation.max_event_age),
            max_future_ms: duration_ms(validation.max_event_future),
            max_events: 1,
            prices: &validation.prices,
            payload_max_bytes: validation
                .payloads
                .as_ref()
                .map(|capture| capture.max_bytes),
        };
        let mut batch = RecordBatch::with_capacity(pending.len() * ENCODED_BYTES_PER_EVENT_HINT);
        let mut refused = 0u64;
        for queued in &pending {
            match decode::decode_events(&queued.json, BodyFormat::Json, &context) {
                Ok(mut decoded) => {
                    ais_ingest::payloads::apply(
                        validation.payloads.as_deref(),
                        &queued.tenant,
                        &mut decoded.events,
                    );
                    for rejection in &decoded.rejected {
                        tracing::warn!(error = %rejection.error, "a call's event is invalid");
                    }
                    refused += decoded.rejected.len() as u64;
                    for event in &decoded.events {
                        batch.push_with(|buf| {
                            wire::encode_keyed(&queued.tenant, queued.key.as_deref(), event, buf)
                        });
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "a call's event is invalid");
                    refused += 1;
                }
            }
        }
        invalid.increment(refused);
        pending.clear();
        if batch.is_empty() {
            continue;
        }
        let count = u64::from(batch.len());
        match sink.append(batch).await {
            Ok(()) => recorded.increment(count),
            Err(error) => {
                tracing::warn!(%error, events = count, "call events dropped: the log did not take them");
                dropped.increment(count);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use ais_model::time::SystemClock;

    use super::*;

    #[derive(Default)]
    struct Memory {
        batches: Mutex<Vec<RecordBatch>>,
        fail: bool,
    }

    #[async_trait]
    impl EventSink for Memory {
        async fn append(&self, batch: RecordBatch) -> Result<(), String> {
            if self.fail {
                return Err("log down".into());
            }
            self.batches.lock().expect("lock").push(batch);
            Ok(())
        }
    }

    fn record(clock: &dyn Clock) -> CallRecord {
        CallRecord {
            tenant: "acme".into(),
            timestamp_ms: clock.now_ms(),
            started: clock.now(),
            model: "gpt-4o".into(),
            operation: "chat",
            provider: Some("openai"),
            response_model: Some("gpt-4o-2024".into()),
            upstream: Some("http://127.0.0.1:9/v1".into()),
            attempts: 2,
            user_id: Some("u".repeat(300)),
            key: Some("ci".into()),
            reservation_id: Some("res-1".into()),
            attributes: vec![("feature".into(), "search".into())],
            ttft: Some(Duration::from_millis(12)),
            usage: Some(Usage {
                prompt_tokens: Some(10),
                completion_tokens: Some(5),
                ..Usage::default()
            }),
            input: None,
            output: None,
        }
    }

    #[tokio::test]
    async fn a_finished_call_is_a_valid_event_in_the_sink() {
        let sink = Arc::new(Memory::default());
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let (recorder, writer) = Recorder::spawn(
            sink.clone(),
            Validation {
                prices: Arc::new(PriceTable::with_defaults()),
                max_event_age: Duration::from_secs(3600),
                max_event_future: Duration::from_secs(300),
                payloads: None,
            },
            8,
            clock.clone(),
        );
        let mut guard = CallGuard::new(recorder.clone(), record(clock.as_ref()));
        guard.finish(None);
        drop(guard);
        let cancelled = CallGuard::new(recorder.clone(), record(clock.as_ref()));
        drop(cancelled);
        drop(recorder);
        writer.await.expect("writer ends once the recorder is gone");
        let batches = sink.batches.lock().expect("lock");
        let records: Vec<Vec<u8>> = batches
            .iter()
            .flat_map(|batch| batch.iter().map(<[u8]>::to_vec).collect::<Vec<_>>())
            .collect();
        assert_eq!(
            records.len(),
            2,
            "one event per call, the cancelled one too"
        );
        let (tenant, event) = wire::decode(&records[0]).expect("decodes");
        assert_eq!(tenant, "acme");
        assert_eq!(event.model, "gpt-4o");
        assert_eq!(event.input_tokens, Some(10));
        assert_eq!(event.ttft_ms, Some(12.0));
        assert_eq!(event.user_id.as_deref().map(str::len), Some(128), "clipped");
        // Stamped with the caller's key as ingest stamps it, naming its budget hold.
        assert_eq!(event.key.as_deref(), Some("ci"));
        assert_eq!(event.reservation_id.as_deref(), Some("res-1"));
        assert!(event
            .attributes
            .iter()
            .any(|(key, value)| key == "upstream" && value == "http://127.0.0.1:9/v1"));
        let (_, cancelled) = wire::decode(&records[1]).expect("decodes");
        assert_eq!(cancelled.error_type.as_deref(), Some("cancelled"));
    }

    #[tokio::test]
    async fn a_failing_sink_drops_events_without_blocking_the_caller() {
        let sink = Arc::new(Memory {
            fail: true,
            ..Memory::default()
        });
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let (recorder, writer) = Recorder::spawn(
            sink.clone(),
            Validation {
                prices: Arc::new(PriceTable::with_defaults()),
                max_event_age: Duration::from_secs(3600),
                max_event_future: Duration::from_secs(300),
                payloads: None,
            },
            1,
            clock.clone(),
        );
        // More than the queue holds: the extra ones are dropped at once, not waited on.
        for _ in 0..100 {
            recorder.record(&record(clock.as_ref()), None);
        }
        drop(recorder);
        writer.await.expect("writer ends");
        assert!(sink.batches.lock().expect("lock").is_empty());
    }
}
