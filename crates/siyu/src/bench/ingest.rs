//! `siyu bench ingest`: sustained, durable ingest over loopback HTTP.
//!
//! Realistic traffic: Segment batches of 100 messages (the SDKs' default flush size)
//! mixing mini-program orders and product views, page views and identifies, over a
//! population of customers where most are known and some are new, sent by 16 concurrent
//! connections. Every request is answered only after its events are committed with an
//! fsync, exactly as in production.

use std::fmt::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

use super::server::ChildServer;
use super::{mib, percentile};
use crate::demo::rng::Rng;

#[derive(Args, Debug, Clone)]
pub struct IngestBench {
    /// Events to send.
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

pub async fn run(args: IngestBench) -> anyhow::Result<ExitCode> {
    if args.batch == 0 || args.events == 0 || args.connections == 0 {
        bail!("--events, --batch and --connections must be positive");
    }
    let temp = tempfile::tempdir()?;
    let (server, base_url, write_key, admin_token) = match &args.url {
        Some(url) => {
            let key = args.write_key.clone().context("--url needs --write-key")?;
            let token = std::env::var("SIYU_ADMIN_TOKEN").context("--url needs SIYU_ADMIN_TOKEN for the stats")?;
            (None, url.trim_end_matches('/').to_string(), key, token)
        }
        None => {
            let dir = args.data_dir.clone().unwrap_or_else(|| temp.path().to_path_buf());
            let s = ChildServer::start(&dir, args.database_url.as_deref()).await?;
            let (u, k, t) = (s.base_url.clone(), s.write_key.clone(), s.admin_token.clone());
            (Some(s), u, k, t)
        }
    };

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
    let bodies = Arc::new(build_bodies(&args, requests)?);
    let client = siyu_wecom::client::http_builder().no_proxy().pool_max_idle_per_host(args.connections).build()?;
    let before = stats(&client, &base_url, &admin_token).await?;

    let bar = ProgressBar::new(args.events);
    bar.set_style(ProgressStyle::with_template("{spinner} sending [{bar:30}] {pos}/{len} events ({per_sec})").expect("template").progress_chars("=> "));
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..args.connections {
        let (client, bodies, next, bar) = (client.clone(), bodies.clone(), next.clone(), bar.clone());
        let url = format!("{base_url}/v1/batch");
        let (key, gzip, batch) = (write_key.clone(), args.gzip, args.batch);
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((body, count)) = bodies.get(i) else { break };
                let mut req = client.post(&url).basic_auth(&key, Some("")).header("content-type", "application/json").body(body.clone());
                if gzip {
                    req = req.header("content-encoding", "gzip");
                }
                let t = Instant::now();
                let resp = req.send().await?;
                let status = resp.status();
                let text = resp.text().await?;
                latencies.push(t.elapsed().as_micros() as u64);
                if !status.is_success() {
                    bail!("request {i} failed with {status}: {text}");
                }
                bar.inc((*count).min(batch));
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
    wait_applied(&client, &base_url, &admin_token).await?;
    let applied_after = started.elapsed().as_secs_f64();

    // Disk use at rest: the server truncates its SQLite WAL once writes have been quiet
    // for 5 seconds.
    tokio::time::sleep(std::time::Duration::from_secs(6)).await;
    let after = stats(&client, &base_url, &admin_token).await?;
    let stored = after.0 - before.0;
    latencies.sort_unstable();
    let mut out = String::new();
    writeln!(out, "\nresults ({} backend)", after.2)?;
    writeln!(out, "  events acknowledged   {}", args.events)?;
    writeln!(out, "  events stored         {stored}{}", if stored as u64 == args.events { "" } else { "  (MISMATCH)" })?;
    writeln!(
        out,
        "  acknowledged          {:.0} events/s ({:.0} requests/s) over {elapsed:.2} s",
        args.events as f64 / elapsed,
        latencies.len() as f64 / elapsed
    )?;
    writeln!(
        out,
        "  sustained (applied)   {:.0} events/s: all {} events in profiles after {applied_after:.2} s",
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
    if let Some(s) = &server {
        writeln!(out, "  server peak memory    {:.0} MiB", mib(s.peak_rss().unwrap_or(0)))?;
    }
    writeln!(out, "  bench client peak     {:.0} MiB", mib(crate::metrics::peak_rss_bytes().unwrap_or(0)))?;
    println!("{out}");
    if let Some(s) = server {
        s.stop();
    }
    Ok(if stored as u64 == args.events { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// Polls the ingest status until nothing acknowledged is waiting to be applied.
async fn wait_applied(client: &reqwest::Client, base: &str, token: &str) -> anyhow::Result<()> {
    loop {
        let v: Value = client.get(format!("{base}/api/v1/ingest")).bearer_auth(token).send().await?.error_for_status()?.json().await?;
        if v["lag"].as_u64() == Some(0) {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// (events, disk bytes, backend) from the admin API.
async fn stats(client: &reqwest::Client, base: &str, token: &str) -> anyhow::Result<(i64, u64, String)> {
    let v: Value = client.get(format!("{base}/api/v1/stats")).bearer_auth(token).send().await?.error_for_status()?.json().await?;
    Ok((v["events"].as_i64().unwrap_or(0), v["disk_bytes"].as_u64().unwrap_or(0), v["backend"].as_str().unwrap_or("?").to_string()))
}

/// Every request body, built before the clock starts so the client's cost is not
/// charged to the server. Returns (body, messages in it).
pub fn build_bodies(args: &IngestBench, requests: u64) -> anyhow::Result<Vec<(bytes::Bytes, u64)>> {
    let run = uuid::Uuid::new_v4().simple().to_string();
    let mut rng = Rng::new(0x5EED);
    let mut out = Vec::with_capacity(requests as usize);
    let mut remaining = args.events;
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
