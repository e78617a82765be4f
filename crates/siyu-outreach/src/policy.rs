//! The contact policy: what decides whether a marketing touch goes out, when, and why not.
//!
//! Each rule below is a function of (the touch, the profile's facts, the ledger) that
//! either lets the touch through or stops it with a [`Reason`]; quiet hours move it
//! instead. [`decide`] applies them in the order the product promises, and the first
//! rule that stops a touch is the reason recorded on its delivery.

use std::collections::BTreeMap;

use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use siyu_core::Timestamp;
use siyu_core::rule::Channel;
use utoipa::ToSchema;

use crate::ledger::{ContactLedger, DAY_MS};
use crate::quiet::QuietHours;

pub use siyu_core::delivery::TouchKind;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Caps {
    /// At most this many touches in any 24 hours.
    pub daily: u32,
    /// At most this many in any 7 days.
    pub weekly: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(default)]
pub struct ContactPolicy {
    /// Across all channels. Default 1 a day, 3 a week: the brands in the seeds that kept
    /// block rates low touched customers a few times a week at most.
    pub caps: Caps,
    /// Per channel, on top of the global caps (e.g. `{"sms": {"daily": 1, "weekly": 1}}`).
    pub channel_caps: BTreeMap<String, Caps>,
    /// After a customer removed their guide or complained, no marketing for this long.
    pub block_cooldown_days: u32,
    /// WeCom: how many mass messages a customer may receive in any 30 days. WeCom's
    /// default is as many as the month has days; corps can choose stricter settings
    /// (7 a week, 1 a day): set this to match the corp.
    pub wecom_monthly_cap: u32,
    /// WeCom: customers per mass-message task (`add_msg_template` takes at most 10,000).
    pub wecom_task_limit: usize,
    /// `null` turns quiet hours off.
    pub quiet_hours: Option<QuietHours>,
    /// Customers a guide is asked to message per day.
    pub guide_daily_capacity: u32,
}

/// Events that count as a block or a complaint.
pub const BLOCK_EVENTS: [&str; 2] = ["Contact Deleted", "Message Complained"];

impl ContactPolicy {
    /// The segment rule selecting customers inside the block cooldown.
    pub fn cooldown_rule(&self) -> String {
        let d = self.block_cooldown_days.max(1);
        BLOCK_EVENTS.iter().map(|e| format!("last(\"{e}\") >= ago({d}d)")).collect::<Vec<_>>().join(" or ")
    }
}

impl Default for ContactPolicy {
    fn default() -> Self {
        ContactPolicy {
            caps: Caps { daily: 1, weekly: 3 },
            channel_caps: BTreeMap::new(),
            block_cooldown_days: 30,
            wecom_monthly_cap: 30,
            wecom_task_limit: 10_000,
            quiet_hours: Some(QuietHours::default()),
            guide_daily_capacity: 200,
        }
    }
}

/// Why a touch was not sent. The codes are stable: they are stored and returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    NoConsent,
    BlockCooldown,
    DailyCap,
    WeeklyCap,
    ChannelDailyCap,
    ChannelWeeklyCap,
    WecomMonthlyCap,
    Holdout,
    NoGuide,
    GuideCapacity,
    /// Found at send time: the profile was merged into another (or erased) after the
    /// touch was planned.
    Merged,
}

impl Reason {
    pub const ALL: [Reason; 11] = [
        Reason::NoConsent,
        Reason::BlockCooldown,
        Reason::DailyCap,
        Reason::WeeklyCap,
        Reason::ChannelDailyCap,
        Reason::ChannelWeeklyCap,
        Reason::WecomMonthlyCap,
        Reason::Holdout,
        Reason::NoGuide,
        Reason::GuideCapacity,
        Reason::Merged,
    ];

