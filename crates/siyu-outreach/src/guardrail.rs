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
///
/// The holdout is drawn first from the eligible audience (consented, not in the block
/// cooldown) by a stable hash, so the two groups are alike and `lift_points` is the
/// campaign's effect: the sent group's conversion rate minus the holdout's, in
/// percentage points, with a 95% confidence interval (normal approximation for a
/// difference of two proportions). An interval that contains 0 means the campaign has
/// not shown an effect yet.
#[derive(Debug, Clone, Default, PartialEq, Serialize, ToSchema)]
pub struct Lift {
    pub event: String,
    /// Customers who were sent the touch, and how many of them converted.
    pub sent: u64,
    pub sent_converted: u64,
    /// Customers held out, and how many of them converted anyway.
    pub holdout: u64,
    pub holdout_converted: u64,
    /// Conversion rates in percent (null for an empty group).
    pub sent_rate: Option<f64>,
    pub holdout_rate: Option<f64>,
    /// Conversion rate of the sent group minus the holdout's, in percentage points.
    pub lift_points: Option<f64>,
    /// The 95% confidence interval of `lift_points`: [low, high].
    pub lift_ci95: Option<[f64; 2]>,
}

impl Lift {
    pub fn compute(event: &str, sent: u64, sent_converted: u64, holdout: u64, holdout_converted: u64) -> Lift {
        let rate = |k: u64, n: u64| (n > 0).then(|| k as f64 / n as f64);
        let (ps, ph) = (rate(sent_converted, sent), rate(holdout_converted, holdout));
        let (lift_points, lift_ci95) = match (ps, ph) {
            (Some(ps), Some(ph)) => {
                let diff = ps - ph;
                let se = (ps * (1.0 - ps) / sent as f64 + ph * (1.0 - ph) / holdout as f64).sqrt();
                (Some(100.0 * diff), Some([100.0 * (diff - 1.96 * se), 100.0 * (diff + 1.96 * se)]))
            }
            _ => (None, None),
        };
        Lift {
            event: event.to_string(),
            sent,
            sent_converted,
            holdout,
            holdout_converted,
            sent_rate: ps.map(|p| 100.0 * p),
            holdout_rate: ph.map(|p| 100.0 * p),
            lift_points,
            lift_ci95,
        }
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

    #[test]
    fn lift_has_a_95_percent_interval() {
        // 20% of 1000 against 10% of 1000: 10 points, se = sqrt(.2*.8/1000 + .1*.9/1000) = 0.0158.
        let l = Lift::compute("Order Completed", 1000, 200, 1000, 100);
        let [lo, hi] = l.lift_ci95.unwrap();
        assert!((lo - 6.901).abs() < 0.01 && (hi - 13.099).abs() < 0.01, "{lo} {hi}");
        assert_eq!((l.sent_rate, l.holdout_rate), (Some(20.0), Some(10.0)));
        // A small holdout gives a wide interval that spans 0: no effect shown yet.
        let [lo, hi] = Lift::compute("Order Completed", 100, 12, 10, 1).lift_ci95.unwrap();
        assert!(lo < 0.0 && hi > 0.0);
        assert_eq!(Lift::compute("Order Completed", 100, 12, 0, 0).lift_ci95, None);
    }
}
