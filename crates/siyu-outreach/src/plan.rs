//! Planning a broadcast: every member of the audience goes through the contact policy,
//! giving one outcome per customer and a summary (sends, deferrals, suppressions by
//! reason, per-guide task sizes). The same function serves the dry run (on a trial of
//! the ledger, rolled back) and the real run.

use std::collections::{BTreeMap, HashMap};

use chrono_tz::Tz;
use roaring::RoaringBitmap;
use serde::Serialize;
use siyu_core::Timestamp;
use siyu_core::delivery::DeliveryStatus;
use siyu_core::rule::Channel;
use utoipa::ToSchema;

use crate::ledger::ContactLedger;
use crate::policy::{ContactPolicy, Decision, Facts, Reason, Touch, TouchKind, decide};

pub const NO_GUIDE: u32 = u32::MAX;

/// Who owns each customer: the guide who would send a WeCom message, and the zone of
/// the guide's store (the customer's local time for quiet hours).
#[derive(Debug, Default, Clone)]
pub struct Owners {
    pub guides: Vec<String>,
    pub zones: Vec<Tz>,
    /// Per dense profile id: an index into `guides`, or [`NO_GUIDE`].
    pub owner: Vec<u32>,
}

impl Owners {
    pub fn of(&self, p: u32) -> Option<u32> {
        self.owner.get(p as usize).copied().filter(|&g| g != NO_GUIDE)
    }

    /// Owners of `members` from each guide's customers. A customer with several guides
    /// is served by the first by name, so the choice is stable across runs.
    pub fn build<'a>(mut guides: Vec<(&'a str, &'a RoaringBitmap)>, zone_of: impl Fn(&str) -> Tz, members: &RoaringBitmap) -> Owners {
        guides.sort_by_key(|(g, _)| *g);
        let len = members.max().map(|m| m as usize + 1).unwrap_or(0);
        let mut owners = Owners { guides: Vec::new(), zones: Vec::new(), owner: vec![NO_GUIDE; len] };
        for (g, customers) in guides {
            let mine = customers & members;
            if mine.is_empty() {
                continue;
            }
            let gi = owners.guides.len() as u32;
            owners.guides.push(g.to_string());
            owners.zones.push(zone_of(g));
            for p in &mine {
                let slot = &mut owners.owner[p as usize];
                if *slot == NO_GUIDE {
                    *slot = gi;
                }
            }
        }
        owners
    }
}

/// The audience and what the policy needs to know about it, as sets.
pub struct Audience<'a> {
    pub members: &'a RoaringBitmap,
    /// Customers who consented to the channel.
    pub consent: &'a RoaringBitmap,
    /// Customers inside the block cooldown.
    pub blocked: &'a RoaringBitmap,
    pub owners: &'a Owners,
    /// Customers who gave their own zone (the `timezone` trait); the others are where
    /// their guide's store is, or in `default_zone`.
    pub own_zones: &'a HashMap<u32, Tz>,
    pub default_zone: Tz,
}

#[derive(Debug, Clone)]
pub struct PlanOptions {
    pub channel: Channel,
    pub kind: TouchKind,
    pub now: Timestamp,
    /// Campaign and run, e.g. `campaign:7:run:1`: holdouts and idempotency keys use it.
    pub source: String,
    pub holdout_percent: f64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub profile: u32,
    pub decision: Decision,
    pub guide: Option<u32>,
}

#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct PlanSummary {
    pub audience: u64,
    /// Touches that go out (now or after quiet hours).
    pub sends: u64,
    /// Of the sends, those moved to the end of quiet hours.
    pub deferred: u64,
    /// Suppressed touches by reason code.
    pub suppressed: BTreeMap<String, u64>,
    /// WeCom: customers per guide.
    pub per_guide: BTreeMap<String, u64>,
    /// WeCom: mass-message tasks, after splitting at the per-task limit.
    pub tasks: u64,
}

