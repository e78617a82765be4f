//! The arithmetic of the Overview page, with no data behind it: a slice's [`Figures`]
//! for a period and the four-factor GMV identity they satisfy, the period-over-period
//! [`Lmdi`] decomposition of the change in GMV into those four factors, and reporting
//! [`Period`]s (whole days in a time zone). What counts as a user, a buyer or an order
//! is decided by the store's `analytics` module (and `docs/analytics.md`); this module
//! only takes the counts.
//!
//! The identity: with `conversion = buyers / users`, `aov = gmv / orders` (average order
//! value, in fen) and `frequency = orders / buyers`,
//!
//! ```text
//! users × conversion × aov × frequency = gmv
//! ```
//!
//! which [`Figures::identity_gmv_fen`] reproduces to the fen (see there for the bound).

use chrono::{Duration, NaiveDate, TimeZone};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{Fen, Timestamp};

/// A calendar day (`2026-05-01` on the wire).
pub type Date = NaiveDate;

/// What a slice did in a period: how many customers were reachable at its end (users),
/// how many of them ordered in it (buyers), their orders and their GMV in fen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
pub struct Figures {
    pub users: u64,
    pub buyers: u64,
    pub orders: u64,
    /// Gross merchandise value in fen (net of refunds when refunds are configured, so
    /// it can be zero or below with orders).
    pub gmv_fen: Fen,
}

/// Figures that cannot describe one population of customers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FiguresError {
    #[error("{buyers} buyers among {users} users: buyers are users who ordered")]
    MoreBuyersThanUsers { users: u64, buyers: u64 },
    #[error("{orders} orders from {buyers} buyers: every buyer has an order, and every order a buyer")]
    OrdersWithoutBuyers { buyers: u64, orders: u64 },
    #[error("a GMV of {gmv_fen} fen without orders")]
    GmvWithoutOrders { gmv_fen: Fen },
}

impl Figures {
    /// Checks that the figures can describe one population: buyers are among the users,
    /// each buyer has at least one order, and GMV comes only with orders.
    pub fn check(&self) -> Result<(), FiguresError> {
        if self.buyers > self.users {
            return Err(FiguresError::MoreBuyersThanUsers { users: self.users, buyers: self.buyers });
        }
        if self.orders < self.buyers || (self.orders > 0 && self.buyers == 0) {
            return Err(FiguresError::OrdersWithoutBuyers { buyers: self.buyers, orders: self.orders });
        }
        if self.orders == 0 && self.gmv_fen != 0 {
            return Err(FiguresError::GmvWithoutOrders { gmv_fen: self.gmv_fen });
        }
        Ok(())
    }

    /// buyers / users; 0 when there are no users.
    pub fn conversion(&self) -> f64 {
        ratio(self.buyers as f64, self.users as f64)
    }

    /// Average order value in fen, GMV / orders; 0 when there are no orders.
    pub fn aov_fen(&self) -> f64 {
        ratio(self.gmv_fen as f64, self.orders as f64)
    }

    /// Orders per buyer, orders / buyers; 0 when there are no buyers.
    pub fn frequency(&self) -> f64 {
        ratio(self.orders as f64, self.buyers as f64)
    }

    /// users × conversion × aov × frequency, multiplied in that order and rounded to the
    /// fen. For consistent figures ([`Figures::check`]) this is `gmv_fen` exactly:
    /// with no users there are no buyers, orders or GMV, and every factor is 0; with
    /// users but no orders conversion is 0 and so is GMV; otherwise the product is GMV
    /// up to six roundings of at most half an ulp each, a relative error below 7×10⁻¹⁶,
    /// which stays under half a fen for any |GMV| below 7×10¹⁴ fen (¥7 trillion; the
    /// tests go to 10¹⁴).
    pub fn identity_gmv_fen(&self) -> Fen {
        (self.users as f64 * self.conversion() * self.aov_fen() * self.frequency()).round() as Fen
    }