    pub fn code(self) -> &'static str {
        match self {
            Reason::NoConsent => "no_consent",
            Reason::BlockCooldown => "block_cooldown",
            Reason::DailyCap => "daily_cap",
            Reason::WeeklyCap => "weekly_cap",
            Reason::ChannelDailyCap => "channel_daily_cap",
            Reason::ChannelWeeklyCap => "channel_weekly_cap",
            Reason::WecomMonthlyCap => "wecom_monthly_cap",
            Reason::Holdout => "holdout",
            Reason::NoGuide => "no_guide",
            Reason::GuideCapacity => "guide_capacity",
            Reason::Merged => "merged",
        }
    }

    pub fn parse(code: &str) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.code() == code)
    }

    /// What a person reads next to a suppressed delivery.
    pub fn explain(self) -> &'static str {
        match self {
            Reason::NoConsent => "the customer has not consented to this channel",
            Reason::BlockCooldown => "the customer removed their guide or complained recently",
            Reason::DailyCap => "the customer already had a marketing touch in the last 24 hours",
            Reason::WeeklyCap => "the customer reached the weekly cap on marketing touches",
            Reason::ChannelDailyCap => "the customer reached this channel's daily cap",
            Reason::ChannelWeeklyCap => "the customer reached this channel's weekly cap",
            Reason::WecomMonthlyCap => "WeCom allows only a few mass messages per customer per month",
            Reason::Holdout => "in the holdout group, kept out to measure lift",
            Reason::NoGuide => "WeCom messages go through a guide, and the customer has none",
            Reason::GuideCapacity => "the customer's guide has reached their daily task capacity",
            Reason::Merged => "the customer's profile was merged into another after the touch was planned, and that one has the same touch",
        }
    }
}

/// One intended touch.
#[derive(Debug, Clone, Copy)]
pub struct Touch<'a> {
    pub profile: u32,
    pub channel: Channel,
    pub kind: TouchKind,
    pub now: Timestamp,
    /// The campaign or journey step: the holdout is drawn per source.
    pub source: &'a str,
    /// Percent of the audience held out (0–100).
    pub holdout_percent: f64,
}

/// What the policy needs to know about the customer.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    pub consent: bool,
    /// The customer removed their guide (`Contact Deleted`) or complained
    /// (`Message Complained`) within the cooldown: see [`ContactPolicy::cooldown_rule`].
    pub recently_blocked: bool,
    /// The customer's zone: quiet hours are the customer's night.
    pub zone: Tz,
    /// The guide's zone (their store's): a guide's daily capacity counts their days.
    pub guide_zone: Tz,
    /// The guide who would send it (WeCom), chosen by the caller.
    pub guide: Option<&'a str>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Goes out at `at`; `deferred` when quiet hours moved it.
    Send {
        at: Timestamp,
        deferred: bool,
    },
    Suppress(Reason),
}

/// Applies the policy in order and, when the touch goes out, records it in the ledger
/// (under the same lock, so concurrent planners see each other's touches).
pub fn decide(policy: &ContactPolicy, touch: &Touch, facts: &Facts, ledger: &mut ContactLedger) -> Decision {
    let decision = evaluate(policy, touch, facts, ledger);
    if let Decision::Send { at, .. } = decision {
        if touch.kind == TouchKind::Marketing {
            ledger.record(touch.profile, at, touch.channel);
        }
        if let Some(g) = facts.guide.filter(|_| touch.channel == Channel::Wecom) {
            ledger.record_guide(g, local_day(at, facts.guide_zone));
        }
    }
    decision
}

/// The decision without recording it (used by the dry run on a scratch ledger too).
pub fn evaluate(policy: &ContactPolicy, touch: &Touch, facts: &Facts, ledger: &ContactLedger) -> Decision {
    if let Err(r) = consent(facts) {
        return Decision::Suppress(r);
    }
    if touch.kind == TouchKind::Service {
        return Decision::Send { at: touch.now, deferred: false };
    }
    // The holdout is drawn from the eligible audience (consented, not blocked) before
    // any cap, so held-out customers take no slot and the two groups are alike: the
    // sent group is then the eligible audience minus the holdout, less whoever caps stop.
    let checks = [cooldown(facts), holdout(touch), frequency_caps(policy, touch, ledger), platform_rules(policy, touch, ledger)];
    if let Some(Err(r)) = checks.into_iter().find(Result::is_err) {
        return Decision::Suppress(r);
    }
    let (at, deferred) = match quiet_hours(policy, touch, facts) {
        Some(until) => (until, true),
        None => (touch.now, false),
    };
    if let Err(r) = staff(policy, touch, facts, ledger, at) {
        return Decision::Suppress(r);
    }
    Decision::Send { at, deferred }
}

