//! `siyu bench ingest`: sustained, durable ingest over loopback HTTP.
//!
//! Realistic traffic: Segment batches of 100 messages (the SDKs' default flush size)
//! mixing mini-program orders and product views, page views and identifies, over a
//! population of customers where most are known and some are new, sent by 16 concurrent
//! connections. Every request is answered only after its events are committed with an
//! fsync, exactly as in production. The server is a `siyu serve` child process; this
//! process is the load generator.
//!
//! Two modes. A burst sends `--events` as fast as the server answers (16 connections)
//! and waits until all are applied. Paced (`--rate 20000,40000 --seconds 30`) sends each
//! rate as an open-loop stream, request k started at its scheduled time whatever the
//! earlier ones are doing, and says whether the rate holds: every request answered,
//! p99 under 50 ms measured from the scheduled time, the answers keeping the pace, and
//! the backlog of acknowledged but unapplied events bounded. The highest rate that holds
//! with every lower one is the sustained rate.

use std::fmt::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

use super::server::ChildServer;
use super::{mib, percentile};
use siyu_demo::rng::Rng;

/// A paced rate holds only if p99 stays under this.
const P99_LIMIT_MS: f64 = 50.0;

#[derive(Args, Debug, Clone)]
pub struct IngestBench {
    /// Events to send (burst mode).
    #[arg(long, default_value_t = 1_000_000)]
    pub events: u64,
    /// Messages per batch request.
    #[arg(long, default_value_t = 100)]
    pub batch: u64,
    /// Concurrent connections.
    #[arg(long, default_value_t = 16)]
    pub connections: usize,
    /// Distinct customers the traffic is about.
    #[arg(long, default_value_t = 200_000)]
    pub customers: u64,
    /// Gzip the request bodies, as SDKs can.
    #[arg(long)]
    pub gzip: bool,
    /// Paced mode: send at each of these rates (events/s, comma-separated, in order)
    /// for --seconds, and report the highest that holds.
    #[arg(long, value_delimiter = ',')]
    pub rate: Vec<u64>,
    /// Seconds per paced rate.
    #[arg(long, default_value_t = 30)]
    pub seconds: u64,
    /// Seconds of load at the lowest rate before the paced rates, not reported.
    #[arg(long, default_value_t = 10)]
    pub warmup: u64,
    /// While the load runs, a simulated WeCom customer adds a guide every second; time
    /// how long until their welcome message is sent (WeCom takes it within 20 s).
    #[arg(long)]
    pub welcome_probes: bool,
    /// Drive this running server instead of starting one (needs --write-key and
    /// SIYU_ADMIN_TOKEN for the stats).
    #[arg(long)]
    pub url: Option<String>,
    #[arg(long)]
    pub write_key: Option<String>,
    /// Data directory for the server the benchmark starts (default: a fresh temp dir).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Start the server on PostgreSQL instead.
    #[arg(long)]
    pub database_url: Option<String>,
}

/// The server under load: started here, or one already running.
struct Target {
    server: Option<ChildServer>,
    base_url: String,
    write_key: String,
    admin_token: String,
    client: reqwest::Client,
}

