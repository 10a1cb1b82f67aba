//! Durations as the configuration writes them (`250ms`, `5s`, `2m`, `1h 30m`).
//!
//! Imports nothing else of the crate, so every stage that reads a duration from the
//! configuration (sources, rules, correlation) can use it without naming another.

use std::time::Duration;

/// Reads a duration such as `250ms`, `5s`, `2m`, `1h 30m`; negative ones are refused.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let signed: jiff::SignedDuration = text
        .trim()
        .parse()
        .map_err(|e| format!("{text:?} is not a duration like 250ms, 5s or 2m: {e}"))?;
    Duration::try_from(signed).map_err(|_| format!("{text:?} is negative"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("fast").is_err());
    }
}
