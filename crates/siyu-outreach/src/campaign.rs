//! Broadcasts: who (a segment, live or snapshot), what (a template), where (a channel),
//! when (now, at a time, or recurring), and how carefully (holdout, guardrail).

use serde::{Deserialize, Serialize};
use siyu_core::Timestamp;
use siyu_core::rule::Channel;
use utoipa::ToSchema;

use crate::guardrail::Guardrail;
use crate::policy::TouchKind;
use crate::template::Template;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CampaignSpec {
    pub name: String,
    pub audience: Audience,
    pub channel: Channel,
    #[serde(default)]
    pub kind: TouchKind,
    /// The message, with variables such as `{{ traits.first_name }}`, `{{ store.name }}`,
    /// `{{ owner.name }}`, `{{ coupon.code }}`.
    pub content: String,
    /// Coupon to issue with each message (its code is `{{ coupon.code }}`).
    #[serde(default)]
    pub coupon: Option<String>,
    #[serde(default)]
    pub schedule: Schedule,
    /// Percent of the audience kept out to measure lift (0–50).
    #[serde(default)]
    pub holdout_percent: f64,
    #[serde(default)]
    pub guardrail: Guardrail,
    /// The event whose rate in sent vs holdout customers is the campaign's lift.
    #[serde(default = "default_conversion")]
    pub conversion_event: String,
    /// WeCom: hours a guide has to complete their task.
    #[serde(default = "default_deadline")]
    pub task_deadline_hours: u32,
}

fn default_conversion() -> String {
    "Order Completed".into()
}

fn default_deadline() -> u32 {
    24
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Audience {
    /// A saved segment's name.
    pub segment: String,
    /// `true`: members are fixed when the campaign is scheduled; `false`: the live
    /// membership at each run.
    #[serde(default)]
    pub snapshot: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// First run; absent means as soon as it is scheduled.
    #[serde(default)]
    pub at: Option<Timestamp>,
    /// Run again every this many days.
    #[serde(default)]
    pub every_days: Option<u32>,
}

impl CampaignSpec {
    /// Everything a person could get wrong, said plainly.
    pub fn validate(&self) -> Result<(), String> {
        if self.name.trim().is_empty() {
            return Err("name: a campaign needs a name".into());
        }
        if self.audience.segment.trim().is_empty() {
            return Err("audience.segment: name the segment to send to".into());
        }
        if self.content.trim().is_empty() {
            return Err("content: the message is empty".into());
        }
        Template::parse(&self.content).map_err(|e| format!("content: {e}"))?;
        if !(0.0..=50.0).contains(&self.holdout_percent) {
            return Err("holdout_percent: must be between 0 and 50".into());
        }
        if self.schedule.every_days == Some(0) {
            return Err("schedule.every_days: must be at least 1".into());
        }
        self.guardrail.validate().map_err(|e| format!("guardrail.{e}"))?;
        if self.task_deadline_hours == 0 {
            return Err("task_deadline_hours: must be at least 1".into());
        }
        Ok(())
    }
}

/// A campaign's lifecycle: the vocabulary lives in `siyu-core`, where the store's
/// rows can use it too.
pub use siyu_core::campaign::{Action, Status};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifecycle_transitions() {
        assert_eq!(Status::Draft.apply(Action::Schedule), Ok(Status::Scheduled));
        assert_eq!(Status::Scheduled.apply(Action::Start), Ok(Status::Running));
        assert_eq!(Status::Running.apply(Action::Pause), Ok(Status::Paused));
        assert_eq!(Status::Paused.apply(Action::Resume), Ok(Status::Running));
        assert_eq!(Status::Running.apply(Action::Complete), Ok(Status::Completed));
        assert_eq!(Status::Completed.apply(Action::Resume), Err("a completed campaign cannot be resumed".into()));
        assert!(Status::Draft.apply(Action::Pause).is_err());
    }

    #[test]
    fn stored_names_are_the_wire_names() {
        use crate::policy::TouchKind;
        for a in [Action::Schedule, Action::Unschedule, Action::Start, Action::Pause, Action::Resume, Action::Complete] {
            assert_eq!(serde_json::to_value(a).unwrap(), a.as_str());
        }
        for k in [TouchKind::Marketing, TouchKind::Service] {
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
        }
    }
}
