//! Instants are UTC epoch milliseconds. Quiet hours and "days" are computed in a
//! store's or profile's zone by the callers that need them.

use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, TimeZone, Utc};
use serde::{Deserialize, Serialize};

/// A UTC instant in epoch milliseconds. On the wire (admin API, exports) it is an
/// RFC 3339 string such as `2024-05-01T08:30:00.000Z`; it also reads epoch milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Wire {
            Millis(i64),
            Text(String),
        }
        match Wire::deserialize(d)? {
            Wire::Millis(ms) => Ok(Timestamp(ms)),
            Wire::Text(s) => Timestamp::parse_iso8601(&s).ok_or_else(|| serde::de::Error::custom(format!("{s:?} is not an ISO-8601 date"))),
        }
    }
}

/// `#[serde(with = "siyu_core::time::as_millis")]`: epoch milliseconds on the way out
/// (compact and fast, for internal records such as the ingest log), either form in.
pub mod as_millis {
    use super::Timestamp;

    pub fn serialize<S: serde::Serializer>(t: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(t.0)
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        serde::Deserialize::deserialize(d)
    }
}

impl utoipa::PartialSchema for Timestamp {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
            .description(Some("UTC time, RFC 3339"))
            .into()
    }
}

impl utoipa::ToSchema for Timestamp {}

pub const MS_PER_DAY: i64 = 86_400_000;

impl Timestamp {
    pub fn now() -> Self {
        Timestamp(Utc::now().timestamp_millis())
    }

    pub fn millis(self) -> i64 {
        self.0
    }

    /// Parses the ISO-8601 forms Segment libraries send: RFC 3339 with an offset or `Z`,
    /// a naive date-time (read as UTC), or a bare date (midnight UTC).
    pub fn parse_iso8601(s: &str) -> Option<Self> {
        let s = s.trim();
        if let Ok(t) = DateTime::parse_from_rfc3339(s) {
            return Some(Timestamp(t.timestamp_millis()));
        }
        for fmt in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
            if let Ok(t) = NaiveDateTime::parse_from_str(s, fmt) {
                return Some(Timestamp(Utc.from_utc_datetime(&t).timestamp_millis()));
            }
        }
        if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
            let t = d.and_hms_opt(0, 0, 0)?;
            return Some(Timestamp(Utc.from_utc_datetime(&t).timestamp_millis()));
        }
        None
    }

    pub fn to_datetime(self) -> DateTime<Utc> {
        Utc.timestamp_millis_opt(self.0).single().unwrap_or_default()
    }

    /// RFC 3339 with milliseconds and `Z`, the form Segment uses on the wire.
    pub fn to_rfc3339(self) -> String {
        self.to_datetime().to_rfc3339_opts(SecondsFormat::Millis, true)
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms_sdks_send() {
        let z = Timestamp::parse_iso8601("2024-03-01T08:00:00.000Z").unwrap();
        let off = Timestamp::parse_iso8601("2024-03-01T16:00:00+08:00").unwrap();
        let py = Timestamp::parse_iso8601("2024-03-01T08:00:00.000000+00:00").unwrap();
        let naive = Timestamp::parse_iso8601("2024-03-01T08:00:00").unwrap();
        assert_eq!(z, off);
        assert_eq!(z, py);
        assert_eq!(z, naive);
        assert_eq!(z.to_rfc3339(), "2024-03-01T08:00:00.000Z");
        assert_eq!(Timestamp::parse_iso8601("2024-03-01").unwrap().to_rfc3339(), "2024-03-01T00:00:00.000Z");
        assert!(Timestamp::parse_iso8601("yesterday").is_none());
        assert!(Timestamp::parse_iso8601("2024-13-01T00:00:00Z").is_none());
    }
}
