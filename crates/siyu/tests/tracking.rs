//! The Segment-spec tracking API over real HTTP, on both backends.

mod common;

use std::io::Write;

use reqwest::StatusCode;
use serde_json::{Value, json};

use common::WRITE_KEY;

app_test!(every_endpoint_stores_and_resolves, |app| {
    let calls = [
        ("/v1/identify", json!({"userId": "u1", "anonymousId": "a1", "traits": {"name": "李娜", "city": "Guangzhou"}})),
        ("/v1/track", json!({"userId": "u1", "event": "Order Completed", "properties": {"revenue_fen": 2900}})),
        ("/v1/page", json!({"anonymousId": "a1", "name": "Menu", "properties": {"path": "/menu"}})),
        ("/v1/screen", json!({"userId": "u1", "name": "Checkout"})),
        ("/v1/group", json!({"userId": "u1", "groupId": "wrSH001", "traits": {"name": "静安寺店咖啡群"}})),
        ("/v1/alias", json!({"userId": "u1", "previousId": "device-77"})),
    ];
    for (path, body) in &calls {
        let (status, resp) = app.send(path, body).await;
        assert_eq!(status, StatusCode::OK, "{path}: {resp}");
        assert_eq!(resp, json!({"success": true}));
    }
    let (status, p) = app.lookup("user_id=u1").await;
    assert_eq!(status, StatusCode::OK, "{p}");
    assert_eq!(p["traits"]["name"], json!("李娜"));
    assert_eq!(p["recent_events"].as_array().unwrap().len(), 6);
    let (_, by_anon) = app.lookup("anonymous_id=device-77").await;
    assert_eq!(by_anon["id"], p["id"], "the alias's previousId resolves to the user");
    assert_eq!(app.counts().await, (1, 6));
});

