//! A WeCom simulator: the server API endpoints Siyu uses, with WeCom's JSON shapes,
//! error codes and limits, over a small in-memory corp; it can also play the customer
//! (scan a contact way, remove a guide, join or leave a customer group) and send the
//! encrypted callbacks WeCom would.
//!
//! Fidelity notes: token lifetime, the 10,000-recipient limit of `add_msg_template`, a
//! customer's monthly receive limit (the days of the month by default), 3 reminders per
//! mass message a day, a guide's customer limit (5,000 by default), the 20-second,
//! once-only welcome code (41051 on a second use), at most 2 transfers of a customer in
//! 90 days, a transfer waiting (status 2) for 24 hours in which the customer may refuse
//! (status 3, with a `transfer_fail` callback), 离职继承 only from a member who resigned
//! (`/sim/resign`), 10,000 calls a minute per API. Error numbers follow WeCom's global error
//! code list where it names the case (40001, 40003, 40008, 40013, 40014, 40050, 40056, 40068, 40129, 41011,
//! 41051, 42001, 44004, 45009, 47001, 81013, 84061);
//! cases it does not name use 40058 ("invalid parameter") with a message that says why.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::callback::{self, Field};
use crate::crypto::MsgCrypt;

#[derive(Debug, Clone)]
pub struct SimConfig {
    pub corp_id: String,
    pub secret: String,
    pub token_ttl: Duration,
    /// Mass messages a customer may receive per month (0: the days of the month).
    pub receive_limit_per_month: u32,
    /// Customers a member of staff may hold (WeCom: 5,000 by default, up to 20,000).
    pub customers_per_staff: usize,
    /// Where to send callbacks, and how to seal them.
    pub callback_url: Option<String>,
    pub callback_token: String,
    pub encoding_aes_key: String,
    /// The self-built app's `agentid`, which `message/send` must name.
    pub agent_id: i64,
}

#[derive(Debug, Clone, Default)]
struct Follow {
    userid: String,
    state: Option<String>,
    createtime: i64,
    tags: Vec<String>,
}

#[derive(Debug, Clone, Default)]
struct Customer {
    name: String,
    follows: Vec<Follow>,
    /// When mass messages reached them (seconds).
    received: Vec<i64>,
    transfers: Vec<i64>,
}

/// A customer handed from one member of staff to another. WeCom tells the customer,
/// who has 24 hours to refuse; until then the result reads 2 (waiting) and the customer
/// stays with the handover.
#[derive(Debug, Clone)]
struct Transfer {
    handover: String,
    takeover: String,
    external_userid: String,
    /// When it was asked for (seconds).
    at: i64,
    /// 1 taken over · 2 waiting · 3 refused by the customer
    status: u8,
    /// When it was taken over (seconds).
    takeover_time: Option<i64>,
    /// 离职继承 (the handover resigned) rather than 在职继承.
    resigned: bool,
}

/// How long a customer has to refuse a transfer before it completes.
const TRANSFER_WAIT_SECS: i64 = 24 * 3600;

#[derive(Debug, Clone)]
struct MassMessage {
    /// When `remind_groupmsg_send` was called (at most 3 in any 24 hours).
    reminders: Vec<i64>,
    sender: String,
    text: String,
    created: i64,
    /// external_userid → status (1 sent, 2 not a friend, 3 over the receive limit),
    /// as it will read once the guide has sent the message.
    results: Vec<(String, u32)>,
    /// Whether the guide has pressed send in the WeCom app; until then every customer
    /// reads status 0 (not sent).
    sent: bool,
}

impl SimConfig {
    /// A corp with WeCom's defaults: two-hour tokens, a receive limit of the month's
    /// days, 5,000 customers per member of staff, and no callbacks until `callback_url`.
    pub fn new(corp_id: &str, secret: &str, callback_token: &str, encoding_aes_key: &str) -> SimConfig {
        SimConfig {
            corp_id: corp_id.into(),
            secret: secret.into(),
            token_ttl: Duration::from_secs(7200),
            receive_limit_per_month: 0,
            customers_per_staff: 5_000,
            callback_url: None,
            callback_token: callback_token.into(),
            encoding_aes_key: encoding_aes_key.into(),
            agent_id: 1_000_002,
        }
    }
}

#[derive(Default)]
struct Corp {
    /// Where callbacks go (set from the config, or later with `connect_callbacks`).
    callback_url: Option<String>,
    staff: Vec<String>,
    /// Members who left: their customers wait for `resigned/transfer_customer`.
    resigned: Vec<String>,
    customers: BTreeMap<String, Customer>,
    tokens: HashMap<String, Instant>,
    token_requests: u64,
    tag_groups: Vec<(String, String, Vec<(String, String)>)>,
    /// When each corp tag was created (seconds), for `get_corp_tag_list`.
    tag_created: HashMap<String, i64>,
    /// A contact way's remark and whether adding needs the guide's approval.
    contact_way_extra: HashMap<String, (String, bool)>,
    contact_ways: BTreeMap<String, (Vec<String>, Option<String>)>,
    welcome_codes: HashMap<String, (Instant, bool, String, String)>,
    welcomes_sent: Vec<(String, String, String)>,
    mass: BTreeMap<String, MassMessage>,
    groups: BTreeMap<String, (String, String, Vec<String>)>,
    calls: HashMap<String, (Instant, u32)>,
    /// Answer -1 (system busy) to this many calls: tests retries.
    busy: u32,
    /// Transfers WeCom accepted, in order.
    transfer_log: Vec<Transfer>,
    /// New mass messages wait for their guide to send them (`/sim/guide_sends`);
    /// otherwise guides send at once.
    hold_sends: bool,
    /// Apply this many create calls (see [`crate::client::CREATES`]) and then lose their
    /// answer (HTTP 504), as when a network drops the reply: tests that Siyu does not
    /// make the same mass message twice.
    drop_answers: u32,
    /// App messages delivered to staff: (userid, text).
    app_messages: Vec<(String, String)>,
    /// Sign-in codes handed out and not yet exchanged: code → staff userid. WeCom's
    /// codes are good for one exchange.
    sign_in_codes: HashMap<String, String>,
    next_id: u64,
}

impl Corp {
    /// The id of the corp tag with this name, in any tag group.
    fn tag_id(&self, name: &str) -> Option<String> {
        self.tag_groups.iter().flat_map(|(_, _, tags)| tags.iter()).find(|(_, n)| n == name).map(|(i, _)| i.clone())
    }
}

pub struct Simulator {
    config: SimConfig,
    corp: Mutex<Corp>,
    http: reqwest::Client,
}

type Sim = Arc<Simulator>;

/// Members a customer group holds, owner included, in WeCom.
const GROUP_LIMIT: usize = 500;

fn now_secs() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

