//! Applying one validated message to the store: dedup by messageId, identity
//! resolution, the event itself, traits (latest timestamp wins), guide relationships.

use std::collections::HashSet;
use std::sync::OnceLock;

use serde_json::{Map, Value as Json};
use siyu_core::{Identity, Message, MessageKind, ProfileId, Timestamp};

use crate::resolve::{IdentityCache, Resolution, resolve};
use crate::sql::{Backend, Db, Param};
use crate::{StoreError, params};

/// What happened to one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// `None` when nothing was stored: a duplicate (its `messageId` was seen before)
    /// or a failure.
    pub profile_id: Option<ProfileId>,
    pub created: bool,
    pub merged: Vec<ProfileId>,
    /// Identities the message newly gave the profile (whoever mirrors identity
    /// resolution learns exactly where each now leads).
    pub attached: Vec<Identity>,
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
    Ok(apply_all(db, std::slice::from_ref(&msg), None).await?.remove(0))
}

/// Stores many messages in the open transaction, in order: the same result as
/// [`apply`] on each in turn, with the two statements every message runs (its
/// `messageId` and its event row) sent as multi-row statements of 100 rows, which
/// spares the indexer two statement executions per message.
pub async fn apply_all(db: &mut dyn Db, msgs: &[&Message], mut cache: Option<&mut IdentityCache>) -> Result<Vec<Outcome>, StoreError> {
    let fresh = first_sightings(db, msgs).await?;
    let mut outcomes = Vec::with_capacity(msgs.len());
    // Event rows wait for one multi-row insert; a merge later in the batch re-points them.
    let mut rows: Vec<(ProfileId, &Message)> = Vec::with_capacity(msgs.len());
    for (&msg, fresh) in msgs.iter().zip(fresh) {
        if !fresh {
            outcomes.push(Outcome { profile_id: None, created: false, merged: Vec::new(), attached: Vec::new(), failed: false });
            continue;
        }
        let Resolution { profile_id, created, merged, attached } = resolve(db, msg, cache.as_deref_mut()).await?;
        if !merged.is_empty() {
            for (p, _) in rows.iter_mut().filter(|(p, _)| merged.contains(p)) {
                *p = profile_id;
            }
        }
        rows.push((profile_id, msg));
        for (key, value) in &msg.traits {
            set_trait(db, profile_id, key, value, msg.timestamp).await?;
        }
        if msg.kind == MessageKind::Track {
            apply_relationship(db, profile_id, msg).await?;
        }
        outcomes.push(Outcome { profile_id: Some(profile_id), created, merged, attached, failed: false });
    }
    insert_events(db, &rows).await?;
    Ok(outcomes)
}

/// Rows per multi-row statement: 100 × 10 parameters stays far inside both backends'
/// parameter limits.
const ROWS_PER_STATEMENT: usize = 100;

/// `($1, $2), ($3, $4), …`: `rows` groups of `width` placeholders.
fn placeholders(rows: usize, width: usize) -> String {
    (0..rows).map(|r| format!("({})", (1..=width).map(|c| format!("${}", r * width + c)).collect::<Vec<_>>().join(", "))).collect::<Vec<_>>().join(", ")
}

/// A statement's text for SQLite and for PostgreSQL, each built on first use.
type PerBackend = [OnceLock<String>; 2];

