//! Named live segments: each a rule and its members. Members change when an event
//! changes a profile (checked for the profiles each batch touched) and when time
//! passes (segments whose rules depend on the clock are re-evaluated every minute).
//! Every change is reported, so it can become a `Segment Entered` / `Segment Exited`
//! event.

use std::collections::{BTreeMap, HashSet};

use roaring::RoaringBitmap;
use siyu_core::Timestamp;
use siyu_core::rule::Rule;

use crate::eval::{Cx, SegmentLookup, eval_all, eval_one};
use crate::index::Index;

#[derive(Debug, Clone, PartialEq)]
pub struct SegmentDef {
    /// The segment's name, which rules use: `segment = "vip"`.
    pub name: String,
    pub rule: Rule,
}

#[derive(Debug, Clone)]
pub struct SegmentState {
    pub def: SegmentDef,
    pub members: RoaringBitmap,
    /// The rule (or one it depends on) changes with the clock alone.
    pub time_dependent: bool,
}

/// One profile entering or leaving one segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembershipChange {
    pub segment: String,
    pub profile: u32,
    pub entered: bool,
}

/// What the engine reports about membership, in the order it happened, so whoever
/// turns it into events can keep an exact copy of what it has reported.
#[derive(Debug, Clone, PartialEq)]
pub enum MembershipReport {
    /// Profiles moved in or out.
    Changes(Vec<MembershipChange>),
    /// A segment was defined or redefined: its members began here (they did not enter).
    Defined {
        segment: String,
        rule: String,
        members: RoaringBitmap,
    },
    Removed(String),
    /// Every segment's rule and members at this point of the stream (asked for with
    /// [`crate::Engine::report_current`]).
    Current(Vec<(String, String, RoaringBitmap)>),
}

#[derive(Debug, Default)]
pub struct Segments {
    states: BTreeMap<String, SegmentState>,
    /// Names in an order where every segment comes after those it refers to.
    order: Vec<String>,
}