pub async fn run(args: IngestBench) -> anyhow::Result<ExitCode> {
    if args.batch == 0 || args.events == 0 || args.connections == 0 || args.seconds == 0 || args.rate.contains(&0) {
        bail!("--events, --batch, --connections, --seconds and every --rate must be positive");
    }
    let temp = tempfile::tempdir()?;
    let (welcome, sim_env) = if args.welcome_probes {
        if args.url.is_some() {
            bail!("--welcome-probes starts its own server with a simulated WeCom corp; leave out --url");
        }
        let (w, env) = WelcomeProbes::prepare().await?;
        (Some(w), env)
    } else {
        (None, Vec::new())
    };
    let client = siyu_wecom::client::http_builder().no_proxy().pool_max_idle_per_host(args.connections + 4).build()?;
    let target = match &args.url {
        Some(url) => {
            let write_key = args.write_key.clone().context("--url needs --write-key")?;
            let admin_token = std::env::var("SIYU_ADMIN_TOKEN").context("--url needs SIYU_ADMIN_TOKEN for the stats")?;
            Target { server: None, base_url: url.trim_end_matches('/').to_string(), write_key, admin_token, client }
        }
        None => {
            let dir = args.data_dir.clone().unwrap_or_else(|| temp.path().to_path_buf());
            let s = ChildServer::start(&dir, args.database_url.as_deref(), &sim_env).await?;
            let (base_url, write_key, admin_token) = (s.base_url.clone(), s.write_key.clone(), s.admin_token.clone());
            Target { server: Some(s), base_url, write_key, admin_token, client }
        }
    };
    let welcome = match welcome {
        Some(w) => Some(w.start(&target).await?),
        None => None,
    };
    let ok = if args.rate.is_empty() {
        burst(&args, &target, welcome).await?
    } else {
        let ok = paced(&args, &target).await?;
        if let Some(w) = welcome {
            w.report().await;
        }
        ok
    };
    if let Some(s) = &target.server {
        println!("  server peak memory    {:.0} MiB", mib(s.peak_rss().unwrap_or(0)));
    }
    println!("  bench client peak     {:.0} MiB", mib(siyu_server::metrics::peak_rss_bytes().unwrap_or(0)));
    if let Some(s) = target.server {
        s.stop();
    }
    // 3: the benchmark ran, and no paced rate held (1 is an error).
    Ok(match (ok, args.rate.is_empty()) {
        (true, _) => ExitCode::SUCCESS,
        (false, false) => ExitCode::from(3),
        (false, true) => ExitCode::FAILURE,
    })
}

