//! Outreach end to end on the real server: campaigns through the contact policy, the dry
//! run, webhook dispatch to a real receiver on loopback, quiet hours across zones, caps
//! across campaigns, guide tasks and their scoping, guardrail auto-pause, journeys.

mod common;

use chrono::NaiveTime;
use common::{Receiver, TestApp};
use reqwest::StatusCode;
use serde_json::{Value, json};
use siyu_core::Timestamp;
use siyu_outreach::ledger::DAY_MS;
use siyu_outreach::quiet::{next_local_time, zone};
use siyu_store::admin;
use siyu_store::testing::TestStore;

/// A server whose outreach config is `config` (plus a webhook to `receiver`).
async fn spawn(store: TestStore, receiver: &Receiver, mut config: Value) -> TestApp {
    config["webhook_url"] = json!(receiver.start().await);
    config["guardrail_check_secs"] = json!(0); // every tick, so tests see pauses at once
    std::fs::write(store.dir.path().join("outreach.json"), config.to_string()).unwrap();
    TestApp::spawn(store).await
}

async fn tick(app: &TestApp) {
    app.settle_all().await;
    app.running.as_ref().unwrap().state.outreach.tick().await.unwrap();
}

/// Moves the server's clock to the next 10:00 in Shanghai (02:00 UTC): outside quiet
/// hours there, inside them in London (02:00 or 03:00 local).
fn to_shanghai_morning(app: &TestApp) -> Timestamp {
    let clock = app.engine().clock();
    let now = clock.now();
    let target = next_local_time(now, NaiveTime::from_hms_opt(10, 0, 0).unwrap(), zone(Some("Asia/Shanghai")));
    clock.advance(target.0 - now.0);
    target
}

/// Two stores (Shanghai, London), a guide in each, and customers of each guide.
async fn brand(app: &TestApp, customers: &[(&str, &str, bool)]) {
    for (store, tz, guide) in [("SH001", "Asia/Shanghai", "g.sh"), ("LDN01", "Europe/London", "g.ldn")] {
        let (s, v) = app.put(&format!("/api/v1/stores/{store}"), Some(&json!({"name": format!("{store} store"), "city": store, "time_zone": tz}))).await;
        assert!(s.is_success(), "{v}");
        app.put(&format!("/api/v1/staff/{guide}"), Some(&json!({"name": format!("Guide {guide}"), "store_id": store}))).await;
    }
    for (i, (user, guide, consent)) in customers.iter().enumerate() {
        // Everyone has a phone: an SMS without one fails with no_address.
        let phone = format!("139{i:08}");
        app.send(
            "/v1/identify",
            &json!({"userId": user, "traits": {"first_name": user.to_uppercase(), "cohort": "test", "consent.sms": consent, "phone": phone}}),
        )
        .await;
        app.send("/v1/track", &json!({"userId": user, "event": "Contact Added", "properties": {"staff_userid": guide}})).await;
    }
    app.settle_all().await;
    app.engine().tick().await.unwrap(); // picks up the new stores and staff
    let (s, v) = app.post("/api/v1/segments", &json!({"name": "cohort", "rule": "cohort = \"test\""})).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
}

async fn profile_id(app: &TestApp, user: &str) -> i64 {
    let (_, p) = app.lookup(&format!("user_id={user}")).await;
    p["id"].as_i64().unwrap()
}

