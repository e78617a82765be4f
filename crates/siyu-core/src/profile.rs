//! A customer's internal id. The store hands them out densely from 1, and the segment
//! engine keeps profiles in bitmaps indexed by the same number (its "bit"), so an id
//! must fit 32 bits: this type is where that is checked, once, instead of `as u32`
//! casts wherever an id crosses from the store to the engine.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(try_from = "i64", into = "i64")]
#[schema(value_type = i64, example = 42)]
pub struct ProfileId(i64);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0} is not a profile id (ids are whole numbers from 0 to 4294967295)")]
pub struct InvalidProfileId(pub String);

impl ProfileId {
    /// The largest id the engine's 32-bit bitmaps can hold.
    pub const MAX: ProfileId = ProfileId(u32::MAX as i64);

    pub fn new(id: i64) -> Result<ProfileId, InvalidProfileId> {
        if (0..=u32::MAX as i64).contains(&id) { Ok(ProfileId(id)) } else { Err(InvalidProfileId(id.to_string())) }
    }

    /// The profile at this position of the engine's bitmaps.
    pub fn from_bit(bit: u32) -> ProfileId {
        ProfileId(bit as i64)
    }

    /// As stored and as shown in the API.
    pub fn get(self) -> i64 {
        self.0
    }

    /// Its position in the engine's bitmaps (the range is checked on construction).
    pub fn bit(self) -> u32 {
        self.0 as u32
    }

    /// The next id, for "after this one" cursors; saturates at the end of the range.
    pub fn next(self) -> ProfileId {
        ProfileId((self.0 + 1).min(u32::MAX as i64))
    }
}

impl TryFrom<i64> for ProfileId {
    type Error = InvalidProfileId;
    fn try_from(id: i64) -> Result<ProfileId, InvalidProfileId> {
        ProfileId::new(id)
    }
}

impl From<ProfileId> for i64 {
    fn from(id: ProfileId) -> i64 {
        id.0
    }
}

impl FromStr for ProfileId {
    type Err = InvalidProfileId;
    fn from_str(s: &str) -> Result<ProfileId, InvalidProfileId> {
        s.trim().parse::<i64>().map_err(|_| InvalidProfileId(s.to_string())).and_then(ProfileId::new)
    }
}

impl fmt::Display for ProfileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_fits_the_engines_bitmaps_or_is_refused() {
        assert_eq!(ProfileId::new(7).unwrap().bit(), 7);
        assert_eq!(ProfileId::from_bit(u32::MAX), ProfileId::MAX);
        assert!(ProfileId::new(-1).is_err());
        assert!(ProfileId::new(u32::MAX as i64 + 1).is_err());
        assert_eq!("42".parse::<ProfileId>().unwrap().get(), 42);
        assert!("forty-two".parse::<ProfileId>().is_err());
        assert!("-3".parse::<ProfileId>().is_err());
    }

    #[test]
    fn json_is_the_plain_number_and_is_checked() {
        let id: ProfileId = serde_json::from_str("42").unwrap();
        assert_eq!(serde_json::to_string(&id).unwrap(), "42");
        assert!(serde_json::from_str::<ProfileId>("-1").is_err());
        assert!(serde_json::from_str::<ProfileId>("\"42\"").is_err());
    }
}
