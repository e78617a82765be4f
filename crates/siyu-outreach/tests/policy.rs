//! The contact policy, rule by rule and all together.

use roaring::RoaringBitmap;
use siyu_core::Timestamp;
use siyu_core::rule::Channel;
use siyu_outreach::ContactLedger;
use siyu_outreach::ledger::DAY_MS;
use siyu_outreach::plan::{Audience, Owners, PlanOptions, dry_run, plan};
use siyu_outreach::policy::{Caps, ContactPolicy, Decision, Facts, Reason, Touch, TouchKind, decide, evaluate};
use siyu_outreach::quiet::zone;

/// 10:00 in Shanghai (02:00 UTC): outside quiet hours.
fn morning() -> Timestamp {
    Timestamp::parse_iso8601("2026-06-10T02:00:00Z").unwrap()
}

fn touch(p: u32, channel: Channel, now: Timestamp) -> Touch<'static> {
    Touch { profile: p, channel, kind: TouchKind::Marketing, now, source: "campaign:1:run:1", holdout_percent: 0.0 }
}

fn facts() -> Facts<'static> {
    Facts { consent: true, recently_blocked: false, zone: zone(Some("Asia/Shanghai")), guide_zone: zone(Some("Asia/Shanghai")), guide: Some("g1") }
}

fn send_at(now: Timestamp) -> Decision {
    Decision::Send { at: now, deferred: false }
}

#[test]
fn consent_is_required_even_for_service_messages() {
    let (p, mut l) = (ContactPolicy::default(), ContactLedger::new());
    let no = Facts { consent: false, ..facts() };
    assert_eq!(decide(&p, &touch(1, Channel::Sms, morning()), &no, &mut l), Decision::Suppress(Reason::NoConsent));
    let service = Touch { kind: TouchKind::Service, ..touch(1, Channel::Sms, morning()) };
    assert_eq!(decide(&p, &service, &no, &mut l), Decision::Suppress(Reason::NoConsent));
    assert_eq!(decide(&p, &service, &facts(), &mut l), send_at(morning()));
}

