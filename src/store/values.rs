//! Checks and conversions between the API's values and the columns both
//! backends store: RFC 3339 text to epoch milliseconds, `u64` counts to
//! signed 64-bit integers (checked, never cast), finite floats only.

use std::time::{SystemTime, UNIX_EPOCH};

use super::StoreError;

/// Milliseconds since the Unix epoch of an RFC 3339 UTC timestamp.
pub(crate) fn parse_at(at: &str, what: &'static str) -> Result<i64, StoreError> {
    let time = humantime::parse_rfc3339(at).map_err(|e| StoreError::Invalid {
        what,
        reason: format!("`at` {at:?} is not an RFC 3339 UTC timestamp ({e})"),
    })?;
    Ok(epoch_ms(time))
}

pub(crate) fn epoch_ms(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

pub(crate) fn now_ms() -> i64 {
    epoch_ms(SystemTime::now())
}

pub(crate) fn to_i64(v: u64, what: &'static str) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::Invalid {
        what,
        reason: format!("{v} is larger than a 64-bit signed integer"),
    })
}

pub(crate) fn finite(v: f64, what: &'static str, field: &str) -> Result<(), StoreError> {
    if v.is_finite() {
        Ok(())
    } else {
        Err(StoreError::Invalid {
            what,
            reason: format!("{field} is {v}, not a finite number"),
        })
    }
}

pub(crate) fn finite_opt(
    v: Option<f64>,
    what: &'static str,
    field: &str,
) -> Result<(), StoreError> {
    v.map_or(Ok(()), |v| finite(v, what, field))
}
