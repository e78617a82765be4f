//! Applying one validated message to the store: dedup by messageId, identity
//! resolution, the event itself, traits (latest timestamp wins), guide relationships.

use serde_json::{Map, Value as Json};
use siyu_core::{IdentityKind, Message, MessageKind, ProfileId, Timestamp};

use crate::resolve::{resolve, IdentityCache, Resolution};
use crate::sql::Db;
use crate::{params, StoreError};

/// What happened to one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// `None` when nothing was stored: a duplicate (its `messageId` was seen before)
    /// or a failure.
    pub profile_id: Option<ProfileId>,
    pub created: bool,
    pub merged: Vec<ProfileId>,
    /// Kinds of identities the message newly gave the profile.
    pub attached: Vec<IdentityKind>,
    /// The store refused it; it is kept in `ingest_failures`.
    pub failed: bool,
}

impl Outcome {
    pub fn is_duplicate(&self) -> bool {
        self.profile_id.is_none() && !self.failed
    }
}

/// Stores one message in the open transaction.
pub async fn apply(db: &mut dyn Db, msg: &Message) -> Result<Outcome, StoreError> {
    apply_cached(db, msg, None).await
}

/// [`apply`], with the indexer's identity cache.
pub async fn apply_cached(db: &mut dyn Db, msg: &Message, cache: Option<&mut IdentityCache>) -> Result<Outcome, StoreError> {
    let fresh = db
        .execute(
            "INSERT INTO message_ids (message_id, received_at) VALUES ($1, $2) ON CONFLICT (message_id) DO NOTHING",
            params![&msg.message_id, msg.received_at.0],
        )
        .await?;
    if fresh == 0 {
        return Ok(Outcome { profile_id: None, created: false, merged: Vec::new(), attached: Vec::new(), failed: false });
    }
    let Resolution { profile_id, created, merged, attached } = resolve(db, msg, cache).await?;
    db.execute(
        "INSERT INTO events (profile_id, message_id, kind, name, ts, received_at, user_id, anonymous_id, payload, context)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        params![
            profile_id,
            &msg.message_id,
            msg.kind.as_str(),
            &msg.event,
            msg.timestamp.0,
            msg.received_at.0,
            &msg.user_id,
            &msg.anonymous_id,
            &msg.payload,
            &msg.context,
        ],
    )
    .await?;
    for (key, value) in &msg.traits {
        set_trait(db, profile_id, key, value, msg.timestamp).await?;
    }
    if msg.kind == MessageKind::Track {
        apply_relationship(db, profile_id, msg).await?;
    }
    Ok(Outcome { profile_id: Some(profile_id), created, merged, attached, failed: false })
}

/// Sets a trait unless a newer value is already stored: latest timestamp wins, whatever
/// order the events arrive in.
pub async fn set_trait(db: &mut dyn Db, profile: ProfileId, key: &str, value: &Json, ts: Timestamp) -> Result<(), StoreError> {
    let text = serde_json::to_string(value).unwrap_or_else(|_| "null".into());
    db.execute(
        "INSERT INTO traits (profile_id, key, value, updated_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (profile_id, key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at
         WHERE excluded.updated_at >= traits.updated_at",
        params![profile, key, &text, ts.0],
    )
    .await?;
    Ok(())
}

/// `Contact Added` / `Contact Deleted` keep the guide–customer relationships current.
/// The guide is `properties.staff_userid` (or `userid`), as WeCom callbacks name them.
/// `Contact Transferred` (a completed WeCom transfer) moves the relationship from
/// `properties.handover_userid` to `staff_userid`, keeping the channel it came from.
async fn apply_relationship(db: &mut dyn Db, profile: ProfileId, msg: &Message) -> Result<(), StoreError> {
    let adds = match msg.event.as_deref() {
        Some("Contact Added") => true,
        Some("Contact Deleted") => false,
        Some("Contact Transferred") => return apply_transfer(db, profile, msg).await,
        _ => return Ok(()),
    };
    let props: Map<String, Json> = serde_json::from_str(&msg.payload).unwrap_or_default();
    let staff = ["staff_userid", "userid", "staff_id"].iter().find_map(|k| props.get(*k).and_then(Json::as_str));
    let Some(staff) = staff else { return Ok(()) };
    if adds {
        let state = props.get("state").and_then(Json::as_str);
        db.execute(
            "INSERT INTO staff_customers (profile_id, staff_userid, status, added_at, removed_at, state)
             VALUES ($1, $2, 'active', $3, NULL, $4)
             ON CONFLICT (profile_id, staff_userid) DO UPDATE
                SET status = 'active', added_at = excluded.added_at, removed_at = NULL,
                    state = COALESCE(excluded.state, staff_customers.state)
              WHERE excluded.added_at >= staff_customers.added_at",
            params![profile, staff, msg.timestamp.0, state],
        )
        .await?;
    } else {
        db.execute(
            "UPDATE staff_customers SET status = 'deleted', removed_at = $3
              WHERE profile_id = $1 AND staff_userid = $2 AND added_at <= $3",
            params![profile, staff, msg.timestamp.0],
        )
        .await?;
    }
    Ok(())
}


async fn apply_transfer(db: &mut dyn Db, profile: ProfileId, msg: &Message) -> Result<(), StoreError> {
    let props: Map<String, Json> = serde_json::from_str(&msg.payload).unwrap_or_default();
    let (Some(from), Some(to)) = (props.get("handover_userid").and_then(Json::as_str), props.get("staff_userid").and_then(Json::as_str)) else { return Ok(()) };
    db.execute(
        "INSERT INTO staff_customers (profile_id, staff_userid, status, added_at, removed_at, state)
         VALUES ($1, $2, 'active', $3, NULL, (SELECT state FROM staff_customers WHERE profile_id = $1 AND staff_userid = $4))
         ON CONFLICT (profile_id, staff_userid) DO UPDATE
            SET status = 'active', added_at = excluded.added_at, removed_at = NULL
          WHERE excluded.added_at >= staff_customers.added_at",
        params![profile, to, msg.timestamp.0, from],
    )
    .await?;
    db.execute(
        "UPDATE staff_customers SET status = 'transferred', removed_at = $3
          WHERE profile_id = $1 AND staff_userid = $2 AND added_at <= $3",
        params![profile, from, msg.timestamp.0],
    )
    .await?;
    Ok(())
}
