//! WeCom records: contact ways (live QR codes) and the mass messages deliveries went in.

use serde::Serialize;
use siyu_core::delivery::DeliveryStatus;
use siyu_core::{ProfileId, Timestamp};
use utoipa::ToSchema;

use crate::outreach::DeliveryRow;
use crate::sql::{Db, Row, int_list};
use crate::{StoreError, params};

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

/// Marks deliveries as about to be carried by a mass message, before `add_msg_template`
/// is called: `intent:<seconds>:<first id>`. If the answer is lost, the intent says
/// which mass message to look for before making it again.
pub async fn record_intent(db: &mut dyn Db, ids: &[i64], at_secs: i64) -> Result<String, StoreError> {
    let intent = format!("{INTENT}{at_secs}:{}", ids.first().copied().unwrap_or(0));
    set_external_ref(db, ids, &intent).await?;
    Ok(intent)
}

/// What marks a mass message Siyu asked for but has no answer about.
pub const INTENT: &str = "intent:";

/// Replaces a reference (an intent) with the msgid WeCom gave, or clears it (`None`) so
/// the deliveries are sent again.
pub async fn settle_intent(db: &mut dyn Db, intent: &str, msgid: Option<&str>) -> Result<u64, StoreError> {
    db.execute("UPDATE deliveries SET external_ref = $2 WHERE external_ref = $1 AND status = 'confirmed'", params![intent, msgid]).await
}

/// The deliveries of an intent fail with `reason` (WeCom refused the mass message, or
/// whether it was made cannot be known).
pub async fn fail_intent(db: &mut dyn Db, intent: &str, reason: &str) -> Result<u64, StoreError> {
    db.execute(
        "UPDATE deliveries SET status = 'failed', reason = $2, external_ref = NULL WHERE external_ref = $1 AND status = 'confirmed'",
        params![intent, reason],
    )
    .await
}

/// Intents without an answer: (intent, guide, content, profile ids).
pub async fn open_intents(db: &mut dyn Db) -> Result<Vec<(String, String, String, Vec<ProfileId>)>, StoreError> {
    let rows = db
        .query(
            "SELECT external_ref, guide, content, profile_id FROM deliveries
              WHERE channel = 'wecom' AND status = 'confirmed' AND external_ref LIKE 'intent:%' ORDER BY external_ref, id",
            &[],
        )
        .await?;
    let mut out: Vec<(String, String, String, Vec<ProfileId>)> = Vec::new();
    for r in rows {
        let intent = r.text(0)?;
        match out.last_mut() {
            Some(last) if last.0 == intent => last.3.push(r.profile(3)?),
            _ => out.push((intent, r.opt_text(1)?.unwrap_or_default(), r.opt_text(2)?.unwrap_or_default(), vec![r.profile(3)?])),
        }
    }
    Ok(out)
}

/// Whether some delivery already names this msgid.
pub async fn msgid_in_use(db: &mut dyn Db, msgid: &str) -> Result<bool, StoreError> {
    Ok(db.query_opt("SELECT 1 FROM deliveries WHERE external_ref = $1 LIMIT 1", params![msgid]).await?.is_some())
}

/// Mass messages whose results are not in yet: (msgid, guide).
pub async fn pending_mass_messages(db: &mut dyn Db) -> Result<Vec<(String, String)>, StoreError> {
    db.query(
        "SELECT DISTINCT external_ref, guide FROM deliveries
          WHERE channel = 'wecom' AND status = 'confirmed' AND external_ref IS NOT NULL AND external_ref NOT LIKE 'intent:%'",
        &[],
    )
    .await?
    .iter()
    .map(|r| Ok((r.text(0)?, r.opt_text(1)?.unwrap_or_default())))
    .collect()
}

/// One customer's result of a mass message: `sent`, or `failed` with a reason.
pub async fn record_result(
    db: &mut dyn Db,
    msgid: &str,
    profile: ProfileId,
    status: DeliveryStatus,
    reason: Option<&str>,
    at: Timestamp,
) -> Result<(), StoreError> {
    db.execute(
        "UPDATE deliveries SET status = $3, reason = $4, sent_at = $5 WHERE external_ref = $1 AND profile_id = $2 AND status = 'confirmed'",
        params![msgid, profile, status.as_str(), reason, at.0],
    )
    .await?;
    Ok(())
}

// ---------- customer transfers ----------

/// One customer in a transfer from one member of staff to another.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Transfer {
    pub id: i64,
    pub handover: String,
    pub takeover: String,
    pub profile_id: ProfileId,
    pub external_userid: String,
    /// A resigned guide's customers (离职继承) rather than an in-service transfer.
    pub resigned: bool,
    /// waiting · completed · refused (WeCom refused the request: see `errcode`) ·
    /// customer_refused · takeover_full · no_record
    pub status: String,
    pub errcode: Option<i64>,
    pub requested_at: Timestamp,
    pub settled_at: Option<Timestamp>,
}

const TRANSFER_COLUMNS: &str = "id, handover, takeover, profile_id, external_userid, resigned, status, errcode, requested_at, settled_at";

fn transfer(r: &Row) -> Result<Transfer, StoreError> {
    Ok(Transfer {
        id: r.int(0)?,
        handover: r.text(1)?,
        takeover: r.text(2)?,
        profile_id: r.profile(3)?,
        external_userid: r.text(4)?,
        resigned: r.int(5)? != 0,
        status: r.text(6)?,
        errcode: r.opt_int(7)?,
        requested_at: Timestamp(r.int(8)?),
        settled_at: r.opt_int(9)?.map(Timestamp),
    })
}

