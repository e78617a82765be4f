//! `Segment Entered` / `Segment Exited` events, exactly once.
//!
//! The engine reports membership in order ([`MembershipReport`]). The reporter keeps
//! what it has *reported* — a copy of each segment's members as told in events, moved
//! only after the events are durable in the ingest log — and turns each change into an
//! event only when it differs from that copy. Now and then (and at shutdown) the copy
//! is saved with the highest event id stored at that moment.
//!
//! At start the copy is rebuilt from the saved one plus every membership event stored
//! after it (the ingest log is replayed into the store first), so it says exactly what
//! was reported before a restart or a `kill -9`; then the engine's current members are
//! compared with it, and only the difference is reported. Nothing is reported twice or
//! lost. Message ids are `segment:NAME:PROFILE:in|out:EPOCH:N` — an epoch per start
//! and a running number — so a retried submission is stored once.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use roaring::RoaringBitmap;
use siyu_core::Timestamp;
use siyu_core::message::Message;
use siyu_engine::{Clock, Engine, MembershipChange, MembershipReport, decode_members, encode_members};
use siyu_store::ingest::IngestHandle;
use siyu_store::segments as stored;
use siyu_store::{Store, StoreError, counters};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_util::sync::CancellationToken;

const EPOCH: &str = "membership_epoch";
/// How often the reported copy is saved (a restart reads the events since).
const SAVE_EVERY: Duration = Duration::from_secs(60);
/// Events per submission to the ingest log.
const CHUNK: usize = 10_000;

struct Reported {
    rule: String,
    members: RoaringBitmap,
}

pub struct Reporter {
    store: Store,
    ingest: IngestHandle,
    clock: Clock,
    reported: BTreeMap<String, Reported>,
    epoch: i64,
    next: u64,
}

impl Reporter {
    /// Rebuilds what was reported before (after the ingest log has been replayed into
    /// the store) and starts a new epoch of message ids.
    pub async fn load(store: Store, ingest: IngestHandle, clock: Clock) -> Result<Reporter, StoreError> {
        ingest.settle().await;
        let saved = store.run(|db| Box::pin(stored::reported_members(db))).await?;
        let hwm = saved.iter().map(|s| s.hwm).min().unwrap_or(0);
        let mut reported: BTreeMap<String, Reported> =
            saved.into_iter().map(|s| (s.segment, Reported { rule: s.rule, members: decode_members(&s.members) })).collect();
        let mut after = hwm;
        loop {
            let page = store.run(move |db| Box::pin(stored::membership_events_after(db, after, 10_000))).await?;
            let Some((last, ..)) = page.last() else { break };
            after = *last;
            for (_, profile, entered, segment) in page {
                if let Some(r) = reported.get_mut(&segment) {
                    if entered {
                        r.members.insert(profile.bit());
                    } else {
                        r.members.remove(profile.bit());
                    }
                }
            }
        }
        let epoch = store
            .transaction(|db| {
                Box::pin(async move {
                    counters::add(db, EPOCH, 1).await?;
                    counters::get(db, EPOCH).await
                })
            })
            .await?;
        Ok(Reporter { store, ingest, clock, reported, epoch, next: 0 })
    }

    fn message(&mut self, c: &MembershipChange, now: Timestamp) -> Message {
        let (event, dir) = if c.entered { ("Segment Entered", "in") } else { ("Segment Exited", "out") };
        let id = format!("segment:{}:{}:{dir}:{}:{}", c.segment, c.profile, self.epoch, self.next);
        self.next += 1;
        siyu_core::Message::internal(siyu_core::ProfileId::from_bit(c.profile), event, id, serde_json::json!({ "segment": c.segment }), now)
    }

