//! Timestamps of PJSIP log lines and the calendar day they belong to.
//!
//! PJSIP writes the local wall-clock time, `HH:MM:SS.mmm`, and only with some decor
//! options a date before it (`YYYY-MM-DD `, optionally after a weekday name). Lines
//! without a date get theirs from the caller (`--date`, or the file's modification day)
//! and from midnight rollovers: a time far earlier than the previous line's means the
//! next day began. Small steps backwards (threads logging out of order) are not rollovers.

use jiff::civil::{Date, DateTime, Time};

/// Milliseconds in a day.
const DAY_MS: u32 = 86_400_000;
/// A time this much earlier than the previous line's starts a new day. Anything smaller
/// is log lines out of order.
const ROLLOVER_MS: u32 = 3_600_000;

/// The timestamp written at the start of a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogTime {
    /// The date, when the line carries one.
    pub date: Option<Date>,
    /// Milliseconds since local midnight.
    pub millis: u32,
}

/// Reads the timestamp at the start of `line`: `[Www ][YYYY-MM-DD ]HH:MM:SS[.fff]`.
/// Returns it and the number of bytes it took, or `None` when the line does not start
/// with one.
pub fn parse_timestamp(line: &[u8]) -> Option<(LogTime, usize)> {
    let mut pos = 0;
    // Cheap rejection first: nearly every untimestamped line fails on its first byte.
    let first = *line.first()?;
    if !first.is_ascii_digit() {
        if line.len() > 4 && first.is_ascii_uppercase() && line[3] == b' ' {
            pos = 4; // weekday name, e.g. "Mon "
        } else {
            return None;
        }
    }
    let mut date = None;
    if line.get(pos + 4) == Some(&b'-') {
        let year = digits(line, pos, 4)?;
        let month = digits(line, pos + 5, 2)?;
        let day = digits(line, pos + 8, 2)?;
        if line.get(pos + 7) != Some(&b'-') || line.get(pos + 10) != Some(&b' ') {
            return None;
        }
        date = Some(Date::new(year as i16, month as i8, day as i8).ok()?);
        pos += 11;
    }
    let hour = digits(line, pos, 2)?;
    let minute = digits(line, pos + 3, 2)?;
    let second = digits(line, pos + 6, 2)?;
    if line.get(pos + 2) != Some(&b':') || line.get(pos + 5) != Some(&b':') {
        return None;
    }
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    pos += 8;
    let mut millis = 0;
    if line.get(pos) == Some(&b'.') {
        pos += 1;
        let mut scale = 100;
        let mut count = 0;
        while let Some(&d) = line.get(pos) {
            if !d.is_ascii_digit() || count == 6 {
                break;
            }
            millis += u32::from(d - b'0') * scale;
            scale /= 10;
            pos += 1;
            count += 1;
        }
        if count == 0 {
            return None;
        }
    }
    let second = second.min(59); // a leap second is logged as :60
    let millis = ((hour * 60 + minute) * 60 + second) * 1000 + millis;
    Some((LogTime { date, millis }, pos))
}

/// [`parse_timestamp`] remembering the last timestamp it read. PJSIP writes many lines
/// in the same millisecond, so most lines start with the bytes the previous one did, and
/// comparing them is cheaper than reading them again (a tenth of the parser's time).
#[derive(Debug, Clone, Default)]
pub(crate) struct TimestampCache {
    /// The bytes the last timestamp was read from: through the byte after it, which
    /// [`parse_timestamp`] looks at too, or to the line's end.
    key: [u8; KEY_MAX],
    /// Length of `key`; 0 when nothing is remembered.
    key_len: usize,
    /// The last timestamp and the number of bytes it took.
    value: Option<(LogTime, usize)>,
}

/// Longest key: `Www YYYY-MM-DD HH:MM:SS.ffffff` and the byte after it.
const KEY_MAX: usize = 32;

impl TimestampCache {
    /// What [`parse_timestamp`] returns for `line`.
    #[inline]
    pub(crate) fn parse(&mut self, line: &[u8]) -> Option<(LogTime, usize)> {
        if let Some((_, used)) = self.value {
            // `parse_timestamp` reads no byte past `used`: equal bytes, equal answer.
            let read = line.len().min(used + 1);
            if read == self.key_len && same_bytes(&line[..read], &self.key[..read]) {
                return self.value;
            }
        }
        let parsed = parse_timestamp(line);
        if let Some((_, used)) = parsed {
            let read = line.len().min(used + 1);
            if read <= KEY_MAX {
                self.key[..read].copy_from_slice(&line[..read]);
                self.key_len = read;
                self.value = parsed;
            }
        }
        parsed
    }
}

