//! The one-line text form:
//!
//! ```text
//! rule      := or
//! or        := and ("or" and)*
//! and       := unary ("and" unary)*
//! unary     := "not" unary | "(" rule ")" | predicate
//! predicate := has(KIND) | consent(CHANNEL) | aggregate | FIELD condition
//! condition := "exists" | "in" list | "contains" scalar | "between" scalar "and" scalar
//!            | ("=" | "!=" | "<" | "<=" | ">" | ">=") scalar
//! aggregate := FN "(" EVENT ["where" filter ("and" filter)*] ["," MEASURE] ["," window] ")" condition
//! window    := 30d | 12h | ever | since scalar | between scalar and scalar
//! scalar    := "text" | 42 | -1.5 | true | false | date("2024-05-01") | ago(30d)
//! ```
//!
//! Field names: `tag`, `stage`, `segment`, `rfm.r|f|m`, `score.conversion|repurchase|
//! share|referral`, `owner.store|city|guide`, and traits (`traits.city`, or bare `city`).
//! Event names may be quoted (`"Order Completed"`) or bare words (`Order Completed`).
//! Keywords are case-insensitive.

use super::ast::*;
use super::{MAX_DEPTH, RuleError, validate};
use crate::time::Timestamp;

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Num(f64),
    Duration(i64),
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
    Cmp(Op),
}

struct Lexer {
    toks: Vec<(Tok, usize)>,
}

fn ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '.'
}

fn lex(src: &str) -> Result<Vec<(Tok, usize)>, RuleError> {
    let mut lx = Lexer { toks: Vec::new() };
    let chars: Vec<(usize, char)> = src.char_indices().collect();
    let mut i = 0;
    while i < chars.len() {
        let (at, c) = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => push(&mut lx, Tok::LParen, at, &mut i),
            ')' => push(&mut lx, Tok::RParen, at, &mut i),
            '[' => push(&mut lx, Tok::LBracket, at, &mut i),
            ']' => push(&mut lx, Tok::RBracket, at, &mut i),
            ',' => push(&mut lx, Tok::Comma, at, &mut i),
            '=' | '!' | '<' | '>' => {
                let next = chars.get(i + 1).map(|(_, c)| *c);
                let (op, len) = match (c, next) {
                    ('=', Some('=')) => (Op::Eq, 2),
                    ('=', _) => (Op::Eq, 1),
                    ('!', Some('=')) => (Op::Ne, 2),
                    ('<', Some('>')) => (Op::Ne, 2),
                    ('<', Some('=')) => (Op::Le, 2),
                    ('<', _) => (Op::Lt, 1),
                    ('>', Some('=')) => (Op::Ge, 2),
                    ('>', _) => (Op::Gt, 1),
                    _ => return Err(RuleError::text(src, at, "expected != after !")),
                };
                lx.toks.push((Tok::Cmp(op), at));
                i += len;
            }
            '"' | '\'' => {
                let quote = c;
                let mut s = String::new();
                let mut j = i + 1;
                loop {
                    let Some(&(_, ch)) = chars.get(j) else {
                        return Err(RuleError::text(src, at, "this string is never closed"));
                    };
                    match ch {
                        c if c == quote => break,
                        '\\' => {
                            let escaped = chars.get(j + 1).map(|(_, c)| *c);
                            match escaped {
                                Some('n') => s.push('\n'),
                                Some('t') => s.push('\t'),
                                Some(e @ ('\\' | '"' | '\'')) => s.push(e),
                                _ => return Err(RuleError::text(src, chars[j].0, "unknown escape; use \\\", \\\\, \\n or \\t")),
                            }
                            j += 2;
                        }
                        c => {
                            s.push(c);
                            j += 1;
                        }
                    }
                }
                lx.toks.push((Tok::Str(s), at));
                i = j + 1;
            }
            c if c.is_ascii_digit() || (c == '-' && chars.get(i + 1).is_some_and(|(_, d)| d.is_ascii_digit())) => {
                let mut j = i + 1;
                while j < chars.len() && (chars[j].1.is_ascii_digit() || chars[j].1 == '.') {
                    j += 1;
                }
                let end = chars.get(j).map(|(b, _)| *b).unwrap_or(src.len());
                let number = &src[at..end];
                // A unit right after the digits makes a duration: 30d, 12h.
                if let Some(&(_, u)) = chars.get(j)
                    && u.is_alphabetic()
                {
                    let mut k = j;
                    while k < chars.len() && chars[k].1.is_alphanumeric() {
                        k += 1;
                    }
                    let end = chars.get(k).map(|(b, _)| *b).unwrap_or(src.len());
                    let text = &src[at..end];
                    let ms = parse_duration(text).ok_or_else(|| RuleError::text(src, at, format!("{text:?} is not a duration; write 30d, 12h, 90m or 2w")))?;
                    lx.toks.push((Tok::Duration(ms), at));
                    i = k;
                    continue;
                }
                let n: f64 = number.parse().map_err(|_| RuleError::text(src, at, format!("{number:?} is not a number")))?;
                lx.toks.push((Tok::Num(n), at));
                i = j;
            }
            c if ident_char(c) => {
                let mut j = i;
                while j < chars.len() && ident_char(chars[j].1) {
                    j += 1;
                }
                let end = chars.get(j).map(|(b, _)| *b).unwrap_or(src.len());
                lx.toks.push((Tok::Ident(src[at..end].to_string()), at));
                i = j;
            }
            other => return Err(RuleError::text(src, at, format!("unexpected {other:?}"))),
        }
    }
    Ok(lx.toks)
}

