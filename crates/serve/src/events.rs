//! `GET /v1/events?from&to[&trace_id][&user_id][&model][&status][&min_latency_ms][&filter=D:v…][&limit]`:
//! raw events of the caller's tenant (an admin's `?tenant=`), newest first.
//!
//! Each event is answered in the v1 ingest format (RFC 3339 `timestamp`, `cost_usd` in
//! dollars, absent fields left out), so what comes out can be posted back as is.
//!
//! Payloads: `include=payloads` adds each event's `input` and `output` as stored
//! (capped and redacted at ingest); `q=TEXT` keeps the events whose input or output
//! holds `TEXT`, ignoring case, within the range and the other filters. A search reads
//! payloads until it has its answer, at most [`QueryLimits::max_search_rows`] events'
//! worth: past that it answers 503 naming the bound, never a partial list. Both are
//! open to the key kinds of [`PayloadReaders`] (`[payloads] readers`; default `all`,
//! `read` and `admin`), others get 403.
//!
//! [`QueryLimits::max_search_rows`]: crate::breakdown::QueryLimits::max_search_rows

use std::collections::HashMap;

use ais_model::auth::{KeyKind, Principal};
use ais_model::dimension::Filters;
use ais_model::time::{format_rfc3339_ms, unix_now_ms};
use ais_model::{Event, EventId, Status};
use ais_store::{EventQuery, PayloadRead, PayloadSearch, StoredEvent};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::Json;
use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

use crate::error::QueryError;
use crate::query::{authorize, may_cross_tenants, tenant_of};
use crate::{params, QueryState};

/// Events returned when `limit` is absent.
pub const DEFAULT_LIMIT: usize = 100;
/// Most events one request returns: bounds the answer's size and the rows decoded.
pub const MAX_LIMIT: usize = 1_000;

/// Longest `q=` text, in bytes: a search term, not a document.
pub const MAX_SEARCH_BYTES: usize = 1_024;

/// The key kinds that may read payloads (`[payloads] readers`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PayloadReaders {
    all: bool,
    read: bool,
    admin: bool,
}

impl Default for PayloadReaders {
    /// Every kind that reads: `all`, `read` and `admin`.
    fn default() -> Self {
        Self {
            all: true,
            read: true,
            admin: true,
        }
    }
}

impl PayloadReaders {
    /// Only the kinds listed; a kind that cannot read (`write`) is refused, named.
    pub fn only(kinds: &[KeyKind]) -> Result<Self, String> {
        if let Some(kind) = kinds.iter().find(|kind| !kind.can_read()) {
            return Err(format!(
                "{} keys cannot read at all; list all, read or admin",
                kind.as_str()
            ));
        }
        Ok(Self {
            all: kinds.contains(&KeyKind::All),
            read: kinds.contains(&KeyKind::Read),
            admin: kinds.contains(&KeyKind::Admin),
        })
    }

    pub fn allows(self, kind: KeyKind) -> bool {
        match kind {
            KeyKind::All => self.all,
            KeyKind::Read => self.read,
            KeyKind::Admin => self.admin,
            KeyKind::Write => false,
        }
    }

    /// The kinds allowed, for messages (`"admin"`, `"all, read"`, `"no kind"`).
    fn names(self) -> String {
        let names: Vec<&str> = [KeyKind::All, KeyKind::Read, KeyKind::Admin]
            .into_iter()
            .filter(|kind| self.allows(*kind))
            .map(KeyKind::as_str)
            .collect();
        if names.is_empty() {
            "no kind".to_string()
        } else {
            names.join(", ")
        }
    }
}

/// What `include=` and `q=` ask of the payloads, checked against who asks.
pub fn payload_read(
    params: &HashMap<String, String>,
    principal: &Principal,
    readers: PayloadReaders,
    max_search_rows: u64,
) -> Result<PayloadRead, QueryError> {
    let include = match params.get("include").map(String::as_str) {
        None | Some("") => false,
        Some("payloads") => true,
        Some(other) => {
            return Err(QueryError::BadParameter(format!(
                "include must be payloads, found {other:?}"
            )))
        }
    };
    let search = match params.get("q") {
        None => None,
        Some(text) if text.is_empty() => {
            return Err(QueryError::BadParameter(
                "q must be the text to search for, found an empty one".to_string(),
            ))
        }
        Some(text) if text.len() > MAX_SEARCH_BYTES => {
            return Err(QueryError::BadParameter(format!(
                "q must be at most {MAX_SEARCH_BYTES} bytes, found {}",
                text.len()
            )))
        }
        Some(text) => Some(PayloadSearch::new(text, max_search_rows)),
    };
    if (include || search.is_some()) && !readers.allows(principal.kind) {
        return Err(QueryError::PayloadsForbidden {
            kind: principal.kind.as_str(),
            allowed: readers.names(),
        });
    }
    Ok(PayloadRead { include, search })
}

/// One event as the API shows it: its payloads when the store returned them.
pub struct EventBody(pub StoredEvent);

