//! The WeCom channel. A guide confirms their task's customers in Siyu; each round, the
//! confirmed touches become `add_msg_template` mass messages with that guide as sender
//! (one per distinct text, at most 10,000 customers each), and the per-customer results
//! from `get_groupmsg_send_result` settle each delivery: sent, or failed because the
//! customer is no longer a contact or has reached WeCom's receive limit.
//!
//! A mass message carries one text for all its recipients, so personalised messages go
//! out as one mass message per distinct rendered text. The guide still presses send in
//! the WeCom app; while customers read "not sent", the guide is reminded through
//! `remind_groupmsg_send` every few hours (WeCom accepts three a day).

use std::collections::{BTreeMap, HashMap};

use siyu_core::Timestamp;
use siyu_store::outreach::DeliveryRow;
use siyu_store::{outreach as stored, wecom as wstore};
use siyu_wecom::client::Client;

use super::{Outreach, render};

const PER_MESSAGE: usize = 10_000;

/// Confirmed touches → mass messages.
pub async fn push(o: &Outreach, client: &Client, now: Timestamp) -> anyhow::Result<()> {
    let rows = o.store.run(|db| Box::pin(wstore::confirmed_unsent(db, 20_000))).await?;
    if rows.is_empty() {
        return Ok(());
    }
    // A guide's confirmation does not outrank the customer: one who deleted the guide
    // or withdrew consent since the task was made is not messaged.
    let rows = o.stop_what_no_longer_passes(rows, "confirmed", now).await?;
    if rows.is_empty() {
        return Ok(());
    }
    let outgoing = render::rendered_once(o, &rows).await?;
    let ids: Vec<i64> = rows.iter().map(|d| d.profile_id).collect();
    let identities = o.store.run(move |db| Box::pin(async move { stored::identities_of(db, &ids).await })).await?;
    // (guide, text) → deliveries with the customer's external_userid.
    let mut groups: BTreeMap<(String, String), Vec<(&DeliveryRow, String)>> = BTreeMap::new();
    let mut no_contact = Vec::new();
    for (d, out) in rows.iter().zip(outgoing) {
        let external = identities.get(&d.profile_id).and_then(|m| m.get("external_userid")).and_then(|v| v.as_str());
        match (external, &d.guide) {
            (Some(e), Some(g)) => groups.entry((g.clone(), out.content)).or_default().push((d, e.to_string())),
            _ => no_contact.push(d.id),
        }
    }
    if !no_contact.is_empty() {
        let now = o.now();
        o.store.run(move |db| Box::pin(async move { stored::mark_deliveries(db, &no_contact, "failed", Some("no_external_userid"), now).await })).await?;
    }
    for ((guide, text), members) in groups {
        for chunk in members.chunks(PER_MESSAGE) {
            let to: Vec<String> = chunk.iter().map(|(_, e)| e.clone()).collect();
            match client.add_msg_template(&guide, &to, &text).await {
                Ok((msgid, _fail)) => {
                    let ids: Vec<i64> = chunk.iter().map(|(d, _)| d.id).collect();
                    o.store.run(move |db| Box::pin(async move { wstore::set_external_ref(db, &ids, &msgid).await })).await?;
                }
                Err(e) => {
                    // Left confirmed without a message: tried again next round.
                    tracing::warn!(guide = %guide, error = %e, "add_msg_template failed");
                }
            }
        }
    }
    Ok(())
}

/// Mass-message results → deliveries.
pub async fn collect(o: &Outreach, client: &Client, now: Timestamp) -> anyhow::Result<()> {
    let pending = o.store.run(|db| Box::pin(wstore::pending_mass_messages(db))).await?;
    for (msgid, guide) in pending {
        let results = match client.get_groupmsg_send_result(&msgid, &guide).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(msgid = %msgid, error = %e, "get_groupmsg_send_result failed");
                continue;
            }
        };
        if results.iter().any(|r| r["status"].as_u64() == Some(0)) {
            remind(o, client, &msgid, now).await?;
        }
        let externals: Vec<String> = results.iter().filter_map(|r| r["external_userid"].as_str().map(str::to_string)).collect();
        let profiles: HashMap<String, i64> = o
            .store
            .run(move |db| {
                Box::pin(async move {
                    let mut out = HashMap::new();
                    for e in externals {
                        let id = siyu_core::identity::Identity::new(siyu_core::identity::IdentityKind::ExternalUserid, &e, None)
                            .map_err(|x| siyu_store::StoreError::Invalid(x.to_string()))?;
                        if let Some(p) = siyu_store::profiles::find_by_identity(db, &id).await? {
                            out.insert(e, p);
                        }
                    }
                    Ok(out)
                })
            })
            .await?;
        let settled: Vec<(i64, &'static str, Option<&'static str>)> = results
            .iter()
            .filter_map(|r| {
                let p = *profiles.get(r["external_userid"].as_str()?)?;
                match r["status"].as_u64()? {
                    1 => Some((p, "sent", None)),
                    2 => Some((p, "failed", Some("not_a_contact"))),
                    3 => Some((p, "failed", Some("wecom_receive_limit"))),
                    _ => None, // not sent yet: asked again next round
                }
            })
            .collect();
        let id = msgid.clone();
        o.store
            .run(move |db| {
                Box::pin(async move {
                    for (p, status, reason) in settled {
                        wstore::record_result(db, &id, p, status, reason, now).await?;
                    }
                    Ok(())
                })
            })
            .await?;
    }
    Ok(())
}

/// Reminds the guide of a mass message they have not sent: the clock starts when Siyu
/// first sees it unsent, and each reminder waits `mass_reminder_hours` after the last.
/// The time is kept in the store, so a restart neither forgets nor repeats a reminder.
async fn remind(o: &Outreach, client: &Client, msgid: &str, now: Timestamp) -> anyhow::Result<()> {
    let every = o.config.mass_reminder_hours.unwrap_or(8).max(1) as i64 * 3_600_000;
    let key = format!("wecom:remind:{msgid}");
    let k = key.clone();
    let since = o.store.run(move |db| Box::pin(async move { stored::cursor(db, &k).await })).await?;
    if since != 0 && now.0 - since < every {
        return Ok(());
    }
    if since != 0 {
        if let Err(e) = client.remind_groupmsg_send(msgid).await {
            tracing::warn!(msgid, error = %e, "remind_groupmsg_send failed; tried again next round");
            return Ok(());
        }
        tracing::info!(msgid, "guide reminded in WeCom to send a mass message");
    }
    o.store.run(move |db| Box::pin(async move { stored::set_cursor(db, &key, now.0).await })).await?;
    Ok(())
}
