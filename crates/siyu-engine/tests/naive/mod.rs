//! The naive reference evaluator: reads the store with plain queries and evaluates a
//! rule one profile at a time, straight from each profile's raw traits, tags, guides
//! and events. Slow and obvious, which is the point.

use std::collections::{BTreeSet, HashMap, HashSet};

use serde_json::Value;
use siyu_core::rule::{AggFn, Channel, Field, Op, Operand, Presence, Rule, Scalar, ScoreKind, Stage, Window, semantics};
use siyu_core::{IdentityKind, Timestamp};
use siyu_engine::lifecycle::{self, Cutoffs, Inputs, LifecycleConfig};
use siyu_engine::time::{instant, secs};
use siyu_store::{Store, params};

#[derive(Debug, Default, Clone)]
pub struct Profile {
    pub traits: HashMap<String, Value>,
    pub tags: HashSet<String>,
    pub identities: HashSet<IdentityKind>,
    pub guides: HashSet<String>,
    /// (name, time truncated to the second, properties)
    pub events: Vec<(String, Timestamp, Value)>,
}

pub struct World {
    pub profiles: HashMap<u32, Profile>,
    pub staff_store: HashMap<String, String>,
    pub store_city: HashMap<String, String>,
    pub config: LifecycleConfig,
    pub now: Timestamp,
    cutoffs: Cutoffs,
    segment_members: HashMap<String, BTreeSet<u32>>,
}

impl World {
    pub async fn read(store: &Store, now: Timestamp, segments: &[(String, Rule)]) -> World {
        let rows = store
            .run(|db| {
                Box::pin(async move {
                    let q = |sql: &'static str| sql;
                    let profiles = db.query(q("SELECT id FROM profiles WHERE merged_into IS NULL"), &[]).await?;
                    let traits = db.query(q("SELECT profile_id, key, value FROM traits"), &[]).await?;
                    let tags = db.query(q("SELECT profile_id, tag FROM profile_tags"), &[]).await?;
                    let ids = db.query(q("SELECT profile_id, kind FROM identities"), &[]).await?;
                    let guides = db.query(q("SELECT profile_id, staff_userid FROM staff_customers WHERE status = $1"), params!["active"]).await?;
                    let events = db.query(q("SELECT profile_id, name, ts, payload FROM events WHERE kind = 'track'"), &[]).await?;
                    let staff = db.query(q("SELECT userid, store_id FROM staff WHERE store_id IS NOT NULL"), &[]).await?;
                    let stores = db.query(q("SELECT id, city FROM stores"), &[]).await?;
                    Ok((profiles, traits, tags, ids, guides, events, staff, stores))
                })
            })
            .await
            .unwrap();
        let (profiles, traits, tags, ids, guides, events, staff, stores) = rows;
        let mut world = World {
            profiles: profiles.iter().map(|r| (r.int(0).unwrap() as u32, Profile::default())).collect(),
            staff_store: staff.iter().map(|r| (r.text(0).unwrap(), r.text(1).unwrap())).collect(),
            store_city: stores.iter().map(|r| (r.text(0).unwrap(), r.text(1).unwrap())).collect(),
            config: LifecycleConfig::default(),
            now,
            cutoffs: Cutoffs::default(),
            segment_members: HashMap::new(),
        };
        for r in traits {
            if let Some(p) = world.profiles.get_mut(&(r.int(0).unwrap() as u32)) {
                p.traits.insert(r.text(1).unwrap(), serde_json::from_str(&r.text(2).unwrap()).unwrap());
            }
        }
        for r in tags {
            world.profiles.get_mut(&(r.int(0).unwrap() as u32)).unwrap().tags.insert(r.text(1).unwrap());
        }
        for r in ids {
            let kind = IdentityKind::parse(&r.text(1).unwrap()).unwrap();
            world.profiles.get_mut(&(r.int(0).unwrap() as u32)).unwrap().identities.insert(kind);
        }
        for r in guides {
            world.profiles.get_mut(&(r.int(0).unwrap() as u32)).unwrap().guides.insert(r.text(1).unwrap());
        }
        for r in events {
            let t = instant(secs(Timestamp(r.int(2).unwrap())));
            let name = r.opt_text(1).unwrap().unwrap_or_default();
            let payload: Value = serde_json::from_str(&r.text(3).unwrap()).unwrap();
            world.profiles.get_mut(&(r.int(0).unwrap() as u32)).unwrap().events.push((name, t, payload));
        }
        // RFM boundaries over everyone who ordered in the window.
        let mut raw = Vec::new();
        for p in world.profiles.values() {
            if let Some(r) = lifecycle::rfm_raw(&world.config, &world.orders(p), secs(now)) {
                raw.push(r);
            }
        }
        world.cutoffs = Cutoffs::from_raw(&mut raw);
        for (name, rule) in segments {
            let members = world.evaluate(rule);
            world.segment_members.insert(name.clone(), members);
        }
        world
    }

    fn times(&self, p: &Profile, name: &str) -> Vec<u32> {
        p.events.iter().filter(|(n, _, _)| n == name).map(|(_, t, _)| secs(*t)).collect()
    }

    fn orders(&self, p: &Profile) -> Vec<(u32, f64)> {
        p.events
            .iter()
            .filter(|(n, _, _)| *n == self.config.order_event)
            .map(|(_, t, v)| (secs(*t), semantics::measure_value(v, &self.config.revenue_property).unwrap_or(f64::NAN)))
            .collect()
    }

    pub fn evaluate(&self, rule: &Rule) -> BTreeSet<u32> {
        self.profiles.iter().filter(|(_, p)| self.matches(rule, p)).map(|(id, _)| *id).collect()
    }

