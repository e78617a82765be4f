//! One customer at a time, each from its own random stream, so any slice of the brand
//! can be generated alone and the whole is the same whatever the batch size.

use std::ops::Range;

use chrono::{NaiveDate, TimeZone};
use serde_json::{Value, json};
use siyu_core::ProfileId;
use siyu_core::phone::hash_e164;
use siyu_core::time::MS_PER_DAY;
use siyu_store::bulk::{Batch, EventRow, IdentityRow, ProfileRow, RelationshipRow, TagRow, TraitRow};

use super::brand::{self, CHANNELS, CITIES, MENU, MENU_WEIGHTS, MINI_PROGRAM_APP_ID, Org, TASTES};
use super::rng::Rng;

const HOUR: i64 = 3_600_000;

pub struct Generator {
    seed: u64,
    /// Start of the demo year and its end (UTC ms).
    start: i64,
    end: i64,
    org: Org,
    city_weights: Vec<(usize, u32)>,
    menu: Vec<(usize, u32)>,
}

/// Where the customer lives and how they first reached the brand.
struct Origin {
    city: usize,
    store: usize,
    channel: &'static str,
    join: i64,
}

impl Generator {
    pub fn new(seed: u64, anchor: NaiveDate, org: Org) -> Generator {
        let end_local = anchor.and_hms_opt(23, 59, 59).expect("valid time");
        let end = chrono_tz::Asia::Shanghai.from_local_datetime(&end_local).single().expect("unambiguous").timestamp_millis();
        let city_weights = CITIES.iter().enumerate().map(|(i, c)| (i, c.2)).collect();
        let menu = MENU_WEIGHTS.iter().enumerate().map(|(i, w)| (i, *w)).collect();
        Generator { seed, start: end - 365 * MS_PER_DAY, end, org, city_weights, menu }
    }

    pub fn batch(&self, customers: Range<u64>) -> Batch {
        let mut b = Batch::default();
        for index in customers {
            self.customer(index, &mut b);
        }
        b
    }

