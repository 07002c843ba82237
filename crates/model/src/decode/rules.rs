//! The v1 rules shared by every decoder: field lengths, the accepted time range, the
//! duration and cost bounds, and the attribute limits, each with the message that names
//! the field. JSON bodies and OTLP spans are held to exactly these, so an event means
//! the same whichever way it arrived.

use super::ValidationContext;
use crate::event::limits;

/// Largest accepted `cost_usd` of one call.
pub(crate) const MAX_COST_USD: f64 = 1e9;

pub(crate) fn check_len(field: &str, text: &str, max_bytes: usize) -> Result<(), String> {
    if text.len() > max_bytes {
        return Err(format!(
            "{field}: longer than {max_bytes} bytes ({} bytes)",
            text.len()
        ));
    }
    Ok(())
}

pub(crate) fn check_model(model: &str) -> Result<(), String> {
    if model.is_empty() {
        return Err("model: must not be empty".to_string());
    }
    Ok(())
}

pub(crate) fn check_event_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("event_id: must not be empty".to_string());
    }
    check_len("event_id", id, limits::EVENT_ID_BYTES)
}

/// Within `[now - max_age, now + max_future]`.
pub(crate) fn check_timestamp(ms: i64, context: &ValidationContext<'_>) -> Result<i64, String> {
    if ms > context.now_ms.saturating_add(context.max_future_ms) {
        return Err(format!(
            "timestamp: {} is more than {} s in the future; check the producer's clock",
            crate::time::format_rfc3339_ms(ms),
            context.max_future_ms / 1000
        ));
    }
    if ms < context.now_ms.saturating_sub(context.max_age_ms) {
        return Err(format!(
            "timestamp: {} is older than the retention of {} hours",
            crate::time::format_rfc3339_ms(ms),
            context.max_age_ms / 3_600_000
        ));
    }
    Ok(ms)
}

/// Durations (`latency_ms`, `ttft_ms`) are finite and ≥ 0.
pub(crate) fn check_duration(field: &str, ms: f64) -> Result<f64, String> {
    if ms.is_finite() && ms >= 0.0 {
        Ok(ms)
    } else {
        Err(format!("{field}: expected a number >= 0, found {ms}"))
    }
}

pub(crate) fn check_cost_usd(usd: f64) -> Result<(), String> {
    if usd > MAX_COST_USD {
        return Err(format!("cost_usd: larger than {MAX_COST_USD} for one call"));
    }
    Ok(())
}

pub(crate) fn check_attribute_count(count: usize) -> Result<(), String> {
    if count > limits::ATTRIBUTES {
        return Err(format!(
            "attributes: more than {} keys ({count})",
            limits::ATTRIBUTES,
        ));
    }
    Ok(())
}

pub(crate) fn check_attribute_key(key: &str) -> Result<(), String> {
    if key.len() > limits::ATTRIBUTE_KEY_BYTES {
        return Err(format!(
            "attributes: key {:?}… longer than {} bytes",
            key.chars().take(16).collect::<String>(),
            limits::ATTRIBUTE_KEY_BYTES
        ));
    }
    Ok(())
}

pub(crate) fn check_attribute_value(key: &str, value: &str) -> Result<(), String> {
    if value.len() > limits::ATTRIBUTE_VALUE_BYTES {
        return Err(format!(
            "attributes: value of {key:?} longer than {} bytes",
            limits::ATTRIBUTE_VALUE_BYTES
        ));
    }
    Ok(())
}
