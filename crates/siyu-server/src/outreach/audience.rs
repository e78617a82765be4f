//! What the policy needs to know about an audience, read from the segment engine as
//! sets: who consented to the channel, who is inside the block cooldown, who owns each
//! customer (the guide, and through the guide's store, the guide's time zone) and the
//! zone of customers who gave their own.

use std::collections::HashMap;

use chrono_tz::Tz;
use roaring::RoaringBitmap;
use siyu_core::Timestamp;
use siyu_core::rule::{Channel, Rule, parse};
use siyu_outreach::plan::{Audience, Owners};
use siyu_outreach::policy::Reason;
use siyu_outreach::quiet::zone;
use siyu_store::org;

use super::Outreach;

/// Consent, cooldown and owners for one audience.
pub struct Facts {
    pub consent: RoaringBitmap,
    pub blocked: RoaringBitmap,
    pub owners: Owners,
    /// Customers with a zone of their own (the `timezone` trait).
    pub own_zones: HashMap<u32, Tz>,
}

impl Facts {
    /// `members` as the planner sees them, with these facts.
    pub fn audience<'a>(&'a self, members: &'a RoaringBitmap) -> Audience<'a> {
        Audience { members, consent: &self.consent, blocked: &self.blocked, owners: &self.owners, own_zones: &self.own_zones, default_zone: zone(None) }
    }
}

/// Each guide's zone: their store's.
pub async fn guide_zones(o: &Outreach) -> Result<HashMap<String, Tz>, siyu_store::StoreError> {
    let stores: HashMap<String, Tz> = o.store.run(|db| Box::pin(org::store_zones(db))).await?.into_iter().map(|(id, tz)| (id, zone(Some(&tz)))).collect();
    let state = o.engine.read();
    Ok(state
        .index
        .guide_sets()
        .map(|(g, _)| (g.to_string(), state.index.store_of(g).and_then(|s| stores.get(s)).copied().unwrap_or_else(|| zone(None))))
        .collect())
}

fn rule(text: &str) -> anyhow::Result<Rule> {
    parse(text).map_err(|e| anyhow::anyhow!("internal rule {text:?}: {e}"))
}

/// A saved segment's live members.
pub async fn segment_members(o: &Outreach, segment: &str, now: Timestamp) -> anyhow::Result<RoaringBitmap> {
    let text = format!("segment = {}", serde_json::to_string(segment)?);
    Ok(o.engine.evaluate(&rule(&text)?, now).await?)
}

pub async fn facts(o: &Outreach, members: &RoaringBitmap, channel: Channel, now: Timestamp) -> anyhow::Result<Facts> {
    let consent = o.engine.evaluate(&Rule::Consent(channel), now).await?;
    let blocked = o.engine.evaluate(&rule(&o.policy().cooldown_rule())?, now).await?;
    let zones = guide_zones(o).await?;
    let owners = {
        let state = o.engine.read();
        Owners::build(state.index.guide_sets().collect(), |g| zones.get(g).copied().unwrap_or_else(|| zone(None)), members)
    };
    let own_zones = own_zones(o, members, now).await?;
    Ok(Facts { consent, blocked, owners, own_zones })
}

/// The trait a customer's own time zone is read from: an IANA name such as
/// `Europe/London` (identify it, or import it as a column).
pub const TIMEZONE_TRAIT: &str = "timezone";

/// A customer's own zone, if the trait names a valid one.
fn own_zone(index: &siyu_engine::Index, p: u32) -> Option<Tz> {
    index.trait_value(TIMEZONE_TRAIT, p)?.as_str()?.trim().parse().ok()
}

/// The members who gave a valid time zone of their own. Quiet hours are the
/// customer's night: their own zone wins over their guide's store's.
pub async fn own_zones(o: &Outreach, members: &RoaringBitmap, now: Timestamp) -> anyhow::Result<HashMap<u32, Tz>> {
    let with_zone = o.engine.evaluate(&rule(&format!("{TIMEZONE_TRAIT} exists"))?, now).await? & members;
    let state = o.engine.read();
    Ok(with_zone.iter().filter_map(|p| Some((p, own_zone(&state.index, p)?))).collect())
}