    fn customer(&self, index: u64, b: &mut Batch) {
        let mut rng = Rng::for_item(self.seed, 2, index);
        let id = profile_of(index);
        let origin = self.origin(&mut rng);
        let store = &self.org.stores[origin.store];
        let member = rng.chance(0.75);
        let user_id = member.then(|| format!("m{id:08}"));
        let anonymous_id = (!member || rng.chance(0.5)).then(|| rng.uuid());
        let on_wecom = rng.chance(if matches!(origin.channel, "official_account" | "mini_program") { 0.55 } else { 0.97 });
        let guides = &self.org.guides_by_store[origin.store];
        let guide = rng.pick(guides).clone();
        let external_userid = on_wecom.then(|| format!("wm{}", rng.alnum(30)));
        let unionid = rng.chance(0.9).then(|| format!("ou{}", rng.alnum(26)));
        let openid = rng.chance(0.85).then(|| format!("o{}", rng.alnum(27)));
        let phone = (member && rng.chance(0.85)).then(|| unique_phone(index));
        let (name, _) = brand::person_name(&mut rng);
        let cantonese = rng.chance(CITIES[origin.city].4);
        let taste = *rng.weighted(&TASTES);
        let mut events = EventSink { seed: self.seed, index, next: 0, b, user_id: user_id.clone(), anonymous_id: anonymous_id.clone() };

        // Who they are.
        let mut traits = vec![
            ("name", json!(name)),
            ("gender", json!(if rng.chance(0.62) { "female" } else { "male" })),
            ("city", json!(CITIES[origin.city].0)),
            ("store_id", json!(store.id)),
            ("language", json!(if cantonese { "Cantonese" } else { "Mandarin" })),
            ("taste", json!(taste)),
            ("acquisition_channel", json!(origin.channel)),
            ("signup_at", json!(siyu_core::Timestamp(origin.join).to_rfc3339())),
        ];
        if rng.chance(0.55) {
            traits.push(("birthday", json!(format!("{}-{:02}-{:02}", 1965 + rng.below(42), 1 + rng.below(12), 1 + rng.below(28)))));
        }
        if let Some(p) = &phone {
            traits.push(("phone", json!(p)));
        }
        // Consent, derived from the index so the random stream (and the brand) stays as
        // it was: 60% of members with a phone opted into SMS; 2% refused WeCom messages.
        traits.push(("consent.sms", json!(phone.is_some() && index % 10 < 6)));
        if index % 50 == 7 {
            traits.push(("consent.wecom", json!(false)));
        }

        let orders = order_count(&mut rng);
        let lapsed = orders >= 2 && rng.chance(0.3);
        let tier = match orders {
            0 => "none",
            1..=4 => "silver",
            5..=29 => "gold",
            _ => "black",
        };
        if member {
            traits.push(("tier", json!(tier)));
        }
        let identify_payload = Value::Object(traits.iter().map(|(k, v)| (k.to_string(), v.clone())).collect());
        events.push("identify", None, origin.join, identify_payload.to_string(), SOURCE_MINI_PROGRAM);

        if let Some(ext) = &external_userid {
            let state = format!("{}-{}", store.id, origin.channel);
            events.push(
                "track",
                Some("Contact Added"),
                origin.join + 60_000,
                json!({"staff_userid": guide, "store_id": store.id, "state": state, "channel": origin.channel, "external_userid": ext}).to_string(),
                SOURCE_WECOM,
            );
        }
        if rng.chance(0.5) {
            let t = self.later(&mut rng, origin.join, 30);
            events.push("track", Some("Official Account Followed"), t, json!({"account": "岚山咖啡服务号"}).to_string(), SOURCE_OFFICIAL_ACCOUNT);
        }

        // Orders: a skewed frequency, some customers lapse after a while.
        let active_until = if lapsed { (origin.join + rng.range(30, 200) * MS_PER_DAY).min(self.end - 45 * MS_PER_DAY).max(origin.join) } else { self.end };
        let mut times: Vec<i64> = (0..orders).map(|_| self.order_time(&mut rng, origin.join, active_until)).collect();
        times.sort_unstable();
        let mut orders_total = 0;
        for (n, t) in times.iter().enumerate() {
            let order_id = format!("LS{id}-{n}");
            let (payload, coupon) = self.order(&mut rng, &order_id, &store.id);
            events.push("track", Some("Order Completed"), *t, payload, SOURCE_MINI_PROGRAM);
            if let Some((code, discount)) = coupon {
                events.push(
                    "track",
                    Some("Coupon Redeemed"),
                    *t,
                    json!({"coupon_code": code, "discount_fen": discount, "order_id": order_id}).to_string(),
                    SOURCE_MINI_PROGRAM,
                );
            }
            orders_total += 1;
        }

        // Sharing and referring: the "four highs" super users do most of it.
        let sharer = orders_total >= 2 && rng.chance(if orders_total >= 20 { 0.6 } else { 0.2 });
        if sharer {
            for _ in 0..1 + rng.below(if orders_total >= 20 { 12 } else { 3 }) {
                let t = self.later(&mut rng, origin.join, 330);
                let item = &MENU[rng.below(MENU.len() as u64) as usize];
                events.push("track", Some("Shared"), t, json!({"content": "product", "sku": item.sku, "to": "wechat_friend"}).to_string(), SOURCE_MINI_PROGRAM);
            }
        }
        if origin.channel == "referral" && index > 0 {
            let referrer = profile_of(rng.below(index));
            let referee = user_id.clone().or(anonymous_id.clone()).unwrap_or_default();
            events.push_for(
                referrer,
                "track",
                Some("Referred"),
                origin.join,
                json!({"referee_user_id": referee, "reward_coupon": format!("REF-{id}")}).to_string(),
                SOURCE_MINI_PROGRAM,
            );
        }

        // Community and activities.
        let in_group = on_wecom && rng.chance(0.35);
        if in_group {
            let t = self.later(&mut rng, origin.join, 20);
            events.push("track", Some("Group Joined"), t, json!({"chat_id": format!("wr{}", store.id), "store_id": store.id}).to_string(), SOURCE_WECOM);
            if rng.chance(0.1) {
                let left = self.later(&mut rng, t, 200);
                events.push("track", Some("Group Left"), left, json!({"chat_id": format!("wr{}", store.id)}).to_string(), SOURCE_WECOM);
            }
        }
        if rng.chance(0.15) {
            for _ in 0..1 + rng.below(3) {
                let t = self.later(&mut rng, origin.join, 300);
                events.push(
                    "track",
                    Some("Checked In"),
                    t,
                    json!({"activity": rng.pick(&brand::ACTIVITIES), "store_id": store.id}).to_string(),
                    SOURCE_MINI_PROGRAM,
                );
            }
        }
        if rng.chance(0.2) {
            let t = self.later(&mut rng, origin.join, 300);
            events.push("track", Some("Message Clicked"), t, json!({"campaign": "weekly-offer", "channel": "wecom"}).to_string(), SOURCE_WECOM);
        }
        // A deletion that would fall after the demo's year has not happened (clamping it
        // to the last instant would make the last day a wave of losses).
        let deleted_at = (on_wecom && rng.chance(0.06)).then(|| self.later(&mut rng, origin.join + MS_PER_DAY, 300)).filter(|t| *t < self.end);
        if let Some(t) = deleted_at {
            events.push("track", Some("Contact Deleted"), t, json!({"staff_userid": guide, "store_id": store.id}).to_string(), SOURCE_WECOM);
        }
        drop(events);

        // The profile, its identities, traits, tags and guide.
        let mut r = Rng::for_item(self.seed, 3, index);
        b.profiles.push(ProfileRow { id, uuid: r.uuid(), created_at: origin.join });
        let mut identity = |kind: &'static str, value: String| b.identities.push(IdentityRow { kind, value, profile_id: id, created_at: origin.join });
        if let Some(u) = &user_id {
            identity("user_id", u.clone());
            identity("member_no", format!("LS{id:08}"));
        }
        if let Some(p) = &phone {
            identity("phone", hash_e164(p));
        }
        if let Some(u) = unionid {
            identity("unionid", u);
        }
        if let Some(e) = external_userid {
            identity("external_userid", e);
        }
        if let Some(o) = openid {
            identity("openid", format!("{MINI_PROGRAM_APP_ID}:{o}"));
        }
        if let Some(a) = &anonymous_id {
            identity("anonymous_id", a.clone());
        }
        for (key, value) in traits {
            b.traits.push(TraitRow { profile_id: id, key, value: value.to_string(), updated_at: origin.join });
        }
        let mut tag = |t: &str| b.tags.push(TagRow { profile_id: id, tag: t.to_string(), source: "manual", created_at: origin.join });
        if cantonese {
            tag("说粤语");
        }
        if taste == "oat milk" {
            tag("燕麦奶");
        }
        if r.chance(0.3) {
            tag("上班族");
        } else if r.chance(0.12) {
            tag("学生");
        }
        if r.chance(0.08) {
            tag("宝妈");
        }
        if sharer {
            tag("爱分享");
        }
        if in_group {
            tag("社群活跃");
        }
        if on_wecom {
            b.relationships.push(RelationshipRow {
                profile_id: id,
                staff_userid: guide,
                active: deleted_at.is_none(),
                added_at: origin.join + 60_000,
                removed_at: deleted_at,
                state: Some(format!("{}-{}", store.id, origin.channel)),
            });
        }
    }