app_test!(batches_take_the_write_key_from_the_body_and_gzip, |app| {
    // Newer SDKs send writeKey in the body and no Authorization header.
    let body = json!({"writeKey": WRITE_KEY, "batch": [
        {"type": "track", "userId": "u2", "event": "Product Viewed", "messageId": "b-1"},
        {"type": "identify", "userId": "u2", "traits": {"tier": "gold"}, "messageId": "b-2"},
    ]});
    let resp = app.client.post(app.url("/v1/batch")).json(&body).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    // Or on each message.
    let per_message = json!({"batch": [{"type": "page", "userId": "u2", "writeKey": WRITE_KEY, "messageId": "b-3"}]});
    let resp = app.client.post(app.url("/v1/batch")).json(&per_message).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    // Gzip.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(serde_json::to_string(&json!({"batch": [{"type": "track", "userId": "u2", "event": "Shared", "messageId": "b-4"}]})).unwrap().as_bytes())
        .unwrap();
    let resp = app
        .client
        .post(app.url("/v1/batch"))
        .basic_auth(WRITE_KEY, Some(""))
        .header("content-encoding", "gzip")
        .header("content-type", "application/json")
        .body(gz.finish().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(app.counts().await, (1, 4));
});

app_test!(a_message_id_seen_before_is_acknowledged_and_stored_once, |app| {
    let msg = json!({"userId": "u3", "event": "Order Completed", "messageId": "retry-me"});
    for _ in 0..3 {
        let (status, _) = app.send("/v1/track", &msg).await;
        assert_eq!(status, StatusCode::OK);
    }
    let (status, _) = app
        .send(
            "/v1/batch",
            &json!({"batch": [
                {"type": "track", "userId": "u3", "event": "Order Completed", "messageId": "retry-me"},
                {"type": "track", "userId": "u3", "event": "Order Completed", "messageId": "retry-me"},
            ]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(app.counts().await, (1, 1));
});

app_test!(bad_input_gets_a_clear_4xx_and_changes_nothing, |app| {
    app.send("/v1/identify", &json!({"userId": "existing"})).await;
    let before = app.counts().await;
    let big = "x".repeat(33 * 1024);
    let huge_batch: Vec<Value> = (0..20)
        .map(|i| json!({"type": "track", "userId": "u", "event": "E", "properties": {"p": "y".repeat(30 * 1024)}, "messageId": format!("h{i}")}))
        .collect();
    let cases: Vec<(&str, reqwest::RequestBuilder, StatusCode, &str)> = vec![
        (
            "malformed JSON",
            app.client.post(app.url("/v1/track")).basic_auth(WRITE_KEY, Some("")).body("{\"userId\": "),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "missing ids",
            app.client.post(app.url("/v1/track")).basic_auth(WRITE_KEY, Some("")).json(&json!({"event": "E"})),
            StatusCode::BAD_REQUEST,
            "missing_identity",
        ),
        (
            "oversize message",
            app.client.post(app.url("/v1/track")).basic_auth(WRITE_KEY, Some("")).json(&json!({"userId": "u", "event": "E", "properties": {"p": big}})),
            StatusCode::BAD_REQUEST,
            "payload_too_large",
        ),
        (
            "oversize batch",
            app.client.post(app.url("/v1/batch")).basic_auth(WRITE_KEY, Some("")).json(&json!({"batch": huge_batch})),
            StatusCode::BAD_REQUEST,
            "payload_too_large",
        ),
        (
            "wrong write key",
            app.client.post(app.url("/v1/track")).basic_auth("not-the-key", Some("")).json(&json!({"userId": "u", "event": "E"})),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        (
            "wrong key in body",
            app.client.post(app.url("/v1/batch")).json(&json!({"writeKey": "nope", "batch": [{"type": "track", "userId": "u", "event": "E"}]})),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        ("no write key", app.client.post(app.url("/v1/track")).json(&json!({"userId": "u", "event": "E"})), StatusCode::UNAUTHORIZED, "unauthorized"),
        (
            "broken gzip",
            app.client.post(app.url("/v1/track")).basic_auth(WRITE_KEY, Some("")).header("content-encoding", "gzip").body("not gzip"),
            StatusCode::BAD_REQUEST,
            "invalid_gzip",
        ),
        (
            "track without event",
            app.client.post(app.url("/v1/track")).basic_auth(WRITE_KEY, Some("")).json(&json!({"userId": "u"})),
            StatusCode::BAD_REQUEST,
            "missing_event",
        ),
        (
            "bad timestamp",
            app.client.post(app.url("/v1/track")).basic_auth(WRITE_KEY, Some("")).json(&json!({"userId": "u", "event": "E", "timestamp": "next tuesday"})),
            StatusCode::BAD_REQUEST,
            "invalid_field",
        ),
    ];
    for (name, req, status, code) in cases {
        let (got, body) = common::into_json(req.send().await.unwrap()).await;
        assert_eq!(got, status, "{name}: {body}");
        assert_eq!(body["error"]["code"], json!(code), "{name}: {body}");
        assert!(body["error"]["message"].as_str().is_some_and(|m| m.len() > 10), "{name}: a message a person understands");
    }
    assert_eq!(app.counts().await, before, "nothing was stored");
});

app_test!(a_batch_with_bad_messages_names_each_and_stores_none, |app| {
    let (status, body) = app
        .send(
            "/v1/batch",
            &json!({"batch": [
                {"type": "track", "userId": "u", "event": "Fine", "messageId": "ok-1"},
                {"type": "track", "event": "No id", "messageId": "bad-1"},
                {"type": "teleport", "userId": "u", "messageId": "bad-2"},
                {"type": "track", "userId": "u", "event": "Fine too", "messageId": "ok-2"},
            ]}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let rejected = body["error"]["rejected"].as_array().unwrap();
    assert_eq!(rejected.len(), 2);
    assert_eq!(rejected[0]["index"], json!(1));
    assert_eq!(rejected[0]["messageId"], json!("bad-1"));
    assert_eq!(rejected[0]["code"], json!("missing_identity"));
    assert_eq!(rejected[1]["index"], json!(2));
    assert_eq!(rejected[1]["code"], json!("unsupported_type"));
    assert_eq!(app.counts().await, (0, 0));
});

app_test!(identities_from_external_ids_merge_profiles_over_http, |app| {
    app.send(
        "/v1/track",
        &json!({"anonymousId": "mp-1", "event": "Product Viewed",
        "context": {"externalIds": [{"id": "oUNI", "type": "unionid", "collection": "users", "encoding": "none"}]}}),
    )
    .await;
    app.send("/v1/identify", &json!({"userId": "member-1", "traits": {"phone": "13900001111"}})).await;
    assert_eq!(app.counts().await.0, 2);
    app.send(
        "/v1/identify",
        &json!({"userId": "member-1",
        "context": {"externalIds": [{"id": "oUNI", "type": "unionid"}, {"id": "wmX", "type": "external_userid"}]}}),
    )
    .await;
    assert_eq!(app.counts().await.0, 1);
    let (_, a) = app.lookup("phone=%2B86%20139%200000%201111").await;
    let (_, b) = app.lookup("anonymous_id=mp-1").await;
    let (_, c) = app.lookup("external_userid=wmX").await;
    assert_eq!(a["id"], b["id"]);
    assert_eq!(a["id"], c["id"]);
    assert_eq!(a["merged_from"].as_array().unwrap().len(), 1);
});

app_test!(an_email_is_an_identity_like_a_phone, |app| {
    // A newsletter sign-up known only by e-mail, then the member who gives the same
    // address (however typed) in their profile: one customer.
    app.send(
        "/v1/track",
        &json!({"anonymousId": "nl-1", "event": "Newsletter Subscribed", "context": {"externalIds": [{"id": "Li.Na@Example.COM", "type": "email"}]}}),
    )
    .await;
    app.send("/v1/identify", &json!({"userId": "member-9", "traits": {"email": " li.na@example.com "}})).await;
    app.settle_all().await;
    assert_eq!(app.counts().await.0, 1);
    let (s, p) = app.lookup("email=LI.NA%40example.com").await;
    assert_eq!(s, StatusCode::OK, "{p}");
    assert_eq!(p["traits"]["email"], json!("li.na@example.com"));
    let (_, q) = app.lookup("anonymous_id=nl-1").await;
    assert_eq!(p["id"], q["id"]);
    // Stored as its hash, like a phone, not in the clear.
    let email = p["identities"].as_array().unwrap().iter().find(|i| i["kind"] == json!("email")).cloned().expect("an email identity");
    assert_eq!(email["value"].as_str().unwrap().len(), 64, "{email}");
    assert!(!p["identities"].to_string().contains("li.na@example.com"), "{p}");
    // An external id that is no address is refused with a reason.
    let (s, e) = app.send("/v1/track", &json!({"anonymousId": "nl-2", "event": "X", "context": {"externalIds": [{"id": "li.na", "type": "email"}]}})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    assert!(e.to_string().contains("not an e-mail address"), "{e}");
});

app_test!(a_client_key_cannot_change_relationships_consent_or_attribution, |app| {
    let send = |body: Value, path: &'static str| {
        let req = app.client.post(app.url(path)).basic_auth(common::CLIENT_WRITE_KEY, Some("")).json(&body);
        async move { common::into_json(req.send().await.unwrap()).await }
    };
    // What a web page may send: ordinary events, traits, withdrawing consent.
    let (s, v) = send(json!({"userId": "web1", "event": "Product Viewed", "properties": {"sku": "A1"}}), "/v1/track").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = send(json!({"userId": "web1", "traits": {"name": "Wu", "consent.sms": false}}), "/v1/identify").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // What it may not: make a guide the owner, give consent (flat or nested), attribute.
    for (body, path, needle) in [
        (json!({"userId": "web1", "event": "Contact Added", "properties": {"staff_userid": "g1"}}), "/v1/track", "Contact Added"),
        (json!({"userId": "web1", "traits": {"consent.sms": true}}), "/v1/identify", "consent.sms"),
        (json!({"userId": "web1", "traits": {"consent": {"wecom": true}}}), "/v1/identify", "consent.wecom"),
        (json!({"userId": "web1", "event": "Coupon Redeemed", "properties": {"staff_userid": "g1"}}), "/v1/track", "staff_userid"),
        (
            json!({"batch": [{"type": "track", "userId": "web1", "event": "Page Liked"}, {"type": "track", "userId": "web1", "event": "Contact Deleted"}]}),
            "/v1/batch",
            "batch[1]",
        ),
        // Joining profiles: a stranger's profile merged into one a guide serves.
        (json!({"previousId": "anon-of-a-guides-customer", "userId": "web1"}), "/v1/alias", "alias"),
        (json!({"userId": "web1", "event": "Viewed", "context": {"externalIds": [{"id": "wmX", "type": "external_userid"}]}}), "/v1/track", "external_userid"),
        (json!({"userId": "web1", "event": "Message Complained", "properties": {"campaign_id": 1}}), "/v1/track", "Message Complained"),
    ] {
        let (s, e) = send(body, path).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{e}");
        assert_eq!(e["error"]["code"], json!("server_key_required"));
        assert!(e["error"]["message"].as_str().unwrap().contains(needle), "{e}");
    }
    // A phone or e-mail typed into a web form is kept, but not matched on.
    let (s, v) = send(json!({"userId": "web1", "traits": {"phone": "13800000009", "email": "Someone@Example.com"}}), "/v1/identify").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    app.settle_all().await;
    let (_, p) = app.lookup("user_id=web1").await;
    assert_eq!((p["traits"]["phone"].as_str(), p["traits"]["email"].as_str()), (Some("+8613800000009"), Some("someone@example.com")), "{p}");
    assert_eq!(app.lookup("phone=13800000009").await.0, StatusCode::NOT_FOUND);
    assert_eq!(app.lookup("email=someone%40example.com").await.0, StatusCode::NOT_FOUND);
    assert!(p["owners"].as_array().unwrap().is_empty(), "{p}");
    assert_eq!(p["traits"]["consent.sms"], json!(false));
    let (_, events) = app.get(&format!("/api/v1/profiles/{}/events", p["id"])).await;
    assert!(!events.to_string().contains("Page Liked"), "a refused batch stores nothing: {events}");
    // The server key may do all of it.
    let (s, _) = app.send("/v1/track", &json!({"userId": "web1", "event": "Contact Added", "properties": {"staff_userid": "g1"}})).await;
    assert_eq!(s, StatusCode::OK);
});