/// Where one customer is: their own zone, else their guide's (`guide_zone`). Reads
/// the profile's value, not a scan of everyone (journeys ask this per step).
pub async fn customer_zone(o: &Outreach, p: u32, guide_zone: Tz, now: Timestamp) -> anyhow::Result<Tz> {
    index_for(o, &rule(&format!("{TIMEZONE_TRAIT} exists"))?, now).await?;
    Ok(own_zone(&o.engine.read().index, p).unwrap_or(guide_zone))
}

/// Builds what a rule needs in the engine's index, once; afterwards a no-op.
async fn index_for(o: &Outreach, r: &Rule, now: Timestamp) -> anyhow::Result<()> {
    let needs_index = {
        let st = o.engine.read();
        !siyu_engine::eval::missing(&st.index, &st.segments, r).is_empty()
    };
    if needs_index {
        o.engine.evaluate(r, now).await?;
    }
    Ok(())
}

/// The same facts for one customer (a journey's send), without scanning everyone:
/// (consent, inside the cooldown, guide, the guide's zone, the customer's zone).
pub async fn facts_of(o: &Outreach, p: u32, channel: Channel, now: Timestamp) -> anyhow::Result<(bool, bool, Option<String>, Tz, Tz)> {
    let consent = Rule::Consent(channel);
    let cooldown = rule(&o.policy().cooldown_rule())?;
    for r in [&consent, &cooldown] {
        index_for(o, r, now).await?;
    }
    let (consented, blocked) = {
        let st = o.engine.read();
        let cx = st.cx(now);
        (siyu_engine::eval::eval_one(&cx, &consent, p), siyu_engine::eval::eval_one(&cx, &cooldown, p))
    };
    let (guide, guide_zone) = match guide_of(o, p).await? {
        Some((g, z)) => (Some(g), z),
        None => (None, zone(None)),
    };
    let customer_zone = customer_zone(o, p, guide_zone, now).await?;
    Ok((consented, blocked, guide, guide_zone, customer_zone))
}

/// A customer's guide (the first by name, as for broadcasts) and the zone of their store.
pub async fn guide_of(o: &Outreach, p: u32) -> anyhow::Result<Option<(String, Tz)>> {
    let guide = o.engine.read().index.guide_sets().filter(|(_, b)| b.contains(p)).map(|(g, _)| g).min().map(str::to_string);
    let Some(guide) = guide else { return Ok(None) };
    let z = guide_zones(o).await?.get(&guide).copied().unwrap_or_else(|| zone(None));
    Ok(Some((guide, z)))
}

/// The policy again, at send time, for queued touches: the reason each one must not go
/// out any more, if any. Between planning and sending (quiet hours, a webhook down, a
/// long batch) a customer can withdraw consent, complain or delete their guide, and
/// profiles can merge; caps and quiet hours were settled at planning and stay so.
pub async fn recheck(o: &Outreach, due: &[siyu_store::outreach::DeliveryRow], now: Timestamp) -> anyhow::Result<Vec<Option<Reason>>> {
    let cooldown = rule(&o.policy().cooldown_rule())?;
    let mut channels: Vec<Channel> = due.iter().map(|d| d.channel).collect();
    channels.sort_by_key(|c| c.as_str());
    channels.dedup();
    for r in channels.into_iter().map(Rule::Consent).chain([cooldown.clone()]) {
        index_for(o, &r, now).await?;
    }
    let st = o.engine.read();
    let cx = st.cx(now);
    Ok(due
        .iter()
        .map(|d| {
            let p = d.profile_id.bit();
            if !st.index.alive().contains(p) {
                return Some(Reason::Merged);
            }
            let consented = siyu_engine::eval::eval_one(&cx, &Rule::Consent(d.channel), p);
            if !consented {
                return Some(Reason::NoConsent);
            }
            let marketing = d.kind == siyu_outreach::TouchKind::Marketing;
            (marketing && siyu_engine::eval::eval_one(&cx, &cooldown, p)).then_some(Reason::BlockCooldown)
        })
        .collect())
}
