//! The Overview page's analytics over real HTTP: a small known brand sent through the
//! tracking API, every figure checked exactly, the GMV identity to the fen, the LMDI
//! contributions adding up to the change, the CSV exports, a store manager's scope,
//! a guide's 403, bad dates, and `analytics.json`. Both backends.

mod common;

use reqwest::StatusCode;
use serde_json::{Value, json};
use siyu_store::admin;

use common::TestApp;

const MARCH: &str = "from=2025-03-01&to=2025-03-31";

async fn track(app: &TestApp, user: &str, event: &str, at: &str, properties: Value) {
    let (status, body) = app.send("/v1/track", &json!({"userId": user, "event": event, "timestamp": at, "properties": properties})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

async fn identify(app: &TestApp, user: &str, city: &str, at: &str) {
    let (status, body) = app.send("/v1/identify", &json!({"userId": user, "timestamp": at, "traits": {"city": city}})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

async fn order(app: &TestApp, user: &str, at: &str, fen: i64) {
    track(app, user, "Order Completed", at, json!({"revenue_fen": fen, "currency": "CNY"})).await;
}

/// Two stores, a guide in each and a manager for SH001, and seven customers (times in
/// Shanghai; the report is March 2025, the previous period 29 January – 28 February):
///
/// - alice, 上海, SH001's guide by poster since 10 Feb; orders 20 Feb ¥20, 3 Mar ¥30, 25 Mar ¥20 (and 1 Apr).
/// - bob, 上海, SH001's guide by table card 5 Mar; ordered 6 Mar ¥15; deleted the guide 20 Mar.
/// - carol, Beijing, BJ001's guide by poster since 1 Feb; orders 25 Feb ¥7, 31 Mar 23:59 ¥45.
/// - dave, Beijing, BJ001's guide 12 Mar through the mini program (no state: the channel
///   is the Contact Added event's); orders 15 Mar ¥12.34 and 16 Mar ¥11.11.
/// - frank, Beijing, BJ001's guide by table card since 15 Jan; never ordered.
/// - erin, 上海, no guide; ordered 9 Mar ¥8.
/// - gina, 上海, no guide, seen 1 Feb; nothing since.
async fn brand(app: &TestApp) {
    for (store, city) in [("SH001", "上海"), ("BJ001", "Beijing")] {
        let (status, body) = app.put(&format!("/api/v1/stores/{store}"), Some(&json!({"name": store, "city": city}))).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    for (userid, store, role) in [("g_sh", "SH001", "guide"), ("g_bj", "BJ001", "guide"), ("m_sh", "SH001", "store_manager")] {
        let (status, body) = app.put(&format!("/api/v1/staff/{userid}"), Some(&json!({"name": userid, "store_id": store, "role": role}))).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let added = |staff: &str, state: &str| {
        let (store, channel) = state.split_once('-').unwrap();
        json!({"staff_userid": staff, "state": state, "store_id": store, "channel": channel})
    };
    identify(app, "alice", "上海", "2025-02-10T09:00:00+08:00").await;
    track(app, "alice", "Contact Added", "2025-02-10T10:00:00+08:00", added("g_sh", "SH001-poster")).await;
    order(app, "alice", "2025-02-20T12:00:00+08:00", 2000).await;
    order(app, "alice", "2025-03-03T12:00:00+08:00", 3000).await;
    order(app, "alice", "2025-03-25T12:00:00+08:00", 2000).await;
    order(app, "alice", "2025-04-01T00:00:00+08:00", 99_999).await;

    identify(app, "bob", "上海", "2025-03-05T09:00:00+08:00").await;
    track(app, "bob", "Contact Added", "2025-03-05T10:00:00+08:00", added("g_sh", "SH001-table_card")).await;
    order(app, "bob", "2025-03-06T12:00:00+08:00", 1500).await;
    track(app, "bob", "Contact Deleted", "2025-03-20T10:00:00+08:00", json!({"staff_userid": "g_sh", "initiator": "customer"})).await;

    identify(app, "carol", "Beijing", "2025-02-01T09:00:00+08:00").await;
    track(app, "carol", "Contact Added", "2025-02-01T10:00:00+08:00", added("g_bj", "BJ001-poster")).await;
    order(app, "carol", "2025-02-25T12:00:00+08:00", 700).await;
    order(app, "carol", "2025-03-31T23:59:00+08:00", 4500).await;

    identify(app, "dave", "Beijing", "2025-03-12T09:00:00+08:00").await;
    track(app, "dave", "Contact Added", "2025-03-12T10:00:00+08:00", json!({"staff_userid": "g_bj", "channel": "mini_program", "store_id": "BJ001"})).await;
    order(app, "dave", "2025-03-15T12:00:00+08:00", 1234).await;
    order(app, "dave", "2025-03-16T12:00:00+08:00", 1111).await;

    identify(app, "frank", "Beijing", "2025-01-15T09:00:00+08:00").await;
    track(app, "frank", "Contact Added", "2025-01-15T10:00:00+08:00", added("g_bj", "BJ001-table_card")).await;

    identify(app, "erin", "上海", "2025-03-01T09:00:00+08:00").await;
    order(app, "erin", "2025-03-09T12:00:00+08:00", 800).await;

    identify(app, "gina", "上海", "2025-02-01T09:00:00+08:00").await;
    app.settle().await;
}

/// A figures object: (users, buyers, orders, gmv_fen), after checking that its ratios
/// are what they say and that users × conversion × aov × frequency is GMV to the fen.
fn figures(f: &Value) -> (i64, i64, i64, i64) {
    let n = |k: &str| f[k].as_i64().unwrap_or_else(|| panic!("{k} in {f}"));
    let x = |k: &str| f[k].as_f64().unwrap_or_else(|| panic!("{k} in {f}"));
    let (users, buyers, orders, gmv) = (n("users"), n("buyers"), n("orders"), n("gmv_fen"));
    let ratio = |a: i64, b: i64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    assert_eq!(x("conversion"), ratio(buyers, users), "{f}");
    assert_eq!(x("aov_fen"), ratio(gmv, orders), "{f}");
    assert_eq!(x("frequency"), ratio(orders, buyers), "{f}");
    let product = users as f64 * x("conversion") * x("aov_fen") * x("frequency");
    assert_eq!(product.round() as i64, gmv, "the identity to the fen: {f}");
    assert_eq!(n("identity_gmv_fen"), gmv);
    (users, buyers, orders, gmv)
}

/// The LMDI contributions add up to the change, exactly in fen, and agree with the
/// formula computed here.
fn check_lmdi(d: &Value, previous: (i64, i64, i64, i64), current: (i64, i64, i64, i64)) {
    let change = current.3 - previous.3;
    assert_eq!(d["change_fen"], json!(change));
    assert_eq!(d["basis"], json!("lmdi"), "{d}");
    let cs = d["contributions"].as_array().unwrap();
    let factors: Vec<&str> = cs.iter().map(|c| c["factor"].as_str().unwrap()).collect();
    assert_eq!(factors, ["users", "conversion", "aov", "frequency"]);
    assert_eq!(cs.iter().map(|c| c["fen"].as_i64().unwrap()).sum::<i64>(), change, "{d}");
    let sum: f64 = cs.iter().map(|c| c["value"].as_f64().unwrap()).sum();
    assert!((sum - change as f64).abs() < 1e-6, "{sum} vs {change}");
    let l = change as f64 / (current.3 as f64 / previous.3 as f64).ln();
    let (u0, b0, o0, g0) = (previous.0 as f64, previous.1 as f64, previous.2 as f64, previous.3 as f64);
    let (u1, b1, o1, g1) = (current.0 as f64, current.1 as f64, current.2 as f64, current.3 as f64);
    let expected = [u1 / u0, (b1 / u1) / (b0 / u0), (g1 / o1) / (g0 / o0), (o1 / b1) / (o0 / b0)].map(|r| l * r.ln());
    for (c, e) in cs.iter().zip(expected) {
        assert!((c["value"].as_f64().unwrap() - e).abs() < 1e-6, "{c} vs {e}");
        assert!((c["fen"].as_i64().unwrap() as f64 - e).abs() <= 2.0, "{c} rounds {e}");
    }
}

async fn get_as(app: &TestApp, token: &str, path: &str) -> (StatusCode, Value) {
    common::into_json(app.client.get(app.url(path)).bearer_auth(token).send().await.unwrap()).await
}

async fn csv_of(app: &TestApp, token: &str, path: &str) -> Vec<String> {
    let resp = app.client.get(app.url(path)).bearer_auth(token).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "text/csv; charset=utf-8");
    assert!(resp.headers()["content-disposition"].to_str().unwrap().contains("2025-03-01_2025-03-31.csv"));
    resp.text().await.unwrap().lines().map(String::from).collect()
}

app_test!(the_overview_figures_are_exact, |app| {
    brand(&app).await;
    let (status, o) = app.get(&format!("/api/v1/analytics/overview?{MARCH}")).await;
    assert_eq!(status, StatusCode::OK, "{o}");
    assert_eq!((o["period"]["from"].as_str(), o["period"]["to"].as_str(), o["period"]["days"].as_i64()), (Some("2025-03-01"), Some("2025-03-31"), Some(31)));
    assert_eq!(o["period"]["start"], json!("2025-02-28T16:00:00.000Z"));
    assert_eq!((o["previous_period"]["from"].as_str(), o["previous_period"]["to"].as_str()), (Some("2025-01-29"), Some("2025-02-28")));
    assert_eq!(o["definitions"]["order_event"], json!("Order Completed"));

    // March: contacts at its end alice, carol, dave, frank; buyers alice (2 orders,
    // ¥50), carol (the 23:59 order, ¥45), dave (2 orders, ¥23.45). April's order is out.
    let current = figures(&o["current"]);
    assert_eq!(current, (4, 3, 5, 11_845));
    assert_eq!(o["current"]["conversion"], json!(0.75));
    assert_eq!(o["current"]["aov_fen"], json!(2369.0));
    // The previous period: alice, carol, frank; alice ¥20 and carol ¥7.
    let previous = figures(&o["previous"]);
    assert_eq!(previous, (3, 2, 2, 2700));
    check_lmdi(&o["decomposition"], previous, current);

    // Contacts by day: alice, carol, frank at the start; bob on the 5th, dave on the
    // 12th; bob deleted his guide on the 20th.
    let c = &o["contacts"];
    assert_eq!(
        (c["at_start"].as_i64(), c["added"].as_i64(), c["lost"].as_i64(), c["net"].as_i64(), c["at_end"].as_i64()),
        (Some(3), Some(2), Some(1), Some(1), Some(4))
    );
    let days = c["by_day"].as_array().unwrap();
    assert_eq!(days.len(), 31);
    let expect = [(1, 0, 0, 3), (5, 1, 0, 4), (12, 1, 0, 5), (20, 0, 1, 4), (31, 0, 0, 4)];
    for (d, added, lost, total) in expect {
        let day = &days[d - 1];
        assert_eq!(day["day"], json!(format!("2025-03-{d:02}")));
        assert_eq!(
            (day["added"].as_i64(), day["lost"].as_i64(), day["net"].as_i64(), day["total"].as_i64()),
            (Some(added), Some(lost), Some(added - lost), Some(total)),
            "{day}"
        );
    }
    let mut total = 3;
    for day in days {
        total += day["net"].as_i64().unwrap();
        assert_eq!(day["total"].as_i64(), Some(total));
    }
    assert_eq!(total, current.0, "the last day's total is the users");

    // Block rate: bob among the five contacts of March. Repurchase: alice and dave of
    // the three buyers.
    assert_eq!(o["block_rate"], json!({"contacts": 5, "blocked": 1, "rate": 0.2}));
    assert_eq!(o["repurchase"], json!({"buyers": 3, "repeat_buyers": 2, "rate": 2.0 / 3.0}));
    // ARPU: the four contacts' ¥118.45 against bob's ¥15, erin's ¥8 and gina's nothing.
    assert_eq!(o["arpu"]["private"], json!({"customers": 4, "gmv_fen": 11_845, "arpu_fen": 2961.25}));
    assert_eq!(o["arpu"]["rest"], json!({"customers": 3, "gmv_fen": 2300, "arpu_fen": 2300.0 / 3.0}));

    // The per-chart endpoints say the same.
    let (_, g) = app.get(&format!("/api/v1/analytics/gmv?{MARCH}")).await;
    assert_eq!((&g["current"], &g["previous"], &g["decomposition"]), (&o["current"], &o["previous"], &o["decomposition"]));
    let (_, contacts) = app.get(&format!("/api/v1/analytics/contacts?{MARCH}")).await;
    assert_eq!(&contacts, c);
    let (_, rates) = app.get(&format!("/api/v1/analytics/rates?{MARCH}")).await;
    assert_eq!((&rates["block_rate"], &rates["repurchase"], &rates["arpu"]), (&o["block_rate"], &o["repurchase"], &o["arpu"]));

    // Slices: 上海 keeps alice (bob left); the mini program brought dave (his Contact
    // Added carried the channel, no state); BJ001 has carol, dave, frank.
    let (_, sh) = app.get(&format!("/api/v1/analytics/gmv?{MARCH}&city=%E4%B8%8A%E6%B5%B7")).await;
    assert_eq!(figures(&sh["current"]), (1, 1, 2, 5000));
    let (_, mp) = app.get(&format!("/api/v1/analytics/gmv?{MARCH}&channel=mini_program")).await;
    assert_eq!(figures(&mp["current"]), (1, 1, 2, 2345));
    assert_eq!(figures(&mp["previous"]), (0, 0, 0, 0));
    assert_eq!(mp["decomposition"]["basis"], json!("zero_value"), "no GMV before: all to users");
    assert_eq!(mp["decomposition"]["contributions"][0]["fen"], json!(2345));
    let (_, bj) = app.get(&format!("/api/v1/analytics/gmv?{MARCH}&store=BJ001")).await;
    assert_eq!(figures(&bj["current"]), (3, 2, 3, 6845));
});

app_test!(csv_exports_match_the_json, |app| {
    brand(&app).await;
    let (_, g) = app.get(&format!("/api/v1/analytics/gmv?{MARCH}")).await;
    let lines = csv_of(&app, common::ADMIN_TOKEN, &format!("/api/v1/analytics/gmv.csv?{MARCH}")).await;
    assert_eq!(lines[0], "measure,previous,current,change,contribution,contribution_fen");
    let cells: Vec<Vec<&str>> = lines.iter().map(|l| l.split(',').collect()).collect();
    let row = |name: &str| cells.iter().find(|r| r[0] == name).unwrap_or_else(|| panic!("no {name} row in {lines:?}")).clone();
    let contribution = |i: usize| &g["decomposition"]["contributions"][i];
    assert_eq!(row("users")[..4], ["users", "3", "4", "1"]);
    for (i, name) in ["users", "conversion", "aov_fen", "frequency"].iter().enumerate() {
        let r = row(name);
        assert_eq!(r[4].parse::<f64>().unwrap(), contribution(i)["value"].as_f64().unwrap(), "{name}");
        assert_eq!(r[5], contribution(i)["fen"].to_string(), "{name}");
    }
    assert_eq!(row("conversion")[1..3], ["0.6666666666666666", "0.75"]);
    let gmv = row("gmv_fen");
    assert_eq!((gmv[1], gmv[2], gmv[3], gmv[5]), ("2700", "11845", "9145", "9145"));
    assert_eq!(row("buyers"), ["buyers", "2", "3", "1", "", ""]);
    assert_eq!(row("orders"), ["orders", "2", "5", "3", "", ""]);
    // The four rounded contributions add up to the change in the file too.
    let fen: i64 = ["users", "conversion", "aov_fen", "frequency"].iter().map(|n| row(n)[5].parse::<i64>().unwrap()).sum();
    assert_eq!(fen, 9145);

    let lines = csv_of(&app, common::ADMIN_TOKEN, &format!("/api/v1/analytics/contacts.csv?{MARCH}")).await;
    assert_eq!(lines.len(), 32);
    assert_eq!(lines[0], "day,added,lost,net,total");
    assert_eq!(lines[1], "2025-03-01,0,0,0,3");
    assert_eq!(lines[5], "2025-03-05,1,0,1,4");
    assert_eq!(lines[20], "2025-03-20,0,1,-1,4");
    assert_eq!(lines[31], "2025-03-31,0,0,0,4");

    let lines = csv_of(&app, common::ADMIN_TOKEN, &format!("/api/v1/analytics/rates.csv?{MARCH}")).await;
    assert_eq!(
        lines,
        [
            "metric,numerator,denominator,value",
            "block_rate,1,5,0.2",
            "repurchase_rate,2,3,0.6666666666666666",
            "arpu_private_fen,11845,4,2961.25",
            "arpu_rest_fen,2300,3,766.6666666666666",
        ]
    );
});

app_test!(a_store_manager_sees_their_store_and_a_guide_nothing, |app| {
    brand(&app).await;
    let store = app.store.store.clone();
    for (token, role, who) in [("tok-manager-sh", "store_manager", "m_sh"), ("tok-guide-sh", "guide", "g_sh")] {
        store.run(move |db| Box::pin(async move { admin::add_token(db, token, role, Some(who), "test").await })).await.unwrap();
    }
    // Whatever store the manager asks for, they get SH001: alice, and bob until he left.
    for query in [MARCH.to_string(), format!("{MARCH}&store=BJ001")] {
        let (status, o) = get_as(&app, "tok-manager-sh", &format!("/api/v1/analytics/overview?{query}")).await;
        assert_eq!(status, StatusCode::OK, "{o}");
        assert_eq!(o["slice"]["store"], json!("SH001"));
        assert_eq!(figures(&o["current"]), (1, 1, 2, 5000));
        assert_eq!(figures(&o["previous"]), (1, 1, 1, 2000));
        check_lmdi(&o["decomposition"], (1, 1, 1, 2000), (1, 1, 2, 5000));
        assert_eq!((o["contacts"]["at_start"].as_i64(), o["contacts"]["added"].as_i64(), o["contacts"]["lost"].as_i64()), (Some(1), Some(1), Some(1)));
        assert_eq!(o["block_rate"], json!({"contacts": 2, "blocked": 1, "rate": 0.5}));
    }
    let lines = csv_of(&app, "tok-manager-sh", &format!("/api/v1/analytics/gmv.csv?{MARCH}&store=BJ001")).await;
    assert!(lines.iter().any(|l| l.starts_with("gmv_fen,2000,5000,3000,")), "{lines:?}");
    // A guide: 403, on every analytics route.
    for path in ["overview", "gmv", "gmv.csv", "contacts", "contacts.csv", "rates", "rates.csv"] {
        let (status, body) = get_as(&app, "tok-guide-sh", &format!("/api/v1/analytics/{path}?{MARCH}")).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {body}");
        assert_eq!(body["error"]["code"], json!("forbidden"));
    }
    // And none without a token.
    let resp = app.client.get(app.url(&format!("/api/v1/analytics/overview?{MARCH}"))).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
});

app_test!(bad_dates_are_a_400_that_says_what_is_wrong, |app| {
    for (query, says) in [
        ("from=2025-02-30&to=2025-03-31", "from: \"2025-02-30\" is not a date between 1970 and 2200; write YYYY-MM-DD"),
        // Far-off years are refused before any date arithmetic (they used to panic).
        ("to=-262143-01-05", "is not a date between 1970 and 2200"),
        ("from=%2B262142-12-01&to=%2B262142-12-31", "is not a date between 1970 and 2200"),
        ("from=2025-03-01&to=31/03/2025", "to: \"31/03/2025\" is not a date"),
        ("from=2025-03-31&to=2025-03-01", "to (2025-03-01) is before from (2025-03-31)"),
        ("from=2020-01-01&to=2025-03-01", "at most 731 days"),
        ("to=March", "to: \"March\" is not a date"),
    ] {
        for path in ["overview", "gmv.csv"] {
            let (status, body) = app.get(&format!("/api/v1/analytics/{path}?{query}")).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
            assert_eq!(body["error"]["code"], json!("invalid_period"));
            let message = body["error"]["message"].as_str().unwrap();
            assert!(message.contains(says), "{query}: {message}");
        }
    }
    // Without dates: the 30 days to yesterday.
    let (status, o) = app.get("/api/v1/analytics/overview").await;
    assert_eq!(status, StatusCode::OK, "{o}");
    assert_eq!(o["period"]["days"], json!(30));
    // The OpenAPI document lists the routes.
    let (_, doc) = common::into_json(app.client.get(app.url("/api/openapi.json")).send().await.unwrap()).await;
    for path in ["/api/v1/analytics/overview", "/api/v1/analytics/gmv.csv", "/api/v1/analytics/contacts.csv", "/api/v1/analytics/rates.csv"] {
        assert!(doc["paths"].get(path).is_some(), "{path} missing from the OpenAPI document");
    }
});

app_test!(analytics_json_changes_the_definitions, |app| {
    brand(&app).await;
    // Everyone who ever added a guide is a user; refunds net off GMV.
    track(&app, "alice", "Order Refunded", "2025-03-26T12:00:00+08:00", json!({"revenue_fen": 500})).await;
    app.settle().await;
    std::fs::write(app.store.dir.path().join("analytics.json"), r#"{"reachability": "ever_added", "refund_event": "Order Refunded"}"#).unwrap();
    app.restart().await;
    let (status, o) = app.get(&format!("/api/v1/analytics/overview?{MARCH}")).await;
    assert_eq!(status, StatusCode::OK, "{o}");
    assert_eq!(o["definitions"]["reachability"], json!("ever_added"));
    // bob counts again, with his order; alice's refund comes off.
    assert_eq!(figures(&o["current"]), (5, 4, 6, 11_845 + 1500 - 500));
    // A definitions file that does not read stops the start, naming the file.
    std::fs::write(app.store.dir.path().join("analytics.json"), r#"{"order_events": "Purchase"}"#).unwrap();
    if let Some(r) = app.running.take() {
        r.stop().await;
    }
    let err = siyu_server::app::start(siyu_server::app::ServeOptions {
        store: app.store.config.clone(),
        data_dir: app.store.dir.path().to_path_buf(),
        listen: "127.0.0.1:0".parse().unwrap(),
        write_key: Some(common::WRITE_KEY.to_string()),
        client_write_key: Some(common::CLIENT_WRITE_KEY.to_string()),
        admin_token: Some(common::ADMIN_TOKEN.to_string()),
        limits: common::Limits::default(),
    })
    .await
    .err()
    .expect("a bad analytics.json stops the start");
    let err = format!("{err:#}");
    assert!(err.contains("analytics.json") && err.contains("order_events"), "{err}");
});
