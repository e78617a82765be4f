//! Lifecycle stage, RFM quintiles and the "four highs" (四高) of super users, computed
//! from a profile's orders and touches. Every function here is a pure function of its
//! inputs, so the engine and the naive reference evaluator compute the same thing.
//!
//! Defaults are for a high-frequency, low-price brand such as a coffee chain, where a
//! regular buys weekly; see [`LifecycleConfig`] for each threshold and why.

use serde::{Deserialize, Serialize};
use siyu_core::rule::{ScoreKind, Stage};
use utoipa::ToSchema;

const DAY: u32 = 86_400;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(default)]
pub struct LifecycleConfig {
    /// The purchase event. Its `revenue_fen` property is the monetary value.
    pub order_event: String,
    pub revenue_property: String,
    /// A customer answering the brand: the conversion score counts orders after it.
    pub click_event: String,
    pub share_event: String,
    pub referral_event: String,
    /// No order for this many days: at risk. A weekly coffee drinker who has not come
    /// for a month is drifting away; this is when a "we miss you" touch still works.
    pub at_risk_after_days: u32,
    /// No order for this many days: lapsed. After a quarter the habit is gone and the
    /// customer needs winning back rather than reminding.
    pub lapsed_after_days: u32,
    /// Loyal: at least this many orders within `loyal_window_days` (and not at risk).
    /// Eight orders in ninety days is about weekly: a habit.
    pub loyal_min_orders: u32,
    pub loyal_window_days: u32,
    /// RFM looks at the last year: recency of the last order, frequency and monetary
    /// value of orders in the year. Scores are quintiles over customers who ordered.
    pub rfm_window_days: u32,
    /// Conversion counts an order within this many days after a click.
    pub conversion_days: u32,
    /// Share score 1.0 is this many shares a year (monthly sharing).
    pub shares_for_full_score: u32,
    /// Referral score 1.0 is this many successful referrals a year (one a quarter).
    pub referrals_for_full_score: u32,
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        LifecycleConfig {
            order_event: "Order Completed".into(),
            revenue_property: "revenue_fen".into(),
            click_event: "Message Clicked".into(),
            share_event: "Shared".into(),
            referral_event: "Referred".into(),
            at_risk_after_days: 30,
            lapsed_after_days: 90,
            loyal_min_orders: 8,
            loyal_window_days: 90,
            rfm_window_days: 365,
            conversion_days: 7,
            shares_for_full_score: 12,
            referrals_for_full_score: 4,
        }
    }
}

/// What one profile's lifecycle is computed from (times in engine seconds).
#[derive(Debug, Clone, Default)]
pub struct Inputs<'a> {
    /// Order times and revenues, any order.
    pub orders: &'a [(u32, f64)],
    pub clicks: &'a [u32],
    pub shares: &'a [u32],
    pub referrals: &'a [u32],
    pub wecom_contact: bool,
}

/// The RFM raw values of a buyer: days since the last order, orders and revenue in the
/// window. `None` for profiles who did not order in the window.
pub fn rfm_raw(cfg: &LifecycleConfig, orders: &[(u32, f64)], now: u32) -> Option<(u32, u32, f64)> {
    let from = now.saturating_sub(cfg.rfm_window_days * DAY);
    let mut last = None;
    let mut count = 0;
    let mut revenue = 0.0;
    for (t, v) in orders {
        if *t >= from && *t <= now {
            count += 1;
            if !v.is_nan() {
                revenue += v;
            }
            last = Some(last.map_or(*t, |l: u32| l.max(*t)));
        }
    }
    last.map(|l| ((now - l) / DAY, count, revenue))
}

/// Quintile boundaries: the highest value of each of the first four fifths of buyers
/// sorted by value. A score counts the boundaries below a value, so buyers with the same
/// value always share a score (a tie across a boundary goes to the lower group).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Cutoffs {
    pub recency: [f64; 4],
    pub frequency: [f64; 4],
    pub monetary: [f64; 4],
}

impl Cutoffs {
    /// From every buyer's raw values.
    pub fn from_raw(raw: &mut [(u32, u32, f64)]) -> Cutoffs {
        fn quintiles(mut v: Vec<f64>) -> [f64; 4] {
            if v.is_empty() {
                return [0.0; 4];
            }
            v.sort_by(|a, b| a.total_cmp(b));
            let n = v.len();
            // The last value of the k-th fifth: 10 buyers → the 2nd, 4th, 6th and 8th.
            [1, 2, 3, 4].map(|k| v[(k * n).div_ceil(5).max(1) - 1])
        }
        Cutoffs {
            recency: quintiles(raw.iter().map(|r| r.0 as f64).collect()),
            frequency: quintiles(raw.iter().map(|r| r.1 as f64).collect()),
            monetary: quintiles(raw.iter().map(|r| r.2).collect()),
        }
    }

