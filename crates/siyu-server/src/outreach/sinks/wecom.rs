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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use siyu_core::Timestamp;
use siyu_core::delivery::DeliveryStatus;
use siyu_store::Store;
use siyu_store::{outreach as stored, wecom as wstore};
use siyu_wecom::client::{Client, WecomError};

use super::{Handed, Outgoing, Sink};

const PER_MESSAGE: usize = 10_000;

/// The WeCom sink: confirmed touches → mass messages, results → deliveries.
pub struct Wecom {
    pub store: Store,
    pub client: Arc<Client>,
    /// Between reminders to a guide who has not sent a mass message yet.
    pub remind_every_ms: i64,
}

#[async_trait]
impl Sink for Wecom {
    fn name(&self) -> String {
        "wecom mass messages".into()
    }

    fn takes(&self) -> DeliveryStatus {
        DeliveryStatus::Confirmed
    }

    /// A guide's confirmed customers go out in as few mass messages as WeCom allows.
    fn batch_size(&self) -> i64 {
        20_000
    }

    /// One mass message per (guide, text), at most [`PER_MESSAGE`] customers each. A
    /// refusal fails that message's deliveries; a lost answer leaves them to
    /// [`Wecom::reconcile`]. Only a store error fails the batch.
    async fn send(&self, batch: &[Outgoing]) -> Result<Handed, String> {
        let mut groups: BTreeMap<(String, String), Vec<(i64, String)>> = BTreeMap::new();
        for out in batch {
            let external = out.to.get("external_userid").and_then(|v| v.as_str());
            if let (Some(e), Some(g)) = (external, &out.guide) {
                groups.entry((g.clone(), out.content.clone())).or_default().push((out.id, e.to_string()));
            }
        }
        for ((guide, text), members) in groups {
            for chunk in members.chunks(PER_MESSAGE) {
                self.make_mass_message(&guide, &text, chunk).await.map_err(|e| e.to_string())?;
            }
        }
        Ok(Handed::Later)
    }

    async fn settle(&self, now: Timestamp) -> anyhow::Result<()> {
        self.reconcile().await?;
        self.collect(now).await
    }
}

#[derive(Debug)]
enum Settle {
    Adopt(String),
    SendAgain,
    Unknown,
}

/// After this long without being able to ask WeCom, an intent's deliveries fail.
const UNKNOWN_AFTER_SECS: i64 = 86_400;

/// Seconds by the wall clock, as WeCom stamps mass messages (the engine's clock can be
/// moved in tests and benchmarks; WeCom's cannot).
fn wecom_clock() -> i64 {
    Timestamp::now().0 / 1000
}

/// How long after an intent a missing mass message counts as not made: longer than the
/// client's request timeout (30 s), so a call still under way is never repeated.
pub const INTENT_GRACE_SECS: i64 = 90;

impl Wecom {
    async fn make_mass_message(&self, guide: &str, text: &str, chunk: &[(i64, String)]) -> anyhow::Result<()> {
        let to: Vec<String> = chunk.iter().map(|(_, e)| e.clone()).collect();
        let ids: Vec<i64> = chunk.iter().map(|(d, _)| *d).collect();
        // The intent is durable before WeCom is asked: after a lost answer or a crash
        // Siyu looks for the mass message instead of making it twice.
        let at = wecom_clock();
        let intent = self.store.run(move |db| Box::pin(async move { wstore::record_intent(db, &ids, at).await })).await?;
        match self.client.add_msg_template(guide, &to, text).await {
            Ok((msgid, _fail)) => {
                self.store.run(move |db| Box::pin(async move { wstore::settle_intent(db, &intent, Some(&msgid)).await })).await?;
            }
            // WeCom refused it (busy answers were already retried by the client):
            // nothing was made, and asking again would be refused again.
            Err(WecomError::Api { errcode, errmsg }) => {
                tracing::warn!(guide = %guide, errcode, errmsg = %errmsg, "add_msg_template refused; the deliveries fail");
                let reason = format!("wecom_{errcode}");
                self.store.run(move |db| Box::pin(async move { wstore::fail_intent(db, &intent, &reason).await })).await?;
            }
            Err(e) => {
                tracing::warn!(guide = %guide, error = %e, "add_msg_template's answer was lost; Siyu checks whether WeCom made it before trying again");
            }
        }
        Ok(())
    }

