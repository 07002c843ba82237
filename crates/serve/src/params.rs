//! Query-string parameters: `[from, to)` ranges aligned down to whole minutes (default
//! the last hour, current minute included), steps in seconds that are multiples of 60,
//! and the repeatable `filter=D:v1|v2` (the routes that take it read the query string
//! as pairs: [`Pairs`]).

use std::collections::HashMap;

use ais_model::dimension::{Filter, Filters};
use ais_model::time::{minute_floor, parse_instant_ms, MINUTE_MS};

use crate::error::QueryError;

/// Longest range one query may span: the default rollup retention.
pub const MAX_RANGE_MS: i64 = 90 * 24 * 3600 * 1000;
/// Most points in one series, so a tiny step over a long range cannot build an
/// unbounded answer.
pub const MAX_POINTS: i64 = 20_000;

/// Instants a query may name: from 1970-01-01 to 2200-01-01 (exclusive), so every sum
/// and difference of two of them, or of one and a step, stays far inside `i64`.
pub const MIN_INSTANT_MS: i64 = 0;
pub const MAX_INSTANT_MS: i64 = 7_258_118_400_000;

/// Most `filter` parameters in one request.
pub const MAX_FILTERS: usize = 16;

/// A query string as pairs, so repeated parameters (`filter`) are all kept.
pub type Pairs = Vec<(String, String)>;

/// A query string as [`Pairs`], for the routes' unit tests: split on `&` and the first
/// `=`, not percent-decoded.
#[cfg(test)]
pub(crate) fn pairs(query: &str) -> Pairs {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((key, value)) => (key.to_string(), value.to_string()),
            None => (pair.to_string(), String::new()),
        })
        .collect()
}

/// The first value of each parameter, as single-valued parameters read it.
pub fn first_values(pairs: &[(String, String)]) -> HashMap<String, String> {
    let mut params = HashMap::new();
    for (key, value) in pairs {
        params.entry(key.clone()).or_insert_with(|| value.clone());
    }
    params
}

/// Every `filter=` parameter, parsed; a malformed one is a 400 that says why.
pub fn filters(pairs: &[(String, String)]) -> Result<Filters, QueryError> {
    let texts: Vec<&str> = pairs
        .iter()
        .filter(|(key, _)| key == "filter")
        .map(|(_, value)| value.as_str())
        .collect();
    if texts.len() > MAX_FILTERS {
        return Err(QueryError::BadParameter(format!(
            "{} filter parameters; at most {MAX_FILTERS}",
            texts.len()
        )));
    }
    let filters = texts
        .into_iter()
        .map(|text| {
            Filter::parse(text)
                .map_err(|error| QueryError::BadParameter(format!("filter: {error}")))
        })
        .collect::<Result<_, _>>()?;
    Ok(Filters(filters))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub from_ms: i64,
    pub to_ms: i64,
}

pub fn range(params: &HashMap<String, String>, now_ms: i64) -> Result<Range, QueryError> {
    let to_ms = match params.get("to") {
        Some(text) => minute_floor(instant(text, "to")?),
        // The current minute is included: its partial holds the latest events.
        None => minute_floor(now_ms) + MINUTE_MS,
    };
    let from_ms = match params.get("from") {
        Some(text) => minute_floor(instant(text, "from")?),
        None => to_ms - 60 * MINUTE_MS,
    };
    if from_ms >= to_ms {
        return Err(QueryError::BadParameter(format!(
            "from ({from_ms}) must be before to ({to_ms}) once both are aligned down to whole minutes"
        )));
    }
    if to_ms - from_ms > MAX_RANGE_MS {
        return Err(QueryError::BadParameter(format!(
            "range spans more than {} days; narrow from/to",
            MAX_RANGE_MS / (24 * 3600 * 1000)
        )));
    }
    Ok(Range { from_ms, to_ms })
}

