//! WeCom records: contact ways (live QR codes) and the mass messages deliveries went in.

use serde::Serialize;
use siyu_core::Timestamp;
use utoipa::ToSchema;

use crate::outreach::DeliveryRow;
use crate::sql::{int_list, Db, Row};
use crate::{params, StoreError};

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ContactWay {
    pub config_id: String,
    /// Comes back on the add callback: `STORE-channel`.
    pub state: String,
    pub store_id: Option<String>,
    pub guide: String,
    /// poster, table_card, parcel_insert, official_account …
    pub channel: String,
    /// Tags given to customers who add through it.
    pub tags: Vec<String>,
    /// The welcome message (a template), if any.
    pub welcome: Option<String>,
    pub qr_code: String,
    pub created_at: Timestamp,
}

fn way(r: &Row) -> Result<ContactWay, StoreError> {
    Ok(ContactWay {
        config_id: r.text(0)?,
        state: r.text(1)?,
        store_id: r.opt_text(2)?,
        guide: r.text(3)?,
        channel: r.text(4)?,
        tags: serde_json::from_str(&r.text(5)?).unwrap_or_default(),
        welcome: r.opt_text(6)?,
        qr_code: r.text(7)?,
        created_at: Timestamp(r.int(8)?),
    })
}

const COLUMNS: &str = "config_id, state, store_id, guide, channel, tags, welcome, qr_code, created_at";

pub async fn add_contact_way(db: &mut dyn Db, w: &ContactWay) -> Result<(), StoreError> {
    let tags = serde_json::to_string(&w.tags).expect("strings serialize");
    db.execute(
        &format!("INSERT INTO contact_ways ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"),
        params![&w.config_id, &w.state, &w.store_id, &w.guide, &w.channel, &tags, &w.welcome, &w.qr_code, w.created_at.0],
    )
    .await?;
    Ok(())
}

pub async fn contact_way_by_state(db: &mut dyn Db, state: &str) -> Result<Option<ContactWay>, StoreError> {
    db.query_opt(&format!("SELECT {COLUMNS} FROM contact_ways WHERE state = $1"), params![state]).await?.as_ref().map(way).transpose()
}

pub async fn contact_ways(db: &mut dyn Db) -> Result<Vec<ContactWay>, StoreError> {
    db.query(&format!("SELECT {COLUMNS} FROM contact_ways ORDER BY created_at, config_id"), &[]).await?.iter().map(way).collect()
}

/// Per `state`: customers who added through it, and how many of them later removed the guide.
pub async fn contact_way_counts(db: &mut dyn Db) -> Result<Vec<(String, i64, i64)>, StoreError> {
    db.query(
        "SELECT w.state,
                COUNT(DISTINCT sc.profile_id),
                COUNT(DISTINCT CASE WHEN sc.status = 'deleted' THEN sc.profile_id END)
         FROM contact_ways w LEFT JOIN staff_customers sc ON sc.state = w.state AND sc.staff_userid = w.guide
         GROUP BY w.state ORDER BY w.state",
        &[],
    )
    .await?
    .iter()
    .map(|r| Ok((r.text(0)?, r.int(1)?, r.int(2)?)))
    .collect()
}

/// Confirmed WeCom touches not yet handed to WeCom, oldest first.
pub async fn confirmed_unsent(db: &mut dyn Db, limit: i64) -> Result<Vec<DeliveryRow>, StoreError> {
    let sql = format!(
        "SELECT {} FROM deliveries WHERE channel = 'wecom' AND status = 'confirmed' AND external_ref IS NULL AND kind = 'marketing' ORDER BY id LIMIT $1",
        crate::outreach::DELIVERY_COLUMNS
    );
    db.query(&sql, params![limit]).await?.iter().map(crate::outreach::delivery).collect()
}

/// Records the mass message (msgid) that carries these deliveries.
pub async fn set_external_ref(db: &mut dyn Db, ids: &[i64], msgid: &str) -> Result<(), StoreError> {
    for chunk in ids.chunks(500) {
        db.execute(&format!("UPDATE deliveries SET external_ref = $1 WHERE id IN ({})", int_list(chunk)), params![msgid]).await?;
    }
    Ok(())
}

/// Mass messages whose results are not in yet: (msgid, guide).
pub async fn pending_mass_messages(db: &mut dyn Db) -> Result<Vec<(String, String)>, StoreError> {
    db.query("SELECT DISTINCT external_ref, guide FROM deliveries WHERE channel = 'wecom' AND status = 'confirmed' AND external_ref IS NOT NULL", &[])
        .await?
        .iter()
        .map(|r| Ok((r.text(0)?, r.opt_text(1)?.unwrap_or_default())))
        .collect()
}

/// One customer's result of a mass message: `sent`, or `failed` with a reason.
pub async fn record_result(db: &mut dyn Db, msgid: &str, profile: i64, status: &str, reason: Option<&str>, at: Timestamp) -> Result<(), StoreError> {
    db.execute(
        "UPDATE deliveries SET status = $3, reason = $4, sent_at = $5 WHERE external_ref = $1 AND profile_id = $2 AND status = 'confirmed'",
        params![msgid, profile, status, reason, at.0],
    )
    .await?;
    Ok(())
}
