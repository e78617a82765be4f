//! A rule as SQL over the benchmark's exported tables, so DuckDB answers the same
//! question on the same data:
//!
//! - `profiles(id, <trait columns>, stage, rfm_r, rfm_f, rfm_m, score_<kind>, wecom)`
//! - `tags(profile_id, tag)`, `guides(profile_id, guide)`, `staff(guide, store, city)`
//! - `events(profile_id, name, ts, revenue_fen, category)` (ts in epoch milliseconds,
//!   to the second, as the engine keeps it)
//!
//! Aggregates become `id IN (SELECT profile_id … GROUP BY profile_id HAVING …)`, or its
//! complement when the comparison also holds for customers with no such events.

use siyu_core::Timestamp;
use siyu_core::rule::*;

pub struct Sql<'a> {
    pub now: Timestamp,
    /// Segment names and rules, for `segment = "…"`.
    pub segments: &'a [(String, Rule)],
    /// Trait names exported as profile columns.
    pub trait_columns: &'a [&'a str],
}

fn lit(s: &Scalar, now: Timestamp) -> String {
    match s {
        Scalar::Str(x) => format!("'{}'", x.replace('\'', "''")),
        Scalar::Num(n) => format!("{n}"),
        Scalar::Bool(b) => b.to_string(),
        Scalar::Date(_) | Scalar::Ago(_) => s.as_instant(now).expect("instant").0.to_string(),
    }
}

fn cmp(col: &str, op: Op, value: &Operand, now: Timestamp) -> String {
    match (op, value) {
        (Op::Exists, _) => format!("{col} IS NOT NULL"),
        (Op::In, Operand::List(items)) => format!("{col} IN ({})", items.iter().map(|i| lit(i, now)).collect::<Vec<_>>().join(", ")),
        (Op::Between, Operand::Range(a, b)) => format!("{col} BETWEEN {} AND {}", lit(a, now), lit(b, now)),
        (Op::Contains, Operand::One(Scalar::Str(s))) => format!("contains({col}, '{}')", s.replace('\'', "''")),
        (op, Operand::One(s)) => format!("{col} {} {}", if op == Op::Ne { "<>" } else { op.as_str() }, lit(s, now)),
        _ => "false".into(),
    }
}

fn segment_table(name: &str) -> String {
    format!("\"segment_{}\"", name.replace('"', ""))
}

