//! Event-time watermark of one partition (DESIGN.md, "Windows and late events").
//!
//! watermark = max(previous, min(newest event time seen, now) − allowed lateness): a
//! producer whose clock runs ahead cannot close windows early. After `idle_after`
//! without input it becomes max(watermark, now − allowed lateness), so a quiet
//! partition still finalizes its windows. A one-minute window `[m, m + 60 s)` is final
//! once the watermark reaches `m + 60 s`.

use ais_model::time::MINUTE_MS;

#[derive(Debug, Clone)]
pub struct Watermark {
    allowed_lateness_ms: i64,
    idle_after_ms: i64,
    newest_event_ms: Option<i64>,
    watermark_ms: i64,
    last_input_ms: Option<i64>,
}

impl Watermark {
    /// Starts from a stored watermark (`i64::MIN` when there is none).
    pub fn new(allowed_lateness_ms: i64, idle_after_ms: i64, stored_ms: i64) -> Self {
        Self {
            allowed_lateness_ms,
            idle_after_ms,
            newest_event_ms: None,
            watermark_ms: stored_ms,
            last_input_ms: None,
        }
    }

    pub fn current_ms(&self) -> i64 {
        self.watermark_ms
    }

    /// Whether the window starting at `minute_ms` is final.
    pub fn is_final(&self, minute_ms: i64) -> bool {
        minute_ms.saturating_add(MINUTE_MS) <= self.watermark_ms
    }

    /// Records the newest event time of a batch that arrived at `now_ms`, then advances.
    pub fn observe_batch(&mut self, newest_event_ms: Option<i64>, now_ms: i64) {
        if let Some(newest) = newest_event_ms {
            self.newest_event_ms =
                Some(self.newest_event_ms.map_or(newest, |seen| seen.max(newest)));
        }
        self.last_input_ms = Some(now_ms);
        self.advance(now_ms);
    }

    /// Moves the watermark with the clock (the idle rule included).
    pub fn advance(&mut self, now_ms: i64) -> i64 {
        if let Some(newest) = self.newest_event_ms {
            let candidate = newest.min(now_ms).saturating_sub(self.allowed_lateness_ms);
            self.watermark_ms = self.watermark_ms.max(candidate);
        }
        let idle = self
            .last_input_ms
            .is_none_or(|last| now_ms.saturating_sub(last) >= self.idle_after_ms);
        if idle {
            self.watermark_ms = self
                .watermark_ms
                .max(now_ms.saturating_sub(self.allowed_lateness_ms));
        }
        self.watermark_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LATENESS: i64 = 120_000;
    const IDLE: i64 = 10_000;

    #[test]
    fn a_fast_producer_clock_cannot_close_windows_early() {
        let mut watermark = Watermark::new(LATENESS, IDLE, i64::MIN);
        let now = 10_000_000;
        watermark.observe_batch(Some(now + 3_600_000), now);
        assert_eq!(watermark.current_ms(), now - LATENESS);
        assert!(!watermark.is_final(now - LATENESS - 30_000));
        assert!(watermark.is_final(now - LATENESS - MINUTE_MS));
    }

    #[test]
    fn it_follows_event_time_and_never_goes_back() {
        let mut watermark = Watermark::new(LATENESS, IDLE, i64::MIN);
        let now = 10_000_000;
        watermark.observe_batch(Some(now - 600_000), now);
        assert_eq!(watermark.current_ms(), now - 600_000 - LATENESS);
        watermark.observe_batch(Some(now - 900_000), now + 1_000);
        assert_eq!(
            watermark.current_ms(),
            now - 600_000 - LATENESS,
            "older events do not move it back"
        );
    }

    #[test]
    fn an_idle_partition_follows_the_clock() {
        let mut watermark = Watermark::new(LATENESS, IDLE, i64::MIN);
        let now = 10_000_000;
        watermark.observe_batch(Some(now - 600_000), now);
        assert_eq!(watermark.advance(now + IDLE - 1), now - 600_000 - LATENESS);
        assert_eq!(watermark.advance(now + IDLE), now + IDLE - LATENESS);
        // A stored watermark is where a restarted partition begins.
        let restarted = Watermark::new(LATENESS, IDLE, 5_000);
        assert_eq!(restarted.current_ms(), 5_000);
    }
}
