//! Event aggregates: for one event (with property filters and an optional measure),
//! every profile's event times (and measure values) in time order.
//!
//! The base is compressed sparse rows built once: `starts[p]..starts[p + 1]` indexes
//! profile `p`'s slice of `times`/`values`. Events that arrive later go to an
//! append-only delta with a per-profile index; when the delta grows large it is merged
//! into a new base. Any window is answered from the times themselves, so "count in the
//! last 30 days", "between two dates" and "ever" are all exact.

use std::collections::HashMap;

use roaring::RoaringBitmap;
use siyu_core::rule::AggFn;

/// The value of an aggregate for one profile.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AggValue {
    Number(f64),
    /// min/max over no events, first/last of no events.
    Missing,
    Time(u32),
}

#[derive(Debug, Default)]
pub struct Series {
    starts: Vec<u32>,
    times: Vec<u32>,
    /// Each profile's last base event time (0: none): scans reject profiles with
    /// nothing recent by reading this compact column alone.
    last: Vec<u32>,
    values: Measures,
    measured: bool,
    delta: Vec<(u32, u32, f64)>,
    delta_index: HashMap<u32, Vec<u32>>,
    delta_profiles: RoaringBitmap,
    /// Profiles whose base slice no longer counts (an event was taken back out of it;
    /// the rest moved to the delta) until the next compaction.
    hidden: RoaringBitmap,
}

/// Merge the delta into the base once it holds this many events (or a fiftieth of
/// the base, whichever is larger): the merge costs a pass over the series.
const COMPACT_MIN: usize = 200_000;

impl Series {
    pub fn new(measured: bool) -> Series {
        Series { measured, starts: vec![0], ..Default::default() }
    }

    /// Builds the base from unordered `(profile, time, value)` events.
    pub fn from_events(measured: bool, mut events: Vec<(u32, u32, f64)>) -> Series {
        events.sort_unstable_by_key(|(p, t, _)| ((*p as u64) << 32) | *t as u64);
        let max = events.last().map(|(p, _, _)| *p as usize + 1).unwrap_or(0);
        let mut starts = vec![0u32; max + 1];
        for (p, _, _) in &events {
            starts[*p as usize + 1] += 1;
        }
        for i in 1..starts.len() {
            starts[i] += starts[i - 1];
        }
        let times: Vec<u32> = events.iter().map(|(_, t, _)| *t).collect();
        let values = if measured { Measures::from_values(events.iter().map(|(_, _, v)| *v).collect()) } else { Measures::default() };
        let last = last_times(&starts, &times);
        Series { starts, times, values, measured, last, ..Default::default() }
    }

    pub fn measured(&self) -> bool {
        self.measured
    }

    pub fn push(&mut self, profile: u32, time: u32, value: f64) {
        let i = self.delta.len() as u32;
        self.delta.push((profile, time, value));
        self.delta_index.entry(profile).or_default().push(i);
        self.delta_profiles.insert(profile);
        if self.delta.len() >= COMPACT_MIN.max(self.times.len() / 50) {
            self.compact();
        }
    }

    fn base(&self, p: u32) -> (&[u32], Values<'_>) {
        if !self.hidden.is_empty() && self.hidden.contains(p) {
            return (&[], Values::None);
        }
        let p = p as usize;
        if p + 1 >= self.starts.len() {
            return (&[], Values::None);
        }
        let (s, e) = (self.starts[p] as usize, self.starts[p + 1] as usize);
        (&self.times[s..e], self.values.slice(s, e))
    }

    /// Every event of a profile, in no particular order.
    pub fn events_of(&self, p: u32) -> Vec<(u32, f64)> {
        let (times, values) = self.base(p);
        let mut out: Vec<(u32, f64)> = times.iter().enumerate().map(|(i, t)| (*t, values.get(i))).collect();
        if let Some(idx) = self.delta_index.get(&p) {
            out.extend(idx.iter().map(|i| {
                let (_, t, v) = self.delta[*i as usize];
                (t, v)
            }));
        }
        out
    }

