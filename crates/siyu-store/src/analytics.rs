//! The Overview page's analytics: GMV and its four factors for a slice and a period,
//! private-domain customers by day, block rate, repurchase rate and private vs
//! non-private ARPU. The definitions are documented once, here and in
//! `docs/analytics.md`; the configurable ones are [`Definitions`]
//! (`DATA_DIR/analytics.json`). The arithmetic (the identity, LMDI, periods) is
//! [`siyu_core::analytics`].
//!
//! # The definitions
//!
//! - **Private-domain customer at an instant** (a "contact"): a customer with at least
//!   one WeCom relationship (`staff_customers`) active at that instant. A relationship
//!   is active from its `added_at` until its `removed_at` (deleted or transferred), or
//!   on if its status is `active`; a removed relationship without a removal time is
//!   taken as never active. A customer's relationships are merged into spans: a
//!   transfer that ends one at the instant another starts leaves no gap.
//!   "At the end of a day" (or of a period) means after every event before midnight,
//!   so a relationship ended exactly at midnight counts for the day before.
//! - **Slice**: `city` is the customer's `city` trait (its current value: traits keep
//!   no history). `channel` is the channel the customer was acquired through: the
//!   channel of their earliest relationship, read from its `state` (`STORE-channel`,
//!   as Siyu's live QR codes make it, or the whole state when it has no `-`), else from
//!   the `channel` property of that relationship's `Contact Added` event. `store` keeps
//!   only the relationships with staff of that store (the guide's store as the staff
//!   record says now, else the store named in the state or the `Contact Added` event's
//!   `store_id`): in a store's slice a customer is a contact while they have a guide
//!   there, so a transfer to another store's guide is a loss for one and a gain for
//!   the other.
//! - **users**: customers of the slice reachable at the period's end
//!   ([`Reachability`]; by default: contacts at the period's end).
//! - **buyers**: users with at least one order in the period. **orders**: the buyers'
//!   order events (`Definitions::order_event`) in the period. **GMV**: the sum of those
//!   orders' `revenue_property` in fen (a missing or non-numeric value counts as 0, the
//!   order still counts), less the buyers' refunds in the period when `refund_event`
//!   is set. Orders count whatever store or channel they came through: the slice
//!   chooses the customers, not the orders.
//! - **contacts by day**: per day of the period (in the definitions' time zone),
//!   `added` = customers who became contacts that day, `lost` = customers who stopped
//!   being contacts that day (a customer who left and came back the same day counts
//!   each time), `net` = added − lost, `total` = contacts at the end of the day; so
//!   each day's total is the day before's plus its net.
//! - **block rate**: of the customers who were contacts at some time in the period
//!   (at its start, or added during it), the share who deleted a guide of the slice in
//!   it (a `Contact Deleted` event whose `initiator` is not `staff`; a deletion by the
//!   guide, a transfer or a resignation is not a block).
//! - **repurchase rate**: of the period's buyers, the share with two or more orders in
//!   the period.
//! - **ARPU, private vs the rest**: GMV in the period (as above: orders less the
//!   buyers' refunds) per customer. Private: the slice's contacts at the period's end.
//!   The rest: customers with no active WeCom relationship with anyone at the period's
//!   end who existed by then (their profile was created, or has an event dated, before
//!   the end) or ordered in the period, with the slice's city; with a channel, those
//!   acquired through it; a store slice does not narrow the rest (they have no guide).

use std::collections::{HashMap, HashSet};
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use siyu_core::analytics::{Date, Figures, FiguresReport, Lmdi, Period, PeriodError, PeriodReport, parse_zone};
use siyu_core::rule::semantics::measure_value;
use siyu_core::{Fen, ProfileId, Timestamp};
use utoipa::ToSchema;

use crate::sql::Db;
use crate::{StoreError, params};

/// What counts as an order, as revenue and as reachable, and which zone days are in:
/// `DATA_DIR/analytics.json` overrides any of these defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Definitions {
    /// The event that is an order. Default `Order Completed`.
    pub order_event: String,
    /// The order (and refund) property holding revenue in fen. Default `revenue_fen`.
    pub revenue_property: String,
    /// An event whose `revenue_property` is subtracted from GMV (the buyer's refunds in
    /// the period). Default none: GMV is gross, as the name says.
    pub refund_event: Option<String>,
    /// Who counts as a user. Default `active_contact`.
    pub reachability: Reachability,
    /// The zone days and periods are in (IANA name). Default `Asia/Shanghai`.
    pub time_zone: String,
}

/// Who counts as reachable in the private domain at an instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Reachability {
    /// A customer with an active WeCom relationship (in the slice) at that instant.
    #[default]
    ActiveContact,
    /// A customer who had added a guide (in the slice) by then, whether or not they
    /// deleted them since: the whole private-domain base.
    EverAdded,
}

impl Default for Definitions {
    fn default() -> Definitions {
        Definitions {
            order_event: "Order Completed".into(),
            revenue_property: "revenue_fen".into(),
            refund_event: None,
            reachability: Reachability::ActiveContact,
            time_zone: "Asia/Shanghai".into(),
        }
    }
}

impl Definitions {
    /// The file in the data directory the definitions are read from.
    pub const FILE: &'static str = "analytics.json";

    /// `DATA_DIR/analytics.json` over the defaults; the defaults when there is no such
    /// file. A file that cannot be read, an unknown key or a bad value is an error
    /// that names the file.
    pub fn load(data_dir: &Path) -> Result<Definitions, StoreError> {
        let path = data_dir.join(Definitions::FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Definitions::default()),
            Err(e) => return Err(StoreError::Config(format!("reading {}: {e}", path.display()))),
        };
        let defs: Definitions =
            serde_json::from_str(&text).map_err(|e| StoreError::Config(format!("reading analytics definitions from {}: {e}", path.display())))?;
        defs.check().map_err(|e| StoreError::Config(format!("analytics definitions in {}: {e}", path.display())))?;
        Ok(defs)
    }

    /// Checks the values: names not empty, refunds not the orders themselves, a real zone.
    pub fn check(&self) -> Result<(), String> {
        if self.order_event.trim().is_empty() {
            return Err("order_event is empty".into());
        }
        if self.revenue_property.trim().is_empty() {
            return Err("revenue_property is empty".into());
        }
        if self.refund_event.as_deref().is_some_and(|r| r.trim().is_empty() || r == self.order_event) {
            return Err("refund_event must be another event than order_event (or null)".into());
        }
        parse_zone(&self.time_zone).map_err(|e| format!("time_zone: {e}"))?;
        Ok(())
    }

    /// The period `from`..=`to` (`YYYY-MM-DD`) in the definitions' zone.
    pub fn period(&self, from: &str, to: &str) -> Result<Period, PeriodError> {
        Period::parse(from, to, &self.time_zone)
    }
}

