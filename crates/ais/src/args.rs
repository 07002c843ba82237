//! Value parsers and value types that several commands' arguments share.

use std::net::SocketAddr;

/// A listener that can be turned off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "String")]
pub enum ListenOrOff {
    Listen(SocketAddr),
    Off,
}

impl TryFrom<String> for ListenOrOff {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        parse_listen_or_off(&text)
    }
}

pub fn parse_listen_or_off(text: &str) -> Result<ListenOrOff, String> {
    if text.trim().eq_ignore_ascii_case("off") {
        return Ok(ListenOrOff::Off);
    }
    text.trim()
        .parse()
        .map(ListenOrOff::Listen)
        .map_err(|_| format!("expected HOST:PORT (e.g. 127.0.0.1:4317) or off, found {text:?}"))
}

pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| c.is_ascii_alphabetic()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("duration must look like 30s, 2m, 1h or 500ms, found {text:?}"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("unknown duration unit {unit:?}; use ms, s, m or h")),
    };
    if !(seconds.is_finite() && seconds >= 0.0) {
        return Err(format!("duration must be positive, found {text:?}"));
    }
    Ok(std::time::Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(
            parse_duration("30s"),
            Ok(std::time::Duration::from_secs(30))
        );
        assert_eq!(
            parse_duration("2m"),
            Ok(std::time::Duration::from_secs(120))
        );
        assert_eq!(
            parse_duration("250ms"),
            Ok(std::time::Duration::from_millis(250))
        );
        assert_eq!(parse_duration("5"), Ok(std::time::Duration::from_secs(5)));
        assert!(parse_duration("5 fortnights").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn listeners_parse_or_turn_off() {
        assert_eq!(parse_listen_or_off("OFF"), Ok(ListenOrOff::Off));
        assert_eq!(
            parse_listen_or_off("127.0.0.1:0"),
            Ok(ListenOrOff::Listen("127.0.0.1:0".parse().expect("addr")))
        );
        assert!(parse_listen_or_off("4317").is_err());
    }
}
