//! Sinks: where touches go that Siyu sends itself, one component per file, the way
//! Vector's sinks are. A sink receives a batch of deliveries, each with its idempotency
//! key, so a receiver can drop a repeat after a crash between sending and recording the
//! send. SMS, e-mail, official-account and webhook touches go to the `webhook` sink (or
//! the `outbox` file without one); WeCom touches go through guide tasks and the `wecom`
//! sink's mass messages, which a guide confirms before WeCom sends them.

mod outbox;
mod webhook;
pub mod wecom;

pub use outbox::Outbox;
pub use webhook::Webhook;

use async_trait::async_trait;
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Outgoing {
    pub id: i64,
    /// Idempotency key: the same touch always carries the same key.
    pub key: String,
    pub profile_id: siyu_core::ProfileId,
    pub channel: siyu_core::rule::Channel,
    pub kind: siyu_core::delivery::TouchKind,
    pub campaign_id: Option<i64>,
    pub journey_id: Option<i64>,
    pub content: String,
    /// The customer's identities a gateway needs (user id, phone hash, openid …).
    pub to: serde_json::Value,
}

#[async_trait]
pub trait Sink: Send + Sync {
    fn name(&self) -> String;
    async fn send(&self, batch: &[Outgoing]) -> Result<(), String>;
}