fn err(code: i64, msg: &str) -> Json<Value> {
    Json(json!({"errcode": code, "errmsg": msg}))
}

/// WeCom's answer for a chat id it does not know.
fn no_such_chat() -> Json<Value> {
    err(40050, "invalid group id: no such chat_id")
}

/// WeCom's answer for a corp tag it does not know.
fn no_such_tag() -> Json<Value> {
    err(40068, "invalid tagid: no such corp tag")
}

fn ok(mut v: Value) -> Json<Value> {
    v["errcode"] = json!(0);
    v["errmsg"] = json!("ok");
    Json(v)
}

impl Simulator {
    pub fn new(config: SimConfig) -> Arc<Simulator> {
        let corp = Corp { callback_url: config.callback_url.clone(), ..Corp::default() };
        Arc::new(Simulator { config, corp: Mutex::new(corp), http: crate::client::http_builder().no_proxy().build().expect("http") })
    }

    /// Starts sending callbacks to `url` (a corp whose contacts existed before Siyu
    /// was connected, then Siyu's callback URL was configured).
    pub fn connect_callbacks(&self, url: &str) {
        self.corp.lock().expect("corp").callback_url = Some(url.to_string());
    }

    /// A one-time sign-in code for a member of staff, as WeCom's OAuth2 redirect or
    /// web-login QR code would give Siyu after they approve.
    pub fn sign_in_code(&self, userid: &str) -> String {
        let mut c = self.corp.lock().expect("corp");
        c.next_id += 1;
        let code = format!("signin{:08}", c.next_id);
        c.sign_in_codes.insert(code.clone(), userid.to_string());
        code
    }

    /// Adds staff with the customer-contact feature.
    pub fn add_staff(&self, userids: &[&str]) {
        let mut c = self.corp.lock().expect("corp");
        for u in userids {
            if !c.staff.iter().any(|s| s == u) {
                c.staff.push(u.to_string());
            }
        }
    }

    /// A customer group with external members (at most 500 members, as in WeCom).
    pub fn add_group(&self, chat_id: &str, name: &str, owner: &str, external_members: &[&str]) {
        let members: Vec<String> = external_members.iter().take(GROUP_LIMIT - 1).map(|m| m.to_string()).collect();
        self.corp.lock().expect("corp").groups.insert(chat_id.to_string(), (name.to_string(), owner.to_string(), members));
    }

    /// Mass messages made from now on wait for their guide to send them.
    pub fn hold_sends(&self, on: bool) {
        self.corp.lock().expect("corp").hold_sends = on;
    }

    /// The next `n` create calls are applied and their answers lost (HTTP 504).
    pub fn drop_answers(&self, n: u32) {
        self.corp.lock().expect("corp").drop_answers = n;
    }

    /// How many times `remind_groupmsg_send` was accepted for a mass message.
    pub fn reminders_of(&self, msgid: &str) -> usize {
        self.corp.lock().expect("corp").mass.get(msgid).map_or(0, |m| m.reminders.len())
    }

    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    /// A member of staff leaves the company: no longer a follow user, their customers
    /// can only be handed over with `resigned/transfer_customer`.
    pub fn resign(&self, userid: &str) {
        let mut c = self.corp.lock().expect("corp");
        c.staff.retain(|s| s != userid);
        if !c.resigned.iter().any(|r| r == userid) {
            c.resigned.push(userid.to_string());
        }
    }

    /// Every waiting transfer completes now, as if the customers' 24 hours had passed,
    /// with WeCom's `del_external_contact` (`Source=DELETE_BY_TRANSFER`) callbacks.
    pub async fn complete_transfers(&self) -> Result<(), String> {
        let done = Simulator::take_over_waiting(&mut self.corp.lock().expect("corp"), now_secs(), |_| true);
        self.handed_over(done).await
    }

    /// When a transfer completes WeCom tells the corp the handover lost the customer:
    /// `del_external_contact` with `Source=DELETE_BY_TRANSFER`.
    async fn handed_over(&self, done: Vec<(String, String)>) -> Result<(), String> {
        for (handover, external) in done {
            self.callback(self.event_xml("del_external_contact", &handover, &external, vec![("Source", cdata("DELETE_BY_TRANSFER"))])).await?;
        }
        Ok(())
    }

    /// The customer refuses their waiting transfer: they stay with the handover, and
    /// WeCom sends `transfer_fail` (`customer_refused`) naming the takeover.
    pub async fn refuse_transfer(&self, external_userid: &str) -> Result<bool, String> {
        let xml = {
            let mut c = self.corp.lock().expect("corp");
            let Some(t) = c.transfer_log.iter_mut().find(|t| t.external_userid == external_userid && t.status == 2) else { return Ok(false) };
            t.status = 3;
            self.event_xml("transfer_fail", &t.takeover, external_userid, vec![("FailReason", cdata("customer_refused"))])
        };
        self.callback(xml).await.map(|()| true)
    }

    /// Waiting transfers that `due` picks are taken over: the follow relationship moves
    /// to the takeover. Returns (handover, external_userid) of each 在职继承.
    fn take_over_waiting(c: &mut Corp, now: i64, due: impl Fn(&Transfer) -> bool) -> Vec<(String, String)> {
        let Corp { transfer_log, customers, .. } = c;
        let mut done = Vec::new();
        for t in transfer_log.iter_mut().filter(|t| t.status == 2 && due(t)) {
            t.status = 1;
            t.takeover_time = Some(now);
            if let Some(f) = customers.get_mut(&t.external_userid).and_then(|cu| cu.follows.iter_mut().find(|f| f.userid == t.handover)) {
                f.userid = t.takeover.clone();
            }
            if !t.resigned {
                // Only 在职继承 removes the customer from a member who is still in service.
                done.push((t.handover.clone(), t.external_userid.clone()));
            }
        }
        done
    }

    /// App messages (`message/send`) staff received: (userid, text).
    pub fn app_messages(&self) -> Vec<(String, String)> {
        self.corp.lock().expect("corp").app_messages.clone()
    }

    /// Makes the next `n` API calls answer "system busy".
    pub fn set_busy(&self, n: u32) {
        self.corp.lock().expect("corp").busy = n;
    }

    /// Expires every token (the next call gets 42001).
    pub fn expire_tokens(&self) {
        let mut c = self.corp.lock().expect("corp");
        for until in c.tokens.values_mut() {
            *until = Instant::now() - Duration::from_secs(1);
        }
    }

    pub fn token_requests(&self) -> u64 {
        self.corp.lock().expect("corp").token_requests
    }

    pub fn welcomes_sent(&self) -> Vec<(String, String, String)> {
        self.corp.lock().expect("corp").welcomes_sent.clone()
    }

