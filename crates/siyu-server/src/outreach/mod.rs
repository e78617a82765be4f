//! The outreach runner: turns campaigns and journeys into deliveries through the contact
//! policy, dispatches them, keeps guide tasks moving and watches guardrails.
//!
//! Plans go through one [`ContactLedger`] behind one lock, so campaigns and journeys
//! running at once share every cap. Everything a plan decides is written in one
//! transaction with an idempotency key per (campaign run or journey step, customer):
//! after a `kill -9` a run either happened or runs again with the same keys, and the
//! ledger is rebuilt from the stored deliveries at start.

pub mod audience;
pub mod campaigns;
pub mod journeys;
pub mod losses;
pub mod render;
pub mod sinks;

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use serde::Deserialize;
use siyu_core::Timestamp;
use siyu_core::delivery::DeliveryStatus;
use siyu_core::rule::Channel;
use siyu_outreach::ledger::HORIZON_MS;
use siyu_outreach::plan::waiting;
use siyu_outreach::policy::local_day;
use siyu_outreach::quiet::zone;
use siyu_outreach::{ContactLedger, ContactPolicy, TouchKind};
use siyu_store::StoreError;
use siyu_store::outreach as stored;
use tokio::sync::Mutex;

use sinks::{Handed, Outbox, Outgoing, Sink, Webhook};

use crate::state::Core;

/// `DATA_DIR/outreach.json`: the contact policy and where touches go.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutreachConfig {
    pub policy: ContactPolicy,
    /// Deliveries for SMS, e-mail, official account and webhook channels are POSTed
    /// here; without it they are appended to `DATA_DIR/outbox.jsonl`.
    pub webhook_url: Option<String>,
    /// Remind a guide this many hours before a task's deadline (default 2).
    pub reminder_hours: Option<u32>,
    /// Hours between WeCom reminders (`remind_groupmsg_send`) to a guide who has not yet
    /// sent a mass message Siyu made for them (default 8: WeCom accepts 3 a day).
    pub mass_reminder_hours: Option<u32>,
    /// Seconds between guardrail checks of running campaigns (default 15): each check
    /// counts a campaign's blocks and responses in the store.
    pub guardrail_check_secs: Option<u64>,
}

impl OutreachConfig {
    pub fn load(data_dir: &Path) -> anyhow::Result<OutreachConfig> {
        let path = data_dir.join("outreach.json");
        let mut config = match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).with_context(|| format!("reading {}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => OutreachConfig::default(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        if let Ok(url) = std::env::var("SIYU_WEBHOOK_URL") {
            config.webhook_url = Some(url);
        }
        Ok(config)
    }
}

pub struct Outreach {
    /// The store, ingest, the segment engine and background work (tag pushes).
    pub core: Core,
    pub config: OutreachConfig,
    /// Every marketing touch planned or made: what caps are checked against.
    pub ledger: Mutex<ContactLedger>,
    /// Where touches go: the gateway (webhook or outbox), and WeCom's mass messages
    /// when a corp is configured.
    pub sinks: Vec<Arc<dyn Sink>>,
    /// WeCom's API: welcomes, transfers and reminders go through it.
    pub wecom: Option<Arc<siyu_wecom::client::Client>>,
    /// One tick at a time (the background loop and tests calling `tick` directly).
    ticking: Mutex<()>,
    /// When running campaigns were last checked against their guardrails.
    last_watch: std::sync::Mutex<Option<std::time::Instant>>,
}

impl std::ops::Deref for Outreach {
    type Target = Core;

    /// The runner reads `o.store`, `o.engine` …: the shared handles.
    fn deref(&self) -> &Core {
        &self.core
    }
}

impl Outreach {
    pub async fn start(core: Core, data_dir: &Path, wecom: Option<Arc<siyu_wecom::client::Client>>) -> anyhow::Result<Arc<Outreach>> {
        let config = OutreachConfig::load(data_dir)?;
        let gateway: Arc<dyn Sink> = match &config.webhook_url {
            Some(url) => Arc::new(Webhook::new(url.clone())),
            None => Arc::new(Outbox { path: data_dir.join("outbox.jsonl") }),
        };
        let mut sinks = vec![gateway];
        if let Some(client) = &wecom {
            let remind_every_ms = config.mass_reminder_hours.unwrap_or(8).max(1) as i64 * 3_600_000;
            sinks.push(Arc::new(sinks::wecom::Wecom { store: core.store.clone(), client: client.clone(), remind_every_ms }));
        }
        for sink in &sinks {
            tracing::info!(sink = %sink.name(), "outreach deliveries go to");
        }
        let outreach = Arc::new(Outreach {
            core,
            config,
            ledger: Mutex::new(ContactLedger::new()),
            sinks,
            wecom,
            ticking: Mutex::new(()),
            last_watch: std::sync::Mutex::new(None),
        });
        outreach.rebuild_ledger().await?;
        Ok(outreach)
    }

