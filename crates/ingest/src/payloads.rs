//! What ingest does to events' payloads (`input`, `output`) when capture is on
//! (`[payloads]`), before they are encoded for the log: sampling decides which events
//! keep them, then redaction (`ais_model::redact`) replaces what its rules match. The
//! events themselves are never dropped: metrics and rollups count every one, sampled
//! or not.
//!
//! Sampling keeps the payloads of every failed call, of every call at least as slow
//! or as costly as the tenant's thresholds, and of a fraction (`rate`) of the rest,
//! decided by a hash of the tenant and the trace id (else the event id), so the spans
//! of one trace are kept or dropped together and a retried request decides alike.

use std::collections::HashMap;

use ais_model::redact::Redactor;
use ais_model::{Event, EventId, Status};

/// Which events keep their payloads.
#[derive(Debug, Clone, PartialEq)]
pub struct Sampling {
    /// Share of the events not kept for another reason that keep theirs, 0 to 1.
    pub rate: f64,
    /// Keep every call at least this slow (ms), whatever the rate.
    pub latency_ms: Option<f64>,
    /// Keep every call costing at least this (micro-dollars), whatever the rate.
    pub cost_micros: Option<u64>,
}

impl Default for Sampling {
    /// Everything kept.
    fn default() -> Self {
        Self {
            rate: 1.0,
            latency_ms: None,
            cost_micros: None,
        }
    }
}

impl Sampling {
    /// Whether `event` of `tenant` keeps its payload.
    pub fn keeps(&self, tenant: &str, event: &Event<'_>) -> bool {
        if event.status == Status::Error
            || self.latency_ms.is_some_and(|slow| event.latency_ms >= slow)
            || self
                .cost_micros
                .is_some_and(|costly| event.cost_micros.is_some_and(|cost| cost >= costly))
        {
            return true;
        }
        if self.rate >= 1.0 {
            return true;
        }
        if self.rate <= 0.0 {
            return false;
        }
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        hasher.update(tenant.as_bytes());
        hasher.update(&[0]);
        match (&event.trace_id, &event.event_id) {
            (Some(trace), _) => hasher.update(trace.as_bytes()),
            (None, EventId::Client(id)) => hasher.update(id.as_bytes()),
            (None, EventId::Generated(id)) => hasher.update(&id.to_le_bytes()),
        }
        // The hash's top 53 bits as a fraction of 1, against the rate.
        let point = (hasher.digest() >> 11) as f64 / (1u64 << 53) as f64;
        point < self.rate
    }
}

/// Payload capture: how long an `input` or `output` may be, which events keep them,
/// and what is redacted from them before the log.
#[derive(Debug)]
pub struct PayloadCapture {
    /// Cap of each of an event's `input` and `output`, in bytes; longer ones are cut,
    /// with a marker.
    pub max_bytes: usize,
    pub redactor: Redactor,
    /// Tenants without their own sampling.
    pub sampling: Sampling,
    pub tenant_sampling: HashMap<String, Sampling>,
}

impl PayloadCapture {
    /// The default cap: 32 KiB.
    pub const DEFAULT_MAX_BYTES: usize = 32 * 1024;

    fn sampling_of(&self, tenant: &str) -> &Sampling {
        self.tenant_sampling.get(tenant).unwrap_or(&self.sampling)
    }
}