    /// (msgid, sender, recipients, text) of every mass message.
    pub fn mass_messages(&self) -> Vec<(String, String, Vec<String>, String)> {
        let c = self.corp.lock().expect("corp");
        c.mass.iter().map(|(id, m)| (id.clone(), m.sender.clone(), m.results.iter().map(|(e, _)| e.clone()).collect(), m.text.clone())).collect()
    }

    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/cgi-bin/gettoken", get(gettoken))
            .route("/cgi-bin/externalcontact/{*api}", get(api_get).post(api_post))
            .route("/cgi-bin/message/send", post(message_send))
            .route("/cgi-bin/auth/getuserinfo", get(auth_getuserinfo))
            .route("/connect/oauth2/authorize", get(sign_in_page))
            .route("/wwlogin/sso/login", get(sign_in_page))
            .route("/sim/sign_in_code", post(sim_sign_in_code))
            .route("/sim/app_messages", get(sim_app_messages))
            .route("/sim/scan", post(sim_scan))
            .route("/sim/remove_guide", post(sim_remove_guide))
            .route("/sim/guide_tag", post(sim_guide_tag))
            .route("/sim/join_group", post(sim_join_group))
            .route("/sim/leave_group", post(sim_leave_group))
            .route("/sim/create_group", post(sim_create_group))
            .route("/sim/admin_delete_tag", post(sim_admin_delete_tag))
            .route("/sim/dismiss_group", post(sim_dismiss_group))
            .route("/sim/guide_sends", post(sim_guide_sends))
            .route("/sim/complete_transfers", post(sim_complete_transfers))
            .route("/sim/resign", post(sim_resign))
            .route("/sim/refuse_transfer", post(sim_refuse_transfer))
            .with_state(self.clone())
    }

    fn next_id(c: &mut Corp, prefix: &str) -> String {
        c.next_id += 1;
        format!("{prefix}{:08}", c.next_id)
    }

    /// Checks the token, the busy switch and the per-API rate: an error answer, or None.
    /// The rate is counted per whole minute, as WeCom counts it (45009 until the minute
    /// turns), not by a smoothing limiter such as `governor`'s GCRA, which would refuse
    /// calls WeCom accepts.
    fn admit(&self, c: &mut Corp, token: Option<&str>, api: &str) -> Option<Json<Value>> {
        if c.busy > 0 {
            c.busy -= 1;
            return Some(err(-1, "system busy"));
        }
        match token.and_then(|t| c.tokens.get(t)) {
            None => return Some(err(40014, "invalid access_token")),
            Some(until) if Instant::now() >= *until => return Some(err(42001, "access_token expired")),
            _ => {}
        }
        let e = c.calls.entry(api.to_string()).or_insert((Instant::now(), 0));
        if e.0.elapsed() >= Duration::from_secs(60) {
            *e = (Instant::now(), 0);
        }
        e.1 += 1;
        if e.1 > 10_000 {
            return Some(err(45009, "api freq out of limit"));
        }
        None
    }

    /// Sends a sealed callback to the configured Siyu server.
    async fn callback(&self, xml: String) -> Result<(), String> {
        let Some(url) = self.corp.lock().expect("corp").callback_url.clone() else { return Ok(()) };
        let crypt = MsgCrypt::new(&self.config.callback_token, &self.config.encoding_aes_key, &self.config.corp_id).map_err(|e| e.to_string())?;
        let ts = now_secs().to_string();
        let nonce = format!("{}", rand::random::<u32>());
        let envelope = crypt.seal(&xml, &ts, &nonce);
        let f = crate::callback::parse(&envelope).map_err(|e| e.to_string())?;
        let sig = f.get("MsgSignature").unwrap_or_default().to_string();
        let resp = self
            .http
            .post(&url)
            .query(&[("msg_signature", sig.as_str()), ("timestamp", ts.as_str()), ("nonce", nonce.as_str())])
            .body(envelope)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if resp.status().is_success() { Ok(()) } else { Err(format!("callback answered {}", resp.status())) }
    }

    /// Sends a callback for something a simulated person did, and answers their request:
    /// ok, or -1 when Siyu did not take the callback.
    async fn notify(&self, xml: String) -> Json<Value> {
        match self.callback(xml).await {
            Ok(()) => ok(json!({})),
            Err(e) => err(-1, &e),
        }
    }

    /// `change_external_chat` / `update`: members joined (`add_member`) or left (`del_member`);
    /// `scene` is `JoinScene` or `QuitScene`.
    fn group_xml(&self, chat_id: &str, detail: &str, scene: (&'static str, Field), members: &[String]) -> String {
        let extra = vec![
            ("UpdateDetail", cdata(detail)),
            scene,
            ("MemChangeCnt", Field::Text(members.len().to_string())),
            ("MemChangeList", Field::Items(members.to_vec())),
        ];
        self.chat_xml(chat_id, "update", extra)
    }

    /// `change_external_chat` with its change type (`create`, `update`, `dismiss`).
    fn chat_xml(&self, chat_id: &str, change: &str, extra: Vec<(&'static str, Field)>) -> String {
        let mut fields = vec![("ChatId", cdata(chat_id)), ("ChangeType", cdata(change))];
        fields.extend(extra);
        self.system_event("change_external_chat", fields)
    }

    fn event_xml(&self, change: &str, userid: &str, external: &str, extra: Vec<(&'static str, Field)>) -> String {
        let mut fields = vec![("ChangeType", cdata(change)), ("UserID", cdata(userid)), ("ExternalUserID", cdata(external))];
        fields.extend(extra);
        self.system_event("change_external_contact", fields)
    }

    /// A callback event from WeCom itself (`FromUserName` sys) with its own fields.
    fn system_event(&self, event: &str, fields: Vec<(&'static str, Field)>) -> String {
        let mut all = vec![
            ("ToUserName", cdata(&self.config.corp_id)),
            ("FromUserName", cdata("sys")),
            ("CreateTime", Field::Text(now_secs().to_string())),
            ("MsgType", cdata("event")),
            ("Event", cdata(event)),
        ];
        all.extend(fields);
        callback::write(&all)
    }
}

/// A string element of a callback event (WeCom sends strings as CDATA).
fn cdata(value: &str) -> Field {
    Field::CData(value.to_string())
}

#[derive(Deserialize)]
struct TokenQuery {
    corpid: Option<String>,
    corpsecret: Option<String>,
}

async fn gettoken(State(sim): State<Sim>, Query(q): Query<TokenQuery>) -> Json<Value> {
    if q.corpid.as_deref() != Some(sim.config.corp_id.as_str()) {
        return err(40013, "invalid corpid");
    }
    if q.corpsecret.as_deref() != Some(sim.config.secret.as_str()) {
        return err(40001, "invalid credential, access_token is invalid or not latest");
    }
    let mut c = sim.corp.lock().expect("corp");
    c.token_requests += 1;
    let token = Simulator::next_id(&mut c, "simtoken");
    c.tokens.insert(token.clone(), Instant::now() + sim.config.token_ttl);
    ok(json!({"access_token": token, "expires_in": sim.config.token_ttl.as_secs()}))
}

#[derive(Deserialize)]
struct Q {
    access_token: Option<String>,
    userid: Option<String>,
    external_userid: Option<String>,
    jobid: Option<String>,
}

async fn api_get(State(sim): State<Sim>, Path(api): Path<String>, Query(q): Query<Q>) -> Json<Value> {
    let mut c = sim.corp.lock().expect("corp");
    if let Some(e) = sim.admit(&mut c, q.access_token.as_deref(), &api) {
        return e;
    }
    match api.as_str() {
        "get_follow_user_list" => ok(json!({"follow_user": c.staff})),
        "list" => {
            let Some(u) = q.userid.as_deref() else { return err(40058, "userid is required") };
            if !c.staff.iter().any(|s| s == u) {
                return err(84061, "not external contact");
            }
            let list: Vec<&String> = c.customers.iter().filter(|(_, cu)| cu.follows.iter().any(|f| f.userid == u)).map(|(e, _)| e).collect();
            ok(json!({"external_userid": list}))
        }
        "get" => {
            let Some(e) = q.external_userid.as_deref() else { return err(40058, "external_userid is required") };
            match c.customers.get(e) {
                Some(cu) => ok(contact_json(e, cu, &c.tag_groups)),
                None => err(84061, "not external contact"),
            }
        }
        "get_moment_task_result" => ok(json!({"status": 3, "type": "add_moment_task", "result": {"jobid": q.jobid, "moment_id": "moment1"}})),
        _ => err(40058, &format!("unsupported GET {api} in the simulator")),
    }
}

/// `externalcontact/get`, with the fields clients read: the contact's avatar and gender,
/// each follow's remark, description, add way (1: scanned a contact way's QR code) and
/// operator, and each tag's group and name.
fn contact_json(external: &str, cu: &Customer, groups: &[(String, String, Vec<(String, String)>)]) -> Value {
    let tag = |id: &String| {
        let found = groups.iter().find_map(|(_, group, tags)| tags.iter().find(|(i, _)| i == id).map(|(_, name)| (group.clone(), name.clone())));
        let (group_name, tag_name) = found.unwrap_or_default();
        json!({"group_name": group_name, "tag_name": tag_name, "tag_id": id, "type": 1})
    };
    let follows: Vec<Value> = cu
        .follows
        .iter()
        .map(|f| {
            json!({"userid": f.userid, "remark": "", "description": "", "createtime": f.createtime, "state": f.state,
                   "add_way": if f.state.is_some() { 1 } else { 0 }, "oper_userid": external,
                   "tags": f.tags.iter().map(tag).collect::<Vec<_>>()})
        })
        .collect();
    let avatar = format!("https://wework.qpic.cn/sim/avatar/{external}");
    json!({"external_contact": {"external_userid": external, "name": cu.name, "type": 1, "avatar": avatar, "gender": 0}, "follow_user": follows})
}

/// WeCom reads the body as JSON whatever its content type (wechatpy sends none).
#[derive(Deserialize)]
struct CodeQuery {
    access_token: Option<String>,
    code: Option<String>,
}

/// `auth/getuserinfo`: the member of staff a sign-in code stands for (once).
async fn auth_getuserinfo(State(sim): State<Sim>, Query(q): Query<CodeQuery>) -> Json<Value> {
    let mut c = sim.corp.lock().expect("corp");
    if let Some(e) = sim.admit(&mut c, q.access_token.as_deref(), "auth/getuserinfo") {
        return e;
    }
    let Some(code) = q.code.filter(|c| !c.is_empty()) else { return err(41008, "missing code") };
    match c.sign_in_codes.remove(&code) {
        Some(userid) => ok(json!({"userid": userid})),
        None => err(40029, "invalid code"),
    }
}

#[derive(Deserialize)]
struct SignInPage {
    redirect_uri: String,
    state: Option<String>,
}

/// WeCom's authorize page and web-login QR code, played: the corp's staff as links,
/// each coming back to `redirect_uri` with a fresh code, as if that person approved.
async fn sign_in_page(State(sim): State<Sim>, Query(q): Query<SignInPage>) -> axum::response::Html<String> {
    let staff = sim.corp.lock().expect("corp").staff.clone();
    let state = q.state.unwrap_or_default();
    let mut links = String::new();
    for userid in staff {
        let code = sim.sign_in_code(&userid);
        let mut to = reqwest::Url::parse(&q.redirect_uri).unwrap_or_else(|_| reqwest::Url::parse("http://invalid/").expect("url"));
        to.query_pairs_mut().append_pair("code", &code).append_pair("state", &state);
        links.push_str(&format!("<li><a href=\"{}\">{}</a></li>", html_escape(to.as_str()), html_escape(&userid)));
    }
    axum::response::Html(format!(
        "<!doctype html><meta charset=utf-8><meta name=viewport content=\"width=device-width\"><title>企业微信登录 (simulator)</title>\
         <h1>企业微信 · simulator</h1><p>Sign in as:</p><ul id=staff>{links}</ul>"
    ))
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// For tests and people playing the corp: a sign-in code for `userid`.
async fn sim_sign_in_code(State(sim): State<Sim>, Json(body): Json<Value>) -> Json<Value> {
    let Some(userid) = body["userid"].as_str() else { return err(40058, "userid is required") };
    ok(json!({"code": sim.sign_in_code(userid)}))
}

/// `message/send`, text messages: `agentid` must be the app's; `touser` is `|`-separated
/// (at most 1,000); unknown userids come back in `invaliduser`, lower-cased, and when
/// none is known the call fails with 81013. Content is cut at 2,048 bytes, as WeCom does.
async fn message_send(State(sim): State<Sim>, Query(q): Query<Q>, raw: axum::body::Bytes) -> Json<Value> {
    let Ok(body) = serde_json::from_slice::<Value>(&raw) else { return err(47001, "data format error") };
    let mut c = sim.corp.lock().expect("corp");
    if let Some(e) = sim.admit(&mut c, q.access_token.as_deref(), "message/send") {
        return e;
    }
    let Some(agentid) = body["agentid"].as_i64() else { return err(41011, "missing agentid") };
    if agentid != sim.config.agent_id {
        return err(40056, "invalid agentid");
    }
    if body["msgtype"] != json!("text") {
        return err(40008, "invalid message type (the simulator sends text only)");
    }
    let mut content = body["text"]["content"].as_str().unwrap_or_default().to_string();
    if content.is_empty() {
        return err(44004, "empty content");
    }
    if content.len() > 2048 {
        let mut cut = 2048;
        while !content.is_char_boundary(cut) {
            cut -= 1;
        }
        content.truncate(cut);
    }
    let users: Vec<String> = body["touser"].as_str().unwrap_or_default().split('|').map(str::trim).filter(|u| !u.is_empty()).map(str::to_string).collect();
    if users.len() > 1000 {
        return err(40058, "touser names more than 1000 members");
    }
    let (known, unknown): (Vec<String>, Vec<String>) = users.into_iter().partition(|u| c.staff.iter().any(|s| s.eq_ignore_ascii_case(u)));
    if known.is_empty() {
        return Json(json!({"errcode": 81013, "errmsg": "user & party & tag all invalid", "invaliduser": unknown.join("|").to_lowercase()}));
    }
    for u in known {
        c.app_messages.push((u, content.clone()));
    }
    let msgid = Simulator::next_id(&mut c, "appmsg");
    ok(json!({"invaliduser": unknown.join("|").to_lowercase(), "invalidparty": "", "invalidtag": "", "unlicenseduser": "", "msgid": msgid}))
}

#[derive(Deserialize)]
struct AppMessagesQuery {
    userid: Option<String>,
}

/// What staff received from the app, for a person playing the corp.
async fn sim_app_messages(State(sim): State<Sim>, Query(q): Query<AppMessagesQuery>) -> Json<Value> {
    let all = sim.app_messages();
    let list: Vec<Value> = all.iter().filter(|(u, _)| q.userid.as_ref().is_none_or(|w| w == u)).map(|(u, t)| json!({"userid": u, "text": t})).collect();
    ok(json!({"messages": list}))
}

/// A POST API call; in the fault mode a create call is applied and its answer lost.
async fn api_post(state: State<Sim>, Path(api): Path<String>, q: Query<Q>, raw: axum::body::Bytes) -> axum::response::Response {
    use axum::response::IntoResponse;
    let sim = state.0.clone();
    let answer = apply_post(state, Path(api.clone()), q, raw).await;
    let mut c = sim.corp.lock().expect("corp");
    let applied = answer.0["errcode"].as_i64() == Some(0);
    if applied && c.drop_answers > 0 && !crate::client::repeatable(&api) {
        c.drop_answers -= 1;
        return (axum::http::StatusCode::GATEWAY_TIMEOUT, "the answer was lost").into_response();
    }
    answer.into_response()
}

async fn apply_post(State(sim): State<Sim>, Path(api): Path<String>, Query(q): Query<Q>, raw: axum::body::Bytes) -> Json<Value> {
    let body: Value = match serde_json::from_slice(&raw) {
        Ok(v) => v,
        Err(_) => return err(47001, "data format error"),
    };
    let mut c = sim.corp.lock().expect("corp");
    if let Some(e) = sim.admit(&mut c, q.access_token.as_deref(), &api) {
        return e;
    }
    let s = |k: &str| body[k].as_str().unwrap_or_default().to_string();
    let list = |k: &str| body[k].as_array().into_iter().flatten().filter_map(|v| v.as_str().map(str::to_string)).collect::<Vec<_>>();
    match api.as_str() {
        "batch/get_by_user" => {
            let users = list("userid_list");
            let all: Vec<Value> = c
                .customers
                .iter()
                .flat_map(|(e, cu)| cu.follows.iter().filter(|f| users.contains(&f.userid)).map(move |f| (e, cu, f)))
                .map(|(e, cu, f)| json!({"external_contact": {"external_userid": e, "name": cu.name, "type": 1}, "follow_info": {"userid": f.userid, "createtime": f.createtime, "state": f.state}}))
                .collect();
            let start: usize = s("cursor").parse().unwrap_or(0);
            let limit = body["limit"].as_u64().unwrap_or(50).clamp(1, 100) as usize;
            let page: Vec<Value> = all.iter().skip(start).take(limit).cloned().collect();
            let next = if start + limit < all.len() { (start + limit).to_string() } else { String::new() };
            ok(json!({"external_contact_list": page, "next_cursor": next}))
        }
        "get_corp_tag_list" => {
            let groups: Vec<Value> = c
                .tag_groups
                .iter()
                .enumerate()
                .map(|(order, (id, name, tags))| {
                    let created = |i: &String| c.tag_created.get(i).copied().unwrap_or(0);
                    let tag: Vec<Value> =
                        tags.iter().enumerate().map(|(k, (i, n))| json!({"id": i, "name": n, "create_time": created(i), "order": k})).collect();
                    json!({"group_id": id, "group_name": name, "create_time": created(id), "order": order, "tag": tag})
                })
                .collect();
            ok(json!({"tag_group": groups}))
        }
        "add_corp_tag" => {
            let group_id = Simulator::next_id(&mut c, "et_group");
            let names: Vec<String> = body["tag"].as_array().into_iter().flatten().filter_map(|t| t["name"].as_str().map(str::to_string)).collect();
            let tags: Vec<(String, String)> = names.into_iter().map(|n| (Simulator::next_id(&mut c, "et_tag"), n)).collect();
            let out = json!({"tag_group": {"group_id": group_id, "group_name": s("group_name"), "tag": tags.iter().map(|(i, n)| json!({"id": i, "name": n})).collect::<Vec<_>>()}});
            let group_name = s("group_name");
            let now = now_secs();
            for id in std::iter::once(&group_id).chain(tags.iter().map(|(i, _)| i)) {
                c.tag_created.insert(id.clone(), now);
            }
            c.tag_groups.push((group_id, group_name, tags));
            ok(out)
        }
        "edit_corp_tag" => {
            let (id, name) = (s("id"), s("name"));
            for (_, _, tags) in c.tag_groups.iter_mut() {
                for t in tags.iter_mut().filter(|t| t.0 == id) {
                    t.1 = name.clone();
                }
            }
            ok(json!({}))
        }
        "del_corp_tag" => {
            let ids = list("tag_id");
            for (_, _, tags) in c.tag_groups.iter_mut() {
                tags.retain(|t| !ids.contains(&t.0));
            }
            ok(json!({}))
        }
        "mark_tag" => {
            let (u, e) = (s("userid"), s("external_userid"));
            let (add, remove) = (list("add_tag"), list("remove_tag"));
            match c.customers.get_mut(&e).and_then(|cu| cu.follows.iter_mut().find(|f| f.userid == u)) {
                Some(f) => {
                    f.tags.retain(|t| !remove.contains(t));
                    f.tags.extend(add.into_iter().filter(|t| !f.tags.contains(t)).collect::<Vec<_>>());
                    ok(json!({}))
                }
                None => err(84061, "not external contact"),
            }
        }
        "add_contact_way" => {
            let users = list("user");
            if users.is_empty() || users.iter().any(|u| !c.staff.contains(u)) {
                return err(40058, "user must name staff with the customer-contact feature");
            }
            let id = Simulator::next_id(&mut c, "cw");
            let state = body["state"].as_str().map(str::to_string);
            c.contact_ways.insert(id.clone(), (users, state));
            let extra = (s("remark"), body["skip_verify"].as_bool().unwrap_or(true));
            c.contact_way_extra.insert(id.clone(), extra);
            ok(json!({"config_id": id, "qr_code": format!("https://wework.qpic.cn/sim/{id}")}))
        }
        "get_contact_way" => match c.contact_ways.get(&s("config_id")) {
            Some((users, state)) => {
                let id = s("config_id");
                let (remark, skip_verify) = c.contact_way_extra.get(&id).cloned().unwrap_or_else(|| (String::new(), true));
                let qr_code = format!("https://wework.qpic.cn/sim/{id}");
                ok(
                    json!({"contact_way": {"config_id": id, "type": 1, "scene": 2, "user": users, "state": state, "remark": remark, "skip_verify": skip_verify, "qr_code": qr_code}}),
                )
            }
            None => err(40058, "no such config_id"),
        },
        "update_contact_way" => {
            let id = s("config_id");
            let (users, state) = (list("user"), body["state"].as_str().map(str::to_string));
            match c.contact_ways.get_mut(&id) {
                Some(way) => {
                    if !users.is_empty() {
                        way.0 = users;
                    }
                    if state.is_some() {
                        way.1 = state;
                    }
                    ok(json!({}))
                }
                None => err(40058, "no such config_id"),
            }
        }
        "del_contact_way" => match c.contact_ways.remove(&s("config_id")) {
            Some(_) => ok(json!({})),
            None => err(40058, "no such config_id"),
        },
        "send_welcome_msg" => {
            let code = s("welcome_code");
            match c.welcome_codes.get_mut(&code) {
                None => err(40058, "invalid welcome_code"),
                Some((_, true, _, _)) => err(41051, "welcome code has been used"),
                Some((at, _, _, _)) if at.elapsed() > Duration::from_secs(20) => err(40058, "welcome code expired: send it within 20 seconds of the add event"),
                Some(entry) => {
                    entry.1 = true;
                    let (u, e) = (entry.2.clone(), entry.3.clone());
                    c.welcomes_sent.push((u, e, body["text"]["content"].as_str().unwrap_or_default().to_string()));
                    ok(json!({}))
                }
            }
        }
        "add_msg_template" => {
            let sender = s("sender");
            let to = list("external_userid");
            if to.len() > 10_000 {
                return err(40058, "external_userid exceeds 10000");
            }
            if !c.staff.contains(&sender) {
                return err(40058, "sender is not staff with the customer-contact feature");
            }
            let now = now_secs();
            let limit = match sim.config.receive_limit_per_month {
                0 => 31,
                n => n,
            } as usize;
            let mut results = Vec::new();
            let mut fail = Vec::new();
            for e in to {
                let status = match c.customers.get_mut(&e) {
                    Some(cu) if cu.follows.iter().any(|f| f.userid == sender) => {
                        cu.received.retain(|t| now - t < 30 * 86_400);
                        if cu.received.len() >= limit {
                            3
                        } else {
                            cu.received.push(now);
                            1
                        }
                    }
                    _ => {
                        fail.push(e.clone());
                        2
                    }
                };
                results.push((e, status));
            }
            let id = Simulator::next_id(&mut c, "msg");
            let sent = !c.hold_sends;
            c.mass.insert(
                id.clone(),
                MassMessage {
                    reminders: Vec::new(),
                    sender,
                    text: body["text"]["content"].as_str().unwrap_or_default().to_string(),
                    created: now,
                    results,
                    sent,
                },
            );
            ok(json!({"msgid": id, "fail_list": fail}))
        }
        "remind_groupmsg_send" => {
            let now = now_secs();
            match c.mass.get_mut(&s("msgid")) {
                Some(m) => {
                    m.reminders.retain(|t| now - t < 86_400);
                    if m.reminders.len() >= 3 {
                        err(40058, "a mass message can be reminded at most 3 times in 24 hours")
                    } else {
                        m.reminders.push(now);
                        ok(json!({}))
                    }
                }
                None => err(40058, "no such msgid"),
            }
        }
        "get_groupmsg_list_v2" => {
            let (start, end) = (body["start_time"].as_i64().unwrap_or(0), body["end_time"].as_i64().unwrap_or(i64::MAX));
            if end < start || end - start > 31 * 86_400 {
                return err(40058, "start_time and end_time must be at most a month apart");
            }
            let list: Vec<Value> = c
                .mass
                .iter()
                .filter(|(_, m)| (start..=end).contains(&m.created))
                // Made through the API (企业发表): WeCom leaves `creator` out for these.
                .map(|(id, m)| json!({"msgid": id, "create_type": 0, "create_time": m.created, "text": {"content": m.text}}))
                .collect();
            ok(json!({"group_msg_list": list, "next_cursor": ""}))
        }
        "get_groupmsg_task" => match c.mass.get(&s("msgid")) {
            Some(m) => ok(
                json!({"task_list": [{"userid": m.sender, "status": if m.sent { 2 } else { 0 }, "send_time": if m.sent { m.created } else { 0 }}], "next_cursor": ""}),
            ),
            None => err(40058, "no such msgid"),
        },
        "get_groupmsg_send_result" => match c.mass.get(&s("msgid")) {
            Some(m) if m.sender == s("userid") => {
                let list: Vec<Value> = m
                    .results
                    .iter()
                    .map(|(e, st)| json!({"external_userid": e, "userid": m.sender, "status": if m.sent { *st } else { 0 }, "send_time": m.created}))
                    .collect();
                ok(json!({"send_list": list, "next_cursor": ""}))
            }
            Some(_) => ok(json!({"send_list": [], "next_cursor": ""})),
            None => err(40058, "no such msgid"),
        },
        "groupchat/list" => {
            let list: Vec<Value> = c.groups.keys().map(|id| json!({"chat_id": id, "status": 0})).collect();
            ok(json!({"group_chat_list": list, "next_cursor": ""}))
        }
        "groupchat/get" => match c.groups.get(&s("chat_id")) {
            Some((name, owner, members)) => ok(json!({"group_chat": {"chat_id": s("chat_id"), "name": name, "owner": owner,
                "member_list": members.iter().map(|m| json!({"userid": m, "type": 2, "join_time": now_secs(), "join_scene": 3})).collect::<Vec<_>>()}})),
            None => no_such_chat(),
        },
        "add_moment_task" => ok(json!({"jobid": Simulator::next_id(&mut c, "job")})),
        "transfer_customer" | "resigned/transfer_customer" => {
            let (from, to) = (s("handover_userid"), s("takeover_userid"));
            // 在职继承 hands over from a member in service, 离职继承 from one who left;
            // the takeover is always in service.
            let resigned = api.starts_with("resigned/");
            if resigned && !c.resigned.contains(&from) {
                return err(40058, "handover_userid has not resigned: use transfer_customer");
            }
            if !resigned && !c.staff.contains(&from) {
                return err(40058, "handover_userid is not a member in service: use resigned/transfer_customer");
            }
            if !c.staff.contains(&to) {
                return err(40058, "takeover_userid is not a member in service with customer contact");
            }
            let now = now_secs();
            let mut customers = Vec::new();
            for e in list("external_userid") {
                let in_transfer = c.transfer_log.iter().any(|t| t.external_userid == e && t.status == 2);
                let errcode = match c.customers.get_mut(&e) {
                    Some(cu) => {
                        cu.transfers.retain(|t| now - t < 90 * 86_400);
                        if in_transfer {
                            40129 // 当前联系人正在转接中
                        } else if cu.transfers.len() >= 2 {
                            40058
                        } else if cu.follows.iter().any(|f| f.userid == from) {
                            cu.transfers.push(now);
                            c.transfer_log.push(Transfer {
                                handover: from.clone(),
                                takeover: to.clone(),
                                external_userid: e.clone(),
                                at: now,
                                status: 2,
                                takeover_time: None,
                                resigned,
                            });
                            0
                        } else {
                            84061
                        }
                    }
                    None => 84061,
                };
                customers.push(json!({"external_userid": e, "errcode": errcode}));
            }
            ok(json!({"customer": customers}))
        }
        "transfer_result" | "resigned/transfer_result" => {
            let (from, to) = (s("handover_userid"), s("takeover_userid"));
            let now = now_secs();
            let done = Simulator::take_over_waiting(&mut c, now, |t| now - t.at >= TRANSFER_WAIT_SECS);
            if !done.is_empty() {
                let sim = sim.clone();
                tokio::spawn(async move {
                    if let Err(e) = sim.handed_over(done).await {
                        tracing::warn!(error = %e, "the simulator could not deliver a transfer callback");
                    }
                });
            }
            let list: Vec<Value> = c
                .transfer_log
                .iter()
                .filter(|t| t.handover == from && t.takeover == to)
                .map(|t| json!({"external_userid": t.external_userid, "status": t.status, "takeover_time": t.takeover_time.unwrap_or(0)}))
                .collect();
            ok(json!({"customer": list, "next_cursor": ""}))
        }
        _ => err(40058, &format!("unsupported POST {api} in the simulator")),
    }
}

#[derive(Deserialize)]
struct Scan {
    config_id: String,
    external_userid: String,
    name: String,
}

/// A customer scans a contact way: they become the guide's contact, and WeCom calls back.
async fn sim_scan(State(sim): State<Sim>, Json(scan): Json<Scan>) -> Json<Value> {
    let (xml, code) = {
        let mut c = sim.corp.lock().expect("corp");
        let Some((users, state)) = c.contact_ways.get(&scan.config_id).cloned() else { return err(40058, "no such config_id") };
        let userid = users[0].clone();
        let held = c.customers.values().filter(|cu| cu.follows.iter().any(|f| f.userid == userid)).count();
        if held >= sim.config.customers_per_staff.max(1) {
            return err(40058, "the member of staff has reached their customer limit");
        }
        let code = Simulator::next_id(&mut c, "welcome");
        c.welcome_codes.insert(code.clone(), (Instant::now(), false, userid.clone(), scan.external_userid.clone()));
        let customer = c.customers.entry(scan.external_userid.clone()).or_default();
        customer.name = scan.name.clone();
        customer.follows.retain(|f| f.userid != userid);
        customer.follows.push(Follow { userid: userid.clone(), state: state.clone(), createtime: now_secs(), tags: Vec::new() });
        let extra = vec![("State", Field::CData(state.unwrap_or_default())), ("WelcomeCode", cdata(&code))];
        (sim.event_xml("add_external_contact", &userid, &scan.external_userid, extra), code)
    };
    match sim.callback(xml).await {
        Ok(()) => ok(json!({"welcome_code": code})),
        Err(e) => err(-1, &e),
    }
}

#[derive(Deserialize)]
struct Remove {
    userid: String,
    external_userid: String,
}

/// A customer removes their guide (`del_follow_user`).
#[derive(Deserialize)]
struct Resign {
    userid: String,
}

/// A member of staff leaves the company.
async fn sim_resign(State(sim): State<Sim>, Json(r): Json<Resign>) -> Json<Value> {
    sim.resign(&r.userid);
    ok(json!({}))
}

/// Waiting transfers complete now (in WeCom, 24 hours after they were asked for).
async fn sim_complete_transfers(State(sim): State<Sim>) -> Json<Value> {
    match sim.complete_transfers().await {
        Ok(()) => ok(json!({})),
        Err(e) => err(-1, &e),
    }
}

#[derive(Deserialize)]
struct Refuse {
    external_userid: String,
}

/// The customer refuses a waiting transfer.
async fn sim_refuse_transfer(State(sim): State<Sim>, Json(r): Json<Refuse>) -> Json<Value> {
    match sim.refuse_transfer(&r.external_userid).await {
        Ok(true) => ok(json!({})),
        Ok(false) => err(40058, "no waiting transfer for this customer"),
        Err(e) => err(-1, &e),
    }
}

async fn sim_remove_guide(State(sim): State<Sim>, Json(r): Json<Remove>) -> Json<Value> {
    let xml = {
        let mut c = sim.corp.lock().expect("corp");
        if let Some(cu) = c.customers.get_mut(&r.external_userid) {
            cu.follows.retain(|f| f.userid != r.userid);
        }
        sim.event_xml("del_follow_user", &r.userid, &r.external_userid, vec![])
    };
    sim.notify(xml).await
}

/// Serves the simulator on a free loopback port in the background; returns its base URL.
pub async fn spawn_local(sim: Arc<Simulator>) -> std::io::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(serve(sim, listener));
    Ok(base)
}

/// Serves the simulator on `listener` until the task is dropped.
pub async fn serve(sim: Arc<Simulator>, listener: tokio::net::TcpListener) -> std::io::Result<()> {
    axum::serve(listener, sim.router()).await
}

#[derive(Deserialize)]
struct GuideTag {
    userid: String,
    external_userid: String,
    tag_name: String,
    #[serde(default = "yes")]
    on: bool,
}

fn yes() -> bool {
    true
}

/// A guide tags (or untags) a customer in the WeCom app: `edit_external_contact`.
async fn sim_guide_tag(State(sim): State<Sim>, Json(t): Json<GuideTag>) -> Json<Value> {
    let xml = {
        let mut c = sim.corp.lock().expect("corp");
        let Some(id) = c.tag_id(&t.tag_name) else { return no_such_tag() };
        let Some(f) = c.customers.get_mut(&t.external_userid).and_then(|cu| cu.follows.iter_mut().find(|f| f.userid == t.userid)) else {
            return err(84061, "not external contact");
        };
        f.tags.retain(|x| *x != id);
        if t.on {
            f.tags.push(id);
        }
        sim.event_xml("edit_external_contact", &t.userid, &t.external_userid, vec![])
    };
    sim.notify(xml).await
}

#[derive(Deserialize)]
struct GroupMember {
    chat_id: String,
    external_userid: String,
}

/// A customer joins a customer group by its QR code (join scene 3); a full group
/// (500 members) turns them away.
async fn sim_join_group(State(sim): State<Sim>, Json(g): Json<GroupMember>) -> Json<Value> {
    let xml = {
        let mut c = sim.corp.lock().expect("corp");
        let Some((_, _, members)) = c.groups.get_mut(&g.chat_id) else { return no_such_chat() };
        if !members.contains(&g.external_userid) {
            // The owner counts towards the limit too.
            if members.len() + 1 >= GROUP_LIMIT {
                return err(40058, "the group is full (500 members)");
            }
            members.push(g.external_userid.clone());
        }
        sim.group_xml(&g.chat_id, "add_member", ("JoinScene", Field::Text("3".into())), std::slice::from_ref(&g.external_userid))
    };
    sim.notify(xml).await
}

/// A customer leaves a customer group of their own accord (quit scene 0).
async fn sim_leave_group(State(sim): State<Sim>, Json(g): Json<GroupMember>) -> Json<Value> {
    let xml = {
        let mut c = sim.corp.lock().expect("corp");
        let Some((_, _, members)) = c.groups.get_mut(&g.chat_id) else { return no_such_chat() };
        let before = members.len();
        members.retain(|m| *m != g.external_userid);
        if members.len() == before {
            return err(40058, "not a member of this group");
        }
        sim.group_xml(&g.chat_id, "del_member", ("QuitScene", Field::Text("0".into())), std::slice::from_ref(&g.external_userid))
    };
    sim.notify(xml).await
}

#[derive(Deserialize)]
struct TagName {
    tag_name: String,
}

/// An administrator deletes a corp tag in the admin console: it leaves every customer
/// it was on, and a `change_external_tag` callback names its id.
async fn sim_admin_delete_tag(State(sim): State<Sim>, Json(t): Json<TagName>) -> Json<Value> {
    let xml = {
        let mut c = sim.corp.lock().expect("corp");
        let Some(id) = c.tag_id(&t.tag_name) else { return no_such_tag() };
        for (_, _, tags) in c.tag_groups.iter_mut() {
            tags.retain(|(i, _)| *i != id);
        }
        for f in c.customers.values_mut().flat_map(|cu| cu.follows.iter_mut()) {
            f.tags.retain(|x| *x != id);
        }
        sim.system_event("change_external_tag", vec![("Id", cdata(&id)), ("TagType", cdata("tag")), ("ChangeType", cdata("delete"))])
    };
    sim.notify(xml).await
}

#[derive(Deserialize)]
struct NewGroup {
    chat_id: String,
    name: String,
    owner: String,
    #[serde(default)]
    external_userids: Vec<String>,
}

/// A guide creates a customer group with some of their customers in it. WeCom's
/// `create` callback names only the group.
async fn sim_create_group(State(sim): State<Sim>, Json(g): Json<NewGroup>) -> Json<Value> {
    let xml = {
        let mut c = sim.corp.lock().expect("corp");
        if !c.staff.contains(&g.owner) {
            return err(40003, "invalid userid: the owner is not a member of staff");
        }
        if c.groups.contains_key(&g.chat_id) {
            return err(40058, "the chat_id exists");
        }
        let members: Vec<String> = g.external_userids.into_iter().take(GROUP_LIMIT - 1).collect();
        c.groups.insert(g.chat_id.clone(), (g.name, g.owner, members));
        sim.chat_xml(&g.chat_id, "create", vec![])
    };
    sim.notify(xml).await
}

#[derive(Deserialize)]
struct ChatId {
    chat_id: String,
}

/// The group's owner dismisses it: it is gone from `groupchat/list` and `get`, and the
/// `dismiss` callback names only the group.
async fn sim_dismiss_group(State(sim): State<Sim>, Json(g): Json<ChatId>) -> Json<Value> {
    let xml = {
        let mut c = sim.corp.lock().expect("corp");
        if c.groups.remove(&g.chat_id).is_none() {
            return no_such_chat();
        }
        sim.chat_xml(&g.chat_id, "dismiss", vec![])
    };
    sim.notify(xml).await
}

#[derive(Deserialize)]
struct GuideSends {
    msgid: String,
}

/// The guide presses send on a held mass message in the WeCom app.
async fn sim_guide_sends(State(sim): State<Sim>, Json(g): Json<GuideSends>) -> Json<Value> {
    let mut c = sim.corp.lock().expect("corp");
    match c.mass.get_mut(&g.msgid) {
        Some(m) => {
            m.sent = true;
            ok(json!({}))
        }
        None => err(40058, "no such msgid"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::callback::CallbackEvent;

    /// Callbacks are the documents WeCom sends: strings in CDATA, numbers as text, in
    /// WeCom's order (and the same bytes the simulator wrote by hand before).
    #[test]
    fn callbacks_are_written_as_wecom_writes_them() {
        let sim = Simulator::new(SimConfig::new("ww1", "secret", "t", "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt"));
        let xml = sim.group_xml("wr1", "add_member", ("JoinScene", Field::Text("3".into())), &["wmA".to_string(), "li".to_string()]);
        let time = callback::parse(&xml).unwrap().require("CreateTime").unwrap().to_string();
        assert_eq!(
            xml,
            format!(
                "<xml><ToUserName><![CDATA[ww1]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName><CreateTime>{time}</CreateTime>\
                 <MsgType><![CDATA[event]]></MsgType><Event><![CDATA[change_external_chat]]></Event><ChatId><![CDATA[wr1]]></ChatId>\
                 <ChangeType><![CDATA[update]]></ChangeType><UpdateDetail><![CDATA[add_member]]></UpdateDetail><JoinScene>3</JoinScene>\
                 <MemChangeCnt>2</MemChangeCnt><MemChangeList><Item><![CDATA[wmA]]></Item><Item><![CDATA[li]]></Item></MemChangeList></xml>"
            )
        );

        // A contact way's state is the corp's own text: whatever it holds reads back.
        let state = "SH001]]><x>&";
        let xml = sim.event_xml("add_external_contact", "li", "wm1", vec![("State", cdata(state)), ("WelcomeCode", cdata("welcome1"))]);
        assert_eq!(
            CallbackEvent::from_fields(&callback::parse(&xml).unwrap()).unwrap(),
            CallbackEvent::ContactAdded { staff: "li".into(), external_userid: "wm1".into(), state: Some(state.into()), welcome_code: Some("welcome1".into()) }
        );
    }
}
