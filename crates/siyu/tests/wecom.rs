//! WeCom callbacks against the real server: URL verification, an encrypted
//! `add_external_contact` becoming a profile with its guide, store and channel, retries
//! stored once, the customer removing the guide becoming the block the contact policy
//! uses, and every kind of bad request refused with nothing recorded.

mod common;

use common::{TestApp, wait_until};
use reqwest::StatusCode;
use serde_json::json;
use siyu_core::Timestamp;
use siyu_store::testing::TestStore;
use siyu_wecom::crypto::MsgCrypt;

const CORP: &str = "ww1436e0e65a779aee";
const TOKEN: &str = "hJqcu3uJ9Tn2gXPmxx2w9kkCkCE2EPYo";
const KEY: &str = "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt";

async fn spawn(store: TestStore) -> TestApp {
    let config = json!({"corp_id": CORP, "token": TOKEN, "encoding_aes_key": KEY});
    std::fs::write(store.dir.path().join("wecom.json"), config.to_string()).unwrap();
    TestApp::spawn(store).await
}

fn now_secs() -> String {
    (Timestamp::now().0 / 1000).to_string()
}

fn event_xml(change: &str, staff: &str, external: &str, extra: &str, created: i64) -> String {
    format!(
        "<xml><ToUserName><![CDATA[{CORP}]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName><CreateTime>{created}</CreateTime>\
         <MsgType><![CDATA[event]]></MsgType><Event><![CDATA[change_external_contact]]></Event><ChangeType><![CDATA[{change}]]></ChangeType>\
         <UserID><![CDATA[{staff}]]></UserID><ExternalUserID><![CDATA[{external}]]></ExternalUserID>{extra}</xml>"
    )
}

/// POSTs an event sealed by `crypt`; returns the status and body.
async fn post_event(app: &TestApp, crypt: &MsgCrypt, xml: &str, nonce: &str) -> (StatusCode, String) {
    let ts = now_secs();
    let envelope = crypt.seal(xml, &ts, nonce);
    let f = siyu_wecom::callback::parse(&envelope).unwrap();
    let sig = f.get("MsgSignature").unwrap().to_string();
    let url = app.url(&format!("/wecom/callback?msg_signature={sig}&timestamp={ts}&nonce={nonce}"));
    let r = app.client.post(url).body(envelope).send().await.unwrap();
    (r.status(), r.text().await.unwrap())
}

