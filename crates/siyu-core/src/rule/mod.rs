//! The segment rule language: "which customers?".
//!
//! One rule, two forms that convert into each other:
//! - text, for the CLI and the console:
//!   `city = "Shanghai" and count("Order Completed", 30d) >= 2 and tag = "说粤语"`
//! - JSON, for the API: `{"and": [{"field": "traits.city", "op": "=", "value": "Shanghai"}, …]}`
//!
//! Predicates: traits (`=`, `!=`, `<`, `<=`, `>`, `>=`, `in`, `contains`, `exists`,
//! `between`; strings, numbers, booleans, dates), tags, identities present (`has(wecom)`),
//! channel consent (`consent(sms)`), event aggregates (`count`, `sum`, `min`, `max`,
//! `first`, `last` of an event, with property filters, over a window), ownership
//! (`owner.store`, `owner.city`, `owner.guide`), other segments (`segment = "vip"`),
//! lifecycle stage, RFM scores and the "four highs" scores; `and`, `or`, `not`, nested.
//!
//! Semantics every evaluator follows (the engine and the naive reference alike):
//! - A comparison on a trait is true only when the profile has the trait and the types
//!   agree; `!=` is "has it, and it differs". `not (…)` is the way to include absence.
//! - Strings compare by code point; a date operand compares with trait values that are
//!   ISO-8601 dates; `contains` is a case-sensitive substring test.
//! - `tag != "x"` means "not tagged x".
//! - Aggregates over no events: `count` and `sum` are 0; `min`, `max`, `first`, `last`
//!   do not exist, so every comparison on them is false.
//! - Windows: `30d` is the 30 × 24 hours before now; `between A and B` includes both
//!   ends; `since A` is from A to now.

mod ast;
mod json;
mod parse;
mod print;
pub mod semantics;
mod validate;

pub use ast::*;
pub use parse::parse;

/// How deeply `and`, `or`, `not` and parentheses may nest. Real rules nest a few
/// levels; the limit keeps every reader of a rule (parsers, printers, the evaluators,
/// and serde_json's 128-level limit on the stored JSON form, where one level of `and`
/// is two levels of JSON) far from its stack's end.
pub const MAX_DEPTH: usize = 32;

/// What is wrong with a rule, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// Text form: `column` is a 1-based character position.
    #[error("{message} at column {column}:\n  {text}\n  {caret}")]
    Text { message: String, column: usize, text: String, caret: String },
    /// JSON form: `path` names the offending part, e.g. `and[1].op`.
    #[error("{path}: {message}")]
    Json { path: String, message: String },
}

impl RuleError {
    pub(crate) fn text(source: &str, byte_offset: usize, message: impl Into<String>) -> RuleError {
        let column = source[..byte_offset.min(source.len())].chars().count() + 1;
        let caret = format!("{}^", " ".repeat(column - 1));
        RuleError::Text { message: message.into(), column, text: source.to_string(), caret }
    }

    pub fn message(&self) -> &str {
        match self {
            RuleError::Text { message, .. } | RuleError::Json { message, .. } => message,
        }
    }
}

#[cfg(test)]
mod tests;