pub fn consent(facts: &Facts) -> Result<(), Reason> {
    if facts.consent { Ok(()) } else { Err(Reason::NoConsent) }
}

pub fn cooldown(facts: &Facts) -> Result<(), Reason> {
    if facts.recently_blocked { Err(Reason::BlockCooldown) } else { Ok(()) }
}

pub fn frequency_caps(policy: &ContactPolicy, touch: &Touch, ledger: &ContactLedger) -> Result<(), Reason> {
    let (p, now) = (touch.profile, touch.now);
    if ledger.count(p, now, DAY_MS, None) >= policy.caps.daily {
        return Err(Reason::DailyCap);
    }
    if ledger.count(p, now, 7 * DAY_MS, None) >= policy.caps.weekly {
        return Err(Reason::WeeklyCap);
    }
    if let Some(caps) = policy.channel_caps.get(touch.channel.as_str()) {
        if ledger.count(p, now, DAY_MS, Some(touch.channel)) >= caps.daily {
            return Err(Reason::ChannelDailyCap);
        }
        if ledger.count(p, now, 7 * DAY_MS, Some(touch.channel)) >= caps.weekly {
            return Err(Reason::ChannelWeeklyCap);
        }
    }
    Ok(())
}

/// WeCom's own limits. (The per-task limit does not stop anyone: tasks are split.)
pub fn platform_rules(policy: &ContactPolicy, touch: &Touch, ledger: &ContactLedger) -> Result<(), Reason> {
    if touch.channel == Channel::Wecom && ledger.count(touch.profile, touch.now, 30 * DAY_MS, Some(Channel::Wecom)) >= policy.wecom_monthly_cap {
        return Err(Reason::WecomMonthlyCap);
    }
    Ok(())
}

pub fn quiet_hours(policy: &ContactPolicy, touch: &Touch, facts: &Facts) -> Option<Timestamp> {
    policy.quiet_hours.as_ref().and_then(|q| q.defer_until(touch.now, facts.zone))
}

/// A stable draw per (source, profile): the same customers stay held out when a plan
/// is previewed, run, or resumed.
pub fn holdout(touch: &Touch) -> Result<(), Reason> {
    if touch.holdout_percent > 0.0 && in_holdout(touch.source, touch.profile, touch.holdout_percent) {
        return Err(Reason::Holdout);
    }
    Ok(())
}

/// FNV-1a: a stable hash (the same on every machine and release) for draws and codes
/// that must not change across runs.
pub fn fnv1a(bytes: impl IntoIterator<Item = u8>) -> u64 {
    bytes.into_iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

pub fn in_holdout(source: &str, profile: u32, percent: f64) -> bool {
    let mut h = fnv1a(source.bytes().chain(profile.to_le_bytes()));
    // Mix the low bits; FNV's are weak for short inputs.
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    ((h % 10_000) as f64) < percent * 100.0
}

pub fn staff(policy: &ContactPolicy, touch: &Touch, facts: &Facts, ledger: &ContactLedger, at: Timestamp) -> Result<(), Reason> {
    if touch.channel != Channel::Wecom {
        return Ok(());
    }
    let Some(guide) = facts.guide else { return Err(Reason::NoGuide) };
    if ledger.guide_load(guide, local_day(at, facts.guide_zone)) >= policy.guide_daily_capacity {
        return Err(Reason::GuideCapacity);
    }
    Ok(())
}

/// The calendar day number of `at` in `zone`.
pub fn local_day(at: Timestamp, zone: Tz) -> i64 {
    use chrono::Offset;
    let offset = at.to_datetime().with_timezone(&zone).offset().fix().local_minus_utc() as i64;
    (at.0 + offset * 1000).div_euclid(DAY_MS)
}