/// Which customers a report is about; every part optional (see the module's definitions).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Slice {
    /// The customer's `city` trait.
    pub city: Option<String>,
    /// Only relationships with staff of this store.
    pub store: Option<String>,
    /// The channel the customer was acquired through.
    pub channel: Option<String>,
}

/// Private-domain customers on one day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DayContacts {
    #[schema(value_type = String, format = Date)]
    pub day: Date,
    /// Customers who became contacts that day.
    pub added: u64,
    /// Customers who stopped being contacts that day.
    pub lost: u64,
    /// added − lost.
    pub net: i64,
    /// Contacts at the end of the day.
    pub total: u64,
}

/// Private-domain customers over a period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Contacts {
    /// Contacts at the start of the period.
    pub at_start: u64,
    pub added: u64,
    pub lost: u64,
    pub net: i64,
    /// Contacts at the end of the period: at_start + net.
    pub at_end: u64,
    pub by_day: Vec<DayContacts>,
}

/// Customers who deleted their guide, among the period's contacts.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BlockRate {
    /// Customers who were contacts at some time in the period (at its start, or added in it).
    pub contacts: u64,
    /// Of them, those who deleted a guide of the slice in the period.
    pub blocked: u64,
    /// blocked / contacts (0 without contacts).
    pub rate: f64,
}

/// Buyers who bought again within the period.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Repurchase {
    pub buyers: u64,
    /// Buyers with two or more orders in the period.
    pub repeat_buyers: u64,
    /// repeat_buyers / buyers (0 without buyers).
    pub rate: f64,
}

/// One group's GMV per customer.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ArpuGroup {
    pub customers: u64,
    pub gmv_fen: Fen,
    /// gmv_fen / customers (0 without customers).
    pub arpu_fen: f64,
}

/// ARPU of private-domain customers against everyone else.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Arpu {
    /// The slice's contacts at the period's end.
    pub private: ArpuGroup,
    /// Customers with no active WeCom relationship at the period's end.
    pub rest: ArpuGroup,
}

/// GMV for a period and the one before it, and the change by factor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Gmv {
    pub period: PeriodReport,
    /// The same number of days, ending the day before `period` starts.
    pub previous_period: PeriodReport,
    pub current: FiguresReport,
    pub previous: FiguresReport,
    /// The change in GMV from the previous period, by factor.
    pub decomposition: Lmdi,
}

/// Block rate, repurchase rate and ARPU for a period.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Rates {
    pub block_rate: BlockRate,
    pub repurchase: Repurchase,
    pub arpu: Arpu,
}

/// Everything on the Overview page, read in one snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Overview {
    pub period: PeriodReport,
    /// The same number of days, ending the day before `period` starts.
    pub previous_period: PeriodReport,
    pub slice: Slice,
    pub definitions: Definitions,
    pub current: FiguresReport,
    pub previous: FiguresReport,
    /// The change in GMV from the previous period, by factor.
    pub decomposition: Lmdi,
    pub contacts: Contacts,
    pub block_rate: BlockRate,
    pub repurchase: Repurchase,
    pub arpu: Arpu,
}

fn rate(part: u64, whole: u64) -> f64 {
    if whole == 0 { 0.0 } else { part as f64 / whole as f64 }
}

// ---------- public functions, one per figure ----------

/// The slice's [`Figures`] for the period (users at its end; buyers, orders and GMV in it).
pub async fn figures(db: &mut dyn Db, defs: &Definitions, slice: &Slice, period: &Period) -> Result<Figures, StoreError> {
    let links = Links::load(db, slice).await?;
    let orders = Orders::load(db, defs, period.start(), period.end()).await?;
    Ok(links.figures(defs, &orders, period))
}

/// GMV's figures for the period and the one before it (same length, ending the day
/// before), and the change between them by factor.
pub async fn gmv(db: &mut dyn Db, defs: &Definitions, slice: &Slice, period: &Period) -> Result<Gmv, StoreError> {
    let previous_period = period.previous();
    let links = Links::load(db, slice).await?;
    let orders = Orders::load(db, defs, previous_period.start(), period.end()).await?;
    let (current, previous) = (links.figures(defs, &orders, period), links.figures(defs, &orders, &previous_period));
    Ok(Gmv {
        period: period.report(),
        previous_period: previous_period.report(),
        current: current.report(),
        previous: previous.report(),
        decomposition: Lmdi::between(&previous, &current),
    })
}

/// Private-domain customers (contacts) by day: added, lost, net, total. Days are the
/// period's, in its zone.
pub async fn contacts_by_day(db: &mut dyn Db, slice: &Slice, period: &Period) -> Result<Vec<DayContacts>, StoreError> {
    Ok(contacts(db, slice, period).await?.by_day)
}

/// [`contacts_by_day`] with the period's totals.
pub async fn contacts(db: &mut dyn Db, slice: &Slice, period: &Period) -> Result<Contacts, StoreError> {
    Ok(Links::load(db, slice).await?.contacts(period))
}

/// The share of the period's buyers with two or more orders in it.
pub async fn repurchase_rate(db: &mut dyn Db, defs: &Definitions, slice: &Slice, period: &Period) -> Result<Repurchase, StoreError> {
    let links = Links::load(db, slice).await?;
    let orders = Orders::load(db, defs, period.start(), period.end()).await?;
    Ok(links.repurchase(defs, &orders, period))
}

/// GMV per customer in the period: the slice's contacts against customers with no
/// WeCom relationship at the period's end.
pub async fn arpu_private_vs_rest(db: &mut dyn Db, defs: &Definitions, slice: &Slice, period: &Period) -> Result<Arpu, StoreError> {
    let links = Links::load(db, slice).await?;
    let orders = Orders::load(db, defs, period.start(), period.end()).await?;
    links.arpu(db, &orders, period).await
}

/// Of the period's contacts, the share who deleted a guide (of the slice) in it.
pub async fn block_rate(db: &mut dyn Db, slice: &Slice, period: &Period) -> Result<BlockRate, StoreError> {
    let links = Links::load(db, slice).await?;
    links.block_rate(db, period).await
}

/// [`block_rate`], [`repurchase_rate`] and [`arpu_private_vs_rest`], each input read once.
pub async fn rates(db: &mut dyn Db, defs: &Definitions, slice: &Slice, period: &Period) -> Result<Rates, StoreError> {
    let links = Links::load(db, slice).await?;
    let orders = Orders::load(db, defs, period.start(), period.end()).await?;
    Ok(Rates {
        block_rate: links.block_rate(db, period).await?,
        repurchase: links.repurchase(defs, &orders, period),
        arpu: links.arpu(db, &orders, period).await?,
    })
}

/// Everything on the Overview page for `period` and the one before it, read in one
/// snapshot, each input read once.
pub async fn overview(db: &mut dyn Db, defs: &Definitions, slice: &Slice, period: &Period) -> Result<Overview, StoreError> {
    db.begin_snapshot().await?;
    let result = overview_in(db, defs, slice, period).await;
    db.rollback().await.ok();
    result
}