    /// Settles mass messages whose answer was lost (or whose server stopped mid-call). If
    /// WeCom made one with this text, right after the intent, by this guide and to some of
    /// these customers, and no delivery claims it yet, it is adopted; if none appears
    /// within [`INTENT_GRACE_SECS`], the deliveries are sent again; if WeCom cannot be
    /// asked for a day, they fail with `unknown_outcome` rather than risk a second message.
    pub async fn reconcile(&self) -> anyhow::Result<()> {
        let intents = self.store.run(|db| Box::pin(wstore::open_intents(db))).await?;
        for (intent, guide, text, profiles) in intents {
            let at: i64 = intent.trim_start_matches(wstore::INTENT).split(':').next().and_then(|t| t.parse().ok()).unwrap_or(0);
            let identities = self.store.run(move |db| Box::pin(async move { stored::identities_of(db, &profiles).await })).await?;
            let wanted: HashSet<String> = identities.values().filter_map(|m| m.get("external_userid").and_then(|v| v.as_str()).map(str::to_string)).collect();
            let now_secs = wecom_clock();
            let settle = match self.find_mass_message(&guide, &text, &wanted, at).await {
                Ok(Some(msgid)) => Settle::Adopt(msgid),
                Ok(None) if now_secs - at > INTENT_GRACE_SECS => Settle::SendAgain,
                Ok(None) => continue, // a call may still be under way: look again next round
                Err(e) if now_secs - at > UNKNOWN_AFTER_SECS => {
                    tracing::warn!(guide = %guide, error = %e, "WeCom could not be asked about a mass message for a day: its deliveries fail");
                    Settle::Unknown
                }
                Err(e) => {
                    tracing::warn!(guide = %guide, error = %e, "could not check WeCom for a mass message whose answer was lost; checked again next round");
                    continue;
                }
            };
            tracing::info!(guide = %guide, ?settle, "mass message with a lost answer settled");
            self.store
                .run(move |db| {
                    Box::pin(async move {
                        match settle {
                            Settle::Adopt(msgid) => wstore::settle_intent(db, &intent, Some(&msgid)).await,
                            Settle::SendAgain => wstore::settle_intent(db, &intent, None).await,
                            Settle::Unknown => wstore::fail_intent(db, &intent, "unknown_outcome").await,
                        }
                    })
                })
                .await?;
        }
        Ok(())
    }

    /// A mass message with `text`, made right after `at` by `guide` to some of `wanted`,
    /// that no delivery names yet. (`get_groupmsg_list_v2` leaves out `creator` for mass
    /// messages made through the API, so the guide is checked with `get_groupmsg_task`.)
    async fn find_mass_message(&self, guide: &str, text: &str, wanted: &HashSet<String>, at: i64) -> anyhow::Result<Option<String>> {
        for m in self.client.mass_messages_made(at - 60, at + INTENT_GRACE_SECS + 60).await? {
            let Some(msgid) = m["msgid"].as_str().map(str::to_string) else { continue };
            if m["text"]["content"].as_str() != Some(text) || m["creator"].as_str().is_some_and(|c| c != guide) {
                continue;
            }
            let id = msgid.clone();
            if self.store.run(move |db| Box::pin(async move { wstore::msgid_in_use(db, &id).await })).await? {
                continue;
            }
            let task = self.client.get_groupmsg_task(&msgid, "").await?;
            if !task["task_list"].as_array().into_iter().flatten().any(|t| t["userid"].as_str() == Some(guide)) {
                continue;
            }
            let results = self.client.get_groupmsg_send_result(&msgid, guide).await?;
            if results.iter().filter_map(|r| r["external_userid"].as_str()).any(|e| wanted.contains(e)) {
                return Ok(Some(msgid));
            }
        }
        Ok(None)
    }

    /// Mass-message results → deliveries.
    async fn collect(&self, now: Timestamp) -> anyhow::Result<()> {
        let pending = self.store.run(|db| Box::pin(wstore::pending_mass_messages(db))).await?;
        for (msgid, guide) in pending {
            let results = match self.client.get_groupmsg_send_result(&msgid, &guide).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(msgid = %msgid, error = %e, "get_groupmsg_send_result failed");
                    continue;
                }
            };
            if results.iter().any(|r| r["status"].as_u64() == Some(0)) {
                self.remind(&msgid, now).await?;
            }
            let externals: Vec<String> = results.iter().filter_map(|r| r["external_userid"].as_str().map(str::to_string)).collect();
            let profiles: HashMap<String, siyu_core::ProfileId> = self
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
            let settled: Vec<(siyu_core::ProfileId, DeliveryStatus, Option<&'static str>)> = results
                .iter()
                .filter_map(|r| {
                    let p = *profiles.get(r["external_userid"].as_str()?)?;
                    match r["status"].as_u64()? {
                        1 => Some((p, DeliveryStatus::Sent, None)),
                        2 => Some((p, DeliveryStatus::Failed, Some("not_a_contact"))),
                        3 => Some((p, DeliveryStatus::Failed, Some("wecom_receive_limit"))),
                        _ => None, // not sent yet: asked again next round
                    }
                })
                .collect();
            let id = msgid.clone();
            self.store
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
    async fn remind(&self, msgid: &str, now: Timestamp) -> anyhow::Result<()> {
        let every = self.remind_every_ms;
        let key = format!("wecom:remind:{msgid}");
        let k = key.clone();
        let since = self.store.run(move |db| Box::pin(async move { stored::cursor(db, &k).await })).await?;
        if since != 0 && now.0 - since < every {
            return Ok(());
        }
        if since != 0 {
            if let Err(e) = self.client.remind_groupmsg_send(msgid).await {
                tracing::warn!(msgid, error = %e, "remind_groupmsg_send failed; tried again next round");
                return Ok(());
            }
            tracing::info!(msgid, "guide reminded in WeCom to send a mass message");
        }
        self.store.run(move |db| Box::pin(async move { stored::set_cursor(db, &key, now.0).await })).await?;
        Ok(())
    }
}
