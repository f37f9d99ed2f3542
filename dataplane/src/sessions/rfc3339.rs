//! A small RFC 3339 date-time parser (`Blacklist.spec.expiresAt`), so that reading one timestamp
//! format does not pull in a date library.
//!
//! Accepted: `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`, the `date-time` production of RFC 3339
//! §5.6. `T` and `Z` may be lowercase, and a space may separate date and time (RFC 3339 §5.6
//! allows both). Every field is range-checked (the day against the month, leap years included);
//! a leap second (`:60`) is accepted and counts as the first second of the next minute. Fractions
//! beyond nanoseconds are truncated.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use thiserror::Error;

/// Why a string is not an RFC 3339 date-time. The message names the part that is wrong.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("not an RFC 3339 date-time ({0}); expected YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)")]
pub struct Error(&'static str);

/// Parse `text` into the instant it names.
pub fn parse(text: &str) -> Result<SystemTime, Error> {
    let (secs, nanos) = parse_unix(text)?;
    let since_epoch = Duration::new(secs.unsigned_abs(), 0);
    let whole = if secs >= 0 {
        UNIX_EPOCH.checked_add(since_epoch)
    } else {
        UNIX_EPOCH.checked_sub(since_epoch)
    };
    whole
        .and_then(|t| t.checked_add(Duration::from_nanos(u64::from(nanos))))
        .ok_or(Error("out of the representable range"))
}

/// Parse `text` into seconds since the Unix epoch (negative before 1970) and nanoseconds.
pub fn parse_unix(text: &str) -> Result<(i64, u32), Error> {
    let mut p = Cursor {
        bytes: text.as_bytes(),
        at: 0,
    };
    let year = p.digits(4, "year")?;
    p.expect(b'-', "a '-' after the year")?;
    let month = p.digits(2, "month")?;
    p.expect(b'-', "a '-' after the month")?;
    let day = p.digits(2, "day")?;
    match p.next() {
        Some(b'T' | b't' | b' ') => {}
        _ => return Err(Error("a 'T' between date and time")),
    }
    let hour = p.digits(2, "hour")?;
    p.expect(b':', "a ':' after the hour")?;
    let minute = p.digits(2, "minute")?;
    p.expect(b':', "a ':' after the minute")?;
    let second = p.digits(2, "second")?;
    let mut nanos = 0u32;
    if p.peek() == Some(b'.') {
        p.at += 1;
        let start = p.at;
        let mut scale = 100_000_000u32;
        while let Some(d) = p.peek().filter(u8::is_ascii_digit) {
            nanos += u32::from(d - b'0') * scale;
            scale /= 10;
            p.at += 1;
        }
        if p.at == start {
            return Err(Error("digits after the decimal point"));
        }
    }
    let offset_secs: i64 = match p.next() {
        Some(b'Z' | b'z') => 0,
        Some(sign @ (b'+' | b'-')) => {
            let hours = p.digits(2, "offset hours")?;
            p.expect(b':', "a ':' in the offset")?;
            let minutes = p.digits(2, "offset minutes")?;
            if hours > 23 || minutes > 59 {
                return Err(Error("offset out of range"));
            }
            let offset = i64::from(hours * 3600 + minutes * 60);
            if sign == b'-' { -offset } else { offset }
        }
        _ => return Err(Error("a time zone: 'Z' or an offset such as +01:00")),
    };
    if p.at != p.bytes.len() {
        return Err(Error("unexpected characters after the time zone"));
    }
    if !(1..=12).contains(&month) {
        return Err(Error("month out of range"));
    }
    if day < 1 || day > days_in_month(year, month) {
        return Err(Error("day out of range for the month"));
    }
    if hour > 23 || minute > 59 || second > 60 {
        return Err(Error("time out of range"));
    }
    let days = days_from_civil(i64::from(year), month, day);
    let local = days * 86_400 + i64::from(hour * 3600 + minute * 60 + second);
    Ok((local - offset_secs, nanos))
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.at += 1;
        Some(b)
    }

    fn expect(&mut self, byte: u8, what: &'static str) -> Result<(), Error> {
        if self.next() == Some(byte) {
            Ok(())
        } else {
            Err(Error(what))
        }
    }

    /// Exactly `n` ASCII digits.
    fn digits(&mut self, n: usize, what: &'static str) -> Result<u32, Error> {
        let mut value = 0u32;
        for _ in 0..n {
            match self.next() {
                Some(d) if d.is_ascii_digit() => value = value * 10 + u32::from(d - b'0'),
                _ => return Err(Error(what)),
            }
        }
        Ok(value)
    }
}

