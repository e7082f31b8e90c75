//! Kubernetes-style duration strings (`"90s"`, `"5m"`, `"1h30m"`).
//!
//! Policies carry durations as strings so `kubectl get -o yaml` shows what the
//! SRE wrote. The schema restricts them to the units that make sense for node
//! health (`ms`, `s`, `m`, `h`) with a CEL rule, and this module parses them.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

/// The longest duration string accepted by the schema; bounds CEL cost.
pub const MAX_DURATION_LEN: usize = 32;

/// Message the API server returns for a malformed duration.
pub const DURATION_MESSAGE: &str =
    "must be a duration such as \"30s\", \"5m\" or \"1h30m\" (units: ms, s, m, h)";

/// Why a duration string could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("empty duration: {DURATION_MESSAGE}")]
    Empty,
    #[error("duration {0:?} is longer than {MAX_DURATION_LEN} characters")]
    TooLong(String),
    #[error("duration {input:?}: expected a number at offset {offset}; {DURATION_MESSAGE}")]
    ExpectedNumber { input: String, offset: usize },
    #[error("duration {input:?}: missing or unknown unit at offset {offset}; {DURATION_MESSAGE}")]
    BadUnit { input: String, offset: usize },
    #[error("duration {0:?} is too large")]
    Overflow(String),
}

/// Parses a duration in the subset of Go's `time.ParseDuration` format that
/// the API accepts: one or more `<number><unit>` pairs, number optionally with
/// a fraction, unit one of `ms`, `s`, `m`, `h`.
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    if input.is_empty() {
        return Err(DurationError::Empty);
    }
    if input.len() > MAX_DURATION_LEN {
        return Err(DurationError::TooLong(input.to_owned()));
    }
    let bytes = input.as_bytes();
    let mut pos = 0;
    let mut total_nanos: u128 = 0;
    while pos < bytes.len() {
        let number_start = pos;
        while pos < bytes.len() && bytes[pos].is_ascii_digit() {
            pos += 1;
        }
        if pos == number_start {
            return Err(DurationError::ExpectedNumber {
                input: input.to_owned(),
                offset: pos,
            });
        }
        let whole = &input[number_start..pos];
        let mut fraction = "";
        if pos < bytes.len() && bytes[pos] == b'.' {
            pos += 1;
            let fraction_start = pos;
            while pos < bytes.len() && bytes[pos].is_ascii_digit() {
                pos += 1;
            }
            if pos == fraction_start {
                return Err(DurationError::ExpectedNumber {
                    input: input.to_owned(),
                    offset: pos,
                });
            }
            fraction = &input[fraction_start..pos];
        }
        let rest = &input[pos..];
        let (unit_nanos, unit_len): (u128, usize) = if rest.starts_with("ms") {
            (1_000_000, 2)
        } else if rest.starts_with('s') {
            (1_000_000_000, 1)
        } else if rest.starts_with('m') {
            (60_000_000_000, 1)
        } else if rest.starts_with('h') {
            (3_600_000_000_000, 1)
        } else {
            return Err(DurationError::BadUnit {
                input: input.to_owned(),
                offset: pos,
            });
        };
        pos += unit_len;
        let overflow = || DurationError::Overflow(input.to_owned());
        let whole: u128 = whole.parse().map_err(|_| overflow())?;
        let mut nanos = whole.checked_mul(unit_nanos).ok_or_else(overflow)?;
        // Fractions beyond nanosecond precision are truncated, as Go does.
        let mut scale = unit_nanos;
        for digit in fraction.bytes() {
            scale /= 10;
            if scale == 0 {
                break;
            }
            nanos += u128::from(digit - b'0') * scale;
        }
        total_nanos = total_nanos.checked_add(nanos).ok_or_else(overflow)?;
    }
    let secs = u64::try_from(total_nanos / 1_000_000_000)
        .map_err(|_| DurationError::Overflow(input.to_owned()))?;
    // The remainder is below 1e9 and always fits.
    let sub_nanos = (total_nanos % 1_000_000_000) as u32;
    Ok(Duration::new(secs, sub_nanos))
}