/// Everything at once: acknowledged rate, then the time until all is applied.
/// Welcome probes, if any, run while the burst is sent and applied (and add their own
/// events: each add and the contact's name).
async fn burst(args: &IngestBench, t: &Target, probes: Option<RunningProbes>) -> anyhow::Result<bool> {
    let probed = probes.is_some();
    let requests = args.events.div_ceil(args.batch);
    println!(
        "siyu bench ingest: {} events in {} batches of {} over {} connections, {} customers{}",
        args.events,
        requests,
        args.batch,
        args.connections,
        args.customers,
        if args.gzip { ", gzip" } else { "" }
    );
    let bodies = Arc::new(build_bodies(args, args.events, requests)?);
    let before = stats(t).await?;

    let bar = ProgressBar::new(args.events);
    bar.set_style(ProgressStyle::with_template("{spinner} sending [{bar:30}] {pos}/{len} events ({per_sec})").expect("template").progress_chars("=> "));
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..args.connections {
        let (bodies, next, bar, t) = (bodies.clone(), next.clone(), bar.clone(), Sender::of(t, args.gzip));
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((body, count)) = bodies.get(i) else { break };
                let sent = Instant::now();
                if let Err(e) = t.send(body.clone()).await {
                    bail!("request {i} failed: {e}");
                }
                latencies.push(sent.elapsed().as_micros() as u64);
                bar.inc(*count);
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for w in workers {
        latencies.extend(w.await??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    // Acknowledged means durable; applied means visible in profiles. Sustained ingest
    // is the slower of the two, so wait for the store to apply everything.
    wait_applied(t, Duration::from_secs(3600)).await?;
    let applied_after = started.elapsed().as_secs_f64();
    if let Some(p) = probes {
        p.report().await;
    }

    // Disk use at rest: the server truncates its SQLite WAL once writes have been quiet
    // for 5 seconds.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let after = stats(t).await?;
    let stored = after.0 - before.0;
    let complete = stored as u64 == args.events || (probed && stored as u64 >= args.events);
    latencies.sort_unstable();
    let mut out = String::new();
    writeln!(out, "\nresults ({} backend)", after.2)?;
    writeln!(out, "  events acknowledged   {}", args.events)?;
    let note = match (complete, stored as u64 > args.events) {
        (false, _) => "  (MISMATCH)",
        (true, true) => "  (with the welcome probes' own events)",
        (true, false) => "",
    };
    writeln!(out, "  events stored         {stored}{note}")?;
    writeln!(
        out,
        "  acknowledged          {:.0} events/s ({:.0} requests/s) over {elapsed:.2} s",
        args.events as f64 / elapsed,
        latencies.len() as f64 / elapsed
    )?;
    writeln!(
        out,
        "  drained (applied)     {:.0} events/s: all {} events in profiles after {applied_after:.2} s",
        args.events as f64 / applied_after,
        args.events
    )?;
    writeln!(
        out,
        "  request latency       p50 {:.1} ms   p99 {:.1} ms   max {:.1} ms",
        percentile(&latencies, 50.0) as f64 / 1000.0,
        percentile(&latencies, 99.0) as f64 / 1000.0,
        latencies.last().copied().unwrap_or(0) as f64 / 1000.0
    )?;
    if stored > 0 {
        writeln!(
            out,
            "  bytes on disk / event {:.0} ({:.1} MiB for {} events in the store, at rest)",
            after.1 as f64 / after.0.max(1) as f64,
            mib(after.1),
            after.0
        )?;
    }
    print!("{out}");
    Ok(complete)
}

/// One paced rate's outcome.
struct Step {
    rate: u64,
    holds: bool,
}

/// Each rate in turn as a steady stream, after an unreported warm-up at the first rate
/// (the traffic's customers are then known to the store, as in a running brand). The
/// sustained rate is the highest at which it and every lower rate held.
async fn paced(args: &IngestBench, t: &Target) -> anyhow::Result<bool> {
    let mut rates = args.rate.clone();
    rates.sort_unstable();
    println!(
        "siyu bench ingest (paced): rates {rates:?} events/s for {} s each after a {} s warm-up, batches of {}, {} customers",
        args.seconds, args.warmup, args.batch, args.customers
    );
    if args.warmup > 0 {
        let (events, sending) = stream(args, t, rates[0], args.warmup, None).await?;
        wait_applied(t, Duration::from_secs(300)).await?;
        println!("\nwarm-up: {} events at {} events/s over {sending:.1} s, {} failed; all applied", events.answered, rates[0], events.failed);
    }
    let mut steps = Vec::new();
    for &rate in &rates {
        steps.push(paced_step(args, t, rate).await?);
    }
    let backend = stats(t).await?.2;
    let sustained = steps.iter().take_while(|s| s.holds).last().map(|s| s.rate);
    match sustained {
        Some(best) => println!(
            "\nsustained ({backend} backend): {best} events/s, the highest paced rate that held with every lower one (p99 < {P99_LIMIT_MS} ms from schedule, backlog bounded, nothing refused)"
        ),
        None => println!("\nsustained ({backend} backend): none of the rates held, not even {} events/s", rates[0]),
    }
    Ok(sustained.is_some())
}

/// What a stream got back: events answered, requests failed, latencies from schedule
/// (µs), and how late the sender started requests (µs).
#[derive(Default)]
struct Streamed {
    answered: u64,
    failed: u64,
    latencies: Vec<u64>,
    late: Vec<u64>,
    last_error: Option<String>,
}

/// Open-loop load: request k is started at its scheduled time as a task of its own, so a
/// slow answer delays nothing that follows (up to 1,024 in flight). Returns what came
/// back and the seconds it took.
async fn stream(args: &IngestBench, t: &Target, rate: u64, seconds: u64, sampler: Option<&mut Option<BacklogSampler>>) -> anyhow::Result<(Streamed, f64)> {
    let events = rate * seconds;
    let bodies = build_bodies(args, events, events.div_ceil(args.batch))?;
    // The backlog is sampled from the first request on, so its quarters are the run's.
    if let Some(slot) = sampler {
        *slot = Some(BacklogSampler::start(t));
    }
    let interval = Duration::from_secs_f64(args.batch as f64 / rate as f64);
    let in_flight = Arc::new(tokio::sync::Semaphore::new(1024));
    let results: Arc<Mutex<Streamed>> = Arc::default();
    let sender = Sender::of(t, args.gzip);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (k, (body, count)) in bodies.into_iter().enumerate() {
        let scheduled = started + interval * k as u32;
        tokio::time::sleep_until(scheduled.into()).await;
        let permit = in_flight.clone().acquire_owned().await?;
        let (sender, results) = (sender.clone(), results.clone());
        tasks.spawn(async move {
            let late = scheduled.elapsed().as_micros() as u64;
            let outcome = sender.send(body).await;
            drop(permit);
            let mut r = results.lock().expect("lock");
            r.late.push(late);
            match outcome {
                Ok(()) => {
                    r.answered += count;
                    r.latencies.push(scheduled.elapsed().as_micros() as u64);
                }
                Err(e) => {
                    r.failed += 1;
                    r.last_error = Some(e.to_string());
                }
            }
        });
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    let sending = started.elapsed().as_secs_f64();
    let mut r = std::mem::take(&mut *results.lock().expect("lock"));
    r.latencies.sort_unstable();
    r.late.sort_unstable();
    Ok((r, sending))
}

async fn paced_step(args: &IngestBench, t: &Target, rate: u64) -> anyhow::Result<Step> {
    println!("\nrate {rate} events/s for {} s: sending", args.seconds);
    let mut backlog = None;
    let (r, sending) = stream(args, t, rate, args.seconds, Some(&mut backlog)).await?;
    let samples = match backlog {
        Some(b) => b.stop().await,
        None => Vec::new(),
    };
    let drain_started = Instant::now();
    let drained = wait_applied(t, Duration::from_secs(300)).await.is_ok();
    let drain_secs = drain_started.elapsed().as_secs_f64();
    let (p50, p99) = (percentile(&r.latencies, 50.0) as f64 / 1000.0, percentile(&r.latencies, 99.0) as f64 / 1000.0);
    let verdict = Backlog::judge(&samples, args.seconds as f64, rate);
    // Bounded: a store that keeps up drains at once; its backlog in the last quarter is
    // at most one second of load and no higher on average than in the second quarter
    // (plus a quarter second of load for the indexer's batches). A store that falls
    // behind grows its backlog from quarter to quarter.
    let bounded = verdict.bounded && drained && drain_secs <= 2.0;
    let kept_pace = r.answered as f64 / sending >= rate as f64 * 0.97;
    let holds = r.failed == 0 && p99 < P99_LIMIT_MS && bounded && kept_pace;
    println!("  answered              {} events ({:.0} events/s over {sending:.1} s); failed requests {}", r.answered, r.answered as f64 / sending, r.failed);
    if let Some(e) = &r.last_error {
        println!("  last failure          {e}");
    }
    println!(
        "  latency from schedule p50 {p50:.1} ms   p99 {p99:.1} ms   max {:.1} ms   (sender late to start: p99 {:.1} ms)",
        r.latencies.last().copied().unwrap_or(0) as f64 / 1000.0,
        percentile(&r.late, 99.0) as f64 / 1000.0
    );
    println!(
        "  backlog (acknowledged, not yet applied): largest {}; mean {:.0} in the second quarter, {:.0} in the last (largest {}, bound {rate}; {} samples); {}",
        verdict.largest,
        verdict.second_quarter_mean,
        verdict.last_quarter_mean,
        verdict.last_quarter_largest,
        verdict.last_quarter_samples,
        if drained { format!("drained {drain_secs:.1} s after the last answer") } else { "NOT drained within 300 s".into() }
    );
    let mut why = Vec::new();
    if r.failed > 0 {
        why.push("requests failed");
    }
    if p99 >= P99_LIMIT_MS {
        why.push("p99 over 50 ms");
    }
    if !bounded {
        why.push("backlog grows");
    }
    if !kept_pace {
        why.push("answers fell behind the pace");
    }
    println!("  {}", if holds { "HOLDS".to_string() } else { format!("does not hold: {}", why.join(", ")) });
    Ok(Step { rate, holds })
}

/// The backlog samples of one paced rate, read for growth.
struct Backlog {
    largest: u64,
    second_quarter_mean: f64,
    last_quarter_mean: f64,
    last_quarter_largest: u64,
    last_quarter_samples: usize,
    bounded: bool,
}

impl Backlog {
    fn judge(samples: &[(f64, u64)], seconds: f64, rate: u64) -> Backlog {
        let within = |from: f64, to: f64| samples.iter().filter(move |(at, _)| *at >= from * seconds && *at < to * seconds).map(|(_, lag)| *lag);
        let mean = |v: Vec<u64>| if v.is_empty() { 0.0 } else { v.iter().sum::<u64>() as f64 / v.len() as f64 };
        let last: Vec<u64> = within(0.75, f64::MAX).collect();
        let second_quarter_mean = mean(within(0.25, 0.5).collect());
        let last_quarter_largest = last.iter().copied().max().unwrap_or(0);
        let (last_quarter_samples, last_quarter_mean) = (last.len(), mean(last));
        // Too few samples (the status request failing under load) proves nothing.
        let bounded = last_quarter_samples >= 3 && last_quarter_largest <= rate && last_quarter_mean <= second_quarter_mean + rate as f64 * 0.25;
        Backlog {
            largest: samples.iter().map(|(_, lag)| *lag).max().unwrap_or(0),
            second_quarter_mean,
            last_quarter_mean,
            last_quarter_largest,
            last_quarter_samples,
            bounded,
        }
    }
}

/// Posts batches to `/v1/batch`; anything but a 2xx is an error.
#[derive(Clone)]
struct Sender {
    client: reqwest::Client,
    url: String,
    key: String,
    gzip: bool,
}

impl Sender {
    fn of(t: &Target, gzip: bool) -> Sender {
        Sender { client: t.client.clone(), url: format!("{}/v1/batch", t.base_url), key: t.write_key.clone(), gzip }
    }

    async fn send(&self, body: bytes::Bytes) -> anyhow::Result<()> {
        let mut req = self.client.post(&self.url).basic_auth(&self.key, Some("")).header("content-type", "application/json").body(body);
        if self.gzip {
            req = req.header("content-encoding", "gzip");
        }
        let resp = req.send().await?;
        let status = resp.status();
        if !status.is_success() {
            bail!("{status}: {}", resp.text().await.unwrap_or_default());
        }
        Ok(())
    }
}

/// The ingest backlog (`GET /api/v1/ingest` lag) every 200 ms: (seconds in, lag).
struct BacklogSampler {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<(f64, u64)>>,
}

impl BacklogSampler {
    fn start(t: &Target) -> BacklogSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let (client, base, token, flag) = (t.client.clone(), t.base_url.clone(), t.admin_token.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let started = Instant::now();
            let mut samples = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                if let Ok(lag) = lag(&client, &base, &token).await {
                    samples.push((started.elapsed().as_secs_f64(), lag));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            samples
        });
        BacklogSampler { stop, task }
    }

    async fn stop(self) -> Vec<(f64, u64)> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap_or_default()
    }
}

async fn lag(client: &reqwest::Client, base: &str, token: &str) -> anyhow::Result<u64> {
    let v: Value = client.get(format!("{base}/api/v1/ingest")).bearer_auth(token).send().await?.error_for_status()?.json().await?;
    v["lag"].as_u64().context("no lag in /api/v1/ingest")
}

/// WeCom's welcome window under load: a simulated corp beside the server, a contact
/// way with a welcome template, and a customer scanning it every second.
struct WelcomeProbes {
    sim: Arc<siyu_wecom::sim::Simulator>,
    sim_base: String,
    listener: Option<tokio::net::TcpListener>,
}

struct RunningProbes {
    sim: Arc<siyu_wecom::sim::Simulator>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<Result<Option<Duration>, String>>>,
}

const GUIDE: &str = "bench.guide";

impl WelcomeProbes {
    /// The simulator, listening, and the environment that points a server at it.
    async fn prepare() -> anyhow::Result<(WelcomeProbes, Vec<(&'static str, String)>)> {
        use siyu_wecom::sim::{SimConfig, Simulator};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let sim_base = format!("http://{}", listener.local_addr()?);
        let (corp, secret, token) = ("wwbench", siyu_server::secrets::random_token("sec_"), siyu_server::secrets::random_token("tok_"));
        let aes_key: String = siyu_server::secrets::random_token("").chars().filter(char::is_ascii_alphanumeric).cycle().take(43).collect();
        let sim = Simulator::new(SimConfig { customers_per_staff: 1_000_000, ..SimConfig::new(corp, &secret, &token, &aes_key) });
        sim.add_staff(&[GUIDE]);
        let env = vec![
            ("SIYU_WECOM_CORP_ID", corp.to_string()),
            ("SIYU_WECOM_SECRET", secret),
            ("SIYU_WECOM_TOKEN", token),
            ("SIYU_WECOM_AES_KEY", aes_key),
            ("SIYU_WECOM_API_BASE", sim_base.clone()),
        ];
        Ok((WelcomeProbes { sim, sim_base, listener: Some(listener) }, env))
    }

    /// Connects the simulator to the server, creates the contact way and starts the probes.
    async fn start(mut self, t: &Target) -> anyhow::Result<RunningProbes> {
        let listener = self.listener.take().context("started twice")?;
        tokio::spawn(siyu_wecom::sim::serve(self.sim.clone(), listener));
        self.sim.connect_callbacks(&format!("{}/wecom/callback", t.base_url));
        let admin = |method: reqwest::Method, path: &str, body: Value| {
            t.client.request(method, format!("{}{path}", t.base_url)).bearer_auth(&t.admin_token).json(&body).send()
        };
        admin(reqwest::Method::PUT, "/api/v1/stores/BENCH01", json!({"name": "压测店", "city": "Shanghai"})).await?.error_for_status()?;
        admin(reqwest::Method::PUT, &format!("/api/v1/staff/{GUIDE}"), json!({"name": "王导购", "store_id": "BENCH01"})).await?.error_for_status()?;
        let way: Value = admin(
            reqwest::Method::POST,
            "/api/v1/wecom/contact-ways",
            json!({"guide": GUIDE, "channel": "bench", "welcome": "{{ traits.name | default: \"你好\" }}，我是{{ owner.name }}，欢迎来{{ store.name }}！"}),
        )
        .await?
        .error_for_status()?
        .json()
        .await?;
        let config_id = way["config_id"].as_str().context("contact way without config_id")?.to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let (sim, flag, client, scan_url) = (self.sim.clone(), stop.clone(), t.client.clone(), format!("{}/sim/scan", self.sim_base));
        // One customer a second, each probe a task of its own: a slow welcome does not
        // thin out the probes that follow.
        let task = tokio::spawn(async move {
            let mut probes = tokio::task::JoinSet::new();
            let started = Instant::now();
            let mut i = 0u32;
            while !flag.load(Ordering::Relaxed) {
                tokio::time::sleep_until((started + Duration::from_secs(i as u64)).into()).await;
                let (sim, client, scan_url, config_id) = (sim.clone(), client.clone(), scan_url.clone(), config_id.clone());
                probes.spawn(async move { probe(&sim, &client, &scan_url, &config_id, i).await });
                i += 1;
            }
            probes.join_all().await
        });
        Ok(RunningProbes { sim: self.sim, stop, task })
    }
}

/// One customer scans the contact way: how long until their welcome was sent, `None`
/// if not within WeCom's 20 s (after that the code can never be used), or why the scan
/// itself failed.
async fn probe(sim: &siyu_wecom::sim::Simulator, client: &reqwest::Client, scan_url: &str, config_id: &str, i: u32) -> Result<Option<Duration>, String> {
    let external = format!("wmbench{i:06}");
    let sent = Instant::now();
    let scan = client.post(scan_url).json(&json!({"config_id": config_id, "external_userid": external, "name": format!("顾客{i}")})).send();
    let r: Value = async { scan.await?.json().await }.await.map_err(|e| e.to_string())?;
    if r["errcode"] != json!(0) {
        return Err(format!("the simulator refused a scan: {r}"));
    }
    while sent.elapsed() < Duration::from_secs(21) {
        if sim.welcomes_sent().iter().any(|(_, e, _)| *e == external) {
            return Ok(Some(sent.elapsed()));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(None)
}

impl RunningProbes {
    async fn report(self) {
        self.stop.store(true, Ordering::Relaxed);
        let results = match self.task.await {
            Ok(r) => r,
            Err(e) => return println!("\nwelcome probes failed: {e}"),
        };
        let failed: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
        let mut times: Vec<u64> = results.iter().filter_map(|r| r.as_ref().ok().copied().flatten()).map(|d| d.as_micros() as u64).collect();
        times.sort_unstable();
        let missed = results.len() - failed.len() - times.len();
        if let Some(e) = failed.first() {
            println!("\nwelcome probes: {} scans failed, the first with: {e}", failed.len());
        }
        println!(
            "\nWeCom welcome under this load (a customer adding a guide every second while the load was sent and applied): {} added, {} welcomed within WeCom's 20 s, {missed} missed, {} scans failed; scan to welcome sent p50 {:.0} ms  p95 {:.0} ms  max {:.0} ms ({} welcome messages in the simulator)",
            results.len(),
            times.len(),
            failed.len(),
            percentile(&times, 50.0) as f64 / 1000.0,
            percentile(&times, 95.0) as f64 / 1000.0,
            times.last().copied().unwrap_or(0) as f64 / 1000.0,
            self.sim.welcomes_sent().len()
        );
    }
}

/// Polls the ingest status until nothing acknowledged is waiting to be applied.
async fn wait_applied(t: &Target, limit: Duration) -> anyhow::Result<()> {
    let started = Instant::now();
    while lag(&t.client, &t.base_url, &t.admin_token).await? > 0 {
        if started.elapsed() > limit {
            bail!("events still waiting to be applied after {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// (events, disk bytes, backend) from the admin API.
async fn stats(t: &Target) -> anyhow::Result<(i64, u64, String)> {
    let v: Value = t.client.get(format!("{}/api/v1/stats", t.base_url)).bearer_auth(&t.admin_token).send().await?.error_for_status()?.json().await?;
    Ok((v["events"].as_i64().unwrap_or(0), v["disk_bytes"].as_u64().unwrap_or(0), v["backend"].as_str().unwrap_or("?").to_string()))
}

/// Every request body, built before the clock starts so the client's cost is not
/// charged to the server. Returns (body, messages in it).
pub fn build_bodies(args: &IngestBench, events: u64, requests: u64) -> anyhow::Result<Vec<(bytes::Bytes, u64)>> {
    let run = uuid::Uuid::new_v4().simple().to_string();
    let mut rng = Rng::new(0x5EED);
    let mut out = Vec::with_capacity(requests as usize);
    let mut remaining = events;
    let sent_at = siyu_core::Timestamp::now().to_rfc3339();
    for r in 0..requests {
        let n = remaining.min(args.batch);
        remaining -= n;
        let mut body = String::with_capacity(n as usize * 420);
        write!(body, r#"{{"sentAt":"{sent_at}","batch":["#)?;
        for m in 0..n {
            if m > 0 {
                body.push(',');
            }
            message(&mut body, &mut rng, args.customers, &format!("{run}-{r}-{m}"), &sent_at)?;
        }
        body.push_str("]}");
        let bytes = if args.gzip {
            use std::io::Write as _;
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            enc.write_all(body.as_bytes())?;
            enc.finish()?
        } else {
            body.into_bytes()
        };
        out.push((bytes::Bytes::from(bytes), n));
    }
    Ok(out)
}

/// One realistic message: 55% product views and orders, 30% page views, 15% identifies.
fn message(out: &mut String, rng: &mut Rng, customers: u64, message_id: &str, ts: &str) -> std::fmt::Result {
    let customer = rng.below(customers);
    let known = rng.chance(0.8);
    let who = if known { format!(r#""userId":"m{:08}""#, customer + 1) } else { format!(r#""anonymousId":"anon-{customer}""#) };
    let context = format!(
        r#"{{"library":{{"name":"analytics-python","version":"2.3.4"}},"ip":"10.{}.{}.{}","externalIds":[{{"id":"ou{customer:026}","type":"unionid","collection":"users","encoding":"none"}}]}}"#,
        rng.below(256),
        rng.below(256),
        rng.below(256)
    );
    let roll = rng.below(100);
    if roll < 40 {
        let sku = rng.below(14);
        write!(
            out,
            r#"{{"type":"track","event":"Product Viewed","messageId":"{message_id}",{who},"timestamp":"{ts}","properties":{{"sku":"SKU-{sku}","category":"coffee","price_fen":{}}},"context":{context}}}"#,
            1800 + sku * 100
        )
    } else if roll < 55 {
        write!(
            out,
            r#"{{"type":"track","event":"Order Completed","messageId":"{message_id}",{who},"timestamp":"{ts}","properties":{{"order_id":"{message_id}","revenue_fen":{},"currency":"CNY","store_id":"SH0{:02}","products":[{{"sku":"LT-001","name":"生椰拿铁","category":"coffee","price_fen":2900,"quantity":1}}]}},"context":{context}}}"#,
            1500 + rng.below(4000),
            rng.below(45) + 1
        )
    } else if roll < 85 {
        write!(
            out,
            r#"{{"type":"page","name":"Menu","messageId":"{message_id}",{who},"timestamp":"{ts}","properties":{{"path":"/pages/menu/index","referrer":"/pages/home/index","title":"菜单"}},"context":{context}}}"#
        )
    } else {
        write!(
            out,
            r#"{{"type":"identify","messageId":"{message_id}",{who},"timestamp":"{ts}","traits":{{"city":"Shanghai","tier":"gold","taste":"latte","store_id":"SH0{:02}"}},"context":{context}}}"#,
            rng.below(45) + 1
        )
    }
}
