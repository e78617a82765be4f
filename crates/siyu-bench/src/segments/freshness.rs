//! Freshness of live segments under load: while the ingest benchmark's traffic runs at
//! a steady rate, probe events are sent one by one, each making a customer enter a live
//! segment; the time from sending a probe to its member appearing is measured. Probes
//! alternate between the brand's members (known customers, the everyday case) and new
//! customers (whose profile the store must create first), reported apart. A probe that
//! never arrives is counted as missing, not left out of the figures.
//!
//! The server runs in this process, so the watcher sees the engine's membership the
//! moment it changes; the load comes from `siyu bench ingest --rate` in a process of its
//! own.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use siyu_core::rule::parse;
use siyu_engine::SegmentDef;
use siyu_store::{Store, StoreConfig};

use tokio::io::AsyncBufReadExt;

use super::SegmentsBench;
use siyu_server::app::{self, ServeOptions};

const WRITE_KEY: &str = "wk_freshness";

pub async fn run(args: &SegmentsBench) -> anyhow::Result<()> {
    let customers = 100_000;
    println!("\nfreshness: a live segment under {} events/s of ingest for {} s ({customers} customers on SQLite)", args.freshness_rate, args.freshness_seconds);
    let dir = tempfile::tempdir()?;
    let config = StoreConfig::Sqlite { data_dir: dir.path().to_path_buf() };
    {
        let store = Store::open(&config).await?;
        siyu_demo::generate_into(&store, customers, args.seed, None, false).await?;
    }
    let admin_token = siyu_server::secrets::random_token("siyu_admin_");
    let running = app::start(ServeOptions {
        store: config,
        data_dir: dir.path().to_path_buf(),
        listen: "127.0.0.1:0".parse()?,
        write_key: Some(WRITE_KEY.into()),
        client_write_key: None,
        admin_token: Some(admin_token.clone()),
        limits: Default::default(),
    })
    .await?;
    let engine = running.state.engine.clone();
    // Two kinds of probe, alternating: a known customer (one of the brand's members)
    // whose event makes them enter a segment, which the engine applies as soon as it is
    // acknowledged; and a new customer, whose profile the store must create first.
    engine.define(SegmentDef { name: "probed_members".into(), rule: parse(r#"count("Probe", 1d) >= 1"#)? }).await?;
    engine.define(SegmentDef { name: "probed_newcomers".into(), rule: parse(r#"count("First Probe", 1d) >= 1"#)? }).await?;
    let members = probe_members(&running.state.store, args.freshness_seconds as usize * 10).await?;
    let base = format!("http://{}", running.addr);
    let client = siyu_wecom::client::http_builder().no_proxy().pool_max_idle_per_host(32).build()?;

    let load = Load { base: base.clone(), admin_token, rate: args.freshness_rate, customers };
    if args.freshness_warmup > 0 {
        // The load's customers are first seen during the warm-up: their new identities,
        // profiles and merges cost the indexer several times what a known customer's
        // event does.
        let started = Instant::now();
        load.start(args.freshness_warmup).await?.finish().await?;
        running.state.ingest.settle().await;
        println!(
            "  warm-up: {} events at {} events/s, all applied after {:.1} s",
            args.freshness_rate * args.freshness_warmup,
            args.freshness_rate,
            started.elapsed().as_secs_f64()
        );
    }
    let early_before = {
        let state = engine.read();
        (state.index.early_applied, state.index.early_taken_back, state.index.early_waits())
    };
    let load_process = load.start(args.freshness_seconds).await?;
    let started = Instant::now();

    // Watch the segments: a member probe has arrived when its profile is in
    // `probed_members`; newcomers are created in order, so when `probed_newcomers`
    // holds k profiles, newcomer probe k has arrived.
    let probes: Arc<Mutex<Probes>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Where any lag sits: acknowledged but not yet in the store, or in the store but
    // not yet in the engine.
    let lags: Arc<Mutex<(u64, u64)>> = Arc::default();
    let watcher = {
        let (engine, probes, stop, ingest, lags) = (engine.clone(), probes.clone(), stop.clone(), running.state.ingest.clone(), lags.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let (appended, indexed) = (ingest.appended(), ingest.indexed());
                {
                    let state = engine.read();
                    let mut l = lags.lock().expect("lock");
                    l.0 = l.0.max(appended.saturating_sub(indexed));
                    l.1 = l.1.max(indexed.saturating_sub(state.index.applied_seq));
                    drop(l);
                    let mut p = probes.lock().expect("lock");
                    let now = Instant::now();
                    if let Some(s) = state.segments.get("probed_members") {
                        for probe in p.members.iter_mut().filter(|m| m.reached.is_none()) {
                            if s.members.contains(probe.profile) {
                                probe.reached = Some(now);
                            }
                        }
                    }
                    let n = state.segments.get("probed_newcomers").map_or(0, |s| s.members.len() as usize);
                    while p.newcomers_reached.len() < n {
                        p.newcomers_reached.push(now);
                    }
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let mut i = 0;
    while started.elapsed() < Duration::from_secs(args.freshness_seconds) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let member = (i % 2 == 0).then(|| members.get(i / 2)).flatten();
        let body = match member {
            Some((user_id, _)) => serde_json::json!({"userId": user_id, "event": "Probe"}),
            None => serde_json::json!({"userId": format!("probe-{i}"), "event": "First Probe"}),
        };
        let sent = Instant::now();
        match member {
            Some((_, profile)) => probes.lock().expect("lock").members.push(MemberProbe { profile: *profile, sent, reached: None }),
            None => probes.lock().expect("lock").newcomers_sent.push(sent),
        }
        let resp = client.post(format!("{base}/v1/track")).basic_auth(WRITE_KEY, Some("")).json(&body).send().await?;
        if !resp.status().is_success() {
            anyhow::bail!("probe failed: {}", resp.status());
        }
        i += 1;
    }
    // A probe has 60 s from the last one sent; the load generator's own drain is
    // waited for after.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !probes.lock().expect("lock").all_reached() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let _ = watcher.join();
    let load_report = load_process.finish().await?;
    {
        let probes = probes.lock().expect("lock");
        println!("  background load (siyu bench ingest --rate {} --seconds {}, its own process):", args.freshness_rate, args.freshness_seconds);
        for line in load_report.lines().filter(|l| l.starts_with("  ")) {
            println!("    {}", line.trim());
        }
        let (ingest_lag, engine_lag) = *lags.lock().expect("lock");
        println!("  largest backlog: {ingest_lag} messages waiting for the store, {engine_lag} applied but not yet in the engine");
        let (applied, taken_back, waits) = {
            let state = engine.read();
            (state.index.early_applied - early_before.0, state.index.early_taken_back - early_before.1, state.index.early_waits())
        };
        let before = early_before.2;
        println!(
            "  messages applied by the engine on acknowledgement, before the store: {applied} ({taken_back} taken back); waited for the store: {} new customers or possible merges, {} behind such a message, {} with a new identity not surely attached",
            waits.uncertain - before.uncertain,
            waits.unsettled - before.unsettled,
            waits.unattachable - before.unattachable
        );
        let members: Vec<(Instant, Option<Instant>)> = probes.members.iter().map(|m| (m.sent, m.reached)).collect();
        report("a known customer's event", &members);
        let newcomers: Vec<(Instant, Option<Instant>)> =
            probes.newcomers_sent.iter().enumerate().map(|(k, s)| (*s, probes.newcomers_reached.get(k).copied())).collect();
        report("a new customer's first event", &newcomers);
    }
    running.stop().await;
    Ok(())
}

#[derive(Default)]
struct Probes {
    members: Vec<MemberProbe>,
    newcomers_sent: Vec<Instant>,
    newcomers_reached: Vec<Instant>,
}

struct MemberProbe {
    profile: u32,
    sent: Instant,
    reached: Option<Instant>,
}

impl Probes {
    fn all_reached(&self) -> bool {
        self.members.iter().all(|m| m.reached.is_some()) && self.newcomers_reached.len() >= self.newcomers_sent.len()
    }
}

/// Members of the demo brand to probe with, spread over its customers: `(userId, profile)`.
async fn probe_members(store: &Store, n: usize) -> anyhow::Result<Vec<(String, u32)>> {
    let rows = store
        .run(|db| Box::pin(async move { db.query("SELECT value, profile_id FROM identities WHERE kind = 'user_id' ORDER BY profile_id", &[]).await }))
        .await?;
    let all: Vec<(String, u32)> = rows.iter().map(|r| Ok((r.text(0)?, r.int(1)? as u32))).collect::<Result<_, siyu_store::StoreError>>()?;
    let step = (all.len() / n.max(1)).max(1);
    Ok(all.into_iter().step_by(step).take(n).collect())
}

/// Event-to-membership latencies of one kind of probe.
fn report(what: &str, probes: &[(Instant, Option<Instant>)]) {
    let mut latencies: Vec<u64> = probes.iter().filter_map(|(s, r)| r.map(|r| r.saturating_duration_since(*s).as_micros() as u64)).collect();
    latencies.sort_unstable();
    // A probe that never arrived is slower than any that did: it counts at the end of
    // the order, so a percentile it reaches reads as missing.
    let missing = probes.len() - latencies.len();
    let at = |p: f64| {
        let rank = ((p / 100.0) * (probes.len().max(1) - 1) as f64).round() as usize;
        latencies.get(rank).map_or_else(|| "missing".to_string(), |us| format!("{:.0} ms", *us as f64 / 1000.0))
    };
    println!(
        "  {what} to segment membership ({} probes, {missing} never arrived within 60 s): p50 {}  p95 {}  max {}",
        probes.len(),
        at(50.0),
        at(95.0),
        if missing > 0 { "missing".to_string() } else { format!("{:.0} ms", latencies.last().copied().unwrap_or(0) as f64 / 1000.0) }
    );
}

/// The ingest benchmark, paced, as a process of its own against the server here.
struct Load {
    base: String,
    admin_token: String,
    rate: u64,
    customers: u64,
}

struct LoadProcess {
    child: tokio::process::Child,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

impl Load {
    /// Starts the load and returns once it is sending (its request bodies are built first).
    async fn start(&self, seconds: u64) -> anyhow::Result<LoadProcess> {
        let mut child = tokio::process::Command::new(std::env::current_exe()?)
            .args(["ingest", "--url", &self.base, "--write-key", WRITE_KEY])
            .args(["--rate", &self.rate.to_string(), "--seconds", &seconds.to_string(), "--warmup", "0", "--customers", &self.customers.to_string()])
            .env("SIYU_ADMIN_TOKEN", &self.admin_token)
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("piped")).lines();
        while let Some(line) = lines.next_line().await? {
            if line.ends_with(": sending") {
                return Ok(LoadProcess { child, lines });
            }
        }
        anyhow::bail!("the load generator ended before sending: {:?}", child.wait().await?)
    }
}

impl LoadProcess {
    /// Waits for the load to end; its report.
    async fn finish(mut self) -> anyhow::Result<String> {
        let mut out = String::new();
        while let Some(line) = self.lines.next_line().await? {
            out.push_str(&line);
            out.push('\n');
        }
        let status = self.child.wait().await?;
        // 3 is a rate that did not hold (reported in `out`); anything else is a failure.
        if !status.success() && status.code() != Some(3) {
            anyhow::bail!("the load generator failed ({status}):\n{out}");
        }
        Ok(out)
    }
}
