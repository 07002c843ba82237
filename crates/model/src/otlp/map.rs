//! GenAI spans onto v1 events.
//!
//! One pass over a span's attributes picks out the GenAI semantic-convention keys
//! (current names first, the deprecated ones older instrumentations still send as
//! fallbacks); each value is then converted and held to the v1 rules of
//! `decode::rules`, so an invalid span is rejected alone with a message that names the
//! event field and the attribute it came from. The event borrows its strings from the
//! decoded request. The mapping table is in the README.

use std::borrow::Cow;
use std::fmt::Write as _;

use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::Span;

use super::{ExportTracePartialSuccess, ExportTraceServiceRequest};
use crate::decode::{rules, ValidationContext};
use crate::event::limits;
use crate::{Event, EventId, Status};

/// Rejections described in the partial-success message; the rest are only counted, so
/// the message stays short however bad the batch.
const MAX_DESCRIBED_REJECTIONS: usize = 3;

/// `gen_ai.operation.name` values that are not model calls (agents, tools): such spans
/// without a model are skipped, not rejected.
const NON_INFERENCE_OPERATIONS: &[&str] = &[
    "create_agent",
    "invoke_agent",
    "execute_tool",
    "invoke_workflow",
];

/// Attribute names of older GenAI conventions the mapping still reads, as fallbacks for
/// the current ones. [`Mapped::deprecated`] counts the spans carrying each, so the
/// ingest report can tell producers to upgrade their instrumentation.
pub const DEPRECATED_ATTRIBUTES: [&str; 5] = [
    "gen_ai.system",
    "gen_ai.usage.prompt_tokens",
    "gen_ai.usage.completion_tokens",
    "gen_ai.usage.cache_read_input_tokens",
    "gen_ai.usage.cache_creation_input_tokens",
];

/// One span that was not accepted, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpanRejection {
    /// Position of the span in the request, counting across resources and scopes.
    pub index: usize,
    pub span_id: String,
    pub error: String,
}

/// The outcome of one request.
#[derive(Debug, Default)]
pub struct Mapped<'a> {
    pub events: Vec<Event<'a>>,
    /// Spans in the request.
    pub spans: usize,
    /// Spans without GenAI attributes (or agent and tool spans without a model).
    pub skipped: usize,
    /// Spans with GenAI attributes that break a v1 rule.
    pub rejected: usize,
    /// The first few rejections.
    pub rejections: Vec<SpanRejection>,
    /// Spans carrying each of [`DEPRECATED_ATTRIBUTES`], in its order.
    pub deprecated: [u64; DEPRECATED_ATTRIBUTES.len()],
}

impl Mapped<'_> {
    /// The `partial_success` of the response: `None` when every span was accepted.
    pub fn partial_success(&self) -> Option<ExportTracePartialSuccess> {
        let refused = self.skipped + self.rejected;
        if refused == 0 {
            return None;
        }
        let mut message = String::new();
        if self.rejected > 0 {
            let _ = write!(message, "{} spans rejected", self.rejected);
            for (n, rejection) in self.rejections.iter().enumerate() {
                let _ = write!(
                    message,
                    "{} span {} (#{}): {}",
                    if n == 0 { ":" } else { ";" },
                    rejection.span_id,
                    rejection.index,
                    rejection.error
                );
            }
            if self.rejected > self.rejections.len() {
                message.push_str("; …");
            }
        }
        if self.skipped > 0 {
            if !message.is_empty() {
                message.push_str(". ");
            }
            let _ = write!(
                message,
                "{} spans skipped: no gen_ai.* attributes of a model call",
                self.skipped
            );
        }
        Some(ExportTracePartialSuccess {
            rejected_spans: i64::try_from(refused).unwrap_or(i64::MAX),
            error_message: message,
        })
    }

    fn reject(&mut self, index: usize, span: &Span, error: String) {
        self.rejected += 1;
        if self.rejections.len() < MAX_DESCRIBED_REJECTIONS {
            self.rejections.push(SpanRejection {
                index,
                span_id: hex(&span.span_id),
                error,
            });
        }
    }
}

