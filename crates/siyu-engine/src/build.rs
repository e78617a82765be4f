//! Building an index from rows: a store snapshot at start, or generated data in the
//! benchmark. Event rows are collected per aggregate and sorted once into the compact
//! base layout, rather than appended one by one.

use std::collections::HashMap;

use serde_json::Value;
use siyu_core::{IdentityKind, Timestamp};

use crate::index::{Index, Org, SeriesKey};
use crate::lifecycle::LifecycleConfig;
use crate::series::Series;
use crate::time::secs;

/// Which traits and aggregates to index beyond the defaults.
#[derive(Debug, Clone, Default)]
pub struct Spec {
    pub traits: Vec<String>,
    pub series: Vec<SeriesKey>,
}

impl Spec {
    /// The traits and aggregates these rules need indexed.
    pub fn for_rules(rules: &[&siyu_core::rule::Rule]) -> Spec {
        use siyu_core::rule::{Field, FieldPredicate, Rule};
        let mut spec = Spec::default();
        for rule in rules {
            rule.visit(&mut |r| match r {
                Rule::Field(FieldPredicate { field: Field::Trait(t), .. }) => spec.traits.push(t.clone()),
                Rule::Aggregate(a) => spec.series.push(crate::eval::series_key(a)),
                _ => {}
            });
        }
        spec
    }
}

/// A batch of rows that adds itself to a builder (the store's bulk batches, which the
/// demo generator produces, do).
pub trait RowBatch {
    fn add_to(&self, b: &mut IndexBuilder);
}

pub struct IndexBuilder {
    index: Index,
    events: HashMap<String, (SeriesKey, Vec<(u32, u32, f64)>)>,
    by_event: HashMap<String, Vec<String>>,
    now: Timestamp,
}

impl IndexBuilder {
    pub fn new(config: LifecycleConfig, spec: &Spec, now: Timestamp) -> IndexBuilder {
        let mut index = Index::new(config);
        for t in &spec.traits {
            if !index.has_trait(t) {
                index.install_trait(t, crate::traits::TraitColumn::new());
            }
        }
        let mut keys = index.lifecycle_keys();
        keys.extend(spec.series.iter().cloned());
        // A count is answered by a measured series of the same event and filters.
        let measured: Vec<SeriesKey> = keys.iter().filter(|k| k.measure.is_some()).cloned().collect();
        keys.retain(|k| k.measure.is_some() || !measured.iter().any(|m| m.event == k.event && m.filters == k.filters));
        let mut events = HashMap::new();
        let mut by_event: HashMap<String, Vec<String>> = HashMap::new();
        for k in keys {
            let id = k.id();
            if let std::collections::hash_map::Entry::Vacant(slot) = events.entry(id.clone()) {
                by_event.entry(k.event.clone()).or_default().push(id);
                slot.insert((k, Vec::new()));
            }
        }
        IndexBuilder { index, events, by_event, now }
    }

    /// Event names that have an aggregate; other events need not be read.
    pub fn event_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.by_event.keys().cloned().collect();
        names.sort();
        names
    }

    pub fn trait_names(&self) -> Vec<String> {
        self.index.traits.keys().cloned().collect()
    }

    pub fn profile(&mut self, p: u32) {
        self.index.add_profile(p);
    }

    pub fn identity(&mut self, kind: IdentityKind, value: &str, p: u32) {
        self.index.add_identity(kind, p);
        self.index.early.learn(kind, value, p);
    }

    /// A trait row, its value as JSON text. Traits not indexed are skipped.
    pub fn trait_text(&mut self, p: u32, key: &str, json: &str, updated: Timestamp) {
        if self.index.has_trait(key) {
            let value: Value = serde_json::from_str(json).unwrap_or(Value::String(json.to_string()));
            self.index.set_trait(p, key, &value, updated);
        }
    }

    pub fn tag(&mut self, p: u32, tag: &str) {
        self.index.set_tag(p, tag, true);
    }

    /// An active guide relationship.
    pub fn guide(&mut self, p: u32, guide: &str) {
        self.index.add_guide(p, guide);
    }

    pub fn org(&mut self, org: Org) {
        self.index.set_org(org);
    }

    /// A tracked event.
    pub fn event(&mut self, p: u32, name: &str, at: Timestamp, payload: &str) {
        let Some(ids) = self.by_event.get(name) else { return };
        let mut parsed: Option<Value> = None;
        for id in ids {
            let (key, rows) = self.events.get_mut(id).expect("series");
            let accepted = if key.filters.is_empty() && key.measure.is_none() {
                Some(f64::NAN)
            } else {
                let payload = parsed.get_or_insert_with(|| serde_json::from_str(payload).unwrap_or(Value::Null));
                key.accept(payload, self.now)
            };
            if let Some(v) = accepted {
                rows.push((p, secs(at), v));
            }
        }
    }

    /// Rows as the demo generator and bulk loader produce them.
    pub fn batch(&mut self, rows: &impl RowBatch) {
        rows.add_to(self);
    }

    pub fn finish(self, applied_seq: u64) -> Index {
        let mut index = self.index;
        for (_, (key, rows)) in self.events {
            let measured = key.measure.is_some();
            index.add_series(key, Series::from_events(measured, rows));
        }
        index.applied_seq = applied_seq;
        index.refresh_lifecycle(self.now);
        index
    }
}
