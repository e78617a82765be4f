//! Outreach records: campaigns and their audit trail, deliveries, guide tasks,
//! journeys and each customer's position in them.

use serde::Serialize;
use siyu_core::campaign::Status as CampaignStatus;
use siyu_core::delivery::{DeliveryStatus, TouchKind};
use siyu_core::rule::Channel;
use siyu_core::{ProfileId, Timestamp};
use utoipa::ToSchema;

use crate::sql::{Db, Param, Row, int_list, text_list};
use crate::{StoreError, params};

// ---------- campaigns ----------

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CampaignRow {
    pub id: i64,
    pub name: String,
    /// The campaign's definition (see `CampaignSpec`).
    #[schema(value_type = Object)]
    pub spec: serde_json::Value,
    /// draft · scheduled · running · paused · completed
    pub status: CampaignStatus,
    /// Why it is in this status, when something other than a person put it there.
    pub status_reason: Option<String>,
    pub next_run_at: Option<Timestamp>,
    pub runs: i64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

const CAMPAIGN_COLUMNS: &str = "id, name, spec, status, status_reason, next_run_at, runs, created_at, updated_at";

fn json(text: String, what: &str) -> Result<serde_json::Value, StoreError> {
    serde_json::from_str(&text).map_err(|e| StoreError::Decode(format!("{what}: {e}")))
}

fn campaign(r: &Row) -> Result<CampaignRow, StoreError> {
    Ok(CampaignRow {
        id: r.int(0)?,
        name: r.text(1)?,
        spec: json(r.text(2)?, "campaign spec")?,
        status: campaign_status(&r.text(3)?)?,
        status_reason: r.opt_text(4)?,
        next_run_at: r.opt_int(5)?.map(Timestamp),
        runs: r.int(6)?,
        created_at: Timestamp(r.int(7)?),
        updated_at: Timestamp(r.int(8)?),
    })
}

pub async fn create_campaign(db: &mut dyn Db, name: &str, spec: &serde_json::Value, actor: &str, at: Timestamp) -> Result<i64, StoreError> {
    let text = spec.to_string();
    let id = db
        .query_one(
            "INSERT INTO campaigns (name, spec, status, runs, created_at, updated_at) VALUES ($1, $2, 'draft', 0, $3, $3) RETURNING id",
            params![name, &text, at.0],
        )
        .await?
        .int(0)?;
    audit(db, id, actor, "created", &text, at).await?;
    Ok(id)
}

pub async fn get_campaign(db: &mut dyn Db, id: i64) -> Result<Option<CampaignRow>, StoreError> {
    let sql = format!("SELECT {CAMPAIGN_COLUMNS} FROM campaigns WHERE id = $1");
    db.query_opt(&sql, params![id]).await?.as_ref().map(campaign).transpose()
}

pub async fn list_campaigns(db: &mut dyn Db) -> Result<Vec<CampaignRow>, StoreError> {
    let sql = format!("SELECT {CAMPAIGN_COLUMNS} FROM campaigns ORDER BY id");
    db.query(&sql, &[]).await?.iter().map(campaign).collect()
}

pub async fn update_spec(db: &mut dyn Db, id: i64, name: &str, spec: &serde_json::Value, actor: &str, at: Timestamp) -> Result<(), StoreError> {
    let text = spec.to_string();
    db.execute("UPDATE campaigns SET name = $2, spec = $3, updated_at = $4 WHERE id = $1", params![id, name, &text, at.0]).await?;
    audit(db, id, actor, "edited", &text, at).await
}

/// A status change, with who did it and why, in the audit trail.
pub struct StatusChange<'a> {
    pub status: CampaignStatus,
    pub reason: Option<&'a str>,
    pub next_run_at: Option<Timestamp>,
    pub actor: &'a str,
    pub action: &'a str,
}

pub async fn set_status(db: &mut dyn Db, id: i64, c: StatusChange<'_>, at: Timestamp) -> Result<(), StoreError> {
    db.execute(
        "UPDATE campaigns SET status = $2, status_reason = $3, next_run_at = $4, updated_at = $5 WHERE id = $1",
        params![id, c.status.as_str(), c.reason, c.next_run_at.map(|t| t.0), at.0],
    )
    .await?;
    audit(db, id, c.actor, c.action, c.reason.unwrap_or(""), at).await
}

pub async fn count_run(db: &mut dyn Db, id: i64) -> Result<i64, StoreError> {
    db.query_one("UPDATE campaigns SET runs = runs + 1 WHERE id = $1 RETURNING runs", params![id]).await?.int(0)
}

pub async fn save_snapshot(db: &mut dyn Db, id: i64, members: &str) -> Result<(), StoreError> {
    db.execute("UPDATE campaigns SET snapshot = $2 WHERE id = $1", params![id, members]).await?;
    Ok(())
}