    /// Takes one event back out: one applied before the store had it, which the store
    /// then did not keep (a retried message it had already seen). False if absent.
    pub fn remove(&mut self, p: u32, time: u32, value: f64) -> bool {
        let same = |t: u32, v: f64| t == time && (v == value || (v.is_nan() && value.is_nan()));
        if let Some(positions) = self.delta_index.get_mut(&p)
            && let Some(k) = positions.iter().position(|i| {
                let (_, t, v) = self.delta[*i as usize];
                same(t, v)
            })
        {
            // The delta entry stays, unreferenced: every read goes through the index.
            positions.remove(k);
            return true;
        }
        let (times, values) = self.base(p);
        let mut events: Vec<(u32, f64)> = times.iter().enumerate().map(|(i, t)| (*t, values.get(i))).collect();
        let Some(k) = events.iter().position(|(t, v)| same(*t, *v)) else { return false };
        events.remove(k);
        // The base is packed: hide the profile's slice and keep the rest in the delta.
        self.hidden.insert(p);
        if let Some(last) = self.last.get_mut(p as usize) {
            *last = 0;
        }
        for (t, v) in events {
            self.push(p, t, v);
        }
        true
    }

    /// Moves a merged profile's events to its survivor.
    pub fn move_profile(&mut self, from: u32, to: u32) {
        for (t, v) in self.events_of(from) {
            self.push(to, t, v);
        }
    }

    /// The aggregate of profile `p`'s base events (not the delta) in `[lo, hi]`.
    fn fold_base(&self, p: u32, lo: u32, hi: u32, func: AggFn) -> Acc {
        let (times, values) = self.base(p);
        let (a, b) = range_in(times, lo, hi);
        fold_range(func, times, values, a, b)
    }

    /// Profiles in `0..len` whose aggregate `holds`; `empty_ok` is whether it
    /// passes for a profile without events. Dead profiles may be included: intersect
    /// with the live ones.
    pub fn scan(&self, len: u32, lo: u32, hi: u32, func: AggFn, holds: impl Fn(AggValue) -> bool + Sync) -> RoaringBitmap {
        let empty_ok = holds(Series::empty(func));
        // Counts are small: their answers are looked up, not computed.
        let counts: Vec<bool> = (0..64).map(|c| holds(AggValue::Number(c as f64))).collect();
        // Nothing in the window (the common case for recent windows): the aggregate is
        // the empty one, whatever the function. A last event before the window says so
        // without looking further.
        let mut out = crate::scan::dense_keyed(len, &self.last, lo, empty_ok, |p| {
            let (times, values) = self.base(p);
            if times.is_empty() {
                return empty_ok;
            }
            // Only the window's end of the series is read: a window that ends now holds
            // a profile's last few events.
            let (a, b) = if lo == 0 && times[times.len() - 1] <= hi { (0, times.len()) } else { range_in(times, lo, hi) };
            if a == b {
                return empty_ok;
            }
            match func {
                AggFn::Count => counts.get(b - a).copied().unwrap_or_else(|| holds(AggValue::Number((b - a) as f64))),
                AggFn::Sum => holds(AggValue::Number(values.sum(a, b))),
                AggFn::First => holds(AggValue::Time(times[a])),
                AggFn::Last => holds(AggValue::Time(times[b - 1])),
                _ => holds(fold_range(func, times, values, a, b).finish()),
            }
        });
        // Profiles with recent events: their exact value, base and delta together.
        for p in &self.delta_profiles {
            if p < len {
                if holds(self.fold(p, lo, hi, func)) {
                    out.insert(p);
                } else {
                    out.remove(p);
                }
            }
        }
        out
    }

    /// The aggregate of profile `p` over events with times in `[lo, hi]`.
    pub fn fold(&self, p: u32, lo: u32, hi: u32, func: AggFn) -> AggValue {
        let mut acc = self.fold_base(p, lo, hi, func);
        if self.delta_profiles.contains(p) {
            for i in &self.delta_index[&p] {
                let (_, t, v) = self.delta[*i as usize];
                if t >= lo && t <= hi {
                    acc.event(t, v);
                }
            }
        }
        acc.finish()
    }

