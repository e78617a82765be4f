//! Callback events as Siyu events on the right profile (found by the customer's
//! `external_userid`). The message id is the callback's dedupe key, so WeCom's retries
//! are stored once.

use serde_json::{Value, json};
use siyu_core::Timestamp;
use siyu_core::identity::{Identity, IdentityKind};
use siyu_core::message::Message;

use crate::callback::{CallbackEvent, Fields, dedupe_key};

/// A contact way's `state` as Siyu writes it: `STORE-channel` (e.g. `SH001-table_card`).
pub fn attribution(state: &str) -> (Option<&str>, Option<&str>) {
    match state.split_once('-') {
        Some((store, channel)) if !store.is_empty() && !channel.is_empty() => (Some(store), Some(channel)),
        _ => (None, None),
    }
}

/// The customer with this `external_userid` as an identity; `None` if the id is not a
/// valid one.
pub fn contact_identity(external_userid: &str) -> Option<Identity> {
    Identity::new(IdentityKind::ExternalUserid, external_userid, None).ok()
}

/// `part` tells apart the messages one callback becomes (a group change names several
/// members): each keeps a message id of its own, stable across WeCom's retries.
fn track(fields: &Fields, external_userid: &str, event: &str, properties: Value, received_at: Timestamp, part: Option<&str>) -> Option<Message> {
    let at = fields.get("CreateTime").and_then(|t| t.parse::<i64>().ok()).map(|s| Timestamp(s * 1000)).unwrap_or(received_at);
    let key = match part {
        Some(p) => format!("{}:{p}", dedupe_key(fields)),
        None => dedupe_key(fields),
    };
    Some(Message::track_about(vec![contact_identity(external_userid)?], event, key, properties, at, received_at, "wecom"))
}

/// WeCom's ids for customers (external contacts) start `wm` or `wo`; members of staff
/// have the corp's own user ids. Group member lists mix both.
pub fn is_customer(userid: &str) -> bool {
    userid.starts_with("wm") || userid.starts_with("wo")
}

/// The Siyu events a callback becomes by itself: one for a customer's contact change,
/// one per customer who joined or left a customer group (`Group Joined` / `Group
/// Left`). A group's creation and dismissal name no members: the server reads the new
/// group's members from WeCom, and the dismissed group's from its own events. Renames
/// and changes to the corp's tag library are about no customer and give none (a synced
/// tag's corp tag renamed or deleted ends its mirroring: see the server's `wecom_tags`).
pub fn to_messages(fields: &Fields, event: &CallbackEvent, received_at: Timestamp) -> Vec<Message> {
    let contact = |external_userid: &str, name: &str, props: Value| track(fields, external_userid, name, props, received_at, None).into_iter().collect();
    match event {
        CallbackEvent::ContactAdded { staff, external_userid, state, .. } => {
            let (store, channel) = state.as_deref().map(attribution).unwrap_or((None, None));
            contact(external_userid, "Contact Added", json!({"staff_userid": staff, "state": state, "store_id": store, "channel": channel, "source": "wecom"}))
        }
        CallbackEvent::ContactEdited { staff, external_userid } => contact(external_userid, "Contact Edited", json!({"staff_userid": staff})),
        CallbackEvent::ContactDeletedByCustomer { staff, external_userid } => {
            contact(external_userid, "Contact Deleted", json!({"staff_userid": staff, "initiator": "customer"}))
        }
        CallbackEvent::ContactDeletedByStaff { staff, external_userid } => {
            contact(external_userid, "Contact Deleted", json!({"staff_userid": staff, "initiator": "staff"}))
        }
        CallbackEvent::ContactHandedOver { staff, external_userid } => {
            contact(external_userid, "Contact Handed Over", json!({"staff_userid": staff, "reason": "transfer", "source": "wecom"}))
        }
        CallbackEvent::TransferFailed { staff, external_userid, reason } => {
            contact(external_userid, "Transfer Failed", json!({"staff_userid": staff, "reason": reason}))
        }
        CallbackEvent::Group { chat_id, change, update_detail, join_scene, quit_scene, members, .. } if change == "update" => {
            let (name, props) = match update_detail.as_deref() {
                Some("add_member") => ("Group Joined", json!({"chat_id": chat_id, "join_scene": join_scene, "source": "wecom"})),
                Some("del_member") => ("Group Left", json!({"chat_id": chat_id, "quit_scene": quit_scene, "source": "wecom"})),
                _ => return Vec::new(),
            };
            members.iter().filter(|m| is_customer(m)).filter_map(|m| track(fields, m, name, props.clone(), received_at, Some(m))).collect()
        }
        CallbackEvent::Group { .. } | CallbackEvent::Tag { .. } | CallbackEvent::Other { .. } => Vec::new(),
    }
}
