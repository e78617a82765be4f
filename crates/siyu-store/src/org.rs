//! Stores, staff and the guide–customer relationships.

use serde::Serialize;
use siyu_core::org::{Staff, StaffRole, Store as StoreInfo};
use siyu_core::{ProfileId, Timestamp};
use utoipa::ToSchema;

use crate::sql::{Db, Row};
use crate::{StoreError, params};

pub async fn upsert_store(db: &mut dyn Db, s: &StoreInfo, at: Timestamp) -> Result<(), StoreError> {
    db.execute(
        "INSERT INTO stores (id, name, city, time_zone, updated_at) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (id) DO UPDATE SET name = excluded.name, city = excluded.city,
             time_zone = excluded.time_zone, updated_at = excluded.updated_at",
        params![&s.id, &s.name, &s.city, &s.time_zone, at.0],
    )
    .await?;
    Ok(())
}

pub async fn upsert_staff(db: &mut dyn Db, s: &Staff, at: Timestamp) -> Result<(), StoreError> {
    db.execute(
        "INSERT INTO staff (userid, name, store_id, role, customer_cap, updated_at) VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (userid) DO UPDATE SET name = excluded.name, store_id = excluded.store_id,
             role = excluded.role, customer_cap = excluded.customer_cap, updated_at = excluded.updated_at",
        params![&s.userid, &s.name, &s.store_id, s.role.as_str(), s.customer_cap, at.0],
    )
    .await?;
    Ok(())
}

/// A store with how many guides and active customers it has.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StoreSummary {
    #[serde(flatten)]
    #[schema(inline)]
    pub store: StoreView,
    pub staff: i64,
    pub customers: i64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StoreView {
    pub id: String,
    pub name: String,
    pub city: String,
    pub time_zone: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StaffView {
    pub userid: String,
    pub name: String,
    pub store_id: Option<String>,
    /// guide, store_manager or operator.
    pub role: StaffRole,
    pub customer_cap: i64,
    /// Customers who currently have this guide as a WeCom contact.
    pub active_customers: i64,
}

fn store_view(r: &Row) -> Result<StoreView, StoreError> {
    Ok(StoreView { id: r.text(0)?, name: r.text(1)?, city: r.text(2)?, time_zone: r.text(3)? })
}

pub async fn get_store(db: &mut dyn Db, id: &str) -> Result<Option<StoreView>, StoreError> {
    db.query_opt("SELECT id, name, city, time_zone FROM stores WHERE id = $1", params![id]).await?.as_ref().map(store_view).transpose()
}

/// Stores, optionally of one city, with their staff and active-customer counts.
pub async fn list_stores(db: &mut dyn Db, city: Option<&str>) -> Result<Vec<StoreSummary>, StoreError> {
    let rows = db
        .query(
            "SELECT st.id, st.name, st.city, st.time_zone,
                    (SELECT COUNT(*) FROM staff s WHERE s.store_id = st.id),
                    (SELECT COUNT(DISTINCT sc.profile_id) FROM staff s
                       JOIN staff_customers sc ON sc.staff_userid = s.userid AND sc.status = 'active'
                      WHERE s.store_id = st.id)
               FROM stores st
              WHERE ($1 IS NULL OR st.city = $1)
              ORDER BY st.id",
            params![city],
        )
        .await?;
    rows.iter().map(|r| Ok(StoreSummary { store: store_view(r)?, staff: r.int(4)?, customers: r.int(5)? })).collect()
}

const STAFF_COLUMNS: &str = "s.userid, s.name, s.store_id, s.role, s.customer_cap,
    (SELECT COUNT(*) FROM staff_customers sc WHERE sc.staff_userid = s.userid AND sc.status = 'active')";

/// A stored role as the enum; an unknown one is an error, never a guess at access.
fn staff_role(s: &str) -> Result<StaffRole, StoreError> {
    StaffRole::parse(s).ok_or_else(|| StoreError::Decode(format!("unknown staff role {s:?}")))
}

fn staff_view(r: &Row) -> Result<StaffView, StoreError> {
    Ok(StaffView {
        userid: r.text(0)?,
        name: r.text(1)?,
        store_id: r.opt_text(2)?,
        role: staff_role(&r.text(3)?)?,
        customer_cap: r.int(4)?,
        active_customers: r.int(5)?,
    })
}

pub async fn get_staff(db: &mut dyn Db, userid: &str) -> Result<Option<StaffView>, StoreError> {
    db.query_opt(&format!("SELECT {STAFF_COLUMNS} FROM staff s WHERE s.userid = $1"), params![userid]).await?.as_ref().map(staff_view).transpose()
}

pub async fn list_staff(db: &mut dyn Db, store_id: Option<&str>) -> Result<Vec<StaffView>, StoreError> {
    db.query(&format!("SELECT {STAFF_COLUMNS} FROM staff s WHERE ($1 IS NULL OR s.store_id = $1) ORDER BY s.userid"), params![store_id])
        .await?
        .iter()
        .map(staff_view)
        .collect()
}

/// One customer of a guide, as the guide's list shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StaffCustomer {
    pub profile_id: ProfileId,
    pub status: String,
    pub added_at: Timestamp,
    pub state: Option<String>,
}