/// Maps every span of a decoded request.
pub fn map_request<'a>(
    request: &'a ExportTraceServiceRequest,
    context: &ValidationContext<'_>,
) -> Mapped<'a> {
    let mut mapped = Mapped::default();
    let mut index = 0;
    for resource_spans in &request.resource_spans {
        let resource_attributes: &[KeyValue] = resource_spans
            .resource
            .as_ref()
            .map_or(&[], |resource| &resource.attributes);
        let resource = ResourceFacts::new(resource_attributes);
        for scope_spans in &resource_spans.scope_spans {
            for span in &scope_spans.spans {
                mapped.spans += 1;
                match map_span(span, &resource, context, &mut mapped.deprecated) {
                    Outcome::Event(event) => mapped.events.push(*event),
                    Outcome::Skipped => mapped.skipped += 1,
                    Outcome::Rejected(error) => mapped.reject(index, span, error),
                }
                index += 1;
            }
        }
    }
    mapped
}

enum Outcome<'a> {
    Event(Box<Event<'a>>),
    Skipped,
    Rejected(String),
}

/// What a resource contributes to each of its spans' events.
struct ResourceFacts<'a> {
    /// Scalar resource attributes that fit the attribute limits, `service.name` first.
    attributes: Vec<(Cow<'a, str>, Cow<'a, str>)>,
    region: Option<&'a AnyValue>,
}

impl<'a> ResourceFacts<'a> {
    fn new(attributes: &'a [KeyValue]) -> Self {
        let mut kept = Vec::new();
        let mut region = None;
        let service_first = attributes
            .iter()
            .filter(|kv| kv.key == "service.name")
            .chain(attributes.iter().filter(|kv| kv.key != "service.name"));
        for kv in service_first {
            if kv.key == "cloud.region" {
                region = kv.value.as_ref();
            }
            // Leave room for the span's own attributes (finish reasons).
            if kept.len() == limits::ATTRIBUTES - 1 {
                continue;
            }
            if let Some(text) = kv.value.as_ref().and_then(scalar_text) {
                if rules::check_attribute_key(&kv.key).is_ok()
                    && rules::check_attribute_value(&kv.key, &text).is_ok()
                {
                    kept.push((Cow::Borrowed(kv.key.as_str()), text));
                }
            }
        }
        Self {
            attributes: kept,
            region,
        }
    }
}

/// The GenAI attributes of one span, still as sent.
#[derive(Default)]
struct GenAi<'a> {
    any: bool,
    operation: Option<&'a AnyValue>,
    provider: Option<&'a AnyValue>,
    system: Option<&'a AnyValue>,
    request_model: Option<&'a AnyValue>,
    response_model: Option<&'a AnyValue>,
    input_tokens: Option<&'a AnyValue>,
    prompt_tokens: Option<&'a AnyValue>,
    output_tokens: Option<&'a AnyValue>,
    completion_tokens: Option<&'a AnyValue>,
    reasoning: Option<&'a AnyValue>,
    cache_read: Option<&'a AnyValue>,
    cache_read_older: Option<&'a AnyValue>,
    cache_creation: Option<&'a AnyValue>,
    cache_creation_older: Option<&'a AnyValue>,
    finish_reasons: Option<&'a AnyValue>,
    time_to_first_chunk: Option<&'a AnyValue>,
    error_type: Option<&'a AnyValue>,
    server_address: Option<&'a AnyValue>,
    server_port: Option<&'a AnyValue>,
    user_id: Option<&'a AnyValue>,
    session_id: Option<&'a AnyValue>,
    conversation_id: Option<&'a AnyValue>,
    region: Option<&'a AnyValue>,
}

