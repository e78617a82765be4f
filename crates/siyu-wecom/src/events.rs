//! Callback events as Siyu events on the right profile (found by the customer's
//! `external_userid`). The message id is the callback's dedupe key, so WeCom's retries
//! are stored once.

use siyu_core::identity::{Identity, IdentityKind};
use siyu_core::message::{Message, MessageKind};
use siyu_core::Timestamp;
use serde_json::{json, Value};

use crate::callback::{dedupe_key, CallbackEvent, Fields};

/// A contact way's `state` as Siyu writes it: `STORE-channel` (e.g. `SH001-table_card`).
pub fn attribution(state: &str) -> (Option<&str>, Option<&str>) {
    match state.split_once('-') {
        Some((store, channel)) if !store.is_empty() && !channel.is_empty() => (Some(store), Some(channel)),
        _ => (None, None),
    }
}

/// An empty track message about the customer with this `external_userid` (callers set
/// the event, properties or traits); `None` if the id is not a valid identity.
pub fn about_contact(external_userid: &str, message_id: String, at: Timestamp, received_at: Timestamp, source: &str) -> Option<Message> {
    let identity = Identity::new(IdentityKind::ExternalUserid, external_userid, None).ok()?;
    Some(Message {
        kind: MessageKind::Track,
        message_id,
        user_id: None,
        anonymous_id: None,
        event: None,
        previous_id: None,
        group_id: None,
        timestamp: at,
        received_at,
        payload: "{}".to_string(),
        context: Some(json!({"source": source}).to_string()),
        traits: Vec::new(),
        identities: vec![identity],
        profile_id: None,
    })
}

fn track(fields: &Fields, external_userid: &str, event: &str, properties: Value, received_at: Timestamp) -> Option<Message> {
    let at = fields.get("CreateTime").and_then(|t| t.parse::<i64>().ok()).map(|s| Timestamp(s * 1000)).unwrap_or(received_at);
    let base = about_contact(external_userid, dedupe_key(fields), at, received_at, "wecom")?;
    Some(Message { event: Some(event.to_string()), payload: properties.to_string(), ..base })
}

/// The Siyu event a callback becomes, if it is about one customer.
///
/// Group member changes do not say which member joined or left (WeCom's callback only
/// counts them), and tag changes are about the corp's tag library: neither is a
/// profile event, so both give `None` here.
pub fn to_message(fields: &Fields, event: &CallbackEvent, received_at: Timestamp) -> Option<Message> {
    match event {
        CallbackEvent::ContactAdded { staff, external_userid, state, .. } => {
            let (store, channel) = state.as_deref().map(attribution).unwrap_or((None, None));
            let props = json!({"staff_userid": staff, "state": state, "store_id": store, "channel": channel, "source": "wecom"});
            track(fields, external_userid, "Contact Added", props, received_at)
        }
        CallbackEvent::ContactEdited { staff, external_userid } => track(fields, external_userid, "Contact Edited", json!({"staff_userid": staff}), received_at),
        CallbackEvent::ContactDeletedByCustomer { staff, external_userid } => {
            track(fields, external_userid, "Contact Deleted", json!({"staff_userid": staff, "initiator": "customer"}), received_at)
        }
        CallbackEvent::ContactDeletedByStaff { staff, external_userid } => {
            track(fields, external_userid, "Contact Deleted", json!({"staff_userid": staff, "initiator": "staff"}), received_at)
        }
        CallbackEvent::TransferFailed { staff, external_userid, reason } => {
            track(fields, external_userid, "Transfer Failed", json!({"staff_userid": staff, "reason": reason}), received_at)
        }
        CallbackEvent::Group { .. } | CallbackEvent::Tag { .. } | CallbackEvent::Other { .. } => None,
    }
}
