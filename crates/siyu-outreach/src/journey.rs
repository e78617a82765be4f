//! Journeys: a trigger puts a customer on a path of steps (wait, branch, send, tag,
//! coupon, staff task, exit); an exit condition takes them off it. The server keeps each
//! customer's position in the store, so a restart resumes where it was.
//!
//! Date-relative triggers are waits after an event trigger: "25 days after the last
//! `Order Completed` of category beans" is trigger `Order Completed where category =
//! beans`, re-entry `always` (a new order restarts the clock), wait 25 days, with exit
//! on `Order Completed` (ordered again).

use std::collections::BTreeMap;

use chrono::NaiveTime;
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use siyu_core::Timestamp;
use siyu_core::rule::Channel;
use utoipa::ToSchema;

use crate::policy::TouchKind;
use crate::quiet::{hhmm, next_local_time};
use crate::template::Template;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JourneySpec {
    pub name: String,
    pub trigger: Trigger,
    pub steps: Vec<Step>,
    /// Leave the journey when this event happens after entering (e.g. ordered again).
    #[serde(default)]
    pub exit_on: Option<EventMatch>,
    #[serde(default)]
    pub reentry: Reentry,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Trigger {
    /// An event, optionally with property values.
    Event(EventMatch),
    /// Entering a saved segment (its `Segment Entered` event).
    SegmentEntered(String),
    /// A date in a trait: birthdays (`yearly`), child-age milestones (`offset_days`
    /// after the child's birth date). Checked once a day.
    Date(DateTrigger),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DateTrigger {
    /// A trait holding an ISO date (`YYYY-MM-DD`), e.g. `birthday`, `child_birth_date`.
    #[serde(rename = "trait")]
    pub trait_name: String,
    /// Enter this many days after the date (negative: before).
    #[serde(default)]
    pub offset_days: i32,
    /// Every year on the anniversary (birthdays), instead of once.
    #[serde(default)]
    pub yearly: bool,
}

impl DateTrigger {
    /// Whether a trait value makes the customer enter on `today`.
    pub fn matches(&self, value: &str, today: chrono::NaiveDate) -> bool {
        let Some(date) = value.get(..10).and_then(|d| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").ok()) else { return false };
        let target = today - chrono::Duration::days(self.offset_days as i64);
        if self.yearly {
            use chrono::Datelike;
            // 29 February celebrates on 28 February in other years.
            let (m, d) = (date.month(), date.day());
            let leap_day_elsewhere = m == 2 && d == 29 && chrono::NaiveDate::from_ymd_opt(target.year(), 2, 29).is_none();
            (target.month(), target.day()) == (m, d) || (leap_day_elsewhere && (target.month(), target.day()) == (2, 28))
        } else {
            date == target
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventMatch {
    pub event: String,
    /// Property values the event must carry, e.g. `{"category": "beans"}`.
    #[serde(default, rename = "where")]
    #[schema(value_type = Object)]
    pub properties: BTreeMap<String, Value>,
}

impl EventMatch {
    pub fn matches(&self, name: &str, properties: &Value) -> bool {
        name == self.event && self.properties.iter().all(|(k, v)| properties.get(k) == Some(v))
    }
}

impl Trigger {
    /// The trigger as an event match (segment entry is the `Segment Entered` event);
    /// date triggers have none.
    pub fn as_event(&self) -> Option<EventMatch> {
        match self {
            Trigger::Event(m) => Some(m.clone()),
            Trigger::SegmentEntered(s) => {
                Some(EventMatch { event: "Segment Entered".into(), properties: BTreeMap::from([("segment".to_string(), Value::String(s.clone()))]) })
            }
            Trigger::Date(_) => None,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Reentry {
    /// Never again once entered.
    #[default]
    Once,
    /// Again once this many days have passed since the last entry.
    AfterDays(u32),
    /// Every trigger starts over (the customer must not be on the journey already).
    Always,
}

impl Reentry {
    /// Whether a customer who last entered at `last` may enter again at `now`.
    pub fn allows(self, last: Option<Timestamp>, now: Timestamp) -> bool {
        match (self, last) {
            (_, None) | (Reentry::Always, _) => true,
            (Reentry::Once, Some(_)) => false,
            (Reentry::AfterDays(d), Some(t)) => now.0 - t.0 >= d as i64 * 86_400_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Step {
    /// Wait a duration.
    Wait {
        hours: f64,
    },
    /// Wait until the next time of day in the customer's zone.
    WaitUntil {
        #[serde(with = "hhmm")]
        #[schema(value_type = String, example = "10:00")]
        time: NaiveTime,
    },
    /// Continue at `then` if the customer matches the rule, else at `otherwise` (step
    /// numbers, 0-based; absent means the next step).
    Branch {
        #[schema(value_type = Object)]
        rule: Value,
        then: Option<usize>,
        otherwise: Option<usize>,
    },
    Send {
        channel: Channel,
        content: String,
        #[serde(default)]
        kind: TouchKind,
    },
    Tag {
        #[serde(default)]
        add: Option<String>,
        #[serde(default)]
        remove: Option<String>,
    },
    /// Issue a coupon (recorded as a `Coupon Issued` event; loyalty fills in the rest).
    Coupon {
        code: String,
    },
    /// Ask the customer's guide to do something, with a deadline.
    Task {
        title: String,
        content: String,
        deadline_hours: u32,
    },
    Exit,
}

impl JourneySpec {
    /// Saved segments the journey uses: its trigger and its branch rules.
    pub fn segment_refs(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Trigger::SegmentEntered(s) = &self.trigger {
            out.push(s.clone());
        }
        for step in &self.steps {
            if let Step::Branch { rule, .. } = step {
                let rule = match rule {
                    Value::String(text) => siyu_core::rule::parse(text),
                    other => siyu_core::rule::Rule::from_json(other),
                };
                out.extend(rule.map(|r| r.segment_refs()).unwrap_or_default());
            }
        }
        out
    }

    pub fn validate(&self) -> Result<(), String> {
        if self.name.trim().is_empty() {
            return Err("name: a journey needs a name".into());
        }
        if self.steps.is_empty() {
            return Err("steps: a journey needs at least one step".into());
        }
        for (i, step) in self.steps.iter().enumerate() {
            let at = |m: String| format!("steps[{i}]: {m}");
            match step {
                Step::Wait { hours } if !(*hours >= 0.0 && hours.is_finite()) => return Err(at("wait.hours must be a positive number".into())),
                Step::Branch { then, otherwise, .. } => {
                    for target in [then, otherwise].into_iter().flatten() {
                        if *target >= self.steps.len() || *target <= i {
                            return Err(at(format!("branch target {target} must be a later step (there are {})", self.steps.len())));
                        }
                    }
                }
                Step::Send { content, .. } | Step::Task { content, .. } => {
                    Template::parse(content).map_err(|e| at(e.to_string()))?;
                }
                Step::Tag { add: None, remove: None } => return Err(at("tag: give `add` or `remove`".into())),
                _ => {}
            }
        }
        Ok(())
    }
}

/// When a wait step started at `now` ends.
pub fn wake_after(step: &Step, now: Timestamp, zone: Tz) -> Option<Timestamp> {
    match step {
        Step::Wait { hours } => Some(Timestamp(now.0 + (hours * 3_600_000.0) as i64)),
        Step::WaitUntil { time } => Some(next_local_time(now, *time, zone)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_repurchase_reminder_reads_as_json() {
        let spec: JourneySpec = serde_json::from_value(json!({
            "name": "beans reminder",
            "trigger": {"event": {"event": "Order Completed", "where": {"category": "beans"}}},
            "reentry": "always",
            "exit_on": {"event": "Order Completed"},
            "steps": [
                {"wait": {"hours": 600}},
                {"wait_until": {"time": "10:00"}},
                {"branch": {"rule": "has(wecom)", "then": 3, "otherwise": 4}},
                {"send": {"channel": "wecom", "content": "{{ traits.first_name }}, beans running low?"}},
                {"exit": null}
            ]
        }))
        .unwrap();
        spec.validate().unwrap();
        assert!(spec.trigger.as_event().unwrap().matches("Order Completed", &json!({"category": "beans"})));
        assert!(!spec.trigger.as_event().unwrap().matches("Order Completed", &json!({"category": "milk"})));
        assert!(Reentry::AfterDays(7).allows(Some(Timestamp(0)), Timestamp(7 * 86_400_000)));
        assert!(!Reentry::Once.allows(Some(Timestamp(0)), Timestamp(i64::MAX)));
    }

    #[test]
    fn birthdays_and_child_age_milestones() {
        let day = |s: &str| chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
        let birthday = DateTrigger { trait_name: "birthday".into(), offset_days: 0, yearly: true };
        assert!(birthday.matches("1990-11-25", day("2026-11-25")));
        assert!(!birthday.matches("1990-11-24", day("2026-11-25")));
        assert!(birthday.matches("2000-02-29", day("2027-02-28")), "leap-day birthdays are kept in other years");
        assert!(!birthday.matches("not a date", day("2026-11-25")));
        // Six months old: 180 days after the birth date, once.
        let six_months = DateTrigger { trait_name: "child_birth_date".into(), offset_days: 180, yearly: false };
        assert!(six_months.matches("2026-05-29", day("2026-11-25")));
        assert!(!six_months.matches("2025-05-29", day("2026-11-25")));
        // A week before the birthday.
        let before = DateTrigger { trait_name: "birthday".into(), offset_days: -7, yearly: true };
        assert!(before.matches("1990-12-02", day("2026-11-25")));
    }

    #[test]
    fn bad_journeys_say_where() {
        let mut spec: JourneySpec = serde_json::from_value(json!({
            "name": "x", "trigger": {"segment_entered": "vip"},
            "steps": [{"branch": {"rule": "has(wecom)", "then": 0, "otherwise": null}}]
        }))
        .unwrap();
        assert!(spec.validate().unwrap_err().starts_with("steps[0]: branch target 0"));
        spec.steps = vec![Step::Send { channel: Channel::Sms, content: "{{ nope }}".into(), kind: TouchKind::Marketing }];
        assert!(spec.validate().unwrap_err().contains("unknown variable"));
    }
}