    fn matches(&self, rule: &Rule, p: &Profile) -> bool {
        let now = self.now;
        match rule {
            Rule::And(items) => items.iter().all(|r| self.matches(r, p)),
            Rule::Or(items) => items.iter().any(|r| self.matches(r, p)),
            Rule::Not(r) => !self.matches(r, p),
            Rule::Has(Presence::Wecom) => !p.guides.is_empty(),
            Rule::Has(Presence::Identity(k)) => p.identities.contains(k),
            Rule::Consent(Channel::Wecom) => !p.guides.is_empty() && p.traits.get("consent.wecom") != Some(&Value::Bool(false)),
            Rule::Consent(ch) => p.traits.get(&ch.consent_trait()) == Some(&Value::Bool(true)),
            Rule::Field(f) => {
                let names = |v: &Operand| -> Vec<String> {
                    match v {
                        Operand::One(Scalar::Str(s)) => vec![s.clone()],
                        Operand::List(items) => items.iter().filter_map(|i| if let Scalar::Str(s) = i { Some(s.clone()) } else { None }).collect(),
                        _ => vec![],
                    }
                };
                // Multi-valued fields: = is "one of them", != is "none of them".
                let set_rule = |have: &dyn Fn(&str) -> bool| match f.op {
                    Op::Eq | Op::In => names(&f.value).iter().any(|n| have(n)),
                    Op::Ne => !names(&f.value).iter().any(|n| have(n)),
                    _ => false,
                };
                match &f.field {
                    Field::Trait(t) => semantics::value_matches(p.traits.get(t), f.op, &f.value, now),
                    Field::Tag => match (f.op, &f.value) {
                        (Op::Contains, Operand::One(Scalar::Str(s))) => p.tags.iter().any(|t| t.contains(s.as_str())),
                        (Op::Exists, _) => !p.tags.is_empty(),
                        _ => set_rule(&|n| p.tags.contains(n)),
                    },
                    Field::OwnerGuide => set_rule(&|n| p.guides.contains(n)),
                    Field::OwnerStore => set_rule(&|n| p.guides.iter().any(|g| self.staff_store.get(g).is_some_and(|s| s == n))),
                    Field::OwnerCity => {
                        set_rule(&|n| p.guides.iter().any(|g| self.staff_store.get(g).and_then(|s| self.store_city.get(s)).is_some_and(|c| c == n)))
                    }
                    Field::Segment => {
                        let id = self.id_of(p);
                        set_rule(&|n| self.segment_members.get(n).is_some_and(|m| m.contains(&id)))
                    }
                    Field::Stage => {
                        let stage = self.stage(p).as_str().to_string();
                        set_rule(&|n| n == stage)
                    }
                    Field::Rfm(part) => {
                        let score = lifecycle::rfm_raw(&self.config, &self.orders(p), secs(now)).map(|raw| self.cutoffs.score(raw)[*part as usize]);
                        semantics::number_matches(score.map(|s| s as f64), f.op, &f.value)
                    }
                    Field::Score(kind) => {
                        let s = self.scores(p)[ScoreKind::ALL.iter().position(|k| k == kind).unwrap()];
                        semantics::number_matches(s.map(|pct| pct as f64 / 100.0), f.op, &f.value)
                    }
                }
            }
            Rule::Aggregate(a) => {
                let (lo, hi) = match &a.window {
                    Window::Ever => (i64::MIN, i64::MAX),
                    w => w.range(now),
                };
                let events: Vec<&(String, Timestamp, Value)> = p
                    .events
                    .iter()
                    .filter(|(n, t, props)| *n == a.event && t.0 >= lo && t.0 <= hi && a.filters.iter().all(|f| semantics::filter_matches(props, f, now)))
                    .collect();
                let measures: Vec<f64> =
                    events.iter().filter_map(|(_, _, props)| a.measure.as_ref().and_then(|m| semantics::measure_value(props, m))).collect();
                match a.func {
                    AggFn::Count => semantics::number_matches(Some(events.len() as f64), a.op, &a.value),
                    AggFn::Sum => semantics::number_matches(Some(measures.iter().sum()), a.op, &a.value),
                    AggFn::Min => semantics::number_matches(measures.iter().copied().reduce(f64::min), a.op, &a.value),
                    AggFn::Max => semantics::number_matches(measures.iter().copied().reduce(f64::max), a.op, &a.value),
                    AggFn::First => semantics::time_matches(events.iter().map(|e| e.1).min(), a.op, &a.value, now),
                    AggFn::Last => semantics::time_matches(events.iter().map(|e| e.1).max(), a.op, &a.value, now),
                }
            }
        }
    }

    fn id_of(&self, p: &Profile) -> u32 {
        *self.profiles.iter().find(|(_, q)| std::ptr::eq(*q, p)).map(|(id, _)| id).unwrap()
    }

    fn stage(&self, p: &Profile) -> Stage {
        let orders = self.orders(p);
        lifecycle::stage(&self.config, &Inputs { orders: &orders, wecom_contact: !p.guides.is_empty(), ..Default::default() }, secs(self.now))
    }

    fn scores(&self, p: &Profile) -> [Option<u8>; 4] {
        let orders = self.orders(p);
        let (clicks, shares, referrals) =
            (self.times(p, &self.config.click_event), self.times(p, &self.config.share_event), self.times(p, &self.config.referral_event));
        lifecycle::scores(
            &self.config,
            &Inputs { orders: &orders, clicks: &clicks, shares: &shares, referrals: &referrals, wecom_contact: !p.guides.is_empty() },
            secs(self.now),
        )
    }
}