    fn origin(&self, rng: &mut Rng) -> Origin {
        let city = *rng.weighted(&self.city_weights);
        let store = *rng.pick(&self.org.stores_by_city[city]);
        let channel = *rng.weighted(&CHANNELS);
        // More customers joined recently: the private domain is growing.
        let join = self.start + (rng.f64().powf(0.6) * 364.0 * MS_PER_DAY as f64) as i64 + rng.range(8, 21) * HOUR;
        Origin { city, store, channel, join: join.min(self.end - HOUR) }
    }

    /// A time within `days` after `t`, not past the end of the year.
    fn later(&self, rng: &mut Rng, t: i64, days: i64) -> i64 {
        (t + rng.range(0, days.max(1)) * MS_PER_DAY + rng.range(0, 14) * HOUR).min(self.end)
    }

    /// Coffee runs peak on weekday mornings (Beijing time is UTC+8).
    fn order_time(&self, rng: &mut Rng, from: i64, until: i64) -> i64 {
        let days = ((until - from) / MS_PER_DAY).max(1);
        let day_start = from - from.rem_euclid(MS_PER_DAY) + rng.below(days as u64 + 1) as i64 * MS_PER_DAY;
        let local_hour = *rng.weighted(&[(8, 22), (9, 18), (10, 10), (12, 12), (13, 9), (15, 10), (17, 8), (19, 6), (21, 5)]);
        let t = day_start + (local_hour - 8) * HOUR + rng.range(0, 60) * 60_000;
        t.clamp(from, self.end)
    }