    pub fn now(&self) -> Timestamp {
        self.engine.now()
    }

    pub fn policy(&self) -> &ContactPolicy {
        &self.config.policy
    }

    /// The ledger as the store has it: every counted touch of the last 35 days.
    pub async fn rebuild_ledger(&self) -> Result<(), StoreError> {
        let since = Timestamp(self.now().0 - HORIZON_MS);
        let rows = self.store.run(move |db| Box::pin(async move { stored::ledger_rows(db, since).await })).await?;
        let zones = audience::guide_zones(self).await?;
        let mut ledger = ContactLedger::new();
        for (profile, at, channel, guide) in &rows {
            if let Some(ch) = Channel::parse(channel) {
                ledger.record(profile.bit(), *at, ch);
            }
            if let Some(g) = guide {
                ledger.record_guide(g, local_day(*at, zones.get(g).copied().unwrap_or_else(|| zone(None))));
            }
        }
        tracing::info!(touches = rows.len(), "contact ledger rebuilt");
        *self.ledger.lock().await = ledger;
        Ok(())
    }

    /// Keeps the ledger true to the store after recording a plan: the plan's touches are
    /// already in the ledger, so if recording failed it is rebuilt from the store.
    pub async fn keep_ledger_true<T>(&self, ledger: tokio::sync::MutexGuard<'_, ContactLedger>, recorded: Result<T, StoreError>) -> anyhow::Result<T> {
        match recorded {
            Ok(v) => Ok(v),
            Err(e) => {
                drop(ledger);
                self.rebuild_ledger().await?;
                Err(e.into())
            }
        }
    }

    /// One round of everything time-driven. Runs every second in the background.
    pub async fn tick(&self) -> anyhow::Result<()> {
        let _one = self.ticking.lock().await;
        let now = self.now();
        campaigns::run_due(self, now).await?;
        journeys::tick(self, now).await?;
        self.dispatch(now).await?;
        self.tasks(now).await?;
        if let Some(client) = &self.wecom {
            crate::wecom::transfer::settle(&self.core, client, now).await?;
        }
        // Alerts are a side line: a failure there is logged and holds nothing else up.
        if let Err(e) = losses::alert(self).await {
            tracing::warn!(error = %format!("{e:#}"), "lost-customer alerts failed this round");
        }
        if self.watch_due() {
            campaigns::watch(self, now).await?;
        }
        Ok(())
    }

    fn watch_due(&self) -> bool {
        let every = std::time::Duration::from_secs(self.config.guardrail_check_secs.unwrap_or(15));
        let mut last = self.last_watch.lock().expect("watch lock");
        if last.is_some_and(|t| t.elapsed() < every) {
            return false;
        }
        *last = Some(std::time::Instant::now());
        true
    }

    /// One round of every sink: each settles what it handed over before, then takes
    /// the deliveries ready for it. Returns how many were handed over.
    pub async fn dispatch(&self, now: Timestamp) -> anyhow::Result<u64> {
        let mut handed = 0;
        for sink in &self.sinks {
            // One sink's trouble (WeCom unreachable) does not hold up the others.
            if let Err(e) = sink.settle(now).await {
                tracing::warn!(sink = %sink.name(), error = %format!("{e:#}"), "settling a sink failed this round");
            }
            handed += self.dispatch_to(sink.as_ref(), now).await?;
        }
        Ok(handed)
    }

