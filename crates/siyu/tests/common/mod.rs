//! Integration-test support: the real server on a loopback port, on SQLite or on
//! PostgreSQL, and a client that speaks to it over HTTP.
#![allow(dead_code)]

use reqwest::StatusCode;
use serde_json::Value;
use siyu_server::app::{self, Running, ServeOptions};
pub use siyu_server::http::server::Limits;
use siyu_store::testing::TestStore;

pub const WRITE_KEY: &str = "wk_test_source";
pub const CLIENT_WRITE_KEY: &str = "wkc_test_client_key";
pub const ADMIN_TOKEN: &str = "siyu_admin_test_token";

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub running: Option<Running>,
    pub store: TestStore,
}

impl TestApp {
    pub async fn spawn(store: TestStore) -> TestApp {
        TestApp::spawn_with(store, Limits::default()).await
    }

    /// The server with other HTTP limits (shorter timeouts for the tests of them).
    pub async fn spawn_with(store: TestStore, limits: Limits) -> TestApp {
        let running = start(&store, limits).await;
        let base = format!("http://{}", running.addr);
        let client = siyu_wecom::client::http_builder().no_proxy().build().unwrap();
        TestApp { base, client, running: Some(running), store }
    }

    pub async fn sqlite() -> TestApp {
        TestApp::spawn(TestStore::sqlite().await).await
    }

    pub async fn postgres() -> Option<TestApp> {
        Some(TestApp::spawn(TestStore::postgres().await?).await)
    }

    /// Stops the server (gracefully) and starts it again on the same store and data
    /// directory, as an operator's restart would.
    pub async fn restart(&mut self) {
        if let Some(r) = self.running.take() {
            r.stop().await;
        }
        let running = start(&self.store, Limits::default()).await;
        self.base = format!("http://{}", running.addr);
        self.running = Some(running);
    }

    pub async fn shutdown(mut self) {
        if let Some(r) = self.running.take() {
            r.stop().await;
        }
        self.store.cleanup().await;
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// POSTs JSON to a tracking endpoint with the write key as Basic user name.
    pub async fn send(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        let resp = self.client.post(self.url(path)).basic_auth(WRITE_KEY, Some("")).json(body).send().await.unwrap();
        into_json(resp).await
    }

    /// Waits until everything acknowledged is applied to profiles.
    pub async fn settle(&self) {
        self.running.as_ref().expect("running").state.ingest.settle().await;
    }

    pub fn engine(&self) -> &siyu_engine::Engine {
        &self.running.as_ref().expect("running").state.engine
    }

    /// Waits until ingest, the segment engine, and the membership events the engine
    /// produced have all been applied.
    pub async fn settle_all(&self) {
        let ingest = &self.running.as_ref().expect("running").state.ingest;
        loop {
            let before = ingest.appended();
            ingest.settle().await;
            self.engine().sync().await.unwrap();
            // Kept on purpose: the membership reporter turns what the engine reported into
            // events on a task of its own, and nothing tells the test when it has caught
            // up. This is a quiet window (nothing newly appended within it ends the loop),
            // not a wait for a fixed amount of work.
            tokio::time::sleep(std::time::Duration::from_millis(30)).await;
            if ingest.appended() == before {
                ingest.settle().await;
                return;
            }
        }
    }

    pub async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        into_json(self.client.post(self.url(path)).bearer_auth(ADMIN_TOKEN).json(body).send().await.unwrap()).await
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        let resp = self.client.get(self.url(path)).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
        into_json(resp).await
    }

    pub async fn put(&self, path: &str, body: Option<&Value>) -> (StatusCode, Value) {
        let mut req = self.client.put(self.url(path)).bearer_auth(ADMIN_TOKEN);
        if let Some(b) = body {
            req = req.json(b);
        }
        into_json(req.send().await.unwrap()).await
    }

    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        into_json(self.client.delete(self.url(path)).bearer_auth(ADMIN_TOKEN).send().await.unwrap()).await
    }

    /// (profiles, events)
    pub async fn counts(&self) -> (i64, i64) {
        self.settle().await;
        let (status, v) = self.get("/api/v1/stats").await;
        assert_eq!(status, StatusCode::OK, "{v}");
        (v["profiles"].as_i64().unwrap(), v["events"].as_i64().unwrap())
    }

    pub async fn lookup(&self, query: &str) -> (StatusCode, Value) {
        self.settle().await;
        self.get(&format!("/api/v1/profiles/lookup?{query}")).await
    }
}