fn push(lx: &mut Lexer, t: Tok, at: usize, i: &mut usize) {
    lx.toks.push((t, at));
    *i += 1;
}

/// Parses the text form.
pub fn parse(src: &str) -> Result<Rule, RuleError> {
    let toks = lex(src)?;
    let mut p = Parser { src, toks, pos: 0, depth: 0 };
    if p.toks.is_empty() {
        return Err(RuleError::text(src, 0, "the rule is empty"));
    }
    let rule = p.or()?;
    if let Some((_, at)) = p.toks.get(p.pos) {
        return Err(RuleError::text(src, *at, "expected and, or, or the end of the rule"));
    }
    Ok(rule)
}

struct Parser<'a> {
    src: &'a str,
    toks: Vec<(Tok, usize)>,
    pos: usize,
    /// `not`s and open parentheses around the current position.
    depth: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|(t, _)| t)
    }

    fn at(&self) -> usize {
        self.toks.get(self.pos).map(|(_, a)| *a).unwrap_or(self.src.len())
    }

    fn err<T>(&self, message: impl Into<String>) -> Result<T, RuleError> {
        Err(RuleError::text(self.src, self.at(), message))
    }

    fn err_at<T>(&self, at: usize, message: impl Into<String>) -> Result<T, RuleError> {
        Err(RuleError::text(self.src, at, message))
    }

    fn keyword(&self, word: &str) -> bool {
        matches!(self.peek(), Some(Tok::Ident(w)) if w.eq_ignore_ascii_case(word))
    }

    fn eat_keyword(&mut self, word: &str) -> bool {
        if self.keyword(word) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, t: Tok, what: &str) -> Result<(), RuleError> {
        if self.peek() == Some(&t) {
            self.pos += 1;
            Ok(())
        } else {
            self.err(format!("expected {what}"))
        }
    }

    fn or(&mut self) -> Result<Rule, RuleError> {
        let mut items = vec![self.and()?];
        while self.eat_keyword("or") {
            items.push(self.and()?);
        }
        Ok(if items.len() == 1 { items.remove(0) } else { Rule::Or(items) })
    }

    fn and(&mut self) -> Result<Rule, RuleError> {
        let mut items = vec![self.unary()?];
        while self.eat_keyword("and") {
            items.push(self.unary()?);
        }
        Ok(if items.len() == 1 { items.remove(0) } else { Rule::And(items) })
    }

    fn unary(&mut self) -> Result<Rule, RuleError> {
        let nests = self.keyword("not") || self.peek() == Some(&Tok::LParen);
        if !nests {
            return self.predicate();
        }
        if self.depth >= MAX_DEPTH {
            return self.err(format!("rules nest at most {MAX_DEPTH} levels of not and parentheses"));
        }
        self.depth += 1;
        let r = if self.eat_keyword("not") {
            self.unary().map(|r| Rule::Not(Box::new(r)))
        } else {
            self.pos += 1;
            self.or().and_then(|r| self.expect(Tok::RParen, "a closing )").map(|()| r))
        };
        self.depth -= 1;
        r
    }

    fn predicate(&mut self) -> Result<Rule, RuleError> {
        let start = self.at();
        let name = match self.peek() {
            Some(Tok::Ident(n)) => n.clone(),
            Some(Tok::Str(_)) => return self.err("a condition starts with a field, e.g. city = \"Shanghai\" (strings go on the right)"),
            None => return self.err("expected a condition, e.g. city = \"Shanghai\""),
            _ => return self.err("expected a condition, e.g. city = \"Shanghai\""),
        };
        let lower = name.to_ascii_lowercase();
        let call = self.toks.get(self.pos + 1).map(|(t, _)| t) == Some(&Tok::LParen);
        if call {
            if let Some(func) = AggFn::parse(&lower) {
                self.pos += 1;
                return self.aggregate(func, start);
            }
            match lower.as_str() {
                "has" => {
                    self.pos += 2;
                    let (word, at) = self.word("what to have, e.g. has(wecom), has(phone)")?;
                    let presence = Presence::parse(&word).map_or_else(
                        || {
                            self.err_at(
                                at,
                                format!("has({word}) is unknown; use wecom, user_id, phone, unionid, openid, external_userid, member_no or anonymous_id"),
                            )
                        },
                        Ok,
                    )?;
                    self.expect(Tok::RParen, "a closing )")?;
                    return Ok(Rule::Has(presence));
                }
                "consent" => {
                    self.pos += 2;
                    let (word, at) = self.word("a channel, e.g. consent(sms)")?;
                    let channel = Channel::parse(&word)
                        .map_or_else(|| self.err_at(at, format!("consent({word}) is unknown; use wecom, sms, email, official_account or webhook")), Ok)?;
                    self.expect(Tok::RParen, "a closing )")?;
                    return Ok(Rule::Consent(channel));
                }
                _ => return self.err(format!("{name}(…) is not a function; use count, sum, min, max, first, last, has or consent")),
            }
        }
        self.pos += 1;
        let field = self.field_after(name, start)?;
        let (op, value) = self.condition()?;
        let p = FieldPredicate { field, op, value };
        validate::field(&p).or_else(|m| self.err_at(start, m))?;
        Ok(Rule::Field(p))
    }

    /// `traits."odd name"` reads a quoted trait name after the dot.
    fn field_after(&mut self, name: String, start: usize) -> Result<Field, RuleError> {
        if name == "traits."
            && let Some(Tok::Str(s)) = self.peek()
        {
            let s = s.clone();
            self.pos += 1;
            return Ok(Field::Trait(s));
        }
        Field::parse_name(&name).or_else(|m| self.err_at(start, m))
    }

    fn word(&mut self, what: &str) -> Result<(String, usize), RuleError> {
        let at = self.at();
        match self.peek() {
            Some(Tok::Ident(w)) | Some(Tok::Str(w)) => {
                let w = w.clone();
                self.pos += 1;
                Ok((w, at))
            }
            _ => self.err(format!("expected {what}")),
        }
    }

    fn condition(&mut self) -> Result<(Op, Operand), RuleError> {
        if self.eat_keyword("exists") {
            return Ok((Op::Exists, Operand::None));
        }
        if self.eat_keyword("in") {
            return Ok((Op::In, self.list()?));
        }
        if self.eat_keyword("contains") {
            return Ok((Op::Contains, Operand::One(self.scalar()?)));
        }
        if self.eat_keyword("between") {
            let lo = self.scalar()?;
            if !self.eat_keyword("and") {
                return self.err("expected and: between A and B");
            }
            return Ok((Op::Between, Operand::Range(lo, self.scalar()?)));
        }
        match self.peek() {
            Some(Tok::Cmp(op)) => {
                let op = *op;
                self.pos += 1;
                Ok((op, Operand::One(self.scalar()?)))
            }
            _ => self.err("expected an operator: =, !=, <, <=, >, >=, in, contains, exists or between"),
        }
    }

    fn list(&mut self) -> Result<Operand, RuleError> {
        let close = match self.peek() {
            Some(Tok::LParen) => Tok::RParen,
            Some(Tok::LBracket) => Tok::RBracket,
            _ => return self.err("in takes a list: in (\"a\", \"b\")"),
        };
        self.pos += 1;
        let mut items = Vec::new();
        if self.peek() == Some(&close) {
            return self.err("the list is empty");
        }
        loop {
            items.push(self.scalar()?);
            match self.peek() {
                Some(Tok::Comma) => self.pos += 1,
                Some(t) if *t == close => {
                    self.pos += 1;
                    return Ok(Operand::List(items));
                }
                _ => return self.err("expected , or the end of the list"),
            }
        }
    }

    fn scalar(&mut self) -> Result<Scalar, RuleError> {
        let at = self.at();
        let tok = self.peek().cloned();
        match tok {
            Some(Tok::Str(s)) => {
                self.pos += 1;
                Ok(Scalar::Str(s))
            }
            Some(Tok::Num(n)) => {
                self.pos += 1;
                Ok(Scalar::Num(n))
            }
            Some(Tok::Ident(w)) if w.eq_ignore_ascii_case("true") || w.eq_ignore_ascii_case("false") => {
                self.pos += 1;
                Ok(Scalar::Bool(w.eq_ignore_ascii_case("true")))
            }
            Some(Tok::Ident(w)) if w.eq_ignore_ascii_case("date") => {
                self.pos += 1;
                self.expect(Tok::LParen, "( after date, as in date(\"2024-05-01\")")?;
                let inner = self.at();
                let Some(Tok::Str(text)) = self.peek().cloned() else {
                    return self.err("date takes a quoted ISO-8601 date: date(\"2024-05-01\")");
                };
                self.pos += 1;
                let t =
                    Timestamp::parse_iso8601(&text).map_or_else(|| self.err_at(inner, format!("{text:?} is not an ISO-8601 date such as 2024-05-01")), Ok)?;
                self.expect(Tok::RParen, "a closing )")?;
                Ok(Scalar::Date(t))
            }
            Some(Tok::Ident(w)) if w.eq_ignore_ascii_case("ago") => {
                self.pos += 1;
                self.expect(Tok::LParen, "( after ago, as in ago(30d)")?;
                let Some(Tok::Duration(ms)) = self.peek().cloned() else {
                    return self.err("ago takes a duration: ago(30d)");
                };
                self.pos += 1;
                self.expect(Tok::RParen, "a closing )")?;
                Ok(Scalar::Ago(ms))
            }
            Some(Tok::Ident(w)) => self.err_at(at, format!("{w} is not a value; quote text: \"{w}\"")),
            _ => self.err("expected a value: \"text\", a number, true, false, date(\"2024-05-01\") or ago(30d)"),
        }
    }

    fn aggregate(&mut self, func: AggFn, start: usize) -> Result<Rule, RuleError> {
        self.expect(Tok::LParen, "(")?;
        let event = self.event_name(func)?;
        let mut filters = Vec::new();
        if self.eat_keyword("where") {
            loop {
                let at = self.at();
                // A quoted property is taken as written: names that are keywords
                // (`"in"`) or have spaces print that way.
                let path = match self.peek().cloned() {
                    Some(Tok::Ident(path)) => path.strip_prefix("properties.").unwrap_or(&path).to_string(),
                    Some(Tok::Str(path)) => path,
                    _ => return self.err("expected a property to filter on, e.g. where category = \"beans\""),
                };
                self.pos += 1;
                let (op, value) = self.condition()?;
                let f = PropertyFilter { path, op, value };
                validate::filter(&f).or_else(|m| self.err_at(at, m))?;
                filters.push(f);
                if !self.eat_keyword("and") {
                    break;
                }
            }
        }
        let mut measure = None;
        let mut window = Window::Ever;
        while self.peek() == Some(&Tok::Comma) {
            self.pos += 1;
            let at = self.at();
            match self.peek().cloned() {
                Some(Tok::Duration(ms)) => {
                    self.pos += 1;
                    window = Window::Last(ms);
                }
                Some(Tok::Ident(w)) if w.eq_ignore_ascii_case("ever") => {
                    self.pos += 1;
                    window = Window::Ever;
                }
                Some(Tok::Ident(w)) if w.eq_ignore_ascii_case("since") => {
                    self.pos += 1;
                    let t = self.instant()?;
                    window = Window::Since(t);
                }
                Some(Tok::Ident(w)) if w.eq_ignore_ascii_case("between") => {
                    self.pos += 1;
                    let a = self.instant()?;
                    if !self.eat_keyword("and") {
                        return self.err("expected and: between date(\"…\") and date(\"…\")");
                    }
                    let b = self.instant()?;
                    window = Window::Between(a, b);
                }
                Some(Tok::Ident(w)) if measure.is_none() => {
                    self.pos += 1;
                    measure = Some(w.strip_prefix("properties.").unwrap_or(&w).to_string());
                }
                _ => return self.err_at(at, "expected a window (30d, ever, since date(…), between date(…) and date(…)) or a property"),
            }
        }
        self.expect(Tok::RParen, "a closing ) after the aggregate")?;
        let (op, value) = self.condition()?;
        let a = AggregatePredicate { func, event, filters, measure, window, op, value };
        validate::aggregate(&a).or_else(|m| self.err_at(start, m))?;
        Ok(Rule::Aggregate(a))
    }

    /// A window bound: date("…") only (an absolute instant).
    fn instant(&mut self) -> Result<Timestamp, RuleError> {
        match self.scalar()? {
            Scalar::Date(t) => Ok(t),
            _ => self.err("a window bound is a date: date(\"2024-05-01\")"),
        }
    }

    /// `"Order Completed"` or the bare words `Order Completed`.
    fn event_name(&mut self, func: AggFn) -> Result<String, RuleError> {
        if let Some(Tok::Str(s)) = self.peek().cloned() {
            self.pos += 1;
            return Ok(s);
        }
        let mut words = Vec::new();
        while let Some(Tok::Ident(w)) = self.peek() {
            if w.eq_ignore_ascii_case("where") {
                break;
            }
            words.push(w.clone());
            self.pos += 1;
        }
        if words.is_empty() {
            return self.err(format!("{}(…) needs an event name, e.g. {}(\"Order Completed\", 30d)", func.as_str(), func.as_str()));
        }
        Ok(words.join(" "))
    }
}