pub async fn snapshot(db: &mut dyn Db, id: i64) -> Result<Option<String>, StoreError> {
    Ok(db.query_opt("SELECT snapshot FROM campaigns WHERE id = $1", params![id]).await?.and_then(|r| r.opt_text(0).ok().flatten()))
}

/// Scheduled campaigns whose run time has come.
pub async fn due_campaigns(db: &mut dyn Db, now: Timestamp) -> Result<Vec<CampaignRow>, StoreError> {
    let sql = format!("SELECT {CAMPAIGN_COLUMNS} FROM campaigns WHERE status = 'scheduled' AND next_run_at <= $1 ORDER BY next_run_at");
    db.query(&sql, params![now.0]).await?.iter().map(campaign).collect()
}

pub async fn campaigns_with_status(db: &mut dyn Db, status: CampaignStatus) -> Result<Vec<CampaignRow>, StoreError> {
    let sql = format!("SELECT {CAMPAIGN_COLUMNS} FROM campaigns WHERE status = $1 ORDER BY id");
    db.query(&sql, params![status.as_str()]).await?.iter().map(campaign).collect()
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AuditEntry {
    pub at: Timestamp,
    pub actor: String,
    pub action: String,
    pub detail: String,
}

pub async fn audit(db: &mut dyn Db, campaign: i64, actor: &str, action: &str, detail: &str, at: Timestamp) -> Result<(), StoreError> {
    db.execute(
        "INSERT INTO campaign_audit (campaign_id, at, actor, action, detail) VALUES ($1, $2, $3, $4, $5)",
        params![campaign, at.0, actor, action, detail],
    )
    .await?;
    Ok(())
}

pub async fn audit_trail(db: &mut dyn Db, campaign: i64) -> Result<Vec<AuditEntry>, StoreError> {
    db.query("SELECT at, actor, action, detail FROM campaign_audit WHERE campaign_id = $1 ORDER BY id", params![campaign])
        .await?
        .iter()
        .map(|r| Ok(AuditEntry { at: Timestamp(r.int(0)?), actor: r.text(1)?, action: r.text(2)?, detail: r.text(3)? }))
        .collect()
}

// ---------- deliveries ----------

/// A planned touch about to be recorded.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    pub key: String,
    pub profile_id: ProfileId,
    pub campaign_id: Option<i64>,
    pub journey_id: Option<i64>,
    pub channel: Channel,
    pub kind: TouchKind,
    /// `Queued`, `PendingStaff` or `Suppressed`.
    pub status: DeliveryStatus,
    pub reason: Option<String>,
    pub guide: Option<String>,
    pub task_id: Option<i64>,
    pub content: Option<String>,
    pub created_at: Timestamp,
    pub due_at: Timestamp,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeliveryRow {
    pub id: i64,
    /// The idempotency key: one touch per campaign run (or journey step) and customer.
    pub key: String,
    pub profile_id: ProfileId,
    pub campaign_id: Option<i64>,
    pub journey_id: Option<i64>,
    /// wecom · sms · email · official_account · webhook
    pub channel: Channel,
    pub kind: TouchKind,
    /// queued · pending_staff · sent · confirmed · skipped · expired · failed · suppressed
    pub status: DeliveryStatus,
    /// Why it was not sent (a policy reason code), or what went wrong.
    pub reason: Option<String>,
    pub guide: Option<String>,
    pub task_id: Option<i64>,
    pub content: Option<String>,
    pub created_at: Timestamp,
    /// When it goes (or went) out: later than `created_at` when quiet hours deferred it.
    pub due_at: Timestamp,
    pub sent_at: Option<Timestamp>,
}

pub const DELIVERY_COLUMNS: &str =
    "id, key, profile_id, campaign_id, journey_id, channel, kind, status, reason, guide, task_id, content, created_at, due_at, sent_at";

/// A stored channel as the enum; an unknown one is a decode error.
fn channel(s: &str) -> Result<Channel, StoreError> {
    Channel::parse(s).ok_or_else(|| StoreError::Decode(format!("unknown channel {s:?}")))
}

/// A stored campaign status as the enum; an unknown one is a decode error.
fn campaign_status(s: &str) -> Result<CampaignStatus, StoreError> {
    CampaignStatus::parse(s).ok_or_else(|| StoreError::Decode(format!("unknown campaign status {s:?}")))
}

/// A stored status as the enum; an unknown one means the database was written by
/// something else, which is an error rather than a guess.
fn delivery_status(s: &str) -> Result<DeliveryStatus, StoreError> {
    DeliveryStatus::parse(s).ok_or_else(|| StoreError::Decode(format!("unknown delivery status {s:?}")))
}

/// A stored touch kind as the enum; an unknown one is a decode error.
fn touch_kind(s: &str) -> Result<TouchKind, StoreError> {
    TouchKind::parse(s).ok_or_else(|| StoreError::Decode(format!("unknown touch kind {s:?}")))
}

pub fn delivery(r: &Row) -> Result<DeliveryRow, StoreError> {
    Ok(DeliveryRow {
        id: r.int(0)?,
        key: r.text(1)?,
        profile_id: r.profile(2)?,
        campaign_id: r.opt_int(3)?,
        journey_id: r.opt_int(4)?,
        channel: channel(&r.text(5)?)?,
        kind: touch_kind(&r.text(6)?)?,
        status: delivery_status(&r.text(7)?)?,
        reason: r.opt_text(8)?,
        guide: r.opt_text(9)?,
        task_id: r.opt_int(10)?,
        content: r.opt_text(11)?,
        created_at: Timestamp(r.int(12)?),
        due_at: Timestamp(r.int(13)?),
        sent_at: r.opt_int(14)?.map(Timestamp),
    })
}

/// Records planned touches; a key already recorded is left as it was (that is what
/// makes a re-run after a crash harmless). Returns how many were new.
pub async fn insert_deliveries(db: &mut dyn Db, rows: &[NewDelivery]) -> Result<u64, StoreError> {
    const COLS: usize = 14;
    let mut inserted = 0;
    // 290 rows × 14 columns stays under the 4,096 numbered parameters SQLite is given.
    for chunk in rows.chunks(290) {
        let mut sql = String::from(
            "INSERT INTO deliveries (key, profile_id, campaign_id, journey_id, channel, kind, status, reason, guide, task_id, content, created_at, due_at, sent_at) VALUES ",
        );
        let mut params: Vec<Param> = Vec::with_capacity(chunk.len() * COLS);
        for (i, d) in chunk.iter().enumerate() {
            if i > 0 {
                sql.push(',');
            }
            sql.push('(');
            for c in 0..COLS {
                if c > 0 {
                    sql.push(',');
                }
                sql.push_str(&format!("${}", i * COLS + c + 1));
            }
            sql.push(')');
            params.extend_from_slice(params![
                &d.key,
                d.profile_id,
                d.campaign_id,
                d.journey_id,
                d.channel.as_str(),
                d.kind.as_str(),
                d.status.as_str(),
                &d.reason,
                &d.guide,
                d.task_id,
                &d.content,
                d.created_at.0,
                d.due_at.0,
                // A touch recorded as already sent (a WeCom welcome) was sent as it was made.
                (d.status == DeliveryStatus::Sent).then_some(d.created_at.0)
            ]);
        }
        sql.push_str(" ON CONFLICT (key) DO NOTHING");
        inserted += db.execute(&sql, &params).await?;
    }
    Ok(inserted)
}

pub async fn deliveries_of_profile(db: &mut dyn Db, profile: ProfileId, limit: i64) -> Result<Vec<DeliveryRow>, StoreError> {
    let sql = format!("SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE profile_id = $1 ORDER BY id DESC LIMIT $2");
    db.query(&sql, params![profile, limit]).await?.iter().map(delivery).collect()
}

pub async fn deliveries_of_task(db: &mut dyn Db, task: i64) -> Result<Vec<DeliveryRow>, StoreError> {
    let sql = format!("SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE task_id = $1 ORDER BY id");
    db.query(&sql, params![task]).await?.iter().map(delivery).collect()
}

pub async fn deliveries_of_campaign(db: &mut dyn Db, campaign: i64, after_id: i64, limit: i64) -> Result<Vec<DeliveryRow>, StoreError> {
    let sql = format!("SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE campaign_id = $1 AND id > $2 ORDER BY id LIMIT $3");
    db.query(&sql, params![campaign, after_id, limit]).await?.iter().map(delivery).collect()
}

/// Queued touches whose time has come, for channels Siyu sends itself (not WeCom,
/// whose touches go through guide tasks).
pub async fn due_deliveries(db: &mut dyn Db, now: Timestamp, limit: i64) -> Result<Vec<DeliveryRow>, StoreError> {
    let sql = format!(
        "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE status = 'queued' AND due_at <= $1
           AND (campaign_id IS NULL OR campaign_id NOT IN (SELECT id FROM campaigns WHERE status = 'paused'))
         ORDER BY due_at, id LIMIT $2"
    );
    db.query(&sql, params![now.0, limit]).await?.iter().map(delivery).collect()
}

/// Settles deliveries: `sent` (reason cleared), `failed` with what went wrong.
pub async fn mark_deliveries(db: &mut dyn Db, ids: &[i64], status: DeliveryStatus, reason: Option<&str>, at: Timestamp) -> Result<(), StoreError> {
    for chunk in ids.chunks(500) {
        let sql = format!("UPDATE deliveries SET status = $1, reason = $2, sent_at = $3 WHERE id IN ({})", int_list(chunk));
        db.execute(&sql, params![status.as_str(), reason, at.0]).await?;
    }
    Ok(())
}

/// Touches stopped at send time, each with its policy reason; `sent_at` records when
/// they were stopped (a touch suppressed at planning has none, which is how lift tells
/// the two apart). Only rows still in `status` (queued, or confirmed by a guide) change.
/// Returns the ids that did.
pub async fn suppress_unsent(db: &mut dyn Db, status: DeliveryStatus, stopped: &[(i64, &str)], at: Timestamp) -> Result<Vec<i64>, StoreError> {
    let mut by_reason: std::collections::BTreeMap<&str, Vec<i64>> = std::collections::BTreeMap::new();
    for (id, reason) in stopped {
        by_reason.entry(*reason).or_default().push(*id);
    }
    let mut done = Vec::new();
    for (reason, ids) in by_reason {
        for chunk in ids.chunks(500) {
            let sql = format!(
                "UPDATE deliveries SET status = 'suppressed', reason = $1, sent_at = COALESCE(sent_at, $3) WHERE status = $2 AND id IN ({}) RETURNING id",
                int_list(chunk)
            );
            for r in db.query(&sql, params![reason, status.as_str(), at.0]).await? {
                done.push(r.int(0)?);
            }
        }
    }
    Ok(done)
}

/// Why queued touches are still waiting (e.g. `retrying_webhook`).
pub async fn note_waiting(db: &mut dyn Db, ids: &[i64], reason: &str) -> Result<(), StoreError> {
    for chunk in ids.chunks(500) {
        let sql = format!("UPDATE deliveries SET reason = $1 WHERE status = 'queued' AND id IN ({})", int_list(chunk));
        db.execute(&sql, params![reason]).await?;
    }
    Ok(())
}

/// Stores rendered content on deliveries that had none, before they are sent: a touch
/// sent again after a crash carries exactly the same words.
pub async fn save_contents(db: &mut dyn Db, contents: &[(i64, String)]) -> Result<(), StoreError> {
    for chunk in contents.chunks(500) {
        let mut sql = String::from("UPDATE deliveries SET content = CASE id");
        let mut values: Vec<Param> = Vec::with_capacity(chunk.len());
        for (i, (id, text)) in chunk.iter().enumerate() {
            sql.push_str(&format!(" WHEN {id} THEN ${}", i + 1));
            values.extend_from_slice(params![text]);
        }
        let ids: Vec<i64> = chunk.iter().map(|(id, _)| *id).collect();
        sql.push_str(&format!(" END WHERE content IS NULL AND id IN ({})", int_list(&ids)));
        db.execute(&sql, &values).await?;
    }
    Ok(())
}

/// Marketing touches that count against caps: planned or made, in the last `since`.
pub async fn ledger_rows(db: &mut dyn Db, since: Timestamp) -> Result<Vec<(ProfileId, Timestamp, String, Option<String>)>, StoreError> {
    db.query(
        "SELECT profile_id, due_at, channel, guide FROM deliveries
         WHERE kind = 'marketing' AND status IN ('queued', 'pending_staff', 'sent', 'confirmed') AND due_at >= $1",
        params![since.0],
    )
    .await?
    .iter()
    .map(|r| Ok((r.profile(0)?, Timestamp(r.int(1)?), r.text(2)?, r.opt_text(3)?)))
    .collect()
}

/// Deliveries of a campaign by status and by suppression reason.
pub async fn campaign_counts(db: &mut dyn Db, campaign: i64) -> Result<Vec<(String, Option<String>, i64)>, StoreError> {
    db.query("SELECT status, reason, COUNT(*) FROM deliveries WHERE campaign_id = $1 GROUP BY status, reason ORDER BY status, reason", params![campaign])
        .await?
        .iter()
        .map(|r| Ok((r.text(0)?, r.opt_text(1)?, r.int(2)?)))
        .collect()
}

/// Events of `names` carrying `properties.campaign_id = campaign`, counted by name.
pub async fn campaign_responses(db: &mut dyn Db, campaign: i64, names: &[&str]) -> Result<Vec<(String, i64)>, StoreError> {
    let key = format!("%\"campaign_id\":{campaign}%");
    let key_text = format!("%\"campaign_id\":\"{campaign}\"%");
    let sql = format!(
        "SELECT e.name, COUNT(DISTINCT e.profile_id) FROM events e
         WHERE e.name IN ({}) AND (e.payload LIKE $1 OR e.payload LIKE $2)
           AND e.profile_id IN (SELECT profile_id FROM deliveries WHERE campaign_id = $3)
         GROUP BY e.name",
        text_list(names)
    );
    db.query(&sql, params![&key, &key_text, campaign]).await?.iter().map(|r| Ok((r.text(0)?, r.int(1)?))).collect()
}

/// Customers who removed their guide within `window_days` after a touch of the campaign.
pub async fn campaign_blocks(db: &mut dyn Db, campaign: i64, window_days: i64) -> Result<i64, StoreError> {
    db.query_one(
        "SELECT COUNT(DISTINCT d.profile_id) FROM deliveries d
             JOIN events e ON e.profile_id = d.profile_id AND e.name = 'Contact Deleted'
             WHERE d.campaign_id = $1 AND d.status IN ('sent', 'confirmed')
               AND e.ts >= d.sent_at AND e.ts < d.sent_at + $2",
        params![campaign, window_days * 86_400_000],
    )
    .await?
    .int(0)
}

/// Of a campaign's sent and held-out customers, how many did `event` afterwards.
pub async fn campaign_conversions(db: &mut dyn Db, campaign: i64, event: &str) -> Result<(i64, i64, i64, i64), StoreError> {
    let r = db
        .query_one(
            "SELECT
               SUM(CASE WHEN g = 'sent' THEN 1 ELSE 0 END),
               SUM(CASE WHEN g = 'sent' AND converted THEN 1 ELSE 0 END),
               SUM(CASE WHEN g = 'holdout' THEN 1 ELSE 0 END),
               SUM(CASE WHEN g = 'holdout' AND converted THEN 1 ELSE 0 END)
             FROM (SELECT CASE WHEN d.reason = 'holdout' THEN 'holdout' ELSE 'sent' END AS g,
                          EXISTS (SELECT 1 FROM events e WHERE e.profile_id = d.profile_id AND e.name = $2 AND e.ts >= d.created_at) AS converted
                   FROM deliveries d
                   -- Intention to treat: everyone eligible when the run was planned
                   -- (consented, not in the cooldown) is in the sent group unless held
                   -- out, whether or not a cap, a guide, a gateway or a later
                   -- withdrawal (stopped at send time: sent_at is set) kept the touch back.
                   WHERE d.campaign_id = $1
                     AND NOT (d.status = 'suppressed' AND d.reason IN ('no_consent', 'block_cooldown', 'merged') AND d.sent_at IS NULL)) t",
            params![campaign, event],
        )
        .await?;
    Ok((r.opt_int(0)?.unwrap_or(0), r.opt_int(1)?.unwrap_or(0), r.opt_int(2)?.unwrap_or(0), r.opt_int(3)?.unwrap_or(0)))
}

// ---------- guide tasks ----------

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TaskRow {
    pub id: i64,
    pub campaign_id: Option<i64>,
    pub journey_id: Option<i64>,
    pub guide: String,
    pub store_id: Option<String>,
    pub title: String,
    /// open · done · expired
    pub status: String,
    pub deadline: Timestamp,
    pub reminded_at: Option<Timestamp>,
    pub created_at: Timestamp,
    pub completed_at: Option<Timestamp>,
}

const TASK_COLUMNS: &str = "id, campaign_id, journey_id, guide, store_id, title, status, deadline, reminded_at, created_at, completed_at";

fn task(r: &Row) -> Result<TaskRow, StoreError> {
    Ok(TaskRow {
        id: r.int(0)?,
        campaign_id: r.opt_int(1)?,
        journey_id: r.opt_int(2)?,
        guide: r.text(3)?,
        store_id: r.opt_text(4)?,
        title: r.text(5)?,
        status: r.text(6)?,
        deadline: Timestamp(r.int(7)?),
        reminded_at: r.opt_int(8)?.map(Timestamp),
        created_at: Timestamp(r.int(9)?),
        completed_at: r.opt_int(10)?.map(Timestamp),
    })
}

pub struct NewTask<'a> {
    pub campaign_id: Option<i64>,
    pub journey_id: Option<i64>,
    pub guide: &'a str,
    pub title: &'a str,
    pub deadline: Timestamp,
}

