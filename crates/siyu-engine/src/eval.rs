//! Evaluating rules against the index.
//!
//! `eval_all` computes the members of a rule as a bitmap. An `and` evaluates its
//! cheapest parts first and hands the survivors to the rest as candidates, so an
//! aggregate over ten million profiles only looks at the few thousand that a city, a tag
//! and a store have already narrowed it to. `eval_one` answers for one profile; live
//! segments use it for the profiles each ingest batch touched.

use roaring::RoaringBitmap;
use siyu_core::Timestamp;
use siyu_core::rule::{AggFn, Channel, Field, Op, Operand, Presence, Rule, Scalar, Stage};

use crate::index::{Index, SeriesKey};
use crate::lifecycle::score_index;
use crate::series::AggValue;
use crate::time::{instant, secs_range};

/// Something a rule needs that the index does not hold yet.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Missing {
    #[error("trait {0:?} is not indexed yet")]
    Trait(String),
    #[error("aggregate {} is not indexed yet", .0.id())]
    Series(SeriesKey),
    #[error("there is no segment named {0:?}")]
    Segment(String),
}

/// Membership of other segments, for `segment = "…"`.
pub trait SegmentLookup {
    fn members(&self, name: &str) -> Option<&RoaringBitmap>;
}

pub struct Cx<'a> {
    pub index: &'a Index,
    pub segments: &'a dyn SegmentLookup,
    pub now: Timestamp,
}

pub fn series_key(a: &siyu_core::rule::AggregatePredicate) -> SeriesKey {
    SeriesKey { event: a.event.clone(), filters: a.filters.clone(), measure: a.measure.clone() }
}

/// Everything the rule needs that is not there, without duplicates.
pub fn missing(index: &Index, segments: &dyn SegmentLookup, rule: &Rule) -> Vec<Missing> {
    let mut out: Vec<Missing> = Vec::new();
    rule.visit(&mut |r| {
        let m = match r {
            Rule::Field(f) => match &f.field {
                Field::Trait(t) if !index.has_trait(t) => Some(Missing::Trait(t.clone())),
                Field::Segment => {
                    let names = match &f.value {
                        Operand::One(Scalar::Str(s)) => vec![s.clone()],
                        Operand::List(items) => items.iter().filter_map(|i| if let Scalar::Str(s) = i { Some(s.clone()) } else { None }).collect(),
                        _ => vec![],
                    };
                    names.into_iter().find(|n| segments.members(n).is_none()).map(Missing::Segment)
                }
                _ => None,
            },
            Rule::Consent(ch) if !index.has_trait(&ch.consent_trait()) => Some(Missing::Trait(ch.consent_trait())),
            Rule::Aggregate(a) if index.series_for_aggregate(a).is_none() => Some(Missing::Series(series_key(a))),
            _ => None,
        };
        if let Some(m) = m
            && !out.contains(&m)
        {
            out.push(m);
        }
    });
    out
}

fn cost(index: &Index, rule: &Rule) -> u32 {
    match rule {
        Rule::And(items) => items.iter().map(|r| cost(index, r)).min().unwrap_or(0),
        Rule::Or(items) => items.iter().map(|r| cost(index, r)).sum(),
        Rule::Not(r) => cost(index, r),
        Rule::Field(f) => match &f.field {
            Field::Trait(t) => index.traits.get(t).map_or(5, |c| if c.distinct() <= 512 { 1 } else { 5 }),
            Field::Stage | Field::Rfm(_) | Field::Score(_) => 1,
            _ => 1,
        },
        Rule::Has(Presence::Wecom) | Rule::Consent(Channel::Wecom) => 1,
        Rule::Has(_) | Rule::Consent(_) => 1,
        Rule::Aggregate(_) => 10,
    }
}

