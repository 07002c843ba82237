//! The pure core of the stream: one fetched batch of log records into rollup partials.
//!
//! Records are decoded with strings borrowed from the fetched buffers; partials are
//! keyed by borrowed (tenant, model, minute) while the batch is built and turned into
//! owned keys once per key at the end, so the per-event work allocates nothing.
//! Lateness is decided against the watermark as it stood when the batch began.

use std::collections::HashMap;

use ais_model::time::minute_floor;
use ais_model::{wire, EventId};
use ais_rollup::RollupPartial;
use ais_store::{DedupEntry, LoggedRecord, RollupKey};
use bytes::Bytes;

use crate::dedup::{self, Dedup, Seen};
use crate::watermark::Watermark;

/// What one batch produced.
#[derive(Debug, Default)]
pub struct BatchOutput {
    pub partials: Vec<(RollupKey, RollupPartial)>,
    /// Client ids first seen in this batch, to persist with the commit.
    pub dedup: Vec<DedupEntry>,
    /// The records merged (duplicates and undecodable ones left out), to store raw.
    pub events: Vec<LoggedRecord>,
    /// Newest event time in the batch.
    pub newest_event_ms: Option<i64>,
    pub counts: BatchCounts,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BatchCounts {
    pub records: u64,
    /// Events merged into partials.
    pub events: u64,
    pub duplicates: u64,
    pub late: u64,
    /// Ids older than the dedup horizon, merged unchecked.
    pub unchecked: u64,
    pub undecodable: u64,
}

/// Rolls up `records` (offsets `first_offset…`); `dedup` learns the new ids.
pub fn roll_up(
    records: &[Bytes],
    first_offset: u64,
    dedup: &mut Dedup,
    watermark: &Watermark,
) -> BatchOutput {
    let mut counts = BatchCounts {
        records: records.len() as u64,
        ..BatchCounts::default()
    };
    let mut partials: HashMap<(&str, &str, i64), RollupPartial> = HashMap::new();
    let mut new_ids = Vec::new();
    let mut events = Vec::with_capacity(records.len());
    let mut newest_event_ms: Option<i64> = None;
    for (index, record) in records.iter().enumerate() {
        let (tenant, event) = match wire::decode(record) {
            Ok(decoded) => decoded,
            Err(error) => {
                counts.undecodable += 1;
                tracing::warn!(offset = first_offset + index as u64, %error, "skipping an undecodable log record");
                continue;
            }
        };
        let minute_ms = minute_floor(event.timestamp_ms);
        if let EventId::Client(id) = &event.event_id {
            let hash = dedup::hash(tenant, id);
            match dedup.check_and_insert(hash, minute_ms) {
                Seen::Duplicate => {
                    counts.duplicates += 1;
                    continue;
                }
                Seen::New => new_ids.push(DedupEntry { hash, minute_ms }),
                Seen::BeyondHorizon => counts.unchecked += 1,
            }
        }
        newest_event_ms =
            Some(newest_event_ms.map_or(event.timestamp_ms, |n| n.max(event.timestamp_ms)));
        let late = watermark.is_final(minute_ms);
        counts.late += u64::from(late);
        counts.events += 1;
        // The key borrows from `record`, which outlives this map; the event itself
        // borrows from it too, so `model` is taken from the record bytes via the event.
        let model: &str = match &event.model {
            std::borrow::Cow::Borrowed(model) => model,
            // Postcard never produces owned strings; keep the event if it ever does.
            std::borrow::Cow::Owned(_) => match wire::peek_key(record) {
                Ok((_, model)) => model,
                Err(_) => continue,
            },
        };
        partials
            .entry((tenant, model, minute_ms))
            .or_default()
            .add(&event, late);
        events.push(LoggedRecord {
            offset: first_offset + index as u64,
            bytes: record.clone(),
        });
    }
    let mut partials: Vec<(RollupKey, RollupPartial)> = partials
        .into_iter()
        .map(|((tenant, model, minute_ms), partial)| {
            (
                RollupKey {
                    tenant: tenant.to_string(),
                    model: model.to_string(),
                    minute_ms,
                },
                partial,
            )
        })
        .collect();
    // A stable order keeps store writes (and their locks) in key order.
    partials.sort_by(|a, b| a.0.cmp(&b.0));
    BatchOutput {
        partials,
        dedup: new_ids,
        events,
        newest_event_ms,
        counts,
    }
}