/// The instant parameter `name`: RFC 3339 or unix ms, within
/// [`MIN_INSTANT_MS`, `MAX_INSTANT_MS`).
pub fn instant(text: &str, name: &str) -> Result<i64, QueryError> {
    let ms = parse_instant_ms(text).ok_or_else(|| {
        QueryError::BadParameter(format!(
            "{name} must be RFC 3339 (2026-11-22T10:00:00Z) or unix milliseconds, found {text:?}"
        ))
    })?;
    if !(MIN_INSTANT_MS..MAX_INSTANT_MS).contains(&ms) {
        return Err(QueryError::BadParameter(format!(
            "{name} must be between 1970-01-01 and 2200-01-01, found {text:?}"
        )));
    }
    Ok(ms)
}

/// `step` in seconds: default 60, a positive multiple of 60.
pub fn step_ms(params: &HashMap<String, String>, range: Range) -> Result<i64, QueryError> {
    let step_seconds = match params.get("step") {
        None => 60,
        Some(text) => text.parse::<i64>().map_err(|_| {
            QueryError::BadParameter(format!("step must be whole seconds, found {text:?}"))
        })?,
    };
    if step_seconds <= 0 || step_seconds % 60 != 0 {
        return Err(QueryError::BadParameter(format!(
            "step must be a positive multiple of 60 seconds, found {step_seconds}"
        )));
    }
    let step_ms = step_seconds.checked_mul(1000).ok_or_else(|| {
        QueryError::BadParameter(format!("step of {step_seconds} seconds is too large"))
    })?;
    let points = (range.to_ms - range.from_ms + step_ms - 1) / step_ms;
    if points > MAX_POINTS {
        return Err(QueryError::BadParameter(format!(
            "{points} points per series is over the limit of {MAX_POINTS}; use a larger step or a shorter range"
        )));
    }
    Ok(step_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn instants_outside_1970_to_2200_are_refused_naming_the_parameter() {
        let now = 1_795_339_621_234;
        for (from, to, named) in [
            ("-9223372036854775000", "9223372036854775000", "to"),
            ("-9223372036854775000", "60000", "from"),
            ("-1", "60000", "from"),
            ("0", "7258118400000", "to"),
            ("0", "2200-01-01T00:00:00Z", "to"),
        ] {
            let error =
                range(&params(&[("from", from), ("to", to)]), now).expect_err("out of range");
            assert!(
                error.to_string().starts_with(named),
                "{from}..{to}: {error}"
            );
        }
        assert!(range(&params(&[("from", "0"), ("to", "60000")]), now).is_ok());
        let huge_step = params(&[("step", "9223372036854775800")]);
        let range = range(&params(&[]), now).expect("default range");
        assert!(step_ms(&huge_step, range).is_err());
    }

    #[test]
    fn default_range_is_the_last_hour_including_the_current_minute() {
        let now = 1_795_339_621_234;
        let got = range(&params(&[]), now).expect("default range");
        assert_eq!(got.to_ms, 1_795_339_680_000);
        assert_eq!(got.to_ms - got.from_ms, 3_600_000);
    }

    #[test]
    fn ranges_align_down_and_reject_empty_or_bad_input() {
        let got = range(
            &params(&[("from", "1795339621234"), ("to", "2026-11-22T10:00:30Z")]),
            0,
        )
        .expect("valid");
        assert_eq!(got.from_ms, 1_795_339_620_000);
        assert_eq!(got.to_ms, 1_795_341_600_000);
        let err = range(
            &params(&[("from", "1795339621234"), ("to", "1795339650000")]),
            0,
        )
        .expect_err("empty after alignment");
        assert!(err.to_string().contains("must be before"));
        let err = range(&params(&[("from", "soon")]), 0).expect_err("bad instant");
        assert!(err.to_string().starts_with("from must be RFC 3339"));
    }

    #[test]
    fn steps_are_multiples_of_a_minute_and_bounded() {
        let hour = Range {
            from_ms: 0,
            to_ms: 3_600_000,
        };
        assert_eq!(step_ms(&params(&[]), hour).expect("default"), 60_000);
        assert_eq!(
            step_ms(&params(&[("step", "300")]), hour).expect("5 min"),
            300_000
        );
        assert!(step_ms(&params(&[("step", "90")]), hour).is_err());
        assert!(step_ms(&params(&[("step", "0")]), hour).is_err());
        let long = Range {
            from_ms: 0,
            to_ms: MAX_RANGE_MS,
        };
        assert!(step_ms(&params(&[("step", "60")]), long).is_err());
    }
}
