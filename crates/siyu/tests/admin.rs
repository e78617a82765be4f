//! The admin API over real HTTP: authentication, lookups, timelines, tags,
//! organisation, staff scoping, OpenAPI, metrics. Both backends.

mod common;

use reqwest::StatusCode;
use serde_json::{Value, json};
use siyu_store::admin;

use common::ADMIN_TOKEN;

/// Every admin route, with a method, as a client would call it.
const ADMIN_ROUTES: &[(&str, &str)] = &[
    ("GET", "/api/v1/profiles/lookup?user_id=u1"),
    ("GET", "/api/v1/profiles/1"),
    ("GET", "/api/v1/profiles/1/events"),
    ("PUT", "/api/v1/profiles/1/tags/vip"),
    ("DELETE", "/api/v1/profiles/1/tags/vip"),
    ("GET", "/api/v1/stats"),
    ("GET", "/api/v1/ingest"),
    ("GET", "/api/v1/stores"),
    ("GET", "/api/v1/stores/SH001"),
    ("PUT", "/api/v1/stores/SH001"),
    ("GET", "/api/v1/staff"),
    ("GET", "/api/v1/staff/g1"),
    ("PUT", "/api/v1/staff/g1"),
    ("GET", "/api/v1/staff/g1/customers"),
];

