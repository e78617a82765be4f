//! `siyu segment 'city = "Shanghai" and count(Order Completed, 30d) >= 2'`: builds the
//! engine from the store, evaluates the rule, prints the count, the time and a sample.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use siyu_core::Timestamp;
use siyu_core::rule::{Rule, parse};
use siyu_engine::{SegmentDef, Segments, Spec, State, load};
use siyu_store::segments as stored;
use siyu_store::{Store, profiles};

use super::StoreArgs;

#[derive(Args, Debug)]
pub struct SegmentArgs {
    /// The rule in its text form (or, starting with `{`, its JSON form).
    pub rule: String,
    #[command(flatten)]
    pub store: StoreArgs,
    /// How many sample profiles to print.
    #[arg(long, default_value_t = 10)]
    pub sample: usize,
    /// Print JSON for scripts.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: SegmentArgs) -> anyhow::Result<ExitCode> {
    let rule = if args.rule.trim_start().starts_with('{') {
        let v: serde_json::Value = serde_json::from_str(&args.rule).context("the rule is not valid JSON")?;
        Rule::from_json(&v)
    } else {
        parse(&args.rule)
    };
    let rule = match rule {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let store = Store::open(&args.store.config()).await?;
    let saved = store.run(|db| Box::pin(stored::list(db))).await?;
    let defs: Vec<SegmentDef> = saved.into_iter().filter_map(|s| Rule::from_json(&s.rule).ok().map(|rule| SegmentDef { name: s.name, rule })).collect();
    let mut rules: Vec<&Rule> = defs.iter().map(|d| &d.rule).collect();
    rules.push(&rule);
    let spec = Spec::for_rules(&rules);

    let now = Timestamp::now();
    let started = Instant::now();
    let bar = if args.json { ProgressBar::hidden() } else { ProgressBar::new_spinner() };
    bar.set_style(ProgressStyle::with_template("{spinner} indexing {msg}").expect("template"));
    let b = bar.clone();
    let index = load::load(
        &store,
        siyu_server::app::lifecycle_config(&args.store.data_dir)?,
        spec,
        now,
        Box::new(move |what, n| {
            if n % 20_000 == 0 {
                b.set_message(format!("{what} ({n})"));
                b.tick();
            }
        }),
    )
    .await?;
    bar.finish_and_clear();
    let build_secs = started.elapsed().as_secs_f64();
    let mut state = State { index, segments: Segments::default() };
    for def in defs {
        let State { index, segments } = &mut state;
        let _ = segments.define(index, def, now);
    }
    let t = Instant::now();
    let members = match state.evaluate(&rule, now) {
        Ok(m) => m,
        Err(missing) => {
            eprintln!("error: {missing}");
            return Ok(ExitCode::from(2));
        }
    };
    let eval_ms = t.elapsed().as_secs_f64() * 1000.0;
    let ids: Vec<siyu_core::ProfileId> = members.iter().take(args.sample).map(siyu_core::ProfileId::from_bit).collect();
    let sample = store.run(move |db| Box::pin(async move { profiles::summaries(db, &ids).await })).await?;
    if args.json {
        let out = json!({
            "rule": rule.to_string(), "count": members.len(), "profiles": state.index.profiles(),
            "eval_ms": eval_ms, "index_build_seconds": build_secs, "sample": sample,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("{rule}");
        println!("{} of {} profiles, evaluated in {eval_ms:.2} ms (index built in {build_secs:.1} s)", members.len(), state.index.profiles());
        for s in &sample {
            println!(
                "  {:>10}  {:<12} {:<10} {:<10} {}",
                s.id,
                s.user_id.as_deref().unwrap_or("-"),
                s.name.as_deref().unwrap_or("-"),
                s.city.as_deref().unwrap_or("-"),
                s.uuid
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