    /// Whether users × conversion × aov × frequency gives back GMV to the fen.
    pub fn identity_holds(&self) -> bool {
        self.identity_gmv_fen() == self.gmv_fen
    }

    /// The figures with their ratios, as the API shows them.
    pub fn report(&self) -> FiguresReport {
        FiguresReport {
            users: self.users,
            buyers: self.buyers,
            orders: self.orders,
            gmv_fen: self.gmv_fen,
            conversion: self.conversion(),
            aov_fen: self.aov_fen(),
            frequency: self.frequency(),
            identity_gmv_fen: self.identity_gmv_fen(),
        }
    }

    /// The value of one factor of the identity.
    pub fn factor(&self, f: Factor) -> f64 {
        match f {
            Factor::Users => self.users as f64,
            Factor::Conversion => self.conversion(),
            Factor::Aov => self.aov_fen(),
            Factor::Frequency => self.frequency(),
        }
    }
}

fn ratio(a: f64, b: f64) -> f64 {
    if b == 0.0 { 0.0 } else { a / b }
}

/// [`Figures`] with their ratios.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FiguresReport {
    pub users: u64,
    pub buyers: u64,
    pub orders: u64,
    pub gmv_fen: Fen,
    /// buyers / users (0 without users).
    pub conversion: f64,
    /// GMV / orders, in fen (0 without orders).
    pub aov_fen: f64,
    /// orders / buyers (0 without buyers).
    pub frequency: f64,
    /// users × conversion × aov_fen × frequency rounded to the fen: always `gmv_fen`.
    pub identity_gmv_fen: Fen,
}

/// The four factors of GMV, in the order of the identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Factor {
    Users,
    Conversion,
    Aov,
    Frequency,
}

impl Factor {
    pub const ALL: [Factor; 4] = [Factor::Users, Factor::Conversion, Factor::Aov, Factor::Frequency];

    pub fn as_str(self) -> &'static str {
        match self {
            Factor::Users => "users",
            Factor::Conversion => "conversion",
            Factor::Aov => "aov",
            Factor::Frequency => "frequency",
        }
    }
}

/// The logarithmic mean L(a, b) = (a − b) / (ln a − ln b), with L(a, a) = a; for
/// positive a and b. It lies between the geometric and the arithmetic mean.
pub fn log_mean(a: f64, b: f64) -> f64 {
    if a == b { a } else { (a - b) / ln_ratio(a, b) }
}

/// ln(a / b) for positive a and b, accurate also when a and b are close (where
/// `(a / b).ln()` would lose digits to the rounding of a / b near 1).
fn ln_ratio(a: f64, b: f64) -> f64 {
    if a == b {
        0.0
    } else if (a - b).abs() < b / 2.0 {
        ((a - b) / b).ln_1p()
    } else {
        (a / b).ln()
    }
}

/// How a decomposition was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Basis {
    /// Additive LMDI-I: GMV is positive in both periods.
    Lmdi,
    /// GMV is zero in one period or both, where logarithms are undefined: the whole
    /// change goes to the factor that is zero (see [`Lmdi::between`]).
    ZeroValue,
    /// No decomposition: see the note (GMV below zero, or figures that do not hold together).
    Unavailable,
}

/// One factor's share of the change in GMV.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Contribution {
    pub factor: Factor,
    /// The factor's value in the previous and the current period.
    pub previous: f64,
    pub current: f64,
    /// The contribution in fen, unrounded.
    pub value: f64,
    /// The contribution rounded to the fen; the four add up exactly to `change_fen`.
    pub fen: Fen,
}