/// Formats a duration the way the API writes it back (`"2m30s"`, `"150ms"`).
pub fn format_duration(duration: Duration) -> String {
    let total_ms = duration.as_millis();
    if total_ms == 0 {
        return "0s".to_owned();
    }
    let hours = total_ms / 3_600_000;
    let minutes = (total_ms / 60_000) % 60;
    let seconds = (total_ms / 1000) % 60;
    let millis = total_ms % 1000;
    let mut out = String::new();
    if hours > 0 {
        out.push_str(&format!("{hours}h"));
    }
    if minutes > 0 {
        out.push_str(&format!("{minutes}m"));
    }
    if seconds > 0 {
        out.push_str(&format!("{seconds}s"));
    }
    if millis > 0 {
        out.push_str(&format!("{millis}ms"));
    }
    out
}

/// A duration as written in a policy. Validated by the API server (CEL) and
/// parsed with [`parse_duration`] by the agent and operator.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct KubeDuration(pub String);

impl KubeDuration {
    /// A duration from a literal known to be valid (defaults in this crate).
    pub fn from_static(text: &'static str) -> Self {
        Self(text.to_owned())
    }

    /// The parsed value.
    pub fn to_std(&self) -> Result<Duration, DurationError> {
        parse_duration(&self.0)
    }

    /// The text as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<Duration> for KubeDuration {
    fn from(duration: Duration) -> Self {
        Self(format_duration(duration))
    }
}

impl fmt::Display for KubeDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl JsonSchema for KubeDuration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "maxLength": MAX_DURATION_LEN,
            "x-kubernetes-validations": [{
                "rule": "self.matches('^([0-9]+([.][0-9]+)?(ms|s|m|h))+$')",
                "message": DURATION_MESSAGE,
            }],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_common_forms() {
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("120s"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("0.5h"), Ok(Duration::from_secs(1800)));
    }

    #[test]
    fn rejects_what_the_schema_rejects() {
        assert_eq!(parse_duration(""), Err(DurationError::Empty));
        assert!(matches!(
            parse_duration("5"),
            Err(DurationError::BadUnit { .. })
        ));
        assert!(matches!(
            parse_duration("5d"),
            Err(DurationError::BadUnit { .. })
        ));
        assert!(matches!(
            parse_duration("-5s"),
            Err(DurationError::ExpectedNumber { .. })
        ));
        assert!(matches!(
            parse_duration("s"),
            Err(DurationError::ExpectedNumber { .. })
        ));
        assert!(matches!(
            parse_duration("1.s"),
            Err(DurationError::ExpectedNumber { .. })
        ));
        assert!(matches!(
            parse_duration("5 m"),
            Err(DurationError::BadUnit { .. })
        ));
        assert!(matches!(
            parse_duration("99999999999999999999999999h"),
            Err(DurationError::Overflow(_)) | Err(DurationError::TooLong(_))
        ));
    }

    #[test]
    fn formats_round_trip() {
        for text in ["0s", "1s", "90s", "5m", "1h30m", "2h", "150ms", "1m0s"] {
            let parsed = parse_duration(text).expect("valid literal");
            let formatted = format_duration(parsed);
            assert_eq!(
                parse_duration(&formatted),
                Ok(parsed),
                "{text} -> {formatted}"
            );
        }
        assert_eq!(format_duration(Duration::from_secs(150)), "2m30s");
    }

    proptest! {
        #[test]
        fn never_panics(input in "\\PC{0,40}") {
            let _ = parse_duration(&input);
        }

        #[test]
        fn formatted_durations_parse_back(ms in 0u64..10_000_000_000) {
            let duration = Duration::from_millis(ms);
            prop_assert_eq!(parse_duration(&format_duration(duration)), Ok(duration));
        }

        #[test]
        fn sums_of_parts(h in 0u64..100, m in 0u64..1000, s in 0u64..1000) {
            let text = format!("{h}h{m}m{s}s");
            prop_assert_eq!(parse_duration(&text), Ok(Duration::from_secs(h * 3600 + m * 60 + s)));
        }
    }
}
