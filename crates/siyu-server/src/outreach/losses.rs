//! Lost customers (流失提醒): when a customer deletes their guide, the guide and their
//! store's managers hear of it in WeCom at once, with what Siyu sent the customer in
//! the seven days before, so a campaign that drives deletions shows itself. The console
//! lists the same losses (see `console::pages::lost`).
//!
//! Each `Contact Deleted` event is alerted at most once: the cursor moves past an event
//! before its message is sent, so a crash in between loses that alert rather than
//! sending it twice. History (events before the first start, imports) is not alerted.

use siyu_core::delivery::DeliveryStatus;
use siyu_core::org::StaffRole;
use siyu_core::{ProfileId, Timestamp};
use siyu_store::outreach::{self as stored, DeliveryRow};

use super::Outreach;

const CURSOR: &str = "losses:alerted";
const EVENTS_PER_ROUND: i64 = 200;
/// How far back the touches before a loss are looked for.
pub const BEFORE_LOSS_MS: i64 = 7 * 86_400_000;

/// Campaign and journey touches Siyu made to a customer in the seven days before
/// `lost_at` (those that went out, or that a guide confirmed), newest first. The
/// automatic welcome is not one: it answers the customer's own add.
pub fn touches_before(deliveries: &[DeliveryRow], lost_at: Timestamp) -> Vec<&DeliveryRow> {
    deliveries
        .iter()
        .filter(|d| d.campaign_id.is_some() || d.journey_id.is_some())
        .filter(|d| matches!(d.status, DeliveryStatus::Sent | DeliveryStatus::Confirmed))
        .filter(|d| {
            let at = d.sent_at.unwrap_or(d.due_at).0;
            // WeCom stamps a deletion in whole seconds: a touch in that same second
            // came before it.
            at < lost_at.0 + 1000 && at >= lost_at.0 - BEFORE_LOSS_MS
        })
        .collect()
}

/// A deletion older than this when Siyu reads it is history (an import, a backfill, a
/// long outage), not news to send to a guide's phone.
const NEWS_WINDOW_MS: i64 = 86_400_000;

/// One round: alerts the losses recorded since the last round. A failure with one
/// alert is logged and the others still go.
pub async fn alert(o: &Outreach) -> anyhow::Result<()> {
    let Some((client, agent)) = o.wecom.as_ref().and_then(|c| c.agent_id.map(|a| (c.clone(), a))) else { return Ok(()) };
    let names = vec!["Contact Deleted".to_string()];
    let events = o
        .store
        .run(move |db| {
            Box::pin(async move {
                let Some(after) = stored::cursor_opt(db, CURSOR).await? else {
                    // First round: what happened before is history, not news.
                    let last = stored::max_event_id(db).await?;
                    stored::set_cursor(db, CURSOR, last).await?;
                    return Ok(Vec::new());
                };
                let events = stored::events_after(db, after, &names, EVENTS_PER_ROUND).await?;
                if let Some(last) = events.last() {
                    stored::set_cursor(db, CURSOR, last.0).await?;
                }
                Ok(events)
            })
        })
        .await?;
    let now = o.now();
    for (_, profile, _, ts, payload) in events {
        let props: serde_json::Value = serde_json::from_str(&payload).unwrap_or_default();
        // A guide who removed the customer knows; imported or old history is not news.
        if props["initiator"] == "staff" || props["source"] == "import" || ts.0 < now.0 - NEWS_WINDOW_MS {
            continue;
        }
        let Some(guide) = props["staff_userid"].as_str().map(str::to_string) else { continue };
        let (recipients, text) = match message(o, profile, &guide, ts).await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(profile = %profile, error = %e, "composing a lost-customer alert failed; it is skipped");
                continue;
            }
        };
        let to: Vec<&str> = recipients.iter().map(String::as_str).collect();
        match client.send_text_message(agent, &to, &text).await {
            Ok(_) => tracing::info!(profile = %profile, guide = %guide, "lost customer alerted in WeCom"),
            Err(e) => tracing::warn!(profile = %profile, guide = %guide, error = %e, "the lost-customer alert could not be sent through WeCom"),
        }
    }
    Ok(())
}

/// Who hears of a loss (the guide and their store's managers) and what they read.
async fn message(o: &Outreach, profile: ProfileId, guide: &str, lost_at: Timestamp) -> anyhow::Result<(Vec<String>, String)> {
    let g = guide.to_string();
    let (staff, managers, customer, deliveries) = o
        .store
        .run(move |db| {
            Box::pin(async move {
                let staff = siyu_store::org::get_staff(db, &g).await?;
                let managers = match staff.as_ref().and_then(|s| s.store_id.clone()) {
                    Some(store) => siyu_store::org::list_staff(db, Some(&store)).await?.into_iter().filter(|s| s.role == StaffRole::StoreManager).collect(),
                    None => Vec::new(),
                };
                let customer = siyu_store::profiles::summaries(db, &[profile]).await?.pop();
                Ok((staff, managers, customer, stored::deliveries_of_profile(db, profile, 50).await?))
            })
        })
        .await?;
    let mut recipients = vec![guide.to_string()];
    recipients.extend(managers.into_iter().map(|m| m.userid).filter(|m| m != guide));
    let name = customer.and_then(|c| c.name).unwrap_or_else(|| format!("#{profile}"));
    let guide_name = staff.map(|s| s.name).unwrap_or_else(|| guide.to_string());
    let when = lost_at.to_datetime().with_timezone(&chrono_tz::Asia::Shanghai).format("%m-%d %H:%M");
    let touches = touches_before(&deliveries, lost_at);
    let what = if touches.is_empty() {
        "近 7 天 Siyu 未向其发送消息。".to_string()
    } else {
        let list: Vec<String> =
            touches.iter().take(3).map(|d| format!("「{}」", d.content.as_deref().unwrap_or("").chars().take(30).collect::<String>())).collect();
        format!("近 7 天 Siyu 向其发送了 {} 条消息：{}", touches.len(), list.join("、"))
    };
    Ok((recipients, format!("流失提醒：客户「{name}」于 {when} 删除了导购 {guide_name}。{what}")))
}