impl<'a> GenAi<'a> {
    fn of(span: &'a Span) -> Self {
        let mut found = GenAi::default();
        for kv in &span.attributes {
            let Some(value) = kv.value.as_ref() else {
                continue;
            };
            found.any |= kv.key.starts_with("gen_ai.");
            let slot = match kv.key.as_str() {
                "gen_ai.operation.name" => &mut found.operation,
                "gen_ai.provider.name" => &mut found.provider,
                "gen_ai.system" => &mut found.system,
                "gen_ai.request.model" => &mut found.request_model,
                "gen_ai.response.model" => &mut found.response_model,
                "gen_ai.usage.input_tokens" => &mut found.input_tokens,
                "gen_ai.usage.prompt_tokens" => &mut found.prompt_tokens,
                "gen_ai.usage.output_tokens" => &mut found.output_tokens,
                "gen_ai.usage.completion_tokens" => &mut found.completion_tokens,
                "gen_ai.usage.cache_read.input_tokens" => &mut found.cache_read,
                "gen_ai.usage.cache_read_input_tokens" => &mut found.cache_read_older,
                "gen_ai.usage.reasoning.output_tokens" => &mut found.reasoning,
                "gen_ai.usage.cache_creation.input_tokens" => &mut found.cache_creation,
                "gen_ai.usage.cache_creation_input_tokens" => &mut found.cache_creation_older,
                "gen_ai.response.finish_reasons" => &mut found.finish_reasons,
                "gen_ai.response.time_to_first_chunk" => &mut found.time_to_first_chunk,
                "error.type" => &mut found.error_type,
                "server.address" => &mut found.server_address,
                "server.port" => &mut found.server_port,
                "user.id" => &mut found.user_id,
                "session.id" => &mut found.session_id,
                "gen_ai.conversation.id" => &mut found.conversation_id,
                "cloud.region" => &mut found.region,
                _ => continue,
            };
            *slot = Some(value);
        }
        found
    }
}

/// An attribute value and the attribute it came from, for messages.
type Sourced<'a> = Option<(&'a AnyValue, &'static str)>;

fn first<'a>(candidates: &[(Option<&'a AnyValue>, &'static str)]) -> Sourced<'a> {
    candidates
        .iter()
        .find_map(|(value, name)| value.map(|value| (value, *name)))
}

fn map_span<'a>(
    span: &'a Span,
    resource: &ResourceFacts<'a>,
    context: &ValidationContext<'_>,
    deprecated: &mut [u64; DEPRECATED_ATTRIBUTES.len()],
) -> Outcome<'a> {
    let genai = GenAi::of(span);
    if !genai.any {
        return Outcome::Skipped;
    }
    let seen = [
        genai.system,
        genai.prompt_tokens,
        genai.completion_tokens,
        genai.cache_read_older,
        genai.cache_creation_older,
    ];
    for (count, value) in deprecated.iter_mut().zip(seen) {
        *count += u64::from(value.is_some());
    }
    let model = first(&[
        (genai.request_model, "gen_ai.request.model"),
        (genai.response_model, "gen_ai.response.model"),
    ]);
    if model.is_none() {
        let operation = genai.operation.and_then(|value| match &value.value {
            Some(Value::StringValue(text)) => Some(text.as_str()),
            _ => None,
        });
        if operation.is_some_and(|name| NON_INFERENCE_OPERATIONS.contains(&name)) {
            return Outcome::Skipped;
        }
    }
    match build_event(span, &genai, model, resource, context) {
        Ok(event) => Outcome::Event(Box::new(event)),
        Err(error) => Outcome::Rejected(error),
    }
}

