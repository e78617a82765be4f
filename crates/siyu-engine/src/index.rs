//! The in-memory profile index, keyed by dense profile id.
//!
//! - bitmaps: live profiles, identities present, tags, each guide's active customers;
//! - columns: indexed traits (dictionary-encoded), active WeCom contacts per profile,
//!   lifecycle stage, RFM scores, four-highs scores;
//! - event series: per aggregate key, every profile's event times (and measures).
//!
//! It is built once from rows (a store snapshot, or generated data) and then updated
//! with every committed ingest batch.

use std::collections::{HashMap, HashSet};

use roaring::RoaringBitmap;
use serde_json::Value;
use siyu_core::message::MessageKind;
use siyu_core::rule::{semantics, AggFn, PropertyFilter, Rule};
use siyu_core::{IdentityKind, Timestamp};
use siyu_store::ingest::Committed;

use crate::lifecycle::{self, Cutoffs, Inputs, LifecycleConfig};
use crate::series::Series;
use crate::time::{instant, secs};
use crate::traits::TraitColumn;

/// Traits indexed from the start; others are indexed when a rule first uses them.
pub const DEFAULT_TRAITS: [&str; 12] = [
    "city",
    "store_id",
    "language",
    "taste",
    "tier",
    "gender",
    "acquisition_channel",
    "consent.wecom",
    "consent.sms",
    "consent.email",
    "consent.official_account",
    "consent.webhook",
];

/// What an event aggregate is over: an event name, property filters, and (for sum,
/// min, max) the measured property.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesKey {
    pub event: String,
    pub filters: Vec<PropertyFilter>,
    pub measure: Option<String>,
}

impl SeriesKey {
    pub fn plain(event: &str) -> SeriesKey {
        SeriesKey { event: event.to_string(), filters: Vec::new(), measure: None }
    }

    /// A stable name: the aggregate in the rule language, without window or comparison.
    pub fn id(&self) -> String {
        let rule = Rule::Aggregate(siyu_core::rule::AggregatePredicate {
            func: if self.measure.is_some() { AggFn::Sum } else { AggFn::Count },
            event: self.event.clone(),
            filters: self.filters.clone(),
            measure: self.measure.clone(),
            window: siyu_core::rule::Window::Ever,
            op: siyu_core::rule::Op::Exists,
            value: siyu_core::rule::Operand::None,
        });
        let text = rule.to_string();
        text.trim_end_matches(" exists").to_string()
    }

    /// Whether an event counts, and its measure.
    pub fn accept(&self, payload: &Value, now: Timestamp) -> Option<f64> {
        if !self.filters.iter().all(|f| semantics::filter_matches(payload, f, now)) {
            return None;
        }
        match &self.measure {
            None => Some(f64::NAN),
            Some(m) => Some(semantics::measure_value(payload, m).unwrap_or(f64::NAN)),
        }
    }

    fn needs_payload(&self) -> bool {
        !self.filters.is_empty() || self.measure.is_some()
    }
}

pub(crate) struct Keyed {
    pub key: SeriesKey,
    pub series: Series,
}

/// Who works where: a guide's store, a store's city.
#[derive(Debug, Default, Clone)]
pub struct Org {
    pub staff_store: HashMap<String, String>,
    pub store_city: HashMap<String, String>,
}

pub struct Index {
    pub(crate) config: LifecycleConfig,
    pub(crate) alive: RoaringBitmap,
    len: u32,
    pub(crate) identities: HashMap<IdentityKind, RoaringBitmap>,
    pub(crate) tags: HashMap<String, RoaringBitmap>,
    pub(crate) traits: HashMap<String, TraitColumn>,
    pub(crate) guides: HashMap<String, RoaringBitmap>,
    pub(crate) wecom: Vec<u8>,
    pub(crate) org: Org,
    pub(crate) series: HashMap<String, Keyed>,
    by_event: HashMap<String, Vec<String>>,
    pub(crate) stage: Vec<u8>,
    pub(crate) rfm: Vec<[u8; 3]>,
    pub(crate) scores: Vec<[f32; 4]>,
    pub(crate) cutoffs: Cutoffs,
    /// The last ingest-log sequence number reflected here.
    pub applied_seq: u64,
    /// Keys built after start from a store snapshot at this sequence number: batches up
    /// to it are already in them.
    from_seq: HashMap<String, u64>,
}

/// Memory the index holds, in bytes, by part.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, utoipa::ToSchema)]
pub struct MemoryUse {
    pub profiles: u64,
    /// Bitmaps (live, identities, tags, guides) and columns (traits, lifecycle).
    pub index_bytes: u64,
    /// Event aggregates: every tracked event's time and measure.
    pub event_bytes: u64,
}

