//! The ingest report: per tenant and per source (JSON body, OTLP/HTTP, OTLP/gRPC), why
//! accepted events cost nothing and what was refused or skipped, counted in memory
//! since the process started (`GET /v1/ingest/report`).
//!
//! An edge tallies one request into a [`Tally`] without a lock and adds it to the
//! [`IngestReport`] once the request's events are durable, so a request answered 503
//! and retried counts once, and the lock is taken once per request, never per event.
//! Memory is bounded: tenants come from configured keys, sources are a closed set, and
//! each (tenant, source) names at most [`MAX_UNPRICED_MODELS`] unpriced models; events
//! of further models are only counted. Counters start at zero with the process (the
//! report says since when); each ingest process counts its own requests.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use serde::Serialize;

use crate::otlp::map::DEPRECATED_ATTRIBUTES;
use crate::Event;

/// Unpriced model names kept per (tenant, source); beyond, events are counted without
/// their model. Enough for the handful of self-hosted or renamed models a tenant
/// typically runs; the report says when it is reached.
pub const MAX_UNPRICED_MODELS: usize = 20;

/// Where events came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// `POST /v1/events` (JSON or NDJSON).
    HttpJson,
    /// `POST /v1/traces`.
    OtlpHttp,
    /// OTLP/gRPC `TraceService/Export`.
    OtlpGrpc,
}

impl Source {
    pub const ALL: [Source; 3] = [Source::HttpJson, Source::OtlpHttp, Source::OtlpGrpc];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::HttpJson => "http_json",
            Self::OtlpHttp => "otlp_http",
            Self::OtlpGrpc => "otlp_grpc",
        }
    }

    fn index(self) -> usize {
        match self {
            Self::HttpJson => 0,
            Self::OtlpHttp => 1,
            Self::OtlpGrpc => 2,
        }
    }
}

/// Events of unpriced models, by model, at most [`MAX_UNPRICED_MODELS`] names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Unpriced {
    by_model: BTreeMap<String, u64>,
    /// Events of models beyond the bound.
    other_models: u64,
}

impl Unpriced {
    fn add(&mut self, model: &str, events: u64) {
        if let Some(count) = self.by_model.get_mut(model) {
            *count += events;
        } else if self.by_model.len() < MAX_UNPRICED_MODELS {
            self.by_model.insert(model.to_string(), events);
        } else {
            self.other_models += events;
        }
    }

    fn merge(&mut self, other: Unpriced) {
        for (model, events) in other.by_model {
            self.add(&model, events);
        }
        self.other_models += other.other_models;
    }

    fn events(&self) -> u64 {
        self.by_model.values().sum::<u64>() + self.other_models
    }
}

/// One request's facts, or the sum of many.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    /// Events accepted (durable).
    pub accepted: u64,
    /// Events (or GenAI spans) refused by validation.
    pub rejected: u64,
    /// OTLP spans skipped: no GenAI attributes of a model call.
    pub skipped: u64,
    /// Accepted events with neither `input_tokens` nor `output_tokens`: priced at zero.
    pub missing_usage: u64,
    /// GenAI spans carrying each of [`DEPRECATED_ATTRIBUTES`], in its order.
    pub deprecated: [u64; DEPRECATED_ATTRIBUTES.len()],
    unpriced: Unpriced,
}

impl Tally {
    /// Counts accepted events: those without a cost (sent none, and the price table
    /// does not know the model) and those without usage.
    pub fn add_events(&mut self, events: &[Event<'_>]) {
        for event in events {
            self.accepted += 1;
            if event.cost_micros.is_none() {
                self.unpriced.add(&event.model, 1);
            }
            if event.input_tokens.is_none() && event.output_tokens.is_none() {
                self.missing_usage += 1;
            }
        }
    }

    /// Events of unpriced models, named or not.
    pub fn unpriced_events(&self) -> u64 {
        self.unpriced.events()
    }

    fn merge(&mut self, other: Tally) {
        self.accepted += other.accepted;
        self.rejected += other.rejected;
        self.skipped += other.skipped;
        self.missing_usage += other.missing_usage;
        for (sum, add) in self.deprecated.iter_mut().zip(other.deprecated) {
            *sum += add;
        }
        self.unpriced.merge(other.unpriced);
    }
}

/// The counters of every tenant since `since_ms`.
#[derive(Debug)]
pub struct IngestReport {
    since_ms: i64,
    tenants: Mutex<HashMap<String, [Tally; 3]>>,
}

impl IngestReport {
    /// An empty report counting from `since_ms` (unix ms: the process start).
    pub fn new(since_ms: i64) -> Self {
        Self {
            since_ms,
            tenants: Mutex::new(HashMap::new()),
        }
    }

    /// Adds one request's tally.
    pub fn record(&self, tenant: &str, source: Source, tally: Tally) {
        // Counters stay meaningful after a panic elsewhere held the lock: take them.
        let mut tenants = self
            .tenants
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match tenants.get_mut(tenant) {
            Some(sources) => sources[source.index()].merge(tally),
            None => {
                let mut sources: [Tally; 3] = Default::default();
                sources[source.index()] = tally;
                tenants.insert(tenant.to_string(), sources);
            }
        }
    }