async fn overview_in(db: &mut dyn Db, defs: &Definitions, slice: &Slice, period: &Period) -> Result<Overview, StoreError> {
    let previous_period = period.previous();
    let links = Links::load(db, slice).await?;
    let orders = Orders::load(db, defs, previous_period.start(), period.end()).await?;
    let (current, previous) = (links.figures(defs, &orders, period), links.figures(defs, &orders, &previous_period));
    let contacts = links.contacts(period);
    let block_rate = links.block_rate(db, period).await?;
    let repurchase = links.repurchase(defs, &orders, period);
    let arpu = links.arpu(db, &orders, period).await?;
    Ok(Overview {
        period: period.report(),
        previous_period: previous_period.report(),
        slice: slice.clone(),
        definitions: defs.clone(),
        current: current.report(),
        previous: previous.report(),
        decomposition: Lmdi::between(&previous, &current),
        contacts,
        block_rate,
        repurchase,
        arpu,
    })
}

// ---------- relationships ----------

/// Profile ids per read of relationships or profiles: bounds the rows in memory at once.
const IDS_PER_READ: i64 = 100_000;

/// A stretch of time a customer was a contact: `[from, to)`, `to = None` while it lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    from: i64,
    to: Option<i64>,
}

impl Span {
    /// A contact at the end of everything before `t` (see the module's definitions).
    fn holds_at(&self, t: i64) -> bool {
        self.from < t && self.to.is_none_or(|to| to >= t)
    }
}

/// Merges spans that overlap or touch; drops empty ones.
fn merge(mut spans: Vec<Span>) -> Vec<Span> {
    spans.retain(|s| s.to.is_none_or(|to| to > s.from));
    spans.sort_by_key(|s| s.from);
    let mut out: Vec<Span> = Vec::with_capacity(spans.len());
    for s in spans {
        match out.last_mut() {
            Some(last) if last.to.is_none_or(|to| to >= s.from) => {
                last.to = match (last.to, s.to) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    _ => None,
                };
            }
            _ => out.push(s),
        }
    }
    out
}

/// `STORE-channel` → (store, channel); a state without `-` is a channel by itself.
fn from_state(state: &str) -> (Option<&str>, Option<&str>) {
    match state.split_once('-') {
        Some((store, channel)) if !store.is_empty() && !channel.is_empty() => (Some(store), Some(channel)),
        _ if !state.is_empty() => (None, Some(state)),
        _ => (None, None),
    }
}

/// The guide a contact event names, as ingest reads it.
fn staff_of(props: &Json) -> Option<&str> {
    ["staff_userid", "userid", "staff_id"].iter().find_map(|k| props.get(*k).and_then(Json::as_str))
}

/// The WeCom relationships, as the slice sees them.
struct Links {
    slice: Slice,
    /// The slice's customers (city and channel), each with their contact spans counting
    /// only the slice's store, merged. A customer with no relationship there is absent.
    spans: HashMap<ProfileId, Vec<Span>>,
    /// The same customers: when they first added a guide of the slice (for `ever_added`).
    first_added: HashMap<ProfileId, i64>,
    /// Every customer's contact spans with anyone, merged (for the rest's ARPU).
    anyone: HashMap<ProfileId, Vec<Span>>,
    /// Customers of the slice's city and channel with when they were acquired (for the
    /// rest's ARPU under a channel).
    acquired: HashMap<ProfileId, i64>,
    /// (customer, guide) pairs in the slice's store (when it has one), for blocks.
    in_store: Option<HashSet<(ProfileId, String)>>,
    /// Customers of the slice's city, when it has one.
    city: Option<HashSet<ProfileId>>,
}

struct LinkRow {
    staff: String,
    store: Option<String>,
    channel: Option<String>,
    added: i64,
    span: Option<Span>,
}

impl Links {
    /// Reads the relationships a range of profile ids at a time, so that memory holds
    /// the slice's spans, not every row at once.
    async fn load(db: &mut dyn Db, slice: &Slice) -> Result<Links, StoreError> {
        let city = match &slice.city {
            Some(c) => Some(city_members(db, c).await?),
            None => None,
        };
        let mut links = Links {
            slice: slice.clone(),
            spans: HashMap::new(),
            first_added: HashMap::new(),
            anyone: HashMap::new(),
            acquired: HashMap::new(),
            in_store: slice.store.as_ref().map(|_| HashSet::new()),
            city,
        };
        let max = db.query_one("SELECT COALESCE(MAX(profile_id), 0) FROM staff_customers", &[]).await?.int(0)?;
        let mut lo = 0;
        while lo <= max {
            let hi = lo + IDS_PER_READ;
            links.load_range(db, lo, hi).await?;
            lo = hi;
        }
        Ok(links)
    }

