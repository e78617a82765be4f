//! The admin API of a running Siyu server, as the command line calls it
//! (`siyu campaign`, `siyu token`, `siyu import` beside a running server).

use anyhow::{Context, bail};
use serde_json::Value;

/// A running server's admin API, called with an admin token.
pub struct AdminServer {
    base: String,
    token: String,
    client: reqwest::Client,
}

impl AdminServer {
    pub fn new(server: &str, token: &str) -> anyhow::Result<AdminServer> {
        let client = siyu_wecom::client::http_builder().no_proxy().timeout(std::time::Duration::from_secs(120)).build()?;
        Ok(AdminServer { base: server.trim_end_matches('/').to_string(), token: token.to_string(), client })
    }

    /// With `SIYU_ADMIN_TOKEN`.
    pub fn from_env(server: &str) -> anyhow::Result<AdminServer> {
        let token = super::admin_token_from_env().context("set SIYU_ADMIN_TOKEN to an admin token of the server")?;
        AdminServer::new(server, &token)
    }

    /// The answer's JSON; an error answer becomes an error with the server's message.
    pub async fn call(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> anyhow::Result<Value> {
        let mut request = self.client.request(method, format!("{}{path}", self.base)).bearer_auth(&self.token);
        if let Some(b) = body {
            request = request.json(b);
        }
        answer(request.send().await, path).await
    }
}

/// A response's JSON, or an error naming `what` with the server's message.
pub async fn answer(resp: reqwest::Result<reqwest::Response>, what: &str) -> anyhow::Result<Value> {
    let resp = resp.with_context(|| format!("reaching the server for {what}"))?;
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        bail!("{what}: {status}: {}", body["error"]["message"].as_str().unwrap_or("no details"));
    }
    Ok(body)
}

/// Percent-encodes one path segment or query value (RFC 3986 unreserved kept).
pub fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
