//! Durations (`"250ms"`, `"5s"`, `"2m"`, `"1h"`, `"7d"`) and byte sizes
//! (`"64KiB"`, `"1MiB"`, `"512B"`, `1048576`) as written in the file.
//!
//! They are parsed during validation, not during deserialization, so that a
//! bad value is one error among many instead of the end of the run. Each
//! error message shows the bad value and an example of a good one.

use std::time::Duration;

/// Example shown in every duration error.
const DURATION_EXAMPLE: &str = "e.g. \"250ms\", \"5s\", \"2m\", \"1h\" or \"7d\"";
/// Example shown in every size error.
const SIZE_EXAMPLE: &str = "e.g. \"512B\", \"64KiB\", \"1MiB\", \"1GiB\" or a number of bytes";

/// Splits `"1.5MiB"` into the number (`1.5`, as integer and fraction digit
/// strings) and the unit (`"MiB"`, leading spaces removed).
fn split_number(s: &str) -> Option<(&str, &str, &str)> {
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(end);
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    if int.is_empty() || frac.contains('.') {
        return None;
    }
    Some((int, frac, unit.trim_start()))
}

/// `int.frac × scale`, rounded down; `None` on overflow or bad digits.
fn scaled(int: &str, frac: &str, scale: u128) -> Option<u128> {
    let whole: u128 = int.parse().ok()?;
    let mut total = whole.checked_mul(scale)?;
    if !frac.is_empty() {
        // Keep at most 18 fraction digits: beyond that nothing is representable.
        let frac = &frac[..frac.len().min(18)];
        let digits: u128 = frac.parse().ok()?;
        let denominator = 10u128.pow(frac.len() as u32);
        total = total.checked_add(digits.checked_mul(scale)? / denominator)?;
    }
    Some(total)
}

/// Parses a duration such as `"250ms"`, `"5s"`, `"1.5m"`, `"7d"` (or `"0"`).
pub(super) fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    let bad = |why: &str| format!("`{text}` is not a duration{why} ({DURATION_EXAMPLE})");
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let Some((int, frac, unit)) = split_number(s) else {
        return Err(bad(""));
    };
    let nanos_per_unit: u128 = match unit {
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60 * 1_000_000_000,
        "h" => 3_600 * 1_000_000_000,
        "d" => 86_400 * 1_000_000_000,
        "" => return Err(bad(": the unit is missing")),
        other => return Err(bad(&format!(": unknown unit `{other}`"))),
    };
    let nanos = scaled(int, frac, nanos_per_unit).ok_or_else(|| bad(": too large"))?;
    let secs = u64::try_from(nanos / 1_000_000_000).map_err(|_| bad(": too large"))?;
    let sub = (nanos % 1_000_000_000) as u32;
    Ok(Duration::new(secs, sub))
}

/// Parses a byte size such as `"64KiB"`, `"1MiB"`, `"10MB"`, `"512B"` or
/// `"4096"`. Binary (`KiB`) and decimal (`KB`) units are both understood;
/// case does not matter.
pub(super) fn parse_size(text: &str) -> Result<u64, String> {
    let s = text.trim();
    let bad = |why: &str| format!("`{text}` is not a size{why} ({SIZE_EXAMPLE})");
    let Some((int, frac, unit)) = split_number(s) else {
        return Err(bad(""));
    };
    let multiplier: u128 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => return Err(bad(&format!(": unknown unit `{unit}`"))),
    };
    let bytes = scaled(int, frac, multiplier).ok_or_else(|| bad(": too large"))?;
    u64::try_from(bytes).map_err(|_| bad(": too large"))
}

/// A size written as a plain TOML integer: a number of bytes, never negative.
pub(super) fn size_from_int(n: i64) -> Result<u64, String> {
    u64::try_from(n).map_err(|_| format!("{n} is not a size: it is negative ({SIZE_EXAMPLE})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        for bad in [
            "",
            "5",
            "s",
            "5x",
            "-1s",
            "1..5s",
            "five seconds",
            "99999999999999999999d",
        ] {
            let err = parse_duration(bad).unwrap_err();
            assert!(err.contains(&format!("`{bad}`")), "{err}");
            assert!(err.contains("\"250ms\""), "{err}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512B"), Ok(512));
        assert_eq!(parse_size("64KiB"), Ok(64 * 1024));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("1 gib"), Ok(1 << 30));
        assert_eq!(parse_size("10MB"), Ok(10_000_000));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("1.5KiB"), Ok(1536));
        assert_eq!(size_from_int(100), Ok(100));
        assert!(size_from_int(-1).is_err());
        for bad in ["", "MiB", "1XB", "1 MiBs", "-5"] {
            let err = parse_size(bad).unwrap_err();
            assert!(err.contains("\"64KiB\""), "{err}");
        }
    }
}