async fn deliveries(app: &TestApp, p: i64) -> Vec<Value> {
    let (s, v) = app.get(&format!("/api/v1/profiles/{p}/deliveries")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["deliveries"].as_array().unwrap().clone()
}

fn sms_campaign(name: &str) -> Value {
    json!({"name": name, "audience": {"segment": "cohort"}, "channel": "sms",
           "content": "{{ traits.first_name | default: \"friend\" }}, {{ store.name }} has new beans ({{ coupon.code }})", "coupon": "BEANS"})
}

async fn launch(app: &TestApp, spec: &Value) -> i64 {
    let (s, c) = app.post("/api/v1/campaigns", spec).await;
    assert_eq!(s, StatusCode::CREATED, "{c}");
    let id = c["id"].as_i64().unwrap();
    let (s, c) = app.post(&format!("/api/v1/campaigns/{id}/actions/schedule"), &json!({})).await;
    assert_eq!(s, StatusCode::OK, "{c}");
    id
}

async fn policy_scenario(store: TestStore) {
    let receiver = Receiver::default();
    let app = spawn(store, &receiver, json!({})).await;
    brand(&app, &[("ann", "g.sh", true), ("bo", "g.sh", false), ("cy", "g.ldn", true), ("di", "g.sh", true)]).await;
    // Di removed her guide yesterday: a block.
    app.send("/v1/track", &json!({"userId": "di", "event": "Contact Deleted", "properties": {"staff_userid": "g.sh"}})).await;
    app.settle_all().await;
    let morning = to_shanghai_morning(&app);
    let (ann, bo, cy, di) = (profile_id(&app, "ann").await, profile_id(&app, "bo").await, profile_id(&app, "cy").await, profile_id(&app, "di").await);

    // Bad input first: a clear 400 and nothing created.
    let (s, e) = app.post("/api/v1/campaigns", &json!({"name": "x", "audience": {"segment": "nope"}, "channel": "sms", "content": "hi"})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(e["error"]["message"].as_str().unwrap().contains("no segment named \"nope\""), "{e}");
    let (s, e) = app.post("/api/v1/campaigns", &json!({"name": "x", "audience": {"segment": "cohort"}, "channel": "sms", "content": "hi {{ name }}"})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(e["error"]["message"].as_str().unwrap().contains("unknown variable `name`"), "{e}");
    // A template that does not parse is refused when saved, naming where.
    let (s, e) =
        app.post("/api/v1/campaigns", &json!({"name": "x", "audience": {"segment": "cohort"}, "channel": "sms", "content": "hi {{ traits.name"})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("at character"), "{e}");
    let journey = json!({"spec": {"name": "broken", "trigger": {"event": {"event": "Signed Up"}}, "steps": [{"send": {"channel": "sms", "content": "hello {{ traits.name"}}]}});
    let (s, e) = app.post("/api/v1/journeys", &journey).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("steps[0]"), "{e}");
    let (_, journeys) = app.get("/api/v1/journeys").await;
    assert_eq!(journeys, json!([]));
    let (_, list) = app.get("/api/v1/campaigns").await;
    assert_eq!(list, json!([]));

    // The dry run explains everyone, and sends nothing.
    let (s, c) = app.post("/api/v1/campaigns", &sms_campaign("beans")).await;
    assert_eq!(s, StatusCode::CREATED);
    let first = c["id"].as_i64().unwrap();
    let (s, preview) = app.post(&format!("/api/v1/campaigns/{first}/preview?sample=10"), &json!({})).await;
    assert_eq!(s, StatusCode::OK, "{preview}");
    assert_eq!(preview["audience"], json!(4));
    assert_eq!(preview["would_send"], json!(2), "{preview}");
    assert_eq!(preview["deferred_by_quiet_hours"], json!(1), "London is asleep: {preview}");
    let reasons: Vec<(String, u64)> =
        preview["suppressed"].as_array().unwrap().iter().map(|s| (s["reason"].as_str().unwrap().to_string(), s["count"].as_u64().unwrap())).collect();
    assert_eq!(reasons, vec![("no_consent".into(), 1), ("block_cooldown".into(), 1)]);
    assert!(preview["suppressed"][0]["why"].as_str().unwrap().contains("consent"));
    let sample = preview["sample"].as_array().unwrap();
    let ann_msg = sample.iter().find(|m| m["profile_id"] == json!(ann)).expect("ann in the sample");
    assert!(ann_msg["content"].as_str().unwrap().starts_with("ANN, SH001 store has new beans (BEANS-"), "{ann_msg}");
    assert!(deliveries(&app, ann).await.is_empty(), "the dry run records nothing");

    // The run: Ann now, Cy at 09:00 London; Bo and Di suppressed with their reason.
    let (s, _) = app.post(&format!("/api/v1/campaigns/{first}/actions/schedule"), &json!({})).await;
    assert_eq!(s, StatusCode::OK);
    tick(&app).await;
    assert_eq!(receiver.for_profile(ann).len(), 1);
    assert!(receiver.for_profile(ann)[0]["content"].as_str().unwrap().starts_with("ANN, SH001 store"));
    assert!(receiver.for_profile(cy).is_empty(), "deferred, not sent at night");
    let bo_d = deliveries(&app, bo).await;
    assert_eq!((bo_d[0]["status"].as_str(), bo_d[0]["reason"].as_str()), (Some("suppressed"), Some("no_consent")));
    assert_eq!(deliveries(&app, di).await[0]["reason"], json!("block_cooldown"));
    let cy_d = deliveries(&app, cy).await;
    assert_eq!(cy_d[0]["status"], json!("queued"));
    let due = Timestamp::parse_iso8601(cy_d[0]["due_at"].as_str().unwrap()).unwrap();
    let london_nine = next_local_time(morning, NaiveTime::from_hms_opt(9, 0, 0).unwrap(), zone(Some("Europe/London")));
    assert_eq!(due, london_nine);

    // A second campaign the same day: the daily cap holds across campaigns.
    let second = launch(&app, &sms_campaign("more beans")).await;
    tick(&app).await;
    assert_eq!(deliveries(&app, ann).await[0]["reason"], json!("daily_cap"));
    assert_eq!(receiver.for_profile(ann).len(), 1);

    // London wakes up: Cy's touch goes out once.
    app.engine().clock().advance(london_nine.0 - app.engine().now().0 + 1000);
    tick(&app).await;
    tick(&app).await;
    assert_eq!(receiver.for_profile(cy).len(), 1);
    let keys = receiver.keys();
    let mut unique = keys.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(keys.len(), unique.len(), "no delivery sent twice");

    // Reports and the audit trail.
    let (_, report) = app.get(&format!("/api/v1/campaigns/{first}/report")).await;
    assert_eq!(report["metrics"]["sent"], json!(2), "{report}");
    assert_eq!(report["suppressed"]["no_consent"], json!(1));
    let (_, report2) = app.get(&format!("/api/v1/campaigns/{second}/report")).await;
    // Ann was touched this morning; Cy's deferred touch later today holds her slot too.
    assert_eq!(report2["suppressed"]["daily_cap"], json!(2), "{report2}");
    let (_, audit) = app.get(&format!("/api/v1/campaigns/{first}/audit")).await;
    let actions: Vec<&str> = audit.as_array().unwrap().iter().map(|a| a["action"].as_str().unwrap()).collect();
    assert_eq!(actions[..4], ["created", "schedule", "started", "planned"], "{audit}");
    assert_eq!(audit[0]["actor"], json!("admin"));
    // A running campaign cannot be edited or scheduled again.
    let (s, e) = app.put(&format!("/api/v1/campaigns/{first}"), Some(&sms_campaign("edited"))).await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");
    let (s, _) = app.post(&format!("/api/v1/campaigns/{first}/actions/fly"), &json!({})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_contact_policy_end_to_end_sqlite() {
    policy_scenario(TestStore::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_contact_policy_end_to_end_postgres() {
    let Some(store) = TestStore::postgres().await else { return };
    policy_scenario(store).await;
}

/// Quiet hours are the customer's night: a customer who gave their own zone (the
/// `timezone` trait) is deferred by it, whatever their guide's store's zone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_hours_follow_a_customers_own_time_zone() {
    let receiver = Receiver::default();
    let app = spawn(TestStore::sqlite().await, &receiver, json!({})).await;
    // Eve's guide is in Shanghai but she lives in London; Fay's guide is in London but
    // she lives in Shanghai; Gus gave a zone that does not exist (his guide's counts).
    brand(&app, &[("eve", "g.sh", true), ("fay", "g.ldn", true), ("gus", "g.sh", true)]).await;
    for (user, tz) in [("eve", "Europe/London"), ("fay", "Asia/Shanghai"), ("gus", "Mars/Olympus")] {
        app.send("/v1/identify", &json!({"userId": user, "traits": {"timezone": tz}})).await;
    }
    app.settle_all().await;
    let morning = to_shanghai_morning(&app);
    let (eve, fay, gus) = (profile_id(&app, "eve").await, profile_id(&app, "fay").await, profile_id(&app, "gus").await);
    let (s, c) = app.post("/api/v1/campaigns", &sms_campaign("beans")).await;
    assert_eq!(s, StatusCode::CREATED, "{c}");
    let id = c["id"].as_i64().unwrap();
    let (_, preview) = app.post(&format!("/api/v1/campaigns/{id}/preview?sample=10"), &json!({})).await;
    assert_eq!((preview["would_send"].clone(), preview["deferred_by_quiet_hours"].clone()), (json!(3), json!(1)), "only Eve is asleep: {preview}");
    let (s, _) = app.post(&format!("/api/v1/campaigns/{id}/actions/schedule"), &json!({})).await;
    assert_eq!(s, StatusCode::OK);
    tick(&app).await;
    assert_eq!(receiver.for_profile(fay).len(), 1, "10:00 in Shanghai, where Fay is");
    assert_eq!(receiver.for_profile(gus).len(), 1, "an unknown zone falls back to the guide's");
    assert!(receiver.for_profile(eve).is_empty(), "02:00 or 03:00 in London, where Eve is");
    let due = Timestamp::parse_iso8601(deliveries(&app, eve).await[0]["due_at"].as_str().unwrap()).unwrap();
    let london_nine = next_local_time(morning, NaiveTime::from_hms_opt(9, 0, 0).unwrap(), zone(Some("Europe/London")));
    assert_eq!(due, london_nine, "deferred to 09:00 in her zone");
    app.shutdown().await;
}

async fn as_staff(app: &TestApp, token: &str, method: reqwest::Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    let mut req = app.client.request(method, app.url(path)).bearer_auth(token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    common::into_json(req.send().await.unwrap()).await
}

async fn tasks_scenario(store: TestStore) {
    let receiver = Receiver::default();
    let app = spawn(store, &receiver, json!({"policy": {"quiet_hours": null, "wecom_monthly_cap": 1}})).await;
    brand(&app, &[("ann", "g.sh", true), ("bo", "g.sh", true), ("cy", "g.ldn", true), ("ed", "g.ldn", true)]).await;
    app.put("/api/v1/staff/m.sh", Some(&json!({"name": "Manager", "store_id": "SH001", "role": "store_manager"}))).await;
    let s = app.store.store.clone();
    for (token, role, who) in [("tok-sh", "guide", "g.sh"), ("tok-ldn", "guide", "g.ldn"), ("tok-msh", "store_manager", "m.sh")] {
        s.run(move |db| Box::pin(async move { admin::add_token(db, token, role, Some(who), "test").await })).await.unwrap();
    }
    let mut spec = json!({"name": "wecom hello", "audience": {"segment": "cohort"}, "channel": "wecom",
                          "content": "{{ owner.name }} here: hello {{ traits.first_name }}", "task_deadline_hours": 4});
    let (_, c) = app.post("/api/v1/campaigns", &spec).await;
    let id = c["id"].as_i64().unwrap();
    let (_, preview) = app.post(&format!("/api/v1/campaigns/{id}/preview"), &json!({})).await;
    assert_eq!(preview["per_guide"], json!({"g.ldn": 2, "g.sh": 2}), "{preview}");
    assert_eq!(preview["tasks"], json!(2));
    app.post(&format!("/api/v1/campaigns/{id}/actions/schedule"), &json!({})).await;
    tick(&app).await;

    // Each guide sees their own task, with their own customers' rendered messages.
    let (s, mine) = as_staff(&app, "tok-sh", reqwest::Method::GET, "/api/v1/tasks", None).await;
    assert_eq!(s, StatusCode::OK, "{mine}");
    assert_eq!(mine.as_array().unwrap().len(), 1);
    let sh_task = mine[0]["id"].as_i64().unwrap();
    let (_, theirs) = as_staff(&app, "tok-ldn", reqwest::Method::GET, "/api/v1/tasks", None).await;
    let ldn_task = theirs[0]["id"].as_i64().unwrap();
    let (s, task) = as_staff(&app, "tok-sh", reqwest::Method::GET, &format!("/api/v1/tasks/{sh_task}"), None).await;
    assert_eq!(s, StatusCode::OK);
    let items = task["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert!(items.iter().any(|i| i["content"] == json!("Guide g.sh here: hello ANN")), "{task}");
    // …and nothing of another guide's.
    let (s, _) = as_staff(&app, "tok-sh", reqwest::Method::GET, &format!("/api/v1/tasks/{ldn_task}"), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let cy = profile_id(&app, "cy").await;
    let (s, _) = as_staff(&app, "tok-sh", reqwest::Method::GET, &format!("/api/v1/profiles/{cy}/deliveries"), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let ldn_item = {
        let (_, t) = app.get(&format!("/api/v1/tasks/{ldn_task}")).await;
        t["items"][0]["delivery_id"].as_i64().unwrap()
    };
    let (s, _) =
        as_staff(&app, "tok-sh", reqwest::Method::POST, &format!("/api/v1/tasks/{ldn_task}/items/{ldn_item}"), Some(json!({"action": "confirm"}))).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "a guide cannot confirm another guide's task");
    let (s, _) = as_staff(&app, "tok-sh", reqwest::Method::GET, "/api/v1/campaigns", None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    // The Shanghai guide confirms one and skips one: the task is done.
    let (a, b) = (items[0]["delivery_id"].as_i64().unwrap(), items[1]["delivery_id"].as_i64().unwrap());
    let (s, r) = as_staff(&app, "tok-sh", reqwest::Method::POST, &format!("/api/v1/tasks/{sh_task}/items/{a}"), Some(json!({"action": "confirm"}))).await;
    assert_eq!(s, StatusCode::OK, "{r}");
    assert_eq!(r["task"]["status"], json!("open"));
    let (s, e) = as_staff(&app, "tok-sh", reqwest::Method::POST, &format!("/api/v1/tasks/{sh_task}/items/{b}"), Some(json!({"action": "maybe"}))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    let (_, r) = as_staff(&app, "tok-sh", reqwest::Method::POST, &format!("/api/v1/tasks/{sh_task}/items/{b}"), Some(json!({"action": "skip"}))).await;
    assert_eq!(r["task"]["status"], json!("done"));

    // The London guide does nothing: reminded, then expired at the deadline.
    app.engine().clock().advance(3 * 3_600_000);
    tick(&app).await;
    let (_, t) = app.get(&format!("/api/v1/tasks/{ldn_task}")).await;
    assert!(t["reminded_at"].is_string(), "{t}");
    assert_eq!(t["status"], json!("open"));
    app.engine().clock().advance(2 * 3_600_000);
    tick(&app).await;
    let (_, t) = app.get(&format!("/api/v1/tasks/{ldn_task}")).await;
    assert_eq!(t["status"], json!("expired"));
    assert!(t["items"].as_array().unwrap().iter().all(|i| i["status"] == json!("expired")));

    // Completion per guide and per store; the manager sees only their store.
    let (_, by_guide) = app.get("/api/v1/tasks/completion?by=guide").await;
    let sh = by_guide.as_array().unwrap().iter().find(|c| c["key"] == json!("g.sh")).unwrap();
    assert_eq!((sh["confirmed"].as_i64(), sh["skipped"].as_i64(), sh["rate"].as_f64()), (Some(1), Some(1), Some(0.5)));
    let (s, by_store) = as_staff(&app, "tok-msh", reqwest::Method::GET, "/api/v1/tasks/completion?by=store", None).await;
    assert_eq!(s, StatusCode::OK, "{by_store}");
    assert_eq!(by_store.as_array().unwrap().len(), 1);
    assert_eq!(by_store[0]["key"], json!("SH001"));
    let (_, manager_tasks) = as_staff(&app, "tok-msh", reqwest::Method::GET, "/api/v1/tasks", None).await;
    assert_eq!(manager_tasks.as_array().unwrap().len(), 1);
    let (s, _) = as_staff(&app, "tok-sh", reqwest::Method::GET, "/api/v1/tasks/completion", None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // The manager is demoted to guide: the same token now sees only their own tasks.
    let (s, v) = app.put("/api/v1/staff/m.sh", Some(&json!({"name": "Manager", "store_id": "SH001", "role": "guide"}))).await;
    assert!(s.is_success(), "{v}");
    let (_, tasks) = as_staff(&app, "tok-msh", reqwest::Method::GET, "/api/v1/tasks", None).await;
    assert_eq!(tasks, json!([]), "a guide with no tasks of their own");
    let task_id = manager_tasks[0]["id"].as_i64().unwrap();
    let (s, _) = as_staff(&app, "tok-msh", reqwest::Method::GET, &format!("/api/v1/tasks/{task_id}"), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = as_staff(&app, "tok-msh", reqwest::Method::GET, "/api/v1/tasks/completion?by=store", None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    // WeCom's monthly receive cap (1 here): two days later, a second WeCom campaign
    // reaches nobody, and says so.
    spec["name"] = json!("second hello");
    app.engine().clock().advance(2 * 86_400_000);
    let second = launch(&app, &spec).await;
    tick(&app).await;
    let (_, report) = app.get(&format!("/api/v1/campaigns/{second}/report")).await;
    assert_eq!(report["suppressed"], json!({"wecom_monthly_cap": 4}), "{report}");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guide_tasks_and_their_scoping_sqlite() {
    tasks_scenario(TestStore::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guide_tasks_and_their_scoping_postgres() {
    let Some(store) = TestStore::postgres().await else { return };
    tasks_scenario(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_pauses_itself_when_customers_block() {
    let receiver = Receiver::default();
    let app = spawn(TestStore::sqlite().await, &receiver, json!({"policy": {"quiet_hours": null}})).await;
    let users: Vec<String> = (0..20).map(|i| format!("u{i}")).collect();
    let customers: Vec<(&str, &str, bool)> = users.iter().map(|u| (u.as_str(), "g.sh", true)).collect();
    brand(&app, &customers).await;
    let mut spec = sms_campaign("too much");
    spec["guardrail"] = json!({"max_block_rate": 0.1, "min_sends": 10, "block_window_days": 3});
    spec["holdout_percent"] = json!(0);
    let id = launch(&app, &spec).await;
    tick(&app).await;
    let (_, report) = app.get(&format!("/api/v1/campaigns/{id}/report")).await;
    assert_eq!(receiver.keys().len(), 20, "{report}");
    let (_, c) = app.get(&format!("/api/v1/campaigns/{id}")).await;
    assert_eq!(c["status"], json!("running"));
    // Three of twenty remove their guide right after: 15% > 10%.
    for u in &users[..3] {
        app.send("/v1/track", &json!({"userId": u, "event": "Contact Deleted", "properties": {"staff_userid": "g.sh"}})).await;
    }
    tick(&app).await;
    let (_, c) = app.get(&format!("/api/v1/campaigns/{id}")).await;
    assert_eq!(c["status"], json!("paused"), "{c}");
    let why = c["status_reason"].as_str().unwrap();
    assert!(why.contains("3 blocks") && why.contains("15.00%") && why.contains("exceed 10.00%"), "{why}");
    let (_, audit) = app.get(&format!("/api/v1/campaigns/{id}/audit")).await;
    assert_eq!(audit.as_array().unwrap().last().unwrap()["actor"], json!("guardrail"));
    let (_, report) = app.get(&format!("/api/v1/campaigns/{id}/report")).await;
    assert_eq!(report["metrics"]["blocks"], json!(3));
    app.shutdown().await;
}

/// Touches deferred by quiet hours are checked again when they are due: consent
/// withdrawn (flat or nested), a complaint, and a webhook that is down meanwhile.
async fn send_time_scenario(store: TestStore) {
    let receiver = Receiver::default();
    let app = spawn(store, &receiver, json!({})).await;
    brand(&app, &[("l1", "g.ldn", true), ("l2", "g.ldn", true), ("l3", "g.ldn", false), ("l4", "g.ldn", true)]).await;
    // Consent the Segment way, nested, counts.
    app.send("/v1/identify", &json!({"userId": "l3", "traits": {"consent": {"sms": true}}})).await;
    app.send("/v1/identify", &json!({"userId": "l4", "traits": {"phone": "138 1234 5678", "email": " L4@Example.com"}})).await;
    // l5 consented but gave no phone: an SMS cannot reach her.
    app.send("/v1/identify", &json!({"userId": "l5", "traits": {"first_name": "L5", "cohort": "test", "consent.sms": true}})).await;
    app.send("/v1/track", &json!({"userId": "l5", "event": "Contact Added", "properties": {"staff_userid": "g.ldn"}})).await;
    app.settle_all().await;
    let morning = to_shanghai_morning(&app);
    let london_nine = next_local_time(morning, NaiveTime::from_hms_opt(9, 0, 0).unwrap(), zone(Some("Europe/London")));
    let ids = [profile_id(&app, "l1").await, profile_id(&app, "l2").await, profile_id(&app, "l3").await, profile_id(&app, "l4").await];
    launch(&app, &sms_campaign("night")).await;
    tick(&app).await;
    for p in ids {
        let d = &deliveries(&app, p).await[0];
        assert_eq!((d["status"].as_str(), d["reason"].as_str()), (Some("queued"), Some("deferred_quiet_hours")), "{d}");
        assert_eq!(Timestamp::parse_iso8601(d["due_at"].as_str().unwrap()).unwrap(), london_nine);
    }

    // Overnight: l1 withdraws consent, l2 complains, l3 withdraws the nested way.
    app.send("/v1/identify", &json!({"userId": "l1", "traits": {"consent.sms": false}})).await;
    app.send("/v1/track", &json!({"userId": "l2", "event": "Message Complained"})).await;
    app.send("/v1/identify", &json!({"userId": "l3", "traits": {"consent": {"sms": false}}})).await;
    app.settle_all().await;
    let outreach = &app.running.as_ref().unwrap().state.outreach;
    assert_eq!(outreach.ledger.lock().await.count(ids[0] as u32, london_nine, DAY_MS, None), 1, "l1's slot is held while queued");

    // Morning in London, and the gateway is down.
    app.engine().clock().advance(london_nine.0 - app.engine().now().0 + 1000);
    receiver.down.store(true, std::sync::atomic::Ordering::SeqCst);
    tick(&app).await;
    let status = |d: &Value| (d["status"].as_str().map(str::to_string), d["reason"].as_str().map(str::to_string));
    let stopped = [(ids[0], "no_consent"), (ids[1], "block_cooldown"), (ids[2], "no_consent")];
    for (p, why) in stopped {
        assert_eq!(status(&deliveries(&app, p).await[0]), (Some("suppressed".into()), Some(why.into())), "profile {p}");
        assert_eq!(outreach.ledger.lock().await.count(p as u32, london_nine, DAY_MS, None), 0, "the slot is released");
    }
    let l5 = profile_id(&app, "l5").await;
    assert_eq!(status(&deliveries(&app, l5).await[0]), (Some("failed".into()), Some("no_address".into())));
    assert_eq!(outreach.ledger.lock().await.count(l5 as u32, london_nine, DAY_MS, None), 0, "its slot is released");
    let waiting = deliveries(&app, ids[3]).await[0].clone();
    assert_eq!(status(&waiting), (Some("queued".into()), Some("retrying_webhook".into())));
    assert!(waiting["content"].as_str().unwrap().starts_with("L4, LDN01 store"), "rendered once and stored: {waiting}");

    // Her name changes before the gateway is back: the touch goes out as first rendered.
    app.send("/v1/identify", &json!({"userId": "l4", "traits": {"first_name": "CHANGED"}})).await;
    app.settle_all().await;
    receiver.down.store(false, std::sync::atomic::Ordering::SeqCst);
    tick(&app).await;
    let got = receiver.got.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "only l4's touch is sent: {got:?}");
    assert_eq!(got[0]["content"], waiting["content"]);
    assert_eq!(got[0]["to"]["phone"], json!("+8613812345678"), "{}", got[0]);
    assert_eq!(got[0]["to"]["email"], json!("l4@example.com"));
    assert_eq!(got[0]["to"]["user_id"], json!("l4"));
    assert!(got[0]["to"]["phone_hash"].is_string());
    assert_eq!(status(&deliveries(&app, ids[3]).await[0]), (Some("sent".into()), None));
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_touches_are_checked_again_when_sent_sqlite() {
    send_time_scenario(TestStore::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_touches_are_checked_again_when_sent_postgres() {
    let Some(store) = TestStore::postgres().await else { return };
    send_time_scenario(store).await;
}

/// Two customers with a touch each from one campaign, queued for the morning, turn
/// out to be one person: the touches follow the survivor, who gets one of them; the
/// other shows as suppressed `merged` on the survivor's timeline.
async fn merge_scenario(store: TestStore) {
    let receiver = Receiver::default();
    let app = spawn(store, &receiver, json!({})).await;
    brand(&app, &[("m1", "g.ldn", true), ("m2", "g.ldn", true)]).await;
    let morning = to_shanghai_morning(&app);
    let london_nine = next_local_time(morning, NaiveTime::from_hms_opt(9, 0, 0).unwrap(), zone(Some("Europe/London")));
    let (m1, m2) = (profile_id(&app, "m1").await, profile_id(&app, "m2").await);
    launch(&app, &sms_campaign("merge")).await;
    tick(&app).await;
    for p in [m1, m2] {
        assert_eq!(deliveries(&app, p).await[0]["reason"], json!("deferred_quiet_hours"));
    }
    app.send("/v1/alias", &json!({"previousId": "m2", "userId": "m1"})).await;
    app.settle_all().await;
    let (_, survivor) = app.lookup("user_id=m2").await;
    assert_eq!(survivor["id"].as_i64(), Some(m1), "m2 merged into the older m1: {survivor}");

    app.engine().clock().advance(london_nine.0 - app.engine().now().0 + 1000);
    tick(&app).await;
    assert_eq!(receiver.got.lock().unwrap().len(), 1, "one person, one touch");
    let mut settled: Vec<(String, Option<String>)> =
        deliveries(&app, m1).await.iter().map(|d| (d["status"].as_str().unwrap().to_string(), d["reason"].as_str().map(str::to_string))).collect();
    settled.sort();
    assert_eq!(settled, vec![("sent".to_string(), None), ("suppressed".to_string(), Some("merged".to_string()))]);
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merged_customers_touches_follow_them_sqlite() {
    merge_scenario(TestStore::sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merged_customers_touches_follow_them_postgres() {
    let Some(store) = TestStore::postgres().await else { return };
    merge_scenario(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holdout_groups_measure_lift() {
    let receiver = Receiver::default();
    let app = spawn(TestStore::sqlite().await, &receiver, json!({"policy": {"quiet_hours": null}})).await;
    let users: Vec<String> = (0..200).map(|i| format!("h{i}")).collect();
    let customers: Vec<(&str, &str, bool)> = users.iter().map(|u| (u.as_str(), "g.sh", true)).collect();
    brand(&app, &customers).await;
    let mut spec = sms_campaign("lift");
    spec["holdout_percent"] = json!(25);
    let id = launch(&app, &spec).await;
    tick(&app).await;
    let (_, report) = app.get(&format!("/api/v1/campaigns/{id}/report")).await;
    let held = report["suppressed"]["holdout"].as_u64().unwrap();
    assert!((25..80).contains(&held), "about a quarter held out: {report}");
    assert_eq!(report["metrics"]["sent"].as_u64().unwrap() + held, 200);
    // Everyone who got the message orders; nobody held out does.
    let mut user_of = std::collections::HashMap::new();
    for u in &users {
        user_of.insert(profile_id(&app, u).await, u.clone());
    }
    let got = receiver.got.lock().unwrap().clone();
    for d in got {
        let user = &user_of[&d["profile_id"].as_i64().unwrap()];
        app.send("/v1/track", &json!({"userId": user, "event": "Order Completed", "properties": {"revenue_fen": 1500}})).await;
    }
    app.settle_all().await;
    let (_, report) = app.get(&format!("/api/v1/campaigns/{id}/report")).await;
    assert_eq!(report["lift"]["sent_converted"], report["lift"]["sent"], "{report}");
    assert_eq!(report["lift"]["holdout_converted"], json!(0));
    assert!((report["lift"]["lift_points"].as_f64().unwrap() - 100.0).abs() < 1e-9);
    assert_eq!(report["lift"]["holdout"].as_u64().unwrap(), held, "both group sizes are reported");
    let ci = report["lift"]["lift_ci95"].as_array().unwrap();
    assert!(ci[0].as_f64().unwrap() <= 100.0 && ci[1].as_f64().unwrap() >= 100.0, "{report}");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journey_welcomes_waits_branches_and_exits() {
    let receiver = Receiver::default();
    let app = spawn(TestStore::sqlite().await, &receiver, json!({"policy": {"quiet_hours": null, "caps": {"daily": 5, "weekly": 10}}})).await;
    brand(&app, &[("ann", "g.sh", true)]).await;
    let journey = json!({"spec": {
    "name": "welcome",
    "trigger": {"event": {"event": "Signed Up"}},
    "exit_on": {"event": "Order Completed"},
    "reentry": "once",
    "steps": [
        {"send": {"channel": "sms", "content": "Welcome {{ traits.first_name }}"}},
        {"tag": {"add": "welcomed"}},
        {"wait": {"hours": 24}},
        {"branch": {"rule": "consent(sms)", "then": 4, "otherwise": 5}},
        {"send": {"channel": "sms", "content": "Day two, {{ traits.first_name }}"}},
        {"coupon": {"code": "WELCOME"}},
        {"wait": {"hours": 24}},
        {"send": {"channel": "sms", "content": "Day three"}}
    ]}});
    let (s, j) = app.post("/api/v1/journeys", &journey).await;
    assert_eq!(s, StatusCode::OK, "{j}");
    let (s, e) = app
        .post(
            "/api/v1/journeys",
            &json!({"spec": {"name": "bad", "trigger": {"event": {"event": "X"}}, "steps": [{"branch": {"rule": "city = ", "then": 1}}]}}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    let jid = j["id"].as_i64().unwrap();
    tick(&app).await; // the runner starts reading events from here on

    app.send("/v1/track", &json!({"userId": "ann", "event": "Signed Up"})).await;
    tick(&app).await;
    tick(&app).await;
    let ann = profile_id(&app, "ann").await;
    assert_eq!(receiver.for_profile(ann).len(), 1);
    assert_eq!(receiver.for_profile(ann)[0]["content"], json!("Welcome ANN"));
    let (_, p) = app.get(&format!("/api/v1/profiles/{ann}")).await;
    assert!(p["tags"].to_string().contains("welcomed"), "{p}");
    let (_, v) = app.get(&format!("/api/v1/profiles/{ann}/deliveries")).await;
    assert_eq!(v["journeys"][0]["step"], json!(3), "waiting before step 3: {v}");

    // A second trigger does not re-enter (once), a day later the journey goes on.
    app.send("/v1/track", &json!({"userId": "ann", "event": "Signed Up"})).await;
    app.engine().clock().advance(86_400_000 + 1000);
    tick(&app).await;
    tick(&app).await;
    app.settle_all().await;
    assert_eq!(receiver.for_profile(ann).len(), 2);
    assert_eq!(receiver.for_profile(ann)[1]["content"], json!("Day two, ANN"));
    let (_, events) = app.get(&format!("/api/v1/profiles/{ann}/events")).await;
    assert!(events.to_string().contains("Coupon Issued"), "{events}");

    // She orders: she leaves the journey before day three.
    app.send("/v1/track", &json!({"userId": "ann", "event": "Order Completed", "properties": {"revenue_fen": 1800}})).await;
    tick(&app).await;
    app.engine().clock().advance(86_400_000 + 1000);
    tick(&app).await;
    assert_eq!(receiver.for_profile(ann).len(), 2, "no day-three message after ordering");
    let (_, j) = app.get(&format!("/api/v1/journeys/{jid}")).await;
    assert_eq!(j["customers"], json!({"exited": 1}), "{j}");
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_ships_journeys_and_a_broadcast_whose_dry_run_explains_everyone() {
    let store = TestStore::sqlite().await;
    siyu_demo::generate_into(&store.store, 6_000, 11, None, false).await.unwrap();
    let app = TestApp::spawn(store).await;
    let (_, journeys) = app.get("/api/v1/journeys").await;
    let names: Vec<&str> = journeys.as_array().unwrap().iter().map(|j| j["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["新客欢迎 Welcome", "豆子复购 Bean reminder"]);
    let (s, p) = app.post("/api/v1/campaigns/1/preview?sample=5", &json!({})).await;
    assert_eq!(s, StatusCode::OK, "{p}");
    let audience = p["audience"].as_u64().unwrap();
    assert!(audience > 50, "{p}");
    let suppressed: u64 = p["suppressed"].as_array().unwrap().iter().map(|s| s["count"].as_u64().unwrap()).sum();
    assert_eq!(p["would_send"].as_u64().unwrap() + suppressed, audience, "everyone is either sent to or explained: {p}");
    for s in p["suppressed"].as_array().unwrap() {
        assert!(!s["why"].as_str().unwrap().is_empty(), "{s}");
    }
    let per_guide: u64 = p["per_guide"].as_object().unwrap().values().map(|n| n.as_u64().unwrap()).sum();
    assert_eq!(per_guide, p["would_send"].as_u64().unwrap());
    for m in p["sample"].as_array().unwrap() {
        let text = m["content"].as_str().unwrap();
        assert!(text.contains("AUTUMN-") && !text.contains("{{"), "{text}");
    }
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn date_segment_and_recurring_triggers() {
    let receiver = Receiver::default();
    let app = spawn(TestStore::sqlite().await, &receiver, json!({"policy": {"quiet_hours": null, "caps": {"daily": 10, "weekly": 20}}})).await;
    brand(&app, &[("bea", "g.sh", true), ("cal", "g.sh", true)]).await;
    let today = app.engine().now().to_datetime().with_timezone(&zone(None)).date_naive();
    let birthday = format!("1990-{}", today.format("%m-%d"));
    app.send("/v1/identify", &json!({"userId": "bea", "traits": {"birthday": birthday}})).await;
    app.send(
        "/v1/identify",
        &json!({"userId": "cal", "traits": {"birthday": "1990-01-01", "child_birth_date": (today - chrono::Duration::days(180)).to_string()}}),
    )
    .await;
    app.settle_all().await;
    let journeys = [
        json!({"spec": {"name": "birthday", "trigger": {"date": {"trait": "birthday", "yearly": true}}, "reentry": {"after_days": 300},
            "steps": [{"send": {"channel": "sms", "content": "生日快乐 {{ traits.first_name }}"}}]}}),
        json!({"spec": {"name": "six months", "trigger": {"date": {"trait": "child_birth_date", "offset_days": 180}},
            "steps": [{"send": {"channel": "sms", "content": "宝宝半岁啦"}}]}}),
        json!({"spec": {"name": "vip welcome", "trigger": {"segment_entered": "vip"},
            "steps": [{"send": {"channel": "sms", "content": "欢迎成为会员"}}]}}),
    ];
    for j in &journeys {
        let (s, v) = app.post("/api/v1/journeys", j).await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    app.post("/api/v1/segments", &json!({"name": "vip", "rule": "tag = \"vip\""})).await;
    tick(&app).await;
    tick(&app).await;
    let (bea, cal) = (profile_id(&app, "bea").await, profile_id(&app, "cal").await);
    let texts = |p: i64| receiver.for_profile(p).iter().map(|d| d["content"].as_str().unwrap().to_string()).collect::<Vec<_>>();
    assert_eq!(texts(bea), ["生日快乐 BEA"]);
    assert_eq!(texts(cal), ["宝宝半岁啦"]);
    // Later the same day: nobody enters twice.
    tick(&app).await;
    assert_eq!(receiver.keys().len(), 2);

    // Entering a segment triggers its journey (through the `Segment Entered` event).
    app.put(&format!("/api/v1/profiles/{cal}/tags/vip"), None).await;
    app.settle_all().await;
    app.engine().tick().await.unwrap();
    app.settle_all().await;
    tick(&app).await;
    tick(&app).await;
    assert_eq!(texts(cal), ["宝宝半岁啦", "欢迎成为会员"]);

    // A campaign every 7 days runs again a week later, with new idempotency keys.
    let mut spec = sms_campaign("weekly");
    spec["schedule"] = json!({"every_days": 7});
    let id = launch(&app, &spec).await;
    tick(&app).await;
    let (_, c) = app.get(&format!("/api/v1/campaigns/{id}")).await;
    assert_eq!((c["status"].as_str(), c["runs"].as_i64()), (Some("scheduled"), Some(1)), "{c}");
    app.engine().clock().advance(7 * 86_400_000 + 1000);
    tick(&app).await;
    let (_, c) = app.get(&format!("/api/v1/campaigns/{id}")).await;
    assert_eq!(c["runs"], json!(2));
    let weekly: Vec<String> = receiver.keys().into_iter().filter(|k| k.starts_with(&format!("campaign:{id}:"))).collect();
    assert_eq!(weekly.len(), 4, "two customers, two runs: {weekly:?}");
    app.shutdown().await;
}
