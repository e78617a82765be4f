//! The in-memory profile index, keyed by dense profile id.
//!
//! - bitmaps: live profiles, identities present, tags, each guide's active customers;
//! - columns: indexed traits (dictionary-encoded), active WeCom contacts per profile,
//!   lifecycle stage, RFM scores, four-highs scores;
//! - event series: per aggregate key, every profile's event times (and measures).
//!
//! It is built once from rows (a store snapshot, or generated data) and then updated
//! with every committed ingest batch, a known customer's events already when they are
//! acknowledged (see [`crate::early`]).

use std::collections::{HashMap, HashSet};

use roaring::RoaringBitmap;
use serde_json::Value;
use siyu_core::message::MessageKind;
use siyu_core::rule::{AggFn, PropertyFilter, Rule, semantics};
use siyu_core::{IdentityKind, Timestamp};

use crate::early::{self, EarlyResolver};
use crate::ingest::{AcknowledgedBatch, Applied, CommittedBatch};
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
    /// Built after start from a store snapshot at this ingest sequence number: batches
    /// up to it are already in it (0: built with the index).
    pub from_seq: u64,
    /// Events applied early up to this sequence number were applied before this series
    /// existed: they join it when the store commits them.
    pub early_until: u64,
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
    /// Active WeCom contacts per profile, and the profiles with at least one.
    pub(crate) wecom: Vec<u8>,
    pub(crate) wecom_set: RoaringBitmap,
    pub(crate) org: Org,
    /// Event aggregates, found through `by_event` (an event has only a few).
    pub(crate) series: Vec<Keyed>,
    by_event: HashMap<String, Vec<usize>>,
    /// The series lifecycle reads: orders, clicks, shares, referrals.
    lifecycle_series: [Option<usize>; 4],
    pub(crate) stage: Vec<u8>,
    pub(crate) rfm: Vec<[u8; 3]>,
    /// Four highs in whole percent; [`NO_SCORE`] when there is not enough history.
    pub(crate) scores: Vec<[u8; 4]>,
    /// The same three, as a bitmap per value, so conditions on them are unions.
    pub(crate) stage_sets: Vec<RoaringBitmap>,
    pub(crate) rfm_sets: [Vec<RoaringBitmap>; 3],
    pub(crate) score_sets: [Vec<RoaringBitmap>; 4],
    pub(crate) cutoffs: Cutoffs,
    /// The last ingest-log sequence number reflected here.
    pub applied_seq: u64,
    /// Where identities lead, for applying known customers' events early.
    pub(crate) early: EarlyResolver,
    /// Messages applied early, by sequence number, until the store commits them.
    early_pending: HashMap<u64, EarlyApplied>,
    /// The last sequence number applied early.
    early_seq: u64,
    /// Messages applied early (events counted, or identities learned), and of those,
    /// taken back.
    pub early_applied: u64,
    pub early_taken_back: u64,
}

/// A message applied early: its profile, the identities it attaches, and what went
/// where `(series, time, value)`, to take back if the store disagrees.
struct EarlyApplied {
    profile: u32,
    attaches: Vec<early::Key>,
    pushed: Vec<(usize, u32, f64)>,
}

/// A score not known for lack of history.
pub const NO_SCORE: u8 = u8::MAX;

/// One profile's lifecycle: stage, RFM (0: none) and scores.
type LifecycleValues = (u8, [u8; 3], [u8; 4]);

