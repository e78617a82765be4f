//! Caps and journeys survive `kill -9`: the real binary is killed while a campaign is
//! being dispatched and customers wait inside a journey; after a restart no customer is
//! over a cap, no touch was planned twice, every journey resumes and finishes, and a
//! second campaign the same day is held back by the caps the first one used.

mod common;

use std::collections::{HashMap, HashSet};
use std::net::TcpListener;
use std::path::Path;
use std::process::Child;
use std::time::Duration;

use common::{Receiver, spawn_server, wait_ready, wait_until_within};
use serde_json::{Value, json};
use siyu_store::testing::TestStore;

const WRITE_KEY: &str = "wk_outreach_restart";
const ADMIN: &str = "siyu_admin_outreach_restart";
const CUSTOMERS: usize = 300;

struct Server {
    child: Child,
    base: String,
    client: reqwest::Client,
}

impl Server {
    async fn start(dir: &Path, database_url: Option<&str>) -> Server {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let base = format!("http://127.0.0.1:{port}");
        let client = siyu_wecom::client::http_builder().no_proxy().build().unwrap();
        let child = spawn_server(dir, port, database_url, WRITE_KEY, ADMIN);
        wait_ready(&client, &base).await;
        Server { child, base, client }
    }

    async fn admin(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self.client.request(method, format!("{}{path}", self.base)).bearer_auth(ADMIN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "{path}: {status} {v}");
        v
    }

    async fn track(&self, batch: Vec<Value>) {
        let r = self.client.post(format!("{}/v1/batch", self.base)).basic_auth(WRITE_KEY, Some("")).json(&json!({"batch": batch})).send().await.unwrap();
        assert!(r.status().is_success());
    }

    fn kill9(&mut self) {
        self.child.kill().unwrap(); // SIGKILL
        self.child.wait().unwrap();
    }
}

/// How long the waits below may take: 300 customers through a journey with a wait, and a
/// campaign's dispatch, on a busy machine.
const LONG: Duration = Duration::from_secs(90);

async fn scenario(dir: &Path, database_url: Option<String>) {
    let receiver = Receiver::default();
    let config = json!({"webhook_url": receiver.start().await, "policy": {"quiet_hours": null, "caps": {"daily": 2, "weekly": 5}}});
    std::fs::write(dir.join("outreach.json"), config.to_string()).unwrap();
    let mut server = Server::start(dir, database_url.as_deref()).await;

    let users: Vec<String> = (0..CUSTOMERS).map(|i| format!("r{i}")).collect();
    server
        .track(
            users
                .iter()
                .enumerate()
                .map(|(i, u)| json!({"type": "identify", "userId": u, "traits": {"cohort": "restart", "consent.sms": true, "phone": format!("139{i:08}")}}))
                .collect(),
        )
        .await;
    server.admin(reqwest::Method::POST, "/api/v1/segments", Some(json!({"name": "restart", "rule": "cohort = \"restart\""}))).await;
    // Welcome journey: a message, a wait of a few seconds, a tag.
    let journey = json!({"spec": {"name": "welcome", "trigger": {"event": {"event": "Signed Up"}}, "steps": [
        {"send": {"channel": "sms", "content": "welcome"}}, {"wait": {"hours": 0.002}}, {"tag": {"add": "welcomed"}}]}});
    server.admin(reqwest::Method::POST, "/api/v1/journeys", Some(journey)).await;
    // No wait for the runner here: the journey's start in the event stream is recorded
    // when it is created (`siyu_store::outreach::put_journey`), so the events tracked
    // next trigger it whenever the runner's round comes.
    server.track(users.iter().map(|u| json!({"type": "track", "userId": u, "event": "Signed Up"})).collect()).await;
    let campaign = json!({"name": "first", "audience": {"segment": "restart"}, "channel": "sms", "content": "hello"});
    let first = server.admin(reqwest::Method::POST, "/api/v1/campaigns", Some(campaign.clone())).await["id"].as_i64().unwrap();
    server.admin(reqwest::Method::POST, &format!("/api/v1/campaigns/{first}/actions/schedule"), None).await;

    // Kill as soon as deliveries start arriving.
    wait_until_within("the first deliveries", LONG, async || !receiver.keys().is_empty()).await;
    server.kill9();
    let before_restart = receiver.keys().len();

    let server = Server::start(dir, database_url.as_deref()).await;
    // Everything finishes after the restart: the campaign's touches and the journeys.
    let s = &server;
    wait_until_within("every customer through the journey", LONG, async || {
        let j = s.admin(reqwest::Method::GET, "/api/v1/journeys/1", None).await;
        j["customers"]["completed"] == json!(CUSTOMERS)
    })
    .await;
    wait_until_within("every campaign touch sent", LONG, async || {
        let r = s.admin(reqwest::Method::GET, &format!("/api/v1/campaigns/{first}/report"), None).await;
        r["metrics"]["sent"].as_u64().unwrap_or(0) + r["suppressed"]["daily_cap"].as_u64().unwrap_or(0) == CUSTOMERS as u64
    })
    .await;

    // No customer has more than the daily cap of 2 distinct touches; no key was planned twice.
    let got = receiver.got.lock().unwrap().clone();
    let mut keys_per_profile: HashMap<i64, HashSet<String>> = HashMap::new();
    for d in &got {
        keys_per_profile.entry(d["profile_id"].as_i64().unwrap()).or_default().insert(d["key"].as_str().unwrap().to_string());
    }
    assert_eq!(keys_per_profile.len(), CUSTOMERS);
    assert!(keys_per_profile.values().all(|k| k.len() == 2), "each customer got the welcome and the campaign, once each");
    let distinct: HashSet<&str> = got.iter().map(|d| d["key"].as_str().unwrap()).collect();
    // A batch in flight at the kill may be sent again with the same idempotency keys.
    let repeats = got.len() - distinct.len();
    assert!(repeats <= 2000, "{repeats} repeats");
    eprintln!("{before_restart} deliveries before kill -9; {repeats} re-sent with the same key after it");
    let p = s.admin(reqwest::Method::GET, "/api/v1/profiles/lookup?user_id=r7", None).await;
    assert!(p["tags"].to_string().contains("welcomed"), "{p}");

    // The same day, a second campaign is held back by the caps the first one used.
    let mut second = campaign;
    second["name"] = json!("second");
    let id = s.admin(reqwest::Method::POST, "/api/v1/campaigns", Some(second)).await["id"].as_i64().unwrap();
    let preview = s.admin(reqwest::Method::POST, &format!("/api/v1/campaigns/{id}/preview"), None).await;
    assert_eq!(preview["would_send"], json!(0), "{preview}");
    assert_eq!(preview["suppressed"][0]["reason"], json!("daily_cap"));
    let mut server = server;
    server.kill9();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caps_and_journeys_survive_kill_9_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    scenario(dir.path(), None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caps_and_journeys_survive_kill_9_postgres() {
    let Some(store) = TestStore::postgres().await else { return };
    scenario(store.dir.path(), store.postgres_url()).await;
    store.cleanup().await;
}