/// The change in GMV from one period to the next, decomposed into the four factors
/// with the additive log-mean Divisia index (LMDI-I, Ang 2004):
///
/// ```text
/// ΔGMV = Σ_f L(GMV₁, GMV₀) · ln(f₁ / f₀)     f ∈ {users, conversion, aov, frequency}
/// ```
///
/// exact because the logs of the factor ratios add up to ln(GMV₁ / GMV₀) and
/// L(GMV₁, GMV₀) · ln(GMV₁ / GMV₀) = GMV₁ − GMV₀; there is no residual term.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Lmdi {
    pub previous_gmv_fen: Fen,
    pub current_gmv_fen: Fen,
    /// current − previous.
    pub change_fen: Fen,
    pub basis: Basis,
    /// Why the basis is not `lmdi`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Users, conversion, aov, frequency, in that order; empty when unavailable.
    pub contributions: Vec<Contribution>,
}

impl Lmdi {
    /// Decomposes the change from `previous` to `current`.
    ///
    /// Logarithms need positive values, so:
    ///
    /// - GMV positive in both periods: LMDI-I.
    /// - GMV zero in both: no change, every contribution 0 (basis `zero_value`).
    /// - GMV zero in one period and positive in the other: the whole change goes to the
    ///   first factor of the identity that is zero in the zero period: `users` when
    ///   that period had no users, else `conversion` (users but no buyers), else `aov`
    ///   (orders whose refunds cancelled them out). This is LMDI's own limit as that
    ///   factor tends to zero (Ang & Liu 2007): its log ratio grows without bound while
    ///   the log-mean weight shrinks to zero, and their product tends to the whole
    ///   change. The factors after it are 0 / 0 in that period, undefined, and are
    ///   taken as unchanged (contribution 0).
    /// - GMV below zero in either period (refunds exceeding sales), or figures that do
    ///   not hold together ([`Figures::check`]): unavailable, with a note saying why.
    pub fn between(previous: &Figures, current: &Figures) -> Lmdi {
        let change_fen = current.gmv_fen - previous.gmv_fen;
        let mut out = Lmdi {
            previous_gmv_fen: previous.gmv_fen,
            current_gmv_fen: current.gmv_fen,
            change_fen,
            basis: Basis::Unavailable,
            note: None,
            contributions: Vec::new(),
        };
        for (which, f) in [("previous", previous), ("current", current)] {
            if let Err(e) = f.check() {
                out.note = Some(format!("the {which} period's figures do not hold together: {e}"));
                return out;
            }
        }
        if previous.gmv_fen < 0 || current.gmv_fen < 0 {
            let which = if previous.gmv_fen < 0 { "previous" } else { "current" };
            out.note = Some(format!("GMV is below zero in the {which} period (refunds exceed sales); the log-mean decomposition needs positive GMV"));
            return out;
        }
        let contribution =
            |factor: Factor, value: f64, fen: Fen| Contribution { factor, previous: previous.factor(factor), current: current.factor(factor), value, fen };
        if previous.gmv_fen == 0 || current.gmv_fen == 0 {
            let zero = if previous.gmv_fen == 0 { previous } else { current };
            let to = if zero.users == 0 {
                Factor::Users
            } else if zero.buyers == 0 {
                Factor::Conversion
            } else {
                Factor::Aov
            };
            out.basis = Basis::ZeroValue;
            out.note = Some(if change_fen == 0 {
                "no GMV in either period".to_string()
            } else {
                let which = if previous.gmv_fen == 0 { "previous" } else { "current" };
                format!("no GMV in the {which} period, where {} is 0: the whole change is attributed to it", to.as_str())
            });
            out.contributions =
                Factor::ALL.iter().map(|&f| if f == to { contribution(f, change_fen as f64, change_fen) } else { contribution(f, 0.0, 0) }).collect();
            return out;
        }
        // The log ratios from the counts themselves, so that they add up to ln(GMV₁/GMV₀)
        // as closely as floating point allows: ln c = ln b − ln u, ln a = ln g − ln o,
        // ln f = ln o − ln b.
        let lr = |a: f64, b: f64| ln_ratio(a, b);
        let ln_u = lr(current.users as f64, previous.users as f64);
        let ln_b = lr(current.buyers as f64, previous.buyers as f64);
        let ln_o = lr(current.orders as f64, previous.orders as f64);
        let ln_g = lr(current.gmv_fen as f64, previous.gmv_fen as f64);
        let logs = [ln_u, ln_b - ln_u, ln_g - ln_o, ln_o - ln_b];
        // L(GMV₁, GMV₀) from the same ln_g, so that weight × ln_g is the change itself.
        let weight = if ln_g == 0.0 { current.gmv_fen as f64 } else { change_fen as f64 / ln_g };
        let values: Vec<f64> = logs.iter().map(|l| weight * l).collect();
        let mut fen: Vec<Fen> = values.iter().map(|v| v.round() as Fen).collect();
        // Rounding each contribution to the fen can leave the four a fen or two (at most
        // four halves, plus floating-point noise) off the change. The remainder goes to
        // the largest contribution (by magnitude; the first of equals), where it matters
        // least, so the rounded contributions add up to the change exactly.
        let remainder = change_fen - fen.iter().sum::<Fen>();
        let largest = (0..4).fold(0, |best, i| if values[i].abs() > values[best].abs() { i } else { best });
        fen[largest] += remainder;
        out.basis = Basis::Lmdi;
        out.contributions = Factor::ALL.iter().enumerate().map(|(i, &f)| contribution(f, values[i], fen[i])).collect();
        out
    }

