//! UTC civil time from Unix seconds and back (Howard Hinnant's `civil_from_days` /
//! `days_from_civil`), for every format that stores SOURCE_DATE_EPOCH as calendar fields (FAT,
//! ISO 9660, OCI `created`) or reads calendar times (Sigstore trust roots).
//!
//! In: seconds since 1970-01-01T00:00:00Z (any i64). Out: [`DateTime`] in the proleptic
//! Gregorian calendar, or its RFC 3339 text.

/// A UTC date and time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateTime {
    /// Year (may be before 1970).
    pub year: i64,
    /// Month, 1..=12.
    pub month: u32,
    /// Day of the month, 1..=31.
    pub day: u32,
    /// Hour, 0..=23.
    pub hour: u32,
    /// Minute, 0..=59.
    pub minute: u32,
    /// Second, 0..=59.
    pub second: u32,
}

/// The UTC date and time of `ts` Unix seconds.
pub fn from_unix(ts: i64) -> DateTime {
    let days = ts.div_euclid(86_400);
    let secs = ts.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    DateTime {
        year: yoe + era * 400 + i64::from(month <= 2),
        month,
        day,
        hour: (secs / 3600) as u32,
        minute: ((secs / 60) % 60) as u32,
        second: (secs % 60) as u32,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (the inverse of [`from_unix`]'s day
/// part).
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// `ts` as RFC 3339 UTC (`2023-11-14T22:13:20Z`).
pub fn rfc3339(ts: i64) -> String {
    let t = from_unix(ts);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year, t.month, t.day, t.hour, t.minute, t.second
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ts: i64) -> (i64, u32, u32, u32, u32, u32) {
        let d = from_unix(ts);
        (d.year, d.month, d.day, d.hour, d.minute, d.second)
    }

    #[test]
    fn round_trip_and_text() {
        for ts in [0, 1_700_000_000, 951_782_400, -86_400 * 800, 4_102_444_800] {
            let d = from_unix(ts);
            let back = days_from_civil(d.year, d.month.into(), d.day.into()) * 86_400
                + i64::from(d.hour) * 3600
                + i64::from(d.minute) * 60
                + i64::from(d.second);
            assert_eq!(back, ts);
        }
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn known_dates() {
        assert_eq!(t(0), (1970, 1, 1, 0, 0, 0));
        assert_eq!(t(1_700_000_000), (2023, 11, 14, 22, 13, 20));
        assert_eq!(t(951_782_400), (2000, 2, 29, 0, 0, 0));
        assert_eq!(t(315_532_800), (1980, 1, 1, 0, 0, 0));
        assert_eq!(t(4_354_819_199), (2107, 12, 31, 23, 59, 59));
        assert_eq!(t(-1), (1969, 12, 31, 23, 59, 59));
    }
}
