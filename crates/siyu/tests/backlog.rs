//! Memory stays bounded under any backlog: with the store's writer held, the tracking
//! API acknowledges up to the backlog limit and then answers 503 with `Retry-After`;
//! after a `kill -9` the backlog is replayed from the log in batches, and every
//! acknowledged message is stored once. The real binary, peak memory read from /proc.

mod common;

use std::collections::HashSet;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{wait_ready, wait_until_within};
use serde_json::{Value, json};
use siyu_store::sqlite::{ConnRole, SqliteDb};
use siyu_store::{Store, StoreConfig};

const WRITE_KEY: &str = "wk_backlog";
const ADMIN: &str = "siyu_admin_backlog";
const BACKLOG: u64 = 150_000;
/// Peak resident memory allowed to the server (a debug build) while it holds and then
/// replays the whole backlog.
const RSS_BOUND_MIB: u64 = 400;

fn spawn(data_dir: &Path, port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_siyu"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(data_dir)
        .env("SIYU_WRITE_KEY", WRITE_KEY)
        .env("SIYU_ADMIN_TOKEN", ADMIN)
        .env("SIYU_MAX_BACKLOG", BACKLOG.to_string())
        .env("SIYU_LOG", "error")
        .stdout(Stdio::null())
        .spawn()
        .expect("siyu serve starts")
}

/// The process's peak resident memory (VmHWM), MiB.
fn peak_rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix("VmHWM:")).and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok()).unwrap_or(0) / 1024
}

async fn lag(client: &reqwest::Client, base: &str) -> u64 {
    let v: Value = client.get(format!("{base}/api/v1/ingest")).bearer_auth(ADMIN).send().await.unwrap().json().await.unwrap();
    v["lag"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_is_refused_past_its_limit_and_replayed_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let base = format!("http://127.0.0.1:{port}");
    let client = siyu_wecom::client::http_builder().no_proxy().build().unwrap();
    let mut server = spawn(dir.path(), port);
    wait_ready(&client, &base).await;

    // Hold the store's write lock, as a stuck disk or a long backup would.
    let held = Arc::new(AtomicBool::new(true));
    let db_path = dir.path().join(siyu_store::sqlite::DB_FILE);
    let holder = {
        let held = held.clone();
        std::thread::spawn(move || {
            let db = SqliteDb::open(&db_path, ConnRole::Reader).unwrap();
            db.connection().execute_batch("BEGIN IMMEDIATE").unwrap();
            // Polls the flag the test clears to release the lock (not a wait for work).
            while held.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(20));
            }
            db.connection().execute_batch("ROLLBACK").unwrap();
        })
    };

    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let refused = Arc::new(AtomicUsize::new(0));
    let mut senders = Vec::new();
    for s in 0..4 {
        let (client, base, acked, refused) = (client.clone(), base.clone(), acked.clone(), refused.clone());
        senders.push(tokio::spawn(async move {
            for b in 0.. {
                let ids: Vec<String> = (0..500).map(|i| format!("bl-{s}-{b}-{i}")).collect();
                let batch: Vec<Value> = ids
                    .iter()
                    .enumerate()
                    .map(|(i, id)| json!({"type": "track", "userId": format!("c-{}", (b * 500 + i) % 7000), "event": "Product Viewed", "messageId": id, "properties": {"sku": "latte"}}))
                    .collect();
                let r = client.post(format!("{base}/v1/batch")).basic_auth(WRITE_KEY, Some("")).json(&json!({ "batch": batch })).send().await.unwrap();
                if r.status().is_success() {
                    acked.lock().unwrap().extend(ids);
                    continue;
                }
                assert_eq!(r.status(), 503);
                assert_eq!(r.headers().get("retry-after").and_then(|v| v.to_str().ok()), Some("5"));
                let v: Value = r.json().await.unwrap();
                assert_eq!(v["error"]["code"], "backlog_full", "{v}");
                if refused.fetch_add(1, Ordering::Relaxed) > 20 {
                    return;
                }
            }
        }));
    }
    for s in senders {
        s.await.unwrap();
    }
    let backlog_peak = peak_rss_mib(server.id());
    let backlog = lag(&client, &base).await;
    assert!(backlog >= BACKLOG, "the backlog reached its limit ({backlog})");
    assert!(backlog < BACKLOG + 4 * 500 + 1, "and stopped there ({backlog})");

    // Crash with the backlog unapplied, free the store, start again: the log replays.
    server.kill().unwrap();
    server.wait().unwrap();
    held.store(false, Ordering::Relaxed);
    holder.join().unwrap();
    let mut server = spawn(dir.path(), port);
    wait_ready(&client, &base).await;
    wait_until_within("the replay to finish (ingest lag 0)", Duration::from_secs(240), async || lag(&client, &base).await == 0).await;
    let replay_peak = peak_rss_mib(server.id());
    let _ = Command::new("kill").arg("-TERM").arg(server.id().to_string()).status();
    server.wait().unwrap();

    let acked = acked.lock().unwrap().clone();
    let store = Store::open(&StoreConfig::Sqlite { data_dir: dir.path().to_path_buf() }).await.unwrap();
    let stored: Vec<String> = store
        .run(|db| {
            Box::pin(async move { db.query("SELECT message_id FROM events WHERE message_id LIKE 'bl-%'", &[]).await?.iter().map(|r| r.text(0)).collect() })
        })
        .await
        .unwrap();
    let unique: HashSet<&String> = stored.iter().collect();
    assert_eq!(unique.len(), stored.len(), "no message is stored twice");
    assert!(acked.iter().all(|id| unique.contains(id)), "every acknowledged message is stored");
    eprintln!(
        "backlog of {backlog} messages (limit {BACKLOG}), {} acknowledged: peak RSS {backlog_peak} MiB while refusing, {replay_peak} MiB replaying (bound {RSS_BOUND_MIB} MiB)",
        acked.len()
    );
    assert!(backlog_peak < RSS_BOUND_MIB && replay_peak < RSS_BOUND_MIB, "peak RSS {backlog_peak} / {replay_peak} MiB");
}