    fn order(&self, rng: &mut Rng, order_id: &str, store_id: &str) -> (String, Option<(String, i64)>) {
        let mut products = Vec::new();
        let mut subtotal = 0;
        for _ in 0..1 + rng.below(3) {
            let item = &MENU[*rng.weighted(&self.menu)];
            let quantity = if rng.chance(0.15) { 2 } else { 1 };
            subtotal += item.price_fen * quantity;
            products.push(json!({"sku": item.sku, "name": item.name, "category": item.category, "price_fen": item.price_fen, "quantity": quantity}));
        }
        let coupon = rng.chance(0.35).then(|| {
            let discount = (subtotal / 3).min(1500);
            (format!("CPN{}", rng.alnum(8).to_uppercase()), discount)
        });
        let revenue = subtotal - coupon.as_ref().map(|c| c.1).unwrap_or(0);
        let channel = *rng.weighted(&[("mini_program", 70), ("pos", 20), ("delivery", 10)]);
        // The order's main category: what the costliest line was.
        let category =
            products.iter().max_by_key(|p| p["price_fen"].as_i64().unwrap_or(0)).and_then(|p| p["category"].as_str()).unwrap_or("coffee").to_string();
        let mut payload = json!({
            "order_id": order_id, "revenue_fen": revenue, "currency": "CNY", "store_id": store_id,
            "channel": channel, "category": category, "products": products,
        });
        if let Some((code, _)) = &coupon {
            payload["coupon_code"] = json!(code);
        }
        (payload.to_string(), coupon)
    }
}

const SOURCE_MINI_PROGRAM: &str = r#"{"source":"mini_program"}"#;
const SOURCE_WECOM: &str = r#"{"source":"wecom"}"#;
const SOURCE_OFFICIAL_ACCOUNT: &str = r#"{"source":"official_account"}"#;

/// How many orders in the year: 30% none, 30% once, a long tail, and 1% daily regulars.
fn order_count(rng: &mut Rng) -> u64 {
    let u = rng.f64();
    if u < 0.30 {
        0
    } else if u < 0.60 {
        1
    } else if u < 0.99 {
        // Pareto tail (alpha 1.2) from 2 orders up, capped at 80.
        let v = rng.f64();
        (2.0 + (1.0 / (1.0 - v).powf(1.0 / 1.2) - 1.0) * 3.0).min(80.0) as u64
    } else {
        100 + rng.below(220)
    }
}

/// A mainland mobile number unique to the customer index.
fn unique_phone(index: u64) -> String {
    // A bijection on 0..10^9 spreads the numbers without collisions.
    let n = (index.wrapping_mul(387_420_489) + 12_345) % 1_000_000_000;
    format!("+861{}{n:09}", 3 + index % 7)
}

