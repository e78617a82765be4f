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
    /// The rule in its JSON form.
    #[schema(value_type = Object)]
    pub rule: serde_json::Value,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

fn row(r: &crate::Row) -> Result<StoredSegment, StoreError> {
    Ok(StoredSegment {
        name: r.text(0)?,
        description: r.text(1)?,
        rule: serde_json::from_str(&r.text(2)?).map_err(|e| StoreError::Decode(format!("segment rule: {e}")))?,
        created_at: Timestamp(r.int(3)?),
        updated_at: Timestamp(r.int(4)?),
    })
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
    db.execute("DELETE FROM segment_snapshots WHERE name = $1", params![name]).await?;
    Ok(db.execute("DELETE FROM segments WHERE name = $1", params![name]).await? > 0)
}

/// The members last reported for a segment (a serialized bitmap) and their version.
pub async fn snapshot(db: &mut dyn Db, name: &str) -> Result<Option<(i64, String)>, StoreError> {
    db.query_opt("SELECT version, members FROM segment_snapshots WHERE name = $1", params![name]).await?.map(|r| Ok((r.int(0)?, r.text(1)?))).transpose()
}

pub async fn save_snapshot(db: &mut dyn Db, name: &str, version: i64, members: &str, at: Timestamp) -> Result<(), StoreError> {
    db.execute(
        "INSERT INTO segment_snapshots (name, version, members, taken_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (name) DO UPDATE SET version = excluded.version, members = excluded.members, taken_at = excluded.taken_at",
        params![name, version, members, at.0],
    )
    .await?;
    Ok(())
}