fn build_event<'a>(
    span: &'a Span,
    genai: &GenAi<'a>,
    model: Sourced<'a>,
    resource: &ResourceFacts<'a>,
    context: &ValidationContext<'_>,
) -> Result<Event<'a>, String> {
    let (model_value, model_source) =
        model.ok_or_else(|| "model: required (gen_ai.request.model)".to_string())?;
    let model = string(model_value, "model", model_source, limits::MODEL_BYTES)?;
    rules::check_model(&model).map_err(|error| from(error, model_source))?;

    let trace_id = id(&span.trace_id, 16, "trace_id")?;
    let span_id = id(&span.span_id, 8, "span_id")?;
    // The client id of the event: an exporter's retry carries the same span, so the
    // stream's dedup by (tenant, event_id) counts it once.
    let event_id = format!("{trace_id}{span_id}");
    rules::check_event_id(&event_id)?;

    if span.start_time_unix_nano == 0 {
        return Err("timestamp: required (start_time_unix_nano is 0)".to_string());
    }
    let timestamp_ms = rules::check_timestamp(nanos_to_ms(span.start_time_unix_nano), context)?;
    if span.end_time_unix_nano == 0 {
        return Err("latency_ms: required (end_time_unix_nano is 0)".to_string());
    }
    let Some(duration_nanos) = span
        .end_time_unix_nano
        .checked_sub(span.start_time_unix_nano)
    else {
        return Err("latency_ms: the span ends before it starts".to_string());
    };
    let latency_ms = rules::check_duration("latency_ms", duration_nanos as f64 / 1e6)?;
    let ttft_ms = genai
        .time_to_first_chunk
        .map(|value| {
            let source = "gen_ai.response.time_to_first_chunk";
            let seconds = number(value, "ttft_ms", source)?;
            rules::check_duration("ttft_ms", seconds * 1000.0).map_err(|error| from(error, source))
        })
        .transpose()?;

    let error_type = optional_string(
        genai.error_type.map(|value| (value, "error.type")),
        "error_type",
        limits::ERROR_TYPE_BYTES,
    )?;
    let failed = span
        .status
        .as_ref()
        .is_some_and(|status| status.code == StatusCode::Error as i32);
    let status = if failed || error_type.is_some() {
        Status::Error
    } else {
        Status::Ok
    };

    let endpoint = match optional_string(
        genai.server_address.map(|value| (value, "server.address")),
        "endpoint",
        limits::KEY_BYTES,
    )? {
        Some(address) => match genai.server_port.and_then(integer_value) {
            Some(port) => {
                let joined = format!("{address}:{port}");
                rules::check_len("endpoint", &joined, limits::KEY_BYTES)
                    .map_err(|error| from(error, "server.address"))?;
                Some(Cow::Owned(joined))
            }
            None => Some(address),
        },
        None => None,
    };

    let mut attributes = resource.attributes.clone();
    if let Some(reasons) = genai.finish_reasons.and_then(finish_reasons) {
        let key = "gen_ai.response.finish_reasons";
        if rules::check_attribute_value(key, &reasons).is_ok() {
            attributes.push((Cow::Borrowed(key), reasons));
        }
    }
    debug_assert!(rules::check_attribute_count(attributes.len()).is_ok());

    let mut event = Event {
        response_model: optional_string(
            genai
                .response_model
                .map(|value| (value, "gen_ai.response.model")),
            "response_model",
            limits::MODEL_BYTES,
        )?,
        provider: optional_string(
            first(&[
                (genai.provider, "gen_ai.provider.name"),
                (genai.system, "gen_ai.system"),
            ]),
            "provider",
            limits::PROVIDER_BYTES,
        )?,
        operation: optional_string(
            genai
                .operation
                .map(|value| (value, "gen_ai.operation.name")),
            "operation",
            limits::OPERATION_BYTES,
        )?,
        ttft_ms,
        input_tokens: count(
            first(&[
                (genai.input_tokens, "gen_ai.usage.input_tokens"),
                (genai.prompt_tokens, "gen_ai.usage.prompt_tokens"),
            ]),
            "input_tokens",
        )?,
        output_tokens: count(
            first(&[
                (genai.output_tokens, "gen_ai.usage.output_tokens"),
                (genai.completion_tokens, "gen_ai.usage.completion_tokens"),
            ]),
            "output_tokens",
        )?,
        cache_read_input_tokens: count(
            first(&[
                (genai.cache_read, "gen_ai.usage.cache_read.input_tokens"),
                (
                    genai.cache_read_older,
                    "gen_ai.usage.cache_read_input_tokens",
                ),
            ]),
            "cache_read_input_tokens",
        )?,
        reasoning_output_tokens: count(
            genai
                .reasoning
                .map(|value| (value, "gen_ai.usage.reasoning.output_tokens")),
            "reasoning_output_tokens",
        )?,
        cache_creation_input_tokens: count(
            first(&[
                (
                    genai.cache_creation,
                    "gen_ai.usage.cache_creation.input_tokens",
                ),
                (
                    genai.cache_creation_older,
                    "gen_ai.usage.cache_creation_input_tokens",
                ),
            ]),
            "cache_creation_input_tokens",
        )?,
        status,
        error_type,
        user_id: optional_string(
            genai.user_id.map(|value| (value, "user.id")),
            "user_id",
            limits::KEY_BYTES,
        )?,
        session_id: optional_string(
            first(&[
                (genai.session_id, "session.id"),
                (genai.conversation_id, "gen_ai.conversation.id"),
            ]),
            "session_id",
            limits::KEY_BYTES,
        )?,
        trace_id: Some(Cow::Owned(trace_id)),
        span_id: Some(Cow::Owned(span_id)),
        endpoint,
        region: optional_string(
            genai
                .region
                .or(resource.region)
                .map(|value| (value, "cloud.region")),
            "region",
            limits::KEY_BYTES,
        )?,
        attributes,
        ..Event::new(
            model,
            EventId::Client(Cow::Owned(event_id)),
            timestamp_ms,
            latency_ms,
        )
    };
    event.cost_micros = context.prices.cost_micros(&event);
    if let Some(cap) = context.payload_max_bytes {
        let (input, output) = messages(span);
        event.input = input.map(|text| crate::decode::cap_payload(text, cap));
        event.output = output.map(|text| crate::decode::cap_payload(text, cap));
    }
    Ok(event)
}