fn is_leap(year: u32) -> bool {
    (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400)
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to the given proleptic Gregorian date (negative before it). The
/// era-based computation of "chrono-compatible low-level date algorithms" (H. Hinnant).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month = i64::from(month);
    let day_of_year =
        (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unix(text: &str) -> (i64, u32) {
        parse_unix(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn known_instants() {
        assert_eq!(unix("1970-01-01T00:00:00Z"), (0, 0));
        assert_eq!(unix("2030-01-01T00:00:00Z"), (1_893_456_000, 0));
        assert_eq!(unix("2000-02-29T12:34:56Z"), (951_827_696, 0));
        assert_eq!(unix("1969-12-31T23:59:59Z"), (-1, 0));
        assert_eq!(unix("0000-03-01T00:00:00Z").0, -62_162_035_200);
        assert_eq!(unix("9999-12-31T23:59:59Z").0, 253_402_300_799);
    }

    #[test]
    fn offsets_fractions_and_lenient_separators() {
        let utc = unix("2024-06-01T10:00:00Z");
        assert_eq!(unix("2024-06-01T12:00:00+02:00"), utc);
        assert_eq!(unix("2024-06-01T08:30:00-01:30"), utc);
        assert_eq!(unix("2024-06-01t10:00:00z"), utc);
        assert_eq!(unix("2024-06-01 10:00:00Z"), utc);
        assert_eq!(unix("2024-06-01T10:00:00.5Z"), (utc.0, 500_000_000));
        assert_eq!(
            unix("2024-06-01T10:00:00.123456789123Z"),
            (utc.0, 123_456_789)
        );
        // A leap second is the first second of the next minute.
        assert_eq!(
            unix("2016-12-31T23:59:60Z").0,
            unix("2017-01-01T00:00:00Z").0
        );
    }

    #[test]
    fn system_time_before_and_after_the_epoch() {
        let after = parse("1970-01-01T00:00:01.25Z").expect("valid");
        assert_eq!(
            after.duration_since(UNIX_EPOCH).expect("after"),
            Duration::from_millis(1250)
        );
        let before = parse("1969-12-31T23:59:59Z").expect("valid");
        assert_eq!(
            UNIX_EPOCH.duration_since(before).expect("before"),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn malformed_and_out_of_range_values_are_refused_with_the_reason() {
        for (text, reason) in [
            ("", "year"),
            ("2024-6-01T00:00:00Z", "month"),
            ("2024-06-01", "a 'T' between date and time"),
            ("2024-06-01T00:00Z", "a ':' after the minute"),
            ("2024-06-01T00:00:00", "a time zone"),
            ("2024-06-01T00:00:00+0100", "a ':' in the offset"),
            ("2024-06-01T00:00:00.Z", "digits after the decimal point"),
            ("2024-06-01T00:00:00Z ", "unexpected characters"),
            ("2024-13-01T00:00:00Z", "month out of range"),
            ("2023-02-29T00:00:00Z", "day out of range"),
            ("1900-02-29T00:00:00Z", "day out of range"),
            ("2024-04-31T00:00:00Z", "day out of range"),
            ("2024-06-00T00:00:00Z", "day out of range"),
            ("2024-06-01T24:00:00Z", "time out of range"),
            ("2024-06-01T00:60:00Z", "time out of range"),
            ("2024-06-01T00:00:00+24:00", "offset out of range"),
            ("２０２４-06-01T00:00:00Z", "year"),
        ] {
            let err = parse_unix(text).expect_err(text);
            assert!(err.to_string().contains(reason), "{text}: {err}");
        }
        assert!(
            parse_unix("2000-02-29T00:00:00Z").is_ok(),
            "2000 is a leap year"
        );
    }
}
