//! The JSON form of a rule, for the API:
//!
//! ```json
//! {"and": [
//!   {"field": "traits.city", "op": "=", "value": "Shanghai"},
//!   {"aggregate": "count", "event": "Order Completed", "where": [{"property": "category", "op": "=", "value": "beans"}],
//!    "window": "30d", "op": ">=", "value": 2},
//!   {"not": {"field": "segment", "op": "=", "value": "vip"}},
//!   {"has": "wecom"}, {"consent": "sms"}
//! ]}
//! ```
//!
//! Values: strings, numbers, booleans, `{"date": "2024-05-01"}`, `{"ago": "30d"}`; a list
//! for `in`, `[low, high]` for `between`, none for `exists`. Windows: `"ever"`, `"30d"`,
//! `{"since": "2024-05-01"}`, `{"between": ["2024-05-01", "2024-06-01"]}`.

use serde_json::{Map, Value, json};

use super::MAX_DEPTH;
use super::ast::*;
use super::{RuleError, validate};
use crate::time::Timestamp;

impl Rule {
    pub fn to_json(&self) -> Value {
        match self {
            Rule::And(items) => json!({ "and": items.iter().map(Rule::to_json).collect::<Vec<_>>() }),
            Rule::Or(items) => json!({ "or": items.iter().map(Rule::to_json).collect::<Vec<_>>() }),
            Rule::Not(inner) => json!({ "not": inner.to_json() }),
            Rule::Field(p) => {
                let mut m = Map::new();
                m.insert("field".into(), json!(p.field.name()));
                condition_json(&mut m, p.op, &p.value);
                Value::Object(m)
            }
            Rule::Has(p) => json!({ "has": p.name() }),
            Rule::Consent(c) => json!({ "consent": c.as_str() }),
            Rule::Aggregate(a) => {
                let mut m = Map::new();
                m.insert("aggregate".into(), json!(a.func.as_str()));
                m.insert("event".into(), json!(a.event));
                if !a.filters.is_empty() {
                    let filters: Vec<Value> = a
                        .filters
                        .iter()
                        .map(|f| {
                            let mut fm = Map::new();
                            fm.insert("property".into(), json!(f.path));
                            condition_json(&mut fm, f.op, &f.value);
                            Value::Object(fm)
                        })
                        .collect();
                    m.insert("where".into(), Value::Array(filters));
                }
                if let Some(measure) = &a.measure {
                    m.insert("measure".into(), json!(measure));
                }
                m.insert(
                    "window".into(),
                    match &a.window {
                        Window::Ever => json!("ever"),
                        Window::Last(ms) => json!(format_duration(*ms)),
                        Window::Since(t) => json!({ "since": t.to_rfc3339() }),
                        Window::Between(x, y) => json!({ "between": [x.to_rfc3339(), y.to_rfc3339()] }),
                    },
                );
                condition_json(&mut m, a.op, &a.value);
                Value::Object(m)
            }
        }
    }

    /// Reads the JSON form; errors name the path of the offending part.
    pub fn from_json(value: &Value) -> Result<Rule, RuleError> {
        rule(value, "rule", 0)
    }
}

fn condition_json(m: &mut Map<String, Value>, op: Op, value: &Operand) {
    m.insert("op".into(), json!(op.as_str()));
    match value {
        Operand::None => {}
        Operand::One(s) => {
            m.insert("value".into(), scalar_json(s));
        }
        Operand::List(items) => {
            m.insert("value".into(), Value::Array(items.iter().map(scalar_json).collect()));
        }
        Operand::Range(a, b) => {
            m.insert("value".into(), json!([scalar_json(a), scalar_json(b)]));
        }
    }
}

fn scalar_json(s: &Scalar) -> Value {
    match s {
        Scalar::Str(s) => json!(s),
        Scalar::Num(n) => json!(n),
        Scalar::Bool(b) => json!(b),
        Scalar::Date(t) => json!({ "date": t.to_rfc3339() }),
        Scalar::Ago(ms) => json!({ "ago": format_duration(*ms) }),
    }
}

fn err<T>(path: &str, message: impl Into<String>) -> Result<T, RuleError> {
    Err(RuleError::Json { path: path.to_string(), message: message.into() })
}

