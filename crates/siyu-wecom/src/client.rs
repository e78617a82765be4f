//! The WeCom server API client.
//!
//! - One access token per client, shared by every task: fetched from `/cgi-bin/gettoken`
//!   once, cached until five minutes before `expires_in`, refreshed once when WeCom says
//!   it is invalid or expired (40001, 40014, 42001). Concurrent callers wait for the same
//!   fetch instead of each asking for a token.
//! - Retries with exponential backoff on "system busy" (-1) and the frequency limit
//!   (45009), which mean WeCom did nothing; HTTP and transport errors (a timeout, a lost
//!   answer) are retried only for calls that change nothing. A call that creates
//!   something ([`CREATES`]) is never repeated blindly: the error is returned and the
//!   caller reconciles (did WeCom make it?) before trying again. At most `max_attempts`.
//! - A client-side limit per API path (10,000 calls a minute by default, WeCom's corp
//!   limit) so a sync cannot trip WeCom's own.
//! - Every other `errcode` is a typed [`WecomError::Api`] with its number and message.
//! - The secret and tokens are never logged; `Debug` leaves them out.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::Mutex;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WecomError {
    #[error("WeCom error {errcode}: {errmsg}")]
    Api { errcode: i64, errmsg: String },
    #[error("could not reach WeCom: {0}")]
    Http(String),
    #[error("WeCom answered something unexpected: {0}")]
    Decode(String),
}

impl WecomError {
    pub fn code(&self) -> Option<i64> {
        match self {
            WecomError::Api { errcode, .. } => Some(*errcode),
            _ => None,
        }
    }
}

/// Token errors that a fresh token fixes.
const TOKEN_ERRORS: [i64; 3] = [40001, 40014, 42001];
/// Transient: try again after a pause.
const BUSY: [i64; 2] = [-1, 45009];

/// Calls that create or send something: after a transport error nobody knows whether
/// WeCom did it, so they are not retried blindly (customers would get a message twice).
pub const CREATES: [&str; 11] = [
    "add_msg_template",
    "send_welcome_msg",
    "transfer_customer",
    "add_contact_way",
    "add_moment_task",
    "mark_tag",
    "add_corp_tag",
    "message/send",
    "remind_groupmsg_send",
    "groupchat/add_join_way",
    "add_groupchat_welcome_template",
];

/// The HTTP client: `HTTPS_PROXY` (or `https_proxy`) is honoured for HTTPS, so calls
/// to `qyapi.weixin.qq.com` can leave through a fixed-IP egress proxy (a self-built
/// app made after 2022-06-20 only answers from its 企业可信IP; otherwise every call is
/// errcode 60020). Plain-HTTP bases (the simulator on loopback) never use a proxy.
fn http_client() -> reqwest::Client {
    let mut builder = http_builder().no_proxy().timeout(Duration::from_secs(30));
    let proxy = ["HTTPS_PROXY", "https_proxy"].iter().find_map(|k| std::env::var(k).ok().filter(|v| !v.trim().is_empty()));
    if let Some(url) = proxy {
        match reqwest::Proxy::https(url.trim()) {
            Ok(p) => builder = builder.proxy(p),
            Err(e) => tracing::warn!(error = %e, "HTTPS_PROXY is not a proxy URL; calling WeCom directly"),
        }
    }
    builder.build().expect("http client")
}

/// Makes ring the process's TLS provider (once; later calls are no-ops).
pub fn install_tls() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Where every HTTP client in Siyu starts (servers, CLIs, benchmarks, tests): reqwest
/// is built with rustls and no bundled crypto provider, so one is installed first.
pub fn http_builder() -> reqwest::ClientBuilder {
    install_tls();
    reqwest::Client::builder()
}

/// Whether a failed call to `path` may simply be made again.
pub fn repeatable(path: &str) -> bool {
    !CREATES.iter().any(|c| path.ends_with(c))
}

pub struct Client {
    base: String,
    corp_id: String,
    secret: String,
    http: reqwest::Client,
    token: Mutex<Option<(String, Instant)>>,
    /// Tokens fetched so far (one per expiry, not one per call).
    pub token_fetches: AtomicU64,
    pub max_attempts: u32,
    pub backoff: Duration,
    pub per_minute: u32,
    calls: std::sync::Mutex<HashMap<String, (Instant, u32)>>,
    /// The `agentid` of the self-built app whose secret this client holds, when app
    /// messages (`message/send`) should go to staff; WeCom needs it on every such call.
    pub agent_id: Option<i64>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("base", &self.base).field("corp_id", &self.corp_id).finish_non_exhaustive()
    }
}

