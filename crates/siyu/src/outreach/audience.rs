//! What the policy needs to know about an audience, read from the segment engine as
//! sets: who consented to the channel, who is inside the block cooldown, and who owns
//! each customer (the guide, and through the guide's store, the customer's time zone).

use std::collections::HashMap;

use chrono_tz::Tz;
use roaring::RoaringBitmap;
use siyu_core::rule::{parse, Channel, Rule};
use siyu_core::Timestamp;
use siyu_outreach::plan::Owners;
use siyu_outreach::quiet::zone;
use siyu_store::org;

use super::Outreach;

/// Consent, cooldown and owners for one audience.
pub struct Facts {
    pub consent: RoaringBitmap,
    pub blocked: RoaringBitmap,
    pub owners: Owners,
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
    Ok(Facts { consent, blocked, owners })
}