/// A guide's customers (active ones unless `include_deleted`), oldest first, paged by
/// profile id.
pub async fn staff_customers(
    db: &mut dyn Db,
    userid: &str,
    include_deleted: bool,
    after: Option<ProfileId>,
    limit: i64,
) -> Result<Vec<StaffCustomer>, StoreError> {
    db.query(
        "SELECT profile_id, status, added_at, state FROM staff_customers
          WHERE staff_userid = $1 AND ($2 = 1 OR status = 'active') AND profile_id > $3
          ORDER BY profile_id LIMIT $4",
        params![userid, i64::from(include_deleted), after.unwrap_or_default(), limit],
    )
    .await?
    .iter()
    .map(|r| Ok(StaffCustomer { profile_id: r.profile(0)?, status: r.text(1)?, added_at: Timestamp(r.int(2)?), state: r.opt_text(3)? }))
    .collect()
}

/// Records that a guide added a customer (imports and WeCom sync use this; tracked
/// `Contact Added` events do the same through ingest).
pub async fn link_customer(db: &mut dyn Db, profile: ProfileId, staff_userid: &str, added_at: Timestamp, state: Option<&str>) -> Result<(), StoreError> {
    db.execute(
        "INSERT INTO staff_customers (profile_id, staff_userid, status, added_at, removed_at, state)
         VALUES ($1, $2, 'active', $3, NULL, $4)
         ON CONFLICT (profile_id, staff_userid) DO UPDATE SET status = 'active', removed_at = NULL,
             state = COALESCE(excluded.state, staff_customers.state)",
        params![profile, staff_userid, added_at.0, state],
    )
    .await?;
    Ok(())
}

pub fn parse_role(s: &str) -> Result<StaffRole, StoreError> {
    StaffRole::parse(s).ok_or_else(|| StoreError::Invalid(format!("role {s:?} is not guide, store_manager or operator")))
}

/// Whether a member of staff may see a customer: a guide their own active customers,
/// a store manager those of any guide in their store, an HQ operator everyone.
pub async fn can_see_customer(db: &mut dyn Db, userid: &str, profile: ProfileId) -> Result<bool, StoreError> {
    let Some(staff) = db.query_opt("SELECT role, store_id FROM staff WHERE userid = $1", params![userid]).await? else {
        return Ok(false);
    };
    let row = match parse_role(&staff.text(0)?)? {
        StaffRole::Operator => return Ok(true),
        StaffRole::Guide => {
            db.query_opt("SELECT 1 FROM staff_customers WHERE profile_id = $1 AND staff_userid = $2 AND status = 'active'", params![profile, userid]).await?
        }
        StaffRole::StoreManager => {
            let Some(store_id) = staff.opt_text(1)? else { return Ok(false) };
            db.query_opt(
                "SELECT 1 FROM staff_customers sc JOIN staff s ON s.userid = sc.staff_userid
                  WHERE sc.profile_id = $1 AND s.store_id = $2 AND sc.status = 'active' LIMIT 1",
                params![profile, &store_id],
            )
            .await?
        }
    };
    Ok(row.is_some())
}

/// Every store's time zone: quiet hours and "days" for its customers.
pub async fn store_zones(db: &mut dyn Db) -> Result<Vec<(String, String)>, StoreError> {
    db.query("SELECT id, time_zone FROM stores", &[]).await?.iter().map(|r| Ok((r.text(0)?, r.text(1)?))).collect()
}

/// A member of staff leaves: their record and every token they held go, at once (their
/// customer relationships stay, as WeCom's do until they are handed over).
pub async fn remove_staff(db: &mut dyn Db, userid: &str) -> Result<bool, StoreError> {
    let removed = db.execute("DELETE FROM staff WHERE userid = $1", params![userid]).await? > 0;
    crate::admin::revoke_staff_tokens(db, userid).await?;
    Ok(removed)
}