#[test]
fn a_recent_block_starts_a_cooldown() {
    let (p, mut l) = (ContactPolicy::default(), ContactLedger::new());
    let blocked = Facts { recently_blocked: true, ..facts() };
    assert_eq!(decide(&p, &touch(1, Channel::Sms, morning()), &blocked, &mut l), Decision::Suppress(Reason::BlockCooldown));
    assert_eq!(p.cooldown_rule(), r#"last("Contact Deleted") >= ago(30d) or last("Message Complained") >= ago(30d)"#);
}

#[test]
fn frequency_caps_daily_weekly_and_per_channel() {
    let mut p = ContactPolicy::default();
    let mut l = ContactLedger::new();
    let t0 = morning();
    assert_eq!(decide(&p, &touch(1, Channel::Sms, t0), &facts(), &mut l), send_at(t0));
    // A second touch the same day, on any channel, hits the daily cap.
    assert_eq!(decide(&p, &touch(1, Channel::Email, Timestamp(t0.0 + 3_600_000)), &facts(), &mut l), Decision::Suppress(Reason::DailyCap));
    let day = |d: i64| Timestamp(t0.0 + d * DAY_MS);
    assert_eq!(decide(&p, &touch(1, Channel::Email, day(1)), &facts(), &mut l), send_at(day(1)));
    assert_eq!(decide(&p, &touch(1, Channel::Email, day(2)), &facts(), &mut l), send_at(day(2)));
    assert_eq!(decide(&p, &touch(1, Channel::Email, day(3)), &facts(), &mut l), Decision::Suppress(Reason::WeeklyCap));
    // A week after the first, there is room again.
    assert_eq!(decide(&p, &touch(1, Channel::Email, day(7)), &facts(), &mut l), send_at(day(7)));

    // Per channel: SMS at most once a week, while the global caps are generous.
    p.caps = Caps { daily: 10, weekly: 10 };
    p.channel_caps.insert("sms".into(), Caps { daily: 1, weekly: 1 });
    let mut l = ContactLedger::new();
    assert_eq!(decide(&p, &touch(2, Channel::Sms, t0), &facts(), &mut l), send_at(t0));
    assert_eq!(decide(&p, &touch(2, Channel::Sms, t0), &facts(), &mut l), Decision::Suppress(Reason::ChannelDailyCap));
    assert_eq!(decide(&p, &touch(2, Channel::Sms, day(2)), &facts(), &mut l), Decision::Suppress(Reason::ChannelWeeklyCap));
    assert_eq!(decide(&p, &touch(2, Channel::Email, t0), &facts(), &mut l), send_at(t0));
}

#[test]
fn wecom_monthly_receive_cap() {
    let mut p = ContactPolicy { caps: Caps { daily: 10, weekly: 10 }, ..ContactPolicy::default() };
    p.wecom_monthly_cap = 2;
    let mut l = ContactLedger::new();
    let day = |d: i64| Timestamp(morning().0 + d * DAY_MS);
    assert_eq!(decide(&p, &touch(1, Channel::Wecom, day(0)), &facts(), &mut l), send_at(day(0)));
    assert_eq!(decide(&p, &touch(1, Channel::Wecom, day(10)), &facts(), &mut l), send_at(day(10)));
    assert_eq!(decide(&p, &touch(1, Channel::Wecom, day(20)), &facts(), &mut l), Decision::Suppress(Reason::WecomMonthlyCap));
    assert_eq!(decide(&p, &touch(1, Channel::Sms, day(20)), &facts(), &mut l), send_at(day(20)));
}

#[test]
fn quiet_hours_defer_in_the_customers_zone_and_still_count() {
    let p = ContactPolicy::default();
    let mut l = ContactLedger::new();
    // 23:00 in Shanghai.
    let late = Timestamp::parse_iso8601("2026-06-10T15:00:00Z").unwrap();
    let nine = Timestamp::parse_iso8601("2026-06-11T01:00:00Z").unwrap();
    assert_eq!(decide(&p, &touch(1, Channel::Sms, late), &facts(), &mut l), Decision::Send { at: nine, deferred: true });
    // The deferred touch holds the customer's daily slot at 09:00.
    assert_eq!(decide(&p, &touch(1, Channel::Sms, Timestamp(nine.0 + 3_600_000)), &facts(), &mut l), Decision::Suppress(Reason::DailyCap));
    // Same instant, a customer whose store is in London (16:00 there) is not deferred.
    let london = Facts { zone: zone(Some("Europe/London")), ..facts() };
    assert_eq!(decide(&p, &touch(2, Channel::Sms, late), &london, &mut l), send_at(late));
}

#[test]
fn holdout_is_stable_and_about_the_right_size() {
    let p = ContactPolicy::default();
    let l = ContactLedger::new();
    let held = (0..10_000u32)
        .filter(|&i| {
            let t = Touch { holdout_percent: 10.0, ..touch(i, Channel::Sms, morning()) };
            evaluate(&p, &t, &facts(), &l) == Decision::Suppress(Reason::Holdout)
        })
        .count();
    assert!((800..1200).contains(&held), "{held} of 10000 held out at 10%");
    let t = Touch { holdout_percent: 10.0, ..touch(42, Channel::Sms, morning()) };
    assert_eq!(evaluate(&p, &t, &facts(), &l), evaluate(&p, &t, &facts(), &l));
}

#[test]
fn the_holdout_is_drawn_from_the_eligible_audience_before_any_cap() {
    let p = ContactPolicy::default();
    let held = (0..10_000u32)
        .find(|&i| {
            evaluate(&p, &Touch { holdout_percent: 50.0, ..touch(i, Channel::Sms, morning()) }, &facts(), &ContactLedger::new())
                == Decision::Suppress(Reason::Holdout)
        })
        .unwrap();
    let t = Touch { holdout_percent: 50.0, ..touch(held, Channel::Sms, morning()) };
    // Already touched today: still in the holdout (not "daily_cap"), so the holdout
    // group does not depend on what other campaigns did.
    let mut l = ContactLedger::new();
    l.record(held, morning(), Channel::Email);
    assert_eq!(evaluate(&p, &t, &facts(), &l), Decision::Suppress(Reason::Holdout));
    // Held out takes no slot: the customer can still be reached by another campaign.
    let mut l = ContactLedger::new();
    assert_eq!(decide(&p, &t, &facts(), &mut l), Decision::Suppress(Reason::Holdout));
    assert_eq!(decide(&p, &touch(held, Channel::Sms, morning()), &facts(), &mut l), send_at(morning()));
    // Not eligible (no consent, blocked) is never counted as held out.
    assert_eq!(evaluate(&p, &t, &Facts { consent: false, ..facts() }, &l), Decision::Suppress(Reason::NoConsent));
    assert_eq!(evaluate(&p, &t, &Facts { recently_blocked: true, ..facts() }, &l), Decision::Suppress(Reason::BlockCooldown));
}

#[test]
fn wecom_needs_a_guide_with_capacity() {
    let p = ContactPolicy { guide_daily_capacity: 2, ..ContactPolicy::default() };
    let mut l = ContactLedger::new();
    let none = Facts { guide: None, ..facts() };
    assert_eq!(decide(&p, &touch(1, Channel::Wecom, morning()), &none, &mut l), Decision::Suppress(Reason::NoGuide));
    assert_eq!(decide(&p, &touch(1, Channel::Wecom, morning()), &facts(), &mut l), send_at(morning()));
    assert_eq!(decide(&p, &touch(2, Channel::Wecom, morning()), &facts(), &mut l), send_at(morning()));
    assert_eq!(decide(&p, &touch(3, Channel::Wecom, morning()), &facts(), &mut l), Decision::Suppress(Reason::GuideCapacity));
    // The next local day the guide has capacity again.
    assert_eq!(decide(&p, &touch(3, Channel::Wecom, Timestamp(morning().0 + DAY_MS)), &facts(), &mut l), send_at(Timestamp(morning().0 + DAY_MS)));
}

#[test]
fn a_guides_capacity_counts_the_guides_days_wherever_the_customer_is() {
    let p = ContactPolicy { guide_daily_capacity: 1, quiet_hours: None, ..ContactPolicy::default() };
    let mut l = ContactLedger::new();
    // The guide is in Shanghai, the customer in London (she gave her own zone).
    let f = Facts { zone: zone(Some("Europe/London")), ..facts() };
    let before_midnight = Timestamp::parse_iso8601("2026-06-10T15:30:00Z").unwrap(); // 23:30 Shanghai, 16:30 London
    let after_midnight = Timestamp::parse_iso8601("2026-06-10T16:30:00Z").unwrap(); // 00:30 Shanghai, 17:30 London
    assert_eq!(decide(&p, &touch(1, Channel::Wecom, before_midnight), &f, &mut l), send_at(before_midnight));
    // A new day for the guide, though still the same afternoon for the customer.
    assert_eq!(decide(&p, &touch(2, Channel::Wecom, after_midnight), &f, &mut l), send_at(after_midnight));
}

#[test]
fn rules_apply_in_order_the_first_failure_is_the_reason() {
    let p = ContactPolicy::default();
    let mut l = ContactLedger::new();
    l.record(1, morning(), Channel::Wecom);
    // No consent and over the cap: consent is reported.
    let f = Facts { consent: false, recently_blocked: true, guide: None, ..facts() };
    assert_eq!(evaluate(&p, &touch(1, Channel::Wecom, morning()), &f, &l), Decision::Suppress(Reason::NoConsent));
    let f = Facts { recently_blocked: true, guide: None, ..facts() };
    assert_eq!(evaluate(&p, &touch(1, Channel::Wecom, morning()), &f, &l), Decision::Suppress(Reason::BlockCooldown));
    let f = Facts { guide: None, ..facts() };
    assert_eq!(evaluate(&p, &touch(1, Channel::Wecom, morning()), &f, &l), Decision::Suppress(Reason::DailyCap));
    assert_eq!(evaluate(&p, &touch(2, Channel::Wecom, morning()), &f, &l), Decision::Suppress(Reason::NoGuide));
}

#[test]
fn two_campaigns_planning_through_one_ledger_never_exceed_a_cap() {
    let p = ContactPolicy::default();
    let mut l = ContactLedger::new();
    let members: RoaringBitmap = (0..1000).collect();
    let owners = Owners { guides: vec!["g1".into()], zones: vec![zone(None)], owner: vec![0; 1000] };
    let audience = Audience {
        members: &members,
        consent: &members,
        blocked: &RoaringBitmap::new(),
        owners: &owners,
        own_zones: &Default::default(),
        default_zone: zone(None),
    };
    let opts = |source: &str| PlanOptions { channel: Channel::Sms, kind: TouchKind::Marketing, now: morning(), source: source.into(), holdout_percent: 0.0 };
    // The dry run changes nothing.
    let (_, preview) = dry_run(&p, &audience, &opts("campaign:1:run:1"), &mut l);
    assert_eq!(preview.sends, 1000);
    assert_eq!(l.touches(), 0);
    let (_, first) = plan(&p, &audience, &opts("campaign:1:run:1"), &mut l);
    let (_, second) = plan(&p, &audience, &opts("campaign:2:run:1"), &mut l);
    assert_eq!(first.sends, 1000);
    assert_eq!(second.sends, 0);
    assert_eq!(second.suppressed.get("daily_cap"), Some(&1000));
}

#[test]
fn wecom_plans_become_guide_tasks_split_at_the_task_limit() {
    let p = ContactPolicy { wecom_task_limit: 300, guide_daily_capacity: 10_000, ..ContactPolicy::default() };
    let mut l = ContactLedger::new();
    let members: RoaringBitmap = (0..1000).collect();
    let owner: Vec<u32> = (0..1000)
        .map(|i| {
            if i < 700 {
                0
            } else if i < 990 {
                1
            } else {
                u32::MAX
            }
        })
        .collect();
    let owners = Owners { guides: vec!["g1".into(), "g2".into()], zones: vec![zone(None); 2], owner };
    let audience = Audience {
        members: &members,
        consent: &members,
        blocked: &RoaringBitmap::new(),
        owners: &owners,
        own_zones: &Default::default(),
        default_zone: zone(None),
    };
    let opts = PlanOptions { channel: Channel::Wecom, kind: TouchKind::Marketing, now: morning(), source: "c".into(), holdout_percent: 0.0 };
    let (_, s) = plan(&p, &audience, &opts, &mut l);
    assert_eq!(s.per_guide.get("g1"), Some(&700));
    assert_eq!(s.per_guide.get("g2"), Some(&290));
    assert_eq!(s.suppressed.get("no_guide"), Some(&10));
    assert_eq!(s.tasks, 3 + 1);
}