/// Where a span carries what its call was sent and answered, first found first: the
/// GenAI conventions' `gen_ai.input.messages` and `gen_ai.output.messages` (on the span,
/// or on its `gen_ai.client.inference.operation.details` event), then the older
/// `gen_ai.prompt` and `gen_ai.completion` (on the span, or on its
/// `gen_ai.content.prompt` and `gen_ai.content.completion` events).
const INPUT_KEYS: [&str; 2] = ["gen_ai.input.messages", "gen_ai.prompt"];
const OUTPUT_KEYS: [&str; 2] = ["gen_ai.output.messages", "gen_ai.completion"];

/// A span's (input, output) messages, as text: a string as it is, structured values
/// as their JSON.
fn messages(span: &Span) -> (Option<Cow<'_, str>>, Option<Cow<'_, str>>) {
    let find = |keys: &[&str]| {
        keys.iter().find_map(|key| {
            std::iter::once(&span.attributes)
                .chain(span.events.iter().map(|event| &event.attributes))
                .flat_map(|attributes| attributes.iter())
                .find(|kv| kv.key == *key)
                .and_then(|kv| kv.value.as_ref())
                .and_then(message_text)
        })
    };
    (find(&INPUT_KEYS), find(&OUTPUT_KEYS))
}

fn message_text(value: &AnyValue) -> Option<Cow<'_, str>> {
    match &value.value {
        Some(Value::StringValue(text)) => Some(Cow::Borrowed(text.as_str())),
        Some(Value::ArrayValue(_) | Value::KvlistValue(_)) => {
            Some(Cow::Owned(json_of(value).to_string()))
        }
        _ => None,
    }
}

/// An attribute value as JSON (maps as objects, arrays as arrays).
fn json_of(value: &AnyValue) -> serde_json::Value {
    use serde_json::Value as Json;
    match &value.value {
        Some(Value::StringValue(text)) => Json::String(text.clone()),
        Some(Value::BoolValue(flag)) => Json::Bool(*flag),
        Some(Value::IntValue(number)) => Json::from(*number),
        Some(Value::DoubleValue(number)) => {
            serde_json::Number::from_f64(*number).map_or(Json::Null, Json::Number)
        }
        Some(Value::ArrayValue(array)) => Json::Array(array.values.iter().map(json_of).collect()),
        Some(Value::KvlistValue(map)) => Json::Object(
            map.values
                .iter()
                .map(|kv| {
                    (
                        kv.key.clone(),
                        kv.value.as_ref().map_or(Json::Null, json_of),
                    )
                })
                .collect(),
        ),
        Some(Value::BytesValue(_) | Value::StringValueStrindex(_)) | None => Json::Null,
    }
}

/// Names the attribute behind a v1 rule's message.
fn from(error: String, source: &str) -> String {
    format!("{error} (from {source})")
}

fn nanos_to_ms(nanos: u64) -> i64 {
    // u64 nanoseconds / 10^6 is below 2^45: always an i64.
    i64::try_from(nanos / 1_000_000).unwrap_or(i64::MAX)
}

/// Lower-case hex of a trace or span id of the expected length, not all zeros.
fn id(bytes: &[u8], length: usize, field: &str) -> Result<String, String> {
    if bytes.len() != length || bytes.iter().all(|byte| *byte == 0) {
        return Err(format!(
            "{field}: expected {length} bytes, not all zero, found {} bytes",
            bytes.len()
        ));
    }
    Ok(hex(bytes))
}

fn hex(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(text, "{byte:02x}");
    }
    text
}

