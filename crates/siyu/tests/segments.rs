//! Live segments over HTTP: preview, definitions, members, exports, and the
//! Segment Entered / Exited events that membership changes produce. Both backends.

mod common;

use reqwest::StatusCode;
use serde_json::{Value, json};
use siyu_core::Timestamp;

use common::TestApp;

async fn order(app: &TestApp, user: &str, days_ago: i64, category: &str) {
    let ts = Timestamp(Timestamp::now().0 - days_ago * 86_400_000).to_rfc3339();
    let (status, body) = app
        .send(
            "/v1/track",
            &json!({"userId": user, "event": "Order Completed", "timestamp": ts,
            "properties": {"revenue_fen": 2900, "category": category}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

async fn timeline_names(app: &TestApp, user: &str) -> Vec<String> {
    let (_, p) = app.lookup(&format!("user_id={user}")).await;
    let (_, page) = app.get(&format!("/api/v1/profiles/{}/events?limit=100", p["id"])).await;
    page["events"].as_array().unwrap().iter().filter_map(|e| e["name"].as_str().map(String::from)).collect()
}

app_test!(preview_counts_samples_and_times_a_rule_in_either_form, |app| {
    for (u, city) in [("a", "Shanghai"), ("b", "Shanghai"), ("c", "Beijing")] {
        app.send("/v1/identify", &json!({"userId": u, "traits": {"city": city, "language": "Cantonese"}})).await;
    }
    order(&app, "a", 3, "coffee").await;
    order(&app, "a", 10, "beans").await;
    order(&app, "b", 40, "coffee").await;
    app.settle_all().await;
    let text = r#"city = "Shanghai" and count(Order Completed, 30d) >= 2"#;
    let (status, p) = app.post("/api/v1/segments/preview", &json!({"rule": text})).await;
    assert_eq!(status, StatusCode::OK, "{p}");
    assert_eq!(p["count"], json!(1));
    assert_eq!(p["sample"][0]["user_id"], json!("a"));
    assert!(p["took_ms"].as_f64().unwrap() >= 0.0);
    assert_eq!(p["rule_text"], json!(r#"city = "Shanghai" and count("Order Completed", 30d) >= 2"#));
    let (_, same) = app.post("/api/v1/segments/preview", &json!({"rule": p["rule"]})).await;
    assert_eq!(same["count"], json!(1), "the JSON form counts the same");
    // A property filter on an aggregate nobody used yet is indexed on first use.
    let (_, beans) = app.post("/api/v1/segments/preview", &json!({"rule": r#"count(Order Completed where category = "beans", 90d) >= 1"#})).await;
    assert_eq!(beans["count"], json!(1));
    let (_, lang) = app.post("/api/v1/segments/preview", &json!({"rule": r#"language = "Cantonese""#})).await;
    assert_eq!(lang["count"], json!(3), "a trait first used now is indexed from the store");

    let (status, err) = app.post("/api/v1/segments/preview", &json!({"rule": r#"city = "Shanghai" and count(Order Completed, 30x) >= 2"#})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(err["error"]["code"], json!("invalid_rule"));
    let message = err["error"]["message"].as_str().unwrap();
    assert!(message.contains("not a duration") && message.contains("column 46"), "{err}");
    let (status, err) = app.post("/api/v1/segments/preview", &json!({"rule": {"and": [{"field": "stage", "op": "=", "value": "gold"}]}})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(err["error"]["message"].as_str().unwrap().contains("rule.and[0]"), "{err}");
    let (status, err) = app.post("/api/v1/segments/preview", &json!({"rule": r#"segment = "nope""#})).await;
    assert_eq!((status, err["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("unknown_segment")));
});

app_test!(live_membership_produces_entered_and_exited_events, |app| {
    let (status, s) = app
        .post(
            "/api/v1/segments",
            &json!({"name": "regulars", "description": "two orders in a month",
            "rule": r#"count(Order Completed, 30d) >= 2 and not tag = "staff""#}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{s}");
    assert_eq!(s["members"], json!(0));
    order(&app, "u1", 2, "coffee").await;
    app.settle_all().await;
    let (_, s) = app.get("/api/v1/segments/regulars").await;
    assert_eq!(s["members"], json!(0));
    order(&app, "u1", 1, "coffee").await;
    app.settle_all().await;
    let (_, s) = app.get("/api/v1/segments/regulars").await;
    assert_eq!(s["members"], json!(1), "visible right after the event");
    assert!(timeline_names(&app, "u1").await.contains(&"Segment Entered".to_string()));
    let (_, p) = app.lookup("user_id=u1").await;
    assert_eq!(p["segments"], json!(["regulars"]));
    assert_eq!(p["lifecycle"]["stage"], json!("repeat"));
    // A manual tag takes them out again.
    app.put(&format!("/api/v1/profiles/{}/tags/staff", p["id"]), None).await;
    app.settle_all().await;
    let (_, s) = app.get("/api/v1/segments/regulars").await;
    assert_eq!(s["members"], json!(0));
    let names = timeline_names(&app, "u1").await;
    assert!(names.contains(&"Segment Exited".to_string()), "{names:?}");
    // Duplicates are not stored twice, and the event says which segment.
    let (_, page) = app.get(&format!("/api/v1/profiles/{}/events", p["id"])).await;
    let entered: Vec<&Value> = page["events"].as_array().unwrap().iter().filter(|e| e["name"] == "Segment Entered").collect();
    assert_eq!(entered.len(), 1);
    assert_eq!(entered[0]["payload"], json!({"segment": "regulars"}));
});

app_test!(time_moves_customers_between_segments_without_events, |app| {
    app.post("/api/v1/segments", &json!({"name": "drifting", "rule": r#"last(Order Completed) < ago(30d) and stage = "at_risk""#})).await;
    order(&app, "u2", 20, "coffee").await;
    app.settle_all().await;
    let (_, s) = app.get("/api/v1/segments/drifting").await;
    assert_eq!(s["members"], json!(0));
    assert_eq!(s["time_dependent"], json!(true));
    // Eleven days later, nothing has happened: the minute tick notices.
    app.engine().clock().advance(11 * 86_400_000);
    app.engine().tick().await.unwrap();
    app.settle_all().await;
    let (_, s) = app.get("/api/v1/segments/drifting").await;
    assert_eq!(s["members"], json!(1));
    assert!(timeline_names(&app, "u2").await.contains(&"Segment Entered".to_string()));
});

app_test!(segments_of_segments_members_and_exports, |app| {
    for i in 0..25 {
        app.send(
            "/v1/identify",
            &json!({"userId": format!("m{i:02}"), "traits": {"city": if i % 5 == 0 { "Beijing" } else { "Shanghai" }, "name": format!("顾客,{i}")}}),
        )
        .await;
    }
    app.settle_all().await;
    let (status, _) = app.post("/api/v1/segments", &json!({"name": "sh", "rule": {"field": "traits.city", "op": "=", "value": "Shanghai"}})).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, sub) = app.post("/api/v1/segments", &json!({"name": "sh_new", "rule": r#"segment = "sh" and not has(wecom)"#})).await;
    assert_eq!(status, StatusCode::CREATED, "{sub}");
    assert_eq!(sub["members"], json!(20));
    let (status, body) = app.put("/api/v1/segments/sh", Some(&json!({"rule": r#"segment = "sh_new""#}))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::CONFLICT, Some("segment_conflict")), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("sh → sh_new → sh"), "{body}");
    let (status, _) = app.delete("/api/v1/segments/sh").await;
    assert_eq!(status, StatusCode::CONFLICT, "sh_new still uses it");
    let (status, _) = app.post("/api/v1/segments", &json!({"name": "sh", "rule": "city exists"})).await;
    assert_eq!(status, StatusCode::CONFLICT, "names are unique");

    let mut seen = Vec::new();
    let mut path = "/api/v1/segments/sh_new/members?limit=8".to_string();
    loop {
        let (status, page) = app.get(&path).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        assert_eq!(page["total"], json!(20));
        seen.extend(page["members"].as_array().unwrap().iter().map(|m| m["user_id"].as_str().unwrap().to_string()));
        match page["next"].as_i64() {
            Some(n) => path = format!("/api/v1/segments/sh_new/members?limit=8&after={n}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), 20);
    let csv = app.client.get(app.url("/api/v1/segments/sh_new/export")).bearer_auth(common::ADMIN_TOKEN).send().await.unwrap();
    assert_eq!(csv.headers()["content-type"], "text/csv; charset=utf-8");
    let text = csv.text().await.unwrap();
    assert_eq!(text.lines().count(), 21, "{text}");
    assert!(text.starts_with("id,uuid,user_id,name,city,phone\n"));
    assert!(text.contains("\"顾客,1\""), "commas are quoted: {text}");
    let jsonl =
        app.client.get(app.url("/api/v1/segments/sh_new/export?format=jsonl")).bearer_auth(common::ADMIN_TOKEN).send().await.unwrap().text().await.unwrap();
    let rows: Vec<Value> = jsonl.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 20);
    assert_eq!(rows[0]["city"], json!("Shanghai"));
    let (status, _) = app.get("/api/v1/segments/sh_new/export?format=xml").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let (_, all) = app.get("/api/v1/profiles?limit=10").await;
    assert_eq!(all["total"], json!(25));
    assert_eq!(all["profiles"].as_array().unwrap().len(), 10);
    let (status, _) = app.delete("/api/v1/segments/sh_new").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = app.delete("/api/v1/segments/sh").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, list) = app.get("/api/v1/segments").await;
    assert_eq!(list, json!([]));
});

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn segments_and_changes_while_down_survive_a_restart() {
    let store = siyu_store::testing::TestStore::sqlite().await;
    let app = TestApp::spawn(store).await;
    app.post("/api/v1/segments", &json!({"name": "gold", "rule": r#"tier = "gold""#})).await;
    app.send("/v1/identify", &json!({"userId": "g1", "traits": {"tier": "gold"}})).await;
    app.settle_all().await;
    app.engine().tick().await.unwrap(); // saves the members
    let store = app.store;
    let running = app.running.unwrap();
    running.stop().await;
    // While Siyu is down, an import changes a member's tier.
    let f = store.dir.path().join("c.csv");
    std::fs::write(&f, "user_id,tier\ng1,silver\n").unwrap();
    siyu::cli::import::run(&store.store, siyu::cli::import::ImportKind::Customers, &f, siyu::cli::import::ImportOptions { strict: false, progress: false })
        .await
        .unwrap();
    let app = TestApp::spawn(store).await;
    app.settle_all().await;
    let (_, s) = app.get("/api/v1/segments/gold").await;
    assert_eq!(s["members"], json!(0));
    assert!(timeline_names(&app, "g1").await.contains(&"Segment Exited".to_string()), "the change while down is reported at start");
    app.shutdown().await;
}
