//! Dead letters of the stream: the records a batch rejected, with their reason and
//! source, and the `ais_dlq_records_total{reason}` counter.
//!
//! Where letters go is the processor's choice ([`crate::Processor`]): into the store's
//! commit when the store keeps them (one node: the same SQLite transaction that moves
//! the position past their records), else to a [`ais_model::dead_letter::DeadLetterSink`] first
//! (distributed: the dead-letter topic), the commit following once they are durable.

use ais_model::dead_letter::{DeadLetter, LetterId, Reason};
use bytes::Bytes;

use crate::batch::Rejected;

/// Letters for the `rejected` records of a batch of `partition` starting at
/// `first_offset`, dead-lettered at `now_ms`.
pub fn letters_of(
    partition: u32,
    first_offset: u64,
    records: &[Bytes],
    rejected: &[Rejected],
    now_ms: i64,
) -> Vec<DeadLetter> {
    rejected
        .iter()
        .filter_map(|rejection| {
            let record = records.get(rejection.index)?;
            Some(DeadLetter::new(
                LetterId {
                    partition,
                    offset: first_offset + rejection.index as u64,
                },
                rejection.reason,
                &rejection.detail,
                record,
                now_ms,
            ))
        })
        .collect()
}

/// Letters per reason, in [`Reason::ALL`] order.
pub fn count_by_reason(letters: &[DeadLetter]) -> [u64; Reason::ALL.len()] {
    let mut counts = [0; Reason::ALL.len()];
    for letter in letters {
        if let Some(at) = Reason::ALL
            .iter()
            .position(|reason| *reason == letter.reason)
        {
            counts[at] += 1;
        }
    }
    counts
}

/// Adds letters made durable to `ais_dlq_records_total{reason}`.
pub fn record(counts: [u64; Reason::ALL.len()]) {
    for (reason, count) in Reason::ALL.iter().zip(counts) {
        if count > 0 {
            metrics::counter!("ais_dlq_records_total", "reason" => reason.as_str())
                .increment(count);
        }
    }
}

/// Registers `ais_dlq_records_total` for every reason at 0, so `/metrics` shows the
/// series (and alerts on them can be written) before the first dead letter.
pub fn register_metrics() {
    for reason in Reason::ALL {
        metrics::counter!("ais_dlq_records_total", "reason" => reason.as_str()).increment(0);
    }
}

/// Logs one line per batch, not per letter: a flood of bad records must not flood the
/// log too.
pub fn log(letters: &[DeadLetter]) {
    if let Some(first) = letters.first() {
        tracing::warn!(
            letters = letters.len(),
            first_id = %first.id,
            first_reason = %first.reason,
            first_detail = %first.detail,
            "log records the stream cannot process go to the dead-letter queue"
        );
    }
}
