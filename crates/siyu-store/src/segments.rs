//! Segment definitions and their last reported members.

use serde::Serialize;
use siyu_core::Timestamp;
use utoipa::ToSchema;

use crate::sql::Db;
use crate::{StoreError, params};

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct StoredSegment {
    pub name: String,
    pub description: String,
    /// The rule in its JSON form (`null` when what is stored cannot be read).
    #[schema(value_type = Object)]
    pub rule: serde_json::Value,
    /// Why the stored rule cannot be read, if it cannot: such a segment is listed
    /// (so an operator can see and replace it) but has no members.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broken: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// One unreadable rule must not hide the others (or stop the server from starting):
/// it is returned with what is wrong with it.
fn row(r: &crate::Row) -> Result<StoredSegment, StoreError> {
    let (rule, broken) = match serde_json::from_str(&r.text(2)?) {
        Ok(rule) => (rule, None),
        Err(e) => (serde_json::Value::Null, Some(format!("the stored rule cannot be read: {e}"))),
    };
    Ok(StoredSegment { name: r.text(0)?, description: r.text(1)?, rule, broken, created_at: Timestamp(r.int(3)?), updated_at: Timestamp(r.int(4)?) })
}

pub async fn list(db: &mut dyn Db) -> Result<Vec<StoredSegment>, StoreError> {
    db.query("SELECT name, description, rule, created_at, updated_at FROM segments ORDER BY name", &[]).await?.iter().map(row).collect()
}

pub async fn get(db: &mut dyn Db, name: &str) -> Result<Option<StoredSegment>, StoreError> {
    db.query_opt("SELECT name, description, rule, created_at, updated_at FROM segments WHERE name = $1", params![name]).await?.as_ref().map(row).transpose()
}

/// Creates or replaces; returns whether it was new.
pub async fn put(db: &mut dyn Db, name: &str, description: &str, rule: &serde_json::Value, at: Timestamp) -> Result<bool, StoreError> {
    let text = rule.to_string();
    let existed = get(db, name).await?.is_some();
    db.execute(
        "INSERT INTO segments (name, description, rule, created_at, updated_at) VALUES ($1, $2, $3, $4, $4)
         ON CONFLICT (name) DO UPDATE SET description = excluded.description, rule = excluded.rule, updated_at = excluded.updated_at",
        params![name, description, &text, at.0],
    )
    .await?;
    Ok(!existed)
}

pub async fn delete(db: &mut dyn Db, name: &str) -> Result<bool, StoreError> {
    Ok(db.execute("DELETE FROM segments WHERE name = $1", params![name]).await? > 0)
}

/// A segment's members as reported in `Segment Entered`/`Exited` events, saved now and
/// then; with the membership events stored after `hwm` (an event id), it says exactly
/// what has been reported, so a restart reports what changed and nothing twice.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportedMembers {
    pub segment: String,
    /// The rule's text form: a segment whose rule changed starts afresh.
    pub rule: String,
    /// A serialized bitmap of profile ids.
    pub members: String,
    pub hwm: i64,
}

pub async fn reported_members(db: &mut dyn Db) -> Result<Vec<ReportedMembers>, StoreError> {
    db.query("SELECT name, rule, members, hwm FROM segment_snapshots ORDER BY name", &[])
        .await?
        .iter()
        .map(|r| Ok(ReportedMembers { segment: r.text(0)?, rule: r.text(1)?, members: r.text(2)?, hwm: r.int(3)? }))
        .collect()
}

/// Replaces every saved report in one transaction (the caller's).
pub async fn save_reported_members(db: &mut dyn Db, all: &[ReportedMembers], at: Timestamp) -> Result<(), StoreError> {
    db.execute("DELETE FROM segment_snapshots", &[]).await?;
    for r in all {
        db.execute(
            "INSERT INTO segment_snapshots (name, version, members, taken_at, rule, hwm) VALUES ($1, 0, $2, $3, $4, $5)",
            params![&r.segment, &r.members, at.0, &r.rule, r.hwm],
        )
        .await?;
    }
    Ok(())
}

/// `Segment Entered` / `Segment Exited` events stored after event id `after`, in
/// order: (event id, profile, entered, segment).
pub async fn membership_events_after(db: &mut dyn Db, after: i64, limit: i64) -> Result<Vec<(i64, siyu_core::ProfileId, bool, String)>, StoreError> {
    db.query(
        "SELECT id, profile_id, name, payload FROM events WHERE id > $1 AND name IN ('Segment Entered', 'Segment Exited') ORDER BY id LIMIT $2",
        params![after, limit],
    )
    .await?
    .iter()
    .map(|r| {
        let payload: serde_json::Value = serde_json::from_str(&r.text(3)?).unwrap_or_default();
        Ok((r.int(0)?, r.profile(1)?, r.text(2)? == "Segment Entered", payload["segment"].as_str().unwrap_or_default().to_string()))
    })
    .collect()
}