    /// Reports the changes that differ from what was reported; the copy moves only once
    /// the events are durable (a failed submission is retried with the same ids).
    async fn report(&mut self, changes: Vec<MembershipChange>) {
        let now = self.clock.now();
        let mut news = Vec::new();
        let mut pending: HashMap<(String, u32), bool> = HashMap::new();
        for c in changes {
            let Some(r) = self.reported.get(&c.segment) else { continue };
            let is_in = pending.get(&(c.segment.clone(), c.profile)).copied().unwrap_or_else(|| r.members.contains(c.profile));
            if is_in != c.entered {
                pending.insert((c.segment.clone(), c.profile), c.entered);
                news.push(c);
            }
        }
        if news.is_empty() {
            return;
        }
        let messages: Vec<Message> = news.iter().map(|c| self.message(c, now)).collect();
        for chunk in messages.chunks(CHUNK) {
            let mut delay = Duration::from_millis(100);
            while let Err(e) = self.ingest.submit(chunk.to_vec()).await {
                tracing::error!(error = %e, "could not record segment membership events; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
        for c in news {
            if let Some(r) = self.reported.get_mut(&c.segment) {
                if c.entered {
                    r.members.insert(c.profile);
                } else {
                    r.members.remove(c.profile);
                }
            }
        }
    }

    async fn handle(&mut self, report: MembershipReport) {
        match report {
            MembershipReport::Changes(changes) => self.report(changes).await,
            // A definition is saved at once: after a crash, the events reported since
            // must find the segment they belong to.
            MembershipReport::Defined { segment, rule, members } => {
                self.reported.insert(segment, Reported { rule, members });
                self.save_or_warn().await;
            }
            MembershipReport::Removed(segment) => {
                self.reported.remove(&segment);
                self.save_or_warn().await;
            }
            MembershipReport::Current(current) => {
                let mut changes = Vec::new();
                let mut now_defined = BTreeMap::new();
                for (segment, rule, members) in current {
                    match self.reported.remove(&segment) {
                        // What changed while nobody was reporting.
                        Some(r) if r.rule == rule => {
                            changes.extend((&members - &r.members).iter().map(|p| MembershipChange { segment: segment.clone(), profile: p, entered: true }));
                            changes.extend((&r.members - &members).iter().map(|p| MembershipChange { segment: segment.clone(), profile: p, entered: false }));
                            now_defined.insert(segment, r);
                        }
                        // New, or its rule changed: its members begin here.
                        _ => {
                            now_defined.insert(segment, Reported { rule, members });
                        }
                    }
                }
                self.reported = now_defined;
                if !changes.is_empty() {
                    tracing::info!(changes = changes.len(), "segment membership changed while Siyu was not reporting it");
                }
                self.report(changes).await;
            }
        }
    }

    /// Saves the reported copy with the highest event id stored now: every membership
    /// event not yet stored will get a higher one.
    async fn save(&self) -> Result<(), StoreError> {
        let snapshot: Vec<(String, String, String)> = self.reported.iter().map(|(n, r)| (n.clone(), r.rule.clone(), encode_members(&r.members))).collect();
        let now = self.clock.now();
        self.store
            .transaction(move |db| {
                Box::pin(async move {
                    let hwm = siyu_store::outreach::max_event_id(db).await?;
                    let all: Vec<stored::ReportedMembers> =
                        snapshot.into_iter().map(|(segment, rule, members)| stored::ReportedMembers { segment, rule, members, hwm }).collect();
                    stored::save_reported_members(db, &all, now).await
                })
            })
            .await
    }

    /// Reports until `stop`, then reports what is left and saves the copy.
    pub async fn run(mut self, engine: Engine, mut rx: UnboundedReceiver<MembershipReport>, stop: CancellationToken) {
        // What changed while Siyu was down: the engine's members now against the copy.
        engine.report_current();
        let mut every = tokio::time::interval(SAVE_EVERY);
        every.tick().await;
        loop {
            tokio::select! {
                report = rx.recv() => match report {
                    Some(r) => self.handle(r).await,
                    None => break,
                },
                _ = every.tick() => self.save_or_warn().await,
                _ = stop.cancelled() => {
                    // The engine has stopped: what it reported before is in the channel.
                    while let Ok(r) = rx.try_recv() {
                        self.handle(r).await;
                    }
                    break;
                }
            }
        }
        self.save_or_warn().await;
    }

    async fn save_or_warn(&self) {
        if let Err(e) = self.save().await {
            tracing::warn!(error = %e, "could not save reported segment membership");
        }
    }
}