/// About how many profiles a rule matches, from bitmap sizes where that is free;
/// everyone where it is not.
fn estimate(cx: &Cx, rule: &Rule) -> u64 {
    let index = cx.index;
    let all = index.alive.len();
    match rule {
        Rule::And(items) => items.iter().map(|r| estimate(cx, r)).min().unwrap_or(all),
        Rule::Or(items) => items.iter().map(|r| estimate(cx, r)).sum::<u64>().min(all),
        Rule::Not(r) => all - estimate(cx, r).min(all),
        Rule::Has(Presence::Identity(k)) => index.identities.get(k).map_or(0, RoaringBitmap::len),
        Rule::Has(Presence::Wecom) => index.wecom_set.len(),
        Rule::Field(f) => match (&f.field, f.op, &f.value) {
            (Field::Stage | Field::Rfm(_) | Field::Score(_), _, _) => {
                let sets = match &f.field {
                    Field::Stage => &index.stage_sets,
                    Field::Rfm(part) => &index.rfm_sets[*part as usize],
                    Field::Score(kind) => &index.score_sets[score_index(*kind)],
                    _ => unreachable!("lifecycle field"),
                };
                lifecycle_table(&f.field, f.op, &f.value).iter().zip(sets).filter(|(ok, _)| **ok).map(|(_, b)| b.len()).sum()
            }
            (Field::Tag, Op::Eq, Operand::One(Scalar::Str(t))) => index.tags.get(t).map_or(0, RoaringBitmap::len),
            (Field::OwnerGuide, Op::Eq, Operand::One(Scalar::Str(g))) => index.guides.get(g).map_or(0, RoaringBitmap::len),
            (Field::Segment, Op::Eq, Operand::One(Scalar::Str(s))) => cx.segments.members(s).map_or(0, RoaringBitmap::len),
            _ => all,
        },
        _ => all,
    }
}

/// The members of `rule`, among `candidates` when given (a subset of the live profiles).
pub fn eval_all(cx: &Cx, rule: &Rule, candidates: Option<&RoaringBitmap>) -> RoaringBitmap {
    let index = cx.index;
    let base = candidates.unwrap_or(&index.alive);
    match rule {
        Rule::And(items) => {
            let mut order: Vec<(u32, u64, &Rule)> = items.iter().map(|r| (cost(index, r), estimate(cx, r), r)).collect();
            // Cheap parts first, and among equally cheap the smallest, so the costly
            // parts only look at what is left.
            order.sort_by_key(|(c, e, _)| (*c, *e));
            let order: Vec<&Rule> = order.into_iter().map(|(_, _, r)| r).collect();
            let mut acc: Option<RoaringBitmap> = candidates.cloned();
            for r in order {
                let narrowed = eval_all(cx, r, acc.as_ref());
                acc = Some(narrowed);
                if acc.as_ref().is_some_and(RoaringBitmap::is_empty) {
                    break;
                }
            }
            acc.unwrap_or_default()
        }
        Rule::Or(items) => {
            let mut acc = RoaringBitmap::new();
            for r in items {
                acc |= eval_all(cx, r, candidates);
            }
            acc
        }
        Rule::Not(inner) => base - eval_all(cx, inner, candidates),
        _ => leaf_all(cx, rule, candidates) & base,
    }
}

/// Whether to visit candidates one by one rather than scan everything and intersect.
fn few(candidates: Option<&RoaringBitmap>, index: &Index) -> bool {
    candidates.is_some_and(|c| c.len() * 4 < index.alive.len())
}

/// A numeric comparison, decided once per evaluation rather than per profile, with no
/// indirect call in the loop. Agrees with [`semantics::number_matches`].
#[derive(Debug, Clone)]
pub enum NumTest {
    Never,
    Cmp(Op, f64),
    In(Vec<f64>),
    Between(f64, f64),
}

impl NumTest {
    pub fn new(op: Op, operand: &Operand) -> NumTest {
        let num = |s: &Scalar| if let Scalar::Num(x) = s { Some(*x) } else { None };
        match (op, operand) {
            (Op::In, Operand::List(items)) => NumTest::In(items.iter().filter_map(num).collect()),
            (Op::Between, Operand::Range(a, b)) => match (num(a), num(b)) {
                (Some(a), Some(b)) => NumTest::Between(a, b),
                _ => NumTest::Never,
            },
            (op, Operand::One(s)) if op.is_comparison() => match num(s) {
                Some(x) if !x.is_nan() => NumTest::Cmp(op, x),
                _ => NumTest::Never,
            },
            _ => NumTest::Never,
        }
    }

