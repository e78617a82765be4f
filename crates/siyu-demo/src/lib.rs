//! The demo brand, 岚山咖啡 Lanshan Coffee: 12 cities, 300 stores, about 2,000 staff,
//! and (by default) 100,000 customers with a year of history: WeCom contacts added (and
//! some deleted), official-account follows, mini-program orders with a skewed frequency
//! (a few daily super users, many one-timers, some who lapsed), coupon redemptions,
//! shares and referrals, store-community group joins, activity check-ins. The same seed
//! and anchor date give the same brand. `siyu demo` serves it; the benchmarks and tests
//! generate from it; the server never depends on it.

pub mod brand;
pub mod generate;
pub mod outreach;
pub mod rng;
pub mod wecom;

use std::time::Instant;

use chrono::NaiveDate;
use indicatif::{ProgressBar, ProgressStyle};
use siyu_core::Timestamp;
use siyu_store::bulk::BulkLoader;
use siyu_store::{Store, admin, org};

/// The setting that says a store holds the demo brand (and which one), or that a
/// generation into it did not finish (`loading: …`).
pub const DEMO_SETTING: &str = "demo";

pub struct Generated {
    pub customers: u64,
    pub events: u64,
    pub seconds: f64,
}

/// Generates the brand into an empty store (organisation, then customers in batches).
pub async fn generate_into(store: &Store, customers: u64, seed: u64, anchor: Option<NaiveDate>, progress: bool) -> anyhow::Result<Generated> {
    let started = Instant::now();
    // The year ends at 23:59:59 on the anchor day; by default yesterday's, in China,
    // so every event has happened: "last 30 days" finds people, and nothing in the
    // future counts as a conversion or a block.
    let anchor = anchor.unwrap_or_else(|| chrono::Utc::now().with_timezone(&chrono_tz::Asia::Shanghai).date_naive() - chrono::Days::new(1));
    let marker = format!("seed {seed}, {customers} customers, year ending {anchor}");
    // Refuses a store that already holds customers before writing anything to it.
    let mut loader = BulkLoader::begin(store).await?;
    let loading = format!("loading: {marker}");
    store.run(move |db| Box::pin(async move { admin::set_setting(db, DEMO_SETTING, &loading).await })).await?;

    let organisation = brand::organisation(seed);
    let (stores, staff) = (organisation.stores.clone(), organisation.staff.clone());
    store
        .transaction(move |db| {
            Box::pin(async move {
                let now = Timestamp::now();
                for s in &stores {
                    org::upsert_store(db, s, now).await?;
                }
                for s in &staff {
                    org::upsert_staff(db, s, now).await?;
                }
                Ok(())
            })
        })
        .await?;

    let bar = if progress { ProgressBar::new(customers) } else { ProgressBar::hidden() };
    bar.set_style(
        ProgressStyle::with_template("{spinner} generating customers [{bar:30}] {pos}/{len} ({per_sec}, {eta} left)")
            .expect("progress template")
            .progress_chars("=> "),
    );
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    let generator = generate::Generator::new(seed, anchor, organisation);
    let producer = std::thread::Builder::new().name("demo-generator".into()).spawn(move || {
        const BATCH: u64 = 1_000;
        let mut events = 0u64;
        let mut start = 0;
        while start < customers {
            let end = (start + BATCH).min(customers);
            let batch = generator.batch(start..end);
            events += batch.events.len() as u64;
            if tx.blocking_send((end - start, batch)).is_err() {
                break;
            }
            start = end;
        }
        events
    })?;
    while let Some((n, batch)) = rx.recv().await {
        loader.write(batch).await?;
        bar.inc(n);
    }
    let events = producer.join().map_err(|_| anyhow::anyhow!("the generator panicked"))?;
    loader.finish().await?;
    bar.finish_and_clear();
    outreach::seed(store).await?;
    store.run(move |db| Box::pin(async move { admin::set_setting(db, DEMO_SETTING, &marker).await })).await?;
    Ok(Generated { customers, events, seconds: started.elapsed().as_secs_f64() })
}