    /// One factor's contribution (none when the decomposition is unavailable).
    pub fn get(&self, factor: Factor) -> Option<&Contribution> {
        self.contributions.iter().find(|c| c.factor == factor)
    }

    /// The unrounded contributions' sum: the change, to floating-point tolerance.
    pub fn sum(&self) -> f64 {
        self.contributions.iter().map(|c| c.value).sum()
    }

    /// The rounded contributions' sum: the change exactly (when available).
    pub fn sum_fen(&self) -> Fen {
        self.contributions.iter().map(|c| c.fen).sum()
    }
}

/// A reporting period: whole days `from` to `to`, both included, in a time zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    pub from: Date,
    pub to: Date,
    pub zone: Tz,
}

/// A period that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeriodError {
    #[error("{field}: {value:?} is not a date between 1970 and 2200; write YYYY-MM-DD, e.g. 2026-05-01")]
    BadDate { field: &'static str, value: String },
    #[error("to ({to}) is before from ({from})")]
    Reversed { from: Date, to: Date },
    #[error("the period is {days} days long; at most {max} days")]
    TooLong { days: i64, max: i64 },
    #[error("{0:?} is not an IANA time zone (e.g. Asia/Shanghai)")]
    BadZone(String),
}

impl Period {
    /// The longest period a report covers (two years and a day: a leap year's worth twice over).
    pub const MAX_DAYS: i64 = 731;

    pub fn new(from: Date, to: Date, zone: Tz) -> Result<Period, PeriodError> {
        if to < from {
            return Err(PeriodError::Reversed { from, to });
        }
        let p = Period { from, to, zone };
        if p.days() > Period::MAX_DAYS {
            return Err(PeriodError::TooLong { days: p.days(), max: Period::MAX_DAYS });
        }
        Ok(p)
    }

    /// Reads `YYYY-MM-DD` dates and an IANA zone name, with errors that say which is wrong.
    pub fn parse(from: &str, to: &str, zone: &str) -> Result<Period, PeriodError> {
        Period::new(parse_day("from", from)?, parse_day("to", to)?, parse_zone(zone)?)
    }

    /// Days in the period (at least 1).
    pub fn days(&self) -> i64 {
        (self.to - self.from).num_days() + 1
    }

    /// The first instant of the period: midnight starting `from` in the zone.
    pub fn start(&self) -> Timestamp {
        midnight(self.from, self.zone)
    }

    /// The first instant after the period: midnight ending `to` in the zone (exclusive).
    pub fn end(&self) -> Timestamp {
        midnight(self.to + Duration::days(1), self.zone)
    }

    /// The period of the same length that ends the day before this one starts.
    pub fn previous(&self) -> Period {
        let days = Duration::days(self.days());
        Period { from: self.from - days, to: self.to - days, zone: self.zone }
    }