    /// Hands a sink the deliveries ready for it, a batch at a time. Each batch re-checks
    /// the policy (a touch that no longer passes is suppressed and its cap slot
    /// released), stores the rendered content of touches that had none before sending
    /// them (so a re-send after a crash carries the same words), and sends; a failed
    /// batch is tried again next tick.
    async fn dispatch_to(&self, sink: &dyn Sink, now: Timestamp) -> anyhow::Result<u64> {
        let (status, limit) = (sink.takes(), sink.batch_size());
        let mut handed = 0;
        loop {
            let due = self.store.run(move |db| Box::pin(async move { ready_for(db, status, now, limit).await })).await?;
            if due.is_empty() {
                return Ok(handed);
            }
            let full_batch = due.len() as i64 == limit;
            let due = self.stop_what_no_longer_passes(due, status, now).await?;
            let outgoing = render::rendered_once(self, &due).await?;
            let (due, outgoing) = self.drop_unaddressable(due, outgoing, now).await?;
            let ids: Vec<i64> = due.iter().map(|d| d.id).collect();
            if ids.is_empty() {
                if !full_batch {
                    return Ok(handed);
                }
                continue;
            }
            match sink.send(&outgoing).await {
                Ok(Handed::Sent) => {
                    handed += ids.len() as u64;
                    self.store.run(move |db| Box::pin(async move { stored::mark_deliveries(db, &ids, DeliveryStatus::Sent, None, now).await })).await?;
                }
                Ok(Handed::Later) => handed += ids.len() as u64,
                Err(e) => {
                    tracing::warn!(sink = %sink.name(), error = %e, deliveries = ids.len(), "dispatch failed; retrying next round");
                    if status == DeliveryStatus::Queued {
                        self.store.run(move |db| Box::pin(async move { stored::note_waiting(db, &ids, waiting::WEBHOOK).await })).await?;
                    }
                    return Ok(handed);
                }
            }
            if !full_batch {
                return Ok(handed);
            }
        }
    }

    /// Suppresses the due touches (all in `status`) the policy would no longer let
    /// through, releases their slots in the ledger, and returns the rest.
    pub async fn stop_what_no_longer_passes(
        &self,
        due: Vec<stored::DeliveryRow>,
        status: DeliveryStatus,
        now: Timestamp,
    ) -> anyhow::Result<Vec<stored::DeliveryRow>> {
        let verdicts = audience::recheck(self, &due, now).await?;
        let stopped: Vec<(i64, &'static str)> = due.iter().zip(&verdicts).filter_map(|(d, r)| r.map(|r| (d.id, r.code()))).collect();
        if stopped.is_empty() {
            return Ok(due);
        }
        let mut ledger = self.ledger.lock().await;
        let done: HashSet<i64> =
            self.store.transaction(move |db| Box::pin(async move { stored::suppress_unsent(db, status, &stopped, now).await })).await?.into_iter().collect();
        release_slots(&mut ledger, due.iter().filter(|d| done.contains(&d.id)));
        drop(ledger);
        tracing::info!(stopped = done.len(), status = status.as_str(), "touches stopped at send time (consent withdrawn, blocked or merged since planning)");
        Ok(due.into_iter().zip(verdicts).filter(|(_, r)| r.is_none()).map(|(d, _)| d).collect())
    }

    /// Touches that cannot be addressed (an SMS without a phone, an e-mail without an
    /// address, an official-account message without an openid) fail with `no_address`
    /// (a WeCom touch without the customer's external_userid or a guide with
    /// `no_external_userid`) and give their cap slots back; the rest are returned to be
    /// sent.
    async fn drop_unaddressable(
        &self,
        due: Vec<stored::DeliveryRow>,
        outgoing: Vec<Outgoing>,
        now: Timestamp,
    ) -> anyhow::Result<(Vec<stored::DeliveryRow>, Vec<Outgoing>)> {
        let (sendable, unreachable): (Vec<_>, Vec<_>) = due.into_iter().zip(outgoing).partition(|(_, o)| addressable(o));
        let mut ledger = self.ledger.lock().await;
        for reason in ["no_address", "no_external_userid"] {
            let failing: Vec<&stored::DeliveryRow> = unreachable.iter().map(|(d, _)| d).filter(|d| unaddressed_reason(d.channel) == reason).collect();
            if failing.is_empty() {
                continue;
            }
            let ids: Vec<i64> = failing.iter().map(|d| d.id).collect();
            let n = ids.len();
            self.store.run(move |db| Box::pin(async move { stored::mark_deliveries(db, &ids, DeliveryStatus::Failed, Some(reason), now).await })).await?;
            release_slots(&mut ledger, failing.into_iter());
            tracing::info!(deliveries = n, reason, "touches without an address for their channel failed");
        }
        Ok(sendable.into_iter().unzip())
    }

    /// Reminders before deadlines; late tasks expire.
    async fn tasks(&self, now: Timestamp) -> anyhow::Result<()> {
        let before = self.config.reminder_hours.unwrap_or(2) as i64 * 3_600_000;
        let (reminded, expired) = self
            .store
            .run(move |db| Box::pin(async move { Ok((stored::due_reminders(db, now, before).await?, stored::expire_tasks(db, now).await?)) }))
            .await?;
        for t in reminded {
            tracing::info!(task = t.id, guide = %t.guide, deadline = %t.deadline, "task reminder");
            self.remind_in_wecom(&t).await;
        }
        if !expired.is_empty() {
            tracing::info!(tasks = ?expired, "tasks expired");
        }
        Ok(())
    }

    /// A task reminder as a WeCom app message to the guide, when the WeCom secret is a
    /// self-built app's with its `agent_id` configured. Each task is reminded once (the
    /// store marks it before this runs); a failed send is logged, not retried, so a
    /// guide is never reminded twice.
    async fn remind_in_wecom(&self, task: &stored::TaskRow) {
        let Some((client, agent)) = self.wecom.as_ref().and_then(|c| c.agent_id.map(|a| (c, a))) else { return };
        let store_id = task.store_id.clone();
        let zone = self
            .store
            .run(move |db| {
                Box::pin(async move {
                    Ok(match store_id {
                        Some(id) => siyu_store::org::get_store(db, &id).await?.map(|s| s.time_zone),
                        None => None,
                    })
                })
            })
            .await
            .ok()
            .flatten();
        let text = reminder_text(task, siyu_outreach::quiet::zone(zone.as_deref()));
        match client.send_text_message(agent, &[task.guide.as_str()], &text).await {
            Ok(invalid) if invalid.is_empty() => tracing::info!(task = task.id, guide = %task.guide, "task reminder sent to the guide's WeCom"),
            Ok(_) => {
                tracing::warn!(task = task.id, guide = %task.guide, "WeCom could not reach the guide with the task reminder (not in the app's visible range?)")
            }
            Err(e) => tracing::warn!(task = task.id, guide = %task.guide, error = %e, "the task reminder could not be sent through WeCom"),
        }
    }
}

/// "「秋季新豆」will close at 11-30 18:00: please confirm or skip the customers still
/// waiting in Siyu.", with the deadline in the guide's store's time zone.
fn reminder_text(task: &stored::TaskRow, zone: chrono_tz::Tz) -> String {
    let deadline = task.deadline.to_datetime().with_timezone(&zone).format("%m-%d %H:%M");
    format!("任务提醒：「{}」将于 {deadline} 截止，请尽快在 Siyu 导购任务中确认或跳过待发送的客户。", task.title)
}

/// Gives back the cap slots of marketing touches that will not go out after all.
fn release_slots<'a>(ledger: &mut ContactLedger, rows: impl Iterator<Item = &'a stored::DeliveryRow>) {
    for d in rows.filter(|d| d.kind == TouchKind::Marketing) {
        ledger.release(d.profile_id.bit(), d.due_at, d.channel);
    }
}

