//! `siyu bench console`: every console page and analytics endpoint, timed through a
//! real `siyu serve` process on the demo brand. Each request is a full round trip on
//! loopback (sign-in cookie, the page rendered from the store and the engine), made
//! one at a time after one untimed warm-up, so the figures are server time plus a
//! loopback hop. Failures are counted, not dropped.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use siyu_store::StoreConfig;

use crate::percentile;
use crate::server::ChildServer;

#[derive(Args, Debug)]
pub struct ConsoleBench {
    /// Customers in the demo brand.
    #[arg(long, default_value_t = 1_000_000)]
    customers: u64,
    /// Timed requests per page or endpoint.
    #[arg(long, default_value_t = 20)]
    rounds: usize,
    /// Use this data directory (a demo brand already generated there is reused).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

const PASSWORD: &str = "bench-console-password";

pub async fn run(args: ConsoleBench) -> anyhow::Result<std::process::ExitCode> {
    let temp = tempfile::tempdir()?;
    let dir = args.data_dir.clone().unwrap_or_else(|| temp.path().to_path_buf());
    std::fs::create_dir_all(&dir)?;
    let store = siyu_store::Store::open(&StoreConfig::Sqlite { data_dir: dir.clone() }).await?;
    let existing = store.run(|db| Box::pin(siyu_store::admin::get_setting(db, siyu_demo::DEMO_SETTING))).await?;
    if existing.is_none() {
        println!("generating the demo brand with {} customers …", args.customers);
        siyu_demo::generate_into(&store, args.customers, 42, None, true).await?;
    }
    drop(store);
    let started = Instant::now();
    let server = ChildServer::start(&dir, None, &[("SIYU_ADMIN_PASSWORD", PASSWORD.to_string())]).await?;
    println!("server ready in {:.1} s (engine start included)", started.elapsed().as_secs_f64());
    let result = measure(&server, args.rounds).await;
    let rss = server.peak_rss();
    server.stop();
    let rows = result?;
    println!("\n{:<44} {:>9} {:>9} {:>9} {:>7}", "page / endpoint", "p50 ms", "p95 ms", "max ms", "failed");
    for r in &rows {
        println!("{:<44} {:>9.1} {:>9.1} {:>9.1} {:>7}", r.0, r.1, r.2, r.3, r.4);
    }
    if let Some(rss) = rss {
        println!("\nserver peak RSS {:.0} MiB", crate::mib(rss));
    }
    println!("targets (issue 16): every page and analytics endpoint p95 ≤ 150 ms at 1M customers; the live count p95 ≤ 100 ms at 10M");
    Ok(std::process::ExitCode::SUCCESS)
}

type Row = (String, f64, f64, f64, usize);

async fn measure(server: &ChildServer, rounds: usize) -> anyhow::Result<Vec<Row>> {
    let http = siyu_wecom::client::http_builder().no_proxy().redirect(reqwest::redirect::Policy::none()).timeout(Duration::from_secs(120)).build()?;
    let base = &server.base_url;
    let r = http.post(format!("{base}/console/signin")).form(&[("username", "admin"), ("password", PASSWORD)]).send().await?;
    anyhow::ensure!(r.headers().contains_key(LOCATION), "signing in failed: {}", r.status());
    let cookie = r
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("siyu_session="))
        .and_then(|c| c.split(';').next())
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("no session cookie"))?;
    let page = http.get(format!("{base}/console/customers")).header(COOKIE, &cookie).send().await?.text().await?;
    let csrf = page.split("data-csrf=\"").nth(1).and_then(|s| s.get(..64)).unwrap_or_default().to_string();
    let first = page.split("/console/customers/").nth(1).and_then(|s| s.split('"').next()).unwrap_or("1").to_string();

    let pages = [
        "/console".to_string(),
        "/console/customers".to_string(),
        format!("/console/customers/{first}"),
        "/console/customers?q=13800000000".to_string(),
        "/console/segments".to_string(),
        "/console/campaigns".to_string(),
        "/console/campaigns/1".to_string(),
        "/console/tasks".to_string(),
        "/console/lost".to_string(),
        "/console/audit".to_string(),
        "/api/v1/analytics/overview".to_string(),
        "/api/v1/analytics/gmv".to_string(),
        "/api/v1/analytics/contacts".to_string(),
        "/api/v1/analytics/rates".to_string(),
        "/api/v1/analytics/gmv.csv".to_string(),
    ];
    let mut rows = Vec::new();
    for path in &pages {
        let url = format!("{base}{path}");
        rows.push(time(path, rounds, || http.get(&url).header(COOKIE, &cookie).send()).await);
    }
    // The segment builder's live count: what each keystroke's request costs.
    for rule in ["has(wecom)", r#"stage = "at_risk" and consent(sms)"#, "count(Order Completed, 30d) >= 2 and sum(Order Completed, revenue_fen, 365d) >= 30000"]
    {
        let url = format!("{base}/api/v1/segments/preview");
        let body = serde_json::json!({"rule": rule, "sample": 5});
        let label = format!("live count: {}", rule.chars().take(30).collect::<String>());
        rows.push(time(&label, rounds, || http.post(&url).header(COOKIE, &cookie).header("x-csrf-token", &csrf).json(&body).send()).await);
    }
    Ok(rows)
}

async fn time<F, Fut>(label: &str, rounds: usize, mut request: F) -> Row
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = reqwest::Result<reqwest::Response>>,
{
    let _ = request().await; // warm-up, untimed
    let mut samples = Vec::with_capacity(rounds);
    let mut failed = 0;
    for _ in 0..rounds {
        let t = Instant::now();
        let r = request().await;
        let good = match r {
            Ok(resp) => resp.status().is_success() && resp.bytes().await.is_ok(),
            Err(_) => false,
        };
        samples.push(t.elapsed().as_micros() as u64);
        if !good {
            failed += 1;
        }
    }
    samples.sort_unstable();
    let ms = |us: u64| us as f64 / 1000.0;
    (label.to_string(), ms(percentile(&samples, 50.0)), ms(percentile(&samples, 95.0)), ms(*samples.last().unwrap_or(&0)), failed)
}