    /// Each day with its first instant and the first instant after it.
    pub fn day_bounds(&self) -> Vec<(Date, Timestamp, Timestamp)> {
        self.from.iter_days().take_while(|d| *d <= self.to).map(|d| (d, midnight(d, self.zone), midnight(d + Duration::days(1), self.zone))).collect()
    }

    pub fn report(&self) -> PeriodReport {
        PeriodReport { from: self.from, to: self.to, days: self.days(), time_zone: self.zone.name().to_string(), start: self.start(), end: self.end() }
    }
}

/// A `YYYY-MM-DD` date; the error names `field`.
pub fn parse_day(field: &'static str, value: &str) -> Result<Date, PeriodError> {
    let day = NaiveDate::parse_from_str(value.trim(), "%Y-%m-%d").map_err(|_| PeriodError::BadDate { field, value: value.to_string() })?;
    // Reports cover years a brand has data for; far-off years would overflow the date
    // arithmetic of the previous period (chrono's range ends near ±262,000).
    use chrono::Datelike;
    if !(1970..=2200).contains(&day.year()) {
        return Err(PeriodError::BadDate { field, value: value.to_string() });
    }
    Ok(day)
}

/// An IANA time zone by name.
pub fn parse_zone(name: &str) -> Result<Tz, PeriodError> {
    name.parse::<Tz>().map_err(|_| PeriodError::BadZone(name.to_string()))
}

/// The first instant of a day in a zone (the earliest, where a clock change repeats
/// midnight; the first existing instant after it, where one skips it).
fn midnight(d: Date, zone: Tz) -> Timestamp {
    let naive = d.and_hms_opt(0, 0, 0).expect("midnight exists");
    let local =
        zone.from_local_datetime(&naive).earliest().or_else(|| (1..=4).find_map(|h| zone.from_local_datetime(&(naive + Duration::hours(h))).earliest()));
    Timestamp(local.map_or_else(|| naive.and_utc().timestamp_millis(), |t| t.timestamp_millis()))
}