    #[inline]
    pub fn holds(&self, n: f64) -> bool {
        match self {
            NumTest::Never => false,
            NumTest::Cmp(op, x) => match op {
                Op::Eq => n == *x,
                Op::Ne => !n.is_nan() && n != *x,
                Op::Lt => n < *x,
                Op::Le => n <= *x,
                Op::Gt => n > *x,
                Op::Ge => n >= *x,
                _ => false,
            },
            NumTest::In(xs) => xs.contains(&n),
            NumTest::Between(a, b) => *a <= n && n <= *b,
        }
    }
}

fn number_test(op: Op, operand: &Operand) -> NumTest {
    NumTest::new(op, operand)
}

/// A comparison of an aggregate: numbers as they are; times (first, last) as instants,
/// with dates and `ago(…)` resolved at `now`.
#[derive(Debug, Clone)]
pub struct AggTest {
    time: bool,
    test: NumTest,
}

impl AggTest {
    pub fn new(func: AggFn, op: Op, operand: &Operand, now: Timestamp) -> AggTest {
        if func.yields_time() {
            // Instants as numbers: same order, same equality.
            let as_ms = |s: &Scalar| Scalar::Num(s.as_instant(now).map_or(f64::NAN, |t| t.0 as f64));
            let operand = match operand {
                Operand::One(s) => Operand::One(as_ms(s)),
                Operand::List(items) => Operand::List(items.iter().map(as_ms).collect()),
                Operand::Range(a, b) => Operand::Range(as_ms(a), as_ms(b)),
                Operand::None => Operand::None,
            };
            AggTest { time: true, test: NumTest::new(op, &operand) }
        } else {
            AggTest { time: false, test: NumTest::new(op, operand) }
        }
    }

    #[inline]
    pub fn holds(&self, v: AggValue) -> bool {
        match v {
            AggValue::Number(n) => !self.time && self.test.holds(n),
            AggValue::Time(t) => self.time && self.test.holds(instant(t).0 as f64),
            AggValue::Missing => false,
        }
    }
}

fn leaf_all(cx: &Cx, rule: &Rule, candidates: Option<&RoaringBitmap>) -> RoaringBitmap {
    let index = cx.index;
    match rule {
        Rule::Field(f) => match &f.field {
            Field::Trait(t) => index.traits[t].matches_all(f.op, &f.value, cx.now, candidates),
            Field::Tag | Field::Segment | Field::OwnerGuide | Field::OwnerStore | Field::OwnerCity => {
                set_condition(index, f.op, &f.value, |name| named_set(cx, &f.field, name))
            }
            Field::Stage | Field::Rfm(_) | Field::Score(_) => lifecycle_all(index, &f.field, f.op, &f.value, candidates),
        },
        Rule::Has(Presence::Wecom) => index.wecom_set.clone(),
        Rule::Has(Presence::Identity(k)) => index.identities.get(k).cloned().unwrap_or_default(),
        Rule::Consent(ch) => consent_all(cx, *ch, candidates),
        Rule::Aggregate(a) => {
            let series = index.series_for_aggregate(a).expect("indexed");
            let (lo, hi) = window_secs(&a.window, cx.now);
            let test = AggTest::new(a.func, a.op, &a.value, cx.now);
            if few(candidates, index) {
                let c = candidates.expect("candidates");
                return c.iter().filter(|p| test.holds(series.fold(*p, lo, hi, a.func))).collect();
            }
            series.scan(index.len(), lo, hi, a.func, |v| test.holds(v)) & &index.alive
        }
        _ => unreachable!("not a leaf"),
    }
}

fn window_secs(w: &siyu_core::rule::Window, now: Timestamp) -> (u32, u32) {
    let (lo, hi) = w.range(now);
    secs_range(lo, hi)
}

/// The members of one named set: a tag, a segment, a guide's, store's or city's customers.
fn named_set(cx: &Cx, field: &Field, name: &str) -> RoaringBitmap {
    let index = cx.index;
    match field {
        Field::Tag => index.tags.get(name).cloned().unwrap_or_default(),
        Field::Segment => cx.segments.members(name).cloned().unwrap_or_default(),
        Field::OwnerGuide => index.guides.get(name).cloned().unwrap_or_default(),
        Field::OwnerStore => union_guides(index, |g| index.org.staff_store.get(g).is_some_and(|s| s == name)),
        Field::OwnerCity => union_guides(index, |g| index.org.staff_store.get(g).and_then(|s| index.org.store_city.get(s)).is_some_and(|c| c == name)),
        _ => RoaringBitmap::new(),
    }
}