    /// Scores 1–5; recency is better when smaller.
    pub fn score(&self, raw: (u32, u32, f64)) -> [u8; 3] {
        let above = |cuts: &[f64; 4], v: f64| cuts.iter().filter(|c| **c < v).count() as u8;
        [5 - above(&self.recency, raw.0 as f64), 1 + above(&self.frequency, raw.1 as f64), 1 + above(&self.monetary, raw.2)]
    }
}

pub fn stage(cfg: &LifecycleConfig, inputs: &Inputs, now: u32) -> Stage {
    let Some(last) = inputs.orders.iter().map(|(t, _)| *t).filter(|t| *t <= now).max() else {
        return if inputs.wecom_contact { Stage::NewContact } else { Stage::Prospect };
    };
    let age = now.saturating_sub(last);
    if age > cfg.lapsed_after_days * DAY {
        return Stage::Lapsed;
    }
    if age > cfg.at_risk_after_days * DAY {
        return Stage::AtRisk;
    }
    let from = now.saturating_sub(cfg.loyal_window_days * DAY);
    let recent = inputs.orders.iter().filter(|(t, _)| *t >= from && *t <= now).count() as u32;
    let total = inputs.orders.iter().filter(|(t, _)| *t <= now).count();
    if recent >= cfg.loyal_min_orders {
        Stage::Loyal
    } else if total >= 2 {
        Stage::Repeat
    } else {
        Stage::FirstPurchase
    }
}

/// The four highs, each a rate over the last year in whole percent, 0–100 (`None`: not
/// enough history to say). Rules compare them as rates: `score.share >= 0.5` is 50%.
/// - conversion: clicks followed by an order within `conversion_days`, per click;
/// - repurchase: of the 30-day periods since the first order, the share (after the
///   first) with an order;
/// - share: shares in the year, per `shares_for_full_score`, capped at 1;
/// - referral: referrals in the year, per `referrals_for_full_score`, capped at 1.
pub fn scores(cfg: &LifecycleConfig, inputs: &Inputs, now: u32) -> [Option<u8>; 4] {
    rates(cfg, inputs, now).map(|r| r.map(|x| (x * 100.0).round().clamp(0.0, 100.0) as u8))
}

fn rates(cfg: &LifecycleConfig, inputs: &Inputs, now: u32) -> [Option<f32>; 4] {
    let from = now.saturating_sub(365 * DAY);
    let in_year = |t: &u32| *t >= from && *t <= now;
    let mut orders: Vec<u32> = inputs.orders.iter().map(|(t, _)| *t).filter(in_year).collect();
    orders.sort_unstable();
    let clicks: Vec<u32> = inputs.clicks.iter().copied().filter(in_year).collect();
    let conversion = (!clicks.is_empty()).then(|| {
        let window = cfg.conversion_days * DAY;
        let converted = clicks
            .iter()
            .filter(|c| {
                let i = orders.partition_point(|o| *o <= **c);
                orders.get(i).is_some_and(|o| *o - **c <= window)
            })
            .count();
        converted as f32 / clicks.len() as f32
    });
    let repurchase = orders.first().and_then(|first| {
        let period = 30 * DAY;
        let periods = (now - first) / period + 1;
        if periods < 2 {
            return None;
        }
        let mut with_order: Vec<u32> = orders.iter().map(|o| (now - o) / period).collect();
        with_order.dedup();
        Some((with_order.len() as f32 - 1.0) / (periods as f32 - 1.0))
    });
    let rate = |times: &[u32], full: u32| Some((times.iter().filter(|t| in_year(t)).count() as f32 / full.max(1) as f32).min(1.0));
    [conversion, repurchase, rate(inputs.shares, cfg.shares_for_full_score), rate(inputs.referrals, cfg.referrals_for_full_score)]
}

