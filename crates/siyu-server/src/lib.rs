//! Siyu's server. Dependencies point one way (ARCHITECTURE.md; `scripts/check-module-cycles`
//! fails on a circle):
//!
//! - `app`: the composition root. Starts and stops everything below.
//! - `http`: routes only. Extract, authorise, call a service or a store, answer.
//! - services: `outreach` (campaigns, journeys, dispatch to its sinks), `wecom` (callbacks,
//!   welcome, sync, groups, tags, transfers), `membership` (segment entered/exited events).
//! - leaves: `state` (the handles every service shares), `content` (what a template is
//!   filled with), `metrics`, `secrets`, `datadir`.

pub mod app;
pub mod content;
pub mod datadir;
pub mod http;
pub mod membership;
pub mod metrics;
pub mod outreach;
pub mod process;
pub mod secrets;
pub mod state;
pub mod wecom;
