//! Time: the one [`Clock`] every component reads (injected where tests need to control
//! it), instants in the API (RFC 3339 strings or integer unix milliseconds), and minute
//! alignment.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub const MINUTE_MS: i64 = 60_000;

/// Where a component reads the time. Both readings come from one source so a test
/// clock moves them together.
pub trait Clock: Send + Sync + 'static {
    /// Wall-clock time in unix ms: event time, watermarks, retention, alert schedules.
    fn now_ms(&self) -> i64;

    /// Monotonic time: rate limits, timeouts and anything measured as a duration,
    /// which a wall-clock step must not distort.
    fn now(&self) -> Instant;
}

/// The operating system's clocks.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        unix_now_ms()
    }

    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// Wall-clock now in unix ms, for code that has no clock injected (a clock before 1970
/// reads 0; one past the year 292 million reads `i64::MAX`).
pub fn unix_now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(duration_ms)
        .unwrap_or(0)
}

/// A duration in whole milliseconds, saturating at `i64::MAX`.
pub fn duration_ms(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// A clock that moves only when told to, for tests. Clones share the time.
#[derive(Debug, Clone)]
pub struct ManualClock {
    start: Instant,
    start_ms: i64,
    /// Milliseconds advanced since `start`.
    elapsed_ms: Arc<AtomicI64>,
}

impl ManualClock {
    /// A clock reading `start_ms` of wall-clock time.
    pub fn at(start_ms: i64) -> Self {
        Self {
            start: Instant::now(),
            start_ms,
            elapsed_ms: Arc::new(AtomicI64::new(0)),
        }
    }

    /// Moves both readings forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.elapsed_ms.fetch_add(duration_ms(by), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.start_ms
            .saturating_add(self.elapsed_ms.load(Ordering::SeqCst))
    }

    fn now(&self) -> Instant {
        let elapsed = u64::try_from(self.elapsed_ms.load(Ordering::SeqCst)).unwrap_or(0);
        self.start + Duration::from_millis(elapsed)
    }
}

/// Aligns a unix-ms instant down to the start of its minute (also for negative instants).
/// The few instants whose minute starts before `i64::MIN` give `i64::MIN`.
pub fn minute_floor(ms: i64) -> i64 {
    ms.div_euclid(MINUTE_MS).saturating_mul(MINUTE_MS)
}

/// Parses an RFC 3339 timestamp (any offset) to unix milliseconds.
pub fn parse_rfc3339_ms(text: &str) -> Option<i64> {
    let parsed =
        ::time::OffsetDateTime::parse(text, &::time::format_description::well_known::Rfc3339)
            .ok()?;
    i64::try_from(parsed.unix_timestamp_nanos() / 1_000_000).ok()
}

/// Parses a query-parameter instant: integer unix milliseconds or RFC 3339.
pub fn parse_instant_ms(text: &str) -> Option<i64> {
    match text.parse::<i64>() {
        Ok(ms) => Some(ms),
        Err(_) => parse_rfc3339_ms(text),
    }
}

/// Formats unix milliseconds as RFC 3339 UTC with millisecond precision.
pub fn format_rfc3339_ms(ms: i64) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    match ::time::OffsetDateTime::from_unix_timestamp_nanos(nanos) {
        Ok(instant) => instant
            .format(&::time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|_| ms.to_string()),
        Err(_) => ms.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_both_readings_together_and_clones_share_it() {
        let clock = ManualClock::at(1_000);
        let shared = clock.clone();
        let (wall, monotonic) = (clock.now_ms(), clock.now());
        shared.advance(Duration::from_millis(1_500));
        assert_eq!(clock.now_ms(), wall + 1_500);
        assert_eq!(clock.now() - monotonic, Duration::from_millis(1_500));
    }

    #[test]
    fn minute_floor_aligns_down_including_negative() {
        assert_eq!(minute_floor(1_795_339_621_234), 1_795_339_620_000);
        assert_eq!(minute_floor(-1), -MINUTE_MS);
        assert_eq!(minute_floor(0), 0);
        assert_eq!(minute_floor(i64::MIN), i64::MIN);
        assert_eq!(minute_floor(i64::MAX), i64::MAX - i64::MAX % MINUTE_MS);
    }

    #[test]
    fn instants_parse_both_forms() {
        assert_eq!(parse_instant_ms("1795339620000"), Some(1_795_339_620_000));
        assert_eq!(
            parse_instant_ms("2026-11-22T10:00:00Z"),
            Some(1_795_341_600_000)
        );
        assert_eq!(
            parse_instant_ms("2026-11-22T11:00:00.5+01:00"),
            Some(1_795_341_600_500)
        );
        assert_eq!(parse_instant_ms("yesterday"), None);
    }
}
