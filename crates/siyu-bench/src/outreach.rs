//! `siyu bench outreach`: plan a broadcast to a 5-million-member segment of a
//! 10-million-customer brand through the full contact policy, with a week of delivery
//! history so caps bite; then dispatch queued deliveries through the real server to a
//! webhook receiver on loopback.
//!
//! The plan phase runs the same code the server runs (`Owners::build`, `plan`) on
//! synthetic sets shaped like the demo brand: 2,000 guides in 300 stores, 90% of
//! customers with a guide, 85% consent, 1% inside the block cooldown.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use roaring::RoaringBitmap;
use siyu_core::rule::Channel;
use siyu_core::{ProfileId, Timestamp};
use siyu_outreach::ledger::DAY_MS;
use siyu_outreach::plan::{Audience, Owners, PlanOptions, plan};
use siyu_outreach::quiet::zone;
use siyu_outreach::{ContactLedger, ContactPolicy, TouchKind};
use siyu_store::StoreConfig;
use siyu_store::outreach::{self as stored, NewDelivery};

use super::mib;
use siyu_demo::rng::Rng;
use siyu_server::app::{self, ServeOptions};
use siyu_server::metrics::peak_rss_bytes;

#[derive(Args, Debug, Clone)]
pub struct OutreachBench {
    /// Customers in the brand.
    #[arg(long, default_value_t = 10_000_000)]
    pub customers: u32,
    /// Share of customers in the campaign's segment.
    #[arg(long, default_value_t = 0.5)]
    pub segment_share: f64,
    /// Past touches in the ledger (spread over the last 7 days).
    #[arg(long, default_value_t = 6_000_000)]
    pub history: u64,
    /// Deliveries queued for the dispatch run.
    #[arg(long, default_value_t = 200_000)]
    pub dispatch: u64,
    /// Recipients of end-to-end runs (comma-separated, e.g. 1000000,5000000): a whole
    /// SMS campaign through the real server, from the audience to the last delivery
    /// settled. Each fills a store of that many customers first (minutes at 5M).
    #[arg(long, value_delimiter = ',')]
    pub end_to_end: Vec<u64>,
    /// Run only this part: plan, dispatch or end-to-end.
    #[arg(long)]
    pub only: Option<String>,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

const GUIDES: u32 = 2_000;
const ZONES: [&str; 3] = ["Asia/Shanghai", "Asia/Hong_Kong", "Asia/Urumqi"];

pub async fn run(args: OutreachBench) -> anyhow::Result<std::process::ExitCode> {
    let part = |name: &str| args.only.as_deref().is_none_or(|o| o == name);
    if let Some(o) = args.only.as_deref().filter(|o| !["plan", "dispatch", "end-to-end"].contains(o)) {
        anyhow::bail!("--only takes plan, dispatch or end-to-end, not {o:?}");
    }
    if part("plan") {
        plan_phase(&args)?;
    }
    if part("dispatch") {
        dispatch_phase(&args).await?;
    }
    if part("end-to-end") {
        for &n in &args.end_to_end {
            end_to_end(n).await?;
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}

fn rss_mib() -> f64 {
    mib(siyu_server::metrics::rss_bytes().unwrap_or(0))
}

fn plan_phase(args: &OutreachBench) -> anyhow::Result<()> {
    let n = args.customers;
    println!("outreach plan: {n} customers, segment {:.0}%, {} past touches", args.segment_share * 100.0, args.history);
    let started = Instant::now();
    let mut rng = Rng::for_item(args.seed, 9, 0);
    let mut members = RoaringBitmap::new();
    let mut consent = RoaringBitmap::new();
    let mut blocked = RoaringBitmap::new();
    let mut guide_sets: Vec<RoaringBitmap> = vec![RoaringBitmap::new(); GUIDES as usize];
    for p in 0..n {
        if rng.chance(args.segment_share) {
            members.insert(p);
        }
        if rng.chance(0.85) {
            consent.insert(p);
        }
        if rng.chance(0.01) {
            blocked.insert(p);
        }
        if rng.chance(0.9) {
            // Guides hold customers of their store's neighbourhood: skewed sizes.
            let g = (rng.below(GUIDES as u64) * rng.below(GUIDES as u64) / GUIDES as u64) as usize;
            guide_sets[g].insert(p);
        }
    }
    let names: Vec<String> = (0..GUIDES).map(|g| format!("guide{g:04}")).collect();
    // 21:30 in Shanghai: quiet hours there (and in Hong Kong), not yet in Urumqi (19:30).
    let now = siyu_outreach::quiet::next_local_time(Timestamp::now(), chrono::NaiveTime::from_hms_opt(21, 30, 0).expect("time"), zone(Some("Asia/Shanghai")));
    let mut ledger = ContactLedger::new();
    for _ in 0..args.history {
        let p = rng.below(n as u64) as u32;
        let at = Timestamp(now.0 - rng.below(7 * DAY_MS as u64) as i64);
        let channel = if rng.chance(0.7) { Channel::Wecom } else { Channel::Sms };
        ledger.record(p, at, channel);
    }
    println!(
        "  synthetic brand and history built in {:.1} s ({} profiles with history; RSS {:.0} MiB)",
        started.elapsed().as_secs_f64(),
        ledger.profiles(),
        rss_mib()
    );

    // WeCom mass messages are confirmed by a guide in one go (up to 10,000 customers per
    // task), so a broadcast uses a generous per-guide capacity.
    let policy = ContactPolicy { guide_daily_capacity: 5_000, ..ContactPolicy::default() };
    println!(
        "  policy: caps {}/day {}/week, WeCom {}/month, cooldown {} days, quiet hours 21:00-09:00, guide capacity {}/day, holdout 10%",
        policy.caps.daily, policy.caps.weekly, policy.wecom_monthly_cap, policy.block_cooldown_days, policy.guide_daily_capacity
    );
    let rss_before = rss_mib();
    let t0 = Instant::now();
    let guides: Vec<(&str, &RoaringBitmap)> = names.iter().map(String::as_str).zip(guide_sets.iter()).collect();
    let owners = Owners::build(guides, |g| zone(Some(ZONES[g.bytes().map(usize::from).sum::<usize>() % ZONES.len()])), &members);
    let owners_secs = t0.elapsed().as_secs_f64();
    let audience =
        Audience { members: &members, consent: &consent, blocked: &blocked, owners: &owners, own_zones: &Default::default(), default_zone: zone(None) };
    let opts = PlanOptions { channel: Channel::Wecom, kind: TouchKind::Marketing, now, source: "campaign:1:run:1".into(), holdout_percent: 10.0 };
    let t1 = Instant::now();
    let (outcomes, summary) = plan(&policy, &audience, &opts, &mut ledger);
    let plan_secs = t1.elapsed().as_secs_f64();
    let total = owners_secs + plan_secs;
    println!("\nresults (WeCom broadcast, full contact policy)");
    println!("  audience              {}", summary.audience);
    println!("  would send            {} ({} deferred by quiet hours)", summary.sends, summary.deferred);
    for (reason, count) in &summary.suppressed {
        println!("  suppressed {reason:<18} {count}");
    }
    println!("  guide tasks           {} for {} guides", summary.tasks, summary.per_guide.len());
    println!("  owners from guides    {:.2} s", owners_secs);
    println!("  policy over audience  {:.2} s ({:.0} decisions/s)", plan_secs, summary.audience as f64 / plan_secs);
    println!("  full plan             {:.2} s (target ≤ 10 s)", total);
    println!(
        "  memory                {:.0} MiB added by the plan (outcomes {:.0} MiB); RSS {:.0} MiB, peak {:.0} MiB",
        rss_mib() - rss_before,
        mib((outcomes.capacity() * std::mem::size_of_val(&outcomes[0])) as u64),
        rss_mib(),
        mib(peak_rss_bytes().unwrap_or(0))
    );
    Ok(())
}

/// A webhook receiver on loopback that counts deliveries.
async fn receiver(count: Arc<AtomicU64>) -> anyhow::Result<String> {
    let router = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |axum::Json(body): axum::Json<serde_json::Value>| {
            let count = count.clone();
            async move {
                count.fetch_add(body["deliveries"].as_array().map(Vec::len).unwrap_or(0) as u64, Ordering::Relaxed);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, router).await });
    Ok(format!("http://{addr}/hook"))
}

async fn dispatch_phase(args: &OutreachBench) -> anyhow::Result<()> {
    let n = args.dispatch;
    println!(
        "\noutreach dispatch: {n} queued SMS deliveries, one per customer of a {n}-customer demo brand, through the server (SQLite) to a webhook on loopback"
    );
    let received = Arc::new(AtomicU64::new(0));
    let url = receiver(received.clone()).await?;
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("outreach.json"), serde_json::json!({"webhook_url": url}).to_string())?;
    let config = StoreConfig::Sqlite { data_dir: dir.path().to_path_buf() };
    // A populated store: dispatch re-checks consent, cooldown and merges per customer,
    // and renders from real traits.
    {
        let store = siyu_store::Store::open(&config).await?;
        siyu_demo::generate_into(&store, n, 7, None, true).await?;
    }
    let running = serve(config, dir.path()).await?;
    let outreach = running.state.outreach.clone();
    let now = outreach.now();
    let spec = serde_json::json!({"name": "bench", "audience": {"segment": "all"}, "channel": "sms", "content": "{{ traits.first_name | default: \"朋友\" }}，新品上市 {{ coupon.code }}", "coupon": "NEW"});
    let store = running.state.store.clone();
    let campaign = store.run(move |db| Box::pin(async move { stored::create_campaign(db, "bench", &spec, "bench", now).await })).await?;
    let rows: Vec<NewDelivery> = (0..n)
        .map(|i| NewDelivery {
            key: format!("campaign:{campaign}:run:1:{i}"),
            profile_id: ProfileId::from_bit(i as u32 + 1),
            campaign_id: Some(campaign),
            journey_id: None,
            channel: siyu_core::rule::Channel::Sms,
            kind: TouchKind::Marketing,
            status: siyu_core::delivery::DeliveryStatus::Queued,
            reason: None,
            guide: None,
            task_id: None,
            content: None,
            created_at: now,
            due_at: Timestamp(now.0 + 60 * 60_000), // not due until the clock moves
        })
        .collect();
    let t = Instant::now();
    store.transaction(move |db| Box::pin(async move { stored::insert_deliveries(db, &rows).await })).await?;
    println!("  recorded {n} deliveries in {:.1} s ({:.0} rows/s)", t.elapsed().as_secs_f64(), n as f64 / t.elapsed().as_secs_f64());
    running.state.engine.clock().advance(61 * 60_000);
    let started = Instant::now();
    while queued(&store).await? > 0 && started.elapsed() < Duration::from_secs(600) {
        outreach.tick().await?;
    }
    let secs = started.elapsed().as_secs_f64();
    let got = received.load(Ordering::Relaxed);
    let outcomes = outcomes(&store).await?;
    let left = queued(&store).await?;
    println!("  settled               {} of {n} in {secs:.2} s: {:.0} deliveries/s (target ≥ 20,000)", n as i64 - left, (n as i64 - left) as f64 / secs);
    println!("  received by the hook  {got}; outcomes: {}", outcomes.join(" · "));
    println!(
        "  (per batch of 2,000: re-check consent/cooldown/merge in the engine, render from traits and the campaign template and store it, fail those without a phone, POST with idempotency keys, mark sent; receiver in the same process)"
    );
    running.stop().await;
    Ok(())
}

/// A whole campaign at the real server: `n` customers who can take an SMS (a phone,
/// a name; 85% consent), a saved segment of all of them, and a campaign to it, run the
/// way the scheduler runs it (`campaigns::run_one`: the segment's members, the audience
/// facts from the engine, the plan through the contact policy, every outcome recorded
/// in one transaction), then dispatched to a webhook on loopback until nothing due is
/// left. The store is SQLite in a fresh directory; filling it and starting the server
/// are not timed.
async fn end_to_end(n: u64) -> anyhow::Result<()> {
    println!("\noutreach end to end: an SMS campaign to {n} customers through the server (SQLite) to a webhook on loopback");
    let received = Arc::new(AtomicU64::new(0));
    let url = receiver(received.clone()).await?;
    let dir = tempfile::tempdir()?;
    let outreach_config = serde_json::json!({"webhook_url": url, "policy": {"quiet_hours": null}});
    std::fs::write(dir.path().join("outreach.json"), outreach_config.to_string())?;
    let config = StoreConfig::Sqlite { data_dir: dir.path().to_path_buf() };
    let t = Instant::now();
    fill_recipients(&siyu_store::Store::open(&config).await?, n).await?;
    println!("  store filled in {:.1} s (not timed)", t.elapsed().as_secs_f64());
    let t = Instant::now();
    let running = serve(config, dir.path()).await?;
    let o = running.state.outreach.clone();
    let now = o.now();
    running.state.engine.define(siyu_engine::SegmentDef { name: "reachable".into(), rule: siyu_core::rule::parse("phone exists")? }).await?;
    println!("  server started and segment saved in {:.1} s (not timed)", t.elapsed().as_secs_f64());
    let spec = serde_json::json!({"name": "新品上市", "audience": {"segment": "reachable"}, "channel": "sms",
        "content": "{{ traits.first_name | default: \"朋友\" }}，新品上市，凭券 {{ coupon.code }} 到店立减", "coupon": "NEW"});
    let campaign = siyu_server::outreach::campaigns::create(&o, spec, "bench".into()).await.map_err(|e| anyhow::anyhow!("{e}"))?;

    let started = Instant::now();
    let rss_before = rss_mib();
    let summary = siyu_server::outreach::campaigns::run_one(&o, campaign, now).await?;
    let planned = started.elapsed().as_secs_f64();
    let store = running.state.store.clone();
    // The outreach loop's own round (the server's ticker runs it too; one at a time),
    // until nothing is queued or ten rounds in a row settle nothing.
    let (mut left, mut idle) = (queued(&store).await?, 0);
    while left > 0 && idle < 10 {
        o.tick().await?;
        let now_left = queued(&store).await?;
        idle = if now_left < left { 0 } else { idle + 1 };
        left = now_left;
    }
    let total = started.elapsed().as_secs_f64();
    let outcomes = outcomes(&store).await?;
    println!("  audience {} → {} to send; suppressed: {:?}", summary.audience, summary.sends, summary.suppressed);
    println!(
        "  facts + plan + record {planned:.1} s; dispatch {:.1} s ({:.0} deliveries/s)",
        total - planned,
        summary.sends as f64 / (total - planned).max(0.001)
    );
    println!(
        "  end to end            {total:.1} s for {n} recipients{}{}",
        if left > 0 { format!(", {left} STILL QUEUED") } else { String::new() },
        if n == 5_000_000 { "  (target: under 60 s)" } else { "" }
    );
    println!("  received by the hook  {}; deliveries: {}", received.load(Ordering::Relaxed), outcomes.join(" · "));
    println!(
        "  memory                RSS {:.0} MiB ({:+.0} MiB during the run), peak {:.0} MiB",
        rss_mib(),
        rss_mib() - rss_before,
        mib(peak_rss_bytes().unwrap_or(0))
    );
    running.stop().await;
    Ok(())
}

/// `n` customers with what an SMS needs: a user id, a phone (identity and trait), a
/// first name, and SMS consent for 85% of them.
async fn fill_recipients(store: &siyu_store::Store, n: u64) -> anyhow::Result<()> {
    use siyu_store::bulk::{Batch, BulkLoader, IdentityRow, ProfileRow, TraitRow};
    let mut loader = BulkLoader::begin(store).await?;
    let now = Timestamp::now().0;
    let mut rng = Rng::for_item(7, 11, 0);
    const NAMES: [&str; 8] = ["思远", "晓雯", "子涵", "浩然", "雨桐", "俊杰", "欣怡", "宇轩"];
    let mut start = 0;
    while start < n {
        let end = (start + 20_000).min(n);
        let mut b = Batch { profiles: vec![], identities: vec![], traits: vec![], events: vec![], tags: vec![], relationships: vec![] };
        for i in start..end {
            let id = ProfileId::from_bit(i as u32 + 1);
            let phone = format!("+86139{:08}", i);
            b.profiles.push(ProfileRow { id, uuid: uuid::Uuid::now_v7().to_string(), created_at: now });
            b.identities.push(IdentityRow { kind: "user_id", value: format!("r{id:09}"), profile_id: id, created_at: now });
            b.identities.push(IdentityRow { kind: "phone", value: siyu_core::phone::hash_e164(&phone), profile_id: id, created_at: now });
            let consent = rng.chance(0.85);
            for (key, value) in
                [("phone", serde_json::json!(phone)), ("first_name", serde_json::json!(NAMES[i as usize % 8])), ("consent.sms", serde_json::json!(consent))]
            {
                b.traits.push(TraitRow { profile_id: id, key, value: value.to_string(), updated_at: now });
            }
        }
        loader.write(b).await?;
        start = end;
    }
    loader.finish().await?;
    Ok(())
}

/// Deliveries still queued.
async fn queued(store: &siyu_store::Store) -> anyhow::Result<i64> {
    Ok(store.run(|db| Box::pin(async move { db.query_one("SELECT COUNT(*) FROM deliveries WHERE status = 'queued'", &[]).await?.int(0) })).await?)
}

/// How every delivery settled: "status reason count", most first.
async fn outcomes(store: &siyu_store::Store) -> anyhow::Result<Vec<String>> {
    Ok(store
        .run(|db| {
            Box::pin(async move {
                db.query("SELECT status, COALESCE(reason, ''), COUNT(*) FROM deliveries GROUP BY status, reason ORDER BY 3 DESC", &[])
                    .await?
                    .iter()
                    .map(|r| Ok(format!("{} {} {}", r.text(0)?, r.text(1)?, r.int(2)?)))
                    .collect::<Result<Vec<_>, siyu_store::StoreError>>()
            })
        })
        .await?)
}

/// The real server in this process, on a free loopback port, over `store`.
async fn serve(store: StoreConfig, data_dir: &std::path::Path) -> anyhow::Result<app::Running> {
    app::start(ServeOptions {
        store,
        data_dir: data_dir.to_path_buf(),
        listen: "127.0.0.1:0".parse()?,
        write_key: Some("wk_bench_outreach".into()),
        client_write_key: None,
        admin_token: Some(siyu_server::secrets::random_token("siyu_admin_")),
        limits: Default::default(),
    })
    .await
}