impl SegmentLookup for Segments {
    fn members(&self, name: &str) -> Option<&RoaringBitmap> {
        self.states.get(name).map(|s| &s.members)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DefineError {
    #[error("segment {0:?} refers to itself through {1}")]
    Cycle(String, String),
    #[error("there is no segment named {0:?}")]
    Unknown(String),
}

impl Segments {
    pub fn get(&self, name: &str) -> Option<&SegmentState> {
        self.states.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.order.iter()
    }

    pub fn len(&self) -> usize {
        self.states.len()
    }

    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }

    /// Checks a definition would make sense here: its references exist and lead back
    /// to it nowhere.
    pub fn check(&self, def: &SegmentDef) -> Result<(), DefineError> {
        for r in def.rule.segment_refs() {
            if r != def.name && !self.states.contains_key(&r) {
                return Err(DefineError::Unknown(r));
            }
        }
        let mut path = vec![def.name.clone()];
        self.no_cycle(&def.name, &def.rule, &mut path)
    }

    fn no_cycle(&self, origin: &str, rule: &Rule, path: &mut Vec<String>) -> Result<(), DefineError> {
        for r in rule.segment_refs() {
            path.push(r.clone());
            if r == origin {
                return Err(DefineError::Cycle(origin.to_string(), path.join(" → ")));
            }
            if let Some(s) = self.states.get(&r) {
                self.no_cycle(origin, &s.def.rule, path)?;
            }
            path.pop();
        }
        Ok(())
    }

    /// Adds or replaces a segment and computes its members (no changes are reported
    /// for a new or redefined segment: its members did not enter, it began).
    pub fn define(&mut self, index: &Index, def: SegmentDef, now: Timestamp) -> Result<&SegmentState, DefineError> {
        self.check(&def)?;
        let members = {
            let cx = Cx { index, segments: self, now };
            eval_all(&cx, &def.rule, None)
        };
        let name = def.name.clone();
        self.states.insert(name.clone(), SegmentState { def, members, time_dependent: false });
        self.reorder();
        Ok(&self.states[&name])
    }

    /// Every segment's name, rule (text form) and members.
    pub fn current(&self) -> Vec<(String, String, RoaringBitmap)> {
        self.states.values().map(|s| (s.def.name.clone(), s.def.rule.to_string(), s.members.clone())).collect()
    }

    pub fn remove(&mut self, name: &str) -> Result<(), DefineError> {
        if let Some(dependent) = self.states.values().find(|s| s.def.name != name && s.def.rule.segment_refs().iter().any(|r| r == name)) {
            return Err(DefineError::Cycle(name.to_string(), format!("{} still refers to it", dependent.def.name)));
        }
        self.states.remove(name);
        self.reorder();
        Ok(())
    }

    fn reorder(&mut self) {
        let mut order = Vec::new();
        let mut done = HashSet::new();
        fn visit(name: &str, states: &BTreeMap<String, SegmentState>, done: &mut HashSet<String>, order: &mut Vec<String>) {
            if !done.insert(name.to_string()) {
                return;
            }
            if let Some(s) = states.get(name) {
                for r in s.def.rule.segment_refs() {
                    visit(&r, states, done, order);
                }
                order.push(name.to_string());
            }
        }
        for name in self.states.keys() {
            visit(name, &self.states, &mut done, &mut order);
        }
        // Time dependence flows along references.
        for name in &order {
            let refs = self.states[name].def.rule.segment_refs();
            let inherited = refs.iter().any(|r| self.states.get(r).is_some_and(|s| s.time_dependent));
            let s = self.states.get_mut(name).expect("segment");
            s.time_dependent = s.def.rule.depends_on_time() || inherited;
        }
        self.order = order;
    }

    /// Re-checks the given profiles against every segment, dependencies first.
    pub fn update_profiles(&mut self, index: &Index, profiles: &HashSet<u32>, now: Timestamp) -> Vec<MembershipChange> {
        let mut changes = Vec::new();
        let mut sorted: Vec<u32> = profiles.iter().copied().collect();
        sorted.sort_unstable();
        for name in self.order.clone() {
            let mut entered = Vec::new();
            let mut exited = Vec::new();
            {
                let state = &self.states[&name];
                let cx = Cx { index, segments: self, now };
                for &p in &sorted {
                    let is = eval_one(&cx, &state.def.rule, p);
                    let was = state.members.contains(p);
                    if is && !was {
                        entered.push(p);
                    } else if was && !is {
                        exited.push(p);
                    }
                }
            }
            self.record(&name, entered, exited, index, &mut changes);
        }
        changes
    }

    /// Re-evaluates the segments that move with the clock.
    pub fn refresh_time(&mut self, index: &Index, now: Timestamp) -> Vec<MembershipChange> {
        let mut changes = Vec::new();
        for name in self.order.clone() {
            if !self.states[&name].time_dependent {
                continue;
            }
            let (entered, exited) = {
                let state = &self.states[&name];
                let cx = Cx { index, segments: self, now };
                let now_members = eval_all(&cx, &state.def.rule, None);
                ((&now_members - &state.members).iter().collect(), (&state.members - &now_members).iter().collect())
            };
            self.record(&name, entered, exited, index, &mut changes);
        }
        changes
    }

    fn record(&mut self, name: &str, entered: Vec<u32>, exited: Vec<u32>, index: &Index, changes: &mut Vec<MembershipChange>) {
        let state = self.states.get_mut(name).expect("segment");
        for p in entered {
            state.members.insert(p);
            changes.push(MembershipChange { segment: name.to_string(), profile: p, entered: true });
        }
        for p in exited {
            state.members.remove(p);
            // A profile merged into another leaves quietly: it no longer exists.
            if index.alive.contains(p) {
                changes.push(MembershipChange { segment: name.to_string(), profile: p, entered: false });
            }
        }
    }
}