    /// The relationships of profiles `lo <= id < hi`.
    async fn load_range(&mut self, db: &mut dyn Db, lo: i64, hi: i64) -> Result<(), StoreError> {
        let slice = self.slice.clone();
        // Relationships without a state: their store and channel from their Contact Added
        // event (the latest for the pair), when the slice needs them.
        let mut from_events: HashMap<(ProfileId, String), (Option<String>, Option<String>)> = HashMap::new();
        if slice.store.is_some() || slice.channel.is_some() {
            let rows = db
                .query(
                    "SELECT profile_id, payload FROM events
                      WHERE profile_id >= $1 AND profile_id < $2 AND kind = 'track' AND name = 'Contact Added'
                        AND profile_id IN (SELECT profile_id FROM staff_customers WHERE state IS NULL AND profile_id >= $1 AND profile_id < $2)
                      ORDER BY ts, id",
                    params![lo, hi],
                )
                .await?;
            for r in rows {
                let props: Json = serde_json::from_str(&r.text(1)?).unwrap_or(Json::Null);
                let Some(staff) = staff_of(&props) else { continue };
                let text = |k: &str| props.get(k).and_then(Json::as_str).filter(|s| !s.is_empty()).map(String::from);
                from_events.insert((r.profile(0)?, staff.to_string()), (text("store_id"), text("channel")));
            }
        }
        let rows = db
            .query(
                "SELECT sc.profile_id, sc.staff_userid, sc.status, sc.added_at, sc.removed_at, sc.state, s.store_id
                   FROM staff_customers sc LEFT JOIN staff s ON s.userid = sc.staff_userid
                  WHERE sc.profile_id >= $1 AND sc.profile_id < $2
                  ORDER BY sc.profile_id",
                params![lo, hi],
            )
            .await?;
        let mut by_customer: Vec<(ProfileId, Vec<LinkRow>)> = Vec::new();
        for r in rows {
            let profile = r.profile(0)?;
            let staff = r.text(1)?;
            let status = r.text(2)?;
            let added = r.int(3)?;
            let removed = r.opt_int(4)?;
            let state = r.opt_text(5)?;
            let (state_store, state_channel) = state.as_deref().map(from_state).unwrap_or((None, None));
            let event = from_events.get(&(profile, staff.clone()));
            let store = r.opt_text(6)?.or(state_store.map(String::from)).or_else(|| event.and_then(|e| e.0.clone()));
            let channel = state_channel.map(String::from).or_else(|| event.and_then(|e| e.1.clone()));
            let span = match (status.as_str(), removed) {
                ("active", _) => Some(Span { from: added, to: None }),
                (_, Some(to)) => Some(Span { from: added, to: Some(to) }),
                // Removed, but when is not known: never counted as a contact.
                (_, None) => None,
            };
            let row = LinkRow { staff, store, channel, added, span };
            match by_customer.last_mut() {
                Some((p, rows)) if *p == profile => rows.push(row),
                _ => by_customer.push((profile, vec![row])),
            }
        }
        for (profile, rows) in by_customer {
            self.anyone.insert(profile, merge(rows.iter().filter_map(|r| r.span).collect()));
            if self.city.as_ref().is_some_and(|c| !c.contains(&profile)) {
                continue;
            }
            // Acquired through the channel of the earliest relationship.
            let first = rows.iter().min_by(|a, b| (a.added, &a.staff).cmp(&(b.added, &b.staff))).expect("a customer here has a relationship");
            if let Some(want) = &slice.channel
                && first.channel.as_deref() != Some(want.as_str())
            {
                continue;
            }
            self.acquired.insert(profile, first.added);
            let in_store: Vec<&LinkRow> = rows.iter().filter(|r| slice.store.is_none() || r.store == slice.store).collect();
            if in_store.is_empty() {
                continue;
            }
            if let Some(pairs) = &mut self.in_store {
                pairs.extend(in_store.iter().map(|r| (profile, r.staff.clone())));
            }
            self.first_added.insert(profile, in_store.iter().map(|r| r.added).min().expect("not empty"));
            self.spans.insert(profile, merge(in_store.iter().filter_map(|r| r.span).collect()));
        }
        Ok(())
    }

    /// The slice's contacts at the end of everything before `t`.
    fn contacts_at(&self, t: i64) -> impl Iterator<Item = ProfileId> + '_ {
        self.spans.iter().filter(move |(_, spans)| spans.iter().any(|s| s.holds_at(t))).map(|(p, _)| *p)
    }

    /// The slice's users at the end of everything before `t`.
    fn users_at(&self, defs: &Definitions, t: i64) -> Vec<ProfileId> {
        match defs.reachability {
            Reachability::ActiveContact => self.contacts_at(t).collect(),
            Reachability::EverAdded => self.first_added.iter().filter(|(_, added)| **added < t).map(|(p, _)| *p).collect(),
        }
    }

    fn figures(&self, defs: &Definitions, orders: &Orders, period: &Period) -> Figures {
        let spend = orders.spend(period.start().0, period.end().0);
        let mut f = Figures { users: 0, buyers: 0, orders: 0, gmv_fen: 0 };
        for user in self.users_at(defs, period.end().0) {
            f.users += 1;
            if let Some(s) = spend.get(&user).filter(|s| s.orders > 0) {
                f.buyers += 1;
                f.orders += s.orders;
                f.gmv_fen += s.fen;
            }
        }
        f
    }

    fn repurchase(&self, defs: &Definitions, orders: &Orders, period: &Period) -> Repurchase {
        let spend = orders.spend(period.start().0, period.end().0);
        let (mut buyers, mut repeat_buyers) = (0, 0);
        for user in self.users_at(defs, period.end().0) {
            match spend.get(&user).map_or(0, |s| s.orders) {
                0 => {}
                1 => buyers += 1,
                _ => {
                    buyers += 1;
                    repeat_buyers += 1;
                }
            }
        }
        Repurchase { buyers, repeat_buyers, rate: rate(repeat_buyers, buyers) }
    }

    fn contacts(&self, period: &Period) -> Contacts {
        let days = period.day_bounds();
        let (start, end) = (period.start().0, period.end().0);
        let day_of = |t: i64| days.partition_point(|(_, _, day_end)| day_end.0 <= t);
        let (mut added, mut lost) = (vec![0u64; days.len()], vec![0u64; days.len()]);
        let mut at_start = 0u64;
        for spans in self.spans.values() {
            for s in spans {
                if s.holds_at(start) {
                    at_start += 1;
                }
                if (start..end).contains(&s.from) {
                    added[day_of(s.from)] += 1;
                }
                if let Some(to) = s.to.filter(|to| (start..end).contains(to)) {
                    lost[day_of(to)] += 1;
                }
            }
        }
        let mut total = at_start;
        let by_day: Vec<DayContacts> = days
            .iter()
            .enumerate()
            .map(|(i, (day, _, _))| {
                total = total + added[i] - lost[i];
                DayContacts { day: *day, added: added[i], lost: lost[i], net: added[i] as i64 - lost[i] as i64, total }
            })
            .collect();
        let (added, lost): (u64, u64) = (added.iter().sum(), lost.iter().sum());
        Contacts { at_start, added, lost, net: added as i64 - lost as i64, at_end: total, by_day }
    }

    async fn block_rate(&self, db: &mut dyn Db, period: &Period) -> Result<BlockRate, StoreError> {
        let (start, end) = (period.start().0, period.end().0);
        let exposed: HashSet<ProfileId> =
            self.spans.iter().filter(|(_, spans)| spans.iter().any(|s| s.from < end && s.to.is_none_or(|to| to >= start))).map(|(p, _)| *p).collect();
        let rows = db
            .query("SELECT profile_id, payload FROM events WHERE kind = 'track' AND name = 'Contact Deleted' AND ts >= $1 AND ts < $2", params![start, end])
            .await?;
        let mut blocked: HashSet<ProfileId> = HashSet::new();
        for r in rows {
            let profile = r.profile(0)?;
            if !exposed.contains(&profile) {
                continue;
            }
            let props: Json = serde_json::from_str(&r.text(1)?).unwrap_or(Json::Null);
            if props.get("initiator").and_then(Json::as_str) == Some("staff") {
                continue;
            }
            if let Some(pairs) = &self.in_store {
                let Some(staff) = staff_of(&props) else { continue };
                if !pairs.contains(&(profile, staff.to_string())) {
                    continue;
                }
            }
            blocked.insert(profile);
        }
        let (contacts, blocked) = (exposed.len() as u64, blocked.len() as u64);
        Ok(BlockRate { contacts, blocked, rate: rate(blocked, contacts) })
    }

    async fn arpu(&self, db: &mut dyn Db, orders: &Orders, period: &Period) -> Result<Arpu, StoreError> {
        let end = period.end().0;
        let spend = orders.spend(period.start().0, end);
        let group = |members: &mut dyn Iterator<Item = ProfileId>| {
            let (mut customers, mut gmv_fen) = (0u64, 0 as Fen);
            for p in members {
                customers += 1;
                gmv_fen += spend.get(&p).filter(|s| s.orders > 0).map_or(0, |s| s.fen);
            }
            ArpuGroup { customers, gmv_fen, arpu_fen: if customers == 0 { 0.0 } else { gmv_fen as f64 / customers as f64 } }
        };
        let private = group(&mut self.contacts_at(end));
        // The rest: who is there, less anyone with a guide at the end.
        let mut universe: HashSet<ProfileId> = HashSet::new();
        if self.slice.channel.is_some() {
            universe.extend(self.acquired.iter().filter(|(_, at)| **at < end).map(|(p, _)| *p));
        } else {
            // Existed by the end: created before it, or with an event dated before it (a
            // history sent in later: a profile is created when its first message arrives).
            const EXISTED: &str = "p.merged_into IS NULL AND (p.created_at < $1 OR EXISTS (SELECT 1 FROM events e WHERE e.profile_id = p.id AND e.ts < $1))";
            let city = self.slice.city.as_ref().map(|c| serde_json::to_string(c).expect("a string serialises"));
            let max = db.query_one("SELECT COALESCE(MAX(id), 0) FROM profiles", &[]).await?.int(0)?;
            let mut lo = 0;
            while lo <= max {
                let hi = lo + IDS_PER_READ;
                let rows = match &city {
                    Some(value) => {
                        db.query(
                            &format!(
                                "SELECT p.id FROM profiles p JOIN traits t ON t.profile_id = p.id AND t.key = 'city'
                                  WHERE p.id >= $2 AND p.id < $3 AND t.value = $4 AND {EXISTED}"
                            ),
                            params![end, lo, hi, value],
                        )
                        .await?
                    }
                    None => db.query(&format!("SELECT p.id FROM profiles p WHERE p.id >= $2 AND p.id < $3 AND {EXISTED}"), params![end, lo, hi]).await?,
                };
                for r in rows {
                    universe.insert(r.profile(0)?);
                }
                lo = hi;
            }
            universe.extend(spend.iter().filter(|(p, s)| s.orders > 0 && self.city.as_ref().is_none_or(|c| c.contains(p))).map(|(p, _)| *p));
        }
        let rest = group(&mut universe.into_iter().filter(|p| !self.anyone.get(p).is_some_and(|spans| spans.iter().any(|s| s.holds_at(end)))));
        Ok(Arpu { private, rest })
    }
}

