//! Calendar conversion of Unix seconds (UTC) without a date crate: LDAP GeneralizedTime for AD attributes and
//! the RootDSE, ISO 8601 for expiry dates in logs, and days from a date for HTTP dates and certificate expiry.

/// (year, month, day, hour, minute, second) for Unix seconds, by Howard Hinnant's civil-from-days algorithm.
pub fn civil(unix: u64) -> (i64, i64, i64, u64, u64, u64) {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, secs / 3600, secs / 60 % 60, secs % 60)
}

/// Unix seconds now (0 on a clock set before 1970).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// LDAP GeneralizedTime as AD writes it: `20261122103000.0Z`.
pub fn generalized_time(unix: u64) -> String {
    let (y, m, d, hh, mm, ss) = civil(unix);
    format!("{y:04}{m:02}{d:02}{hh:02}{mm:02}{ss:02}.0Z")
}

/// ISO 8601 as Graph writes timestamps: `2026-11-22T10:30:00Z`.
pub fn iso8601(unix: u64) -> String {
    let (y, m, d, hh, mm, ss) = civil(unix);
    format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z")
}

/// Unix seconds of a timestamp as Graph writes them (`2021-03-12T10:36:14Z`, also with fractional seconds or
/// `+00:00`). `None` for anything else, including times before 1970 and other offsets.
pub fn parse_iso8601(s: &str) -> Option<u64> {
    let (date, time) = s.trim().split_once(['T', 't'])?;
    let mut d = date.splitn(3, '-').map(|p| p.parse::<u64>().ok());
    let (y, mo, da) = (d.next()??, d.next()??, d.next()??);
    let time = time.strip_suffix(['Z', 'z']).or_else(|| time.strip_suffix("+00:00"))?;
    let time = time.split_once('.').map_or(time, |(t, frac)| {
        if frac.chars().all(|c| c.is_ascii_digit()) {
            t
        } else {
            "" // not a time: fails below
        }
    });
    let mut t = time.splitn(3, ':').map(|p| p.parse::<u64>().ok());
    let (hh, mm, ss) = (t.next()??, t.next()??, t.next()??);
    let valid = (1970..=9999).contains(&y)
        && (1..=12).contains(&mo)
        && (1..=31).contains(&da)
        && hh < 24
        && mm < 60
        && ss < 61
        && date.len() == 10;
    valid.then(|| days_from_civil(y, mo, da) * 86_400 + hh * 3600 + mm * 60 + ss)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm), for years from 1970.
pub fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        assert_eq!(generalized_time(0), "19700101000000.0Z");
        assert_eq!(generalized_time(1_795_343_400), "20261122103000.0Z");
        assert_eq!(generalized_time(951_782_400), "20000229000000.0Z");
        assert_eq!(iso8601(1_795_343_400), "2026-11-22T10:30:00Z");
    }

    #[test]
    fn graph_timestamps_parse_and_garbage_does_not() {
        assert_eq!(parse_iso8601("2021-03-12T10:36:14Z"), Some(1_615_545_374));
        assert_eq!(parse_iso8601("2021-03-12T10:36:14.1234567Z"), Some(1_615_545_374));
        assert_eq!(parse_iso8601("2021-03-12T10:36:14+00:00"), Some(1_615_545_374));
        assert_eq!(
            iso8601(parse_iso8601("2024-02-29T23:59:59Z").unwrap()),
            "2024-02-29T23:59:59Z"
        );
        for bad in [
            "",
            "2021-03-12",
            "2021-03-12T10:36:14",
            "2021-03-12T10:36:14+01:00",
            "2021-13-12T10:36:14Z",
            "1969-12-31T23:59:59Z",
            "2021-3-12T10:36:14Z",
            "2021-03-12T10:36:14.x1Z",
            "yesterday",
        ] {
            assert_eq!(parse_iso8601(bad), None, "{bad}");
        }
    }
}
