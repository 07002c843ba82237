//! The pure core of the stream: one fetched batch of log records into rollup partials.
//!
//! Records are decoded with strings borrowed from the fetched buffers; partials are
//! keyed by borrowed (tenant, model, minute) while the batch is built and turned into
//! owned keys once per key at the end, so the per-event work allocates nothing.
//! Lateness is decided against the watermark as it stood when the batch began.
//!
//! A record that does not decode, or decodes but breaks a v1 rule that holds whatever
//! the clock (`ais_model::decode::validate_logged`), is not processed: it comes back in
//! [`BatchOutput::rejected`] with the reason, for the processor to dead-letter, and the
//! rest of the batch goes on without it.
//!
//! Every committed event is also counted in the usage ledger (`ais_rollup::usage`).
//!
//! Every record is also counted in the ledger (`ais_store::ledger`): accepted as it is
//! read, then as what became of it (committed, late, duplicate, dead-lettered), under
//! its tenant and the hour of its event time; a record whose event time cannot be read
//! is counted in the hour the batch was read, under the tenant its front names (or
//! `""`).

use ais_model::dead_letter::Reason;
use ais_model::decode::validate_logged;
use ais_model::time::minute_floor;
use ais_model::{wire, EventId};
use ais_rollup::dimensions::{DimensionBatch, DimensionKey, DimensionRollupConfig};
use ais_rollup::usage::{Settlement, UsageBatch, UsageConfig, UsageCounts, UsageKey};
use ais_rollup::{Contribution, RollupPartial};
use ais_store::ledger::{hour_of, LedgerCounts, LedgerKey};
use ais_store::{DedupEntry, LoggedRecord, RollupKey};
use bytes::Bytes;

use crate::dedup::{self, Dedup, Seen};
use crate::watermark::Watermark;

/// What one batch produced.
#[derive(Debug, Default)]
pub struct BatchOutput {
    pub partials: Vec<(RollupKey, RollupPartial)>,
    /// Partials per (tenant, dimension, value, minute) of the configured dimensions.
    pub dimensions: Vec<(DimensionKey, RollupPartial)>,
    /// Client ids first seen in this batch, to persist with the commit.
    pub dedup: Vec<DedupEntry>,
    /// The records merged (duplicates and rejected ones left out), to store raw.
    pub events: Vec<LoggedRecord>,
    /// Records not processed, in offset order: to dead-letter.
    pub rejected: Vec<Rejected>,
    /// Newest event time in the batch.
    pub newest_event_ms: Option<i64>,
    pub counts: BatchCounts,
    /// What became of the records, per tenant and hour.
    pub ledger: Vec<(LedgerKey, LedgerCounts)>,
    /// What the committed events used, per (tenant, scope, value, day).
    pub usage: Vec<(UsageKey, UsageCounts)>,
    /// The reservations the batch's committed events settle.
    pub settled: Vec<Settlement>,
}

/// A record of the batch that is not processed, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// Position in the batch (offset `first_offset + index`).
    pub index: usize,
    pub reason: Reason,
    pub detail: String,
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
    /// Records rejected (see [`BatchOutput::rejected`]).
    pub rejected: u64,
}

/// The ledger key of a record that did not decode: the tenant its front names, if any,
/// and the hour it was read (`read_ms`).
pub fn undecoded_ledger_key(record: &[u8], read_ms: i64) -> LedgerKey {
    LedgerKey {
        tenant: wire::peek_tenant(record).unwrap_or_default().to_string(),
        hour_ms: hour_of(read_ms),
    }
}

/// The ledger key of one record read at `read_ms`, as [`roll_up`] gives it: its tenant
/// and event hour when it decodes, else [`undecoded_ledger_key`].
pub fn ledger_key(record: &[u8], read_ms: i64) -> LedgerKey {
    match wire::decode(record) {
        Ok((tenant, event)) => LedgerKey {
            tenant: tenant.to_string(),
            hour_ms: hour_of(event.timestamp_ms),
        },
        Err(_) => undecoded_ledger_key(record, read_ms),
    }
}

/// What a batch is rolled up into besides its (tenant, model, minute) partials.
#[derive(Debug, Clone, Copy)]
pub struct RollUpPlan<'a> {
    /// Partials per value of each dimension (none when the store keeps none).
    pub dimensions: &'a DimensionRollupConfig,
    /// The usage ledger's scopes.
    pub usage: &'a UsageConfig,
}

