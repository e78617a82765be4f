//! The rule tree.

use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

#[derive(Debug, Clone, PartialEq)]
pub enum Rule {
    And(Vec<Rule>),
    Or(Vec<Rule>),
    Not(Box<Rule>),
    /// A trait, tag, stage, score, owner or segment compared with a value.
    Field(FieldPredicate),
    /// `has(wecom)`, `has(unionid)`, `has(phone)` …
    Has(Presence),
    /// `consent(sms)`
    Consent(Channel),
    /// `count("Order Completed", 30d) >= 2`
    Aggregate(AggregatePredicate),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Field {
    /// A profile trait, `traits.city` (or bare `city`).
    Trait(String),
    Tag,
    /// Lifecycle stage.
    Stage,
    Rfm(RfmPart),
    Score(ScoreKind),
    /// The store of any guide who has the customer as an active WeCom contact.
    OwnerStore,
    /// The city of such a store.
    OwnerCity,
    /// Such a guide (WeCom userid).
    OwnerGuide,
    /// Membership of another named segment.
    Segment,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RfmPart {
    Recency,
    Frequency,
    Monetary,
}

/// The "four highs" of super users (四高): 高转化, 高复购, 高分享, 高转介.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScoreKind {
    Conversion,
    Repurchase,
    Share,
    Referral,
}

impl ScoreKind {
    pub const ALL: [ScoreKind; 4] = [ScoreKind::Conversion, ScoreKind::Repurchase, ScoreKind::Share, ScoreKind::Referral];

    pub fn as_str(self) -> &'static str {
        match self {
            ScoreKind::Conversion => "conversion",
            ScoreKind::Repurchase => "repurchase",
            ScoreKind::Share => "share",
            ScoreKind::Referral => "referral",
        }
    }
}

/// Lifecycle stages, in the order a customer usually moves through them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Known (mini program, official account) but neither a WeCom contact nor a buyer.
    Prospect,
    /// A WeCom contact who has not bought yet.
    NewContact,
    /// One order, recently.
    FirstPurchase,
    /// Two or more orders, recently.
    Repeat,
    /// Buys often, recently.
    Loyal,
    /// Has bought, but not for a while.
    AtRisk,
    /// Has bought, but not for a long while.
    Lapsed,
}

impl Stage {
    pub const ALL: [Stage; 7] = [Stage::Prospect, Stage::NewContact, Stage::FirstPurchase, Stage::Repeat, Stage::Loyal, Stage::AtRisk, Stage::Lapsed];

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Prospect => "prospect",
            Stage::NewContact => "new_contact",
            Stage::FirstPurchase => "first_purchase",
            Stage::Repeat => "repeat",
            Stage::Loyal => "loyal",
            Stage::AtRisk => "at_risk",
            Stage::Lapsed => "lapsed",
        }
    }

    pub fn parse(s: &str) -> Option<Stage> {
        Stage::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Presence {
    /// An active WeCom contact with at least one guide.
    Wecom,
    /// An identity of this kind.
    Identity(crate::identity::IdentityKind),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Wecom,
    Sms,
    Email,
    OfficialAccount,
    Webhook,
}

impl Channel {
    pub const ALL: [Channel; 5] = [Channel::Wecom, Channel::Sms, Channel::Email, Channel::OfficialAccount, Channel::Webhook];

    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Wecom => "wecom",
            Channel::Sms => "sms",
            Channel::Email => "email",
            Channel::OfficialAccount => "official_account",
            Channel::Webhook => "webhook",
        }
    }

    pub fn parse(s: &str) -> Option<Channel> {
        Channel::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// The trait that records consent for this channel: `consent.sms` …
    pub fn consent_trait(self) -> String {
        format!("consent.{}", self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    In,
    Contains,
    Exists,
    Between,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Eq => "=",
            Op::Ne => "!=",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::In => "in",
            Op::Contains => "contains",
            Op::Exists => "exists",
            Op::Between => "between",
        }
    }

    pub fn parse(s: &str) -> Option<Op> {
        [Op::Eq, Op::Ne, Op::Lt, Op::Le, Op::Gt, Op::Ge, Op::In, Op::Contains, Op::Exists, Op::Between].into_iter().find(|o| o.as_str() == s).or(if s == "==" {
            Some(Op::Eq)
        } else {
            None
        })
    }

    pub fn is_comparison(self) -> bool {
        matches!(self, Op::Eq | Op::Ne | Op::Lt | Op::Le | Op::Gt | Op::Ge)
    }
}

