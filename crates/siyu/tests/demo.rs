//! The demo brand loads into both backends, and the same seed makes the same brand.

use std::path::PathBuf;

use chrono::NaiveDate;
use siyu_store::{Store, both_backends};

async fn fingerprint(store: &Store) -> Vec<(String, i64)> {
    store
        .run(|db| {
            Box::pin(async move {
                let mut out = Vec::new();
                for sql in [
                    "SELECT 'profiles', COUNT(*) FROM profiles",
                    "SELECT 'identities', COUNT(*) FROM identities",
                    "SELECT 'traits', COUNT(*) FROM traits",
                    "SELECT 'tags', COUNT(*) FROM profile_tags",
                    "SELECT 'guides', COUNT(*) FROM staff_customers",
                    "SELECT 'stores', COUNT(*) FROM stores",
                    "SELECT 'staff', COUNT(*) FROM staff",
                    "SELECT 'revenue', CAST(SUM(LENGTH(payload)) AS BIGINT) FROM events",
                ] {
                    let r = db.query_one(sql, &[]).await?;
                    out.push((r.text(0)?, r.int(1)?));
                }
                for r in db.query("SELECT name, COUNT(*) FROM events WHERE name IS NOT NULL GROUP BY name ORDER BY name", &[]).await? {
                    out.push((r.text(0)?, r.int(1)?));
                }
                Ok(out)
            })
        })
        .await
        .unwrap()
}

both_backends!(the_demo_brand_is_realistic_and_deterministic, |store: Store, _log: PathBuf| async move {
    let anchor = NaiveDate::from_ymd_opt(2026, 11, 1);
    let g = siyu::demo::generate_into(&store, 3_000, 7, anchor, false).await.unwrap();
    assert_eq!(g.customers, 3_000);
    let print = fingerprint(&store).await;
    let get = |k: &str| print.iter().find(|(n, _)| n == k).map(|(_, v)| *v).unwrap_or(0);
    assert_eq!(get("profiles"), 3_000);
    assert_eq!(get("stores"), 300);
    assert!((1_900..2_600).contains(&get("staff")));
    for event in [
        "Order Completed",
        "Contact Added",
        "Contact Deleted",
        "Coupon Redeemed",
        "Shared",
        "Referred",
        "Group Joined",
        "Checked In",
        "Official Account Followed",
    ] {
        assert!(get(event) > 0, "{event} missing: {print:?}");
    }
    let stats = store.run(|db| Box::pin(siyu_store::profiles::stats(db))).await.unwrap();
    assert_eq!(stats.events as u64, g.events);
    assert_eq!(stats.profiles, 3_000);

    // The same seed and anchor, into a fresh store: the same brand.
    let other = siyu_store::testing::TestStore::sqlite().await;
    siyu::demo::generate_into(&other.store, 3_000, 7, anchor, false).await.unwrap();
    assert_eq!(fingerprint(&other.store).await, print);
    // A second run into a non-empty store is refused, and changes nothing.
    let marker = store.run(|db| Box::pin(siyu_store::admin::get_setting(db, "demo"))).await.unwrap();
    assert!(siyu::demo::generate_into(&store, 10, 8, anchor, false).await.is_err());
    assert_eq!(store.run(|db| Box::pin(siyu_store::admin::get_setting(db, "demo"))).await.unwrap(), marker);
    assert_eq!(fingerprint(&store).await, print);
});