app_test!(every_admin_route_needs_a_valid_token, |app| {
    for (method, path) in ADMIN_ROUTES {
        for token in [None, Some("wrong-token"), Some("")] {
            let mut req = app.client.request(method.parse().unwrap(), app.url(path)).json(&json!({}));
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            let (status, body) = common::into_json(req.send().await.unwrap()).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path} with {token:?}: {body}");
            assert_eq!(body["error"]["code"], json!("unauthorized"));
        }
    }
    // The OpenAPI document lists them all, and the tracking API.
    let (status, doc) = common::into_json(app.client.get(app.url("/api/openapi.json")).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    for path in ["/v1/track", "/v1/batch", "/api/v1/profiles/lookup", "/api/v1/profiles/{id}/events", "/api/v1/staff/{userid}/customers"] {
        assert!(doc["paths"].get(path).is_some(), "{path} missing from the OpenAPI document");
    }
    assert!(doc["components"]["securitySchemes"].get("bearer").is_some());
    assert!(doc["paths"].get("/v1/import").is_some(), "Segment's older batch endpoint is documented");
    // Every admin operation documents its 401 and 400 answers.
    for (path, item) in doc["paths"].as_object().unwrap().iter().filter(|(p, _)| p.starts_with("/api/")) {
        for (method, op) in item.as_object().unwrap() {
            for code in ["400", "401"] {
                assert!(op["responses"].get(code).is_some(), "{method} {path} does not document {code}");
            }
        }
    }
    // A rule is either form: generated clients can send the text or the tree.
    let rule = &doc["components"]["schemas"]["SegmentInput"]["properties"]["rule"];
    let kinds: Vec<&str> = rule["oneOf"].as_array().unwrap_or_else(|| panic!("{rule}")).iter().map(|s| s["type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["string", "object"]);
    // Statuses, kinds, channels and roles are enums a generated client can switch on.
    for (schema, values) in [
        ("DeliveryStatus", &["queued", "pending_staff", "confirmed", "skipped", "expired", "sent", "failed", "suppressed"][..]),
        ("TouchKind", &["marketing", "service"]),
        ("Channel", &["wecom", "sms", "email", "official_account", "webhook"]),
        ("StaffRole", &["guide", "store_manager", "operator"]),
        ("CampaignStatus", &["draft", "scheduled", "running", "paused", "completed"]),
    ] {
        let listed = &doc["components"]["schemas"][schema]["enum"];
        assert_eq!(listed, &json!(values), "{schema} in the OpenAPI document");
    }
    let delivery = &doc["components"]["schemas"]["DeliveryRow"]["properties"];
    assert_eq!(delivery["status"]["$ref"], "#/components/schemas/DeliveryStatus", "{delivery}");
    assert_eq!(delivery["profile_id"]["$ref"], "#/components/schemas/ProfileId", "{delivery}");
    assert_eq!(doc["components"]["schemas"]["ProfileId"]["type"], "integer");
});

app_test!(lookup_finds_a_profile_by_any_identity, |app| {
    app.send(
        "/v1/identify",
        &json!({"userId": "u1", "anonymousId": "a1", "traits": {"name": "周航", "phone": "+86 137 0000 1234"},
        "context": {"externalIds": [
            {"id": "wmZ1", "type": "external_userid"}, {"id": "unZ1", "type": "unionid"},
            {"id": "opZ1", "type": "openid", "appId": "wxapp"}, {"id": "VIP-9", "type": "member_no"}]}}),
    )
    .await;
    let (_, p) = app.lookup("user_id=u1").await;
    for q in [
        "anonymous_id=a1",
        "external_userid=wmZ1",
        "unionid=unZ1",
        "openid=opZ1&app_id=wxapp",
        "openid=wxapp:opZ1",
        "member_no=VIP-9",
        "phone=13700001234",
        "phone=%2B8613700001234",
        "phone=0086-137-0000-1234",
    ] {
        let (status, found) = app.lookup(q).await;
        assert_eq!(status, StatusCode::OK, "{q}: {found}");
        assert_eq!(found["id"], p["id"], "{q}");
    }
    let (status, by_uuid) = app.get(&format!("/api/v1/profiles/{}", p["uuid"].as_str().unwrap())).await;
    assert_eq!((status, &by_uuid["id"]), (StatusCode::OK, &p["id"]));
    for (q, status, code) in [
        ("", StatusCode::BAD_REQUEST, "missing_identity"),
        ("fax=0211234567", StatusCode::BAD_REQUEST, "unknown_identity"),
        ("email=not-an-address", StatusCode::BAD_REQUEST, "invalid_identity"),
        ("email=a%40b.c", StatusCode::NOT_FOUND, "not_found"),
        ("user_id=u1&anonymous_id=a1", StatusCode::BAD_REQUEST, "ambiguous_lookup"),
        ("phone=not-a-phone", StatusCode::BAD_REQUEST, "invalid_identity"),
        ("openid=opZ1", StatusCode::BAD_REQUEST, "invalid_identity"),
        ("user_id=nobody", StatusCode::NOT_FOUND, "not_found"),
    ] {
        let (got, body) = app.lookup(q).await;
        assert_eq!(got, status, "{q}: {body}");
        assert_eq!(body["error"]["code"], json!(code), "{q}");
    }
    let (status, _) = app.get("/api/v1/profiles/999999").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
});

app_test!(the_timeline_pages_over_http, |app| {
    let batch: Vec<Value> = (0..120)
        .map(|i| {
            json!({"type": "track", "userId": "busy", "event": "Product Viewed", "properties": {"n": i},
                        "timestamp": format!("2026-01-01T00:{:02}:{:02}Z", i / 60, i % 60)})
        })
        .collect();
    app.send("/v1/batch", &json!({"batch": batch})).await;
    let (_, p) = app.lookup("user_id=busy").await;
    let id = p["id"].as_i64().unwrap();
    let mut seen = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let path = match &next {
            None => format!("/api/v1/profiles/{id}/events?limit=50"),
            Some(c) => format!("/api/v1/profiles/{id}/events?limit=50&before={c}"),
        };
        let (status, page) = app.get(&path).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        for e in page["events"].as_array().unwrap() {
            seen.push(e["payload"]["n"].as_i64().unwrap());
        }
        match page["next"].as_str() {
            Some(c) => next = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, (0..120).rev().collect::<Vec<_>>());
    let (status, body) = app.get(&format!("/api/v1/profiles/{id}/events?limit=0")).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_limit")));
    let (status, _) = app.get(&format!("/api/v1/profiles/{id}/events?before=garbage")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
});

app_test!(manual_tags_are_added_and_removed, |app| {
    app.send("/v1/identify", &json!({"userId": "t1"})).await;
    let (_, p) = app.lookup("user_id=t1").await;
    let id = p["id"].as_i64().unwrap();
    let (status, body) = app.put(&format!("/api/v1/profiles/{id}/tags/%E8%AF%B4%E7%B2%A4%E8%AF%AD"), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"profile_id": id, "tag": "说粤语", "changed": true}));
    let (_, again) = app.put(&format!("/api/v1/profiles/{id}/tags/%E8%AF%B4%E7%B2%A4%E8%AF%AD"), None).await;
    assert_eq!(again["changed"], json!(false));
    let (_, p) = app.lookup("user_id=t1").await;
    assert_eq!(p["tags"], json!(["说粤语"]));
    let (status, _) = app.delete(&format!("/api/v1/profiles/{id}/tags/%E8%AF%B4%E7%B2%A4%E8%AF%AD")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = app.delete(&format!("/api/v1/profiles/{id}/tags/%E8%AF%B4%E7%B2%A4%E8%AF%AD")).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")));
    let long = "x".repeat(65);
    let (status, body) = app.put(&format!("/api/v1/profiles/{id}/tags/{long}"), None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_tag")));
    let (status, _) = app.put("/api/v1/profiles/424242/tags/vip", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
});

app_test!(stores_staff_and_their_customers, |app| {
    let (status, s) = app.put("/api/v1/stores/GZ001", Some(&json!({"name": "天河城店", "city": "Guangzhou"}))).await;
    assert_eq!(status, StatusCode::OK, "{s}");
    assert_eq!(s["time_zone"], json!("Asia/Shanghai"));
    let (status, body) = app.put("/api/v1/stores/GZ002", Some(&json!({"name": "x", "city": "Guangzhou", "time_zone": "Mars/Olympus"}))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::BAD_REQUEST, Some("invalid_time_zone")));
    let (status, body) = app.put("/api/v1/staff/g9", Some(&json!({"name": "陈导", "store_id": "NOPE"}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, g) = app.put("/api/v1/staff/chen.gz001", Some(&json!({"name": "陈导", "store_id": "GZ001"}))).await;
    assert_eq!(status, StatusCode::OK, "{g}");
    assert_eq!((g["role"].as_str(), g["customer_cap"].as_i64()), (Some("guide"), Some(5000)));
    let (status, _) = app.put("/api/v1/staff/x", Some(&json!({"name": "X", "customer_cap": 50000}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    for (user, event) in [("c1", "Contact Added"), ("c2", "Contact Added"), ("c3", "Contact Added"), ("c3", "Contact Deleted")] {
        app.send("/v1/track", &json!({"userId": user, "event": event, "properties": {"staff_userid": "chen.gz001", "state": "GZ001-table_card"}})).await;
    }
    app.settle().await;
    let (_, page) = app.get("/api/v1/staff/chen.gz001/customers?limit=1").await;
    assert_eq!(page["customers"].as_array().unwrap().len(), 1);
    let after = page["next"].as_i64().unwrap();
    let (_, rest) = app.get(&format!("/api/v1/staff/chen.gz001/customers?after={after}")).await;
    assert_eq!(rest["customers"].as_array().unwrap().len(), 1);
    assert!(rest["next"].is_null());
    let (_, all) = app.get("/api/v1/staff/chen.gz001/customers?include_deleted=true").await;
    assert_eq!(all["customers"].as_array().unwrap().len(), 3);
    let (_, stores) = app.get("/api/v1/stores?city=Guangzhou").await;
    assert_eq!(stores[0]["customers"], json!(2));
    assert_eq!(stores[0]["staff"], json!(1));
    let (_, staff) = app.get("/api/v1/staff?store_id=GZ001").await;
    assert_eq!(staff[0]["active_customers"], json!(2));
});

app_test!(a_guide_sees_only_their_own_customers, |app| {
    for (store, guide) in [("SH001", "guide.a"), ("SH002", "guide.b")] {
        app.put(&format!("/api/v1/stores/{store}"), Some(&json!({"name": store, "city": "Shanghai"}))).await;
        app.put(&format!("/api/v1/staff/{guide}"), Some(&json!({"name": guide, "store_id": store}))).await;
    }
    app.put("/api/v1/staff/manager.a", Some(&json!({"name": "店长", "store_id": "SH001", "role": "store_manager"}))).await;
    app.send("/v1/track", &json!({"userId": "mine", "event": "Contact Added", "properties": {"staff_userid": "guide.a"}})).await;
    app.send("/v1/track", &json!({"userId": "theirs", "event": "Contact Added", "properties": {"staff_userid": "guide.b"}})).await;
    let (_, mine) = app.lookup("user_id=mine").await;
    let (_, theirs) = app.lookup("user_id=theirs").await;
    let store = app.store.store.clone();
    for (token, role, who) in [("tok-guide-a", "guide", "guide.a"), ("tok-manager-a", "store_manager", "manager.a")] {
        store.run(move |db| Box::pin(async move { admin::add_token(db, token, role, Some(who), "test").await })).await.unwrap();
    }
    let as_staff = |token: &'static str, path: String| {
        let req = app.client.get(app.url(&path)).bearer_auth(token);
        async move { common::into_json(req.send().await.unwrap()).await }
    };
    for token in ["tok-guide-a", "tok-manager-a"] {
        let (status, p) = as_staff(token, format!("/api/v1/profiles/{}", mine["id"])).await;
        assert_eq!(status, StatusCode::OK, "{token}: {p}");
        let (status, _) = as_staff(token, format!("/api/v1/profiles/{}", theirs["id"])).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{token} must not see another store's customer");
        let (status, _) = as_staff(token, format!("/api/v1/profiles/{}/events", theirs["id"])).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _) = as_staff(token, "/api/v1/profiles/lookup?user_id=theirs".into()).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _) = as_staff(token, "/api/v1/stats".into()).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let (status, _) = as_staff(token, "/api/v1/staff/guide.b/customers".into()).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }
    let (status, _) = as_staff("tok-guide-a", "/api/v1/staff/guide.a/customers".into()).await;
    assert_eq!(status, StatusCode::OK);
    let resp = app.client.put(app.url(&format!("/api/v1/profiles/{}/tags/vip", theirs["id"]))).bearer_auth("tok-guide-a").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND, "and cannot tag them");
});

app_test!(admins_issue_list_and_revoke_staff_tokens, |app| {
    app.put("/api/v1/stores/SH001", Some(&json!({"name": "SH001", "city": "Shanghai"}))).await;
    app.put("/api/v1/staff/li", Some(&json!({"name": "Li", "store_id": "SH001"}))).await;
    app.send("/v1/track", &json!({"userId": "c1", "event": "Contact Added", "properties": {"staff_userid": "li"}})).await;
    let (_, c1) = app.lookup("user_id=c1").await;
    let (s, e) = app.post("/api/v1/tokens", &json!({"staff_userid": "nobody"})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("no member of staff"), "{e}");
    let (s, issued) = app.post("/api/v1/tokens", &json!({"staff_userid": "li", "label": "Li's phone"})).await;
    assert_eq!(s, StatusCode::CREATED, "{issued}");
    let token = issued["token"].as_str().unwrap().to_string();
    let id = issued["id"].as_str().unwrap().to_string();
    let get = |token: String, path: String| {
        let req = app.client.get(app.url(&path)).bearer_auth(token);
        async move { common::into_json(req.send().await.unwrap()).await }
    };
    let (s, _) = get(token.clone(), format!("/api/v1/profiles/{}", c1["id"])).await;
    assert_eq!(s, StatusCode::OK, "the guide's token reads the guide's customer");
    // Listed without the secret; a staff token cannot issue tokens.
    let (_, list) = app.get("/api/v1/tokens").await;
    let listed = list.as_array().unwrap().iter().find(|t| t["id"] == json!(id)).expect("listed").clone();
    assert_eq!((listed["staff_userid"].as_str(), listed["label"].as_str()), (Some("li"), Some("Li's phone")));
    assert!(!list.to_string().contains(&token), "never the secret");
    let resp = app.client.post(app.url("/api/v1/tokens")).bearer_auth(&token).json(&json!({})).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    // The same from the command line, against the running server.
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_siyu"))
            .args(args)
            .args(["--server", &app.base])
            .env("SIYU_ADMIN_TOKEN", common::ADMIN_TOKEN)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let created = tokio::task::block_in_place(|| cli(&["token", "create", "--staff", "li", "--label", "till"]));
    assert!(created.contains("siyu_staff_") && created.contains("staff member li"), "{created}");
    let listed = tokio::task::block_in_place(|| cli(&["token", "list"]));
    assert!(listed.contains(&id) && listed.contains("till"), "{listed}");
    // Revoked: it stops working at once.
    let revoked = tokio::task::block_in_place(|| cli(&["token", "revoke", &id]));
    assert!(revoked.contains("revoked"), "{revoked}");
    let (s, _) = get(token.clone(), format!("/api/v1/profiles/{}", c1["id"])).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let resp = app.client.delete(app.url(&format!("/api/v1/tokens/{id}"))).bearer_auth(common::ADMIN_TOKEN).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    // A member of staff who leaves loses access at once, whatever token they hold.
    let (_, again) = app.post("/api/v1/tokens", &json!({"staff_userid": "li"})).await;
    let token = again["token"].as_str().unwrap().to_string();
    let resp = app.client.delete(app.url("/api/v1/staff/li")).bearer_auth(common::ADMIN_TOKEN).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let (s, _) = get(token, "/api/v1/staff/li/customers".into()).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = app.get("/api/v1/staff/li").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
});

app_test!(guide_relationships_follow_event_time_not_arrival, |app| {
    app.put("/api/v1/staff/g1", Some(&json!({"name": "g1"}))).await;
    let contact = |event: &str, at: &str| json!({"userId": "late", "event": event, "timestamp": at, "properties": {"staff_userid": "g1"}});
    // The removal arrives first, the older add after it (an SDK retry, a slow queue).
    app.send("/v1/track", &contact("Contact Deleted", "2026-11-02T10:00:00Z")).await;
    app.send("/v1/track", &contact("Contact Added", "2026-11-01T10:00:00Z")).await;
    app.settle_all().await;
    let (_, p) = app.lookup("user_id=late").await;
    assert_eq!(p["owners"][0]["status"], json!("deleted"), "{p}");
    let (_, owned) = app.post("/api/v1/segments/preview", &json!({"rule": "owner.guide = \"g1\""})).await;
    assert_eq!(owned["count"], json!(0), "{owned}");
    // An add after the removal brings the customer back.
    app.send("/v1/track", &contact("Contact Added", "2026-11-03T10:00:00Z")).await;
    app.send("/v1/track", &contact("Contact Deleted", "2026-11-02T12:00:00Z")).await;
    app.settle_all().await;
    let (_, p) = app.lookup("user_id=late").await;
    assert_eq!(p["owners"][0]["status"], json!("active"), "{p}");
    let (_, owned) = app.post("/api/v1/segments/preview", &json!({"rule": "owner.guide = \"g1\""})).await;
    assert_eq!(owned["count"], json!(1), "{owned}");
});

app_test!(metrics_and_health, |app| {
    app.send("/v1/track", &json!({"userId": "m1", "event": "E"})).await;
    app.send("/v1/track", &json!({"event": "E"})).await;
    app.settle().await;
    // m1 is known now: their order counts in the engine on acknowledgement.
    app.send("/v1/track", &json!({"userId": "m1", "event": "Order Completed", "properties": {"revenue_fen": 2900}})).await;
    app.settle_all().await;
    let text = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    for line in [
        "siyu_tracking_requests_total{result=\"ok\"} 2",
        "siyu_tracking_requests_total{result=\"rejected\"} 1",
        "siyu_messages_stored_total 2",
        "siyu_profiles 1",
        "siyu_events 2",
        "siyu_ingest_lag_messages 0",
        "siyu_engine_early_total 1",
        "siyu_engine_early_taken_back_total 0",
        "siyu_engine_waited_total{reason=\"uncertain\"} 1",
    ] {
        assert!(text.contains(line), "{line} missing from:\n{text}");
    }
    let (status, h) = common::into_json(app.client.get(app.url("/healthz")).send().await.unwrap()).await;
    assert_eq!((status, h["status"].as_str()), (StatusCode::OK, Some("ok")));
    let (status, body) = common::into_json(app.client.get(app.url("/nope")).send().await.unwrap()).await;
    assert_eq!((status, body["error"]["code"].as_str()), (StatusCode::NOT_FOUND, Some("not_found")));
});

#[tokio::test]
async fn an_admin_token_is_generated_once_when_none_is_configured() {
    let store = siyu_store::testing::TestStore::sqlite().await;
    let opts = |store: &siyu_store::testing::TestStore| siyu_server::app::ServeOptions {
        store: store.config.clone(),
        data_dir: store.dir.path().to_path_buf(),
        listen: "127.0.0.1:0".parse().unwrap(),
        write_key: None,
        client_write_key: None,
        admin_token: None,
        limits: Default::default(),
    };
    let first = siyu_server::app::start(opts(&store)).await.unwrap();
    let token = first.generated_admin_token.clone().expect("generated at first start");
    assert!(first.generated_write_key);
    let write_key = first.state.write_key.clone();
    let client = siyu_wecom::client::http_builder().no_proxy().build().unwrap();
    let url = format!("http://{}/api/v1/stats", first.addr);
    assert_eq!(client.get(&url).bearer_auth(&token).send().await.unwrap().status(), StatusCode::OK);
    assert_eq!(client.get(&url).bearer_auth(ADMIN_TOKEN).send().await.unwrap().status(), StatusCode::UNAUTHORIZED);
    first.stop().await;
    let second = siyu_server::app::start(opts(&store)).await.unwrap();
    assert!(second.generated_admin_token.is_none(), "printed once, never again");
    assert_eq!(second.state.write_key, write_key, "the write key is remembered");
    let url = format!("http://{}/api/v1/stats", second.addr);
    assert_eq!(client.get(&url).bearer_auth(&token).send().await.unwrap().status(), StatusCode::OK);
    second.stop().await;
}

app_test!(every_answer_carries_a_request_id_and_staff_get_403_from_admin_only_routes, |app| {
    // A client's own request id comes back, so its logs and Siyu's can be joined.
    let resp = app.client.get(app.url("/api/v1/stats")).bearer_auth(ADMIN_TOKEN).header("x-request-id", "req-42").send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["x-request-id"], "req-42");
    // Without one, Siyu makes one (a UUID), also on errors.
    let resp = app.client.get(app.url("/api/v1/stats")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let made = resp.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(made.len(), 36, "a UUID: {made}");

    // A guide's token passes authentication but not an admin-only route.
    let (status, _) = app.put("/api/v1/stores/SH001", Some(&json!({"name": "静安店", "city": "上海"}))).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = app.put("/api/v1/staff/g1", Some(&json!({"name": "小王", "role": "guide", "store_id": "SH001"}))).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = app.post("/api/v1/tokens", &json!({"staff_userid": "g1"})).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let guide = body["token"].as_str().unwrap().to_string();
    let (status, body) = common::into_json(app.client.get(app.url("/api/v1/stats")).bearer_auth(&guide).send().await.unwrap()).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], json!("forbidden"));
});
