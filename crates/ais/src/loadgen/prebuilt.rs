//! `ais loadgen --prebuilt`: JSON bodies prepared before the run, so that sending at
//! many times what a server sustains costs the generator a copy per request instead
//! of a serialization of 1,000 events.
//!
//! A small pool of batch bodies (templates) is written before the clock starts, each
//! event's `event_id` digits and `timestamp` in fixed-width slots whose offsets are
//! kept. Batch `k` is template `k mod pool` copied, with each event's id slot stamped
//! with its index in the run (`k × batch + j`, 20 digits, so ids stay unique across
//! the run and nothing is counted as a duplicate by the stream's dedup) and every
//! timestamp slot with the send time (13 digits of unix ms: within the accepted age,
//! as without the pool). Synthetic values (models, tokens, latencies, errors) repeat
//! every pool's worth of batches, which is all a rate test needs of them.
//!
//! The pool is bounded by [`POOL_MAX_BYTES`] as well as [`POOL_TEMPLATES`]: with large
//! `--input-bytes` a single template is megabytes, and one is enough.

use anyhow::bail;

use super::Plan;

/// Templates in the pool: enough that consecutive batches differ.
pub(super) const POOL_TEMPLATES: usize = 16;
/// Bytes the pool may hold; at least one template is kept whatever its size.
pub(super) const POOL_MAX_BYTES: usize = 64 * 1024 * 1024;
/// Digits of an event index: `u64::MAX` has 20.
pub(super) const ID_DIGITS: usize = 20;
/// Digits of a unix-ms timestamp from 2001 to 2286.
pub(super) const TIMESTAMP_DIGITS: usize = 13;

/// Where the stamped digits go in a template.
#[derive(Debug, Default)]
pub(super) struct Slots {
    pub(super) ids: Vec<usize>,
    pub(super) timestamps: Vec<usize>,
}

struct Template {
    bytes: Vec<u8>,
    slots: Slots,
}

/// The prepared bodies of a run.
pub(super) struct Pool {
    templates: Vec<Template>,
    batch: usize,
}

impl Pool {
    /// Writes up to `max_templates` templates within `max_bytes`, stamped as at
    /// `now_ms` (which must have [`TIMESTAMP_DIGITS`] digits).
    pub(super) fn build(
        plan: &Plan,
        now_ms: i64,
        max_templates: usize,
        max_bytes: usize,
    ) -> anyhow::Result<Self> {
        if !has_timestamp_digits(now_ms) {
            bail!("--prebuilt stamps {TIMESTAMP_DIGITS}-digit unix-ms timestamps; the clock reads {now_ms}");
        }
        let mut templates: Vec<Template> = Vec::new();
        let mut held = 0;
        for k in 0..max_templates.max(1) as u64 {
            let mut body = String::new();
            let mut slots = Slots::default();
            plan.write_batch_with_slots(k, now_ms, &mut body, Some(&mut slots));
            debug_assert_eq!(slots.ids.len(), plan.batch);
            if !templates.is_empty() && held + body.len() > max_bytes {
                break;
            }
            held += body.len();
            templates.push(Template {
                bytes: body.into_bytes(),
                slots,
            });
        }
        Ok(Self {
            templates,
            batch: plan.batch,
        })
    }

    #[cfg(test)]
    fn templates(&self) -> usize {
        self.templates.len()
    }

    /// Batch `k`'s body, its events stamped `now_ms`: a copy of its template with the
    /// digits written in place.
    pub(super) fn body(&self, k: u64, now_ms: i64) -> anyhow::Result<Vec<u8>> {
        if !has_timestamp_digits(now_ms) {
            bail!("--prebuilt cannot stamp the timestamp {now_ms}");
        }
        let template = &self.templates[(k % self.templates.len() as u64) as usize];
        let mut bytes = template.bytes.clone();
        let mut stamp = [0u8; TIMESTAMP_DIGITS];
        write_digits(&mut stamp, now_ms.unsigned_abs());
        for &at in &template.slots.timestamps {
            bytes[at..at + TIMESTAMP_DIGITS].copy_from_slice(&stamp);
        }
        let first_event = k * self.batch as u64;
        for (j, &at) in template.slots.ids.iter().enumerate() {
            write_digits(&mut bytes[at..at + ID_DIGITS], first_event + j as u64);
        }
        Ok(bytes)
    }
}