/// Customers whose `city` trait is `city` (traits are stored as JSON text).
async fn city_members(db: &mut dyn Db, city: &str) -> Result<HashSet<ProfileId>, StoreError> {
    let value = serde_json::to_string(city).expect("a string serialises");
    db.query("SELECT profile_id FROM traits WHERE key = 'city' AND value = $1", params![&value]).await?.iter().map(|r| r.profile(0)).collect()
}

// ---------- orders ----------

/// One order or refund.
struct OrderRow {
    profile: ProfileId,
    ts: i64,
    fen: Fen,
    refund: bool,
}

/// Order (and refund) events in a time range.
struct Orders(Vec<OrderRow>);

/// A customer's orders and net revenue in a period.
#[derive(Default)]
struct Spend {
    orders: u64,
    fen: Fen,
}

impl Orders {
    /// The order and refund events with `from <= ts < to`, their revenue read from the
    /// payload in Rust (the same way segment rules read a measure: the first number,
    /// or numeric string, at the property's path), rounded to the fen.
    async fn load(db: &mut dyn Db, defs: &Definitions, from: Timestamp, to: Timestamp) -> Result<Orders, StoreError> {
        let refund = defs.refund_event.as_deref().unwrap_or(&defs.order_event);
        let mut out = Vec::new();
        // A day at a time: memory holds one day's payloads, not the period's.
        let mut lo = from.0;
        while lo < to.0 {
            let hi = (lo + siyu_core::time::MS_PER_DAY).min(to.0);
            let rows = db
                .query(
                    "SELECT profile_id, ts, name, payload FROM events
                      WHERE name IN ($1, $2) AND ts >= $3 AND ts < $4 AND kind = 'track'",
                    params![defs.order_event.as_str(), refund, lo, hi],
                )
                .await?;
            for r in rows {
                let fen = revenue(&r.text(3)?, &defs.revenue_property).filter(|v| v.is_finite()).map_or(0, |v| v.round() as Fen);
                out.push(OrderRow { profile: r.profile(0)?, ts: r.int(1)?, fen, refund: r.text(2)? != defs.order_event });
            }
            lo = hi;
        }
        Ok(Orders(out))
    }

    /// Per customer, orders and revenue with `from <= ts < to`, less refunds.
    fn spend(&self, from: i64, to: i64) -> HashMap<ProfileId, Spend> {
        let mut out: HashMap<ProfileId, Spend> = HashMap::new();
        for o in self.0.iter().filter(|o| (from..to).contains(&o.ts)) {
            let s = out.entry(o.profile).or_default();
            if o.refund {
                s.fen -= o.fen;
            } else {
                s.orders += 1;
                s.fen += o.fen;
            }
        }
        out
    }
}