struct EventSink<'a> {
    seed: u64,
    index: u64,
    next: u32,
    b: &'a mut Batch,
    user_id: Option<String>,
    anonymous_id: Option<String>,
}

impl EventSink<'_> {
    fn push(&mut self, kind: &'static str, name: Option<&'static str>, ts: i64, payload: String, context: &str) {
        self.push_for(profile_of(self.index), kind, name, ts, payload, context);
    }

    fn push_for(&mut self, profile_id: ProfileId, kind: &'static str, name: Option<&'static str>, ts: i64, payload: String, context: &str) {
        let own = profile_id == profile_of(self.index);
        self.b.events.push(EventRow {
            profile_id,
            message_id: format!("demo-{}-{}-{}", self.seed, self.index, self.next),
            kind,
            name,
            ts,
            received_at: ts,
            user_id: if own { self.user_id.clone() } else { None },
            anonymous_id: if own { self.anonymous_id.clone() } else { None },
            payload,
            context: Some(context.to_string()),
        });
        self.next += 1;
    }
}

/// The n-th generated customer's profile id: the store numbers profiles from 1, and the
/// demo writes them in order.
fn profile_of(index: u64) -> ProfileId {
    ProfileId::new(index as i64 + 1).expect("a demo brand has fewer than 2^32 customers")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generator() -> Generator {
        Generator::new(42, NaiveDate::from_ymd_opt(2026, 11, 1).unwrap(), brand::organisation(42))
    }

    #[test]
    fn the_same_seed_makes_the_same_brand() {
        let a = generator().batch(0..200);
        let b = generator().batch(100..200);
        let a_tail: Vec<_> = a
            .events
            .iter()
            .filter(|e| e.message_id.split('-').nth(2).unwrap().parse::<u64>().unwrap() >= 100)
            .map(|e| (&e.message_id, &e.payload, e.ts))
            .collect();
        let b_all: Vec<_> = b.events.iter().map(|e| (&e.message_id, &e.payload, e.ts)).collect();
        assert_eq!(a_tail, b_all, "a customer is the same whatever batch it is generated in");
    }

    #[test]
    fn the_brand_looks_like_a_coffee_chain() {
        let org = brand::organisation(42);
        assert_eq!(org.stores.len(), 300);
        assert!((1_900..2_600).contains(&org.staff.len()), "{}", org.staff.len());
        let g = generator();
        let b = g.batch(0..5_000);
        let mut orders_per_customer = std::collections::HashMap::<ProfileId, u32>::new();
        for e in b.events.iter().filter(|e| e.name == Some("Order Completed")) {
            *orders_per_customer.entry(e.profile_id).or_default() += 1;
            assert!((g.start..=g.end).contains(&e.ts));
        }
        let buyers = orders_per_customer.len() as f64 / 5_000.0;
        assert!((0.6..0.8).contains(&buyers), "share of customers who ordered: {buyers}");
        let one_timers = orders_per_customer.values().filter(|&&n| n == 1).count() as f64 / orders_per_customer.len() as f64;
        assert!(one_timers > 0.35, "many one-timers: {one_timers}");
        let super_users = orders_per_customer.values().filter(|&&n| n >= 100).count();
        assert!((20..100).contains(&super_users), "a few super users: {super_users}");
        let per_customer = b.events.len() as f64 / 5_000.0;
        assert!((6.0..16.0).contains(&per_customer), "events per customer {per_customer}");
        for name in ["Contact Added", "Contact Deleted", "Official Account Followed", "Coupon Redeemed", "Shared", "Referred", "Group Joined", "Checked In"] {
            assert!(b.events.iter().any(|e| e.name == Some(name)), "{name} missing");
        }
        let phones: std::collections::HashSet<_> = b.identities.iter().filter(|i| i.kind == "phone").map(|i| &i.value).collect();
        assert_eq!(phones.len(), b.identities.iter().filter(|i| i.kind == "phone").count(), "phones are unique");
    }
}