fn rule(v: &Value, path: &str, depth: usize) -> Result<Rule, RuleError> {
    if depth > MAX_DEPTH {
        return err(path, format!("rules nest at most {MAX_DEPTH} levels of and, or and not"));
    }
    let Value::Object(m) = v else {
        return err(path, "a rule is an object such as {\"field\": \"traits.city\", \"op\": \"=\", \"value\": \"Shanghai\"}");
    };
    for (key, build) in [("and", true), ("or", false)] {
        if let Some(items) = m.get(key) {
            only_keys(m, &[key], path)?;
            let Value::Array(items) = items else { return err(&format!("{path}.{key}"), "must be a list of rules") };
            if items.is_empty() {
                return err(&format!("{path}.{key}"), "needs at least one rule");
            }
            let rules = items.iter().enumerate().map(|(i, r)| rule(r, &format!("{path}.{key}[{i}]"), depth + 1)).collect::<Result<Vec<_>, _>>()?;
            return Ok(if build { Rule::And(rules) } else { Rule::Or(rules) });
        }
    }
    if let Some(inner) = m.get("not") {
        only_keys(m, &["not"], path)?;
        return Ok(Rule::Not(Box::new(rule(inner, &format!("{path}.not"), depth + 1)?)));
    }
    if let Some(kind) = m.get("has") {
        only_keys(m, &["has"], path)?;
        let p = kind.as_str().and_then(Presence::parse);
        return p
            .map(Rule::Has)
            .map_or_else(|| err(&format!("{path}.has"), "use wecom, user_id, phone, unionid, openid, external_userid, member_no or anonymous_id"), Ok);
    }
    if let Some(ch) = m.get("consent") {
        only_keys(m, &["consent"], path)?;
        let c = ch.as_str().and_then(Channel::parse);
        return c.map(Rule::Consent).map_or_else(|| err(&format!("{path}.consent"), "use wecom, sms, email, official_account or webhook"), Ok);
    }
    if let Some(func) = m.get("aggregate") {
        return aggregate(m, func, path);
    }
    if let Some(name) = m.get("field") {
        only_keys(m, &["field", "op", "value"], path)?;
        let Some(name) = name.as_str() else { return err(&format!("{path}.field"), "must be a string such as \"traits.city\"") };
        let field = Field::parse_name(name).or_else(|e| err(&format!("{path}.field"), e))?;
        let (op, value) = condition(m, path)?;
        let p = FieldPredicate { field, op, value };
        validate::field(&p).or_else(|e| err(path, e))?;
        return Ok(Rule::Field(p));
    }
    err(path, "expected one of and, or, not, field, aggregate, has, consent")
}

fn only_keys(m: &Map<String, Value>, allowed: &[&str], path: &str) -> Result<(), RuleError> {
    match m.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => err(&format!("{path}.{k}"), format!("unexpected key here; this rule takes {}", allowed.join(", "))),
        None => Ok(()),
    }
}

fn condition(m: &Map<String, Value>, path: &str) -> Result<(Op, Operand), RuleError> {
    let op_path = format!("{path}.op");
    let Some(op) = m.get("op") else { return err(&op_path, "missing; use =, !=, <, <=, >, >=, in, contains, exists or between") };
    let op = op
        .as_str()
        .and_then(Op::parse)
        .map_or_else(|| err(&op_path, format!("{op} is not an operator; use =, !=, <, <=, >, >=, in, contains, exists or between")), Ok)?;
    let vpath = format!("{path}.value");
    let value = match (op, m.get("value")) {
        (Op::Exists, None) => Operand::None,
        (Op::Exists, Some(_)) => return err(&vpath, "exists takes no value"),
        (_, None) => return err(&vpath, "missing"),
        (Op::In, Some(Value::Array(items))) => {
            Operand::List(items.iter().enumerate().map(|(i, s)| scalar(s, &format!("{vpath}[{i}]"))).collect::<Result<_, _>>()?)
        }
        (Op::In, Some(_)) => return err(&vpath, "in takes a list"),
        (Op::Between, Some(Value::Array(items))) if items.len() == 2 => {
            Operand::Range(scalar(&items[0], &format!("{vpath}[0]"))?, scalar(&items[1], &format!("{vpath}[1]"))?)
        }
        (Op::Between, Some(_)) => return err(&vpath, "between takes [low, high]"),
        (_, Some(v)) => Operand::One(scalar(v, &vpath)?),
    };
    Ok((op, value))
}

