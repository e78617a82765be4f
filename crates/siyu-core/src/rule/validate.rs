//! Checks that a predicate makes sense, so both parsers refuse the same rules with the
//! same messages (the parser adds where).

use super::ast::*;

fn shape(op: Op, value: &Operand) -> Result<(), String> {
    let ok = match op {
        Op::Exists => matches!(value, Operand::None),
        Op::In => matches!(value, Operand::List(items) if !items.is_empty()),
        Op::Between => matches!(value, Operand::Range(..)),
        _ => matches!(value, Operand::One(_)),
    };
    if ok {
        return Ok(());
    }
    Err(match op {
        Op::Exists => "exists takes no value".into(),
        Op::In => "in takes a non-empty list, e.g. in (\"a\", \"b\")".into(),
        Op::Between => "between takes two values: between A and B".into(),
        _ => format!("{} takes one value", op.as_str()),
    })
}

fn scalars(value: &Operand) -> Vec<&Scalar> {
    match value {
        Operand::None => vec![],
        Operand::One(s) => vec![s],
        Operand::List(items) => items.iter().collect(),
        Operand::Range(a, b) => vec![a, b],
    }
}

fn range_order(value: &Operand) -> Result<(), String> {
    if let Operand::Range(a, b) = value {
        let out_of_order = match (a, b) {
            (Scalar::Num(x), Scalar::Num(y)) => x > y,
            (Scalar::Date(x), Scalar::Date(y)) => x > y,
            (Scalar::Str(x), Scalar::Str(y)) => x > y,
            (Scalar::Ago(x), Scalar::Ago(y)) => x < y,
            _ => false,
        };
        if out_of_order {
            return Err("between needs the smaller value first".into());
        }
    }
    Ok(())
}

pub fn field(p: &FieldPredicate) -> Result<(), String> {
    shape(p.op, &p.value)?;
    range_order(&p.value)?;
    let name = p.field.name();
    let allowed: &[Op] = match p.field {
        Field::Trait(_) => &[Op::Eq, Op::Ne, Op::Lt, Op::Le, Op::Gt, Op::Ge, Op::In, Op::Contains, Op::Exists, Op::Between],
        Field::Tag => &[Op::Eq, Op::Ne, Op::In, Op::Contains, Op::Exists],
        Field::Stage | Field::Segment | Field::OwnerStore | Field::OwnerCity | Field::OwnerGuide => &[Op::Eq, Op::Ne, Op::In],
        Field::Rfm(_) | Field::Score(_) => &[Op::Eq, Op::Ne, Op::Lt, Op::Le, Op::Gt, Op::Ge, Op::In, Op::Between],
    };
    if !allowed.contains(&p.op) {
        let list: Vec<&str> = allowed.iter().map(|o| o.as_str()).collect();
        return Err(format!("{name} cannot use {}; it takes {}", p.op.as_str(), list.join(", ")));
    }
    for v in scalars(&p.value) {
        match (&p.field, v) {
            (Field::Trait(_), _) => {}
            (Field::Tag | Field::Segment | Field::OwnerStore | Field::OwnerCity | Field::OwnerGuide, Scalar::Str(_)) => {}
            (Field::Stage, Scalar::Str(s)) => {
                if Stage::parse(s).is_none() {
                    let all: Vec<&str> = Stage::ALL.iter().map(|s| s.as_str()).collect();
                    return Err(format!("{s:?} is not a lifecycle stage; use one of {}", all.join(", ")));
                }
            }
            (Field::Rfm(_), Scalar::Num(n)) => {
                if !(1.0..=5.0).contains(n) {
                    return Err(format!("{name} is a quintile score from 1 to 5, not {n}"));
                }
            }
            (Field::Score(_), Scalar::Num(n)) => {
                if !(0.0..=1.0).contains(n) {
                    return Err(format!("{name} is a rate from 0 to 1, not {n}"));
                }
            }
            (Field::Rfm(_) | Field::Score(_), _) => return Err(format!("{name} compares with a number")),
            _ => return Err(format!("{name} compares with a string")),
        }
    }
    if p.op == Op::Contains && !matches!(p.value, Operand::One(Scalar::Str(_))) {
        return Err("contains takes a string".into());
    }
    Ok(())
}

pub fn filter(f: &PropertyFilter) -> Result<(), String> {
    if f.path.is_empty() {
        return Err("a property filter needs a property name".into());
    }
    shape(f.op, &f.value)?;
    range_order(&f.value)?;
    if f.op == Op::Contains && !matches!(f.value, Operand::One(Scalar::Str(_))) {
        return Err("contains takes a string".into());
    }
    Ok(())
}

pub fn aggregate(a: &AggregatePredicate) -> Result<(), String> {
    let f = a.func.as_str();
    if a.event.trim().is_empty() {
        return Err(format!("{f}(…) needs an event name"));
    }
    match (a.func.needs_measure(), &a.measure) {
        (true, None) => return Err(format!("{f} needs a numeric property to aggregate, e.g. {f}(\"Order Completed\", revenue_fen, 30d)")),
        (false, Some(m)) => return Err(format!("{f} takes no property (got {m:?}); only sum, min and max do")),
        _ => {}
    }
    if !(a.op.is_comparison() || a.op == Op::Between || a.op == Op::In) {
        return Err(format!("{f}(…) is compared with =, !=, <, <=, >, >=, in or between, not {}", a.op.as_str()));
    }
    shape(a.op, &a.value)?;
    range_order(&a.value)?;
    for v in scalars(&a.value) {
        let ok = if a.func.yields_time() { matches!(v, Scalar::Date(_) | Scalar::Ago(_)) } else { matches!(v, Scalar::Num(_)) };
        if !ok {
            return Err(if a.func.yields_time() {
                format!("{f}(…) is a time: compare it with date(\"2024-05-01\") or ago(30d)")
            } else {
                format!("{f}(…) is a number: compare it with a number")
            });
        }
    }
    match a.window {
        Window::Last(ms) if ms <= 0 => return Err("a window must be longer than zero".into()),
        Window::Between(x, y) if x > y => return Err("a window between A and B needs A first".into()),
        _ => {}
    }
    for filter in &a.filters {
        self::filter(filter)?;
    }
    Ok(())
}