/// A guide's active customers who have a WeCom contact id: (profile, external_userid).
pub async fn transferable_customers(db: &mut dyn Db, guide: &str) -> Result<Vec<(i64, String)>, StoreError> {
    db.query(
        "SELECT sc.profile_id, i.value FROM staff_customers sc
           JOIN identities i ON i.profile_id = sc.profile_id AND i.kind = 'external_userid'
          WHERE sc.staff_userid = $1 AND sc.status = 'active'
          ORDER BY sc.profile_id",
        params![guide],
    )
    .await?
    .iter()
    .map(|r| Ok((r.int(0)?, r.text(1)?)))
    .collect()
}

/// A customer's transfers WeCom accepted since some time (waiting or completed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecentTransfers {
    /// WeCom allows two in 90 days.
    pub count: i64,
    /// One is still waiting for its takeover: WeCom refuses another (40129).
    pub waiting: bool,
}

/// [`RecentTransfers`] of each of these customers since `since`.
pub async fn recent_transfers(db: &mut dyn Db, profiles: &[i64], since: Timestamp) -> Result<std::collections::HashMap<i64, RecentTransfers>, StoreError> {
    let mut out = std::collections::HashMap::new();
    for chunk in profiles.chunks(500) {
        let sql = format!(
            "SELECT profile_id, COUNT(*), MAX(CASE WHEN status = 'waiting' THEN 1 ELSE 0 END) FROM transfers
              WHERE status IN ('waiting', 'completed') AND requested_at >= $1 AND profile_id IN ({}) GROUP BY profile_id",
            int_list(chunk)
        );
        for r in db.query(&sql, params![since.0]).await? {
            out.insert(r.int(0)?, RecentTransfers { count: r.int(1)?, waiting: r.int(2)? == 1 });
        }
    }
    Ok(out)
}

/// Records the answer to one transfer request, per customer: errcode 0 means WeCom
/// accepted it and the takeover is waiting.
pub async fn record_transfers(
    db: &mut dyn Db,
    handover: &str,
    takeover: &str,
    resigned: bool,
    answers: &[(i64, String, i64)],
    at: Timestamp,
) -> Result<(), StoreError> {
    for (profile, external, errcode) in answers {
        let status = if *errcode == 0 { "waiting" } else { "refused" };
        db.execute(
            "INSERT INTO transfers (handover, takeover, profile_id, external_userid, resigned, status, errcode, requested_at, settled_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            params![handover, takeover, *profile, external, i64::from(resigned), status, *errcode, at.0, (*errcode != 0).then_some(at.0)],
        )
        .await?;
    }
    Ok(())
}

pub async fn transfers(db: &mut dyn Db, handover: Option<&str>, limit: i64) -> Result<Vec<Transfer>, StoreError> {
    let rows = match handover {
        Some(h) => db.query(&format!("SELECT {TRANSFER_COLUMNS} FROM transfers WHERE handover = $1 ORDER BY id DESC LIMIT $2"), params![h, limit]).await?,
        None => db.query(&format!("SELECT {TRANSFER_COLUMNS} FROM transfers ORDER BY id DESC LIMIT $1"), params![limit]).await?,
    };
    rows.iter().map(transfer).collect()
}

/// Transfers WeCom has accepted and not yet settled.
pub async fn waiting_transfers(db: &mut dyn Db) -> Result<Vec<Transfer>, StoreError> {
    let sql = format!("SELECT {TRANSFER_COLUMNS} FROM transfers WHERE status = 'waiting' ORDER BY id");
    db.query(&sql, &[]).await?.iter().map(transfer).collect()
}

pub async fn settle_transfer(db: &mut dyn Db, id: i64, status: &str, at: Timestamp) -> Result<(), StoreError> {
    db.execute("UPDATE transfers SET status = $2, settled_at = $3 WHERE id = $1 AND status = 'waiting'", params![id, status, at.0]).await?;
    Ok(())
}

/// The customers Siyu knows to be in a customer group: those whose latest `Group
/// Joined` / `Group Left` event for it is a join. A dismissed group can no longer be
/// read from WeCom, so this is how its members are found. The `LIKE` narrows the group
/// events to those naming the chat id (both backends, no JSON functions); the payload
/// decides.
pub async fn group_members(db: &mut dyn Db, chat_id: &str) -> Result<Vec<ProfileId>, StoreError> {
    let rows = db
        .query(
            "SELECT profile_id, name, payload FROM events
             WHERE name IN ('Group Joined', 'Group Left') AND payload LIKE '%' || $1 || '%'
             ORDER BY ts, id",
            params![chat_id],
        )
        .await?;
    let mut joined = std::collections::BTreeSet::new();
    for r in rows {
        let payload: serde_json::Value = serde_json::from_str(&r.text(2)?).unwrap_or_default();
        if payload["chat_id"].as_str() != Some(chat_id) {
            continue;
        }
        if r.text(1)? == "Group Joined" {
            joined.insert(r.profile(0)?);
        } else {
            joined.remove(&r.profile(0)?);
        }
    }
    Ok(joined.into_iter().collect())
}
