//! Siyu's domain vocabulary, shared by every other crate. Nothing here does I/O.
//!
//! - [`identity`]: the ways a customer is known (user id, WeCom external_userid, phone …).
//! - [`message`]: Segment-spec tracking messages, parsed and validated.
//! - [`time`]: UTC instants as epoch milliseconds.
//! - [`org`]: stores, staff and their roles.
//! - [`analytics`]: the GMV identity, its LMDI decomposition, reporting periods.

pub mod analytics;
pub mod campaign;
pub mod delivery;
pub mod email;
pub mod identity;
pub mod json_check;
pub mod message;
pub mod org;
pub mod phone;
pub mod profile;
pub mod rule;
pub mod tag;
pub mod time;

pub use identity::{Identity, IdentityKind};
pub use message::{Message, MessageKind};
pub use time::Timestamp;

pub use profile::ProfileId;

/// Money is integer fen (1/100 yuan) everywhere.
pub type Fen = i64;
