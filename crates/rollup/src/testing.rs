//! Events for tests: one with every field set, and the same event as a read that
//! decodes only some columns sees it.

use std::borrow::Cow;

use ais_model::{Event, EventId, Status};

use crate::RollupPartial;

/// `event` with every field outside `fields` emptied the way a read that does not
/// decode its column leaves it (`None`, `""`, 0, `ok`, no attributes). Destructured
/// whole, so a new event field must be placed here.
pub fn keep_only(event: &Event<'static>, fields: &[&str]) -> Event<'static> {
    let kept = |name: &str| fields.contains(&name);
    let Event {
        model,
        event_id,
        timestamp_ms,
        response_model,
        provider,
        operation,
        latency_ms,
        ttft_ms,
        input_tokens,
        output_tokens,
        reasoning_output_tokens,
        cache_read_input_tokens,
        cache_creation_input_tokens,
        cost_micros,
        status,
        error_type,
        user_id,
        session_id,
        trace_id,
        span_id,
        endpoint,
        region,
        attributes,
        key,
        reservation_id,
        input,
        output,
    } = event.clone();
    fn or_none<T>(keep: bool, value: Option<T>) -> Option<T> {
        value.filter(|_| keep)
    }
    Event {
        model: if kept("model") {
            model
        } else {
            Cow::Borrowed("")
        },
        event_id: if kept("event_id") {
            event_id
        } else {
            EventId::Client(Cow::Borrowed(""))
        },
        timestamp_ms: if kept("timestamp") { timestamp_ms } else { 0 },
        response_model: or_none(kept("response_model"), response_model),
        provider: or_none(kept("provider"), provider),
        operation: or_none(kept("operation"), operation),
        latency_ms: if kept("latency_ms") { latency_ms } else { 0.0 },
        ttft_ms: or_none(kept("ttft_ms"), ttft_ms),
        input_tokens: or_none(kept("input_tokens"), input_tokens),
        output_tokens: or_none(kept("output_tokens"), output_tokens),
        reasoning_output_tokens: or_none(kept("reasoning_output_tokens"), reasoning_output_tokens),
        cache_read_input_tokens: or_none(kept("cache_read_input_tokens"), cache_read_input_tokens),
        cache_creation_input_tokens: or_none(
            kept("cache_creation_input_tokens"),
            cache_creation_input_tokens,
        ),
        cost_micros: or_none(kept("cost_usd"), cost_micros),
        status: if kept("status") { status } else { Status::Ok },
        error_type: or_none(kept("error_type"), error_type),
        user_id: or_none(kept("user_id"), user_id),
        session_id: or_none(kept("session_id"), session_id),
        trace_id: or_none(kept("trace_id"), trace_id),
        span_id: or_none(kept("span_id"), span_id),
        endpoint: or_none(kept("endpoint"), endpoint),
        region: or_none(kept("region"), region),
        attributes: if kept("attributes") {
            attributes
        } else {
            Vec::new()
        },
        key: or_none(kept("key"), key),
        reservation_id: or_none(kept("reservation_id"), reservation_id),
        input: or_none(kept("input"), input),
        output: or_none(kept("output"), output),
    }
}

/// An event with every field set, from `seed`.
pub fn full_event(seed: u64) -> Event<'static> {
    let text = |name: &str| Some(Cow::Owned(format!("{name}-{}", seed % 7)));
    Event {
        response_model: text("response"),
        provider: text("provider"),
        operation: text("operation"),
        ttft_ms: Some(1.0 + (seed % 90) as f64),
        input_tokens: Some(seed % 1_000),
        output_tokens: Some(seed % 333),
        reasoning_output_tokens: Some(seed % 11),
        cache_read_input_tokens: Some(seed % 13),
        cache_creation_input_tokens: Some(seed % 17),
        cost_micros: Some(seed % 5_000),
        status: if seed.is_multiple_of(3) {
            Status::Error
        } else {
            Status::Ok
        },
        error_type: text("error"),
        user_id: text("user"),
        session_id: text("session"),
        trace_id: text("trace"),
        span_id: text("span"),
        endpoint: text("endpoint"),
        region: text("region"),
        attributes: vec![(Cow::Borrowed("feature"), Cow::Owned(format!("f{seed}")))],
        ..Event::new(
            format!("model-{}", seed % 5),
            EventId::Client(Cow::Owned(format!("id-{seed}"))),
            1_000 + (seed % 10_000) as i64,
            10.0 + (seed % 500) as f64,
        )
    }
}

/// Every metric a partial answers, as text: counts, sums, errors by type, quantiles
/// and unique users. (Not its bytes: the unique-user counter's encoding is not
/// canonical.)
pub fn metrics(partial: &RollupPartial) -> String {
    format!(
        "{} {} {:?} {} {} {} {} {:?} {:?} {} {:?} {:?} {}",
        partial.requests,
        partial.errors,
        partial.errors_by_type,
        partial.input_tokens,
        partial.output_tokens,
        partial.cache_read_input_tokens,
        partial.cost_micros,
        partial.latency_quantiles(),
        partial.latency_ms.mean(),
        partial.ttft_ms.count(),
        partial.ttft_quantiles(),
        partial.ttft_ms.mean(),
        partial.unique_users(),
    )
}