    pub fn has_events(&self, p: u32) -> bool {
        !self.base(p).0.is_empty() || self.delta_profiles.contains(p)
    }

    /// The value of the aggregate for a profile without events.
    pub fn empty(func: AggFn) -> AggValue {
        Acc::new(func).finish()
    }

    /// Merges the delta into a new base.
    pub fn compact(&mut self) {
        if self.delta.is_empty() {
            return;
        }
        let n = (self.starts.len().saturating_sub(1)).max(self.delta_profiles.max().map(|m| m as usize + 1).unwrap_or(0));
        let mut starts = vec![0u32; n + 1];
        for p in 0..n {
            let (times, _) = self.base(p as u32);
            let extra = self.delta_index.get(&(p as u32)).map(Vec::len).unwrap_or(0);
            starts[p + 1] = starts[p] + (times.len() + extra) as u32;
        }
        let total = starts[n] as usize;
        let mut times = Vec::with_capacity(total);
        let mut values: Vec<f64> = Vec::with_capacity(if self.measured { total } else { 0 });
        for p in 0..n as u32 {
            let mut events = self.events_of(p);
            events.sort_by_key(|(t, _)| *t);
            for (t, v) in events {
                times.push(t);
                if self.measured {
                    values.push(v);
                }
            }
        }
        let last = last_times(&starts, &times);
        let values = if self.measured { Measures::from_values(values) } else { Measures::default() };
        *self = Series { starts, times, values, measured: self.measured, last, ..Default::default() };
    }

    pub fn events(&self) -> usize {
        self.times.len() + self.delta.len()
    }

    pub fn memory_bytes(&self) -> usize {
        self.starts.capacity() * 4
            + self.last.capacity() * 4
            + self.times.capacity() * 4
            + self.values.memory_bytes()
            + self.delta.capacity() * 16
            + self.delta_index.len() * 48
            + self.delta_profiles.serialized_size()
            + self.hidden.serialized_size()
    }
}

fn last_times(starts: &[u32], times: &[u32]) -> Vec<u32> {
    (0..starts.len().saturating_sub(1)).map(|p| if starts[p] == starts[p + 1] { 0 } else { times[starts[p + 1] as usize - 1] }).collect()
}

/// The aggregate of the events at positions `a..b` of one profile's series.
fn fold_range(func: AggFn, times: &[u32], values: Values<'_>, a: usize, b: usize) -> Acc {
    let mut acc = Acc::new(func);
    if a < b {
        match func {
            AggFn::Count => acc.count += (b - a) as f64,
            AggFn::First => acc.first = Some(times[a]),
            AggFn::Last => acc.last = Some(times[b - 1]),
            _ => (a..b).for_each(|i| acc.value(values.get(i))),
        }
    }
    acc
}

/// The positions `a..b` of the sorted `times` that fall in `[lo, hi]`. Windows mostly
/// end now and hold a profile's last few events: short series are walked back from
/// their end, which beats two binary searches.
fn range_in(times: &[u32], lo: u32, hi: u32) -> (usize, usize) {
    if times.len() <= 16 {
        let b = times.len() - times.iter().rev().take_while(|t| **t > hi).count();
        let a = b - times[..b].iter().rev().take_while(|t| **t >= lo).count();
        (a, b)
    } else {
        (times.partition_point(|t| *t < lo), times.partition_point(|t| *t <= hi))
    }
}

/// A base's measure values. Most measures are whole numbers (amounts in fen,
/// quantities, points): those are kept as `i32`, which halves the bytes a scan of a
/// sum streams through; any other value keeps the whole series in `f64`.
#[derive(Debug, Default)]
enum Measures {
    #[default]
    None,
    Whole(Vec<i32>),
    Real(Vec<f64>),
}

/// A missing measure (the event had no such property) among whole numbers; `NaN`
/// among reals.
const NO_WHOLE: i32 = i32::MIN;

impl Measures {
    fn from_values(values: Vec<f64>) -> Measures {
        let whole = |v: &f64| v.is_nan() || (v.fract() == 0.0 && *v > NO_WHOLE as f64 && *v <= i32::MAX as f64);
        if values.iter().all(whole) {
            Measures::Whole(values.iter().map(|v| if v.is_nan() { NO_WHOLE } else { *v as i32 }).collect())
        } else {
            Measures::Real(values)
        }
    }