impl Sql<'_> {
    pub fn count_query(&self, rule: &Rule) -> Result<String, String> {
        Ok(format!("SELECT count(*) FROM profiles p WHERE {}", self.expr(rule)?))
    }

    /// The statement that keeps a saved segment's members as a table, as Siyu keeps them.
    pub fn materialise(&self, name: &str) -> Result<String, String> {
        let (_, rule) = self.segments.iter().find(|(n, _)| n == name).ok_or(format!("no segment {name}"))?;
        Ok(format!("CREATE TABLE {} AS SELECT p.id FROM profiles p WHERE {}", segment_table(name), self.expr(rule)?))
    }

    pub fn expr(&self, rule: &Rule) -> Result<String, String> {
        let now = self.now;
        Ok(match rule {
            Rule::And(items) => format!("({})", items.iter().map(|r| self.expr(r)).collect::<Result<Vec<_>, _>>()?.join(" AND ")),
            Rule::Or(items) => format!("({})", items.iter().map(|r| self.expr(r)).collect::<Result<Vec<_>, _>>()?.join(" OR ")),
            Rule::Not(r) => format!("(NOT {})", self.expr(r)?),
            Rule::Has(Presence::Wecom) => "p.wecom > 0".into(),
            // SQL comparisons with NULL are unknown, not false; the rule language is
            // two-valued (absent means false), so every comparison is coalesced.
            Rule::Field(f) => match &f.field {
                Field::Trait(t) if self.trait_columns.contains(&t.as_str()) => format!("coalesce({}, false)", cmp(&format!("p.\"{t}\""), f.op, &f.value, now)),
                Field::Trait(t) => return Err(format!("trait {t} is not exported")),
                Field::Stage => format!("coalesce({}, false)", cmp("p.stage", f.op, &f.value, now)),
                Field::Rfm(part) => format!("coalesce({}, false)", cmp(["p.rfm_r", "p.rfm_f", "p.rfm_m"][*part as usize], f.op, &f.value, now)),
                Field::Score(k) => format!("coalesce({}, false)", cmp(&format!("p.score_{}", k.as_str()), f.op, &f.value, now)),
                Field::Tag => self.set(f, |name| format!("SELECT profile_id FROM tags WHERE tag = {}", lit(name, now)))?,
                Field::OwnerGuide => self.set(f, |name| format!("SELECT profile_id FROM guides WHERE guide = {}", lit(name, now)))?,
                Field::OwnerStore => {
                    self.set(f, |name| format!("SELECT g.profile_id FROM guides g JOIN staff s ON s.guide = g.guide WHERE s.store = {}", lit(name, now)))?
                }
                Field::OwnerCity => {
                    self.set(f, |name| format!("SELECT g.profile_id FROM guides g JOIN staff s ON s.guide = g.guide WHERE s.city = {}", lit(name, now)))?
                }
                Field::Segment => {
                    let (Op::Eq | Op::Ne, Operand::One(Scalar::Str(name))) = (f.op, &f.value) else { return Err("segment: only = and !=".into()) };
                    // Siyu keeps a saved segment's members; DuckDB gets them as a table
                    // (`materialise`), so both do the same work: a lookup.
                    self.segments.iter().find(|(n, _)| n == name).ok_or(format!("no segment {name}"))?;
                    let inner = format!("p.id IN (SELECT id FROM {})", segment_table(name));
                    if f.op == Op::Eq { inner } else { format!("(NOT {inner})") }
                }
            },
            Rule::Aggregate(a) => self.aggregate(a)?,
            other => return Err(format!("{other} has no SQL translation in this benchmark")),
        })
    }

    /// Multi-valued fields: `=` is membership, `!=` its absence, `in` any of several.
    fn set(&self, f: &FieldPredicate, sub: impl Fn(&Scalar) -> String) -> Result<String, String> {
        Ok(match (f.op, &f.value) {
            (Op::Eq, Operand::One(s)) => format!("p.id IN ({})", sub(s)),
            (Op::Ne, Operand::One(s)) => format!("p.id NOT IN ({})", sub(s)),
            (Op::In, Operand::List(items)) => format!("({})", items.iter().map(|s| format!("p.id IN ({})", sub(s))).collect::<Vec<_>>().join(" OR ")),
            _ => return Err(format!("{} {} has no SQL translation", f.field.name(), f.op.as_str())),
        })
    }

    fn aggregate(&self, a: &AggregatePredicate) -> Result<String, String> {
        let now = self.now;
        let (lo, hi) = a.window.range(now);
        let mut conditions = vec![format!("name = '{}'", a.event.replace('\'', "''"))];
        if lo != i64::MIN {
            conditions.push(format!("ts >= {lo}"));
        }
        if hi != i64::MAX {
            conditions.push(format!("ts <= {hi}"));
        }
        for f in &a.filters {
            let col = match f.path.as_str() {
                "category" => "category",
                "revenue_fen" => "revenue_fen",
                other => return Err(format!("property {other} is not exported")),
            };
            conditions.push(cmp(col, f.op, &f.value, now));
        }
        let measure = |m: &Option<String>| match m.as_deref() {
            Some("revenue_fen") => Ok("revenue_fen"),
            other => Err(format!("measure {other:?} is not exported")),
        };
        let (agg, empty) = match a.func {
            AggFn::Count => ("count(*)".to_string(), Some(0.0)),
            AggFn::Sum => (format!("coalesce(sum({}), 0)", measure(&a.measure)?), Some(0.0)),
            AggFn::Min => (format!("min({})", measure(&a.measure)?), None),
            AggFn::Max => (format!("max({})", measure(&a.measure)?), None),
            AggFn::First => ("min(ts)".to_string(), None),
            AggFn::Last => ("max(ts)".to_string(), None),
        };
        let test = cmp(&agg, a.op, &a.value, now);
        let empty_matches = empty.is_some_and(|e| siyu_core::rule::semantics::number_matches(Some(e), a.op, &a.value));
        let events = format!("SELECT profile_id FROM events WHERE {} GROUP BY profile_id HAVING", conditions.join(" AND "));
        Ok(if empty_matches { format!("p.id NOT IN ({events} NOT ({test}))") } else { format!("p.id IN ({events} {test})") })
    }
}