/// A [`Period`] as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PeriodReport {
    #[schema(value_type = String, format = Date)]
    pub from: Date,
    #[schema(value_type = String, format = Date)]
    pub to: Date,
    pub days: i64,
    pub time_zone: String,
    /// The first instant of the period.
    pub start: Timestamp,
    /// The first instant after it.
    pub end: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn fig(users: u64, buyers: u64, orders: u64, gmv_fen: Fen) -> Figures {
        Figures { users, buyers, orders, gmv_fen }
    }

    #[test]
    fn ratios_and_the_identity_to_the_fen() {
        let f = fig(1000, 137, 211, 6_123_457);
        assert!((f.conversion() - 0.137).abs() < 1e-15);
        assert!((f.aov_fen() - 6_123_457.0 / 211.0).abs() < 1e-9);
        assert!((f.frequency() - 211.0 / 137.0).abs() < 1e-15);
        assert_eq!(f.identity_gmv_fen(), 6_123_457);
        assert!(f.identity_holds());
        let r = f.report();
        assert_eq!((r.users, r.buyers, r.orders, r.gmv_fen, r.identity_gmv_fen), (1000, 137, 211, 6_123_457, 6_123_457));
    }

    #[test]
    fn the_identity_holds_with_zeros() {
        // No users: nothing else either, and every factor is 0.
        let none = fig(0, 0, 0, 0);
        assert_eq!((none.conversion(), none.aov_fen(), none.frequency()), (0.0, 0.0, 0.0));
        assert!(none.identity_holds());
        // Users, no orders.
        let idle = fig(50, 0, 0, 0);
        assert_eq!((idle.conversion(), idle.aov_fen(), idle.frequency()), (0.0, 0.0, 0.0));
        assert!(idle.identity_holds());
        // Orders whose refunds cancel them out: AOV 0, the product 0.
        let refunded = fig(10, 2, 3, 0);
        assert_eq!(refunded.aov_fen(), 0.0);
        assert!(refunded.identity_holds());
        // Refunds beyond sales: a negative GMV still comes back to the fen.
        assert!(fig(10, 2, 3, -4_501).identity_holds());
    }

    #[test]
    fn figures_that_do_not_hold_together_are_named() {
        assert!(matches!(fig(1, 2, 2, 10).check(), Err(FiguresError::MoreBuyersThanUsers { .. })));
        assert!(matches!(fig(5, 2, 1, 10).check(), Err(FiguresError::OrdersWithoutBuyers { .. })));
        assert!(matches!(fig(5, 0, 1, 10).check(), Err(FiguresError::OrdersWithoutBuyers { .. })));
        assert!(matches!(fig(5, 0, 0, 10).check(), Err(FiguresError::GmvWithoutOrders { .. })));
        assert_eq!(fig(5, 2, 3, 10).check(), Ok(()));
        let unavailable = Lmdi::between(&fig(5, 0, 0, 10), &fig(5, 2, 3, 10));
        assert_eq!(unavailable.basis, Basis::Unavailable);
        assert!(unavailable.note.unwrap().contains("previous period's figures"), "names the period");
        assert!(unavailable.contributions.is_empty());
    }

    #[test]
    fn log_mean_is_between_the_geometric_and_arithmetic_means() {
        assert_eq!(log_mean(7.0, 7.0), 7.0);
        assert_eq!(log_mean(2.0, 1.0), 1.0 / 2f64.ln());
        assert_eq!(log_mean(2.0, 1.0), log_mean(1.0, 2.0));
        for (a, b) in [(1.0, 100.0), (3.0, 3.000_000_001), (1e12, 1e3)] {
            let l = log_mean(a, b);
            assert!(l >= (a * b).sqrt() * (1.0 - 1e-12) && l <= (a + b) / 2.0 * (1.0 + 1e-12), "L({a}, {b}) = {l}");
        }
        // Close values: no loss of digits to the rounding of a / b.
        let l = log_mean(1.0 + 1e-12, 1.0);
        assert!((l - (1.0 + 0.5e-12)).abs() < 1e-15, "{l}");
    }

    #[test]
    fn lmdi_splits_a_change_into_the_four_factors() {
        // Users up 20%, conversion down, AOV up, frequency the same.
        let prev = fig(1000, 100, 150, 1_500_000);
        let cur = fig(1200, 108, 162, 1_782_000);
        let d = Lmdi::between(&prev, &cur);
        assert_eq!(d.basis, Basis::Lmdi);
        assert_eq!(d.note, None);
        assert_eq!(d.change_fen, 282_000);
        assert_eq!(d.sum_fen(), 282_000);
        assert!((d.sum() - 282_000.0).abs() < 1e-6, "{}", d.sum());
        let l = log_mean(1_782_000.0, 1_500_000.0);
        let users = d.get(Factor::Users).unwrap();
        assert!((users.value - l * 1.2f64.ln()).abs() < 1e-6);
        assert_eq!((users.previous, users.current), (1000.0, 1200.0));
        assert!(d.get(Factor::Conversion).unwrap().value < 0.0, "conversion fell from 10% to 9%");
        assert!(d.get(Factor::Aov).unwrap().value > 0.0, "AOV rose from ¥100 to ¥110");
        assert!(d.get(Factor::Frequency).unwrap().value.abs() < 1e-6, "frequency stayed at 1.5");
        let order: Vec<Factor> = d.contributions.iter().map(|c| c.factor).collect();
        assert_eq!(order, Factor::ALL);
    }

    #[test]
    fn lmdi_of_no_change_and_of_offsetting_factors() {
        let same = fig(10, 5, 6, 600);
        let d = Lmdi::between(&same, &same);
        assert_eq!((d.basis, d.change_fen, d.sum_fen()), (Basis::Lmdi, 0, 0));
        assert!(d.contributions.iter().all(|c| c.value == 0.0 && c.fen == 0));
        // Twice the users at half the conversion: the same GMV, two opposite contributions.
        let d = Lmdi::between(&fig(10, 5, 6, 600), &fig(20, 5, 6, 600));
        assert_eq!(d.sum_fen(), 0);
        assert!((d.get(Factor::Users).unwrap().value + d.get(Factor::Conversion).unwrap().value).abs() < 1e-9);
        assert_eq!(d.get(Factor::Users).unwrap().fen, -d.get(Factor::Conversion).unwrap().fen);
    }

    #[test]
    fn the_rounding_remainder_goes_to_the_largest_contribution() {
        // Find a pair whose four rounded contributions miss the change, and check the
        // remainder landed on the largest one.
        let mut seen = false;
        for g in 1000..1400 {
            let prev = fig(7, 3, 5, 1001);
            let cur = fig(9, 4, 7, g);
            let d = Lmdi::between(&prev, &cur);
            assert_eq!(d.sum_fen(), d.change_fen);
            let naive: Fen = d.contributions.iter().map(|c| c.value.round() as Fen).sum();
            if naive != d.change_fen {
                seen = true;
                let largest = d.contributions.iter().max_by(|a, b| a.value.abs().total_cmp(&b.value.abs())).unwrap();
                assert_ne!(largest.fen, largest.value.round() as Fen, "the remainder is on the largest");
                for c in d.contributions.iter().filter(|c| c.factor != largest.factor) {
                    assert_eq!(c.fen, c.value.round() as Fen);
                }
            }
        }
        assert!(seen, "some pair needs the remainder");
    }

    #[test]
    fn zero_gmv_goes_to_the_factor_that_is_zero() {
        // A slice with no users before: all to users.
        let d = Lmdi::between(&fig(0, 0, 0, 0), &fig(40, 4, 5, 5_000));
        assert_eq!(d.basis, Basis::ZeroValue);
        assert_eq!(d.get(Factor::Users).unwrap().fen, 5_000);
        assert_eq!(d.sum_fen(), 5_000);
        assert!(d.note.as_deref().unwrap().contains("users"));
        // Users but nobody bought: all to conversion.
        let d = Lmdi::between(&fig(40, 0, 0, 0), &fig(40, 4, 5, 5_000));
        assert_eq!((d.get(Factor::Conversion).unwrap().fen, d.get(Factor::Users).unwrap().fen), (5_000, 0));
        // And back down to nothing this period.
        let d = Lmdi::between(&fig(40, 4, 5, 5_000), &fig(38, 0, 0, 0));
        assert_eq!(d.get(Factor::Conversion).unwrap().fen, -5_000);
        assert_eq!(d.sum(), -5_000.0);
        assert!(d.note.as_deref().unwrap().contains("current period"));
        // Orders refunded to nothing: all to AOV.
        let d = Lmdi::between(&fig(40, 4, 5, 5_000), &fig(40, 2, 2, 0));
        assert_eq!(d.get(Factor::Aov).unwrap().fen, -5_000);
        // Nothing in either.
        let d = Lmdi::between(&fig(3, 0, 0, 0), &fig(0, 0, 0, 0));
        assert_eq!((d.basis, d.change_fen, d.sum_fen()), (Basis::ZeroValue, 0, 0));
        assert_eq!(d.note.as_deref(), Some("no GMV in either period"));
    }

    #[test]
    fn negative_gmv_is_unavailable_with_a_reason() {
        let d = Lmdi::between(&fig(10, 2, 3, -100), &fig(10, 2, 3, 500));
        assert_eq!(d.basis, Basis::Unavailable);
        assert!(d.note.as_deref().unwrap().contains("below zero in the previous period"));
        assert!(d.contributions.is_empty());
        assert_eq!(d.change_fen, 600);
    }

    #[test]
    fn periods_in_a_zone() {
        let p = Period::parse("2026-05-01", "2026-05-31", "Asia/Shanghai").unwrap();
        assert_eq!(p.days(), 31);
        // Midnight in Shanghai is 16:00 UTC the day before.
        assert_eq!(p.start().to_rfc3339(), "2026-04-30T16:00:00.000Z");
        assert_eq!(p.end().to_rfc3339(), "2026-05-31T16:00:00.000Z");
        let prev = p.previous();
        assert_eq!((prev.from.to_string(), prev.to.to_string()), ("2026-03-31".to_string(), "2026-04-30".to_string()));
        assert_eq!(prev.end(), p.start());
        let days = p.day_bounds();
        assert_eq!(days.len(), 31);
        assert_eq!(days[0].1, p.start());
        assert_eq!(days[30].2, p.end());
        assert!(days.windows(2).all(|w| w[0].2 == w[1].1));
        let one = Period::parse("2026-05-01", "2026-05-01", "Asia/Shanghai").unwrap();
        assert_eq!((one.days(), one.end().0 - one.start().0), (1, 86_400_000));
        // A day with a clock change has its real length.
        let dst = Period::parse("2026-03-29", "2026-03-29", "Europe/London").unwrap();
        assert_eq!(dst.end().0 - dst.start().0, 23 * 3_600_000);
    }

    #[test]
    fn bad_periods_say_what_is_wrong() {
        let e = Period::parse("2026-02-30", "2026-03-01", "Asia/Shanghai").unwrap_err();
        assert_eq!(e.to_string(), "from: \"2026-02-30\" is not a date between 1970 and 2200; write YYYY-MM-DD, e.g. 2026-05-01");
        let e = Period::parse("2026-03-01", "yesterday", "Asia/Shanghai").unwrap_err();
        assert!(e.to_string().starts_with("to: \"yesterday\""), "{e}");
        let e = Period::parse("2026-03-02", "2026-03-01", "Asia/Shanghai").unwrap_err();
        assert_eq!(e.to_string(), "to (2026-03-01) is before from (2026-03-02)");
        assert!(matches!(Period::parse("2020-01-01", "2026-01-01", "Asia/Shanghai"), Err(PeriodError::TooLong { .. })));
        assert!(matches!(Period::parse("2026-01-01", "2026-01-02", "Mars/Olympus"), Err(PeriodError::BadZone(_))));
    }

    /// Figures that hold together, GMV from 0 to 10¹⁴ fen.
    fn figures() -> impl Strategy<Value = Figures> {
        (0u64..1_000_000_000, 0u64..1_000_000, 0u64..50, 0i64..100_000_000_000_000, 0u8..4).prop_map(|(users, buyers, extra, gmv, zero)| {
            let buyers = buyers.min(users);
            let orders = if buyers == 0 { 0 } else { buyers * (1 + extra % 7) + extra };
            let gmv_fen = if orders == 0 || zero == 0 { 0 } else { gmv };
            Figures { users, buyers, orders, gmv_fen }
        })
    }

    proptest! {
        #[test]
        fn the_identity_reproduces_gmv_to_the_fen(f in figures()) {
            prop_assert_eq!(f.identity_gmv_fen(), f.gmv_fen, "{:?}", f);
        }

        #[test]
        fn contributions_always_add_up_to_the_change(prev in figures(), cur in figures()) {
            let d = Lmdi::between(&prev, &cur);
            prop_assert_ne!(d.basis, Basis::Unavailable);
            prop_assert_eq!(d.change_fen, cur.gmv_fen - prev.gmv_fen);
            prop_assert_eq!(d.sum_fen(), d.change_fen, "{:?}", d);
            let scale = (prev.gmv_fen.max(cur.gmv_fen) as f64).max(1.0);
            prop_assert!((d.sum() - d.change_fen as f64).abs() <= 1e-9 * scale, "{} vs {}", d.sum(), d.change_fen);
            // Each rounded contribution is its value rounded, except the one that took
            // the remainder, which is off by at most a few fen.
            for c in &d.contributions {
                prop_assert!((c.fen as f64 - c.value).abs() <= 3.0, "{:?}", c);
            }
        }
    }
}