/// `a == b` for slices of one length, without a `memcmp` call for the common key of 8
/// to 16 bytes (`HH:MM:SS.mmm` and the byte after it): its first and last 8 bytes, which
/// overlap, compared as two words. The call was 2 % of a replay's samples.
#[inline]
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if (8..=16).contains(&a.len())
        && let (Some(a_first), Some(a_last), Some(b_first), Some(b_last)) = (
            a.first_chunk::<8>(),
            a.last_chunk::<8>(),
            b.first_chunk::<8>(),
            b.last_chunk::<8>(),
        )
    {
        return a.len() == b.len() && a_first == b_first && a_last == b_last;
    }
    a == b
}

fn digits(line: &[u8], at: usize, count: usize) -> Option<u32> {
    let bytes = line.get(at..at + count)?;
    bytes.iter().try_fold(0u32, |acc, &b| {
        b.is_ascii_digit().then(|| acc * 10 + u32::from(b - b'0'))
    })
}

/// Places log times on the calendar: dates from the lines when they have them, else
/// from the starting date and the midnight rollovers seen since.
#[derive(Debug, Clone)]
pub struct LogClock {
    date: Date,
    last_millis: Option<u32>,
    /// The last time placed: lines come many to a millisecond.
    placed: Option<(Date, u32, DateTime)>,
    /// The last time taken and where it was placed: placing the same time again
    /// changes nothing (its date is the one set, it is no rollover from itself).
    last: Option<(LogTime, DateTime)>,
}

impl LogClock {
    /// A clock for a log whose undated lines start on `date`.
    pub fn new(date: Date) -> LogClock {
        LogClock {
            date,
            last_millis: None,
            placed: None,
            last: None,
        }
    }

    /// Takes the next line's time and returns its full local date and time.
    pub fn place(&mut self, time: LogTime) -> DateTime {
        if let Some((last, placed)) = self.last
            && last == time
        {
            return placed;
        }
        let placed = self.place_anew(time);
        self.last = Some((time, placed));
        placed
    }

    fn place_anew(&mut self, time: LogTime) -> DateTime {
        if let Some(date) = time.date {
            self.date = date;
        } else if let Some(last) = self.last_millis
            && time.millis + ROLLOVER_MS < last
        {
            self.date = self.date.tomorrow().unwrap_or(self.date);
        }
        self.last_millis = Some(time.millis);
        match self.placed {
            Some((date, millis, placed)) if date == self.date && millis == time.millis => placed,
            _ => {
                let placed = self.at(time.millis);
                self.placed = Some((self.date, time.millis, placed));
                placed
            }
        }
    }

    /// The local date and time of `millis` on the current day.
    pub fn at(&self, millis: u32) -> DateTime {
        let millis = millis.min(DAY_MS - 1);
        let time = Time::new(
            (millis / 3_600_000) as i8,
            (millis / 60_000 % 60) as i8,
            (millis / 1000 % 60) as i8,
            (millis % 1000 * 1_000_000) as i32,
        )
        .unwrap_or(Time::midnight());
        self.date.to_datetime(time)
    }
}

