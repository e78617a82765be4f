//! A 200 means durable: `kill -9` the real binary while requests are in flight and the
//! indexer is behind, restart it, and every acknowledged message is there, once.

mod common;

use std::collections::HashSet;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{wait_ready, wait_until_within};

use serde_json::{Value, json};
use siyu_store::{Store, StoreConfig};

const WRITE_KEY: &str = "wk_durability";
const ADMIN: &str = "siyu_admin_durability";

fn spawn(data_dir: &Path, port: u16, database_url: Option<&str>) -> Child {
    common::spawn_server(data_dir, port, database_url, WRITE_KEY, ADMIN)
}

async fn ingest_lag(client: &reqwest::Client, base: &str) -> u64 {
    let v: Value = client.get(format!("{base}/api/v1/ingest")).bearer_auth(ADMIN).send().await.unwrap().json().await.unwrap();
    v["lag"].as_u64().unwrap()
}

async fn run(database_url: Option<String>, store_config: StoreConfig, data_dir: &Path) {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let base = format!("http://127.0.0.1:{port}");
    let client = siyu_wecom::client::http_builder().no_proxy().build().unwrap();
    let mut server = spawn(data_dir, port, database_url.as_deref());
    wait_ready(&client, &base).await;

    // Eight senders, 200-message batches with unique messageIds, as fast as acks come.
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let mut senders = Vec::new();
    for s in 0..8 {
        let (client, base, acked) = (client.clone(), base.clone(), acked.clone());
        senders.push(tokio::spawn(async move {
            for b in 0.. {
                let ids: Vec<String> = (0..200).map(|i| format!("dur-{s}-{b}-{i}")).collect();
                let batch: Vec<Value> = ids
                    .iter()
                    .enumerate()
                    .map(|(i, id)| {
                        json!({"type": "track", "userId": format!("cust-{}", (s * 7919 + b * 31 + i) % 5000),
                        "event": "Order Completed", "messageId": id, "properties": {"revenue_fen": 2900}})
                    })
                    .collect();
                let sent = client.post(format!("{base}/v1/batch")).basic_auth(WRITE_KEY, Some("")).json(&json!({"batch": batch})).send().await;
                match sent {
                    Ok(r) if r.status().is_success() => acked.lock().unwrap().extend(ids),
                    _ => return, // the server is gone
                }
            }
        }));
    }
    // Kill while acknowledgements are flowing and the indexer has a backlog.
    let started = Instant::now();
    // Polls (not a fixed wait) so the kill lands while acknowledgements are flowing.
    while acked.lock().unwrap().len() < 30_000 && started.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.kill().expect("SIGKILL");
    server.wait().unwrap();
    for s in senders {
        let _ = s.await;
    }
    let acked: Vec<String> = acked.lock().unwrap().clone();
    assert!(acked.len() >= 30_000, "only {} acknowledged", acked.len());

    // Restart: the unapplied tail of the log is replayed.
    let mut server = spawn(data_dir, port, database_url.as_deref());
    wait_ready(&client, &base).await;
    wait_until_within("the replay to finish (ingest lag 0)", Duration::from_secs(120), async || ingest_lag(&client, &base).await == 0).await;
    let _ = Command::new("kill").arg("-TERM").arg(server.id().to_string()).status();
    server.wait().unwrap();

    let store = Store::open(&store_config).await.unwrap();
    let stored: Vec<String> = store
        .run(|db| {
            Box::pin(async move { db.query("SELECT message_id FROM events WHERE message_id LIKE 'dur-%'", &[]).await?.iter().map(|r| r.text(0)).collect() })
        })
        .await
        .unwrap();
    let unique: HashSet<&String> = stored.iter().collect();
    assert_eq!(unique.len(), stored.len(), "no message is stored twice");
    let missing: Vec<&String> = acked.iter().filter(|id| !unique.contains(id)).collect();
    assert!(missing.is_empty(), "{} acknowledged messages lost, e.g. {:?}", missing.len(), &missing[..missing.len().min(5)]);
    eprintln!("kill -9 after {} acknowledged messages: all stored ({} stored in total)", acked.len(), stored.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_after_acknowledgement_loses_nothing_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig::Sqlite { data_dir: dir.path().to_path_buf() };
    run(None, config, dir.path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_after_acknowledgement_loses_nothing_postgres() {
    // The binary takes a plain URL; the test's schema rides in the connection options.
    let Some(t) = siyu_store::testing::TestStore::postgres().await else { return };
    run(t.postgres_url(), t.config.clone(), t.dir.path()).await;
    t.cleanup().await;
}