impl Serialize for EventBody {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let event: &Event<'_> = &self.0.event;
        let mut map = serializer.serialize_map(None)?;
        match &event.event_id {
            EventId::Client(id) => map.serialize_entry("event_id", id)?,
            EventId::Generated(id) => map.serialize_entry("event_id", &id.to_string())?,
        }
        map.serialize_entry("timestamp", &format_rfc3339_ms(event.timestamp_ms))?;
        map.serialize_entry("model", &event.model)?;
        let texts = [
            ("response_model", &event.response_model),
            ("provider", &event.provider),
            ("operation", &event.operation),
        ];
        for (name, value) in texts {
            if let Some(value) = value {
                map.serialize_entry(name, value)?;
            }
        }
        map.serialize_entry("latency_ms", &event.latency_ms)?;
        if let Some(ttft) = event.ttft_ms {
            map.serialize_entry("ttft_ms", &ttft)?;
        }
        let counts = [
            ("input_tokens", event.input_tokens),
            ("output_tokens", event.output_tokens),
            ("reasoning_output_tokens", event.reasoning_output_tokens),
            ("cache_read_input_tokens", event.cache_read_input_tokens),
            (
                "cache_creation_input_tokens",
                event.cache_creation_input_tokens,
            ),
        ];
        for (name, value) in counts {
            if let Some(value) = value {
                map.serialize_entry(name, &value)?;
            }
        }
        if let Some(micros) = event.cost_micros {
            map.serialize_entry("cost_usd", &(micros as f64 / 1e6))?;
        }
        map.serialize_entry("status", event.status.as_str())?;
        let keys = [
            ("error_type", &event.error_type),
            ("user_id", &event.user_id),
            ("session_id", &event.session_id),
            ("trace_id", &event.trace_id),
            ("span_id", &event.span_id),
            ("endpoint", &event.endpoint),
            ("region", &event.region),
        ];
        for (name, value) in keys {
            if let Some(value) = value {
                map.serialize_entry(name, value)?;
            }
        }
        if !event.attributes.is_empty() {
            map.serialize_entry("attributes", &Attributes(&event.attributes))?;
        }
        for (name, value) in [("input", &event.input), ("output", &event.output)] {
            if let Some(value) = value {
                map.serialize_entry(name, value)?;
            }
        }
        map.end()
    }
}

struct Attributes<'e>(
    &'e [(
        std::borrow::Cow<'static, str>,
        std::borrow::Cow<'static, str>,
    )],
);

impl Serialize for Attributes<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(key, value)| (key, value)))
    }
}

#[derive(Serialize)]
pub struct EventsResponse {
    pub from: i64,
    pub to: i64,
    pub events: Vec<EventBody>,
}

fn text_param(params: &HashMap<String, String>, name: &str) -> Option<String> {
    params.get(name).filter(|value| !value.is_empty()).cloned()
}

/// Parses the filters of `GET /v1/events` (the tenant and range come from the caller).
pub fn event_query(
    params: &HashMap<String, String>,
    filters: Filters,
    tenant: String,
    range: params::Range,
    payloads: PayloadRead,
) -> Result<EventQuery, QueryError> {
    let status = match params.get("status").map(String::as_str) {
        None | Some("") => None,
        Some(text) => Some(Status::parse(text).ok_or_else(|| {
            QueryError::BadParameter(format!("status must be ok or error, found {text:?}"))
        })?),
    };
    let min_latency_ms = match params.get("min_latency_ms") {
        None => None,
        Some(text) => match text.parse::<f64>() {
            Ok(value) if value.is_finite() && value >= 0.0 => Some(value),
            _ => {
                return Err(QueryError::BadParameter(format!(
                    "min_latency_ms must be a number >= 0, found {text:?}"
                )))
            }
        },
    };
    let limit = match params.get("limit") {
        None => DEFAULT_LIMIT,
        Some(text) => match text.parse::<usize>() {
            Ok(value) if (1..=MAX_LIMIT).contains(&value) => value,
            _ => {
                return Err(QueryError::BadParameter(format!(
                    "limit must be an integer from 1 to {MAX_LIMIT}, found {text:?}"
                )))
            }
        },
    };
    Ok(EventQuery {
        tenant,
        from_ms: range.from_ms,
        to_ms: range.to_ms,
        trace_id: text_param(params, "trace_id"),
        user_id: text_param(params, "user_id"),
        model: text_param(params, "model"),
        status,
        min_latency_ms,
        filters,
        limit,
        payloads,
    })
}

