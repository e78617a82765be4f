//! Running totals kept beside the data, so `stats` never counts millions of rows.

use crate::sql::Db;
use crate::{StoreError, params};

pub const PROFILES: &str = "profiles";
pub const EVENTS: &str = "events";
/// Profiles merged into others, ever: lets the indexer's identity cache notice
/// merges it did not make.
pub const MERGES: &str = "merges";
/// The last ingest-log sequence number applied to the store.
pub const INGEST_APPLIED_SEQ: &str = "ingest_applied_seq";

pub async fn set(db: &mut dyn Db, name: &str, value: i64) -> Result<(), StoreError> {
    db.execute("UPDATE counters SET value = $1 WHERE name = $2", params![value, name]).await?;
    Ok(())
}

pub async fn add(db: &mut dyn Db, name: &str, delta: i64) -> Result<(), StoreError> {
    if delta != 0 {
        db.execute(
            "INSERT INTO counters (name, value) VALUES ($2, $1) ON CONFLICT (name) DO UPDATE SET value = counters.value + excluded.value",
            params![delta, name],
        )
        .await?;
    }
    Ok(())
}

pub async fn get(db: &mut dyn Db, name: &str) -> Result<i64, StoreError> {
    Ok(db.query_opt("SELECT value FROM counters WHERE name = $1", params![name]).await?.map(|r| r.int(0)).transpose()?.unwrap_or(0))
}

/// Recounts from the tables (after a bulk load that bypassed the running totals).
pub async fn recount(db: &mut dyn Db) -> Result<(), StoreError> {
    db.execute("UPDATE counters SET value = (SELECT COUNT(*) FROM profiles WHERE merged_into IS NULL) WHERE name = $1", params![PROFILES]).await?;
    db.execute("UPDATE counters SET value = (SELECT COUNT(*) FROM events) WHERE name = $1", params![EVENTS]).await?;
    Ok(())
}