impl Index {
    pub fn new(config: LifecycleConfig) -> Index {
        let mut index = Index {
            config,
            alive: RoaringBitmap::new(),
            len: 0,
            identities: HashMap::new(),
            tags: HashMap::new(),
            traits: HashMap::new(),
            guides: HashMap::new(),
            wecom: Vec::new(),
            org: Org::default(),
            series: HashMap::new(),
            by_event: HashMap::new(),
            stage: Vec::new(),
            rfm: Vec::new(),
            scores: Vec::new(),
            cutoffs: Cutoffs::default(),
            applied_seq: 0,
            from_seq: HashMap::new(),
        };
        for t in DEFAULT_TRAITS {
            index.traits.insert(t.to_string(), TraitColumn::new());
        }
        for key in index.lifecycle_keys() {
            index.add_series(key, Series::new(false));
        }
        index
    }

    /// The series lifecycle scores read: orders with revenue, clicks, shares, referrals.
    pub fn lifecycle_keys(&self) -> Vec<SeriesKey> {
        let c = &self.config;
        vec![
            SeriesKey { event: c.order_event.clone(), filters: vec![], measure: Some(c.revenue_property.clone()) },
            SeriesKey::plain(&c.click_event),
            SeriesKey::plain(&c.share_event),
            SeriesKey::plain(&c.referral_event),
        ]
    }

    /// Adds an aggregate, or replaces its data if it is already there.
    pub(crate) fn add_series(&mut self, key: SeriesKey, mut series: Series) {
        let id = key.id();
        if series.measured() != key.measure.is_some() {
            series = Series::new(key.measure.is_some());
        }
        let ids = self.by_event.entry(key.event.clone()).or_default();
        if !ids.contains(&id) {
            ids.push(id.clone());
        }
        self.series.insert(id, Keyed { key, series });
    }

    pub fn has_series(&self, key: &SeriesKey) -> bool {
        self.series.contains_key(&key.id())
    }

    pub fn has_trait(&self, name: &str) -> bool {
        self.traits.contains_key(name)
    }

    pub fn install_trait(&mut self, name: &str, column: TraitColumn) {
        self.traits.insert(name.to_string(), column);
    }

    pub fn install_series(&mut self, key: SeriesKey, series: Series) {
        if !self.has_series(&key) {
            self.add_series(key, series);
        }
    }

    /// Installs a trait read from a snapshot at `seq`, while batches keep arriving.
    pub fn install_trait_at(&mut self, name: &str, column: TraitColumn, seq: u64) {
        if !self.has_trait(name) {
            self.install_trait(name, column);
            self.from_seq.insert(format!("trait:{name}"), seq);
        }
    }

    pub fn install_series_at(&mut self, key: SeriesKey, series: Series, seq: u64) {
        if !self.has_series(&key) {
            self.from_seq.insert(format!("series:{}", key.id()), seq);
            self.add_series(key, series);
        }
    }

    /// Whether a batch ending at `seq` is already in a key built from a snapshot.
    fn already_in(&self, key: &str, seq: u64) -> bool {
        self.from_seq.get(key).is_some_and(|s| seq <= *s)
    }

