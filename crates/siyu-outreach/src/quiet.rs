//! Quiet hours in the customer's own time zone. A touch that falls inside them is
//! deferred to the window's end, never dropped: a 22:30 coupon arrives at 09:00.

use chrono::{Duration, NaiveTime, TimeZone};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use siyu_core::Timestamp;
use utoipa::ToSchema;

/// A daily window, `start` to `end` local time; it may cross midnight (21:00–09:00).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct QuietHours {
    /// "HH:MM"
    #[serde(with = "hhmm")]
    #[schema(value_type = String, example = "21:00")]
    pub start: NaiveTime,
    #[serde(with = "hhmm")]
    #[schema(value_type = String, example = "09:00")]
    pub end: NaiveTime,
}

impl Default for QuietHours {
    /// 21:00 to 09:00: nobody wants a coupon in bed.
    fn default() -> Self {
        QuietHours { start: NaiveTime::from_hms_opt(21, 0, 0).unwrap(), end: NaiveTime::from_hms_opt(9, 0, 0).unwrap() }
    }
}

impl QuietHours {
    fn contains(&self, t: NaiveTime) -> bool {
        if self.start <= self.end { t >= self.start && t < self.end } else { t >= self.start || t < self.end }
    }

    /// When a touch at `now` may go out in zone `tz`: `None` if now is fine, else the
    /// end of the quiet window (the next local `end` time after now).
    pub fn defer_until(&self, now: Timestamp, tz: Tz) -> Option<Timestamp> {
        let local = now.to_datetime().with_timezone(&tz);
        if !self.contains(local.time()) {
            return None;
        }
        let mut day = local.date_naive();
        if local.time() >= self.end {
            day += Duration::days(1);
        }
        let end = day.and_time(self.end);
        // A DST gap can skip the local time: take the first valid instant after it.
        let at = tz.from_local_datetime(&end).earliest().or_else(|| tz.from_local_datetime(&(end + Duration::hours(1))).earliest())?;
        Some(Timestamp(at.timestamp_millis()))
    }
}

/// The next time it is `at` (local) in `tz`, at or after `now`.
pub fn next_local_time(now: Timestamp, at: NaiveTime, tz: Tz) -> Timestamp {
    let local = now.to_datetime().with_timezone(&tz);
    let mut day = local.date_naive();
    if local.time() > at {
        day += Duration::days(1);
    }
    let t = day.and_time(at);
    let when = tz.from_local_datetime(&t).earliest().or_else(|| tz.from_local_datetime(&(t + Duration::hours(1))).earliest());
    when.map(|w| Timestamp(w.timestamp_millis())).unwrap_or(now)
}

/// Parses a zone name, falling back to the brand's default (Asia/Shanghai).
pub fn zone(name: Option<&str>) -> Tz {
    name.and_then(|n| n.parse().ok()).unwrap_or(chrono_tz::Asia::Shanghai)
}

pub mod hhmm {
    use chrono::NaiveTime;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &NaiveTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.format("%H:%M").to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<NaiveTime, D::Error> {
        let s = String::deserialize(d)?;
        NaiveTime::parse_from_str(&s, "%H:%M").map_err(|_| serde::de::Error::custom(format!("`{s}` is not a time of day like \"09:00\"")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(rfc: &str) -> Timestamp {
        Timestamp::parse_iso8601(rfc).unwrap()
    }

    #[test]
    fn a_touch_in_the_evening_waits_for_the_morning_across_midnight() {
        let q = QuietHours::default();
        let shanghai = zone(Some("Asia/Shanghai"));
        // 22:30 in Shanghai is 14:30 UTC; it goes out at 09:00 Shanghai the next day.
        assert_eq!(q.defer_until(at("2026-03-10T14:30:00Z"), shanghai), Some(at("2026-03-11T01:00:00Z")));
        // 02:00 Shanghai, after midnight: the same morning.
        assert_eq!(q.defer_until(at("2026-03-10T18:00:00Z"), shanghai), Some(at("2026-03-11T01:00:00Z")));
        // 10:00 Shanghai: fine.
        assert_eq!(q.defer_until(at("2026-03-11T02:00:00Z"), shanghai), None);
    }

    #[test]
    fn the_customer_zone_decides_not_the_server() {
        let q = QuietHours::default();
        // 14:30 UTC is 22:30 in Shanghai but 15:30 in London and 23:30 in Tokyo.
        let t = at("2026-03-10T14:30:00Z");
        assert!(q.defer_until(t, zone(Some("Europe/London"))).is_none());
        assert_eq!(q.defer_until(t, zone(Some("Asia/Tokyo"))), Some(at("2026-03-11T00:00:00Z")));
        assert_eq!(zone(Some("not a zone")), chrono_tz::Asia::Shanghai);
    }

    #[test]
    fn a_window_within_one_day_and_dst() {
        let q = QuietHours { start: NaiveTime::from_hms_opt(12, 0, 0).unwrap(), end: NaiveTime::from_hms_opt(14, 0, 0).unwrap() };
        let sh = zone(Some("Asia/Shanghai"));
        assert_eq!(q.defer_until(at("2026-03-10T04:30:00Z"), sh), Some(at("2026-03-10T06:00:00Z")));
        assert!(q.defer_until(at("2026-03-10T06:00:00Z"), sh).is_none());
        // New York springs forward on 2026-03-08: 23:00 local on the 7th waits until 09:00 EDT (13:00 UTC).
        let ny = zone(Some("America/New_York"));
        assert_eq!(QuietHours::default().defer_until(at("2026-03-08T04:00:00Z"), ny), Some(at("2026-03-08T13:00:00Z")));
    }

    #[test]
    fn next_local_time_of_day() {
        let sh = zone(None);
        assert_eq!(next_local_time(at("2026-03-10T00:00:00Z"), NaiveTime::from_hms_opt(10, 0, 0).unwrap(), sh), at("2026-03-10T02:00:00Z"));
        assert_eq!(next_local_time(at("2026-03-10T03:00:00Z"), NaiveTime::from_hms_opt(10, 0, 0).unwrap(), sh), at("2026-03-11T02:00:00Z"));
    }
}
