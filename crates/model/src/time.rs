//! Instants in the API: RFC 3339 strings or integer unix milliseconds, and minute alignment.

pub const MINUTE_MS: i64 = 60_000;

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
