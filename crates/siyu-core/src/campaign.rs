//! A campaign's lifecycle: draft → scheduled → running → paused/completed, and the
//! actions an operator (or the runner) takes to move it. Shared by the contact-policy
//! crate, the store's rows and the API.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = CampaignStatus)]
pub enum Status {
    Draft,
    Scheduled,
    Running,
    Paused,
    Completed,
}

/// What an operator (or the runner) asks of a campaign.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Schedule,
    Unschedule,
    Start,
    Pause,
    Resume,
    Complete,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Draft => "draft",
            Status::Scheduled => "scheduled",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Completed => "completed",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        [Status::Draft, Status::Scheduled, Status::Running, Status::Paused, Status::Completed].into_iter().find(|x| x.as_str() == s)
    }

    /// draft → scheduled → running → paused/completed; a paused campaign resumes or
    /// completes; a recurring campaign goes from running back to scheduled (Schedule).
    pub fn apply(self, action: Action) -> Result<Status, String> {
        use Action::*;
        use Status::*;
        match (self, action) {
            (Draft, Schedule) | (Running, Schedule) => Ok(Scheduled),
            (Scheduled, Unschedule) => Ok(Draft),
            (Scheduled, Start) => Ok(Running),
            (Running, Pause) | (Scheduled, Pause) => Ok(Paused),
            (Paused, Resume) => Ok(Running),
            (Running, Complete) | (Paused, Complete) | (Scheduled, Complete) => Ok(Completed),
            (from, action) => Err(format!("a {} campaign cannot {}", from.as_str(), action_word(action))),
        }
    }
}

impl Action {
    /// As written in the audit trail (and the API path).
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Schedule => "schedule",
            Action::Unschedule => "unschedule",
            Action::Start => "start",
            Action::Pause => "pause",
            Action::Resume => "resume",
            Action::Complete => "complete",
        }
    }
}

fn action_word(a: Action) -> &'static str {
    match a {
        Action::Schedule => "be scheduled",
        Action::Unschedule => "be unscheduled",
        Action::Start => "start",
        Action::Pause => "be paused",
        Action::Resume => "be resumed",
        Action::Complete => "be completed",
    }
}
