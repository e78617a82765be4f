//! Evaluating rules against the index.
//!
//! `eval_all` computes the members of a rule as a bitmap. An `and` evaluates its
//! cheapest parts first and hands the survivors to the rest as candidates, so an
//! aggregate over ten million profiles only looks at the few thousand that a city, a tag
//! and a store have already narrowed it to. `eval_one` answers for one profile; live
//! segments use it for the profiles each ingest batch touched.

use roaring::RoaringBitmap;
use siyu_core::rule::{semantics, AggFn, Channel, Field, Op, Operand, Presence, Rule, Scalar, Stage};
use siyu_core::Timestamp;

use crate::index::{Index, SeriesKey};
use crate::lifecycle::score_index;
use crate::series::{AggValue, Series};
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
            Rule::Aggregate(a) if !index.has_series(&series_key(a)) => Some(Missing::Series(series_key(a))),
            _ => None,
        };
        if let Some(m) = m {
            if !out.contains(&m) {
                out.push(m);
            }
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
            Field::Stage | Field::Rfm(_) | Field::Score(_) => 3,
            _ => 1,
        },
        Rule::Has(Presence::Wecom) | Rule::Consent(Channel::Wecom) => 3,
        Rule::Has(_) | Rule::Consent(_) => 1,
        Rule::Aggregate(_) => 10,
    }
}

/// The members of `rule`, among `candidates` when given (a subset of the live profiles).
pub fn eval_all(cx: &Cx, rule: &Rule, candidates: Option<&RoaringBitmap>) -> RoaringBitmap {
    let index = cx.index;
    let base = candidates.unwrap_or(&index.alive);
    match rule {
        Rule::And(items) => {
            let mut order: Vec<&Rule> = items.iter().collect();
            order.sort_by_key(|r| cost(index, r));
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

fn column_all(index: &Index, candidates: Option<&RoaringBitmap>, hit: impl Fn(u32) -> bool) -> RoaringBitmap {
    if few(candidates, index) {
        candidates.expect("candidates").iter().filter(|p| hit(*p)).collect()
    } else {
        RoaringBitmap::from_sorted_iter(index.alive.iter().filter(|p| hit(*p))).expect("sorted")
    }
}

fn leaf_all(cx: &Cx, rule: &Rule, candidates: Option<&RoaringBitmap>) -> RoaringBitmap {
    let index = cx.index;
    match rule {
        Rule::Field(f) => match &f.field {
            Field::Trait(t) => {
                let column = &index.traits[t];
                column.matches_all(f.op, &f.value, cx.now, if few(candidates, index) { candidates } else { None })
            }
            Field::Tag | Field::Segment | Field::OwnerGuide | Field::OwnerStore | Field::OwnerCity => {
                set_condition(index, f.op, &f.value, |name| named_set(cx, &f.field, name))
            }
            Field::Stage | Field::Rfm(_) | Field::Score(_) => column_all(index, candidates, |p| lifecycle_field(index, &f.field, f.op, &f.value, p)),
        },
        Rule::Has(Presence::Wecom) => column_all(index, candidates, |p| index.wecom[p as usize] > 0),
        Rule::Has(Presence::Identity(k)) => index.identities.get(k).cloned().unwrap_or_default(),
        Rule::Consent(ch) => consent_all(cx, *ch, candidates),
        Rule::Aggregate(a) => {
            let series = &index.series[&series_key(a).id()].series;
            let (lo, hi) = window_secs(&a.window, cx.now);
            let test = |v: AggValue| agg_matches(a.func, v, a.op, &a.value, cx.now);
            let mut matched = Vec::new();
            let mut visited = Vec::new();
            let empty_counts = test(Series::empty(a.func));
            let walk = if few(candidates, index) { candidates } else { None };
            series.fold_all(lo, hi, a.func, walk, |p, v| {
                if empty_counts {
                    visited.push(p);
                }
                if test(v) {
                    matched.push(p);
                }
            });
            matched.sort_unstable();
            let mut out = RoaringBitmap::from_sorted_iter(matched).expect("sorted");
            if empty_counts {
                visited.sort_unstable();
                let with_events = RoaringBitmap::from_sorted_iter(visited).expect("sorted");
                out |= candidates.unwrap_or(&index.alive) - with_events;
            }
            out
        }
        _ => unreachable!("not a leaf"),
    }
}

fn window_secs(w: &siyu_core::rule::Window, now: Timestamp) -> (u32, u32) {
    let (lo, hi) = w.range(now);
    secs_range(lo, hi)
}

fn agg_matches(func: AggFn, v: AggValue, op: Op, operand: &Operand, now: Timestamp) -> bool {
    match (func.yields_time(), v) {
        (true, AggValue::Time(t)) => semantics::time_matches(Some(instant(t)), op, operand, now),
        (true, _) => semantics::time_matches(None, op, operand, now),
        (false, AggValue::Number(n)) => semantics::number_matches(Some(n), op, operand),
        (false, _) => semantics::number_matches(None, op, operand),
    }
}

/// The members of one named set: a tag, a segment, a guide's, store's or city's customers.
fn named_set(cx: &Cx, field: &Field, name: &str) -> RoaringBitmap {
    let index = cx.index;
    match field {
        Field::Tag => index.tags.get(name).cloned().unwrap_or_default(),
        Field::Segment => cx.segments.members(name).cloned().unwrap_or_default(),
        Field::OwnerGuide => index.guides.get(name).cloned().unwrap_or_default(),
        Field::OwnerStore => union_guides(index, |g| index.org.staff_store.get(g).is_some_and(|s| s == name)),
        Field::OwnerCity => union_guides(index, |g| {
            index.org.staff_store.get(g).and_then(|s| index.org.store_city.get(s)).is_some_and(|c| c == name)
        }),
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

fn lifecycle_field(index: &Index, field: &Field, op: Op, operand: &Operand, p: u32) -> bool {
    let i = p as usize;
    match field {
        Field::Stage => {
            let stage = Stage::ALL[index.stage[i] as usize].as_str();
            let is = |s: &Scalar| matches!(s, Scalar::Str(x) if x == stage);
            match (op, operand) {
                (Op::Eq, Operand::One(s)) => is(s),
                (Op::Ne, Operand::One(s)) => !is(s),
                (Op::In, Operand::List(items)) => items.iter().any(is),
                _ => false,
            }
        }
        Field::Rfm(part) => {
            let v = index.rfm[i][*part as usize];
            semantics::number_matches((v > 0).then_some(v as f64), op, operand)
        }
        Field::Score(kind) => {
            let v = index.scores[i][score_index(*kind)];
            semantics::number_matches((!v.is_nan()).then_some(v as f64), op, operand)
        }
        _ => false,
    }
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
        return column_all(index, candidates, |p| index.wecom[p as usize] > 0) - refused;
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
            let series = &index.series[&series_key(a).id()].series;
            let (lo, hi) = window_secs(&a.window, cx.now);
            agg_matches(a.func, series.fold(p, lo, hi, a.func), a.op, &a.value, cx.now)
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
        Field::OwnerCity => index.guides.iter().any(|(g, b)| {
            b.contains(p) && index.org.staff_store.get(g).and_then(|s| index.org.store_city.get(s)).is_some_and(|c| c == name)
        }),
        _ => false,
    }
}
