//! The one grammar for durations a user writes: CLI flags and the Terraform
//! provider's `timeouts`.
//!
//! A duration is one or more spans of a number and a unit, written without
//! spaces: `90s`, `5m`, `1.5m`, `1h30m`, `500ms`, `30d`. Units are humantime's
//! (`ns`, `us`/`µs`, `ms`, `s`/`sec`, `m`/`min`, `h`, `d`, `w`, ...). A bare
//! number is seconds (`300`, `1.5`).

use std::time::Duration;

/// The longest duration accepted: far beyond any timeout or interval, and
/// short enough that adding it to the current instant cannot overflow.
pub const MAX: Duration = Duration::from_secs(100 * 365 * 86_400);

/// A duration that does not follow the grammar.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("invalid duration {0:?}: use a number with a unit, like 90s, 5m or 1h30m")]
    Invalid(String),
    #[error("invalid duration {0:?}: longer than 100 years; use a number with a unit, like 90s, 5m or 1h30m")]
    TooLong(String),
    #[error("invalid duration {0:?}: must be longer than zero")]
    Zero(String),
}

/// Parses a duration (zero allowed).
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    let invalid = || DurationError::Invalid(text.to_owned());
    let t = text.trim();
    if t.is_empty() || t.contains(char::is_whitespace) {
        return Err(invalid());
    }
    let parsed = if t.chars().all(|c| c.is_ascii_digit() || c == '.') {
        humantime::parse_duration(&format!("{t}s"))
    } else {
        humantime::parse_duration(t)
    };
    match parsed {
        Ok(d) if d > MAX => Err(DurationError::TooLong(text.to_owned())),
        Ok(d) => Ok(d),
        // Also a fraction finer than a nanosecond: that is not "too long".
        Err(humantime::DurationError::NumberOverflow) if !t.contains('.') => {
            Err(DurationError::TooLong(text.to_owned()))
        }
        Err(_) => Err(invalid()),
    }
}

/// Parses a duration that must be longer than zero (timeouts, lifetimes).
pub fn parse_positive(text: &str) -> Result<Duration, DurationError> {
    match parse(text)? {
        d if d.is_zero() => Err(DurationError::Zero(text.to_owned())),
        d => Ok(d),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn spans_of_a_number_and_a_unit() {
        for (text, want) in [
            ("90s", secs(90)),
            ("5m", secs(300)),
            ("5min", secs(300)),
            ("2h", secs(7_200)),
            ("30d", secs(30 * 86_400)),
            ("1h30m", secs(5_400)),
            ("2m30s", secs(150)),
            ("1.5m", secs(90)),
            ("0.5s", Duration::from_millis(500)),
            ("500ms", Duration::from_millis(500)),
            ("250us", Duration::from_micros(250)),
            ("250µs", Duration::from_micros(250)),
            ("10ns", Duration::from_nanos(10)),
            (" 10s ", secs(10)),
            ("0s", Duration::ZERO),
        ] {
            assert_eq!(parse(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn a_bare_number_is_seconds() {
        assert_eq!(parse("300"), Ok(secs(300)));
        assert_eq!(parse("2"), Ok(secs(2)));
        assert_eq!(parse("1.5"), Ok(Duration::from_millis(1_500)));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
    }

    #[test]
    fn bad_durations_say_what_is_expected() {
        for bad in [
            "",
            " ",
            "s",
            "5x",
            "5 m",
            "1h 30m",
            "5 parsecs",
            "-5s",
            "m5",
            "abc",
            "1.",
            ".s",
            "1..5s",
            "0.5ns",
        ] {
            let err = parse(bad).unwrap_err();
            assert_eq!(err, DurationError::Invalid(bad.into()), "{bad}");
            assert!(err.to_string().contains("like 90s, 5m"), "{bad}: {err}");
        }
    }

    #[test]
    fn absurdly_long_durations_are_refused() {
        for long in ["99999999999h", "101y", "99999999999999999999999s"] {
            let err = parse(long).unwrap_err();
            assert_eq!(err, DurationError::TooLong(long.into()), "{long}");
            assert!(err.to_string().contains("like 90s, 5m"), "{long}: {err}");
        }
        assert_eq!(parse("36500d"), Ok(MAX));
    }

    #[test]
    fn positive_durations_refuse_zero() {
        assert_eq!(parse_positive("5m"), Ok(secs(300)));
        for zero in ["0", "0s", "0ms"] {
            let err = parse_positive(zero).unwrap_err();
            assert!(
                err.to_string().contains("longer than zero"),
                "{zero}: {err}"
            );
        }
        assert!(parse_positive("soon").is_err());
    }
}