fn union_guides(index: &Index, keep: impl Fn(&str) -> bool) -> RoaringBitmap {
    let mut out = RoaringBitmap::new();
    for (g, b) in &index.guides {
        if keep(g) {
            out |= b;
        }
    }
    out
}

/// Conditions on multi-valued fields (tags, owners, segments): `=` is "one of them is",
/// `!=` is "none of them is", `in` is any of several, `contains` matches names (tags).
fn set_condition(index: &Index, op: Op, operand: &Operand, set: impl Fn(&str) -> RoaringBitmap) -> RoaringBitmap {
    match (op, operand) {
        (Op::Eq, Operand::One(Scalar::Str(s))) => set(s),
        (Op::Ne, Operand::One(Scalar::Str(s))) => &index.alive - set(s),
        (Op::In, Operand::List(items)) => {
            let mut out = RoaringBitmap::new();
            for i in items {
                if let Scalar::Str(s) = i {
                    out |= set(s);
                }
            }
            out
        }
        (Op::Contains, Operand::One(Scalar::Str(needle))) => {
            let mut out = RoaringBitmap::new();
            for (tag, b) in &index.tags {
                if tag.contains(needle.as_str()) {
                    out |= b;
                }
            }
            out
        }
        (Op::Exists, _) => {
            let mut out = RoaringBitmap::new();
            for b in index.tags.values() {
                out |= b;
            }
            out
        }
        _ => RoaringBitmap::new(),
    }
}

/// Which values of a lifecycle field the condition accepts: stage codes 0–6, RFM scores
/// 0–5 (0: none), score percentages 0–100.
fn lifecycle_table(field: &Field, op: Op, operand: &Operand) -> Vec<bool> {
    match field {
        Field::Stage => Stage::ALL
            .iter()
            .map(|s| {
                let is = |x: &Scalar| matches!(x, Scalar::Str(v) if v == s.as_str());
                match (op, operand) {
                    (Op::Eq, Operand::One(x)) => is(x),
                    (Op::Ne, Operand::One(x)) => !is(x),
                    (Op::In, Operand::List(items)) => items.iter().any(is),
                    _ => false,
                }
            })
            .collect(),
        Field::Rfm(_) => {
            let test = number_test(op, operand);
            (0..=5u8).map(|v| v > 0 && test.holds(v as f64)).collect()
        }
        Field::Score(_) => {
            let test = number_test(op, operand);
            (0..=100u8).map(|v| test.holds(v as f64 / 100.0)).collect()
        }
        _ => Vec::new(),
    }
}

/// Stage, RFM and scores: a union of the accepted values' bitmaps, or, for a few
/// candidates, a look at each one's column.
fn lifecycle_all(index: &Index, field: &Field, op: Op, operand: &Operand, candidates: Option<&RoaringBitmap>) -> RoaringBitmap {
    let sets = match field {
        Field::Stage => &index.stage_sets,
        Field::Rfm(part) => &index.rfm_sets[*part as usize],
        Field::Score(kind) => &index.score_sets[score_index(*kind)],
        _ => return RoaringBitmap::new(),
    };
    let table = lifecycle_table(field, op, operand);
    // Looking at each candidate costs far more per profile than merging bitmaps: only
    // worth it when the candidates are a small part of what the union would touch.
    let union_size: u64 = table.iter().zip(sets).filter(|(ok, _)| **ok).map(|(_, b)| b.len()).sum();
    if let Some(c) = candidates.filter(|c| c.len() * 16 < union_size) {
        let hit = |p: &u32| lifecycle_value(index, field, *p).and_then(|v| table.get(v as usize)).copied().unwrap_or(false);
        return RoaringBitmap::from_sorted_iter(c.iter().filter(hit)).expect("sorted");
    }
    let mut out = RoaringBitmap::new();
    for (v, ok) in table.iter().enumerate() {
        if *ok {
            out |= &sets[v];
        }
    }
    out
}

fn lifecycle_value(index: &Index, field: &Field, p: u32) -> Option<u8> {
    let i = p as usize;
    Some(match field {
        Field::Stage => index.stage[i],
        Field::Rfm(part) => index.rfm[i][*part as usize],
        Field::Score(kind) => index.scores[i][score_index(*kind)],
        _ => return None,
    })
}

