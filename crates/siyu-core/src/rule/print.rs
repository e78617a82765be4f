//! The canonical text form of a rule. `parse(&rule.to_string()) == rule`.

use std::fmt::{self, Display, Formatter, Write};

use super::ast::*;

const KEYWORDS: [&str; 16] =
    ["and", "or", "not", "in", "contains", "exists", "between", "where", "true", "false", "ever", "since", "date", "ago", "has", "consent"];

impl Display for Rule {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Rule::And(items) => join(f, items, " and ", |r| matches!(r, Rule::Or(_) | Rule::And(_))),
            Rule::Or(items) => join(f, items, " or ", |r| matches!(r, Rule::Or(_))),
            Rule::Not(inner) => {
                if matches!(**inner, Rule::And(_) | Rule::Or(_)) {
                    write!(f, "not ({inner})")
                } else {
                    write!(f, "not {inner}")
                }
            }
            Rule::Field(p) => {
                write_field(f, &p.field)?;
                write_condition(f, p.op, &p.value)
            }
            Rule::Has(p) => write!(f, "has({})", p.name()),
            Rule::Consent(c) => write!(f, "consent({})", c.as_str()),
            Rule::Aggregate(a) => {
                write!(f, "{}(", a.func.as_str())?;
                write_str(f, &a.event)?;
                for (i, filter) in a.filters.iter().enumerate() {
                    f.write_str(if i == 0 { " where " } else { " and " })?;
                    write_name(f, &filter.path)?;
                    write_condition(f, filter.op, &filter.value)?;
                }
                if let Some(m) = &a.measure {
                    f.write_str(", ")?;
                    write_name(f, m)?;
                }
                match &a.window {
                    Window::Ever => {}
                    Window::Last(ms) => write!(f, ", {}", format_duration(*ms))?,
                    Window::Since(t) => write!(f, ", since {}", date(*t))?,
                    Window::Between(x, y) => write!(f, ", between {} and {}", date(*x), date(*y))?,
                }
                f.write_char(')')?;
                write_condition(f, a.op, &a.value)
            }
        }
    }
}

fn join(f: &mut Formatter<'_>, items: &[Rule], sep: &str, needs_parens: impl Fn(&Rule) -> bool) -> fmt::Result {
    for (i, r) in items.iter().enumerate() {
        if i > 0 {
            f.write_str(sep)?;
        }
        if needs_parens(r) {
            write!(f, "({r})")?;
        } else {
            write!(f, "{r}")?;
        }
    }
    Ok(())
}

fn is_plain_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars().all(|c| c.is_alphanumeric() || c == '_' || c == '.')
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && !s.ends_with('.')
        && !KEYWORDS.iter().any(|k| k.eq_ignore_ascii_case(s))
}

fn write_name(f: &mut Formatter<'_>, name: &str) -> fmt::Result {
    if is_plain_name(name) { f.write_str(name) } else { write_str(f, name) }
}

fn write_field(f: &mut Formatter<'_>, field: &Field) -> fmt::Result {
    match field {
        // A trait prints bare when that reads back as the same trait.
        Field::Trait(t) => {
            if is_plain_name(t) && Field::parse_name(t) == Ok(Field::Trait(t.clone())) {
                f.write_str(t)
            } else if is_plain_name(t) {
                write!(f, "traits.{t}")
            } else {
                f.write_str("traits.")?;
                write_str(f, t)
            }
        }
        other => f.write_str(&other.name()),
    }
}

fn write_condition(f: &mut Formatter<'_>, op: Op, value: &Operand) -> fmt::Result {
    match (op, value) {
        (Op::Exists, _) => f.write_str(" exists"),
        (Op::In, Operand::List(items)) => {
            f.write_str(" in (")?;
            for (i, s) in items.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write_scalar(f, s)?;
            }
            f.write_char(')')
        }
        (Op::Between, Operand::Range(a, b)) => {
            f.write_str(" between ")?;
            write_scalar(f, a)?;
            f.write_str(" and ")?;
            write_scalar(f, b)
        }
        (op, Operand::One(s)) => {
            write!(f, " {} ", op.as_str())?;
            write_scalar(f, s)
        }
        (op, _) => write!(f, " {}", op.as_str()),
    }
}

fn write_str(f: &mut Formatter<'_>, s: &str) -> fmt::Result {
    f.write_char('"')?;
    for c in s.chars() {
        match c {
            '"' => f.write_str("\\\"")?,
            '\\' => f.write_str("\\\\")?,
            '\n' => f.write_str("\\n")?,
            '\t' => f.write_str("\\t")?,
            c => f.write_char(c)?,
        }
    }
    f.write_char('"')
}

fn date(t: crate::time::Timestamp) -> String {
    let text = t.to_rfc3339();
    match text.strip_suffix("T00:00:00.000Z") {
        Some(day) => format!("date(\"{day}\")"),
        None => format!("date(\"{text}\")"),
    }
}

pub(crate) fn number(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 { format!("{}", n as i64) } else { format!("{n}") }
}

fn write_scalar(f: &mut Formatter<'_>, s: &Scalar) -> fmt::Result {
    match s {
        Scalar::Str(s) => write_str(f, s),
        Scalar::Num(n) => f.write_str(&number(*n)),
        Scalar::Bool(b) => write!(f, "{b}"),
        Scalar::Date(t) => f.write_str(&date(*t)),
        Scalar::Ago(ms) => write!(f, "ago({})", format_duration(*ms)),
    }
}