/// Memory the index holds, in bytes, by part.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, utoipa::ToSchema)]
pub struct MemoryUse {
    pub profiles: u64,
    /// Bitmaps (live, identities, tags, guides) and columns (traits, lifecycle).
    pub index_bytes: u64,
    /// Event aggregates: every tracked event's time and measure.
    pub event_bytes: u64,
    /// Where identities lead (for applying known customers' events early).
    pub identity_bytes: u64,
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
            wecom_set: RoaringBitmap::new(),
            org: Org::default(),
            series: Vec::new(),
            by_event: HashMap::new(),
            lifecycle_series: [None; 4],
            stage: Vec::new(),
            rfm: Vec::new(),
            scores: Vec::new(),
            stage_sets: vec![RoaringBitmap::new(); 7],
            rfm_sets: std::array::from_fn(|_| vec![RoaringBitmap::new(); 6]),
            score_sets: std::array::from_fn(|_| vec![RoaringBitmap::new(); 101]),
            cutoffs: Cutoffs::default(),
            applied_seq: 0,
            early: EarlyResolver::default(),
            early_pending: HashMap::new(),
            early_seq: 0,
            early_applied: 0,
            early_taken_back: 0,
        };
        for t in DEFAULT_TRAITS {
            index.traits.insert(t.to_string(), TraitColumn::new());
        }
        // Event series, the lifecycle ones included, come from the builder.
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
    pub(crate) fn add_series(&mut self, key: SeriesKey, series: Series) {
        self.add_series_at(key, series, 0);
    }

    fn add_series_at(&mut self, key: SeriesKey, mut series: Series, from_seq: u64) {
        if series.measured() != key.measure.is_some() {
            series = Series::new(key.measure.is_some());
        }
        match self.exact(&key.event, &key.filters, key.measure.as_deref()) {
            Some(i) => self.series[i] = Keyed { key, series, from_seq, early_until: self.early_seq },
            None => {
                self.by_event.entry(key.event.clone()).or_default().push(self.series.len());
                self.series.push(Keyed { key, series, from_seq, early_until: self.early_seq });
            }
        }
        let keys = self.lifecycle_keys();
        self.lifecycle_series = std::array::from_fn(|k| self.find(&keys[k].event, &keys[k].filters, keys[k].measure.as_deref()));
    }

    fn exact(&self, event: &str, filters: &[PropertyFilter], measure: Option<&str>) -> Option<usize> {
        self.by_event.get(event)?.iter().copied().find(|i| {
            let k = &self.series[*i].key;
            k.filters == filters && k.measure.as_deref() == measure
        })
    }

    /// The series that answers an aggregate. A count (no measure) can read any series
    /// of the same event and filters: every event is in it, measured or not.
    pub fn find(&self, event: &str, filters: &[PropertyFilter], measure: Option<&str>) -> Option<usize> {
        self.exact(event, filters, measure).or_else(|| {
            if measure.is_some() {
                return None;
            }
            self.by_event.get(event)?.iter().copied().find(|i| self.series[*i].key.filters == filters)
        })
    }

    pub fn has_series(&self, key: &SeriesKey) -> bool {
        self.series_for(key).is_some()
    }

    pub fn series_for(&self, key: &SeriesKey) -> Option<&Series> {
        self.find(&key.event, &key.filters, key.measure.as_deref()).map(|i| &self.series[i].series)
    }

    pub fn series_for_aggregate(&self, a: &siyu_core::rule::AggregatePredicate) -> Option<&Series> {
        self.find(&a.event, &a.filters, a.measure.as_deref()).map(|i| &self.series[i].series)
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
    pub fn install_trait_at(&mut self, name: &str, mut column: TraitColumn, seq: u64) {
        if !self.has_trait(name) {
            column.from_seq = seq;
            self.install_trait(name, column);
        }
    }

    pub fn install_series_at(&mut self, key: SeriesKey, series: Series, seq: u64) {
        if !self.has_series(&key) {
            self.add_series_at(key, series, seq);
        }
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

    /// Each guide with the customers who have them as an active WeCom contact.
    pub fn guide_sets(&self) -> impl Iterator<Item = (&str, &RoaringBitmap)> {
        self.guides.iter().map(|(g, b)| (g.as_str(), b))
    }

    /// The store a member of staff works at.
    pub fn store_of(&self, guide: &str) -> Option<&str> {
        self.org.staff_store.get(guide).map(String::as_str)
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
                self.scores.resize(cap, [NO_SCORE; 4]);
            }
        }
    }

    pub fn add_profile(&mut self, p: u32) {
        self.grow(p);
        if self.alive.insert(p) {
            // A new profile starts as a prospect with no RFM and no scores.
            self.stage_sets[self.stage[p as usize] as usize].insert(p);
        }
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
        self.set_wecom(p, active.len().min(255) as u8);
    }

    fn set_wecom(&mut self, p: u32, contacts: u8) {
        self.wecom[p as usize] = contacts;
        if contacts > 0 {
            self.wecom_set.insert(p);
        } else {
            self.wecom_set.remove(p);
        }
    }

    pub fn add_guide(&mut self, p: u32, guide: &str) {
        self.grow(p);
        if self.guides.entry(guide.to_string()).or_default().insert(p) {
            self.set_wecom(p, self.wecom[p as usize].saturating_add(1));
        }
    }

    pub fn guides_of(&self, p: u32) -> Vec<String> {
        let mut g: Vec<String> = self.guides.iter().filter(|(_, b)| b.contains(p)).map(|(g, _)| g.clone()).collect();
        g.sort();
        g
    }

    /// The event series an event goes into, with its measure: `(series, value)`.
    fn accepting(&self, event: &str, payload: &str, now: Timestamp) -> Vec<(usize, f64)> {
        let Some(ids) = self.by_event.get(event) else { return Vec::new() };
        let mut parsed: Option<Value> = None;
        let mut out = Vec::new();
        for &id in ids {
            let key = &self.series[id].key;
            let value = if key.needs_payload() {
                let payload = parsed.get_or_insert_with(|| serde_json::from_str(payload).unwrap_or(Value::Null));
                key.accept(payload, now)
            } else {
                Some(f64::NAN)
            };
            if let Some(v) = value {
                out.push((id, v));
            }
        }
        out
    }

    /// Adds one tracked event from the batch ending at `seq`.
    pub fn add_event(&mut self, p: u32, event: &str, at: Timestamp, payload: &str, now: Timestamp, seq: u64) {
        self.add_event_where(p, event, at, payload, now, |k| seq > k.from_seq);
    }

    /// Adds an event to the series that take it and are `missing` it; returns what
    /// went where: `(series, time, value)`.
    fn add_event_where(
        &mut self,
        p: u32,
        event: &str,
        at: Timestamp,
        payload: &str,
        now: Timestamp,
        missing: impl Fn(&Keyed) -> bool,
    ) -> Vec<(usize, u32, f64)> {
        let t = secs(at);
        let mut added = Vec::new();
        for (id, v) in self.accepting(event, payload, now) {
            let k = &mut self.series[id];
            if missing(k) {
                k.series.push(p, t, v);
                added.push((id, t, v));
            }
        }
        added
    }

    /// Profiles whose guides the store may have changed in a batch: those with contact
    /// events, and survivors of merges (which take over their merged profiles' guides).
    /// The engine re-reads these from the store, which applies its own ordering rules.
    pub fn guide_changes(c: &dyn CommittedBatch) -> Vec<u32> {
        let mut out: Vec<u32> = (0..c.len())
            .filter_map(|i| {
                let (m, o) = c.get(i);
                let p = o.profile_id?.bit();
                (m.changes_guides() || !o.merged.is_empty()).then_some(p)
            })
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Folds a committed ingest batch in; returns the profiles it touched.
    pub fn apply(&mut self, c: &dyn CommittedBatch, now: Timestamp) -> HashSet<u32> {
        let mut touched = HashSet::new();
        for i in 0..c.len() {
            let (msg, outcome) = c.get(i);
            let seq = c.seq_of(i);
            let early = self.settle_early(seq, &outcome, &mut touched);
            let Some(p) = outcome.profile_id else { continue };
            let p = p.bit();
            self.early.learn_outcome(p, outcome.attached, outcome.merged);
            self.add_profile(p);
            for loser in outcome.merged {
                self.merge(loser.bit(), p);
                touched.insert(loser.bit());
            }
            for identity in outcome.attached {
                self.add_identity(identity.kind, p);
            }
            for (key, value) in &msg.traits {
                if let Some(column) = self.traits.get_mut(key)
                    && seq > column.from_seq
                {
                    column.set(p, value, secs(msg.timestamp));
                    touched.insert(p);
                }
            }
            if msg.kind == MessageKind::Track
                && let Some(event) = &msg.event
            {
                // A series holds what its snapshot held and what came after; an
                // event applied early is only missing from series built since.
                let missing = |k: &Keyed| seq > k.from_seq && (!early || seq <= k.early_until);
                if !self.add_event_where(p, event, msg.timestamp, &msg.payload, now, missing).is_empty() {
                    touched.insert(p);
                }
            }
            if !early {
                touched.insert(p);
            }
        }
        self.applied_seq = self.applied_seq.max(c.last_seq());
        self.early.committed(c.last_seq());
        for p in &touched {
            if self.alive.contains(*p) {
                self.recompute_lifecycle(*p, now);
            }
        }
        touched
    }

    /// Whether message `seq`, just committed, was applied early as the store applied
    /// it. Where the store disagrees, the early events are taken back out.
    fn settle_early(&mut self, seq: u64, outcome: &Applied<'_>, touched: &mut HashSet<u32>) -> bool {
        let Some(EarlyApplied { profile: p, attaches, pushed }) = self.early_pending.remove(&seq) else { return false };
        let attached: HashSet<early::Key> = outcome.attached.iter().map(|i| early::key(i.kind, &i.value)).collect();
        if outcome.profile_id == Some(siyu_core::ProfileId::from_bit(p)) && outcome.merged.is_empty() && attached == attaches.iter().copied().collect() {
            return true;
        }
        tracing::debug!(seq, profile = p, stored = ?outcome.profile_id, "a message applied early is taken back: the store applied it otherwise");
        self.early_taken_back += 1;
        self.early.forget(&attaches, p);
        for (id, t, v) in pushed {
            self.series[id].series.remove(p, t, v);
        }
        touched.insert(p);
        false
    }

    /// Applies the events of acknowledged messages whose profile is already certain;
    /// returns the profiles they touched. The rest wait for the store.
    pub fn apply_acknowledged(&mut self, a: &dyn AcknowledgedBatch, now: Timestamp) -> HashSet<u32> {
        let mut touched = HashSet::new();
        for (i, msg) in a.messages().iter().enumerate() {
            let seq = a.first_seq() + i as u64;
            if seq <= self.applied_seq {
                continue;
            }
            let alive = &self.alive;
            let Some(early::Certain { profile: p, attaches }) = self.early.resolve(seq, msg, |p| alive.contains(p)) else { continue };
            let pushed = match (msg.kind, &msg.event) {
                (MessageKind::Track, Some(event)) => self.add_event_where(p, event, msg.timestamp, &msg.payload, now, |_| true),
                _ => Vec::new(),
            };
            // Nothing to apply and nothing learned: the commit applies it as usual.
            if pushed.is_empty() && attaches.is_empty() {
                continue;
            }
            self.early_seq = seq;
            self.early_applied += 1;
            if !pushed.is_empty() {
                touched.insert(p);
            }
            self.early_pending.insert(seq, EarlyApplied { profile: p, attaches, pushed });
        }
        for p in &touched {
            self.recompute_lifecycle(*p, now);
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
        self.set_wecom(loser, 0);
        for k in self.series.iter_mut() {
            k.series.move_profile(loser, survivor);
        }
        self.clear_lifecycle(loser);
        self.alive.remove(loser);
    }

    fn order_series(&self) -> &Series {
        &self.series[self.lifecycle_series[0].expect("the order series is always indexed")].series
    }

    /// Event times of one of the lifecycle series (1: clicks, 2: shares, 3: referrals).
    fn times(&self, which: usize, p: u32) -> Vec<u32> {
        self.lifecycle_series[which].map(|i| self.series[i].series.events_of(p).into_iter().map(|(t, _)| t).collect()).unwrap_or_default()
    }

    /// A profile's lifecycle values with the current quintile boundaries.
    fn lifecycle_values(&self, p: u32, now_s: u32) -> LifecycleValues {
        let orders = self.order_series().events_of(p);
        let (clicks, shares, referrals) = (self.times(1, p), self.times(2, p), self.times(3, p));
        let wecom = self.wecom.get(p as usize).is_some_and(|w| *w > 0);
        let inputs = Inputs { orders: &orders, clicks: &clicks, shares: &shares, referrals: &referrals, wecom_contact: wecom };
        let stage = lifecycle::stage(&self.config, &inputs, now_s) as u8;
        let rfm = lifecycle::rfm_raw(&self.config, &orders, now_s).map_or([0; 3], |raw| self.cutoffs.score(raw));
        let scores = lifecycle::scores(&self.config, &inputs, now_s).map(|s| s.unwrap_or(NO_SCORE));
        (stage, rfm, scores)
    }

    /// Sets a profile's lifecycle columns and moves it between the value bitmaps.
    fn set_lifecycle(&mut self, p: u32, (stage, rfm, scores): LifecycleValues) {
        self.grow(p);
        let i = p as usize;
        if self.stage[i] != stage {
            self.stage_sets[self.stage[i] as usize].remove(p);
            self.stage_sets[stage as usize].insert(p);
            self.stage[i] = stage;
        }
        // RFM 0 ("did not order in the window") and missing scores have no bitmap.
        // (Indexes, not iterators: each k reads three parallel arrays.)
        #[allow(clippy::needless_range_loop)]
        for k in 0..3 {
            if self.rfm[i][k] != rfm[k] {
                if self.rfm[i][k] > 0 {
                    self.rfm_sets[k][self.rfm[i][k] as usize].remove(p);
                }
                if rfm[k] > 0 {
                    self.rfm_sets[k][rfm[k] as usize].insert(p);
                }
                self.rfm[i][k] = rfm[k];
            }
        }
        #[allow(clippy::needless_range_loop)]
        for k in 0..4 {
            if self.scores[i][k] != scores[k] {
                if let Some(b) = self.score_sets[k].get_mut(self.scores[i][k] as usize) {
                    b.remove(p);
                }
                if let Some(b) = self.score_sets[k].get_mut(scores[k] as usize) {
                    b.insert(p);
                }
                self.scores[i][k] = scores[k];
            }
        }
    }

    /// Stage, RFM and scores of one profile with the current quintile boundaries.
    pub fn recompute_lifecycle(&mut self, p: u32, now: Timestamp) {
        self.grow(p);
        let values = self.lifecycle_values(p, secs(now));
        self.set_lifecycle(p, values);
    }

    /// Takes a profile out of the lifecycle bitmaps (it was merged away).
    fn clear_lifecycle(&mut self, p: u32) {
        let i = p as usize;
        self.stage_sets[self.stage[i] as usize].remove(p);
        for k in 0..3 {
            self.rfm_sets[k][self.rfm[i][k] as usize].remove(p);
            self.rfm[i][k] = 0;
        }
        for k in 0..4 {
            if let Some(b) = self.score_sets[k].get_mut(self.scores[i][k] as usize) {
                b.remove(p);
            }
        }
    }

    /// Recomputes the quintile boundaries and every profile's lifecycle: time moves
    /// customers from one stage to the next without any event. The values are worked
    /// out on both cores from a read-only view; only changes are written.
    pub fn refresh_lifecycle(&mut self, now: Timestamp) {
        let now_s = secs(now);
        let alive: Vec<u32> = self.alive.iter().collect();
        let mut raw = Vec::new();
        {
            let orders = self.order_series();
            for p in &alive {
                if let Some(r) = lifecycle::rfm_raw(&self.config, &orders.events_of(*p), now_s) {
                    raw.push(r);
                }
            }
        }
        self.cutoffs = Cutoffs::from_raw(&mut raw);
        let values: Vec<LifecycleValues> = {
            let this = &*self;
            let mid = alive.len() / 2;
            let (left, right) = alive.split_at(mid);
            std::thread::scope(|s| {
                let r = s.spawn(|| right.iter().map(|p| this.lifecycle_values(*p, now_s)).collect::<Vec<_>>());
                let mut l: Vec<LifecycleValues> = left.iter().map(|p| this.lifecycle_values(*p, now_s)).collect();
                l.extend(r.join().expect("lifecycle thread"));
                l
            })
        };
        for (p, v) in alive.into_iter().zip(values) {
            self.set_lifecycle(p, v);
        }
    }

    pub fn compact(&mut self) {
        for k in self.series.iter_mut() {
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
            + self.wecom_set.serialized_size()
            + self.stage.capacity()
            + self.rfm.capacity() * 3
            + self.scores.capacity() * 4
            + self
                .stage_sets
                .iter()
                .chain(self.rfm_sets.iter().flatten())
                .chain(self.score_sets.iter().flatten())
                .map(RoaringBitmap::serialized_size)
                .sum::<usize>();
        let events = self.series.iter().map(|k| k.series.memory_bytes()).sum::<usize>();
        MemoryUse { profiles: self.alive.len(), index_bytes: index as u64, event_bytes: events as u64, identity_bytes: self.early.memory_bytes() as u64 }
    }

    /// Identities whose profile the index knows (for applying events early).
    pub fn known_identities(&self) -> usize {
        self.early.identities()
    }

    /// Why acknowledged messages waited for the store instead of being applied early.
    pub fn early_waits(&self) -> early::Waits {
        self.early.waits
    }

    /// A profile's value of an indexed trait.
    pub fn trait_value(&self, name: &str, p: u32) -> Option<&Value> {
        self.traits.get(name)?.get(p).map(|(v, _)| v)
    }

    /// Raw lifecycle columns: stage, RFM scores (0: none), four highs (NaN: none),
    /// active WeCom contacts.
    pub fn lifecycle_columns(&self, p: u32) -> (u8, [u8; 3], [u8; 4], u8) {
        let i = p as usize;
        (self.stage[i], self.rfm[i], self.scores[i], self.wecom[i])
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
        let score = |x: u8| (x != NO_SCORE).then(|| x as f32 / 100.0);
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