pub async fn create_task(db: &mut dyn Db, t: NewTask<'_>, at: Timestamp) -> Result<i64, StoreError> {
    db.query_one(
        "INSERT INTO tasks (campaign_id, journey_id, guide, store_id, title, status, deadline, created_at)
             VALUES ($1, $2, $3, (SELECT store_id FROM staff WHERE userid = $3), $4, 'open', $5, $6) RETURNING id",
        params![t.campaign_id, t.journey_id, t.guide, t.title, t.deadline.0, at.0],
    )
    .await?
    .int(0)
}

pub async fn get_task(db: &mut dyn Db, id: i64) -> Result<Option<TaskRow>, StoreError> {
    let sql = format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = $1");
    db.query_opt(&sql, params![id]).await?.as_ref().map(task).transpose()
}

/// Tasks of one guide, or of everyone (`None`), newest first.
pub async fn list_tasks(db: &mut dyn Db, guide: Option<&str>, store: Option<&str>, limit: i64) -> Result<Vec<TaskRow>, StoreError> {
    let sql = format!("SELECT {TASK_COLUMNS} FROM tasks WHERE ($1 IS NULL OR guide = $1) AND ($2 IS NULL OR store_id = $2) ORDER BY id DESC LIMIT $3");
    db.query(&sql, params![guide, store, limit]).await?.iter().map(task).collect()
}

