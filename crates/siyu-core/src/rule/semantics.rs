//! What a comparison means, as pure functions of a value. Every evaluator uses these:
//! the engine once per distinct value in its dictionaries, the naive reference
//! evaluator once per profile.

use serde_json::Value;

use super::ast::{Op, Operand, PropertyFilter, Scalar};
use crate::time::Timestamp;

/// A trait or property value compared with a rule operand. `None` (absent or JSON null)
/// matches nothing but `not exists`, which the caller expresses with `not`.
pub fn value_matches(value: Option<&Value>, op: Op, operand: &Operand, now: Timestamp) -> bool {
    let Some(value) = value.filter(|v| !v.is_null()) else { return false };
    match (op, operand) {
        (Op::Exists, _) => true,
        (Op::In, Operand::List(items)) => items.iter().any(|s| compare(value, s, now) == Some(std::cmp::Ordering::Equal)),
        (Op::Between, Operand::Range(lo, hi)) => {
            matches!(compare(value, lo, now), Some(o) if o.is_ge()) && matches!(compare(value, hi, now), Some(o) if o.is_le())
        }
        (Op::Contains, Operand::One(Scalar::Str(needle))) => match value {
            Value::String(s) => s.contains(needle.as_str()),
            // Arrays of strings contain an element; other values by their JSON text.
            Value::Array(items) => items.iter().any(|i| i.as_str() == Some(needle.as_str())),
            other => other.to_string().contains(needle.as_str()),
        },
        (op, Operand::One(s)) => match compare(value, s, now) {
            None => false,
            Some(o) => ordering_satisfies(op, o),
        },
        _ => false,
    }
}

/// A numeric aggregate (count, sum, min, max) compared with the operand; `None` when
/// the aggregate does not exist (min or max over no events).
pub fn number_matches(n: Option<f64>, op: Op, operand: &Operand) -> bool {
    let Some(n) = n else { return false };
    let cmp = |s: &Scalar| match s {
        Scalar::Num(x) => n.partial_cmp(x),
        _ => None,
    };
    match (op, operand) {
        (Op::In, Operand::List(items)) => items.iter().any(|s| cmp(s) == Some(std::cmp::Ordering::Equal)),
        (Op::Between, Operand::Range(lo, hi)) => matches!(cmp(lo), Some(o) if o.is_ge()) && matches!(cmp(hi), Some(o) if o.is_le()),
        (op, Operand::One(s)) => cmp(s).is_some_and(|o| ordering_satisfies(op, o)),
        _ => false,
    }
}

/// A time aggregate (first, last) compared with a date or `ago(…)` operand.
pub fn time_matches(t: Option<Timestamp>, op: Op, operand: &Operand, now: Timestamp) -> bool {
    let Some(t) = t else { return false };
    let cmp = |s: &Scalar| s.as_instant(now).map(|i| t.cmp(&i));
    match (op, operand) {
        (Op::In, Operand::List(items)) => items.iter().any(|s| cmp(s) == Some(std::cmp::Ordering::Equal)),
        (Op::Between, Operand::Range(lo, hi)) => matches!(cmp(lo), Some(o) if o.is_ge()) && matches!(cmp(hi), Some(o) if o.is_le()),
        (op, Operand::One(s)) => cmp(s).is_some_and(|o| ordering_satisfies(op, o)),
        _ => false,
    }
}

fn ordering_satisfies(op: Op, o: std::cmp::Ordering) -> bool {
    use std::cmp::Ordering::*;
    match op {
        Op::Eq => o == Equal,
        Op::Ne => o != Equal,
        Op::Lt => o == Less,
        Op::Le => o != Greater,
        Op::Gt => o == Greater,
        Op::Ge => o != Less,
        _ => false,
    }
}