async fn start(store: &TestStore, limits: Limits) -> Running {
    app::start(ServeOptions {
        store: store.config.clone(),
        data_dir: store.dir.path().to_path_buf(),
        listen: "127.0.0.1:0".parse().unwrap(),
        write_key: Some(WRITE_KEY.to_string()),
        client_write_key: Some(CLIENT_WRITE_KEY.to_string()),
        admin_token: Some(ADMIN_TOKEN.to_string()),
        limits,
    })
    .await
    .expect("server starts")
}

pub async fn into_json(resp: reqwest::Response) -> (StatusCode, Value) {
    let status = resp.status();
    let text = resp.text().await.unwrap();
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, value)
}

/// Runs an HTTP test body against the server on SQLite and on PostgreSQL.
#[macro_export]
macro_rules! app_test {
    ($name:ident, |$app:ident| $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                #[allow(unused_mut)]
                let mut $app = $crate::common::TestApp::sqlite().await;
                $body
                $app.shutdown().await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                #[allow(unused_mut)]
                let Some(mut $app) = $crate::common::TestApp::postgres().await else { return };
                $body
                $app.shutdown().await;
            }
        }
    };
}

/// The real `siyu serve` binary as a child process (for `kill -9` tests).
pub fn spawn_server(data_dir: &std::path::Path, port: u16, database_url: Option<&str>, write_key: &str, admin: &str) -> std::process::Child {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_siyu"));
    cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(data_dir)
        .env("SIYU_WRITE_KEY", write_key)
        .env("SIYU_ADMIN_TOKEN", admin)
        .env("SIYU_LOG", "warn")
        .stdout(std::process::Stdio::null());
    if let Some(url) = database_url {
        cmd.args(["--database-url", url]);
    }
    cmd.spawn().expect("siyu serve starts")
}

pub async fn wait_ready(client: &reqwest::Client, base: &str) {
    wait_until_within(&format!("the server at {base} to answer /healthz"), std::time::Duration::from_secs(60), async || {
        client.get(format!("{base}/healthz")).send().await.is_ok_and(|r| r.status().is_success())
    })
    .await;
}

/// How long [`wait_until`] waits before it fails the test.
pub const WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// How often [`wait_until`] checks.
const POLL: std::time::Duration = std::time::Duration::from_millis(50);

/// Waits for something a background task does (a round, a tick, events applied): checks
/// `condition` every 50 ms and returns once it holds; fails the test, saying it waited
/// for `what`, if it does not hold within [`WAIT`]. Tests wait on the condition itself,
/// never for a fixed time.
pub async fn wait_until(what: &str, condition: impl AsyncFnMut() -> bool) {
    wait_until_within(what, WAIT, condition).await
}

/// [`wait_until`] with a deadline of its own, for work known to take longer.
pub async fn wait_until_within(what: &str, deadline: std::time::Duration, mut condition: impl AsyncFnMut() -> bool) {
    let started = std::time::Instant::now();
    loop {
        if condition().await {
            return;
        }
        if started.elapsed() > deadline {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// A webhook receiver: records every delivery it is sent.
#[derive(Clone, Default)]
pub struct Receiver {
    pub got: std::sync::Arc<std::sync::Mutex<Vec<Value>>>,
    /// While set, the receiver answers 503 and keeps nothing (a gateway that is down).
    pub down: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Receiver {
    pub async fn start(&self) -> String {
        let (got, down) = (self.got.clone(), self.down.clone());
        let router = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |axum::Json(body): axum::Json<Value>| {
                let (got, down) = (got.clone(), down.clone());
                async move {
                    if down.load(std::sync::atomic::Ordering::SeqCst) {
                        return reqwest::StatusCode::SERVICE_UNAVAILABLE;
                    }
                    got.lock().unwrap().extend(body["deliveries"].as_array().cloned().unwrap_or_default());
                    reqwest::StatusCode::OK
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        format!("http://{addr}/hook")
    }

    pub fn keys(&self) -> Vec<String> {
        self.got.lock().unwrap().iter().map(|d| d["key"].as_str().unwrap().to_string()).collect()
    }

    pub fn for_profile(&self, p: i64) -> Vec<Value> {
        self.got.lock().unwrap().iter().filter(|d| d["profile_id"] == serde_json::json!(p)).cloned().collect()
    }
}