/// A guide confirms (sent it) or skips one customer of their task. Only a pending item
/// changes; returns whether it did.
pub async fn resolve_item(db: &mut dyn Db, task: i64, delivery: i64, confirmed: bool, at: Timestamp) -> Result<bool, StoreError> {
    let status = if confirmed { "confirmed" } else { "skipped" };
    let sent_at = confirmed.then_some(at.0);
    let changed = db
        .execute(
            "UPDATE deliveries SET status = $3, reason = $5, sent_at = $4 WHERE id = $2 AND task_id = $1 AND status = 'pending_staff'",
            params![task, delivery, status, sent_at, (!confirmed).then_some("skipped_by_guide")],
        )
        .await?;
    close_if_done(db, task, at).await?;
    Ok(changed > 0)
}

async fn close_if_done(db: &mut dyn Db, task: i64, at: Timestamp) -> Result<(), StoreError> {
    db.execute(
        "UPDATE tasks SET status = 'done', completed_at = $2 WHERE id = $1 AND status = 'open'
           AND NOT EXISTS (SELECT 1 FROM deliveries WHERE task_id = $1 AND status = 'pending_staff')",
        params![task, at.0],
    )
    .await?;
    Ok(())
}

/// Open tasks past their deadline expire with their pending items. Returns the tasks.
pub async fn expire_tasks(db: &mut dyn Db, now: Timestamp) -> Result<Vec<i64>, StoreError> {
    let ids: Vec<i64> =
        db.query("SELECT id FROM tasks WHERE status = 'open' AND deadline <= $1", params![now.0]).await?.iter().map(|r| r.int(0)).collect::<Result<_, _>>()?;
    for id in &ids {
        db.execute("UPDATE deliveries SET status = 'expired', reason = 'task_expired' WHERE task_id = $1 AND status = 'pending_staff'", params![*id]).await?;
        db.execute("UPDATE tasks SET status = 'expired', completed_at = $2 WHERE id = $1", params![*id, now.0]).await?;
    }
    Ok(ids)
}

