//! The contact history every campaign and journey shares: who was touched when, on
//! which channel, and how many customers each guide has been asked to message per day.
//! It lives in memory behind one lock in the server, so two campaigns planning at once
//! cannot both take a customer's last slot; at start it is rebuilt from the stored
//! deliveries, so caps survive a restart.

use std::collections::HashMap;

use siyu_core::Timestamp;
use siyu_core::rule::Channel;

/// How far back caps look: the longest window (a month) plus slack.
pub const HORIZON_MS: i64 = 35 * DAY_MS;
pub const DAY_MS: i64 = 86_400_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PastTouch {
    pub at: i64,
    pub channel: Channel,
}

#[derive(Debug, Default)]
pub struct ContactLedger {
    touches: HashMap<u32, Vec<PastTouch>>,
    /// (guide, local day number) → customers assigned that day.
    guide_days: HashMap<(String, i64), u32>,
    /// While a dry run plans, what to take back afterwards.
    trial: Option<Vec<Undo>>,
}

#[derive(Debug)]
enum Undo {
    Touch(u32),
    Guide(String, i64),
}

impl ContactLedger {
    pub fn new() -> ContactLedger {
        ContactLedger::default()
    }

    /// A marketing touch at `at` (its send time, deferred or not).
    pub fn record(&mut self, profile: u32, at: Timestamp, channel: Channel) {
        let list = self.touches.entry(profile).or_default();
        match &mut self.trial {
            Some(undo) => undo.push(Undo::Touch(profile)),
            None => {
                let horizon = at.0 - HORIZON_MS;
                list.retain(|t| t.at >= horizon);
            }
        }
        list.push(PastTouch { at: at.0, channel });
    }

    /// Takes back a touch that will not go out after all (stopped at send time), so the
    /// customer's slot is free again.
    pub fn release(&mut self, profile: u32, at: Timestamp, channel: Channel) {
        let Some(list) = self.touches.get_mut(&profile) else { return };
        if let Some(i) = list.iter().position(|t| t.at == at.0 && t.channel == channel) {
            list.remove(i);
        }
        if list.is_empty() {
            self.touches.remove(&profile);
        }
    }

    pub fn record_guide(&mut self, guide: &str, day: i64) {
        *self.guide_days.entry((guide.to_string(), day)).or_default() += 1;
        if let Some(undo) = &mut self.trial {
            undo.push(Undo::Guide(guide.to_string(), day));
        }
    }

    /// Starts a dry run: everything recorded until [`rollback`](Self::rollback) is taken back.
    pub fn begin_trial(&mut self) {
        self.trial = Some(Vec::new());
    }

    pub fn rollback(&mut self) {
        for undo in self.trial.take().unwrap_or_default().into_iter().rev() {
            match undo {
                Undo::Touch(p) => {
                    if let Some(list) = self.touches.get_mut(&p) {
                        list.pop();
                        if list.is_empty() {
                            self.touches.remove(&p);
                        }
                    }
                }
                Undo::Guide(g, day) => {
                    if let Some(n) = self.guide_days.get_mut(&(g, day)) {
                        *n -= 1;
                    }
                }
            }
        }
    }

    pub fn guide_load(&self, guide: &str, day: i64) -> u32 {
        // Lookups by borrowed key would need a custom key type; guides are few per plan.
        self.guide_days.get(&(guide.to_string(), day)).copied().unwrap_or(0)
    }

    /// Touches of `profile` in the window `(at - window, at + window)`: a cap is about
    /// any span of that length, and deferred touches may sit in the future.
    pub fn count(&self, profile: u32, at: Timestamp, window_ms: i64, channel: Option<Channel>) -> u32 {
        let Some(list) = self.touches.get(&profile) else { return 0 };
        list.iter().filter(|t| (t.at - at.0).abs() < window_ms && channel.is_none_or(|c| c == t.channel)).count() as u32
    }

    pub fn profiles(&self) -> usize {
        self.touches.len()
    }

    pub fn touches(&self) -> usize {
        self.touches.values().map(Vec::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_window_and_channel() {
        let mut l = ContactLedger::new();
        let t = Timestamp(100 * DAY_MS);
        l.record(1, Timestamp(t.0 - 2 * 3_600_000), Channel::Wecom);
        l.record(1, Timestamp(t.0 - 3 * DAY_MS), Channel::Sms);
        assert_eq!(l.count(1, t, DAY_MS, None), 1);
        assert_eq!(l.count(1, t, 7 * DAY_MS, None), 2);
        assert_eq!(l.count(1, t, 7 * DAY_MS, Some(Channel::Sms)), 1);
        assert_eq!(l.count(2, t, 7 * DAY_MS, None), 0);
        l.record_guide("g1", 5);
        l.record_guide("g1", 5);
        assert_eq!(l.guide_load("g1", 5), 2);
        assert_eq!(l.guide_load("g1", 6), 0);
        l.begin_trial();
        l.record(1, t, Channel::Wecom);
        l.record(9, t, Channel::Wecom);
        l.record_guide("g1", 5);
        assert_eq!(l.count(1, t, DAY_MS, None), 2);
        l.rollback();
        assert_eq!(l.count(1, t, DAY_MS, None), 1);
        assert_eq!(l.count(9, t, DAY_MS, None), 0);
        assert_eq!(l.guide_load("g1", 5), 2);
    }

    #[test]
    fn a_released_touch_frees_its_slot() {
        let mut l = ContactLedger::new();
        let t = Timestamp(100 * DAY_MS);
        l.record(1, t, Channel::Sms);
        l.record(1, Timestamp(t.0 + 60_000), Channel::Sms);
        l.release(1, t, Channel::Wecom); // not that touch: nothing changes
        assert_eq!(l.count(1, t, DAY_MS, None), 2);
        l.release(1, t, Channel::Sms);
        assert_eq!(l.count(1, t, DAY_MS, None), 1);
        l.release(1, Timestamp(t.0 + 60_000), Channel::Sms);
        assert_eq!(l.profiles(), 0);
    }
}