/// Orders a value against a literal of a compatible type; `None` when the types do not
/// meet (a string against a number, say).
pub fn compare(value: &Value, s: &Scalar, now: Timestamp) -> Option<std::cmp::Ordering> {
    match (value, s) {
        (Value::String(v), Scalar::Str(x)) => Some(v.as_str().cmp(x.as_str())),
        (Value::Number(v), Scalar::Num(x)) => v.as_f64()?.partial_cmp(x),
        (Value::Bool(v), Scalar::Bool(x)) => Some(v.cmp(x)),
        (Value::String(v), Scalar::Date(_) | Scalar::Ago(_)) => {
            let t = Timestamp::parse_iso8601(v)?;
            Some(t.cmp(&s.as_instant(now)?))
        }
        (Value::Number(v), Scalar::Date(_) | Scalar::Ago(_)) => {
            // Epoch milliseconds, as some sources send dates.
            let t = Timestamp(v.as_i64()?);
            Some(t.cmp(&s.as_instant(now)?))
        }
        _ => None,
    }
}

/// The values at a dotted path in an event's properties. Through an array the path
/// continues into every element: `products.category` of an order with two products
/// yields both categories.
pub fn values_at<'a>(root: &'a Value, path: &str) -> Vec<&'a Value> {
    let mut current = vec![root];
    for part in path.split('.') {
        let mut next = Vec::new();
        for v in current {
            match v {
                Value::Object(m) => {
                    if let Some(x) = m.get(part) {
                        match x {
                            Value::Array(items) => next.extend(items.iter()),
                            other => next.push(other),
                        }
                    }
                }
                Value::Array(items) => {
                    for i in items {
                        if let Some(x) = i.get(part) {
                            next.push(x);
                        }
                    }
                }
                _ => {}
            }
        }
        current = next;
    }
    current
}

/// Whether an event's properties pass a filter: any value at the path matches.
pub fn filter_matches(properties: &Value, f: &PropertyFilter, now: Timestamp) -> bool {
    values_at(properties, &f.path).into_iter().any(|v| value_matches(Some(v), f.op, &f.value, now))
}

/// The numeric value of a measure property (the first number at its path).
pub fn measure_value(properties: &Value, path: &str) -> Option<f64> {
    values_at(properties, path).into_iter().find_map(|v| match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn one(s: Scalar) -> Operand {
        Operand::One(s)
    }

    #[test]
    fn comparisons_need_matching_types() {
        let now = Timestamp(0);
        assert!(value_matches(Some(&json!("Shanghai")), Op::Eq, &one(Scalar::Str("Shanghai".into())), now));
        assert!(!value_matches(Some(&json!(30)), Op::Eq, &one(Scalar::Str("30".into())), now));
        assert!(value_matches(Some(&json!(30)), Op::Ge, &one(Scalar::Num(18.0)), now));
        assert!(!value_matches(None, Op::Ne, &one(Scalar::Num(1.0)), now), "!= needs the value to exist");
        assert!(!value_matches(Some(&json!(null)), Op::Exists, &Operand::None, now));
        let d = Timestamp::parse_iso8601("2026-05-01").unwrap();
        assert!(value_matches(Some(&json!("2026-05-02T10:00:00+08:00")), Op::Gt, &one(Scalar::Date(d)), now));
        assert!(value_matches(Some(&json!(["a", "b"])), Op::Contains, &one(Scalar::Str("b".into())), now));
        assert!(value_matches(Some(&json!(5)), Op::Between, &Operand::Range(Scalar::Num(5.0), Scalar::Num(6.0)), now));
    }

    #[test]
    fn property_paths_reach_into_arrays() {
        let order = json!({"revenue_fen": 3100, "products": [{"category": "coffee"}, {"category": "beans"}]});
        let f = PropertyFilter { path: "products.category".into(), op: Op::Eq, value: one(Scalar::Str("beans".into())) };
        assert!(filter_matches(&order, &f, Timestamp(0)));
        assert_eq!(measure_value(&order, "revenue_fen"), Some(3100.0));
        assert_eq!(measure_value(&order, "missing"), None);
    }
}
