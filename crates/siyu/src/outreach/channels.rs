//! Where touches go that Siyu sends itself. (WeCom touches go through guide tasks; the
//! real WeCom call comes with the WeCom integration.) A channel receives a batch of
//! deliveries, each with its idempotency key, so a receiver can drop a repeat after a
//! crash between sending and recording the send.

use std::io::Write;
use std::path::PathBuf;

use async_trait::async_trait;
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Outgoing {
    pub id: i64,
    /// Idempotency key: the same touch always carries the same key.
    pub key: String,
    pub profile_id: i64,
    pub channel: String,
    pub kind: String,
    pub campaign_id: Option<i64>,
    pub journey_id: Option<i64>,
    pub content: String,
    /// The customer's identities a gateway needs (user id, phone hash, openid …).
    pub to: serde_json::Value,
}

#[async_trait]
pub trait Sender: Send + Sync {
    fn name(&self) -> String;
    async fn send(&self, batch: &[Outgoing]) -> Result<(), String>;
}

/// POSTs `{"deliveries": [...]}` to a URL; any 2xx is success.
pub struct Webhook {
    pub url: String,
    pub client: reqwest::Client,
}

impl Webhook {
    pub fn new(url: String) -> Webhook {
        let client = siyu_wecom::client::http_builder().no_proxy().timeout(std::time::Duration::from_secs(30)).build().expect("http client");
        Webhook { url, client }
    }
}

#[async_trait]
impl Sender for Webhook {
    fn name(&self) -> String {
        format!("webhook {}", self.url)
    }

    async fn send(&self, batch: &[Outgoing]) -> Result<(), String> {
        let resp = self.client.post(&self.url).json(&serde_json::json!({ "deliveries": batch })).send().await.map_err(|e| e.to_string())?;
        if resp.status().is_success() { Ok(()) } else { Err(format!("webhook answered {}", resp.status())) }
    }
}

/// Appends each delivery as a JSON line to a file (the demo's outbox), fsynced.
pub struct Outbox {
    pub path: PathBuf,
}

#[async_trait]
impl Sender for Outbox {
    fn name(&self) -> String {
        format!("outbox {}", self.path.display())
    }

    async fn send(&self, batch: &[Outgoing]) -> Result<(), String> {
        let path = self.path.clone();
        let lines: Vec<String> = batch.iter().map(|o| serde_json::to_string(o).expect("serializable")).collect();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&path)?;
            for l in lines {
                writeln!(f, "{l}")?;
            }
            f.sync_data()
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
    }
}
