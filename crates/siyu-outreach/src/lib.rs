//! Outreach that serves instead of spamming.
//!
//! Every marketing touch passes the [`policy::ContactPolicy`], in this order:
//! consent → block/complaint cooldown → frequency caps → platform rules → quiet hours
//! (deferred, not dropped) → holdout → staff assignment and capacity → send.
//! Each rule is a plain function of (the touch, the profile's facts, its contact history,
//! now); [`policy::decide`] is their composition. The [`ledger::ContactLedger`] is the
//! contact history all campaigns and journeys share, so caps hold when several run at once.
//!
//! This crate holds no I/O: the server persists deliveries, rebuilds the ledger from
//! them at start and dispatches through channels.

pub mod campaign;
pub mod guardrail;
pub mod journey;
pub mod ledger;
pub mod plan;
pub mod policy;
pub mod quiet;
pub mod template;

pub use ledger::ContactLedger;
pub use policy::{ContactPolicy, Decision, Reason, TouchKind};