/// An attribute value in an error message, shortened.
fn shown(value: &AnyValue) -> String {
    const MAX_CHARS: usize = 40;
    match &value.value {
        Some(Value::StringValue(text)) if text.chars().count() > MAX_CHARS => {
            format!("{:?}…", text.chars().take(MAX_CHARS).collect::<String>())
        }
        Some(Value::StringValue(text)) => format!("{text:?}"),
        Some(Value::BoolValue(flag)) => flag.to_string(),
        Some(Value::IntValue(number)) => number.to_string(),
        Some(Value::DoubleValue(number)) => number.to_string(),
        Some(Value::ArrayValue(_)) => "an array".to_string(),
        Some(Value::KvlistValue(_)) => "a map".to_string(),
        Some(Value::BytesValue(_)) => "bytes".to_string(),
        // String tables belong to the profiles signal; a span has none to look it up in.
        Some(Value::StringValueStrindex(_)) => "a string table index".to_string(),
        None => "an empty value".to_string(),
    }
}

fn string<'a>(
    value: &'a AnyValue,
    field: &str,
    source: &str,
    max_bytes: usize,
) -> Result<Cow<'a, str>, String> {
    let Some(Value::StringValue(text)) = &value.value else {
        return Err(format!(
            "{field}: expected a string, found {} (from {source})",
            shown(value)
        ));
    };
    rules::check_len(field, text, max_bytes).map_err(|error| from(error, source))?;
    Ok(Cow::Borrowed(text.as_str()))
}

fn optional_string<'a>(
    value: Sourced<'a>,
    field: &str,
    max_bytes: usize,
) -> Result<Option<Cow<'a, str>>, String> {
    value
        .map(|(value, source)| string(value, field, source, max_bytes))
        .transpose()
}

/// Largest double taken as a token count: integers are exact up to 2^53.
const MAX_EXACT_DOUBLE: f64 = 9_007_199_254_740_992.0;

/// Whole numbers; some SDKs (JavaScript) send them as doubles.
fn integer_value(value: &AnyValue) -> Option<u64> {
    match &value.value {
        Some(Value::IntValue(number)) => u64::try_from(*number).ok(),
        Some(Value::DoubleValue(number))
            if number.fract() == 0.0 && (0.0..=MAX_EXACT_DOUBLE).contains(number) =>
        {
            Some(*number as u64)
        }
        _ => None,
    }
}

/// A token count: a whole number, or a string of decimal digits, which some
/// instrumentations send (`stringValue: "123"`). Signs, spaces, fractions and exponents
/// in a string are refused like any other non-count.
fn count_value(value: &AnyValue) -> Option<u64> {
    match &value.value {
        Some(Value::StringValue(text))
            if !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit()) =>
        {
            text.parse().ok()
        }
        _ => integer_value(value),
    }
}

fn count(value: Sourced<'_>, field: &str) -> Result<Option<u64>, String> {
    value
        .map(|(value, source)| {
            count_value(value).ok_or_else(|| {
                format!(
                    "{field}: expected an integer >= 0, found {} (from {source})",
                    shown(value)
                )
            })
        })
        .transpose()
}

fn number(value: &AnyValue, field: &str, source: &str) -> Result<f64, String> {
    match &value.value {
        Some(Value::DoubleValue(number)) => Ok(*number),
        Some(Value::IntValue(number)) => Ok(*number as f64),
        _ => Err(format!(
            "{field}: expected a number >= 0, found {} (from {source})",
            shown(value)
        )),
    }
}

/// A scalar attribute value as text; arrays, maps and bytes have none.
fn scalar_text(value: &AnyValue) -> Option<Cow<'_, str>> {
    match &value.value {
        Some(Value::StringValue(text)) => Some(Cow::Borrowed(text.as_str())),
        Some(Value::BoolValue(flag)) => Some(Cow::Owned(flag.to_string())),
        Some(Value::IntValue(number)) => Some(Cow::Owned(number.to_string())),
        Some(Value::DoubleValue(number)) => Some(Cow::Owned(number.to_string())),
        _ => None,
    }
}

/// `gen_ai.response.finish_reasons` (a string array) as one comma-separated value.
fn finish_reasons(value: &AnyValue) -> Option<Cow<'_, str>> {
    match &value.value {
        Some(Value::ArrayValue(array)) => {
            let reasons: Vec<Cow<'_, str>> = array.values.iter().filter_map(scalar_text).collect();
            match reasons.as_slice() {
                [] => None,
                [one] => Some(one.clone()),
                _ => Some(Cow::Owned(reasons.join(","))),
            }
        }
        _ => scalar_text(value),
    }
}