/// Open tasks whose deadline is within `before` and that were not reminded yet: marks
/// them reminded and returns them (the caller tells the guide).
pub async fn due_reminders(db: &mut dyn Db, now: Timestamp, before_ms: i64) -> Result<Vec<TaskRow>, StoreError> {
    let sql = format!("SELECT {TASK_COLUMNS} FROM tasks WHERE status = 'open' AND reminded_at IS NULL AND deadline <= $1");
    let tasks: Vec<TaskRow> = db.query(&sql, params![now.0 + before_ms]).await?.iter().map(task).collect::<Result<_, _>>()?;
    for t in &tasks {
        db.execute("UPDATE tasks SET reminded_at = $2 WHERE id = $1", params![t.id, now.0]).await?;
    }
    Ok(tasks)
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Completion {
    /// The guide's userid or the store id.
    pub key: String,
    pub customers: i64,
    pub confirmed: i64,
    pub skipped: i64,
    pub expired: i64,
    pub pending: i64,
    /// confirmed / customers
    pub rate: f64,
}

/// Task completion per guide or per store (`by` is `guide` or `store`).
pub async fn completion(db: &mut dyn Db, by_store: bool, store: Option<&str>, campaign: Option<i64>) -> Result<Vec<Completion>, StoreError> {
    let key = if by_store { "COALESCE(t.store_id, '')" } else { "t.guide" };
    let sql = format!(
        "SELECT {key},
                COUNT(*),
                -- Confirmed by the guide, whatever happened after (WeCom's result, or a
                -- send-time stop): a confirmed item carries the time it was confirmed.
                SUM(CASE WHEN d.status IN ('confirmed', 'sent', 'failed', 'suppressed') AND d.sent_at IS NOT NULL THEN 1 ELSE 0 END),
                SUM(CASE WHEN d.status = 'skipped' THEN 1 ELSE 0 END),
                SUM(CASE WHEN d.status = 'expired' THEN 1 ELSE 0 END),
                SUM(CASE WHEN d.status = 'pending_staff' THEN 1 ELSE 0 END)
         FROM tasks t JOIN deliveries d ON d.task_id = t.id
         WHERE ($1 IS NULL OR t.store_id = $1) AND ($2 IS NULL OR t.campaign_id = $2)
         GROUP BY {key} ORDER BY {key}"
    );
    db.query(&sql, params![store, campaign])
        .await?
        .iter()
        .map(|r| {
            let customers = r.int(1)?;
            let confirmed = r.int(2)?;
            Ok(Completion {
                key: r.text(0)?,
                customers,
                confirmed,
                skipped: r.int(3)?,
                expired: r.int(4)?,
                pending: r.int(5)?,
                rate: if customers > 0 { confirmed as f64 / customers as f64 } else { 0.0 },
            })
        })
        .collect()
}

// ---------- journeys ----------

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct JourneyRow {
    pub id: i64,
    pub name: String,
    #[schema(value_type = Object)]
    pub spec: serde_json::Value,
    pub enabled: bool,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

fn journey(r: &Row) -> Result<JourneyRow, StoreError> {
    Ok(JourneyRow {
        id: r.int(0)?,
        name: r.text(1)?,
        spec: json(r.text(2)?, "journey spec")?,
        enabled: r.int(3)? != 0,
        created_at: Timestamp(r.int(4)?),
        updated_at: Timestamp(r.int(5)?),
    })
}

/// Creates or replaces a journey by name; returns its id. A new journey starts from the
/// events stored after it was created: its first event id is recorded now (and the
/// runner's cursor, if no journey ran before), not on the runner's next round.
pub async fn put_journey(db: &mut dyn Db, name: &str, spec: &serde_json::Value, enabled: bool, at: Timestamp) -> Result<i64, StoreError> {
    let text = spec.to_string();
    let id = db
        .query_one(
            "INSERT INTO journeys (name, spec, enabled, created_at, updated_at) VALUES ($1, $2, $3, $4, $4)
             ON CONFLICT (name) DO UPDATE SET spec = excluded.spec, enabled = excluded.enabled, updated_at = excluded.updated_at RETURNING id",
            params![name, &text, enabled as i64, at.0],
        )
        .await?
        .int(0)?;
    let newest = max_event_id(db).await?;
    for cursor in [JOURNEYS_CURSOR.to_string(), journey_start(id)] {
        db.execute("INSERT INTO outreach_cursors (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING", params![&cursor, newest]).await?;
    }
    Ok(id)
}

/// The journey runner's position in the event stream.
pub const JOURNEYS_CURSOR: &str = "journeys";

/// The newest event id when a journey was created: older events never trigger it.
pub fn journey_start(journey: i64) -> String {
    format!("journey:{journey}:from")
}

pub async fn list_journeys(db: &mut dyn Db) -> Result<Vec<JourneyRow>, StoreError> {
    db.query("SELECT id, name, spec, enabled, created_at, updated_at FROM journeys ORDER BY id", &[]).await?.iter().map(journey).collect()
}

pub async fn get_journey(db: &mut dyn Db, id: i64) -> Result<Option<JourneyRow>, StoreError> {
    db.query_opt("SELECT id, name, spec, enabled, created_at, updated_at FROM journeys WHERE id = $1", params![id]).await?.as_ref().map(journey).transpose()
}

#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct JourneyState {
    pub journey_id: i64,
    pub profile_id: ProfileId,
    /// How many times the customer has entered (1 the first time).
    pub entry: i64,
    /// The next step to run.
    pub step: i64,
    /// active · completed · exited
    pub status: String,
    pub wake_at: Timestamp,
    pub entered_at: Timestamp,
}

fn state(r: &Row) -> Result<JourneyState, StoreError> {
    Ok(JourneyState {
        journey_id: r.int(0)?,
        profile_id: r.profile(1)?,
        entry: r.int(2)?,
        step: r.int(3)?,
        status: r.text(4)?,
        wake_at: Timestamp(r.int(5)?),
        entered_at: Timestamp(r.int(6)?),
    })
}

const STATE_COLUMNS: &str = "journey_id, profile_id, entry, step, status, wake_at, entered_at";

pub async fn journey_state(db: &mut dyn Db, journey: i64, profile: ProfileId) -> Result<Option<JourneyState>, StoreError> {
    let sql = format!("SELECT {STATE_COLUMNS} FROM journey_states WHERE journey_id = $1 AND profile_id = $2");
    db.query_opt(&sql, params![journey, profile]).await?.as_ref().map(state).transpose()
}

/// Positions of several customers in the given journeys, chunked so the id lists stay
/// short: the journey runner reads a whole round's worth at once.
pub async fn states_of(db: &mut dyn Db, journeys: &[i64], profiles: &[ProfileId]) -> Result<Vec<JourneyState>, StoreError> {
    let mut out = Vec::new();
    if journeys.is_empty() {
        return Ok(out);
    }
    for chunk in profiles.chunks(500) {
        let sql = format!("SELECT {STATE_COLUMNS} FROM journey_states WHERE journey_id IN ({}) AND profile_id IN ({})", int_list(journeys), int_list(chunk));
        for r in db.query(&sql, &[]).await? {
            out.push(state(&r)?);
        }
    }
    Ok(out)
}

pub async fn states_of_profile(db: &mut dyn Db, profile: ProfileId) -> Result<Vec<JourneyState>, StoreError> {
    let sql = format!("SELECT {STATE_COLUMNS} FROM journey_states WHERE profile_id = $1 ORDER BY journey_id");
    db.query(&sql, params![profile]).await?.iter().map(state).collect()
}

pub async fn save_state(db: &mut dyn Db, s: &JourneyState, at: Timestamp) -> Result<(), StoreError> {
    db.execute(
        "INSERT INTO journey_states (journey_id, profile_id, entry, step, status, wake_at, entered_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (journey_id, profile_id) DO UPDATE SET entry = excluded.entry, step = excluded.step, status = excluded.status,
           wake_at = excluded.wake_at, entered_at = excluded.entered_at, updated_at = excluded.updated_at",
        params![s.journey_id, s.profile_id, s.entry, s.step, &s.status, s.wake_at.0, s.entered_at.0, at.0],
    )
    .await?;
    Ok(())
}

pub async fn due_states(db: &mut dyn Db, now: Timestamp, limit: i64) -> Result<Vec<JourneyState>, StoreError> {
    let sql = format!("SELECT {STATE_COLUMNS} FROM journey_states WHERE status = 'active' AND wake_at <= $1 ORDER BY wake_at LIMIT $2");
    db.query(&sql, params![now.0, limit]).await?.iter().map(state).collect()
}

/// Customers per journey and status.
pub async fn journey_counts(db: &mut dyn Db, journey: i64) -> Result<Vec<(String, i64)>, StoreError> {
    db.query("SELECT status, COUNT(*) FROM journey_states WHERE journey_id = $1 GROUP BY status ORDER BY status", params![journey])
        .await?
        .iter()
        .map(|r| Ok((r.text(0)?, r.int(1)?)))
        .collect()
}

pub async fn cursor(db: &mut dyn Db, name: &str) -> Result<i64, StoreError> {
    Ok(cursor_opt(db, name).await?.unwrap_or(0))
}

pub async fn cursor_opt(db: &mut dyn Db, name: &str) -> Result<Option<i64>, StoreError> {
    db.query_opt("SELECT value FROM outreach_cursors WHERE name = $1", params![name]).await?.map(|r| r.int(0)).transpose()
}

pub async fn set_cursor(db: &mut dyn Db, name: &str, value: i64) -> Result<(), StoreError> {
    db.execute("INSERT INTO outreach_cursors (name, value) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET value = excluded.value", params![name, value])
        .await?;
    Ok(())
}

/// Events after `after_id` (by insertion order) with one of `names`: the journey
/// runner's feed. Returns (id, profile, name, ts, payload).
pub async fn events_after(
    db: &mut dyn Db,
    after_id: i64,
    names: &[String],
    limit: i64,
) -> Result<Vec<(i64, ProfileId, String, Timestamp, String)>, StoreError> {
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!("SELECT id, profile_id, name, ts, payload FROM events WHERE id > $1 AND name IN ({}) ORDER BY id LIMIT $2", text_list(names));
    db.query(&sql, params![after_id, limit]).await?.iter().map(|r| Ok((r.int(0)?, r.profile(1)?, r.text(2)?, Timestamp(r.int(3)?), r.text(4)?))).collect()
}

pub async fn max_event_id(db: &mut dyn Db) -> Result<i64, StoreError> {
    db.query_one("SELECT COALESCE(MAX(id), 0) FROM events", &[]).await?.int(0)
}

// ---------- what templates read ----------

/// Key → value per profile, several profiles at a time.
pub type ByProfile = std::collections::HashMap<ProfileId, serde_json::Map<String, serde_json::Value>>;

/// Runs `select` (profile id, key, value; `{ids}` where the id list goes) over `ids` in
/// chunks and gathers the rows per profile.
async fn by_profile(db: &mut dyn Db, select: &str, ids: &[ProfileId], value: fn(String) -> serde_json::Value) -> Result<ByProfile, StoreError> {
    let mut out = ByProfile::new();
    for chunk in ids.chunks(500) {
        for r in db.query(&select.replace("{ids}", &int_list(chunk)), &[]).await? {
            out.entry(r.profile(0)?).or_default().insert(r.text(1)?, value(r.text(2)?));
        }
    }
    Ok(out)
}

/// Traits of several profiles, for rendering messages.
pub async fn traits_of(db: &mut dyn Db, ids: &[ProfileId]) -> Result<ByProfile, StoreError> {
    by_profile(db, "SELECT profile_id, key, value FROM traits WHERE profile_id IN ({ids})", ids, |v| {
        serde_json::from_str(&v).unwrap_or(serde_json::Value::Null)
    })
    .await
}

/// Staff names and stores, and store names: `{{ owner.name }}`, `{{ store.name }}`.
#[derive(Debug, Default, Clone)]
pub struct Directory {
    pub staff: std::collections::HashMap<String, (String, Option<String>)>,
    pub stores: std::collections::HashMap<String, (String, String)>,
}

pub async fn directory(db: &mut dyn Db) -> Result<Directory, StoreError> {
    let mut d = Directory::default();
    for r in db.query("SELECT userid, name, store_id FROM staff", &[]).await? {
        d.staff.insert(r.text(0)?, (r.text(1)?, r.opt_text(2)?));
    }
    for r in db.query("SELECT id, name, city FROM stores", &[]).await? {
        d.stores.insert(r.text(0)?, (r.text(1)?, r.text(2)?));
    }
    Ok(d)
}

/// Identities of several profiles (what a gateway addresses a message to).
pub async fn identities_of(db: &mut dyn Db, ids: &[ProfileId]) -> Result<ByProfile, StoreError> {
    by_profile(db, "SELECT profile_id, kind, value FROM identities WHERE profile_id IN ({ids}) AND kind <> 'anonymous_id'", ids, serde_json::Value::String)
        .await
}