/// A multi-row `INSERT`, built once per backend. On SQLite it is `INSERT OR FAIL`: a
/// failing row then leaves the rows before it in place instead of undoing the whole
/// statement, which spares SQLite a statement journal (a copy of every page the
/// statement touches). The indexer rolls back the whole transaction on any error, so
/// nothing half-applied stays.
fn statement(cells: &'static PerBackend, backend: Backend, head: &str, rows: usize, width: usize, tail: &str) -> &'static str {
    cells[backend as usize].get_or_init(|| {
        let head = match backend {
            Backend::Sqlite => head.replacen("INSERT INTO", "INSERT OR FAIL INTO", 1),
            Backend::Postgres => head.to_string(),
        };
        format!("{head} VALUES {} {tail}", placeholders(rows, width))
    })
}

/// Records each `messageId`; per message, whether this is its first sighting (a
/// retried message, or one repeated inside the batch, is not).
async fn first_sightings(db: &mut dyn Db, msgs: &[&Message]) -> Result<Vec<bool>, StoreError> {
    const HEAD: &str = "INSERT INTO message_ids (message_id, received_at)";
    const TAIL: &str = "ON CONFLICT (message_id) DO NOTHING RETURNING message_id";
    static MANY: PerBackend = [OnceLock::new(), OnceLock::new()];
    static ONE: PerBackend = [OnceLock::new(), OnceLock::new()];
    // Ids the store had not seen: the first message carrying each is the fresh one.
    let mut new_ids: HashSet<String> = HashSet::with_capacity(msgs.len());
    let mut chunks = msgs.chunks_exact(ROWS_PER_STATEMENT);
    for chunk in chunks.by_ref() {
        let params: Vec<Param> = chunk.iter().flat_map(|m| [Param::from(&m.message_id), Param::from(m.received_at.0)]).collect();
        for row in db.query(statement(&MANY, db.backend(), HEAD, ROWS_PER_STATEMENT, 2, TAIL), &params).await? {
            new_ids.insert(row.text(0)?);
        }
    }
    for m in chunks.remainder() {
        if db.query_opt(statement(&ONE, db.backend(), HEAD, 1, 2, TAIL), params![&m.message_id, m.received_at.0]).await?.is_some() {
            new_ids.insert(m.message_id.clone());
        }
    }
    Ok(msgs.iter().map(|m| new_ids.remove(&m.message_id)).collect())
}

async fn insert_events(db: &mut dyn Db, rows: &[(ProfileId, &Message)]) -> Result<(), StoreError> {
    const HEAD: &str = "INSERT INTO events (profile_id, message_id, kind, name, ts, received_at, user_id, anonymous_id, payload, context)";
    static MANY: PerBackend = [OnceLock::new(), OnceLock::new()];
    static ONE: PerBackend = [OnceLock::new(), OnceLock::new()];
    let mut chunks = rows.chunks_exact(ROWS_PER_STATEMENT);
    for chunk in chunks.by_ref() {
        let params: Vec<Param> = chunk.iter().flat_map(|(p, m)| event_params(*p, m)).collect();
        db.execute(statement(&MANY, db.backend(), HEAD, ROWS_PER_STATEMENT, 10, ""), &params).await?;
    }
    for (p, m) in chunks.remainder() {
        db.execute(statement(&ONE, db.backend(), HEAD, 1, 10, ""), &event_params(*p, m)).await?;
    }
    Ok(())
}

fn event_params(profile: ProfileId, msg: &Message) -> [Param<'_>; 10] {
    [
        Param::from(profile),
        Param::from(&msg.message_id),
        Param::from(msg.kind.as_str()),
        Param::from(&msg.event),
        Param::from(msg.timestamp.0),
        Param::from(msg.received_at.0),
        Param::from(&msg.user_id),
        Param::from(&msg.anonymous_id),
        Param::from(&msg.payload),
        Param::from(&msg.context),
    ]
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

/// The events `Message::changes_guides` names (the engine re-reads guides after them).
/// `Contact Added` / `Contact Deleted` keep the guide–customer relationships current.
/// The guide is `properties.staff_userid` (or `userid`), as WeCom callbacks name them.
/// `Contact Transferred` (a completed WeCom transfer) moves the relationship from
/// `properties.handover_userid` to `staff_userid`, keeping the channel it came from.
/// `Contact Handed Over` (WeCom's `del_external_contact` for a transfer) ends the
/// relationship with `staff_userid` as transferred: the customer did not block anyone.
async fn apply_relationship(db: &mut dyn Db, profile: ProfileId, msg: &Message) -> Result<(), StoreError> {
    let (adds, ended) = match msg.event.as_deref() {
        Some("Contact Added") => (true, ""),
        Some("Contact Deleted") => (false, "deleted"),
        Some("Contact Handed Over") => (false, "transferred"),
        Some("Contact Transferred") => return apply_transfer(db, profile, msg).await,
        _ => return Ok(()),
    };
    let props: Map<String, Json> = serde_json::from_str(&msg.payload).unwrap_or_default();
    let staff = ["staff_userid", "userid", "staff_id"].iter().find_map(|k| props.get(*k).and_then(Json::as_str));
    let Some(staff) = staff else { return Ok(()) };
    // Relationship state follows event time, like traits: an add older than what the
    // row already knows (an earlier add, or a later removal) changes nothing, and a
    // removal that arrives before its add leaves a removed row the add cannot revive.
    if adds {
        let state = props.get("state").and_then(Json::as_str);
        db.execute(
            "INSERT INTO staff_customers (profile_id, staff_userid, status, added_at, removed_at, state)
             VALUES ($1, $2, 'active', $3, NULL, $4)
             ON CONFLICT (profile_id, staff_userid) DO UPDATE
                SET status = 'active', added_at = excluded.added_at, removed_at = NULL,
                    state = COALESCE(excluded.state, staff_customers.state)
              WHERE excluded.added_at >= staff_customers.added_at
                AND (staff_customers.removed_at IS NULL OR excluded.added_at > staff_customers.removed_at)",
            params![profile, staff, msg.timestamp.0, state],
        )
        .await?;
    } else {
        db.execute(
            "INSERT INTO staff_customers (profile_id, staff_userid, status, added_at, removed_at, state)
             VALUES ($1, $2, $4, $3, $3, NULL)
             ON CONFLICT (profile_id, staff_userid) DO UPDATE
                SET status = excluded.status, removed_at = excluded.removed_at
              WHERE staff_customers.added_at <= excluded.removed_at
                AND (staff_customers.removed_at IS NULL OR staff_customers.removed_at <= excluded.removed_at)",
            params![profile, staff, msg.timestamp.0, ended],
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
          WHERE excluded.added_at >= staff_customers.added_at
            AND (staff_customers.removed_at IS NULL OR excluded.added_at > staff_customers.removed_at)",
        params![profile, to, msg.timestamp.0, from],
    )
    .await?;
    db.execute(
        "UPDATE staff_customers SET status = 'transferred', removed_at = $3
          WHERE profile_id = $1 AND staff_userid = $2 AND added_at <= $3
            AND (removed_at IS NULL OR removed_at <= $3)",
        params![profile, from, msg.timestamp.0],
    )
    .await?;
    Ok(())
}