/// Why a touch that has not gone out is still waiting, stored as its delivery's
/// `reason` beside `status: "queued"` or `"pending_staff"`.
pub mod waiting {
    /// Due now: goes out with the next dispatch round (within a second or two).
    pub const DISPATCH: &str = "awaiting_dispatch";
    /// Moved to the end of quiet hours in the customer's zone: `due_at` says when.
    pub const QUIET_HOURS: &str = "deferred_quiet_hours";
    /// The webhook did not accept the last attempt; retried every round.
    pub const WEBHOOK: &str = "retrying_webhook";
    /// A WeCom touch waiting for the guide to confirm it in their task.
    pub const GUIDE: &str = "awaiting_guide";
}

/// How a decision is stored: (status, reason, due time).
pub fn delivery_state(decision: &Decision, channel: Channel, now: Timestamp) -> (DeliveryStatus, &'static str, Timestamp) {
    match *decision {
        Decision::Send { at, .. } if channel == Channel::Wecom => (DeliveryStatus::PendingStaff, waiting::GUIDE, at),
        Decision::Send { at, deferred: true } => (DeliveryStatus::Queued, waiting::QUIET_HOURS, at),
        Decision::Send { at, deferred: false } => (DeliveryStatus::Queued, waiting::DISPATCH, at),
        Decision::Suppress(r) => (DeliveryStatus::Suppressed, r.code(), now),
    }
}

pub fn plan(policy: &ContactPolicy, audience: &Audience, opts: &PlanOptions, ledger: &mut ContactLedger) -> (Vec<Outcome>, PlanSummary) {
    let mut outcomes = Vec::with_capacity(audience.members.len() as usize);
    let mut summary = PlanSummary { audience: audience.members.len(), ..PlanSummary::default() };
    let mut suppressed: BTreeMap<Reason, u64> = BTreeMap::new();
    let mut per_guide = vec![0u64; audience.owners.guides.len()];
    for p in audience.members {
        let guide = audience.owners.of(p);
        let guide_zone = guide.map(|g| audience.owners.zones[g as usize]).unwrap_or(audience.default_zone);
        let facts = Facts {
            consent: audience.consent.contains(p),
            recently_blocked: audience.blocked.contains(p),
            zone: if audience.own_zones.is_empty() { guide_zone } else { audience.own_zones.get(&p).copied().unwrap_or(guide_zone) },
            guide_zone,
            guide: guide.map(|g| audience.owners.guides[g as usize].as_str()),
        };
        let touch = Touch { profile: p, channel: opts.channel, kind: opts.kind, now: opts.now, source: &opts.source, holdout_percent: opts.holdout_percent };
        let decision = decide(policy, &touch, &facts, ledger);
        match &decision {
            Decision::Send { deferred, .. } => {
                summary.sends += 1;
                summary.deferred += *deferred as u64;
                if let (Some(g), Channel::Wecom) = (guide, opts.channel) {
                    per_guide[g as usize] += 1;
                }
            }
            Decision::Suppress(r) => *suppressed.entry(*r).or_default() += 1,
        }
        outcomes.push(Outcome { profile: p, decision, guide });
    }
    summary.suppressed = suppressed.into_iter().map(|(r, n)| (r.code().to_string(), n)).collect();
    for (g, n) in per_guide.into_iter().enumerate().filter(|(_, n)| *n > 0) {
        summary.tasks += n.div_ceil(policy.wecom_task_limit.max(1) as u64);
        summary.per_guide.insert(audience.owners.guides[g].clone(), n);
    }
    (outcomes, summary)
}

/// The dry run: the same plan on a trial of the ledger, taken back afterwards.
pub fn dry_run(policy: &ContactPolicy, audience: &Audience, opts: &PlanOptions, ledger: &mut ContactLedger) -> (Vec<Outcome>, PlanSummary) {
    ledger.begin_trial();
    let result = plan(policy, audience, opts, ledger);
    ledger.rollback();
    result
}