/// The measure at `path` in an event's properties, as [`measure_value`] reads it, but
/// building only the top-level property the path starts with: an order's payload
/// (products and all) is skimmed, not built, which is most of the time a report takes.
fn revenue(payload: &str, path: &str) -> Option<f64> {
    use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};

    /// Whether a key is the one wanted, compared where it lies.
    struct IsKey<'k>(&'k str);
    impl<'de> DeserializeSeed<'de> for IsKey<'_> {
        type Value = bool;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
            d.deserialize_str(self)
        }
    }
    impl<'de> Visitor<'de> for IsKey<'_> {
        type Value = bool;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a property name")
        }
        fn visit_str<E>(self, v: &str) -> Result<bool, E> {
            Ok(v == self.0)
        }
    }
    /// The value of one top-level property (the last, if repeated, as a full parse keeps).
    struct Find<'k>(&'k str);
    impl<'de> DeserializeSeed<'de> for Find<'_> {
        type Value = Option<Json>;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<Json>, D::Error> {
            d.deserialize_map(self)
        }
    }
    impl<'de> Visitor<'de> for Find<'_> {
        type Value = Option<Json>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<Json>, A::Error> {
            let mut found = None;
            while let Some(wanted) = map.next_key_seed(IsKey(self.0))? {
                if wanted {
                    found = Some(map.next_value::<Json>()?);
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(found)
        }
    }
    let first = path.split('.').next().unwrap_or(path);
    let value = Find(first).deserialize(&mut serde_json::Deserializer::from_str(payload)).ok()??;
    measure_value(&Json::Object([(first.to_string(), value)].into_iter().collect()), path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Store;
    use std::path::PathBuf;

    const DAY: i64 = 86_400_000;

    /// Midnight in Shanghai starting 2026-03-`d` (d may run past 31 into April, or
    /// below 1 into February), plus `hours`.
    fn at(d: i64, hours: i64) -> i64 {
        Timestamp::parse_iso8601("2026-03-01T00:00:00+08:00").unwrap().0 + (d - 1) * DAY + hours * 3_600_000
    }

    async fn profile(db: &mut dyn Db, id: i64, created: i64, city: Option<&str>) {
        db.execute("INSERT INTO profiles (id, uuid, created_at) VALUES ($1, $2, $3)", params![id, format!("u{id}").as_str(), created]).await.unwrap();
        if let Some(c) = city {
            let v = serde_json::to_string(c).unwrap();
            db.execute("INSERT INTO traits (profile_id, key, value, updated_at) VALUES ($1, 'city', $2, 0)", params![id, &v]).await.unwrap();
        }
    }

    async fn link(db: &mut dyn Db, id: i64, staff: &str, status: &str, added: i64, removed: Option<i64>, state: Option<&str>) {
        db.execute(
            "INSERT INTO staff_customers (profile_id, staff_userid, status, added_at, removed_at, state) VALUES ($1, $2, $3, $4, $5, $6)",
            params![id, staff, status, added, removed, state],
        )
        .await
        .unwrap();
    }

    async fn event(db: &mut dyn Db, id: i64, name: &str, ts: i64, payload: Json) {
        let mid = format!("m{id}-{name}-{ts}-{}", payload);
        db.execute(
            "INSERT INTO events (profile_id, message_id, kind, name, ts, received_at, payload) VALUES ($1, $2, 'track', $3, $4, $4, $5)",
            params![id, mid.as_str(), name, ts, payload.to_string().as_str()],
        )
        .await
        .unwrap();
    }

    /// Two stores, three guides, six customers:
    /// 1 Shanghai, SH001 poster, since Feb, orders 3000 + 2000 in March, 1000 in Feb.
    /// 2 Shanghai, SH001 table_card, added 2026-03-05, deleted (customer) 2026-03-20, one order.
    /// 3 Beijing, BJ001 poster, since Feb, one order in March of 4500, two in Feb.
    /// 4 Beijing, transferred from SH001's guide to BJ001's on 2026-03-10 at noon.
    /// 5 Shanghai, no guide ever, one order of 800 in March.
    /// 6 no city, deleted by the guide (not a block) on 2026-03-15.
    /// 7 Shanghai, no guide, created in April with an event from February.
    /// 8 Shanghai, no guide, created in April, nothing before.
    async fn brand(store: &Store) {
        store
            .run(|db| {
                Box::pin(async move {
                    for (id, store_id) in [("sh_a", "SH001"), ("sh_b", "SH001"), ("bj_a", "BJ001")] {
                        db.execute(
                            "INSERT INTO staff (userid, name, store_id, role, customer_cap, updated_at) VALUES ($1, $1, $2, 'guide', 200, 0)",
                            params![id, store_id],
                        )
                        .await?;
                    }
                    profile(db, 1, at(-20, 0), Some("Shanghai")).await;
                    profile(db, 2, at(5, 0), Some("Shanghai")).await;
                    profile(db, 3, at(-20, 0), Some("Beijing")).await;
                    profile(db, 4, at(-20, 0), Some("Beijing")).await;
                    profile(db, 5, at(-20, 0), Some("Shanghai")).await;
                    profile(db, 6, at(-20, 0), None).await;
                    // Sent in April with a history from February: there in March.
                    profile(db, 7, at(40, 0), Some("Shanghai")).await;
                    event(db, 7, "Page Viewed", at(-10, 0), serde_json::json!({})).await;
                    // Only from April on.
                    profile(db, 8, at(40, 0), Some("Shanghai")).await;
                    event(db, 8, "Page Viewed", at(33, 0), serde_json::json!({})).await;
                    link(db, 1, "sh_a", "active", at(-20, 1), None, Some("SH001-poster")).await;
                    link(db, 2, "sh_b", "deleted", at(5, 10), Some(at(20, 10)), Some("SH001-table_card")).await;
                    link(db, 3, "bj_a", "active", at(-20, 1), None, Some("BJ001-poster")).await;
                    link(db, 4, "sh_a", "transferred", at(-20, 1), Some(at(10, 12)), None).await;
                    link(db, 4, "bj_a", "active", at(10, 12), None, None).await;
                    link(db, 6, "sh_b", "deleted", at(-20, 1), Some(at(15, 9)), Some("SH001-poster")).await;
                    // Customer 4's Contact Added events say the channel.
                    event(db, 4, "Contact Added", at(-20, 1), serde_json::json!({"staff_userid": "sh_a", "channel": "parcel_insert"})).await;
                    event(db, 4, "Contact Added", at(10, 12), serde_json::json!({"staff_userid": "bj_a", "channel": "transfer"})).await;
                    event(db, 2, "Contact Deleted", at(20, 10), serde_json::json!({"staff_userid": "sh_b", "initiator": "customer"})).await;
                    event(db, 6, "Contact Deleted", at(15, 9), serde_json::json!({"staff_userid": "sh_b", "initiator": "staff"})).await;
                    let order = |fen: i64| serde_json::json!({"revenue_fen": fen, "store_id": "SH001"});
                    event(db, 1, "Order Completed", at(3, 12), order(3000)).await;
                    event(db, 1, "Order Completed", at(25, 12), order(2000)).await;
                    event(db, 1, "Order Completed", at(-5, 12), order(1000)).await;
                    event(db, 2, "Order Completed", at(6, 12), order(1500)).await;
                    // 23:59 on March 31st in Shanghai is still March: the order counts.
                    event(db, 3, "Order Completed", at(32, 0) - 60_000, order(4500)).await;
                    // February; a revenue given as a numeric string counts, to the fen.
                    event(db, 3, "Order Completed", at(-3, 12), order(700)).await;
                    event(db, 3, "Order Completed", at(-2, 12), serde_json::json!({"revenue_fen": "650.4"})).await;
                    event(db, 5, "Order Completed", at(9, 12), order(800)).await;
                    // April (just past the period) and a refund nobody configured yet.
                    event(db, 1, "Order Completed", at(32, 0), order(99_999)).await;
                    event(db, 1, "Order Refunded", at(26, 0), order(500)).await;
                    Ok(())
                })
            })
            .await
            .unwrap();
    }

    fn march(defs: &Definitions) -> Period {
        defs.period("2026-03-01", "2026-03-31").unwrap()
    }

    async fn with<T: Send + 'static>(
        store: &Store,
        f: impl for<'c> FnOnce(&'c mut dyn Db) -> futures::future::BoxFuture<'c, Result<T, StoreError>> + Send + 'static,
    ) -> T {
        store.run(f).await.unwrap()
    }

    crate::both_backends!(figures_for_the_whole_brand_and_a_slice, |store: Store, _log: PathBuf| async move {
        brand(&store).await;
        let defs = Definitions::default();
        let period = march(&defs);
        let all = Slice::default();
        let (d, p, s) = (defs.clone(), period, all.clone());
        let f = with(&store, move |db| Box::pin(async move { figures(db, &d, &s, &p).await })).await;
        // Contacts at the end of March: 1, 3, 4 (2 deleted, 6 deleted by the guide).
        // Buyers among them: 1 (two orders, 5000) and 3 (the 23:59 order, 4500).
        assert_eq!(f, Figures { users: 3, buyers: 2, orders: 3, gmv_fen: 9500 });
        assert!(f.identity_holds());
        // February: contacts 1, 3, 4, 6 at its end; buyers 1 (1000) and 3 (700 + 650).
        let (d, s) = (defs.clone(), all.clone());
        let prev = with(&store, move |db| Box::pin(async move { figures(db, &d, &s, &period.previous()).await })).await;
        assert_eq!(prev, Figures { users: 4, buyers: 2, orders: 3, gmv_fen: 2350 });

        // SH001's slice: 4 was transferred away, 2 deleted, 6 deleted: only 1.
        let sh = Slice { store: Some("SH001".into()), ..Slice::default() };
        let (d, s) = (defs.clone(), sh.clone());
        let f = with(&store, move |db| Box::pin(async move { figures(db, &d, &s, &period).await })).await;
        assert_eq!(f, Figures { users: 1, buyers: 1, orders: 2, gmv_fen: 5000 });
        // Beijing, by city: 3 and 4.
        let bj = Slice { city: Some("Beijing".into()), ..Slice::default() };
        let (d, s) = (defs.clone(), bj);
        let f = with(&store, move |db| Box::pin(async move { figures(db, &d, &s, &period).await })).await;
        assert_eq!(f, Figures { users: 2, buyers: 1, orders: 1, gmv_fen: 4500 });
        // Acquired through posters: 1, 3 (and 6, gone); 4 came by parcel insert, from its
        // Contact Added event (its relationships have no state).
        let poster = Slice { channel: Some("poster".into()), ..Slice::default() };
        let (d, s) = (defs.clone(), poster);
        let f = with(&store, move |db| Box::pin(async move { figures(db, &d, &s, &period).await })).await;
        assert_eq!(f, Figures { users: 2, buyers: 2, orders: 3, gmv_fen: 9500 });
        let parcel = Slice { channel: Some("parcel_insert".into()), ..Slice::default() };
        let (d, s) = (defs.clone(), parcel);
        let f = with(&store, move |db| Box::pin(async move { figures(db, &d, &s, &period).await })).await;
        assert_eq!(f.users, 1);

        // Configured: refunds net off, and everyone who ever added a guide is a user.
        let defs = Definitions { refund_event: Some("Order Refunded".into()), reachability: Reachability::EverAdded, ..Definitions::default() };
        let (d, s) = (defs, all);
        let f = with(&store, move |db| Box::pin(async move { figures(db, &d, &s, &period).await })).await;
        // Users 1, 2, 3, 4, 6; buyers 1 (5000 − 500), 2 (1500), 3 (4500).
        assert_eq!(f, Figures { users: 5, buyers: 3, orders: 4, gmv_fen: 10_500 });
        assert!(f.identity_holds());
    });

    crate::both_backends!(contacts_by_day_add_up, |store: Store, _log: PathBuf| async move {
        brand(&store).await;
        let defs = Definitions::default();
        let period = march(&defs);
        let days = with(&store, move |db| Box::pin(async move { contacts_by_day(db, &Slice::default(), &period).await })).await;
        assert_eq!(days.len(), 31);
        let day = |n: usize| &days[n - 1];
        // At the start: 1, 3, 4, 6. Added on the 5th: 2. Lost: 6 on the 15th, 2 on the
        // 20th. The transfer on the 10th is seamless: no loss, no gain.
        assert_eq!((day(1).added, day(1).lost, day(1).total), (0, 0, 4));
        assert_eq!((day(5).added, day(5).net, day(5).total), (1, 1, 5));
        assert_eq!((day(10).added, day(10).lost), (0, 0));
        assert_eq!((day(15).lost, day(15).net, day(15).total), (1, -1, 4));
        assert_eq!((day(20).lost, day(20).total), (1, 3));
        assert_eq!(day(31).total, 3);
        let mut total = 4i64;
        for d in &days {
            total += d.net;
            assert_eq!(d.total as i64, total, "{d:?}");
            assert_eq!(d.net, d.added as i64 - d.lost as i64);
        }
        // SH001: the transfer on the 10th is a loss for it.
        let sh = Slice { store: Some("SH001".into()), ..Slice::default() };
        let days = with(&store, move |db| Box::pin(async move { contacts_by_day(db, &sh, &period).await })).await;
        assert_eq!((days[9].lost, days[9].total), (1, 3));
        assert_eq!(days[30].total, 1);
        // BJ001 gains 4 that day.
        let bj = Slice { store: Some("BJ001".into()), ..Slice::default() };
        let days = with(&store, move |db| Box::pin(async move { contacts_by_day(db, &bj, &period).await })).await;
        assert_eq!((days[0].total, days[9].added, days[30].total), (1, 1, 2));
    });

    crate::both_backends!(rates_and_arpu, |store: Store, _log: PathBuf| async move {
        brand(&store).await;
        let defs = Definitions::default();
        let period = march(&defs);
        let d = defs.clone();
        let (blocks, repurchase, arpu) = with(&store, move |db| {
            Box::pin(async move {
                let all = Slice::default();
                Ok((block_rate(db, &all, &period).await?, repurchase_rate(db, &d, &all, &period).await?, arpu_private_vs_rest(db, &d, &all, &period).await?))
            })
        })
        .await;
        // Contacts in March: 1, 2, 3, 4, 6; 2 blocked (6 was removed by the guide).
        assert_eq!((blocks.contacts, blocks.blocked), (5, 1));
        assert_eq!(blocks.rate, 0.2);
        // Buyers 1 (twice) and 3.
        assert_eq!((repurchase.buyers, repurchase.repeat_buyers, repurchase.rate), (2, 1, 0.5));
        // Private: 1, 3, 4 with 9500. The rest: 2 (1500), 5 (800), 6 and 7 (nothing);
        // 8 was not there yet.
        assert_eq!((arpu.private.customers, arpu.private.gmv_fen), (3, 9500));
        assert_eq!((arpu.rest.customers, arpu.rest.gmv_fen), (4, 2300));
        assert_eq!(arpu.rest.arpu_fen, 575.0);
        let d = defs.clone();
        let all = with(&store, move |db| Box::pin(async move { rates(db, &d, &Slice::default(), &period).await })).await;
        assert_eq!(all, Rates { block_rate: blocks, repurchase, arpu });
        // Shanghai only: the rest are 2, 5 and 7.
        let d = defs.clone();
        let arpu = with(&store, move |db| {
            Box::pin(async move { arpu_private_vs_rest(db, &d, &Slice { city: Some("Shanghai".into()), ..Slice::default() }, &period).await })
        })
        .await;
        assert_eq!((arpu.private.customers, arpu.private.gmv_fen, arpu.rest.customers, arpu.rest.gmv_fen), (1, 5000, 3, 2300));
        // In SH001's slice (1, 2, 4 until its transfer, 6), blocks count only its
        // guides' deletions: 2's.
        let blocks =
            with(&store, move |db| Box::pin(async move { block_rate(db, &Slice { store: Some("SH001".into()), ..Slice::default() }, &period).await })).await;
        assert_eq!((blocks.contacts, blocks.blocked), (4, 1));
        let blocks =
            with(&store, move |db| Box::pin(async move { block_rate(db, &Slice { store: Some("BJ001".into()), ..Slice::default() }, &period).await })).await;
        assert_eq!((blocks.contacts, blocks.blocked), (2, 0));
    });

    crate::both_backends!(the_overview_reads_it_all_at_once, |store: Store, _log: PathBuf| async move {
        brand(&store).await;
        let defs = Definitions::default();
        let period = march(&defs);
        let d = defs.clone();
        let o = with(&store, move |db| Box::pin(async move { overview(db, &d, &Slice::default(), &period).await })).await;
        let g = with(&store, move |db| Box::pin(async move { gmv(db, &defs, &Slice::default(), &period).await })).await;
        assert_eq!((&g.current, &g.previous, &g.decomposition), (&o.current, &o.previous, &o.decomposition));
        assert_eq!((o.current.users, o.current.gmv_fen, o.previous.users, o.previous.gmv_fen), (3, 9500, 4, 2350));
        assert_eq!(o.decomposition.change_fen, 9500 - 2350);
        assert_eq!(o.decomposition.sum_fen(), 9500 - 2350);
        assert_eq!((o.contacts.at_start, o.contacts.added, o.contacts.lost, o.contacts.at_end), (4, 1, 2, 3));
        assert_eq!(o.contacts.at_end, o.current.users);
        assert_eq!(o.contacts.at_start, o.previous.users, "the previous period ends where this one starts");
        assert_eq!(o.previous_period.from.to_string(), "2026-01-29");
        assert_eq!(o.period.time_zone, "Asia/Shanghai");
    });

    crate::both_backends!(reads_span_id_ranges, |store: Store, _log: PathBuf| async move {
        // Customers either side of the boundaries between reads of relationships and profiles.
        let ids = [IDS_PER_READ - 1, IDS_PER_READ, 2 * IDS_PER_READ + 5];
        store
            .run(move |db| {
                Box::pin(async move {
                    for id in ids {
                        profile(db, id, at(-20, 0), None).await;
                        link(db, id, "g", "active", at(-20, 1), None, None).await;
                        event(db, id, "Order Completed", at(2, 0), serde_json::json!({"revenue_fen": 100})).await;
                    }
                    profile(db, 3 * IDS_PER_READ, at(-20, 0), None).await;
                    Ok(())
                })
            })
            .await
            .unwrap();
        let defs = Definitions::default();
        let period = march(&defs);
        let (f, arpu) = with(&store, move |db| {
            Box::pin(
                async move { Ok((figures(db, &defs, &Slice::default(), &period).await?, arpu_private_vs_rest(db, &defs, &Slice::default(), &period).await?)) },
            )
        })
        .await;
        assert_eq!(f, Figures { users: 3, buyers: 3, orders: 3, gmv_fen: 300 });
        assert_eq!((arpu.private.customers, arpu.rest.customers), (3, 1));
    });

    #[test]
    fn definitions_load_from_the_data_directory() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Definitions::load(dir.path()).unwrap(), Definitions::default());
        std::fs::write(dir.path().join("analytics.json"), r#"{"refund_event": "Order Refunded", "reachability": "ever_added"}"#).unwrap();
        let d = Definitions::load(dir.path()).unwrap();
        assert_eq!((d.order_event.as_str(), d.refund_event.as_deref(), d.reachability), ("Order Completed", Some("Order Refunded"), Reachability::EverAdded));
        std::fs::write(dir.path().join("analytics.json"), r#"{"order_evnt": "Purchase"}"#).unwrap();
        let e = Definitions::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("analytics.json") && e.contains("order_evnt"), "{e}");
        std::fs::write(dir.path().join("analytics.json"), r#"{"time_zone": "Asia/Shanghia"}"#).unwrap();
        let e = Definitions::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("time_zone") && e.contains("Asia/Shanghia"), "{e}");
        std::fs::write(dir.path().join("analytics.json"), r#"{"refund_event": "Order Completed"}"#).unwrap();
        assert!(Definitions::load(dir.path()).is_err());
    }

    #[test]
    fn revenue_reads_as_a_segment_rule_would() {
        let payloads = [
            r#"{"order_id": "A1", "products": [{"sku": "x", "price_fen": 2900}, {"price_fen": 100}], "revenue_fen": 3000}"#,
            r#"{"revenue_fen": "1234.6"}"#,
            r#"{"revenue_fen": null, "amount": {"fen": 77}}"#,
            r#"{"revenue_fen": [5, 6]}"#,
            r#"{"revenue_fen": 1, "revenue_fen": 2}"#,
            r#"{"rev\u0065nue_fen": 9}"#,
            r#"{"other": 1}"#,
            r#"[1, 2]"#,
            r#"not json"#,
        ];
        for p in payloads {
            for path in ["revenue_fen", "amount.fen", "products.price_fen"] {
                let full = serde_json::from_str::<Json>(p).ok().and_then(|v| measure_value(&v, path));
                assert_eq!(revenue(p, path), full, "{path} of {p}");
            }
        }
        assert_eq!(revenue(payloads[0], "revenue_fen"), Some(3000.0));
        assert_eq!(revenue(payloads[0], "products.price_fen"), Some(2900.0));
    }

    #[test]
    fn spans_merge_and_states_read() {
        let s = |from, to| Span { from, to };
        assert_eq!(merge(vec![s(5, Some(9)), s(0, Some(5)), s(20, None), s(3, Some(3))]), vec![s(0, Some(9)), s(20, None)]);
        assert_eq!(merge(vec![s(0, None), s(4, Some(6))]), vec![s(0, None)]);
        assert!(s(0, Some(10)).holds_at(10) && !s(0, Some(10)).holds_at(11) && !s(10, None).holds_at(10));
        assert_eq!(from_state("SH001-poster"), (Some("SH001"), Some("poster")));
        assert_eq!(from_state("poster"), (None, Some("poster")));
        assert_eq!(from_state(""), (None, None));
    }
}
