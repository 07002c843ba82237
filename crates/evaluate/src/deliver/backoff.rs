//! Retry delays: exponential with "equal jitter" (half fixed, half random), so a
//! receiver coming back is not hit by every sender at once, and a delay never drops
//! below half its exponential step. No I/O.

use std::time::Duration;

/// Delay before attempt `failures + 1`, after `failures` (≥ 1) failed attempts:
/// `d = min(max, initial · 2^(failures − 1))`, then `d/2 + unit_random · d/2`, with
/// `unit_random` in `[0, 1)`.
pub fn retry_delay(failures: u32, initial: Duration, max: Duration, unit_random: f64) -> Duration {
    let exponent = failures.saturating_sub(1).min(32);
    let step = initial
        .checked_mul(1_u32 << exponent.min(31))
        .unwrap_or(max)
        .min(max);
    let half = step / 2;
    half + half.mul_f64(unit_random.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_within_their_jitter() {
        let initial = Duration::from_millis(100);
        let max = Duration::from_secs(10);
        assert_eq!(retry_delay(1, initial, max, 0.0), Duration::from_millis(50));
        assert_eq!(
            retry_delay(1, initial, max, 1.0),
            Duration::from_millis(100)
        );
        assert_eq!(
            retry_delay(2, initial, max, 0.0),
            Duration::from_millis(100)
        );
        assert_eq!(
            retry_delay(4, initial, max, 0.5),
            Duration::from_millis(600)
        );
        // 100 ms · 2^19 is far past the cap.
        assert_eq!(retry_delay(20, initial, max, 1.0), max);
        assert_eq!(retry_delay(u32::MAX, initial, max, 0.0), max / 2);
    }
}