fn scalar(v: &Value, path: &str) -> Result<Scalar, RuleError> {
    match v {
        Value::String(s) => Ok(Scalar::Str(s.clone())),
        Value::Number(n) => n.as_f64().map(Scalar::Num).map_or_else(|| err(path, "the number is out of range"), Ok),
        Value::Bool(b) => Ok(Scalar::Bool(*b)),
        Value::Object(o) if o.len() == 1 && o.contains_key("date") => date(&o["date"], &format!("{path}.date")).map(Scalar::Date),
        Value::Object(o) if o.len() == 1 && o.contains_key("ago") => match o["ago"].as_str().and_then(parse_duration) {
            Some(ms) => Ok(Scalar::Ago(ms)),
            None => err(&format!("{path}.ago"), "a duration such as \"30d\", \"12h\""),
        },
        _ => err(path, "a value is a string, a number, a boolean, {\"date\": \"2024-05-01\"} or {\"ago\": \"30d\"}"),
    }
}

fn date(v: &Value, path: &str) -> Result<Timestamp, RuleError> {
    match v.as_str().and_then(Timestamp::parse_iso8601) {
        Some(t) => Ok(t),
        None => err(path, format!("{v} is not an ISO-8601 date such as \"2024-05-01\"")),
    }
}

fn aggregate(m: &Map<String, Value>, func: &Value, path: &str) -> Result<Rule, RuleError> {
    only_keys(m, &["aggregate", "event", "where", "measure", "window", "op", "value"], path)?;
    let func = func.as_str().and_then(AggFn::parse).map_or_else(|| err(&format!("{path}.aggregate"), "use count, sum, min, max, first or last"), Ok)?;
    let Some(event) = m.get("event").and_then(Value::as_str) else {
        return err(&format!("{path}.event"), "the event name, e.g. \"Order Completed\"");
    };
    let mut filters = Vec::new();
    match m.get("where") {
        None => {}
        Some(Value::Array(items)) => {
            for (i, f) in items.iter().enumerate() {
                let fpath = format!("{path}.where[{i}]");
                let Value::Object(fm) = f else { return err(&fpath, "a filter is {\"property\": …, \"op\": …, \"value\": …}") };
                only_keys(fm, &["property", "op", "value"], &fpath)?;
                let Some(prop) = fm.get("property").and_then(Value::as_str) else {
                    return err(&format!("{fpath}.property"), "the property name, e.g. \"category\"");
                };
                let (op, value) = condition(fm, &fpath)?;
                let filter = PropertyFilter { path: prop.strip_prefix("properties.").unwrap_or(prop).to_string(), op, value };
                validate::filter(&filter).or_else(|e| err(&fpath, e))?;
                filters.push(filter);
            }
        }
        Some(_) => return err(&format!("{path}.where"), "a list of property filters"),
    }
    let measure = match m.get("measure") {
        None => None,
        Some(Value::String(s)) => Some(s.strip_prefix("properties.").unwrap_or(s).to_string()),
        Some(_) => return err(&format!("{path}.measure"), "the numeric property to aggregate, e.g. \"revenue_fen\""),
    };
    let wpath = format!("{path}.window");
    let window = match m.get("window") {
        None => Window::Ever,
        Some(Value::String(s)) if s == "ever" => Window::Ever,
        Some(Value::String(s)) => match parse_duration(s) {
            Some(ms) => Window::Last(ms),
            None => return err(&wpath, format!("{s:?} is not a window; use \"ever\", \"30d\", {{\"since\": …}} or {{\"between\": [a, b]}}")),
        },
        Some(Value::Object(o)) if o.len() == 1 && o.contains_key("since") => Window::Since(date(&o["since"], &format!("{wpath}.since"))?),
        Some(Value::Object(o)) if o.len() == 1 && o.contains_key("between") => match &o["between"] {
            Value::Array(b) if b.len() == 2 => Window::Between(date(&b[0], &format!("{wpath}.between[0]"))?, date(&b[1], &format!("{wpath}.between[1]"))?),
            _ => return err(&format!("{wpath}.between"), "two dates"),
        },
        Some(_) => return err(&wpath, "use \"ever\", \"30d\", {\"since\": …} or {\"between\": [a, b]}"),
    };
    let (op, value) = condition(m, path)?;
    let a = AggregatePredicate { func, event: event.to_string(), filters, measure, window, op, value };
    validate::aggregate(&a).or_else(|e| err(path, e))?;
    Ok(Rule::Aggregate(a))
}