    fn slice(&self, s: usize, e: usize) -> Values<'_> {
        match self {
            Measures::None => Values::None,
            Measures::Whole(v) => Values::Whole(&v[s..e]),
            Measures::Real(v) => Values::Real(&v[s..e]),
        }
    }

    fn memory_bytes(&self) -> usize {
        match self {
            Measures::None => 0,
            Measures::Whole(v) => v.capacity() * 4,
            Measures::Real(v) => v.capacity() * 8,
        }
    }
}

/// One profile's measure values (none for an unmeasured series).
#[derive(Clone, Copy)]
enum Values<'a> {
    None,
    Whole(&'a [i32]),
    Real(&'a [f64]),
}

impl Values<'_> {
    /// The `i`th value; `NaN` when missing.
    fn get(self, i: usize) -> f64 {
        match self {
            Values::None => f64::NAN,
            Values::Whole(v) => v.get(i).map_or(f64::NAN, |w| if *w == NO_WHOLE { f64::NAN } else { *w as f64 }),
            Values::Real(v) => v.get(i).copied().unwrap_or(f64::NAN),
        }
    }

    /// The sum of the values at `a..b`, skipping missing ones.
    fn sum(self, a: usize, b: usize) -> f64 {
        match self {
            Values::None => 0.0,
            Values::Whole(v) => v[a..b].iter().filter(|w| **w != NO_WHOLE).map(|w| *w as i64).sum::<i64>() as f64,
            Values::Real(v) => v[a..b].iter().filter(|v| !v.is_nan()).sum(),
        }
    }
}

struct Acc {
    func: AggFn,
    count: f64,
    sum: f64,
    min: Option<f64>,
    max: Option<f64>,
    first: Option<u32>,
    last: Option<u32>,
}

impl Acc {
    fn new(func: AggFn) -> Acc {
        Acc { func, count: 0.0, sum: 0.0, min: None, max: None, first: None, last: None }
    }

    fn value(&mut self, v: f64) {
        if v.is_nan() {
            return;
        }
        self.sum += v;
        self.min = Some(self.min.map_or(v, |m| m.min(v)));
        self.max = Some(self.max.map_or(v, |m| m.max(v)));
    }

    fn event(&mut self, t: u32, v: f64) {
        self.count += 1.0;
        self.first = Some(self.first.map_or(t, |f| f.min(t)));
        self.last = Some(self.last.map_or(t, |l| l.max(t)));
        self.value(v);
    }