/// Rolls up `records` (offsets `first_offset…`, read at `read_ms`) per (tenant, model,
/// minute), per value of each of the plan's dimensions and into the usage of its
/// scopes; `dedup` learns the new ids.
pub fn roll_up(
    records: &[Bytes],
    first_offset: u64,
    dedup: &mut Dedup,
    watermark: &Watermark,
    plan: &RollUpPlan<'_>,
    read_ms: i64,
) -> BatchOutput {
    let mut counts = BatchCounts {
        records: records.len() as u64,
        ..BatchCounts::default()
    };
    // foldhash, seeded per map: one lookup per event, keyed by producers' strings.
    let mut partials: hashbrown::HashMap<
        (&str, &str, i64),
        RollupPartial,
        foldhash::fast::RandomState,
    > = hashbrown::HashMap::default();
    let mut dimension_partials = DimensionBatch::new(plan.dimensions);
    let mut usage_entries = UsageBatch::new(plan.usage, records.len());
    let mut new_ids = Vec::new();
    let mut events = Vec::with_capacity(records.len());
    let mut newest_event_ms: Option<i64> = None;
    let mut rejected = Vec::new();
    // Undecodable records, keyed apart: their keys own their tenant string.
    let mut ledger: hashbrown::HashMap<(&str, i64), LedgerCounts, foldhash::fast::RandomState> =
        hashbrown::HashMap::default();
    let mut undecoded: Vec<(LedgerKey, LedgerCounts)> = Vec::new();
    for (index, record) in records.iter().enumerate() {
        let (tenant, event) = match wire::decode(record) {
            Ok(decoded) => decoded,
            Err(error) => {
                undecoded.push((
                    undecoded_ledger_key(record, read_ms),
                    LedgerCounts {
                        accepted: 1,
                        dead_lettered: 1,
                        ..LedgerCounts::default()
                    },
                ));
                rejected.push(Rejected {
                    index,
                    reason: Reason::of_wire_error(&error),
                    detail: error.to_string(),
                });
                continue;
            }
        };
        // Accepted as read, before anything is decided about it.
        let entry = ledger
            .entry((tenant, hour_of(event.timestamp_ms)))
            .or_default();
        entry.accepted += 1;
        if let Err(detail) = validate_logged(tenant, &event) {
            entry.dead_lettered += 1;
            rejected.push(Rejected {
                index,
                reason: Reason::Invalid,
                detail,
            });
            continue;
        }
        let minute_ms = minute_floor(event.timestamp_ms);
        if let EventId::Client(id) = &event.event_id {
            let hash = dedup::hash(tenant, id);
            match dedup.check_and_insert(hash, minute_ms) {
                Seen::Duplicate => {
                    counts.duplicates += 1;
                    entry.duplicates += 1;
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
        entry.late += u64::from(late);
        entry.committed += 1;
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
        // Read once for the model's partial and every dimension's.
        let contribution = Contribution::of(&event, late);
        partials
            .entry((tenant, model, minute_ms))
            .or_default()
            .add_contribution(&contribution);
        dimension_partials.add(tenant, &event, contribution);
        usage_entries.add(tenant, &event);
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
    counts.rejected = rejected.len() as u64;
    // One entry per key, in key order (an undecoded record's key may repeat, or be
    // a decoded one's).
    let mut merged: std::collections::BTreeMap<LedgerKey, LedgerCounts> = ledger
        .into_iter()
        .map(|((tenant, hour_ms), counts)| {
            (
                LedgerKey {
                    tenant: tenant.to_string(),
                    hour_ms,
                },
                counts,
            )
        })
        .collect();
    for (key, counts) in undecoded {
        merged.entry(key).or_default().add(&counts);
    }
    let ledger = merged.into_iter().collect();
    BatchOutput {
        ledger,
        settled: usage_entries.settlements(),
        usage: usage_entries.into_entries(),
        partials,
        dimensions: dimension_partials.into_partials(),
        dedup: new_ids,
        events,
        rejected,
        newest_event_ms,
        counts,
    }
}

#[cfg(test)]
mod tests {
    use ais_model::{Event, EventId};

    use super::*;
    use crate::dedup::DedupConfig;

    fn record(tenant: &str, event: &Event<'_>) -> Bytes {
        let mut bytes = Vec::new();
        wire::encode_into(tenant, event, &mut bytes);
        Bytes::from(bytes)
    }

    #[test]
    fn the_events_kept_raw_are_the_merged_records_at_their_offsets() {
        let mut with_fields = Event::new("m2", EventId::Client("c-1".into()), 3_599_000, 9.5);
        with_fields.user_id = Some("u".into());
        with_fields.attributes = vec![("feature".into(), "search".into())];
        with_fields.cost_micros = Some(1_234);
        let records = vec![
            record("t", &Event::new("m", EventId::Generated(1), 120_000, 3.0)),
            Bytes::from_static(&[1, 0xff]),
            record("u", &with_fields),
            // A duplicate of the client id: rolled up once, kept raw once.
            record("u", &with_fields),
            // The next hour: a second file.
            record("t", &Event::new("m", EventId::Generated(2), 3_600_000, 4.0)),
        ];
        let (dimensions, usage) = (DimensionRollupConfig::default(), UsageConfig::default());
        let plan = RollUpPlan {
            dimensions: &dimensions,
            usage: &usage,
        };
        let watermark = Watermark::new(0, 10_000, i64::MIN);
        let mut dedup = Dedup::new(DedupConfig::default());
        let output = roll_up(&records, 7, &mut dedup, &watermark, &plan, 0);
        let offsets: Vec<u64> = output.events.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, vec![7, 9, 11]);
        for kept in &output.events {
            assert_eq!(kept.bytes, records[(kept.offset - 7) as usize]);
        }
    }

    #[test]
    fn rejected_records_leave_the_batch_and_say_why() {
        let good = Event::new("m", EventId::Generated(1), 120_000, 3.0);
        let records = vec![
            record("t", &good),
            Bytes::from_static(&[1, 0xff]),
            record("t", &Event::new("m", EventId::Generated(2), -5, 3.0)),
            Bytes::from_static(&[9, 1, 2]),
            record("t", &Event::new("m", EventId::Generated(3), 60_000, 4.0)),
        ];
        let mut dedup = Dedup::new(DedupConfig::default());
        let watermark = Watermark::new(0, 10_000, i64::MIN);
        let read_ms = 7_300_000;
        let output = roll_up(
            &records,
            100,
            &mut dedup,
            &watermark,
            &RollUpPlan {
                dimensions: &DimensionRollupConfig::default(),
                usage: &UsageConfig::default(),
            },
            read_ms,
        );
        assert_eq!(output.counts.events, 2);
        // Every record in the ledger once: the good ones and the invalid one under
        // their tenant and event hour, the undecodable ones in the hour they were read.
        let ledger: Vec<(String, i64, LedgerCounts)> = output
            .ledger
            .iter()
            .map(|(key, counts)| (key.tenant.clone(), key.hour_ms, *counts))
            .collect();
        let accounted = |accepted, committed, dead_lettered| LedgerCounts {
            accepted,
            committed,
            dead_lettered,
            ..LedgerCounts::default()
        };
        assert_eq!(
            ledger,
            vec![
                ("".to_string(), hour_of(read_ms), accounted(2, 0, 2)),
                ("t".to_string(), -3_600_000, accounted(1, 0, 1)),
                ("t".to_string(), 0, accounted(2, 2, 0)),
            ]
        );
        assert_eq!(output.counts.rejected, 3);
        let offsets: Vec<u64> = output.events.iter().map(|event| event.offset).collect();
        assert_eq!(offsets, vec![100, 104]);
        let rejected: Vec<(usize, Reason)> = output
            .rejected
            .iter()
            .map(|rejection| (rejection.index, rejection.reason))
            .collect();
        assert_eq!(
            rejected,
            vec![
                (1, Reason::Undecodable),
                (2, Reason::Invalid),
                (3, Reason::UnsupportedVersion)
            ]
        );
        assert!(output.rejected[1].detail.starts_with("timestamp:"));
        let requests: u64 = output
            .partials
            .iter()
            .map(|(_, partial)| partial.requests)
            .sum();
        assert_eq!(requests, 2);
    }
}
