//! Guardrails: a campaign watches what its touches cause. When customers block
//! (`Contact Deleted` within N days of a touch) or complain at a rate above the
//! guardrail, the campaign pauses itself and says why.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Guardrail {
    /// Pause when blocks + complaints exceed this share of delivered touches.
    pub max_block_rate: f64,
    /// A `Contact Deleted` this many days after a touch counts against it.
    pub block_window_days: u32,
    /// Rates on fewer sends than this are noise: no pause before.
    pub min_sends: u64,
}

impl Default for Guardrail {
    /// 1%: the hotel chain in the seeds held its block rate under 0.6%.
    fn default() -> Self {
        Guardrail { max_block_rate: 0.01, block_window_days: 3, min_sends: 100 }
    }
}

impl Guardrail {
    pub fn validate(&self) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.max_block_rate) {
            return Err("max_block_rate: a share between 0 and 1 (0.01 is 1%)".into());
        }
        if self.block_window_days == 0 {
            return Err("block_window_days: must be at least 1".into());
        }
        Ok(())
    }

    /// Why the campaign must pause, if it must.
    pub fn check(&self, m: &Metrics) -> Option<String> {
        if m.sent < self.min_sends.max(1) {
            return None;
        }
        let rate = (m.blocks + m.complaints) as f64 / m.sent as f64;
        (rate > self.max_block_rate).then(|| {
            format!(
                "paused by its guardrail: {} blocks and {} complaints on {} sent touches ({:.2}%) exceed {:.2}%",
                m.blocks,
                m.complaints,
                m.sent,
                rate * 100.0,
                self.max_block_rate * 100.0
            )
        })
    }
}

/// What a campaign's touches did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
pub struct Metrics {
    pub sent: u64,
    pub delivered: u64,
    pub clicks: u64,
    pub replies: u64,
    pub unsubscribes: u64,
    pub complaints: u64,
    pub blocks: u64,
    pub holdout: u64,
}

/// Conversion in the sent group against the holdout group.
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
pub struct Lift {
    pub event: String,
    pub sent: u64,
    pub sent_converted: u64,
    pub holdout: u64,
    pub holdout_converted: u64,
    /// Conversion rate of the sent group minus the holdout's, in percentage points.
    pub lift_points: Option<f64>,
}

impl Lift {
    pub fn compute(event: &str, sent: u64, sent_converted: u64, holdout: u64, holdout_converted: u64) -> Lift {
        let lift_points = (sent > 0 && holdout > 0).then(|| 100.0 * (sent_converted as f64 / sent as f64 - holdout_converted as f64 / holdout as f64));
        Lift { event: event.to_string(), sent, sent_converted, holdout, holdout_converted, lift_points }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_above_the_rate_once_there_are_enough_sends() {
        let g = Guardrail::default();
        assert_eq!(g.check(&Metrics { sent: 50, blocks: 10, ..Default::default() }), None);
        assert_eq!(g.check(&Metrics { sent: 1000, blocks: 10, ..Default::default() }), None);
        let why = g.check(&Metrics { sent: 1000, blocks: 9, complaints: 3, ..Default::default() }).unwrap();
        assert!(why.contains("1.20%"), "{why}");
        assert!((Lift::compute("Order Completed", 100, 20, 50, 5).lift_points.unwrap() - 10.0).abs() < 1e-9);
    }
}