pub fn score_index(kind: ScoreKind) -> usize {
    ScoreKind::ALL.iter().position(|k| *k == kind).expect("known score")
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u32 = 1000 * DAY;

    fn orders(days_ago: &[u32]) -> Vec<(u32, f64)> {
        days_ago.iter().map(|d| (NOW - d * DAY, 2900.0)).collect()
    }

    #[test]
    fn stages_follow_the_order_history() {
        let cfg = LifecycleConfig::default();
        let s = |o: &[(u32, f64)], wecom: bool| stage(&cfg, &Inputs { orders: o, wecom_contact: wecom, ..Default::default() }, NOW);
        assert_eq!(s(&[], false), Stage::Prospect);
        assert_eq!(s(&[], true), Stage::NewContact);
        assert_eq!(s(&orders(&[3]), true), Stage::FirstPurchase);
        assert_eq!(s(&orders(&[3, 40]), true), Stage::Repeat);
        assert_eq!(s(&orders(&[1, 10, 20, 30, 40, 50, 60, 70]), true), Stage::Loyal);
        assert_eq!(s(&orders(&[45]), true), Stage::AtRisk);
        assert_eq!(s(&orders(&[120, 130]), false), Stage::Lapsed);
    }

    #[test]
    fn rfm_quintiles() {
        let cfg = LifecycleConfig::default();
        assert_eq!(rfm_raw(&cfg, &orders(&[400]), NOW), None, "outside the window: no RFM");
        let mut raw: Vec<(u32, u32, f64)> = (0..100).map(|i| (i, i + 1, (i * 100) as f64)).collect();
        let cut = Cutoffs::from_raw(&mut raw);
        assert_eq!(cut.frequency, [20.0, 40.0, 60.0, 80.0]);
        assert_eq!(cut.score((0, 100, 9900.0)), [5, 5, 5]);
        assert_eq!(cut.score((99, 1, 0.0)), [1, 1, 1]);
        let per_score = |raw: &[(u32, u32, f64)], cut: &Cutoffs, which: usize| {
            let mut n = [0; 5];
            for r in raw {
                n[cut.score(*r)[which] as usize - 1] += 1;
            }
            n
        };
        for which in 0..3 {
            assert_eq!(per_score(&raw, &cut, which), [20; 5], "100 buyers: 20 per score");
        }
        // 10 buyers spending 100…1000 fen: two in each quintile.
        let mut ten: Vec<(u32, u32, f64)> = (1..=10).map(|i| (i, i, (i * 100) as f64)).collect();
        let cut = Cutoffs::from_raw(&mut ten);
        assert_eq!(per_score(&ten, &cut, 2), [2; 5]);
        assert_eq!(per_score(&ten, &cut, 0), [2; 5]);
        // Ties stay together: six buyers with one order and four with more.
        let mut tied: Vec<(u32, u32, f64)> = [1, 1, 1, 1, 1, 1, 2, 3, 4, 5].iter().map(|&f| (1, f, 0.0)).collect();
        let cut = Cutoffs::from_raw(&mut tied);
        assert_eq!(per_score(&tied, &cut, 1), [6, 0, 0, 2, 2]);
    }

    #[test]
    fn repurchase_is_the_share_of_months_with_an_order() {
        let cfg = LifecycleConfig::default();
        let rep = |o: &[(u32, f64)]| scores(&cfg, &Inputs { orders: o, ..Default::default() }, NOW)[1];
        assert_eq!(rep(&orders(&[0, 7, 14, 21, 28, 35, 42, 49])), Some(100), "eight weekly orders: a habit");
        assert_eq!(rep(&orders(&[10])), None, "one order 10 days ago: too early to say");
        assert_eq!(rep(&orders(&[0, 359])), Some(9), "twice in a year: 1 of the 11 months after the first");
    }

    #[test]
    fn four_highs() {
        let cfg = LifecycleConfig::default();
        let o = orders(&[2, 35, 65, 95]);
        let clicks = [NOW - 5 * DAY, NOW - 50 * DAY];
        let shares = [NOW - DAY; 6];
        let [conv, rep, share, refer] = scores(&cfg, &Inputs { orders: &o, clicks: &clicks, shares: &shares, referrals: &[], wecom_contact: true }, NOW);
        assert_eq!(conv, Some(50), "one of two clicks led to an order within a week");
        assert_eq!(rep, Some(100), "an order in every 30-day period since the first");
        assert_eq!(share, Some(50));
        assert_eq!(refer, Some(0));
        let one = orders(&[3]);
        assert_eq!(scores(&cfg, &Inputs { orders: &one, ..Default::default() }, NOW)[1], None, "too new to tell");
    }
}