    /// The report of one tenant (zeros when it sent nothing).
    pub fn of_tenant(&self, tenant: &str) -> TenantReport {
        let sources = self
            .tenants
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(tenant)
            .cloned()
            .unwrap_or_default();
        TenantReport {
            tenant: tenant.to_string(),
            since: self.since_ms,
            max_unpriced_models: MAX_UNPRICED_MODELS,
            sources: Source::ALL
                .iter()
                .map(|source| (source.as_str(), SourceReport::of(&sources[source.index()])))
                .collect(),
        }
    }
}

/// The body of `GET /v1/ingest/report`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TenantReport {
    pub tenant: String,
    /// Unix ms the counters start from (the process start).
    pub since: i64,
    pub max_unpriced_models: usize,
    pub sources: BTreeMap<&'static str, SourceReport>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceReport {
    pub accepted: u64,
    pub rejected: u64,
    pub skipped: u64,
    pub unpriced: UnpricedReport,
    pub missing_usage: u64,
    /// Spans per deprecated attribute name (every name, zeros included).
    pub deprecated_attributes: BTreeMap<&'static str, u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnpricedReport {
    /// Every unpriced event, named model or not.
    pub events: u64,
    /// Most events first, then by name.
    pub models: Vec<ModelCount>,
    /// Events of models past [`MAX_UNPRICED_MODELS`] names.
    pub other_models_events: u64,
    /// Whether models went unnamed past the bound: `models` is then not the whole list.
    pub capped: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModelCount {
    pub model: String,
    pub events: u64,
}

impl SourceReport {
    fn of(tally: &Tally) -> Self {
        let mut models: Vec<ModelCount> = tally
            .unpriced
            .by_model
            .iter()
            .map(|(model, events)| ModelCount {
                model: model.clone(),
                events: *events,
            })
            .collect();
        models.sort_by(|a, b| b.events.cmp(&a.events).then_with(|| a.model.cmp(&b.model)));
        Self {
            accepted: tally.accepted,
            rejected: tally.rejected,
            skipped: tally.skipped,
            unpriced: UnpricedReport {
                events: tally.unpriced.events(),
                capped: tally.unpriced.other_models > 0,
                models,
                other_models_events: tally.unpriced.other_models,
            },
            missing_usage: tally.missing_usage,
            deprecated_attributes: DEPRECATED_ATTRIBUTES
                .iter()
                .copied()
                .zip(tally.deprecated)
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EventId;

    fn event(model: &'static str, cost: Option<u64>, input: Option<u64>) -> Event<'static> {
        Event {
            cost_micros: cost,
            input_tokens: input,
            ..Event::new(model, EventId::Generated(1), 0, 1.0)
        }
    }

    #[test]
    fn tallies_count_unpriced_models_and_missing_usage_per_tenant_and_source() {
        let report = IngestReport::new(1_000);
        let mut tally = Tally {
            rejected: 2,
            ..Tally::default()
        };
        tally.add_events(&[
            event("gpt-4o", Some(10), Some(5)),
            event("mine", None, Some(5)),
            event("mine", None, None),
            event("gpt-4o", Some(0), None),
        ]);
        report.record("acme", Source::HttpJson, tally.clone());
        report.record("acme", Source::HttpJson, tally);
        report.record(
            "acme",
            Source::OtlpGrpc,
            Tally {
                skipped: 3,
                deprecated: [0, 1, 0, 0, 0],
                ..Tally::default()
            },
        );
        let acme = report.of_tenant("acme");
        assert_eq!(acme.since, 1_000);
        let json = &acme.sources["http_json"];
        assert_eq!((json.accepted, json.rejected, json.skipped), (8, 4, 0));
        assert_eq!(json.missing_usage, 4);
        assert_eq!(json.unpriced.events, 4);
        assert_eq!(
            json.unpriced.models,
            vec![ModelCount {
                model: "mine".to_string(),
                events: 4
            }]
        );
        assert!(!json.unpriced.capped);
        let grpc = &acme.sources["otlp_grpc"];
        assert_eq!(grpc.skipped, 3);
        assert_eq!(grpc.deprecated_attributes["gen_ai.usage.prompt_tokens"], 1);
        assert_eq!(acme.sources["otlp_http"].accepted, 0);
        // Another tenant sees none of it.
        let other = report.of_tenant("other");
        assert!(other.sources.values().all(|source| source.accepted == 0));
    }

    #[test]
    fn unpriced_model_names_are_bounded_and_the_rest_still_counted() {
        let report = IngestReport::new(0);
        for n in 0..MAX_UNPRICED_MODELS + 5 {
            let model: &'static str = Box::leak(format!("model-{n:02}").into_boxed_str());
            let mut tally = Tally::default();
            tally.add_events(&[event(model, None, Some(1)), event(model, None, Some(1))]);
            report.record("acme", Source::OtlpHttp, tally);
        }
        let otlp = &report.of_tenant("acme").sources["otlp_http"];
        assert_eq!(otlp.unpriced.models.len(), MAX_UNPRICED_MODELS);
        assert!(otlp.unpriced.capped);
        assert_eq!(otlp.unpriced.other_models_events, 10);
        assert_eq!(otlp.unpriced.events, 2 * (MAX_UNPRICED_MODELS as u64 + 5));
        assert_eq!(otlp.unpriced.models[0].model, "model-00");
    }
}