/// A literal in a rule.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    Str(String),
    Num(f64),
    Bool(bool),
    /// `date("2024-05-01")`: an instant.
    Date(Timestamp),
    /// `ago(30d)`: now minus a duration (milliseconds), resolved at evaluation.
    Ago(i64),
}

impl Scalar {
    /// The instant a date-like literal stands for at `now`.
    pub fn as_instant(&self, now: Timestamp) -> Option<Timestamp> {
        match self {
            Scalar::Date(t) => Some(*t),
            Scalar::Ago(ms) => Some(Timestamp(now.0 - ms)),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    /// `exists` takes none.
    None,
    One(Scalar),
    List(Vec<Scalar>),
    Range(Scalar, Scalar),
}

#[derive(Debug, Clone, PartialEq)]
pub struct FieldPredicate {
    pub field: Field,
    pub op: Op,
    pub value: Operand,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AggFn {
    Count,
    Sum,
    Min,
    Max,
    /// The time of the first event.
    First,
    /// The time of the last event.
    Last,
}

impl AggFn {
    pub const ALL: [AggFn; 6] = [AggFn::Count, AggFn::Sum, AggFn::Min, AggFn::Max, AggFn::First, AggFn::Last];

    pub fn as_str(self) -> &'static str {
        match self {
            AggFn::Count => "count",
            AggFn::Sum => "sum",
            AggFn::Min => "min",
            AggFn::Max => "max",
            AggFn::First => "first",
            AggFn::Last => "last",
        }
    }

    pub fn parse(s: &str) -> Option<AggFn> {
        AggFn::ALL.into_iter().find(|a| a.as_str() == s)
    }

    /// sum, min and max aggregate a numeric property.
    pub fn needs_measure(self) -> bool {
        matches!(self, AggFn::Sum | AggFn::Min | AggFn::Max)
    }

    /// first and last yield times; the others numbers.
    pub fn yields_time(self) -> bool {
        matches!(self, AggFn::First | AggFn::Last)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Window {
    Ever,
    /// The last so many milliseconds before now.
    Last(i64),
    Since(Timestamp),
    /// Inclusive.
    Between(Timestamp, Timestamp),
}

impl Window {
    /// The inclusive time range at `now`.
    pub fn range(&self, now: Timestamp) -> (i64, i64) {
        match self {
            Window::Ever => (i64::MIN, i64::MAX),
            Window::Last(ms) => (now.0 - ms, now.0),
            Window::Since(t) => (t.0, now.0),
            Window::Between(a, b) => (a.0, b.0),
        }
    }

    /// Whether the window moves with the clock.
    pub fn is_relative(&self) -> bool {
        matches!(self, Window::Last(_) | Window::Since(_))
    }
}

/// A condition on an event's properties: `category = "beans"`. A dotted path reads
/// nested objects; through an array it is true when any element matches.
#[derive(Debug, Clone, PartialEq)]
pub struct PropertyFilter {
    pub path: String,
    pub op: Op,
    pub value: Operand,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AggregatePredicate {
    pub func: AggFn,
    pub event: String,
    /// All must hold.
    pub filters: Vec<PropertyFilter>,
    /// The numeric property for sum, min and max.
    pub measure: Option<String>,
    pub window: Window,
    pub op: Op,
    pub value: Operand,
}

impl Rule {
    /// The segments this rule refers to, by name.
    pub fn segment_refs(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.visit(&mut |r| {
            if let Rule::Field(FieldPredicate { field: Field::Segment, value, .. }) = r {
                match value {
                    Operand::One(Scalar::Str(s)) => out.push(s.clone()),
                    Operand::List(items) => out.extend(items.iter().filter_map(|i| match i {
                        Scalar::Str(s) => Some(s.clone()),
                        _ => None,
                    })),
                    _ => {}
                }
            }
        });
        out
    }

    /// Whether membership can change with the clock alone (relative windows, `ago`,
    /// stages, RFM and scores).
    pub fn depends_on_time(&self) -> bool {
        let mut timed = false;
        self.visit(&mut |r| match r {
            Rule::Aggregate(a) => {
                timed |= a.window.is_relative() || operand_has_ago(&a.value);
            }
            Rule::Field(f) => {
                timed |= matches!(f.field, Field::Stage | Field::Rfm(_) | Field::Score(_)) || operand_has_ago(&f.value);
            }
            _ => {}
        });
        timed
    }

    pub fn visit(&self, f: &mut impl FnMut(&Rule)) {
        f(self);
        match self {
            Rule::And(rs) | Rule::Or(rs) => rs.iter().for_each(|r| r.visit(f)),
            Rule::Not(r) => r.visit(f),
            _ => {}
        }
    }
}

fn operand_has_ago(o: &Operand) -> bool {
    let ago = |s: &Scalar| matches!(s, Scalar::Ago(_));
    match o {
        Operand::None => false,
        Operand::One(s) => ago(s),
        Operand::List(items) => items.iter().any(ago),
        Operand::Range(a, b) => ago(a) || ago(b),
    }
}

/// Durations in rules: `30d`, `12h`, `90m`, `2w`.
pub fn parse_duration(s: &str) -> Option<i64> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit())?);
    let n: i64 = num.parse().ok()?;
    let unit_ms = match unit {
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 7 * 86_400_000,
        _ => return None,
    };
    n.checked_mul(unit_ms)
}

/// The spelling of a duration: whole days, else whole hours, else minutes.
pub fn format_duration(ms: i64) -> String {
    if ms % 86_400_000 == 0 {
        format!("{}d", ms / 86_400_000)
    } else if ms % 3_600_000 == 0 {
        format!("{}h", ms / 3_600_000)
    } else {
        format!("{}m", ms / 60_000)
    }
}

impl Field {
    /// The field's name in both forms: `traits.city`, `tag`, `rfm.r`, `owner.store` …
    pub fn name(&self) -> String {
        match self {
            Field::Trait(t) => format!("traits.{t}"),
            Field::Tag => "tag".into(),
            Field::Stage => "stage".into(),
            Field::Rfm(RfmPart::Recency) => "rfm.r".into(),
            Field::Rfm(RfmPart::Frequency) => "rfm.f".into(),
            Field::Rfm(RfmPart::Monetary) => "rfm.m".into(),
            Field::Score(k) => format!("score.{}", k.as_str()),
            Field::OwnerStore => "owner.store".into(),
            Field::OwnerCity => "owner.city".into(),
            Field::OwnerGuide => "owner.guide".into(),
            Field::Segment => "segment".into(),
        }
    }

    /// Reads a field name. Names that are not one of the special fields are traits
    /// (`city` is `traits.city`); `Err` explains names that look special but are not.
    pub fn parse_name(name: &str) -> Result<Field, String> {
        if let Some(t) = name.strip_prefix("traits.") {
            return if t.is_empty() { Err("traits. needs a trait name".into()) } else { Ok(Field::Trait(t.to_string())) };
        }
        Ok(match name {
            "tag" | "tags" => Field::Tag,
            "stage" => Field::Stage,
            "rfm.r" | "rfm.recency" => Field::Rfm(RfmPart::Recency),
            "rfm.f" | "rfm.frequency" => Field::Rfm(RfmPart::Frequency),
            "rfm.m" | "rfm.monetary" => Field::Rfm(RfmPart::Monetary),
            "owner.store" => Field::OwnerStore,
            "owner.city" => Field::OwnerCity,
            "owner.guide" => Field::OwnerGuide,
            "segment" => Field::Segment,
            _ => {
                if let Some(k) = name.strip_prefix("score.") {
                    return ScoreKind::ALL
                        .into_iter()
                        .find(|s| s.as_str() == k)
                        .map(Field::Score)
                        .ok_or_else(|| format!("unknown score {k:?}; use conversion, repurchase, share or referral"));
                }
                if let Some(p) = name.strip_prefix("rfm.") {
                    return Err(format!("unknown RFM part {p:?}; use rfm.r, rfm.f or rfm.m"));
                }
                if let Some(p) = name.strip_prefix("owner.") {
                    return Err(format!("unknown owner field {p:?}; use owner.store, owner.city or owner.guide"));
                }
                Field::Trait(name.to_string())
            }
        })
    }
}

impl Presence {
    pub fn name(&self) -> &'static str {
        match self {
            Presence::Wecom => "wecom",
            Presence::Identity(k) => k.as_str(),
        }
    }

    pub fn parse(s: &str) -> Option<Presence> {
        if s == "wecom" {
            return Some(Presence::Wecom);
        }
        crate::identity::IdentityKind::parse(s).map(Presence::Identity)
    }
}