/// Whether a touch names what its channel sends to: a phone, an e-mail address, an
/// openid, or for WeCom the customer's external_userid and the guide who sends it.
fn addressable(out: &Outgoing) -> bool {
    let needs = match out.channel {
        Channel::Sms => "phone",
        Channel::Email => "email",
        Channel::OfficialAccount => "openid",
        Channel::Wecom if out.guide.is_none() => return false,
        Channel::Wecom => "external_userid",
        Channel::Webhook => return true,
    };
    out.to.get(needs).and_then(|v| v.as_str()).is_some_and(|v| !v.is_empty())
}

/// The failure reason of a touch [`addressable`] refused.
fn unaddressed_reason(channel: Channel) -> &'static str {
    if channel == Channel::Wecom { "no_external_userid" } else { "no_address" }
}

/// Deliveries ready for a sink that takes this status.
async fn ready_for(db: &mut dyn siyu_store::sql::Db, status: DeliveryStatus, now: Timestamp, limit: i64) -> Result<Vec<stored::DeliveryRow>, StoreError> {
    match status {
        DeliveryStatus::Confirmed => siyu_store::wecom::confirmed_unsent(db, limit).await,
        _ => stored::due_deliveries(db, now, limit).await,
    }
}

/// Runs CPU-heavy work (planning millions of touches takes seconds) without holding up
/// the runtime's worker threads: tokio moves their other tasks elsewhere meanwhile.
pub fn off_the_runtime<T>(work: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(work),
        _ => work(),
    }
}

/// The background loop, until `stop` (a round under way finishes first).
pub async fn run(outreach: Arc<Outreach>, stop: tokio_util::sync::CancellationToken) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut round = 0u64;
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stop.cancelled() => return,
        }
        round += 1;
        // Log lines of one round (a campaign planned, a dispatch failure) share its span.
        let span = tracing::info_span!("outreach_round", round);
        if let Err(e) = tracing::Instrument::instrument(outreach.tick(), span.clone()).await {
            let _in_round = span.enter();
            tracing::warn!(error = %e, "outreach round failed");
        }
    }
}