/// The local day of a file time (such as a modification time): the default date of a
/// trace's undated lines.
pub(crate) fn file_day(time: std::time::SystemTime, time_zone: &jiff::tz::TimeZone) -> Option<Date> {
    let timestamp = jiff::Timestamp::try_from(time).ok()?;
    Some(timestamp.to_zoned_datetime(time_zone.clone()).date())
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;

    #[test]
    fn time_only() {
        let (t, n) = parse_timestamp(b"08:33:58.222         sip_endpoint.c  .x").unwrap();
        assert_eq!(t.date, None);
        assert_eq!(t.millis, ((8 * 60 + 33) * 60 + 58) * 1000 + 222);
        assert_eq!(n, 12);
    }

    #[test]
    fn with_date_and_weekday() {
        let (t, n) = parse_timestamp(b"2026-11-23 08:33:58.245 x").unwrap();
        assert_eq!(t.date, Some(date(2026, 11, 23)));
        assert_eq!(n, 23);
        let (t, _) = parse_timestamp(b"Mon 2026-11-23 23:59:59.999 x").unwrap();
        assert_eq!(t.millis, DAY_MS - 1);
        let (t, n) = parse_timestamp(b"12:00:01 x").unwrap();
        assert_eq!((t.millis, n), (43_201_000, 8));
    }

    #[test]
    fn rejects_non_timestamps() {
        for line in [
            &b"Via: SIP/2.0/UDP"[..],
            b"v=0",
            b"",
            b"1",
            b"12:3",
            b"25:00:00.000 x",
            b"2026-13-01 00:00:00.000 x",
            b"12:00:00. x",
            b"INVITE sip:1@h SIP/2.0",
            b"--end msg--",
        ] {
            assert!(parse_timestamp(line).is_none(), "{}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn cached_timestamps_are_read_as_afresh() {
        let mut cache = TimestampCache::default();
        for line in [
            &b"08:33:58.222         sip_endpoint.c  .x"[..],
            b"08:33:58.222         pjlib  y",
            b"08:33:58.2221 z",
            b"08:33:58.222",
            b"08:33:58.222",
            b"08:33:58.22",
            b"08:33:58.223 z",
            b"08:33:58",
            b"08:33:58.",
            b"Mon 2026-11-23 23:59:59.999999 x",
            b"Mon 2026-11-23 23:59:59.9999999 x",
            b"Mon 2026-11-23 23:59:59.999999",
            b"Via: x",
            b"08:33:58 x",
        ] {
            assert_eq!(
                cache.parse(line),
                parse_timestamp(line),
                "{}",
                String::from_utf8_lossy(line)
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn any_cached_timestamp_is_read_as_afresh(lines in proptest::collection::vec(
            proptest::collection::vec(proptest::prop_oneof![
                proptest::strategy::Just(b'0'), proptest::strategy::Just(b'9'),
                proptest::strategy::Just(b':'), proptest::strategy::Just(b'.'),
                proptest::strategy::Just(b' '), proptest::strategy::Just(b'-'),
                proptest::strategy::Just(b'M')], 0..34), 0..30),
            base in proptest::sample::select(vec!["08:33:58.222", "2026-11-23 08:33:58", "Mon 2026-11-23 08:33:58.1"])) {
            let mut cache = TimestampCache::default();
            for tail in lines {
                // most lines share the prefix, as in a log; the tails vary what follows it
                let cut = tail.len() % (base.len() + 1);
                let mut line = base.as_bytes()[..cut].to_vec();
                line.extend_from_slice(&tail);
                proptest::prop_assert_eq!(cache.parse(&line), parse_timestamp(&line));
                proptest::prop_assert_eq!(cache.parse(base.as_bytes()), parse_timestamp(base.as_bytes()));
            }
        }

        #[test]
        fn word_compares_are_byte_compares(a in proptest::collection::vec(0u8..3, 0..20),
            b in proptest::collection::vec(0u8..3, 0..20)) {
            let b = &b[..b.len().min(a.len())];
            let a = &a[..b.len()];
            proptest::prop_assert_eq!(same_bytes(a, b), a == b);
        }
    }

    #[test]
    fn midnight_rollover() {
        let mut clock = LogClock::new(date(2026, 12, 31));
        let t = |s: &str| parse_timestamp(s.as_bytes()).unwrap().0;
        assert_eq!(clock.place(t("23:59:59.900")).date(), date(2026, 12, 31));
        // out of order by a few ms: same day
        assert_eq!(clock.place(t("23:59:59.800")).date(), date(2026, 12, 31));
        let next = clock.place(t("00:00:00.100"));
        assert_eq!(next, date(2027, 1, 1).at(0, 0, 0, 100_000_000));
        assert_eq!(clock.place(t("00:00:01.000")).date(), date(2027, 1, 1));
        // a dated line resets the day
        assert_eq!(clock.place(t("2026-05-01 10:00:00.000")).date(), date(2026, 5, 1));
        assert_eq!(clock.place(t("10:00:01.000")).date(), date(2026, 5, 1));
    }
}
