//! One indexed trait: a dictionary of its distinct values, each profile's value id in a
//! dense column, and, while there are few distinct values, a bitmap per value. A
//! condition is evaluated once per distinct value, then gathered: by bitmap union for
//! categorical traits (city, tier), by a column scan for the rest.

use std::collections::HashMap;

use roaring::RoaringBitmap;
use serde_json::Value;
use siyu_core::Timestamp;
use siyu_core::rule::{Op, Operand, semantics};

const NONE: u32 = u32::MAX;
/// Above this many distinct values, bitmaps per value cost more than they save.
const BITMAP_LIMIT: usize = 512;

#[derive(Debug, Default)]
pub struct TraitColumn {
    dict: Vec<Value>,
    lookup: HashMap<String, u32>,
    column: Vec<u32>,
    /// When each profile's value was set (engine seconds); an older update loses.
    updated: Vec<u32>,
    bitmaps: Option<Vec<RoaringBitmap>>,
    /// Built after start from a store snapshot at this ingest sequence number: batches
    /// up to it are already in it (0: built with the index).
    pub from_seq: u64,
}

impl TraitColumn {
    pub fn new() -> TraitColumn {
        TraitColumn { bitmaps: Some(Vec::new()), ..Default::default() }
    }

    fn grow(&mut self, p: u32) {
        let need = p as usize + 1;
        if self.column.len() < need {
            let len = need.max(self.column.len() * 5 / 4);
            self.column.resize(len, NONE);
            self.updated.resize(len, 0);
        }
    }

    fn id_of(&mut self, value: &Value) -> u32 {
        let key = value.to_string();
        if let Some(id) = self.lookup.get(&key) {
            return *id;
        }
        let id = self.dict.len() as u32;
        self.dict.push(value.clone());
        self.lookup.insert(key, id);
        if let Some(b) = &mut self.bitmaps {
            if self.dict.len() > BITMAP_LIMIT {
                self.bitmaps = None;
            } else {
                b.push(RoaringBitmap::new());
            }
        }
        id
    }

    /// Sets a profile's value unless a newer one is held. `null` removes it.
    pub fn set(&mut self, p: u32, value: &Value, updated: u32) {
        self.grow(p);
        let i = p as usize;
        if (self.column[i] != NONE || self.updated[i] != 0) && updated < self.updated[i] {
            return;
        }
        let old = self.column[i];
        let new = if value.is_null() { NONE } else { self.id_of(value) };
        if let Some(b) = &mut self.bitmaps {
            if old != NONE {
                b[old as usize].remove(p);
            }
            if new != NONE {
                b[new as usize].insert(p);
            }
        }
        self.column[i] = new;
        self.updated[i] = updated;
    }

    pub fn get(&self, p: u32) -> Option<(&Value, u32)> {
        let i = p as usize;
        match self.column.get(i) {
            Some(&id) if id != NONE => Some((&self.dict[id as usize], self.updated[i])),
            _ => None,
        }
    }

    /// Whether a profile has ever had this trait set (to a value or to null).
    fn is_set(&self, p: u32) -> bool {
        let i = p as usize;
        i < self.column.len() && (self.column[i] != NONE || self.updated[i] != 0)
    }

    /// Moves a merged profile's value to its survivor, as the store merges trait rows:
    /// the survivor takes it if it had none or the merged one is strictly newer (a newer
    /// null included).
    pub fn move_profile(&mut self, from: u32, to: u32) {
        if !self.is_set(from) {
            return;
        }
        let i = from as usize;
        let (id, t) = (self.column[i], self.updated[i]);
        let newer = !self.is_set(to) || t > self.updated[to as usize];
        if newer {
            let value = if id == NONE { Value::Null } else { self.dict[id as usize].clone() };
            self.set(to, &value, t);
        }
    }

    /// Which dictionary entries satisfy the condition.
    fn matching(&self, op: Op, operand: &Operand, now: Timestamp) -> Vec<bool> {
        self.dict.iter().map(|v| semantics::value_matches(Some(v), op, operand, now)).collect()
    }

    pub fn matches_one(&self, p: u32, op: Op, operand: &Operand, now: Timestamp) -> bool {
        semantics::value_matches(self.get(p).map(|(v, _)| v), op, operand, now)
    }

    /// Profiles whose value satisfies the condition: among `candidates` when given,
    /// though a bitmap answer may include others (callers intersect).
    pub fn matches_all(&self, op: Op, operand: &Operand, now: Timestamp, candidates: Option<&RoaringBitmap>) -> RoaringBitmap {
        let matching = self.matching(op, operand, now);
        if let Some(bitmaps) = &self.bitmaps {
            // Merging bitmaps beats looking at candidates one by one unless they are a
            // small part of what the merge would touch.
            let union_size: u64 = matching.iter().zip(bitmaps).filter(|(ok, _)| **ok).map(|(_, b)| b.len()).sum();
            if candidates.is_none_or(|c| c.len() * 16 >= union_size) {
                let mut out = RoaringBitmap::new();
                for (id, ok) in matching.iter().enumerate() {
                    if *ok {
                        out |= &bitmaps[id];
                    }
                }
                return out;
            }
        }
        let hit = |p: u32| matches!(self.column.get(p as usize), Some(&id) if id != NONE && matching[id as usize]);
        match candidates {
            Some(c) => RoaringBitmap::from_sorted_iter(c.iter().filter(|p| hit(*p))).expect("sorted"),
            None => crate::scan::dense(self.column.len() as u32, hit),
        }
    }

    pub fn distinct(&self) -> usize {
        self.dict.len()
    }

    pub fn memory_bytes(&self) -> usize {
        self.column.capacity() * 8
            + self.dict.iter().map(|v| 32 + v.as_str().map_or(0, str::len)).sum::<usize>()
            + self.lookup.len() * 48
            + self.bitmaps.as_ref().map_or(0, |b| b.iter().map(RoaringBitmap::serialized_size).sum())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use siyu_core::rule::Scalar;

    #[test]
    fn the_latest_value_wins_and_bitmaps_follow() {
        let mut c = TraitColumn::new();
        c.set(1, &json!("Shanghai"), 10);
        c.set(2, &json!("Beijing"), 10);
        c.set(1, &json!("Hangzhou"), 5);
        assert_eq!(c.get(1).unwrap().0, &json!("Shanghai"), "an older value does not win");
        c.set(1, &json!("Beijing"), 20);
        let eq = Operand::One(Scalar::Str("Beijing".into()));
        let all = c.matches_all(Op::Eq, &eq, Timestamp(0), None);
        assert_eq!(all.iter().collect::<Vec<_>>(), vec![1, 2]);
        let among = RoaringBitmap::from_iter([2u32, 3]);
        assert_eq!((c.matches_all(Op::Eq, &eq, Timestamp(0), Some(&among)) & &among).len(), 1);
        c.set(2, &Value::Null, 30);
        assert!(!c.matches_one(2, Op::Exists, &Operand::None, Timestamp(0)));
        c.move_profile(1, 2);
        assert!(c.get(2).is_none(), "the survivor's newer null wins over an older value, as in the store");
        c.move_profile(1, 7);
        assert_eq!(c.get(7).unwrap().0, &json!("Beijing"));
    }
}