pub const DEFAULT_BASE: &str = "https://qyapi.weixin.qq.com";

impl Client {
    pub fn new(base: &str, corp_id: &str, secret: &str) -> Client {
        Client {
            base: base.trim_end_matches('/').to_string(),
            corp_id: corp_id.to_string(),
            secret: secret.to_string(),
            http: http_client(),
            token: Mutex::new(None),
            token_fetches: AtomicU64::new(0),
            max_attempts: 4,
            backoff: Duration::from_millis(200),
            per_minute: 10_000,
            calls: std::sync::Mutex::new(HashMap::new()),
            agent_id: None,
        }
    }

    /// The client of a self-built app with this `agentid`: it can message staff.
    pub fn with_agent_id(mut self, agent_id: Option<i64>) -> Client {
        self.agent_id = agent_id;
        self
    }

    /// The cached access token, fetching one if there is none or it is about to expire.
    pub async fn access_token(&self) -> Result<String, WecomError> {
        let mut slot = self.token.lock().await;
        if let Some((token, until)) = slot.as_ref()
            && Instant::now() < *until
        {
            return Ok(token.clone());
        }
        let url = format!("{}/cgi-bin/gettoken", self.base);
        let v = self.send_with_retries(true, || self.http.get(&url).query(&[("corpid", &self.corp_id), ("corpsecret", &self.secret)])).await?;
        let token = v["access_token"].as_str().ok_or_else(|| WecomError::Decode("gettoken without access_token".into()))?.to_string();
        let expires = v["expires_in"].as_u64().unwrap_or(7200);
        // Renew five minutes early (or at half-life for short tokens).
        let margin = if expires > 600 { 300 } else { expires / 2 };
        *slot = Some((token.clone(), Instant::now() + Duration::from_secs(expires - margin)));
        self.token_fetches.fetch_add(1, Ordering::Relaxed);
        Ok(token)
    }

    async fn invalidate(&self, stale: &str) {
        let mut slot = self.token.lock().await;
        if slot.as_ref().is_some_and(|(t, _)| t == stale) {
            *slot = None;
        }
    }

    /// Waits if this path has used its calls for the current minute.
    async fn pace(&self, path: &str) {
        loop {
            let wait = {
                let mut calls = self.calls.lock().expect("rate lock");
                let entry = calls.entry(path.to_string()).or_insert((Instant::now(), 0));
                if entry.0.elapsed() >= Duration::from_secs(60) {
                    *entry = (Instant::now(), 0);
                }
                if entry.1 < self.per_minute {
                    entry.1 += 1;
                    None
                } else {
                    Some(Duration::from_secs(60).saturating_sub(entry.0.elapsed()))
                }
            };
            match wait {
                None => return,
                Some(d) => tokio::time::sleep(d).await,
            }
        }
    }

