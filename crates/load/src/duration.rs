//! Durations as ghz takes them for `-z` and `-t` (`10s`, `1m30s`, `250ms`), parsed by
//! humantime, and the millisecond figures of ghz's summary.

use std::time::Duration;

/// Parses a duration with humantime, plus the two Go forms ghz accepts that humantime
/// does not: a bare number of seconds (`2`, `0.5`) and one decimal number with a unit
/// (`1.5s`, `0.25m`); `µs` is taken as `us`.
pub fn parse(text: &str) -> Result<Duration, String> {
    let s = text.trim().replace(['µ', 'μ'], "u");
    if s.starts_with('-') {
        return Err(format!("{text:?}: must be a positive duration"));
    }
    if let Ok(seconds) = s.parse::<f64>() {
        return Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"));
    }
    match s.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(unit) if s[..unit].contains('.') && s[unit..].chars().all(char::is_alphabetic) => {
            let value: f64 = s[..unit]
                .parse()
                .map_err(|_| format!("{text:?}: bad number {:?}", &s[..unit]))?;
            let scale = humantime::parse_duration(&format!("1{}", &s[unit..]))
                .map_err(|e| format!("{text:?}: {e}"))?;
            Ok(scale.mul_f64(value))
        }
        _ => humantime::parse_duration(&s).map_err(|e| format!("{text:?}: {e}")),
    }
}

/// Formats a duration like ghz's summary does: milliseconds with two decimals.
pub fn ms(nanos: u64) -> String {
    format!("{:.2} ms", nanos as f64 / 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse("2").unwrap(), Duration::from_secs(2));
        assert_eq!(parse("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse("100us").unwrap(), Duration::from_micros(100));
        assert_eq!(parse("100µs").unwrap(), Duration::from_micros(100));
        assert!(parse("10").is_ok());
        assert!(parse("10x").is_err());
        assert!(parse("s").is_err());
        assert!(parse("").is_err());
        assert!(parse("-1s").is_err());
        assert!(parse("-1").is_err());
    }
}