fn has_timestamp_digits(now_ms: i64) -> bool {
    (1_000_000_000_000..10_000_000_000_000).contains(&now_ms)
}

/// `value` as decimal digits filling `slot`, zero-padded on the left; the slot must be
/// wide enough (the callers size it for the largest value).
fn write_digits(slot: &mut [u8], mut value: u64) {
    for digit in slot.iter_mut().rev() {
        *digit = b'0' + (value % 10) as u8;
        value /= 10;
    }
    debug_assert_eq!(value, 0, "the slot is too narrow");
}

#[cfg(test)]
mod tests {
    use super::super::{payload_text, LoadFormat, SYNTHETIC_MODELS};
    use super::*;
    use ais_model::decode::{decode_events, BodyFormat, ValidationContext};
    use ais_model::EventId;

    fn plan(batch: usize, input_bytes: usize) -> Plan {
        Plan {
            batch,
            format: LoadFormat::Json,
            rate: 1000.0,
            trace: None,
            models: SYNTHETIC_MODELS[..3].to_vec(),
            error_rate: 0.5,
            seed: 7,
            run_id: 42,
            speedup: 1.0,
            input: payload_text(input_bytes),
            output: String::new(),
            backfill: None,
        }
    }

    #[test]
    fn digits_fill_their_slot() {
        let mut slot = [b'x'; 5];
        write_digits(&mut slot, 42);
        assert_eq!(&slot, b"00042");
        let mut wide = [b'x'; ID_DIGITS];
        write_digits(&mut wide, u64::MAX);
        assert_eq!(String::from_utf8_lossy(&wide), u64::MAX.to_string());
    }

    #[test]
    fn every_send_of_a_run_decodes_with_unique_ids_and_its_own_timestamp() {
        let built_ms = 1_795_339_620_000;
        let plan = plan(50, 100);
        // Three templates, reused across twenty sends.
        let pool = Pool::build(&plan, built_ms, 3, usize::MAX).expect("a pool");
        assert_eq!(pool.templates(), 3);
        let prices = ais_model::price::PriceTable::with_defaults();
        let mut ids = std::collections::HashSet::new();
        for k in 0..20u64 {
            let sent_ms = built_ms + 1_000 * k as i64 + 7;
            let body = pool.body(k, sent_ms).expect("a body");
            let context = ValidationContext {
                now_ms: sent_ms,
                max_age_ms: 1_000,
                max_future_ms: 1_000,
                max_events: 100,
                prices: &prices,
                payload_max_bytes: Some(1_000),
            };
            let decoded =
                decode_events(&body, BodyFormat::Json, &context).expect("a valid JSON batch");
            assert_eq!(
                decoded.rejected.len(),
                0,
                "batch {k}: {:?}",
                decoded.rejected
            );
            assert_eq!(decoded.events.len(), 50);
            for event in &decoded.events {
                assert_eq!(event.timestamp_ms, sent_ms, "batch {k}");
                let EventId::Client(id) = &event.event_id else {
                    panic!("batch {k}: a generated id");
                };
                assert!(ids.insert(id.to_string()), "batch {k}: {id} twice");
            }
        }
        assert_eq!(ids.len(), 20 * 50);
    }

    #[test]
    fn the_pool_keeps_within_its_bytes_but_keeps_one_template() {
        let plan = plan(20, 1024);
        let one = Pool::build(&plan, 1_795_339_620_000, 1, usize::MAX).expect("one");
        let size = one.templates[0].bytes.len();
        let bounded =
            Pool::build(&plan, 1_795_339_620_000, 16, 2 * size + size / 2).expect("a bounded pool");
        assert_eq!(bounded.templates(), 2);
        let tiny = Pool::build(&plan, 1_795_339_620_000, 16, 1).expect("a tiny pool");
        assert_eq!(tiny.templates(), 1);
        assert!(Pool::build(&plan, 99, 1, usize::MAX).is_err());
    }
}