    /// Sends, retrying busy answers, and transport errors when `repeatable`; errcode 0 or
    /// absent is success.
    async fn send_with_retries(&self, repeatable: bool, request: impl Fn() -> reqwest::RequestBuilder) -> Result<Value, WecomError> {
        let mut delay = self.backoff;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = match request().send().await {
                Ok(resp) if resp.status().is_success() => resp.json::<Value>().await.map_err(|e| WecomError::Decode(e.to_string())).and_then(check),
                Ok(resp) => Err(WecomError::Http(format!("HTTP {}", resp.status()))),
                Err(e) => Err(WecomError::Http(e.without_url().to_string())),
            };
            let retry = match &result {
                Err(WecomError::Http(_)) => repeatable,
                Err(WecomError::Api { errcode, .. }) => BUSY.contains(errcode),
                _ => false,
            };
            if !retry || attempt >= self.max_attempts {
                return result;
            }
            tracing::debug!(attempt, error = %result.as_ref().err().map(|e| e.to_string()).unwrap_or_default(), "WeCom call retried");
            tokio::time::sleep(delay).await;
            delay *= 2;
        }
    }

    /// Calls an API path (e.g. `/cgi-bin/externalcontact/list`) with the access token;
    /// `body` makes it a POST.
    pub async fn call(&self, path: &str, query: &[(&str, &str)], body: Option<&Value>) -> Result<Value, WecomError> {
        self.pace(path).await;
        let mut refreshed = false;
        loop {
            let token = self.access_token().await?;
            let url = format!("{}{path}", self.base);
            let result = self
                .send_with_retries(repeatable(path), || {
                    let req = match body {
                        Some(b) => self.http.post(&url).json(b),
                        None => self.http.get(&url),
                    };
                    req.query(&[("access_token", token.as_str())]).query(query)
                })
                .await;
            match result {
                Err(WecomError::Api { errcode, .. }) if TOKEN_ERRORS.contains(&errcode) && !refreshed => {
                    self.invalidate(&token).await;
                    refreshed = true;
                }
                other => return other,
            }
        }
    }

    async fn post(&self, path: &str, body: Value) -> Result<Value, WecomError> {
        self.call(path, &[], Some(&body)).await
    }

    // ---- external contacts ----

    /// Staff who have the customer-contact feature.
    pub async fn get_follow_user_list(&self) -> Result<Vec<String>, WecomError> {
        let v = self.call("/cgi-bin/externalcontact/get_follow_user_list", &[], None).await?;
        Ok(strings(&v["follow_user"]))
    }

    /// A guide's external contacts.
    pub async fn list_external_contacts(&self, userid: &str) -> Result<Vec<String>, WecomError> {
        let v = self.call("/cgi-bin/externalcontact/list", &[("userid", userid)], None).await?;
        Ok(strings(&v["external_userid"]))
    }

    /// Signing in with WeCom (网页授权登录): the member of staff a one-time `code` from
    /// the OAuth2 redirect or the web-login QR code stands for. `None` when the code is
    /// a customer's (an `openid` or external user, not staff).
    pub async fn user_of_code(&self, code: &str) -> Result<Option<String>, WecomError> {
        let v = self.call("/cgi-bin/auth/getuserinfo", &[("code", code)], None).await?;
        Ok(v["userid"].as_str().or(v["UserId"].as_str()).map(str::to_string))
    }

    /// Where to send a browser to sign in: inside WeCom the OAuth2 authorize page, on a
    /// desktop the web-login QR code; both come back to `redirect_uri` with a `code`
    /// and `state`. A simulator (any other API base) serves both pages itself.
    pub fn sign_in_url(&self, redirect_uri: &str, state: &str, agent_id: Option<i64>, inside_wecom: bool) -> String {
        let official = self.base == DEFAULT_BASE;
        let agent = agent_id.map(|a| a.to_string()).unwrap_or_default();
        let (page, params): (String, Vec<(&str, &str)>) = if inside_wecom {
            let page = if official { "https://open.weixin.qq.com/connect/oauth2/authorize".into() } else { format!("{}/connect/oauth2/authorize", self.base) };
            let params = vec![
                ("appid", self.corp_id.as_str()),
                ("redirect_uri", redirect_uri),
                ("response_type", "code"),
                ("scope", "snsapi_base"),
                ("state", state),
                ("agentid", agent.as_str()),
            ];
            (page, params)
        } else {
            let page = if official { "https://login.work.weixin.qq.com/wwlogin/sso/login".into() } else { format!("{}/wwlogin/sso/login", self.base) };
            let params = vec![
                ("login_type", "CorpApp"),
                ("appid", self.corp_id.as_str()),
                ("agentid", agent.as_str()),
                ("redirect_uri", redirect_uri),
                ("state", state),
            ];
            (page, params)
        };
        let mut url = reqwest::Url::parse_with_params(&page, &params).expect("the sign-in page is a valid URL");
        if inside_wecom {
            // WeCom's in-app browser expects this fragment on the authorize link.
            url.set_fragment(Some("wechat_redirect"));
        }
        url.to_string()
    }

    pub async fn get_external_contact(&self, external_userid: &str) -> Result<Value, WecomError> {
        self.call("/cgi-bin/externalcontact/get", &[("external_userid", external_userid)], None).await
    }

    /// Every contact (with its follow info) of some guides, following the cursor.
    pub async fn batch_get_by_user(&self, userids: &[String], page: u32) -> Result<Vec<Value>, WecomError> {
        let mut out = Vec::new();
        let mut cursor = String::new();
        loop {
            let v = self.post("/cgi-bin/externalcontact/batch/get_by_user", json!({"userid_list": userids, "cursor": cursor, "limit": page})).await?;
            out.extend(v["external_contact_list"].as_array().cloned().unwrap_or_default());
            match v["next_cursor"].as_str() {
                Some(c) if !c.is_empty() => cursor = c.to_string(),
                _ => return Ok(out),
            }
        }
    }

    // ---- corp tags ----

    pub async fn get_corp_tag_list(&self, tag_ids: &[String]) -> Result<Value, WecomError> {
        self.post("/cgi-bin/externalcontact/get_corp_tag_list", json!({"tag_id": tag_ids})).await
    }

    pub async fn add_corp_tag(&self, group_name: &str, tags: &[&str]) -> Result<Value, WecomError> {
        let tag: Vec<Value> = tags.iter().map(|t| json!({"name": t})).collect();
        self.post("/cgi-bin/externalcontact/add_corp_tag", json!({"group_name": group_name, "tag": tag})).await
    }

    pub async fn edit_corp_tag(&self, id: &str, name: &str) -> Result<Value, WecomError> {
        self.post("/cgi-bin/externalcontact/edit_corp_tag", json!({"id": id, "name": name})).await
    }

    pub async fn del_corp_tag(&self, tag_ids: &[String]) -> Result<Value, WecomError> {
        self.post("/cgi-bin/externalcontact/del_corp_tag", json!({"tag_id": tag_ids})).await
    }

    pub async fn mark_tag(&self, userid: &str, external_userid: &str, add: &[String], remove: &[String]) -> Result<Value, WecomError> {
        self.post("/cgi-bin/externalcontact/mark_tag", json!({"userid": userid, "external_userid": external_userid, "add_tag": add, "remove_tag": remove}))
            .await
    }

    // ---- contact ways (渠道活码) ----

    /// A QR code for one or more guides with a `state` that comes back on the add callback.
    pub async fn add_contact_way(&self, users: &[&str], state: &str, remark: &str) -> Result<(String, String), WecomError> {
        let v = self
            .post(
                "/cgi-bin/externalcontact/add_contact_way",
                json!({"type": if users.len() > 1 { 2 } else { 1 }, "scene": 2, "state": state, "user": users, "remark": remark, "skip_verify": true}),
            )
            .await?;
        let id = v["config_id"].as_str().ok_or_else(|| WecomError::Decode("add_contact_way without config_id".into()))?;
        Ok((id.to_string(), v["qr_code"].as_str().unwrap_or_default().to_string()))
    }

    pub async fn get_contact_way(&self, config_id: &str) -> Result<Value, WecomError> {
        self.post("/cgi-bin/externalcontact/get_contact_way", json!({"config_id": config_id})).await
    }

    pub async fn update_contact_way(&self, config_id: &str, changes: Value) -> Result<Value, WecomError> {
        let mut body = changes;
        body["config_id"] = json!(config_id);
        self.post("/cgi-bin/externalcontact/update_contact_way", body).await
    }

    pub async fn del_contact_way(&self, config_id: &str) -> Result<Value, WecomError> {
        self.post("/cgi-bin/externalcontact/del_contact_way", json!({"config_id": config_id})).await
    }

    pub async fn send_welcome_msg(&self, welcome_code: &str, text: &str) -> Result<Value, WecomError> {
        self.post("/cgi-bin/externalcontact/send_welcome_msg", json!({"welcome_code": welcome_code, "text": {"content": text}})).await
    }

    // ---- app messages to staff ----

    /// A text message from the app `agentid` to members of staff (`message/send`); returns
    /// the userids WeCom could not reach (lower-cased, as WeCom reports them). When it can
    /// reach none, WeCom answers errcode 81013.
    pub async fn send_text_message(&self, agentid: i64, touser: &[&str], content: &str) -> Result<Vec<String>, WecomError> {
        let v = self
            .post("/cgi-bin/message/send", json!({"touser": touser.join("|"), "msgtype": "text", "agentid": agentid, "text": {"content": content}}))
            .await?;
        Ok(v["invaliduser"].as_str().unwrap_or_default().split('|').filter(|u| !u.is_empty()).map(str::to_string).collect())
    }

    // ---- mass messages ----

    /// A guide's mass message to some of their customers: returns the `msgid`.
    pub async fn add_msg_template(&self, sender: &str, external_userids: &[String], text: &str) -> Result<(String, Vec<String>), WecomError> {
        let v = self
            .post(
                "/cgi-bin/externalcontact/add_msg_template",
                json!({"chat_type": "single", "sender": sender, "external_userid": external_userids, "text": {"content": text}}),
            )
            .await?;
        let msgid = v["msgid"].as_str().ok_or_else(|| WecomError::Decode("add_msg_template without msgid".into()))?.to_string();
        Ok((msgid, strings(&v["fail_list"])))
    }

    /// Reminds the guide to send a mass message (WeCom: at most 3 times in 24 hours).
    pub async fn remind_groupmsg_send(&self, msgid: &str) -> Result<Value, WecomError> {
        self.post("/cgi-bin/externalcontact/remind_groupmsg_send", json!({"msgid": msgid})).await
    }

    pub async fn get_groupmsg_list_v2(&self, start_time: i64, end_time: i64, cursor: &str) -> Result<Value, WecomError> {
        self.post(
            "/cgi-bin/externalcontact/get_groupmsg_list_v2",
            json!({"chat_type": "single", "start_time": start_time, "end_time": end_time, "cursor": cursor, "limit": 100}),
        )
        .await
    }

    /// Every mass message the corp made (企业发表, as `add_msg_template` makes them)
    /// between the two times (seconds), all pages: how Siyu finds out whether a mass
    /// message whose answer was lost was made.
    pub async fn mass_messages_made(&self, start_time: i64, end_time: i64) -> Result<Vec<Value>, WecomError> {
        let mut out = Vec::new();
        let mut cursor = String::new();
        loop {
            let v = self
                .post(
                    "/cgi-bin/externalcontact/get_groupmsg_list_v2",
                    json!({"chat_type": "single", "start_time": start_time, "end_time": end_time, "filter_type": 0, "cursor": cursor, "limit": 100}),
                )
                .await?;
            out.extend(v["group_msg_list"].as_array().cloned().unwrap_or_default());
            match v["next_cursor"].as_str() {
                Some(c) if !c.is_empty() => cursor = c.to_string(),
                _ => return Ok(out),
            }
        }
    }

    pub async fn get_groupmsg_task(&self, msgid: &str, cursor: &str) -> Result<Value, WecomError> {
        self.post("/cgi-bin/externalcontact/get_groupmsg_task", json!({"msgid": msgid, "cursor": cursor, "limit": 1000})).await
    }

    /// Per-customer results of a guide's mass message, all pages.
    pub async fn get_groupmsg_send_result(&self, msgid: &str, userid: &str) -> Result<Vec<Value>, WecomError> {
        let mut out = Vec::new();
        let mut cursor = String::new();
        loop {
            let v = self
                .post("/cgi-bin/externalcontact/get_groupmsg_send_result", json!({"msgid": msgid, "userid": userid, "cursor": cursor, "limit": 1000}))
                .await?;
            out.extend(v["send_list"].as_array().cloned().unwrap_or_default());
            match v["next_cursor"].as_str() {
                Some(c) if !c.is_empty() => cursor = c.to_string(),
                _ => return Ok(out),
            }
        }
    }

    // ---- customer groups, moments, transfers ----

    pub async fn groupchat_list(&self, cursor: &str) -> Result<Value, WecomError> {
        self.post("/cgi-bin/externalcontact/groupchat/list", json!({"status_filter": 0, "cursor": cursor, "limit": 1000})).await
    }

    pub async fn groupchat_get(&self, chat_id: &str) -> Result<Value, WecomError> {
        self.post("/cgi-bin/externalcontact/groupchat/get", json!({"chat_id": chat_id, "need_name": 1})).await
    }

    pub async fn add_moment_task(&self, text: &str) -> Result<Value, WecomError> {
        self.post("/cgi-bin/externalcontact/add_moment_task", json!({"text": {"content": text}})).await
    }

    pub async fn get_moment_task_result(&self, jobid: &str) -> Result<Value, WecomError> {
        self.call("/cgi-bin/externalcontact/get_moment_task_result", &[("jobid", jobid)], None).await
    }

    pub async fn transfer_customer(&self, handover: &str, takeover: &str, external_userids: &[String]) -> Result<Value, WecomError> {
        self.post(
            "/cgi-bin/externalcontact/transfer_customer",
            json!({"handover_userid": handover, "takeover_userid": takeover, "external_userid": external_userids}),
        )
        .await
    }

    pub async fn resigned_transfer_customer(&self, handover: &str, takeover: &str, external_userids: &[String]) -> Result<Value, WecomError> {
        self.post(
            "/cgi-bin/externalcontact/resigned/transfer_customer",
            json!({"handover_userid": handover, "takeover_userid": takeover, "external_userid": external_userids}),
        )
        .await
    }

    pub async fn transfer_result(&self, handover: &str, takeover: &str, cursor: &str) -> Result<Value, WecomError> {
        self.post("/cgi-bin/externalcontact/transfer_result", json!({"handover_userid": handover, "takeover_userid": takeover, "cursor": cursor})).await
    }

    /// The takeover status of a resigned member's customers (离职继承 has its own query).
    pub async fn resigned_transfer_result(&self, handover: &str, takeover: &str, cursor: &str) -> Result<Value, WecomError> {
        self.post("/cgi-bin/externalcontact/resigned/transfer_result", json!({"handover_userid": handover, "takeover_userid": takeover, "cursor": cursor}))
            .await
    }
}

fn check(v: Value) -> Result<Value, WecomError> {
    match v["errcode"].as_i64() {
        None | Some(0) => Ok(v),
        Some(errcode) => Err(WecomError::Api { errcode, errmsg: v["errmsg"].as_str().unwrap_or_default().to_string() }),
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().into_iter().flatten().filter_map(|s| s.as_str().map(str::to_string)).collect()
}
