//! `siyu bench segments`: the segment engine on a synthetic brand built in memory.
//!
//! Prints, for a fixed published set of rules (below), the median and p99 evaluation
//! time; the index build time; memory per profile (index and event aggregates
//! separately); the cost of applying one event; count and member paging; the same
//! rules in DuckDB on the same data (counts must agree); and the freshness of live
//! membership under the ingest benchmark's load.

// Freshness is measured as part of the segments benchmark, on the same brand.
mod freshness;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use siyu_core::Timestamp;
use siyu_core::message::Message;
use siyu_core::rule::{Rule, Stage, parse};
use siyu_engine::build::IndexBuilder;
use siyu_engine::index::{Index, Org};
use siyu_engine::{LifecycleConfig, SegmentDef, Segments, State};
use siyu_store::ingest::{Committed, Outcome};

use crate::sql::Sql;
use crate::{mib, percentile};
use siyu_demo::brand;
use siyu_demo::generate::Generator;

/// The published rule set: (name, what it exercises, rule).
pub const RULES: [(&str, &str, &str); 12] = [
    ("city", "single trait", r#"city = "Shanghai""#),
    ("cantonese", "tag", r#"tag = "说粤语""#),
    ("orders_30d", "30-day order count", r#"count(Order Completed, 30d) >= 2"#),
    (
        "five_predicates",
        "nested and/or/not, five predicates and a segment",
        r#"city = "Shanghai" and count(Order Completed, 30d) >= 2 and (language = "Cantonese" or tag = "说粤语") and owner.store = "SH012" and not segment = "vip""#,
    ),
    ("vip_on_wecom", "segment of a segment", r#"segment = "vip" and has(wecom)"#),
    ("rfm_555", "RFM", r#"rfm.r >= 4 and rfm.f >= 4 and rfm.m >= 4"#),
    ("at_risk", "lifecycle stage", r#"stage = "at_risk""#),
    ("beans_90d", "aggregate with a property filter", r#"count(Order Completed where category = "beans", 90d) >= 1"#),
    ("revenue_30d", "sum over a window", r#"sum(Order Completed, revenue_fen, 30d) >= 10000"#),
    ("win_back", "last time and lifetime count", r#"last(Order Completed) < ago(60d) and count(Order Completed) >= 5"#),
    ("oat_not_wecom", "or and not", r#"(taste = "oat milk" or tag = "燕麦奶") and not has(wecom)"#),
    ("super_users", "four-highs scores", r#"score.repurchase >= 0.5 and score.share >= 0.5"#),
];

/// `vip`, which two rules refer to.
pub const VIP: &str = r#"tier = "black" or sum(Order Completed, revenue_fen, 365d) >= 300000"#;

const TRAIT_COLUMNS: [&str; 6] = ["city", "language", "taste", "tier", "store_id", "gender"];

#[derive(Args, Debug, Clone)]
pub struct SegmentsBench {
    /// Customers in the synthetic brand.
    #[arg(long, default_value_t = 1_000_000)]
    pub customers: u64,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Evaluations of each rule.
    #[arg(long, default_value_t = 21)]
    pub runs: usize,
    /// Skip the DuckDB comparison.
    #[arg(long)]
    pub no_duckdb: bool,
    /// Skip the freshness run.
    #[arg(long)]
    pub no_freshness: bool,
    /// Ingest load during the freshness run, events per second.
    #[arg(long, default_value_t = 20_000)]
    pub freshness_rate: u64,
    #[arg(long, default_value_t = 30)]
    pub freshness_seconds: u64,
    /// Seconds of the same load before the measured run, applied in full before it
    /// starts: the brand's steady state, where the load's customers are known. 0
    /// measures the cold case, every customer's identities new to the store.
    #[arg(long, default_value_t = 20)]
    pub freshness_warmup: u64,
    /// Where the DuckDB export goes (default: a temporary directory).
    #[arg(long)]
    pub export_dir: Option<PathBuf>,
}

struct Export {
    tags: csv::Writer<File>,
    guides: csv::Writer<File>,
    events: csv::Writer<File>,
}

/// A CSV file for DuckDB, through the `csv` crate so a value holding a comma or a
/// quote (a tag, a city, a guide's id) is quoted, not split.
fn csv_file(path: PathBuf, header: &[&str]) -> anyhow::Result<csv::Writer<File>> {
    let mut w = csv::WriterBuilder::new().buffer_capacity(1 << 20).from_path(path)?;
    w.write_record(header)?;
    Ok(w)
}

impl Export {
    fn create(dir: &Path) -> anyhow::Result<Export> {
        Ok(Export {
            tags: csv_file(dir.join("tags.csv"), &["profile_id", "tag"])?,
            guides: csv_file(dir.join("guides.csv"), &["profile_id", "guide"])?,
            events: csv_file(dir.join("events.csv"), &["profile_id", "name", "ts", "revenue_fen", "category"])?,
        })
    }

    fn batch(&mut self, b: &siyu_store::bulk::Batch) -> anyhow::Result<()> {
        for t in &b.tags {
            self.tags.write_record([t.profile_id.to_string().as_str(), t.tag.as_str()])?;
        }
        for r in b.relationships.iter().filter(|r| r.active) {
            self.guides.write_record([r.profile_id.to_string().as_str(), r.staff_userid.as_str()])?;
        }
        for e in b.events.iter().filter(|e| e.name == Some("Order Completed")) {
            let p: Value = serde_json::from_str(&e.payload)?;
            // Times to the second, as the engine keeps them.
            let ts = e.ts.div_euclid(1000) * 1000;
            let revenue = p["revenue_fen"].to_string();
            self.events.write_record([
                e.profile_id.to_string().as_str(),
                "Order Completed",
                &ts.to_string(),
                &revenue,
                p["category"].as_str().unwrap_or(""),
            ])?;
        }
        Ok(())
    }

    fn finish(self, dir: &Path, index: &Index, org: &Org) -> anyhow::Result<()> {
        for mut w in [self.tags, self.guides, self.events] {
            w.flush()?;
        }
        let mut staff = csv_file(dir.join("staff.csv"), &["guide", "store", "city"])?;
        for (g, s) in &org.staff_store {
            staff.write_record([g.as_str(), s.as_str(), org.store_city.get(s).map(String::as_str).unwrap_or("")])?;
        }
        staff.flush()?;
        let mut header = vec!["id"];
        header.extend(TRAIT_COLUMNS);
        header.extend(["stage", "rfm_r", "rfm_f", "rfm_m", "score_conversion", "score_repurchase", "score_share", "score_referral", "wecom"]);
        let mut w = csv_file(dir.join("profiles.csv"), &header)?;
        for p in index.alive() {
            let mut row = vec![p.to_string()];
            for t in TRAIT_COLUMNS {
                row.push(index.trait_value(t, p).and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default());
            }
            let (stage, rfm, scores, wecom) = index.lifecycle_columns(p);
            row.push(Stage::ALL[stage as usize].as_str().to_string());
            row.extend(rfm.iter().map(|&r| if r > 0 { r.to_string() } else { String::new() }));
            // The rate the rule compares: whole percent as a fraction.
            row.extend(scores.iter().map(|&s| if s != siyu_engine::index::NO_SCORE { format!("{}", s as f64 / 100.0) } else { String::new() }));
            row.push(wecom.to_string());
            w.write_record(&row)?;
        }
        w.flush()?;
        Ok(())
    }
}

pub async fn run(args: SegmentsBench) -> anyhow::Result<ExitCode> {
    let now = Timestamp::now();
    let anchor = now.to_datetime().with_timezone(&chrono_tz::Asia::Shanghai).date_naive();
    let rules: Vec<(&str, &str, Rule)> = RULES.iter().map(|(n, what, text)| (*n, *what, parse(text).expect("published rules parse"))).collect();
    let vip = parse(VIP).expect("vip parses");
    let saved = saved_rules();
    let mut all: Vec<&Rule> = rules.iter().map(|(_, _, r)| r).collect();
    all.push(&vip);
    all.extend(saved.iter());
    let spec = siyu_engine::Spec::for_rules(&all);

    println!("siyu bench segments: {} customers (seed {}), {} rules, {} runs each", args.customers, args.seed, rules.len(), args.runs);
    let temp = tempfile::tempdir()?;
    let export_dir = args.export_dir.clone().unwrap_or_else(|| temp.path().to_path_buf());
    std::fs::create_dir_all(&export_dir)?;

    // Build: the generator runs on its own thread; the builder (and the CSV export for
    // DuckDB) consume its batches here.
    let organisation = brand::organisation(args.seed);
    let org = Org {
        staff_store: organisation.staff.iter().filter_map(|s| Some((s.userid.clone(), s.store_id.clone()?))).collect(),
        store_city: organisation.stores.iter().map(|s| (s.id.clone(), s.city.clone())).collect(),
    };
    let generator = Generator::new(args.seed, anchor, organisation);
    let (tx, rx) = std::sync::mpsc::sync_channel(4);
    let customers = args.customers;
    let producer = std::thread::spawn(move || {
        let mut start = 0;
        while start < customers {
            let end = (start + 2_000).min(customers);
            if tx.send(generator.batch(start..end)).is_err() {
                break;
            }
            start = end;
        }
    });
    let bar = ProgressBar::new(args.customers);
    bar.set_style(ProgressStyle::with_template("{spinner} building [{bar:30}] {pos}/{len} customers ({eta})").expect("template").progress_chars("=> "));
    let mut builder = IndexBuilder::new(LifecycleConfig::default(), &spec, now);
    builder.org(org.clone());
    let mut export = if args.no_duckdb { None } else { Some(Export::create(&export_dir)?) };
    let mut build_time = Duration::ZERO;
    let mut events = 0u64;
    for batch in rx {
        let t = Instant::now();
        builder.batch(&batch);
        build_time += t.elapsed();
        events += batch.events.len() as u64;
        if let Some(e) = export.as_mut() {
            e.batch(&batch)?;
        }
        bar.inc(batch.profiles.len() as u64);
    }
    producer.join().map_err(|_| anyhow::anyhow!("generator panicked"))?;
    let t = Instant::now();
    let index = builder.finish(0);
    build_time += t.elapsed();
    bar.finish_and_clear();
    let mut state = State { index, segments: Segments::default() };
    {
        let State { index, segments } = &mut state;
        segments.define(index, SegmentDef { name: "vip".into(), rule: vip.clone() }, now).expect("vip");
    }
    let profiles = state.index.profiles();
    let mem = state.index.memory();
    let rss = siyu_server::metrics::peak_rss_bytes().unwrap_or(0);
    // What the process holds once built: the index, the identity map, and the
    // allocator's own slack; the estimate above counts only the first.
    let rss_now = siyu_server::metrics::rss_bytes().unwrap_or(0);
    println!("\nindex");
    println!("  profiles              {profiles} ({events} events generated)");
    println!(
        "  index build           {:.1} s (rows into columns, bitmaps and the aggregates of the 12 rules, vip and 49 saved segments; generation ran alongside)",
        build_time.as_secs_f64()
    );
    println!(
        "  memory per profile    {:.0} bytes: index {:.0} + event aggregates {:.0}  (process peak {:.0} MiB)",
        (mem.index_bytes + mem.event_bytes) as f64 / profiles as f64,
        mem.index_bytes as f64 / profiles as f64,
        mem.event_bytes as f64 / profiles as f64,
        mib(rss)
    );
    println!(
        "  identity map          {:.0} bytes per profile ({} identities; where each leads, so a known customer's event counts on acknowledgement)",
        mem.identity_bytes as f64 / profiles as f64,
        state.index.known_identities()
    );
    println!(
        "  measured RSS          {:.0} MiB after the build = {:.0} bytes per profile (estimated above: {:.0} with the identity map; RSS also holds what the allocator kept from the build)",
        mib(rss_now),
        rss_now as f64 / profiles as f64,
        (mem.index_bytes + mem.event_bytes + mem.identity_bytes) as f64 / profiles as f64
    );

    // Evaluation.
    println!("\nrules (Siyu, in-memory engine)");
    let mut siyu_results = Vec::new();
    for (name, what, rule) in &rules {
        let mut times = Vec::with_capacity(args.runs);
        let mut count = 0;
        state.evaluate(rule, now).map_err(|m| anyhow::anyhow!("{name}: {m}"))?; // warm-up
        for _ in 0..args.runs {
            let t = Instant::now();
            count = state.evaluate(rule, now).expect("indexed").len();
            times.push(t.elapsed().as_micros() as u64);
        }
        times.sort_unstable();
        let (median, p99) = (percentile(&times, 50.0) as f64 / 1000.0, percentile(&times, 99.0) as f64 / 1000.0);
        println!("  {name:<16} {what:<48} {count:>9}  median {median:>8.2} ms  p99 {p99:>8.2} ms");
        siyu_results.push((name.to_string(), count, median, p99));
    }

    paging(&state);
    // DuckDB gets exactly the data the rules were timed on; the incremental
    // measurement below changes the index, so it comes after.
    let comparison = match export {
        Some(e) => {
            e.finish(&export_dir, &state.index, &org)?;
            duckdb_comparison(&rules, &vip, now, &export_dir, &siyu_results)
        }
        None => Ok(()),
    };
    save_segments(&mut state, &saved, now);
    incremental(&mut state, now);
    comparison?;
    drop(state);
    if !args.no_freshness {
        freshness::run(&args).await?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Saved segments up to 50, as a brand keeps them: the published rules and variations
/// of them (cities, stages, order windows, spend thresholds, RFM). Every one is
/// re-checked by the incremental update below.
fn saved_rules() -> Vec<Rule> {
    let mut rules: Vec<String> = RULES.iter().map(|(_, _, r)| r.to_string()).collect();
    rules.extend(brand::CITIES.iter().map(|(city, ..)| format!(r#"city = "{city}""#)));
    rules.extend(Stage::ALL.iter().map(|s| format!(r#"stage = "{}""#, s.as_str())));
    for days in [7, 14, 60, 90, 180] {
        rules.push(format!("count(Order Completed, {days}d) >= 1"));
        rules.push(format!("count(Order Completed, {days}d) >= 3"));
    }
    for (days, fen) in [(30, 5_000), (90, 20_000), (365, 100_000)] {
        rules.push(format!("sum(Order Completed, revenue_fen, {days}d) >= {fen}"));
    }
    rules.extend((1..=5).map(|r| format!("rfm.r >= {r} and rfm.m >= 3")));
    rules.extend((1..=5).map(|f| format!("rfm.f >= {f} and has(wecom)")));
    // Each rule once; with `vip`, 50.
    let mut seen = std::collections::HashSet::new();
    rules.retain(|r| seen.insert(r.clone()));
    assert!(rules.len() >= 49, "49 distinct saved rules");
    rules.iter().take(49).map(|text| parse(text).expect("saved segment rules parse")).collect()
}

fn save_segments(state: &mut State, saved: &[Rule], now: Timestamp) {
    let started = Instant::now();
    let State { index, segments } = state;
    for (i, rule) in saved.iter().enumerate() {
        segments.define(index, SegmentDef { name: format!("saved_{i:02}"), rule: rule.clone() }, now).expect("saved segment");
    }
    println!("\nsaved segments: {} ({} defined in {:.1} s)", segments.len(), saved.len(), started.elapsed().as_secs_f64());
}

/// One event applied and every segment re-checked for its profile.
fn incremental(state: &mut State, now: Timestamp) {
    let n = 100_000u32;
    let alive: Vec<u32> = state.index.alive().iter().step_by((state.index.profiles() as usize / n as usize).max(1)).take(n as usize).collect();
    let mut times = Vec::with_capacity(alive.len());
    for (i, p) in alive.iter().enumerate() {
        let properties = serde_json::json!({"revenue_fen": 2900, "category": "coffee"});
        let msg = Message::track_about(vec![], "Order Completed", format!("inc-{i}"), properties, now, now, "bench");
        let outcome = Outcome { profile_id: Some(siyu_core::ProfileId::from_bit(*p)), created: false, merged: vec![], attached: vec![], failed: false };
        let committed = Committed { messages: vec![(msg, outcome)], last_seq: i as u64 + 1 };
        let t = Instant::now();
        let touched = state.index.apply(&committed, now);
        let State { index, segments } = state;
        segments.update_profiles(index, &touched, now);
        times.push(t.elapsed().as_nanos() as u64);
    }
    times.sort_unstable();
    println!(
        "\nincremental update of one event (aggregates, lifecycle, {} segment re-checked)\n  median {:.2} µs  p99 {:.2} µs  over {} events",
        state.segments.len(),
        percentile(&times, 50.0) as f64 / 1000.0,
        percentile(&times, 99.0) as f64 / 1000.0,
        times.len()
    );
}

/// Counting and paging in the engine (a page is then read from the store by id).
fn paging(state: &State) {
    let vip = &state.segments.get("vip").expect("vip").members;
    let t = Instant::now();
    let count = vip.len();
    let count_us = t.elapsed().as_nanos() as f64 / 1000.0;
    let t = Instant::now();
    let mut it = vip.iter();
    it.advance_to((state.index.len() / 2).max(1));
    let page: Vec<u32> = it.take(100).collect();
    let page_us = t.elapsed().as_nanos() as f64 / 1000.0;
    let t = Instant::now();
    let all = state.index.alive().len();
    let all_us = t.elapsed().as_nanos() as f64 / 1000.0;
    println!(
        "\ncounting and paging\n  segment count {count} in {count_us:.1} µs; a page of {} members from the middle in {page_us:.1} µs; all profiles counted ({all}) in {all_us:.1} µs",
        page.len()
    );
}

fn duckdb_python() -> anyhow::Result<String> {
    let candidates = [std::env::var("SIYU_BENCH_PYTHON").ok(), Some("target/bench-py/bin/python".into()), Some("python3".into())];
    for p in candidates.into_iter().flatten() {
        let ok = std::process::Command::new(&p).args(["-c", "import duckdb"]).output().map(|o| o.status.success()).unwrap_or(false);
        if ok {
            return Ok(p);
        }
    }
    println!("  installing duckdb from PyPI into target/bench-py …");
    let venv = Path::new("target/bench-py");
    let status = std::process::Command::new("python3").arg("-m").arg("venv").arg(venv).status()?;
    if !status.success() {
        bail!("could not create a virtualenv for duckdb");
    }
    let status = std::process::Command::new(venv.join("bin/pip")).args(["install", "--quiet", "duckdb"]).status()?;
    if !status.success() {
        bail!("pip install duckdb failed; set SIYU_BENCH_PYTHON to a Python with duckdb");
    }
    Ok(venv.join("bin/python").display().to_string())
}

fn duckdb_comparison(rules: &[(&str, &str, Rule)], vip: &Rule, now: Timestamp, dir: &Path, siyu: &[(String, u64, f64, f64)]) -> anyhow::Result<()> {
    println!("\nDuckDB on the same data (exported to {}; loading not timed; saved segment vip materialised in both)", dir.display());
    let segments = vec![("vip".to_string(), vip.clone())];
    let sql = Sql { now, segments: &segments, trait_columns: &TRAIT_COLUMNS };
    let setup = segments.iter().map(|(n, _)| Ok(json!({"name": n, "setup": sql.materialise(n)?})));
    let timed = rules.iter().map(|(n, _, r)| Ok(json!({"name": n, "sql": sql.count_query(r)?})));
    let queries: Vec<Value> = setup.chain(timed).collect::<Result<_, String>>().map_err(|e| anyhow::anyhow!(e))?;
    let qpath = dir.join("queries.json");
    std::fs::write(&qpath, serde_json::to_vec_pretty(&queries)?)?;
    let python = duckdb_python()?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/duckdb_rules.py");
    let out = std::process::Command::new(python).arg(script).arg(dir).arg(&qpath).arg("5").output().context("running DuckDB")?;
    if !out.status.success() {
        bail!("DuckDB failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let mut all_equal = true;
    let mut slowest_ratio = f64::MAX;
    println!("  {:<16} {:>9} {:>9} {:>12} {:>12} {:>9}", "rule", "Siyu", "DuckDB", "Siyu median", "DuckDB median", "faster");
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let v: Value = serde_json::from_str(line)?;
        if let Some(s) = v["loaded_seconds"].as_f64() {
            println!("  (DuckDB loaded the CSVs in {s:.1} s)");
            continue;
        }
        if let Some(s) = v["setup_seconds"].as_f64() {
            println!(
                "  (DuckDB kept segment {} as a table, as Siyu keeps its members, in {s:.2} s; not timed into the rules)",
                v["name"].as_str().unwrap_or_default()
            );
            continue;
        }
        let name = v["name"].as_str().unwrap_or_default();
        let Some((_, count, median, _)) = siyu.iter().find(|(n, ..)| n == name) else { continue };
        let duck_count = v["count"].as_u64().unwrap_or(u64::MAX);
        let duck_median = v["median_ms"].as_f64().unwrap_or(0.0);
        let ratio = duck_median / median.max(0.001);
        slowest_ratio = slowest_ratio.min(ratio);
        let same = duck_count == *count;
        all_equal &= same;
        println!("  {name:<16} {count:>9} {duck_count:>9} {median:>9.2} ms {duck_median:>9.2} ms {ratio:>8.0}x{}", if same { "" } else { "  COUNTS DIFFER" });
    }
    println!("  counts {}; Siyu is at least {slowest_ratio:.0}x faster on every rule", if all_equal { "equal on every rule" } else { "DIFFER" });
    if !all_equal {
        bail!("Siyu and DuckDB disagree");
    }
    Ok(())
}
