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
    let g = siyu_demo::generate_into(&store, 3_000, 7, anchor, false).await.unwrap();
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
    siyu_demo::generate_into(&other.store, 3_000, 7, anchor, false).await.unwrap();
    assert_eq!(fingerprint(&other.store).await, print);
    // A second run into a non-empty store is refused, and changes nothing.
    let marker = store.run(|db| Box::pin(siyu_store::admin::get_setting(db, "demo"))).await.unwrap();
    assert!(siyu_demo::generate_into(&store, 10, 8, anchor, false).await.is_err());
    assert_eq!(store.run(|db| Box::pin(siyu_store::admin::get_setting(db, "demo"))).await.unwrap(), marker);
    assert_eq!(fingerprint(&store).await, print);
});

/// `siyu demo` with `SIYU_ADMIN_TOKEN` set prints lines to try that name the variable,
/// never the token, and look up a customer who exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_prints_commands_that_work() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_siyu"))
        .args(["demo", "--customers", "300", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(dir.path())
        .env("SIYU_ADMIN_TOKEN", "secret-demo-token")
        .env("SIYU_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let lines = tokio::task::spawn_blocking(move || {
        let mut lines = Vec::new();
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line.unwrap();
            let done = line.contains("/campaigns/1/preview");
            lines.push(line);
            if done {
                break;
            }
        }
        lines
    })
    .await
    .unwrap();
    let text = lines.join("\n");
    assert!(!text.contains("secret-demo-token"), "the token is never printed: {text}");
    let lookup = lines.iter().find(|l| l.contains("/profiles/lookup?user_id=")).unwrap_or_else(|| panic!("no lookup line: {text}"));
    assert!(lookup.contains("Bearer $SIYU_ADMIN_TOKEN"), "{lookup}");
    // Run the printed lookup as a shell would, with the variable set.
    let user = lookup.split("user_id=").nth(1).unwrap().split('\'').next().unwrap();
    let resp = siyu_wecom::client::http_builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("http://127.0.0.1:{port}/api/v1/profiles/lookup?user_id={user}"))
        .bearer_auth("secret-demo-token")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), reqwest::StatusCode::OK, "the printed customer exists: {lookup}");
    child.kill().unwrap();
    child.wait().unwrap();
}
