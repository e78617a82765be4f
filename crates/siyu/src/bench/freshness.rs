//! Freshness of live segments under load: while the ingest benchmark's traffic runs at
//! a steady rate, probe events are sent one by one, each making a new customer enter a
//! live segment; the time from sending a probe to its member appearing is measured.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use siyu_core::rule::parse;
use siyu_engine::SegmentDef;
use siyu_store::{Store, StoreConfig};

use super::ingest::{build_bodies, IngestBench};
use super::percentile;
use super::segments::SegmentsBench;
use crate::app::{self, ServeOptions};

const WRITE_KEY: &str = "wk_freshness";

pub async fn run(args: &SegmentsBench) -> anyhow::Result<()> {
    let customers = 100_000;
    println!("\nfreshness: a live segment under {} events/s of ingest for {} s ({customers} customers on SQLite)", args.freshness_rate, args.freshness_seconds);
    let dir = tempfile::tempdir()?;
    let config = StoreConfig::Sqlite { data_dir: dir.path().to_path_buf() };
    {
        let store = Store::open(&config).await?;
        crate::demo::generate_into(&store, customers, args.seed, None, false).await?;
    }
    let running = app::start(ServeOptions {
        store: config,
        data_dir: dir.path().to_path_buf(),
        listen: "127.0.0.1:0".parse()?,
        write_key: Some(WRITE_KEY.into()),
        admin_token: Some(crate::secrets::random_token("siyu_admin_")),
    })
    .await?;
    let engine = running.state.engine.clone();
    engine.define(SegmentDef { name: "probes".into(), rule: parse(r#"count("Probe", 1d) >= 1"#)? }).await?;
    let base = format!("http://{}", running.addr);
    let client = reqwest::Client::builder().no_proxy().pool_max_idle_per_host(32).build()?;

    let load = IngestBench {
        events: args.freshness_rate * args.freshness_seconds,
        batch: 100,
        connections: 16,
        customers,
        gzip: false,
        url: None,
        write_key: None,
        data_dir: None,
        database_url: None,
    };
    if args.freshness_warmup > 0 {
        // The load's customers are first seen during the warm-up: their new identities,
        // profiles and merges cost the indexer several times what a known customer's
        // event does.
        let warmup = IngestBench { events: args.freshness_rate * args.freshness_warmup, ..load.clone() };
        let started = Instant::now();
        for w in paced_load(&client, &base, &warmup, args.freshness_rate)? {
            w.await??;
        }
        running.state.ingest.settle().await;
        println!("  warm-up: {} events at {} events/s, all applied after {:.1} s", warmup.events, args.freshness_rate, started.elapsed().as_secs_f64());
    }
    let workers = paced_load(&client, &base, &load, args.freshness_rate)?;
    let started = Instant::now();

    // Watch the segment: when its size reaches k, probe k has arrived.
    let reached: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Where any lag sits: acknowledged but not yet in the store, or in the store but
    // not yet in the engine.
    let lags: Arc<Mutex<(u64, u64)>> = Arc::default();
    let watcher = {
        let (engine, reached, stop, ingest, lags) = (engine.clone(), reached.clone(), stop.clone(), running.state.ingest.clone(), lags.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let (appended, indexed) = (ingest.appended(), ingest.indexed());
                let (n, engine_seq) = {
                    let state = engine.read();
                    (state.segments.get("probes").map_or(0, |s| s.members.len() as usize), state.index.applied_seq)
                };
                {
                    let mut l = lags.lock().expect("lock");
                    l.0 = l.0.max(appended.saturating_sub(indexed));
                    l.1 = l.1.max(indexed.saturating_sub(engine_seq));
                }
                let mut r = reached.lock().expect("lock");
                while r.len() < n {
                    r.push(Instant::now());
                }
                drop(r);
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let mut sent = Vec::new();
    let mut i = 0;
    while started.elapsed() < Duration::from_secs(args.freshness_seconds) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        sent.push(Instant::now());
        let resp = client
            .post(format!("{base}/v1/track"))
            .basic_auth(WRITE_KEY, Some(""))
            .json(&serde_json::json!({"userId": format!("probe-{i}"), "event": "Probe"}))
            .send()
            .await?;
        if !resp.status().is_success() {
            anyhow::bail!("probe failed: {}", resp.status());
        }
        i += 1;
    }
    for w in workers {
        w.await??;
    }
    let load_seconds = started.elapsed().as_secs_f64();
    let deadline = Instant::now() + Duration::from_secs(60);
    while reached.lock().expect("lock").len() < sent.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let _ = watcher.join();
    let reached = reached.lock().expect("lock").clone();
    let mut latencies: Vec<u64> = sent.iter().zip(&reached).map(|(s, r)| r.saturating_duration_since(*s).as_micros() as u64).collect();
    latencies.sort_unstable();
    println!(
        "  background load: {} events in {load_seconds:.1} s ({:.0} events/s); {} probes, {} seen",
        load.events,
        load.events as f64 / load_seconds,
        sent.len(),
        reached.len()
    );
    let (ingest_lag, engine_lag) = *lags.lock().expect("lock");
    println!("  largest backlog: {ingest_lag} messages waiting for the store, {engine_lag} applied but not yet in the engine");
    println!(
        "  event to segment membership: p50 {:.0} ms  p95 {:.0} ms  max {:.0} ms",
        percentile(&latencies, 50.0) as f64 / 1000.0,
        percentile(&latencies, 95.0) as f64 / 1000.0,
        latencies.last().copied().unwrap_or(0) as f64 / 1000.0
    );
    running.stop().await;
    Ok(())
}

/// Sends `load` at `rate` events/s, request k starting at k × (batch / rate), on its
/// connections; the tasks end when all is sent.
fn paced_load(client: &reqwest::Client, base: &str, load: &IngestBench, rate: u64) -> anyhow::Result<Vec<tokio::task::JoinHandle<anyhow::Result<()>>>> {
    let bodies = Arc::new(build_bodies(load, load.events.div_ceil(load.batch))?);
    let interval = Duration::from_secs_f64(load.batch as f64 / rate as f64);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..load.connections {
        let (client, bodies, next, url) = (client.clone(), bodies.clone(), next.clone(), format!("{base}/v1/batch"));
        workers.push(tokio::spawn(async move {
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                let Some((body, _)) = bodies.get(k) else { break };
                tokio::time::sleep_until((started + interval * k as u32).into()).await;
                let resp = client.post(&url).basic_auth(WRITE_KEY, Some("")).header("content-type", "application/json").body(body.clone()).send().await?;
                if !resp.status().is_success() {
                    anyhow::bail!("load request failed: {}", resp.status());
                }
            }
            anyhow::Ok(())
        }));
    }
    Ok(workers)
}
