//! Where a planned touch (a delivery) stands. Stored as its snake_case name; every
//! status that is not `sent` comes with a reason (`deferred_quiet_hours`, `no_consent` …).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Waiting to be dispatched (now, after quiet hours, or after the webhook recovers).
    Queued,
    /// A WeCom touch in a guide's task, waiting for the guide.
    PendingStaff,
    /// The guide confirmed it; WeCom sends it as a mass message.
    Confirmed,
    /// The guide skipped it.
    Skipped,
    /// Its task passed the deadline unconfirmed.
    Expired,
    Sent,
    Failed,
    /// Stopped by the contact policy, at planning or at send time.
    Suppressed,
}

impl DeliveryStatus {
    pub const ALL: [DeliveryStatus; 8] = [
        DeliveryStatus::Queued,
        DeliveryStatus::PendingStaff,
        DeliveryStatus::Confirmed,
        DeliveryStatus::Skipped,
        DeliveryStatus::Expired,
        DeliveryStatus::Sent,
        DeliveryStatus::Failed,
        DeliveryStatus::Suppressed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Queued => "queued",
            DeliveryStatus::PendingStaff => "pending_staff",
            DeliveryStatus::Confirmed => "confirmed",
            DeliveryStatus::Skipped => "skipped",
            DeliveryStatus::Expired => "expired",
            DeliveryStatus::Sent => "sent",
            DeliveryStatus::Failed => "failed",
            DeliveryStatus::Suppressed => "suppressed",
        }
    }

    pub fn parse(s: &str) -> Option<DeliveryStatus> {
        DeliveryStatus::ALL.into_iter().find(|d| d.as_str() == s)
    }
}

/// Marketing touches pass every contact-policy rule; service messages (replies, order
/// notices) only need consent. Stored on each delivery as its snake_case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum TouchKind {
    #[default]
    Marketing,
    Service,
}

impl TouchKind {
    pub const ALL: [TouchKind; 2] = [TouchKind::Marketing, TouchKind::Service];

    /// As stored on a delivery.
    pub fn as_str(self) -> &'static str {
        match self {
            TouchKind::Marketing => "marketing",
            TouchKind::Service => "service",
        }
    }

    pub fn parse(s: &str) -> Option<TouchKind> {
        TouchKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl std::fmt::Display for DeliveryStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_as_stored_and_as_json() {
        for s in DeliveryStatus::ALL {
            assert_eq!(DeliveryStatus::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_value(s).unwrap(), serde_json::json!(s.as_str()));
        }
        assert_eq!(DeliveryStatus::parse("delivered"), None);
        for k in TouchKind::ALL {
            assert_eq!(TouchKind::parse(k.as_str()), Some(k));
            assert_eq!(serde_json::to_value(k).unwrap(), serde_json::json!(k.as_str()));
        }
    }
}