/// Samples, then redacts, the payloads of `tenant`'s `events` (nothing without
/// capture: the decoder already dropped them). Counts `ais_payload_sampled_total`
/// `{outcome="kept|dropped"}` and each rule's replacements in
/// `ais_payload_redactions_total{rule}`.
pub fn apply(capture: Option<&PayloadCapture>, tenant: &str, events: &mut [Event<'_>]) {
    let Some(capture) = capture else {
        return;
    };
    let sampling = capture.sampling_of(tenant);
    let count = |rule: &str, replaced: u64| {
        metrics::counter!("ais_payload_redactions_total", "rule" => rule.to_string())
            .increment(replaced);
    };
    let (mut kept, mut dropped) = (0u64, 0u64);
    for event in events {
        if event.input.is_none() && event.output.is_none() {
            continue;
        }
        if !sampling.keeps(tenant, event) {
            event.input = None;
            event.output = None;
            dropped += 1;
            continue;
        }
        kept += 1;
        for payload in [&mut event.input, &mut event.output] {
            if let Some(text) = payload.take() {
                *payload = Some(match capture.redactor.redact(&text, count) {
                    std::borrow::Cow::Borrowed(_) => text,
                    std::borrow::Cow::Owned(changed) => std::borrow::Cow::Owned(changed),
                });
            }
        }
    }
    metrics::counter!("ais_payload_sampled_total", "outcome" => "kept").increment(kept);
    metrics::counter!("ais_payload_sampled_total", "outcome" => "dropped").increment(dropped);
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;

    fn event(n: u64, trace: Option<String>) -> Event<'static> {
        Event {
            trace_id: trace.map(Cow::Owned),
            input: Some(Cow::Borrowed("a prompt")),
            output: Some(Cow::Borrowed("an answer")),
            cost_micros: Some(100),
            ..Event::new("m", EventId::Client(Cow::Owned(format!("e-{n}"))), 0, 10.0)
        }
    }

    fn capture(sampling: Sampling) -> PayloadCapture {
        PayloadCapture {
            max_bytes: 1_024,
            redactor: Redactor::new(None, &[]).expect("compiles"),
            sampling,
            tenant_sampling: HashMap::new(),
        }
    }

    #[test]
    fn every_error_slow_and_costly_call_keeps_its_payload_at_a_rate_of_zero() {
        let capture = capture(Sampling {
            rate: 0.0,
            latency_ms: Some(1_000.0),
            cost_micros: Some(500_000),
        });
        let mut events = vec![
            Event {
                status: Status::Error,
                ..event(1, None)
            },
            Event {
                latency_ms: 1_000.0,
                ..event(2, None)
            },
            Event {
                cost_micros: Some(500_000),
                ..event(3, None)
            },
            event(4, None),
        ];
        apply(Some(&capture), "acme", &mut events);
        let kept: Vec<bool> = events.iter().map(|event| event.input.is_some()).collect();
        assert_eq!(kept, [true, true, true, false]);
        assert!(events[3].output.is_none(), "both fields go together");
    }

    #[test]
    fn the_kept_fraction_is_the_rate_and_traces_are_kept_whole() {
        let capture = capture(Sampling {
            rate: 0.25,
            ..Sampling::default()
        });
        // 4,000 traces of 3 spans each.
        let mut events: Vec<Event<'static>> = (0..12_000)
            .map(|n| event(n, Some(format!("trace-{}", n / 3))))
            .collect();
        apply(Some(&capture), "acme", &mut events);
        let kept = events.iter().filter(|event| event.input.is_some()).count();
        // 3,000 spans expected; a binomial count of 4,000 traces has a standard deviation
        // of about 27 traces (82 spans): ±5 of them is far beyond chance.
        assert!((2_600..=3_400).contains(&kept), "{kept} of 12,000 kept");
        for trace in events.chunks(3) {
            let kept: Vec<bool> = trace.iter().map(|event| event.input.is_some()).collect();
            assert!(
                kept.iter().all(|k| *k == kept[0]),
                "a trace whole: {kept:?}"
            );
        }
    }

    #[test]
    fn a_tenant_has_its_own_sampling() {
        let mut capture = capture(Sampling {
            rate: 0.0,
            ..Sampling::default()
        });
        capture
            .tenant_sampling
            .insert("acme".into(), Sampling::default());
        let mut acme = vec![event(1, None)];
        let mut globex = vec![event(1, None)];
        apply(Some(&capture), "acme", &mut acme);
        apply(Some(&capture), "globex", &mut globex);
        assert!(acme[0].input.is_some());
        assert!(globex[0].input.is_none());
    }

    #[test]
    fn kept_payloads_are_redacted() {
        let capture = capture(Sampling::default());
        let mut events = vec![Event {
            input: Some(Cow::Borrowed("mail ada@example.com")),
            ..event(1, None)
        }];
        apply(Some(&capture), "acme", &mut events);
        assert_eq!(events[0].input.as_deref(), Some("mail [EMAIL]"));
        assert_eq!(events[0].output.as_deref(), Some("an answer"));
    }
}
