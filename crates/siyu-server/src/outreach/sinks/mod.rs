//! Sinks: where touches go that Siyu sends itself, one component per file, the way
//! Vector's sinks are. The runner reads the deliveries ready for a sink, re-checks the
//! contact policy, renders them once and hands the sink a batch, each delivery with its
//! idempotency key, so a receiver can drop a repeat after a crash between sending and
//! recording the send. SMS, e-mail, official-account and webhook touches go to the
//! `webhook` sink (or the `outbox` file without one), which answer for the whole batch
//! at once; WeCom touches go through guide tasks to the `wecom` sink, which makes mass
//! messages the guide still sends in the WeCom app and settles each delivery later
//! from WeCom's per-customer results.

mod outbox;
mod webhook;
pub mod wecom;

pub use outbox::Outbox;
pub use webhook::Webhook;

use async_trait::async_trait;
use serde::Serialize;
use siyu_core::Timestamp;
use siyu_core::delivery::DeliveryStatus;

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
    /// The guide a WeCom touch goes out from (not part of a gateway's payload).
    #[serde(skip)]
    pub guide: Option<String>,
}

/// What handing a batch to a sink means for its deliveries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handed {
    /// Sent: the runner marks every delivery of the batch `sent`.
    Sent,
    /// Taken by a channel that answers later: the sink settles each delivery itself in
    /// [`Sink::settle`] (WeCom: once the guide has sent the mass message).
    Later,
}

#[async_trait]
pub trait Sink: Send + Sync {
    fn name(&self) -> String;

    /// Deliveries in this status are ready for the sink: `queued` ones whose time has
    /// come for a gateway, ones their guide `confirmed` for WeCom.
    fn takes(&self) -> DeliveryStatus {
        DeliveryStatus::Queued
    }

    /// How many deliveries one batch holds.
    fn batch_size(&self) -> i64 {
        2000
    }

    /// Hands a batch over. An error means nothing of it may count as sent: the runner
    /// tries the batch again next round, with the same keys.
    async fn send(&self, batch: &[Outgoing]) -> Result<Handed, String>;

    /// Settles what was handed over earlier (results, reminders, answers that were
    /// lost). Nothing to do for a sink that answers at once.
    async fn settle(&self, _now: Timestamp) -> anyhow::Result<()> {
        Ok(())
    }
}