async fn callbacks(store: TestStore) {
    let app = spawn(store).await;
    let crypt = MsgCrypt::new(TOKEN, KEY, CORP).unwrap();
    app.put("/api/v1/stores/SH001", Some(&json!({"name": "静安店", "city": "Shanghai"}))).await;
    app.put("/api/v1/staff/li.sh0052", Some(&json!({"name": "李晨", "store_id": "SH001"}))).await;

    // URL verification: the decrypted echostr comes back.
    let (ts, nonce) = (now_secs(), "verify1");
    let echostr = crypt.encrypt("1288432023552776189");
    let sig = crypt.sign(&ts, nonce, &echostr);
    let url = app.url(&format!("/wecom/callback?msg_signature={sig}&timestamp={ts}&nonce={nonce}&echostr={}", siyu::cli::admin_client::encode(&echostr)));
    let r = app.client.get(url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.text().await.unwrap(), "1288432023552776189");

    // A customer adds the guide through the store's table-card QR code.
    let created = Timestamp::now().0 / 1000;
    let add = event_xml(
        "add_external_contact",
        "li.sh0052",
        "wmCustomer001",
        "<State><![CDATA[SH001-table_card]]></State><WelcomeCode><![CDATA[WC1]]></WelcomeCode>",
        created,
    );
    assert_eq!(post_event(&app, &crypt, &add, "n1").await, (StatusCode::OK, "success".to_string()));
    // WeCom retries (new nonce, same event): stored once.
    assert_eq!(post_event(&app, &crypt, &add, "n2").await.0, StatusCode::OK);
    app.settle_all().await;
    let (s, p) = app.lookup("external_userid=wmCustomer001").await;
    assert_eq!(s, StatusCode::OK, "{p}");
    let id = p["id"].as_i64().unwrap();
    let (_, events) = app.get(&format!("/api/v1/profiles/{id}/events")).await;
    let added: Vec<_> = events["events"].as_array().unwrap().iter().filter(|e| e["name"] == json!("Contact Added")).collect();
    assert_eq!(added.len(), 1, "{events}");
    assert_eq!(added[0]["payload"]["state"], json!("SH001-table_card"));
    assert_eq!(added[0]["payload"]["store_id"], json!("SH001"));
    assert_eq!(added[0]["payload"]["channel"], json!("table_card"));
    let (_, mine) = app.get("/api/v1/staff/li.sh0052/customers").await;
    assert_eq!(mine["customers"].as_array().unwrap().len(), 1, "{mine}");

    // Bad requests: 4xx and nothing recorded.
    let (_, before) = app.get("/api/v1/stats").await;
    let other_corp = MsgCrypt::new(TOKEN, KEY, "ww_not_this_corp").unwrap();
    let bad = event_xml("add_external_contact", "li.sh0052", "wmIntruder", "", created);
    assert_eq!(post_event(&app, &other_corp, &bad, "n3").await.0, StatusCode::FORBIDDEN, "wrong corp id");
    let forged = MsgCrypt::new("another-token", KEY, CORP).unwrap();
    assert_eq!(post_event(&app, &forged, &bad, "n4").await.0, StatusCode::FORBIDDEN, "bad signature");
    // A replay of a request already accepted (same timestamp and nonce).
    let ts = now_secs();
    let envelope = crypt.seal(&bad, &ts, "n5");
    let sig = siyu_wecom::callback::parse(&envelope).unwrap().get("MsgSignature").unwrap().to_string();
    let url = app.url(&format!("/wecom/callback?msg_signature={sig}&timestamp={ts}&nonce=n5"));
    assert_eq!(app.client.post(&url).body(envelope.clone()).send().await.unwrap().status(), StatusCode::OK);
    assert_eq!(app.client.post(&url).body(envelope).send().await.unwrap().status(), StatusCode::FORBIDDEN, "replayed nonce");
    app.settle_all().await;
    let (_, after_replay) = app.get("/api/v1/stats").await;
    let events_after_first = after_replay["events"].as_i64().unwrap();
    // Stale timestamp.
    let old = (Timestamp::now().0 / 1000 - 3600).to_string();
    let envelope = crypt.seal(&bad, &old, "n6");
    let sig = siyu_wecom::callback::parse(&envelope).unwrap().get("MsgSignature").unwrap().to_string();
    let r = app.client.post(app.url(&format!("/wecom/callback?msg_signature={sig}&timestamp={old}&nonce=n6"))).body(envelope).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "stale");
    // Garbage, XXE, and a signed but undecryptable body.
    for body in ["garbage", "<!DOCTYPE x [<!ENTITY e SYSTEM \"file:///etc/passwd\">]><xml><Encrypt>&e;</Encrypt></xml>"] {
        let r = app.client.post(app.url(&format!("/wecom/callback?msg_signature=00&timestamp={}&nonce=g", now_secs()))).body(body).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{body}");
    }
    let ts = now_secs();
    let junk = "bm90IGEgcmVhbCBtZXNzYWdlIGF0IGFsbCEhISEhIQ==";
    let sig = crypt.sign(&ts, "n7", junk);
    let r = app
        .client
        .post(app.url(&format!("/wecom/callback?msg_signature={sig}&timestamp={ts}&nonce=n7")))
        .body(format!("<xml><Encrypt><![CDATA[{junk}]]></Encrypt></xml>"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "undecryptable");
    let r = app.client.post(app.url("/wecom/callback")).body("<xml/>").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "no signature");
    app.settle_all().await;
    let (_, after) = app.get("/api/v1/stats").await;
    assert_eq!(after["events"].as_i64().unwrap(), events_after_first, "nothing recorded by bad requests");
    assert_eq!(after["profiles"].as_i64().unwrap() - before["profiles"].as_i64().unwrap(), 1, "only the one valid (replayed) request made a profile");

    // The customer removes the guide: `Contact Deleted`, the relationship ends, and the
    // contact policy holds them in the block cooldown.
    let del = event_xml("del_follow_user", "li.sh0052", "wmCustomer001", "", created + 5);
    assert_eq!(post_event(&app, &crypt, &del, "n8").await.0, StatusCode::OK);
    app.settle_all().await;
    let (_, events) = app.get(&format!("/api/v1/profiles/{id}/events")).await;
    let deleted = events["events"].as_array().unwrap().iter().find(|e| e["name"] == json!("Contact Deleted")).expect("Contact Deleted");
    assert_eq!(deleted["payload"]["initiator"], json!("customer"));
    let (_, mine) = app.get("/api/v1/staff/li.sh0052/customers").await;
    assert_eq!(mine["customers"].as_array().unwrap().len(), 1, "only the customer of the accepted replay test is left: {mine}");
    let (s, v) = app.post("/api/v1/segments", &json!({"name": "wecom_customers", "rule": "has(external_userid)"})).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (_, c) = app.post("/api/v1/campaigns", &json!({"name": "sms", "audience": {"segment": "wecom_customers"}, "channel": "sms", "content": "hi"})).await;
    app.send("/v1/identify", &json!({"anonymousId": "a1", "context": {"externalIds": [{"id": "wmCustomer001", "type": "external_userid", "collection": "users", "encoding": "none"}]}, "traits": {"consent.sms": true}})).await;
    app.settle_all().await;
    let (_, preview) = app.post(&format!("/api/v1/campaigns/{}/preview", c["id"]), &json!({})).await;
    // Our customer consented but is in the cooldown; the other (no consent) is not sent either.
    assert_eq!(preview["would_send"], json!(0), "{preview}");
    assert_eq!(
        preview["suppressed"][1],
        json!({"reason": "block_cooldown", "count": 1, "why": "the customer removed their guide or complained recently"}),
        "{preview}"
    );
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wecom_callbacks_sqlite() {
    callbacks(TestStore::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wecom_callbacks_postgres() {
    let Some(store) = TestStore::postgres().await else { return };
    callbacks(store).await;
}

/// The whole loop with the simulator playing WeCom: a store's QR code, a customer adding
/// the guide, the callback, the tag and the welcome message, a broadcast becoming the
/// guide's task, the confirmed task becoming a mass message with its results, and the
/// customer leaving.
async fn with_simulator(store: TestStore) {
    use siyu_wecom::sim::{SimConfig, Simulator};
    // The simulator needs Siyu's address for callbacks, and Siyu the simulator's: bind both first.
    let sim_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sim_base = format!("http://{}", sim_listener.local_addr().unwrap());
    let config = json!({"corp_id": CORP, "token": TOKEN, "encoding_aes_key": KEY, "secret": "sim-secret", "api_base": sim_base, "agent_id": 1_000_002});
    std::fs::write(store.dir.path().join("wecom.json"), config.to_string()).unwrap();
    std::fs::write(store.dir.path().join("outreach.json"), json!({"policy": {"quiet_hours": null}}).to_string()).unwrap();
    let app = TestApp::spawn(store).await;
    let sim = Simulator::new(SimConfig { callback_url: Some(app.url("/wecom/callback")), ..SimConfig::new(CORP, "sim-secret", TOKEN, KEY) });
    sim.add_staff(&["li.sh0052"]);
    tokio::spawn(siyu_wecom::sim::serve(sim.clone(), sim_listener));
    app.put("/api/v1/stores/SH001", Some(&json!({"name": "静安店", "city": "Shanghai"}))).await;
    app.put("/api/v1/staff/li.sh0052", Some(&json!({"name": "李晨", "store_id": "SH001"}))).await;

    // HQ creates the store's table-card QR code for the guide.
    let (s, way) = app
        .post(
            "/api/v1/wecom/contact-ways",
            &json!({"guide": "li.sh0052", "channel": "table_card", "tags": ["门店桌卡"],
        "welcome": "{{ traits.name }}，{{ owner.name }}：欢迎来{{ store.name }}！"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{way}");
    assert_eq!(way["state"], json!("SH001-table_card"));
    let (s, _) = app.post("/api/v1/wecom/contact-ways", &json!({"guide": "li.sh0052", "channel": "table_card"})).await;
    assert_eq!(s, StatusCode::CONFLICT);

    // A customer scans it.
    let http = siyu_wecom::client::http_builder().no_proxy().build().unwrap();
    let r: serde_json::Value = http
        .post(format!("{sim_base}/sim/scan"))
        .json(&json!({"config_id": way["config_id"], "external_userid": "wmTea01", "name": "周思远"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["errcode"], json!(0), "{r}");
    wait_until("the welcome message to go through send_welcome_msg", async || !sim.welcomes_sent().is_empty()).await;
    assert_eq!(sim.welcomes_sent()[0], ("li.sh0052".into(), "wmTea01".into(), "周思远，李晨：欢迎来静安店！".into()));
    app.settle_all().await;
    let (_, p) = app.lookup("external_userid=wmTea01").await;
    let id = p["id"].as_i64().unwrap();
    assert!(p["tags"].to_string().contains("门店桌卡"), "{p}");
    let (_, ways) = app.get("/api/v1/wecom/contact-ways").await;
    assert_eq!((ways[0]["adds"].as_i64(), ways[0]["deletions"].as_i64()), (Some(1), Some(0)));

    // A WeCom broadcast becomes the guide's task; the guide confirms; Siyu sends the
    // mass message through WeCom and records the result.
    app.engine().tick().await.unwrap();
    app.post("/api/v1/segments", &json!({"name": "table_card", "rule": "tag = \"门店桌卡\""})).await;
    let (_, c) = app
        .post(
            "/api/v1/campaigns",
            &json!({"name": "新豆", "audience": {"segment": "table_card"}, "channel": "wecom", "content": "秋季新豆到店", "task_deadline_hours": 3}),
        )
        .await;
    let cid = c["id"].as_i64().unwrap();
    app.post(&format!("/api/v1/campaigns/{cid}/actions/schedule"), &json!({})).await;
    let outreach = app.running.as_ref().unwrap().state.outreach.clone();
    outreach.tick().await.unwrap();
    let (_, tasks) = app.get("/api/v1/tasks?guide=li.sh0052").await;
    let task = tasks[0]["id"].as_i64().unwrap();
    let (_, t) = app.get(&format!("/api/v1/tasks/{task}")).await;
    let item = t["items"][0]["delivery_id"].as_i64().unwrap();
    // Two hours before its deadline the guide is reminded in WeCom, once, by an app message.
    app.engine().clock().advance(3_600_000 + 1000);
    outreach.tick().await.unwrap();
    outreach.tick().await.unwrap();
    let reminders = sim.app_messages();
    assert_eq!(reminders.len(), 1, "{reminders:?}");
    assert_eq!(reminders[0].0, "li.sh0052");
    assert!(reminders[0].1.contains("「新豆」"), "{reminders:?}");
    let (s, _) = app.post(&format!("/api/v1/tasks/{task}/items/{item}"), &json!({"action": "confirm"})).await;
    assert_eq!(s, StatusCode::OK);
    sim.hold_sends(true); // the guide will press send in WeCom later
    sim.drop_answers(1); // WeCom makes the mass message, but its answer is lost
    outreach.tick().await.unwrap(); // add_msg_template: no answer, so no blind retry
    assert_eq!(sim.mass_messages().len(), 1);
    outreach.tick().await.unwrap(); // found with get_groupmsg_list_v2 and adopted, not made again
    outreach.tick().await.unwrap(); // its results read "not sent"
    let mass = sim.mass_messages();
    assert_eq!(mass.len(), 1, "one mass message, whatever happened to the answer: {mass:?}");
    assert_eq!((mass[0].1.as_str(), mass[0].2.clone(), mass[0].3.as_str()), ("li.sh0052", vec!["wmTea01".to_string()], "秋季新豆到店"));
    // Unsent for 8 hours: one reminder through remind_groupmsg_send, not one per round.
    let msgid = mass[0].0.clone();
    app.engine().clock().advance(8 * 3_600_000 + 1000);
    outreach.tick().await.unwrap();
    outreach.tick().await.unwrap();
    assert_eq!(sim.reminders_of(&msgid), 1, "reminded once");
    let (_, d) = app.get(&format!("/api/v1/profiles/{id}/deliveries")).await;
    let waiting = d["deliveries"].as_array().unwrap().iter().find(|x| x["campaign_id"] == json!(cid)).unwrap().clone();
    assert_ne!(waiting["status"], json!("sent"), "not sent until the guide sends it: {waiting}");
    let r: serde_json::Value = http.post(format!("{sim_base}/sim/guide_sends")).json(&json!({"msgid": msgid})).send().await.unwrap().json().await.unwrap();
    assert_eq!(r["errcode"], json!(0), "{r}");
    outreach.tick().await.unwrap(); // the results now read "sent"
    let (_, d) = app.get(&format!("/api/v1/profiles/{id}/deliveries")).await;
    let touch = d["deliveries"].as_array().unwrap().iter().find(|x| x["campaign_id"] == json!(cid)).unwrap().clone();
    assert_eq!(touch["status"], json!("sent"), "{d}");
    let welcome = d["deliveries"].as_array().unwrap().iter().find(|x| x["kind"] == json!("service")).unwrap().clone();
    assert_eq!(welcome["status"], json!("sent"));
    assert_eq!(welcome["sent_at"], welcome["created_at"], "a welcome says when it went out: {welcome}");

    // Tags marked "sync" are mirrored: Siyu → WeCom corp tags (group "Siyu")…
    let (s, v) = app.put("/api/v1/wecom/synced-tags/VIP", None).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    app.put("/api/v1/wecom/synced-tags/燕麦奶", None).await;
    app.put(&format!("/api/v1/profiles/{id}/tags/VIP"), None).await;
    let client = siyu_wecom::client::Client::new(&sim_base, CORP, "sim-secret");
    wait_until("the guide's contact to carry the VIP corp tag", async || {
        let tags = client.get_corp_tag_list(&[]).await.unwrap();
        let vip = tags["tag_group"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|g| g["group_name"] == json!("Siyu"))
            .flat_map(|g| g["tag"].as_array().unwrap().clone())
            .find(|t| t["name"] == json!("VIP"));
        let contact = client.get_external_contact("wmTea01").await.unwrap();
        vip.is_some_and(|vip| contact["follow_user"][0]["tags"].as_array().unwrap().iter().any(|t| t["tag_id"] == vip["id"]))
    })
    .await;
    // …and WeCom → Siyu when a guide tags the customer in WeCom.
    let r: serde_json::Value = http
        .post(format!("{sim_base}/sim/guide_tag"))
        .json(&json!({"userid": "li.sh0052", "external_userid": "wmTea01", "tag_name": "燕麦奶"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["errcode"], json!(0), "{r}");
    wait_until("a tag set by the guide in WeCom to reach Siyu", async || {
        let (_, p) = app.get(&format!("/api/v1/profiles/{id}")).await;
        p["tags"].to_string().contains("燕麦奶")
    })
    .await;

    // An administrator deletes the corp tag in WeCom: Siyu stops mirroring that tag
    // (and does not re-create it), keeps the others, and keeps the tag on its profile.
    let r: serde_json::Value =
        http.post(format!("{sim_base}/sim/admin_delete_tag")).json(&json!({"tag_name": "燕麦奶"})).send().await.unwrap().json().await.unwrap();
    assert_eq!(r["errcode"], json!(0), "{r}");
    let mut synced = json!(null);
    wait_until("the deleted corp tag to leave the mirrored tags", async || {
        synced = app.get("/api/v1/wecom/synced-tags").await.1;
        !synced.to_string().contains("燕麦奶")
    })
    .await;
    assert_eq!(synced, json!(["VIP"]), "the deleted corp tag is no longer mirrored");
    let (_, p) = app.get(&format!("/api/v1/profiles/{id}")).await;
    assert!(p["tags"].to_string().contains("燕麦奶"), "Siyu's own tag stays: {p}");

    // The customer joins the store's customer group and later leaves it: each member
    // change names its members, so the events land on the customer's profile.
    sim.add_group("wrJingan01", "静安店福利群", "li.sh0052", &[]);
    for path in ["join_group", "leave_group"] {
        let r: serde_json::Value = http
            .post(format!("{sim_base}/sim/{path}"))
            .json(&json!({"chat_id": "wrJingan01", "external_userid": "wmTea01"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(r["errcode"], json!(0), "{path}: {r}");
    }
    let r: serde_json::Value = http
        .post(format!("{sim_base}/sim/leave_group"))
        .json(&json!({"chat_id": "wrJingan01", "external_userid": "wmTea01"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["errcode"], json!(40058), "leaving twice: {r}");
    app.settle_all().await;
    let (_, events) = app.get(&format!("/api/v1/profiles/{id}/events")).await;
    let group: Vec<(String, serde_json::Value)> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["name"].as_str().unwrap_or("").starts_with("Group"))
        .map(|e| (e["name"].as_str().unwrap().to_string(), e["payload"]["chat_id"].clone()))
        .collect();
    assert_eq!(group.len(), 2, "{events}");
    assert!(group.contains(&("Group Joined".into(), json!("wrJingan01"))) && group.contains(&("Group Left".into(), json!("wrJingan01"))), "{group:?}");

    // A guide creates a group with the customer in it, and later dismisses it: neither
    // callback names the members. Siyu reads the new group from WeCom, and knows from
    // its own events who was in the dismissed one.
    let group_events = |events: &serde_json::Value, chat: &str| -> Vec<String> {
        events["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["payload"]["chat_id"] == json!(chat))
            .map(|e| e["name"].as_str().unwrap().to_string())
            .collect()
    };
    let r: serde_json::Value = http
        .post(format!("{sim_base}/sim/create_group"))
        .json(&json!({"chat_id": "wrJingan02", "name": "静安店新品试饮群", "owner": "li.sh0052", "external_userids": ["wmTea01"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["errcode"], json!(0), "{r}");
    let mut joined = Vec::new();
    wait_until("the new group's customers to be read from WeCom", async || {
        app.settle_all().await;
        let (_, events) = app.get(&format!("/api/v1/profiles/{id}/events")).await;
        joined = group_events(&events, "wrJingan02");
        !joined.is_empty()
    })
    .await;
    assert_eq!(joined, vec!["Group Joined".to_string()], "a new group's customers are read from WeCom");
    let r: serde_json::Value =
        http.post(format!("{sim_base}/sim/dismiss_group")).json(&json!({"chat_id": "wrJingan02"})).send().await.unwrap().json().await.unwrap();
    assert_eq!(r["errcode"], json!(0), "{r}");
    app.settle_all().await;
    let (_, events) = app.get(&format!("/api/v1/profiles/{id}/events")).await;
    let mut both = group_events(&events, "wrJingan02");
    both.sort();
    assert_eq!(both, vec!["Group Joined".to_string(), "Group Left".to_string()], "the dismissed group's members leave it");
    assert_eq!(group_events(&events, "wrJingan01").len(), 2, "other groups are untouched");

    // The customer removes the guide.
    let r: serde_json::Value = http
        .post(format!("{sim_base}/sim/remove_guide"))
        .json(&json!({"userid": "li.sh0052", "external_userid": "wmTea01"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["errcode"], json!(0), "{r}");
    app.settle_all().await;
    let (_, events) = app.get(&format!("/api/v1/profiles/{id}/events")).await;
    assert!(events["events"].as_array().unwrap().iter().any(|e| e["name"] == json!("Contact Deleted")));
    let (_, ways) = app.get("/api/v1/wecom/contact-ways").await;
    assert_eq!(ways[0]["deletions"], json!(1));
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wecom_end_to_end_with_the_simulator_sqlite() {
    with_simulator(TestStore::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wecom_end_to_end_with_the_simulator_postgres() {
    let Some(store) = TestStore::postgres().await else { return };
    with_simulator(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_sync_brings_in_contacts_and_groups_once_sqlite() {
    full_sync_then_transfer(TestStore::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_sync_brings_in_contacts_and_groups_once_postgres() {
    let Some(store) = TestStore::postgres().await else { return };
    full_sync_then_transfer(store).await;
}

/// The full sync (run twice: nothing stored twice), then a resigned guide's customers
/// handed to another guide.
async fn full_sync_then_transfer(store: TestStore) {
    use siyu_wecom::sim::{SimConfig, Simulator};
    let sim = Simulator::new(SimConfig::new(CORP, "sim-secret", TOKEN, KEY));
    sim.add_staff(&["g1", "g2"]);
    let sim_base = siyu_wecom::sim::spawn_local(sim.clone()).await.unwrap();
    let client = siyu_wecom::client::Client::new(&sim_base, CORP, "sim-secret");
    let http = siyu_wecom::client::http_builder().no_proxy().build().unwrap();
    for (guide, n) in [("g1", 150), ("g2", 30)] {
        let (config_id, _) = client.add_contact_way(&[guide], &format!("S1-{guide}"), "x").await.unwrap();
        for i in 0..n {
            http.post(format!("{sim_base}/sim/scan"))
                .json(&json!({"config_id": config_id, "external_userid": format!("wm{guide}{i:03}"), "name": format!("客{i}")}))
                .send()
                .await
                .unwrap();
        }
    }
    sim.add_group("wrGroup1", "静安店福利群", "g1", &["wmg1000", "wmg1001"]);

    let config = json!({"corp_id": CORP, "token": TOKEN, "encoding_aes_key": KEY, "secret": "sim-secret", "api_base": sim_base});
    std::fs::write(store.dir.path().join("wecom.json"), config.to_string()).unwrap();
    let app = TestApp::spawn(store).await;
    sim.connect_callbacks(&app.url("/wecom/callback"));
    for round in 0..2 {
        let (s, v) = app.post("/api/v1/wecom/sync", &json!({})).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{v}");
        let mut p = json!(null);
        wait_until("the WeCom sync to finish", async || {
            p = app.get("/api/v1/wecom/sync").await.1;
            p["state"].as_str().unwrap() != "running"
        })
        .await;
        assert_eq!((p["guides_total"].as_u64(), p["contacts"].as_u64(), p["group_members"].as_u64()), (Some(2), Some(180), Some(2)), "round {round}: {p}");
        assert_eq!(p["state"].as_str().unwrap(), "done");
        app.settle_all().await;
        let (profiles, events) = app.counts().await;
        assert_eq!((profiles, events), (180, 182), "round {round}: a repeated sync stores nothing twice");
    }
    let (_, g1) = app.get("/api/v1/staff/g1/customers?limit=500").await;
    assert_eq!(g1["customers"].as_array().unwrap().len(), 150);
    let (_, p) = app.lookup("external_userid=wmg1000").await;
    assert_eq!(p["traits"]["name"], json!("客0"), "{p}");
    assert!(p.to_string().contains("Group Joined"), "{p}");

    // g2 leaves the company: their customers go to g1 through WeCom (离职继承), and move
    // in Siyu once WeCom reports the takeover done.
    sim.resign("g2");
    sim.add_staff(&["g3"]);
    let (s, v) = app.post("/api/v1/wecom/transfers", &json!({"from": "g2", "to": "g1"})).await;
    assert_eq!(s, StatusCode::BAD_GATEWAY, "g2 has resigned: WeCom refuses 在职继承 from them: {v}");
    let (s, v) = app.post("/api/v1/wecom/transfers", &json!({"from": "g2", "to": "g2"})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (s, v) = app.post("/api/v1/wecom/transfers", &json!({"from": "", "to": "g1"})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (s, v) = app.post("/api/v1/wecom/transfers", &json!({"from": "nobody", "to": "g1"})).await;
    assert_eq!((s, v["accepted"].as_u64()), (StatusCode::OK, Some(0)), "no customers to hand over: {v}");
    let (s, r) = app.post("/api/v1/wecom/transfers", &json!({"from": "g2", "to": "g1", "resigned": true})).await;
    assert_eq!((s, r["accepted"].as_u64(), r["refused"].as_array().map(Vec::len)), (StatusCode::OK, Some(30), Some(0)), "{r}");
    // WeCom completes takeovers within 24 hours: until then the customers stay with g2.
    let outreach = app.running.as_ref().unwrap().state.outreach.clone();
    outreach.tick().await.unwrap();
    let (_, waiting) = app.get("/api/v1/wecom/transfers?from=g2").await;
    assert!(waiting.as_array().unwrap().iter().all(|t| t["status"] == json!("waiting")), "{waiting}");
    // Asking again while they wait: Siyu refuses before WeCom would (40129).
    let (_, r) = app.post("/api/v1/wecom/transfers", &json!({"from": "g2", "to": "g1", "resigned": true})).await;
    assert_eq!(r["accepted"], json!(0), "{r}");
    assert!(r["refused"].as_array().unwrap().iter().all(|x| x["reason"] == json!("in_transfer")), "{r}");
    assert_eq!(r["refused"].as_array().unwrap().len(), 30, "{r}");
    sim.complete_transfers().await.unwrap();
    outreach.tick().await.unwrap();
    app.settle_all().await;
    let (_, done) = app.get("/api/v1/wecom/transfers?from=g2").await;
    assert_eq!(done.as_array().unwrap().iter().filter(|t| t["status"] == json!("completed")).count(), 30, "{done}");
    let (_, g1) = app.get("/api/v1/staff/g1/customers?limit=500").await;
    assert_eq!(g1["customers"].as_array().unwrap().len(), 180);
    let (_, g2) = app.get("/api/v1/staff/g2/customers?limit=500").await;
    assert_eq!(g2["customers"].as_array().unwrap().len(), 0);
    let (_, preview) = app.post("/api/v1/segments/preview", &json!({"rule": "owner.guide = \"g1\""})).await;
    assert_eq!(preview["count"], json!(180), "the segment engine sees the new owner: {preview}");
    let (_, p) = app.lookup("external_userid=wmg2000").await;
    assert!(p.to_string().contains("Contact Transferred"), "{p}");
    // Transferring again finds no customers left with g2.
    let (_, r) = app.post("/api/v1/wecom/transfers", &json!({"from": "g2", "to": "g1", "resigned": true})).await;
    assert_eq!(r["accepted"], json!(0), "{r}");
    // Everyone to g3 (in service), then back: the customers first handed over have
    // moved twice in 90 days, which Siyu refuses before asking WeCom.
    let (_, r) = app.post("/api/v1/wecom/transfers", &json!({"from": "g1", "to": "g3"})).await;
    assert_eq!(r["accepted"], json!(180), "{r}");
    // One customer refuses the new guide: they stay with g1.
    assert!(sim.refuse_transfer("wmg1000").await.unwrap());
    sim.complete_transfers().await.unwrap();
    outreach.tick().await.unwrap();
    app.settle_all().await;
    let (_, g1) = app.get("/api/v1/staff/g1/customers?limit=500").await;
    assert_eq!(g1["customers"].as_array().unwrap().len(), 1, "{g1}");
    // WeCom told Siyu that g1 lost them by transfer (del_external_contact,
    // Source=DELETE_BY_TRANSFER): recorded as a hand-over, not as a block.
    let (_, p) = app.lookup("external_userid=wmg1001").await;
    assert!(p.to_string().contains("Contact Handed Over"), "{p}");
    let (_, blocked) = app.post("/api/v1/segments/preview", &json!({"rule": "last(\"Contact Deleted\") >= ago(30d)"})).await;
    assert_eq!(blocked["count"], json!(0), "a transfer starts no block cooldown: {blocked}");
    let (_, g3) = app.post("/api/v1/segments/preview", &json!({"rule": "owner.guide = \"g3\""})).await;
    assert_eq!(g3["count"], json!(179), "{g3}");
    let (_, all) = app.get("/api/v1/wecom/transfers?from=g1").await;
    assert_eq!(all.as_array().unwrap().iter().filter(|t| t["status"] == json!("customer_refused")).count(), 1, "{all}");
    let (_, r) = app.post("/api/v1/wecom/transfers", &json!({"from": "g3", "to": "g1"})).await;
    let refused = r["refused"].as_array().unwrap();
    assert_eq!((r["accepted"].as_u64(), refused.len()), (Some(149), 30), "{r}");
    assert!(refused.iter().all(|x| x["reason"] == json!("transfer_limit") && x["external_userid"].as_str().unwrap().starts_with("wmg2")), "{r}");
    app.shutdown().await;
}