    fn finish(self) -> AggValue {
        match self.func {
            AggFn::Count => AggValue::Number(self.count),
            AggFn::Sum => AggValue::Number(self.sum),
            AggFn::Min => self.min.map_or(AggValue::Missing, AggValue::Number),
            AggFn::Max => self.max.map_or(AggValue::Missing, AggValue::Number),
            AggFn::First => self.first.map_or(AggValue::Missing, AggValue::Time),
            AggFn::Last => self.last.map_or(AggValue::Missing, AggValue::Time),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_and_fractional_measures_fold_alike() {
        // Whole numbers are kept as i32, anything else as f64: the answers are the same.
        for v in [2.0, 2.5, 3e9] {
            let s = Series::from_events(true, vec![(0, 1, v), (0, 2, f64::NAN), (0, 3, -7.0), (1, 3, 1.0)]);
            assert_eq!(s.fold(0, 0, 9, AggFn::Sum), AggValue::Number(v - 7.0));
            assert_eq!(s.fold(0, 0, 9, AggFn::Min), AggValue::Number(-7.0));
            assert!(s.events_of(0).iter().any(|(t, m)| *t == 2 && m.is_nan()), "a missing measure stays missing");
            let test = crate::eval::AggTest::new(
                AggFn::Sum,
                siyu_core::rule::Op::Gt,
                &siyu_core::rule::Operand::One(siyu_core::rule::Scalar::Num(-6.0)),
                siyu_core::Timestamp(0),
            );
            assert_eq!(s.scan(2, 0, 9, AggFn::Sum, |v| test.holds(v)).iter().collect::<Vec<_>>(), if v - 7.0 > -6.0 { vec![0, 1] } else { vec![1] });
        }
    }

    #[test]
    fn base_and_delta_agree_with_a_plain_fold() {
        let events = vec![(3, 50, 1.0), (1, 10, 2.0), (3, 20, 4.0), (1, 30, f64::NAN), (3, 90, 8.0)];
        let mut s = Series::from_events(true, events);
        assert_eq!(s.fold(3, 0, 100, AggFn::Count), AggValue::Number(3.0));
        assert_eq!(s.fold(3, 21, 90, AggFn::Sum), AggValue::Number(9.0));
        assert_eq!(s.fold(1, 0, 100, AggFn::Max), AggValue::Number(2.0), "NaN measures are skipped");
        assert_eq!(s.fold(2, 0, 100, AggFn::Min), AggValue::Missing);
        s.push(3, 5, 16.0);
        s.push(7, 40, 1.0);
        assert_eq!(s.fold(3, 0, 100, AggFn::First), AggValue::Time(5));
        assert_eq!(s.fold(7, 0, 100, AggFn::Last), AggValue::Time(40));
        let two = crate::eval::AggTest::new(
            AggFn::Count,
            siyu_core::rule::Op::Ge,
            &siyu_core::rule::Operand::One(siyu_core::rule::Scalar::Num(2.0)),
            siyu_core::Timestamp(0),
        );
        assert_eq!(s.scan(10, 0, 100, AggFn::Count, |v| two.holds(v)).iter().collect::<Vec<_>>(), vec![1, 3]);
        let none = crate::eval::AggTest::new(
            AggFn::Count,
            siyu_core::rule::Op::Eq,
            &siyu_core::rule::Operand::One(siyu_core::rule::Scalar::Num(0.0)),
            siyu_core::Timestamp(0),
        );
        assert_eq!(s.scan(10, 0, 100, AggFn::Count, |v| none.holds(v)).iter().collect::<Vec<_>>(), vec![0, 2, 4, 5, 6, 8, 9]);
        let before: Vec<_> = (0..8).map(|p| s.fold(p, 10, 60, AggFn::Sum)).collect();
        s.compact();
        assert_eq!((0..8).map(|p| s.fold(p, 10, 60, AggFn::Sum)).collect::<Vec<_>>(), before);
        s.move_profile(7, 1);
        assert_eq!(s.fold(1, 0, 100, AggFn::Count), AggValue::Number(3.0));
    }

    #[test]
    fn an_event_taken_back_is_gone_from_base_delta_and_scans() {
        let mut s = Series::from_events(true, vec![(1, 10, 2.0), (1, 30, 5.0), (2, 20, 1.0)]);
        s.push(1, 40, f64::NAN);
        assert!(s.remove(1, 40, f64::NAN), "from the delta");
        assert!(s.remove(1, 30, 5.0), "from the base");
        assert!(!s.remove(1, 30, 5.0), "only once");
        assert!(!s.remove(2, 20, 9.0), "the measure must match too");
        assert_eq!(s.fold(1, 0, 100, AggFn::Count), AggValue::Number(1.0));
        assert_eq!(s.fold(1, 0, 100, AggFn::Last), AggValue::Time(10));
        let recent = crate::eval::AggTest::new(
            AggFn::Count,
            siyu_core::rule::Op::Ge,
            &siyu_core::rule::Operand::One(siyu_core::rule::Scalar::Num(1.0)),
            siyu_core::Timestamp(0),
        );
        assert_eq!(s.scan(3, 25, 100, AggFn::Count, |v| recent.holds(v)).iter().collect::<Vec<_>>(), Vec::<u32>::new());
        assert_eq!(s.scan(3, 0, 100, AggFn::Count, |v| recent.holds(v)).iter().collect::<Vec<_>>(), vec![1, 2]);
        s.compact();
        assert_eq!(s.events_of(1), vec![(10, 2.0)]);
        assert_eq!(s.events(), 2);
    }
}