pub async fn list(
    State(state): State<QueryState>,
    headers: HeaderMap,
    Query(pairs): Query<params::Pairs>,
) -> Result<Json<EventsResponse>, QueryError> {
    let principal = authorize(&state, &headers)?;
    let params = params::first_values(&pairs);
    let filters = params::filters(&pairs)?;
    // The tenant comes from the key (or an admin's `?tenant=`): a filter on it could
    // only narrow that, but is refused for non-admins as on every route.
    may_cross_tenants(&principal, filters.needs_admin())?;
    let tenant = tenant_of(&principal, &params)?;
    let range = params::range(&params, unix_now_ms())?;
    let payloads = payload_read(
        &params,
        &principal,
        state.payload_readers,
        state.limits.max_search_rows,
    )?;
    let include = payloads.include;
    let query = event_query(&params, filters, tenant, range, payloads)?;
    let events = state.store.events(query).await?;
    Ok(Json(EventsResponse {
        from: range.from_ms,
        to: range.to_ms,
        events: events
            .into_iter()
            .map(|mut stored| {
                // A search reads payloads without returning them.
                if !include {
                    stored.event.input = None;
                    stored.event.output = None;
                }
                EventBody(stored)
            })
            .collect(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<EventQuery, QueryError> {
        let params = pairs
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect();
        event_query(
            &params,
            Filters::default(),
            "t".to_string(),
            params::Range {
                from_ms: 0,
                to_ms: 60_000,
            },
            PayloadRead::default(),
        )
    }

    fn payloads_of(
        pairs: &[(&str, &str)],
        kind: KeyKind,
        readers: PayloadReaders,
    ) -> Result<PayloadRead, QueryError> {
        let params = pairs
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect();
        let principal = Principal {
            tenant: "t".to_string(),
            kind,
            key: None,
        };
        payload_read(&params, &principal, readers, 10)
    }

    #[test]
    fn payload_parameters_parse_and_readers_narrow_them() {
        let read = payloads_of(
            &[("include", "payloads"), ("q", "Refund")],
            KeyKind::Read,
            PayloadReaders::default(),
        )
        .expect("read keys read payloads by default");
        assert!(read.include);
        let search = read.search.expect("a search");
        assert_eq!((search.text(), search.max_rows), ("refund", 10));
        assert_eq!(
            payloads_of(&[], KeyKind::Read, PayloadReaders::default()).expect("none"),
            PayloadRead::default()
        );
        for (pair, named) in [(("include", "everything"), "include"), (("q", ""), "q")] {
            let error = payloads_of(&[pair], KeyKind::All, PayloadReaders::default())
                .expect_err("invalid")
                .to_string();
            assert!(error.starts_with(named), "{error}");
        }
        let long = "x".repeat(MAX_SEARCH_BYTES + 1);
        let error = payloads_of(&[("q", &long)], KeyKind::All, PayloadReaders::default())
            .expect_err("too long");
        assert!(error.to_string().contains("at most 1024 bytes"), "{error}");

        let admins = PayloadReaders::only(&[KeyKind::Admin]).expect("admins");
        for (kind, pair) in [
            (KeyKind::All, ("include", "payloads")),
            (KeyKind::Read, ("q", "x")),
        ] {
            let error = payloads_of(&[pair], kind, admins).expect_err("narrowed");
            assert_eq!(error.status(), axum::http::StatusCode::FORBIDDEN);
            assert!(
                error.to_string().contains("readers allows admin"),
                "{error}"
            );
        }
        assert!(payloads_of(&[("q", "x")], KeyKind::Admin, admins).is_ok());
        // Events without payloads stay open to every reader.
        assert!(payloads_of(&[], KeyKind::Read, admins).is_ok());
        let error = PayloadReaders::only(&[KeyKind::Write]).expect_err("write cannot read");
        assert!(error.starts_with("write keys"), "{error}");
    }

    #[test]
    fn filters_parse_and_bad_ones_name_the_parameter() {
        let query = parse(&[
            ("trace_id", "abc"),
            ("status", "error"),
            ("min_latency_ms", "250.5"),
            ("limit", "7"),
        ])
        .expect("valid");
        assert_eq!(query.trace_id.as_deref(), Some("abc"));
        assert_eq!(query.status, Some(Status::Error));
        assert_eq!(query.min_latency_ms, Some(250.5));
        assert_eq!(query.limit, 7);
        assert_eq!(parse(&[]).expect("defaults").limit, DEFAULT_LIMIT);
        for (pair, named) in [
            (("status", "bad"), "status"),
            (("min_latency_ms", "-1"), "min_latency_ms"),
            (("min_latency_ms", "NaN"), "min_latency_ms"),
            (("limit", "0"), "limit"),
            (("limit", "1001"), "limit"),
        ] {
            let error = parse(&[pair]).expect_err("invalid").to_string();
            assert!(error.starts_with(named), "{error}");
        }
    }

    #[test]
    fn an_event_serialises_in_the_v1_format() {
        let event = Event {
            cost_micros: Some(4_123_456),
            user_id: Some("u".into()),
            attributes: vec![("k".into(), "v".into())],
            input: Some("Hi".into()),
            ..Event::new(
                "gpt-4o",
                EventId::Client("e1".into()),
                1_795_339_620_000,
                812.5,
            )
        };
        let body = serde_json::to_value(EventBody(StoredEvent {
            tenant: "t".to_string(),
            event,
        }))
        .expect("json");
        assert_eq!(
            body,
            serde_json::json!({"event_id": "e1", "timestamp": "2026-11-22T09:27:00Z",
                "model": "gpt-4o", "latency_ms": 812.5, "cost_usd": 4.123456, "status": "ok",
                "user_id": "u", "attributes": {"k": "v"}, "input": "Hi"})
        );
    }
}