fn lifecycle_field(index: &Index, field: &Field, op: Op, operand: &Operand, p: u32) -> bool {
    let table = lifecycle_table(field, op, operand);
    lifecycle_value(index, field, p).and_then(|v| table.get(v as usize)).copied().unwrap_or(false)
}

/// Consent is the `consent.<channel>` trait being true. WeCom is the exception: an
/// active contact implies it, unless the customer said otherwise.
fn consent_all(cx: &Cx, ch: Channel, candidates: Option<&RoaringBitmap>) -> RoaringBitmap {
    let index = cx.index;
    let column = &index.traits[&ch.consent_trait()];
    let yes = Operand::One(Scalar::Bool(true));
    if ch == Channel::Wecom {
        let no = Operand::One(Scalar::Bool(false));
        let refused = column.matches_all(Op::Eq, &no, cx.now, None);
        return &index.wecom_set - refused;
    }
    column.matches_all(Op::Eq, &yes, cx.now, if few(candidates, index) { candidates } else { None })
}

/// Whether profile `p` matches `rule`.
pub fn eval_one(cx: &Cx, rule: &Rule, p: u32) -> bool {
    let index = cx.index;
    if !index.alive.contains(p) {
        return false;
    }
    match rule {
        Rule::And(items) => items.iter().all(|r| eval_one(cx, r, p)),
        Rule::Or(items) => items.iter().any(|r| eval_one(cx, r, p)),
        Rule::Not(inner) => !eval_one(cx, inner, p),
        Rule::Field(f) => match &f.field {
            Field::Trait(t) => index.traits[t].matches_one(p, f.op, &f.value, cx.now),
            Field::Stage | Field::Rfm(_) | Field::Score(_) => lifecycle_field(index, &f.field, f.op, &f.value, p),
            Field::Tag if matches!(f.op, Op::Contains | Op::Exists) => {
                let needle = match &f.value {
                    Operand::One(Scalar::Str(s)) => s.as_str(),
                    _ => "",
                };
                index.tags.iter().any(|(t, b)| t.contains(needle) && b.contains(p))
            }
            field => {
                let is = |s: &Scalar| matches!(s, Scalar::Str(name) if member_of(cx, field, name, p));
                match (f.op, &f.value) {
                    (Op::Eq, Operand::One(s)) => is(s),
                    (Op::Ne, Operand::One(s)) => !is(s),
                    (Op::In, Operand::List(items)) => items.iter().any(is),
                    _ => false,
                }
            }
        },
        Rule::Has(Presence::Wecom) => index.wecom[p as usize] > 0,
        Rule::Has(Presence::Identity(k)) => index.identities.get(k).is_some_and(|b| b.contains(p)),
        Rule::Consent(ch) => {
            let column = &index.traits[&ch.consent_trait()];
            if *ch == Channel::Wecom {
                index.wecom[p as usize] > 0 && !column.matches_one(p, Op::Eq, &Operand::One(Scalar::Bool(false)), cx.now)
            } else {
                column.matches_one(p, Op::Eq, &Operand::One(Scalar::Bool(true)), cx.now)
            }
        }
        Rule::Aggregate(a) => {
            let series = index.series_for_aggregate(a).expect("indexed");
            let (lo, hi) = window_secs(&a.window, cx.now);
            AggTest::new(a.func, a.op, &a.value, cx.now).holds(series.fold(p, lo, hi, a.func))
        }
    }
}

fn member_of(cx: &Cx, field: &Field, name: &str, p: u32) -> bool {
    let index = cx.index;
    match field {
        Field::Tag => index.tags.get(name).is_some_and(|b| b.contains(p)),
        Field::Segment => cx.segments.members(name).is_some_and(|b| b.contains(p)),
        Field::OwnerGuide => index.guides.get(name).is_some_and(|b| b.contains(p)),
        Field::OwnerStore => index.guides.iter().any(|(g, b)| b.contains(p) && index.org.staff_store.get(g).is_some_and(|s| s == name)),
        Field::OwnerCity => {
            index.guides.iter().any(|(g, b)| b.contains(p) && index.org.staff_store.get(g).and_then(|s| index.org.store_city.get(s)).is_some_and(|c| c == name))
        }
        _ => false,
    }
}