    pub fn len(&self) -> u32 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.alive.is_empty()
    }

    pub fn alive(&self) -> &RoaringBitmap {
        &self.alive
    }

    pub fn profiles(&self) -> u64 {
        self.alive.len()
    }

    pub fn set_org(&mut self, org: Org) {
        self.org = org;
    }

    pub(crate) fn grow(&mut self, p: u32) {
        if p >= self.len {
            self.len = p + 1;
            let want = self.len as usize;
            if self.wecom.len() < want {
                let cap = want.max(self.wecom.len() * 5 / 4);
                self.wecom.resize(cap, 0);
                self.stage.resize(cap, 0);
                self.rfm.resize(cap, [0; 3]);
                self.scores.resize(cap, [f32::NAN; 4]);
            }
        }
    }

    pub fn add_profile(&mut self, p: u32) {
        self.grow(p);
        self.alive.insert(p);
    }

    pub fn add_identity(&mut self, kind: IdentityKind, p: u32) {
        self.identities.entry(kind).or_default().insert(p);
    }

    pub fn set_trait(&mut self, p: u32, key: &str, value: &Value, updated: Timestamp) {
        if let Some(c) = self.traits.get_mut(key) {
            c.set(p, value, secs(updated));
        }
    }

    pub fn set_tag(&mut self, p: u32, tag: &str, on: bool) {
        if on {
            self.tags.entry(tag.to_string()).or_default().insert(p);
        } else if let Some(b) = self.tags.get_mut(tag) {
            b.remove(p);
        }
    }

    /// Replaces the set of guides a profile is an active WeCom contact of.
    pub fn set_guides(&mut self, p: u32, active: &[String]) {
        self.grow(p);
        for (guide, b) in self.guides.iter_mut() {
            if !active.contains(guide) {
                b.remove(p);
            }
        }
        for g in active {
            self.guides.entry(g.clone()).or_default().insert(p);
        }
        self.wecom[p as usize] = active.len().min(255) as u8;
    }

    pub fn add_guide(&mut self, p: u32, guide: &str) {
        self.grow(p);
        if self.guides.entry(guide.to_string()).or_default().insert(p) {
            self.wecom[p as usize] = self.wecom[p as usize].saturating_add(1);
        }
    }

    pub fn guides_of(&self, p: u32) -> Vec<String> {
        let mut g: Vec<String> = self.guides.iter().filter(|(_, b)| b.contains(p)).map(|(g, _)| g.clone()).collect();
        g.sort();
        g
    }

    /// The event series an event goes into, with its measure: `(series id, value)`.
    fn accepting(&self, event: &str, payload: &str, now: Timestamp) -> Vec<(String, f64)> {
        let Some(ids) = self.by_event.get(event) else { return Vec::new() };
        let mut parsed: Option<Value> = None;
        let mut out = Vec::new();
        for id in ids {
            let key = &self.series[id].key;
            let value = if key.needs_payload() {
                let payload = parsed.get_or_insert_with(|| serde_json::from_str(payload).unwrap_or(Value::Null));
                key.accept(payload, now)
            } else {
                Some(f64::NAN)
            };
            if let Some(v) = value {
                out.push((id.clone(), v));
            }
        }
        out
    }

    /// Adds one tracked event from the batch ending at `seq`.
    pub fn add_event(&mut self, p: u32, event: &str, at: Timestamp, payload: &str, now: Timestamp, seq: u64) {
        for (id, v) in self.accepting(event, payload, now) {
            if self.already_in(&format!("series:{id}"), seq) {
                continue;
            }
            self.series.get_mut(&id).expect("series").series.push(p, secs(at), v);
        }
    }

    /// Profiles whose guides the store may have changed in a batch: those with contact
    /// events, and survivors of merges (which take over their merged profiles' guides).
    /// The engine re-reads these from the store, which applies its own ordering rules.
    pub fn guide_changes(c: &Committed) -> Vec<u32> {
        let mut out: Vec<u32> = c
            .messages
            .iter()
            .filter_map(|(m, o)| {
                let p = o.profile_id? as u32;
                let contact = matches!(m.event.as_deref(), Some("Contact Added" | "Contact Deleted"));
                (contact || !o.merged.is_empty()).then_some(p)
            })
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Folds a committed ingest batch in; returns the profiles it touched.
    pub fn apply(&mut self, c: &Committed, now: Timestamp) -> HashSet<u32> {
        let mut touched = HashSet::new();
        for (msg, outcome) in &c.messages {
            let Some(p) = outcome.profile_id else { continue };
            let p = p as u32;
            self.add_profile(p);
            for loser in &outcome.merged {
                self.merge(*loser as u32, p);
                touched.insert(*loser as u32);
            }
            for kind in &outcome.attached {
                self.add_identity(*kind, p);
            }
            for (key, value) in &msg.traits {
                if !self.already_in(&format!("trait:{key}"), c.last_seq) {
                    self.set_trait(p, key, value, msg.timestamp);
                }
            }
            if msg.kind == MessageKind::Track {
                if let Some(event) = &msg.event {
                    self.add_event(p, event, msg.timestamp, &msg.payload, now, c.last_seq);
                }
            }
            touched.insert(p);
        }
        self.applied_seq = self.applied_seq.max(c.last_seq);
        for p in &touched {
            if self.alive.contains(*p) {
                self.recompute_lifecycle(*p, now);
            }
        }
        touched
    }

    /// Moves everything of a merged profile to its survivor.
    pub fn merge(&mut self, loser: u32, survivor: u32) {
        self.grow(loser.max(survivor));
        for b in self.identities.values_mut() {
            if b.remove(loser) {
                b.insert(survivor);
            }
        }
        for b in self.tags.values_mut() {
            if b.remove(loser) {
                b.insert(survivor);
            }
        }
        for c in self.traits.values_mut() {
            c.move_profile(loser, survivor);
        }
        let guides: Vec<String> = self.guides_of(loser);
        for g in guides {
            self.guides.get_mut(&g).expect("guide").remove(loser);
            self.add_guide(survivor, &g);
        }
        self.wecom[loser as usize] = 0;
        for k in self.series.values_mut() {
            k.series.move_profile(loser, survivor);
        }
        self.alive.remove(loser);
    }

    fn order_series(&self) -> &Series {
        &self.series[&self.lifecycle_keys()[0].id()].series
    }

    fn times(&self, key: &SeriesKey, p: u32) -> Vec<u32> {
        self.series.get(&key.id()).map(|k| k.series.events_of(p).into_iter().map(|(t, _)| t).collect()).unwrap_or_default()
    }

    /// Stage, RFM and scores of one profile with the current quintile boundaries.
    pub fn recompute_lifecycle(&mut self, p: u32, now: Timestamp) {
        self.grow(p);
        let now_s = secs(now);
        let keys = self.lifecycle_keys();
        let orders = self.order_series().events_of(p);
        let (clicks, shares, referrals) = (self.times(&keys[1], p), self.times(&keys[2], p), self.times(&keys[3], p));
        let inputs = Inputs { orders: &orders, clicks: &clicks, shares: &shares, referrals: &referrals, wecom_contact: self.wecom[p as usize] > 0 };
        let i = p as usize;
        self.stage[i] = lifecycle::stage(&self.config, &inputs, now_s) as u8;
        self.rfm[i] = lifecycle::rfm_raw(&self.config, &orders, now_s).map_or([0; 3], |raw| self.cutoffs.score(raw));
        self.scores[i] = lifecycle::scores(&self.config, &inputs, now_s).map(|s| s.unwrap_or(f32::NAN));
    }

    /// Recomputes the quintile boundaries and every profile's lifecycle: time moves
    /// customers from one stage to the next without any event.
    pub fn refresh_lifecycle(&mut self, now: Timestamp) {
        let now_s = secs(now);
        let mut raw = Vec::new();
        {
            let orders = self.order_series();
            for p in &self.alive {
                if let Some(r) = lifecycle::rfm_raw(&self.config, &orders.events_of(p), now_s) {
                    raw.push(r);
                }
            }
        }
        self.cutoffs = Cutoffs::from_raw(&mut raw);
        let alive: Vec<u32> = self.alive.iter().collect();
        for p in alive {
            self.recompute_lifecycle(p, now);
        }
    }

    pub fn compact(&mut self) {
        for k in self.series.values_mut() {
            k.series.compact();
        }
    }

    pub fn memory(&self) -> MemoryUse {
        let bitmaps = |m: &HashMap<String, RoaringBitmap>| m.values().map(|b| b.serialized_size() + 48).sum::<usize>();
        let index = self.alive.serialized_size()
            + self.identities.values().map(RoaringBitmap::serialized_size).sum::<usize>()
            + bitmaps(&self.tags)
            + bitmaps(&self.guides)
            + self.traits.values().map(TraitColumn::memory_bytes).sum::<usize>()
            + self.wecom.capacity()
            + self.stage.capacity()
            + self.rfm.capacity() * 3
            + self.scores.capacity() * 16;
        let events = self.series.values().map(|k| k.series.memory_bytes()).sum::<usize>();
        MemoryUse { profiles: self.alive.len(), index_bytes: index as u64, event_bytes: events as u64 }
    }

    /// Lifecycle facts of a profile, for the profile view.
    pub fn lifecycle_of(&self, p: u32) -> Option<Lifecycle> {
        if !self.alive.contains(p) {
            return None;
        }
        let i = p as usize;
        let stage = siyu_core::rule::Stage::ALL[self.stage[i] as usize];
        let rfm = self.rfm[i];
        let s = self.scores[i];
        let score = |x: f32| (!x.is_nan()).then_some(x);
        let orders = self.order_series().events_of(p);
        Some(Lifecycle {
            stage: stage.as_str().to_string(),
            rfm: (rfm[0] > 0).then(|| Rfm { r: rfm[0], f: rfm[1], m: rfm[2] }),
            scores: Scores { conversion: score(s[0]), repurchase: score(s[1]), share: score(s[2]), referral: score(s[3]) },
            orders: orders.len() as u64,
            last_order: orders.iter().map(|(t, _)| *t).max().map(instant),
        })
    }
}

#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Lifecycle {
    /// prospect, new_contact, first_purchase, repeat, loyal, at_risk or lapsed.
    pub stage: String,
    /// Quintile scores 1–5 over customers who ordered in the last year.
    pub rfm: Option<Rfm>,
    pub scores: Scores,
    pub orders: u64,
    pub last_order: Option<Timestamp>,
}

#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Rfm {
    pub r: u8,
    pub f: u8,
    pub m: u8,
}

/// The four highs, 0 to 1 (absent: not enough history).
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Scores {
    pub conversion: Option<f32>,
    pub repurchase: Option<f32>,
    pub share: Option<f32>,
    pub referral: Option<f32>,
}
