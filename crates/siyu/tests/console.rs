//! The console's sign-in over real HTTP: password accounts with lockout, sessions,
//! CSRF on everything that changes state, sign-out, WeCom sign-in through the
//! simulator, and the same scoping as the API. (The pages themselves are exercised in
//! a real browser by tests/browser/console_test.py.)

mod common;

use common::TestApp;
use reqwest::StatusCode;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use serde_json::json;

/// A client that shows redirects instead of following them.
fn browser() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
}

fn session_of(resp: &reqwest::Response) -> String {
    let cookie = resp.headers().get_all(SET_COOKIE).iter().filter_map(|v| v.to_str().ok()).find(|c| c.starts_with("siyu_session=")).expect("a session cookie");
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"), "{cookie}");
    cookie.split(';').next().unwrap().to_string()
}

async fn sign_in(app: &TestApp, password: &str) -> reqwest::Response {
    browser().post(app.url("/console/signin")).form(&[("username", "admin"), ("password", password), ("next", "/console/customers")]).send().await.unwrap()
}

/// The CSRF token a page carries for its scripts.
async fn csrf_of(app: &TestApp, cookie: &str) -> String {
    let html = browser().get(app.url("/console/customers")).header(COOKIE, cookie).send().await.unwrap().text().await.unwrap();
    let start = html.find("data-csrf=\"").expect("the page carries a CSRF token") + 11;
    html[start..start + 64].to_string()
}

app_test!(password_sign_in_sessions_and_csrf, |app| {
    let password = app.running.as_ref().unwrap().generated_admin_password.clone().expect("the admin password is generated at first start");
    // Not signed in: every page sends the browser to the sign-in page.
    let r = browser().get(app.url("/console/customers")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()[LOCATION], "/console/signin?next=%2Fconsole%2Fcustomers");
    let r = browser().get(app.url("/")).send().await.unwrap();
    assert_eq!(r.headers()[LOCATION], "/console", "the root is the console, not a JSON 404");

    let r = sign_in(&app, "wrong").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.text().await.unwrap().contains("用户名或密码错误"), "the sign-in page says why, in Chinese by default");
    // A sign-in posted from another site is refused.
    let r = browser()
        .post(app.url("/console/signin"))
        .header("origin", "http://evil.example")
        .form(&[("username", "admin"), ("password", password.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    let r = sign_in(&app, &password).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()[LOCATION], "/console/customers");
    let cookie = session_of(&r);
    let r = browser().get(app.url("/console/customers")).header(COOKIE, &cookie).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.text().await.unwrap().contains("<h1>客户</h1>"));

    // The API takes the session as it takes a token; what changes state needs the token.
    let r = browser().get(app.url("/api/v1/stats")).header(COOKIE, &cookie).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let preview = json!({"rule": "has(phone)"});
    let r = browser().post(app.url("/api/v1/segments/preview")).header(COOKIE, &cookie).json(&preview).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "no CSRF token");
    let csrf = csrf_of(&app, &cookie).await;
    let r = browser().post(app.url("/api/v1/segments/preview")).header(COOKIE, &cookie).header("x-csrf-token", &csrf).json(&preview).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r =
        browser().post(app.url("/api/v1/segments/preview")).header(COOKIE, &cookie).header("x-csrf-token", "0".repeat(64)).json(&preview).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "another session's token");

    // Signing out ends the session for good.
    let r = browser().post(app.url("/console/signout")).header(COOKIE, &cookie).form(&[("csrf", "stale")]).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "sign-out needs the token too");
    let r = browser().post(app.url("/console/signout")).header(COOKIE, &cookie).form(&[("csrf", csrf.as_str())]).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let r = browser().get(app.url("/console/customers")).header(COOKIE, &cookie).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let r = browser().get(app.url("/api/v1/stats")).header(COOKIE, &cookie).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // Wrong passwords lock the account after five, even sent all at once (each attempt
    // is counted before its password is checked), and then the right one is refused too.
    let guesses = futures::future::join_all((0..20).map(|_| sign_in(&app, "guess"))).await;
    let checked = guesses.iter().filter(|r| r.status() == StatusCode::UNAUTHORIZED).count();
    assert!(checked <= 4, "{checked} wrong passwords were checked before the lock");
    assert!(guesses.iter().all(|r| [StatusCode::UNAUTHORIZED, StatusCode::TOO_MANY_REQUESTS].contains(&r.status())));
    let r = sign_in(&app, &password).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.text().await.unwrap().contains("锁定"));
});

const CORP: &str = "wwconsole";

// WeCom sign-in: the simulator plays WeCom's authorize page and `auth/getuserinfo`.
app_test!(wecom_sign_in_scopes_a_guide_like_the_api, |app| {
    use siyu_wecom::sim::{SimConfig, Simulator};
    let sim_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sim_base = format!("http://{}", sim_listener.local_addr().unwrap());
    let key = "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt";
    let config = json!({"corp_id": CORP, "token": "t", "encoding_aes_key": key, "secret": "s", "api_base": sim_base, "agent_id": 1_000_002});
    std::fs::write(app.store.dir.path().join("wecom.json"), config.to_string()).unwrap();
    app.restart().await;
    let sim = Simulator::new(SimConfig::new(CORP, "s", "t", key));
    sim.add_staff(&["li.sh0052", "wang.bj0001"]);
    tokio::spawn(siyu_wecom::sim::serve(sim.clone(), sim_listener));
    app.put("/api/v1/stores/SH001", Some(&json!({"name": "静安店", "city": "Shanghai"}))).await;
    app.put("/api/v1/staff/li.sh0052", Some(&json!({"name": "李晨", "store_id": "SH001"}))).await;
    for (who, guide) in [("mine", "li.sh0052"), ("theirs", "someone.else")] {
        app.send("/v1/track", &json!({"userId": who, "event": "Contact Added", "properties": {"staff_userid": guide}})).await;
    }
    app.settle().await;

    // The sign-in button goes to WeCom (here the simulator) with a state to come back with.
    let r = browser().get(app.url("/console/signin/wecom?next=/console/customers")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let to = r.headers()[LOCATION].to_str().unwrap().to_string();
    assert!(to.starts_with(&format!("{sim_base}/wwlogin/sso/login?")), "{to}");
    let state_cookie = r.headers()[SET_COOKIE].to_str().unwrap().split(';').next().unwrap().to_string();
    let state = reqwest::Url::parse(&to).unwrap().query_pairs().find(|(k, _)| k == "state").unwrap().1.to_string();

    // A code for someone WeCom knows but Siyu has no staff record of: refused.
    let code = sim.sign_in_code("wang.bj0001");
    let r = browser().get(app.url(&format!("/console/signin/wecom/callback?code={code}&state={state}"))).header(COOKIE, &state_cookie).send().await.unwrap();
    assert_eq!(r.headers()[LOCATION], "/console/signin?error=not_staff");
    // A forged state: refused.
    let code = sim.sign_in_code("li.sh0052");
    let r = browser().get(app.url(&format!("/console/signin/wecom/callback?code={code}&state=forged"))).header(COOKIE, &state_cookie).send().await.unwrap();
    assert_eq!(r.headers()[LOCATION], "/console/signin?error=wecom");

    let code = sim.sign_in_code("li.sh0052");
    let r = browser().get(app.url(&format!("/console/signin/wecom/callback?code={code}&state={state}"))).header(COOKIE, &state_cookie).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()[LOCATION], "/console/customers");
    let cookie = session_of(&r);
    // A code is good once.
    let r = browser().get(app.url(&format!("/console/signin/wecom/callback?code={code}&state={state}"))).header(COOKIE, &state_cookie).send().await.unwrap();
    assert_eq!(r.headers()[LOCATION], "/console/signin?error=wecom");

    // The guide's console is scoped as their API token would be.
    let r = browser().get(app.url("/console")).header(COOKIE, &cookie).send().await.unwrap();
    assert_eq!(r.headers()[LOCATION], "/console/tasks", "a guide's home is their tasks");
    let list = browser().get(app.url("/console/customers")).header(COOKIE, &cookie).send().await.unwrap().text().await.unwrap();
    let (_, mine) = app.lookup("user_id=mine").await;
    let (_, theirs) = app.lookup("user_id=theirs").await;
    assert!(list.contains(&format!("/console/customers/{}\"", mine["id"])), "{list}");
    assert!(!list.contains(&format!("/console/customers/{}\"", theirs["id"])));
    let r = browser().get(app.url(&format!("/console/customers/{}", theirs["id"]))).header(COOKIE, &cookie).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND, "another guide's customer does not exist for this guide");
    for page in ["/console/segments", "/console/audit"] {
        let r = browser().get(app.url(page)).header(COOKIE, &cookie).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{page}");
    }
    let r = browser().get(app.url("/api/v1/stats")).header(COOKIE, &cookie).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "the API says the same through the session");

    // Phone numbers are masked for a guide through the API as on the page, in traits
    // and in the timeline alike; HQ sees them in full.
    app.send("/v1/identify", &json!({"userId": "mine", "traits": {"phone": "+8613800130013"}})).await;
    app.settle().await;
    let id = &mine["id"];
    let r = browser().get(app.url(&format!("/api/v1/profiles/{id}"))).header(COOKIE, &cookie).send().await.unwrap();
    let seen = r.text().await.unwrap();
    assert!(seen.contains("138****0013") && !seen.contains("13800130013"), "{seen}");
    let events = browser().get(app.url(&format!("/api/v1/profiles/{id}/events"))).header(COOKIE, &cookie).send().await.unwrap().text().await.unwrap();
    assert!(!events.contains("13800130013"), "{events}");
    let page = browser().get(app.url(&format!("/console/customers/{id}"))).header(COOKIE, &cookie).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("138****0013") && !page.contains("13800130013"), "{page}");
    let (_, full) = app.get(&format!("/api/v1/profiles/{id}")).await;
    assert_eq!(full["traits"]["phone"], json!("+8613800130013"), "HQ sees the number");
});

// A customer deletes their guide: the guide and the store manager hear of it in WeCom
// with what Siyu sent in the days before, and the console lists the loss.
app_test!(a_lost_customer_is_alerted_and_listed_with_the_touches_before, |app| {
    use siyu_wecom::sim::{SimConfig, Simulator};
    let sim_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sim_base = format!("http://{}", sim_listener.local_addr().unwrap());
    let (token, key) = ("tok", "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt");
    let config = json!({"corp_id": CORP, "token": token, "encoding_aes_key": key, "secret": "s", "api_base": sim_base, "agent_id": 1_000_002});
    std::fs::write(app.store.dir.path().join("wecom.json"), config.to_string()).unwrap();
    std::fs::write(app.store.dir.path().join("outreach.json"), json!({"policy": {"quiet_hours": null}}).to_string()).unwrap();
    let password = app.running.as_ref().unwrap().generated_admin_password.clone().unwrap();
    app.restart().await;
    let sim = Simulator::new(SimConfig { callback_url: Some(app.url("/wecom/callback")), ..SimConfig::new(CORP, "s", token, key) });
    sim.add_staff(&["li.sh0052", "wang.sh0001"]);
    tokio::spawn(siyu_wecom::sim::serve(sim.clone(), sim_listener));
    app.put("/api/v1/stores/SH001", Some(&json!({"name": "静安店", "city": "Shanghai"}))).await;
    app.put("/api/v1/staff/li.sh0052", Some(&json!({"name": "李晨", "store_id": "SH001"}))).await;
    app.put("/api/v1/staff/wang.sh0001", Some(&json!({"name": "王店长", "store_id": "SH001", "role": "store_manager"}))).await;
    let outreach = app.running.as_ref().unwrap().state.outreach.clone();
    outreach.tick().await.unwrap(); // history before now is not news

    // The customer adds the guide through a QR code and gets the welcome …
    let (_, way) =
        app.post("/api/v1/wecom/contact-ways", &json!({"guide": "li.sh0052", "channel": "table_card", "welcome": "{{ traits.name }}，欢迎来静安店！"})).await;
    let http = reqwest::Client::new();
    http.post(format!("{sim_base}/sim/scan"))
        .json(&json!({"config_id": way["config_id"], "external_userid": "wmLost1", "name": "周思远"}))
        .send()
        .await
        .unwrap();
    common::wait_until("the welcome to be recorded", async || {
        let (_, p) = app.lookup("external_userid=wmLost1").await;
        let (_, d) = app.get(&format!("/api/v1/profiles/{}/deliveries", p["id"])).await;
        d["deliveries"].as_array().is_some_and(|d| !d.is_empty())
    })
    .await;
    // An SMS campaign reaches them (the welcome is an answer, not a touch that drives
    // anyone away) …
    app.send(
        "/v1/identify",
        &json!({"userId": "zsy", "traits": {"phone": "+8613800130013", "consent": {"sms": true}}, "context": {"externalIds": [{"id": "wmLost1", "type": "external_userid"}]}}),
    )
    .await;
    app.settle().await;
    app.post("/api/v1/segments", &json!({"name": "contacts", "rule": "has(wecom)"})).await;
    let (s, c) = app
        .post(
            "/api/v1/campaigns",
            &json!({"name": "秋季新豆", "audience": {"segment": "contacts"}, "channel": "sms", "content": "秋季新豆到店，第二杯半价", "holdout_percent": 0.0}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{c}");
    app.post(&format!("/api/v1/campaigns/{}/actions/schedule", c["id"]), &json!({})).await;
    outreach.tick().await.unwrap();
    outreach.tick().await.unwrap();
    // … and then deletes the guide.
    http.post(format!("{sim_base}/sim/remove_guide")).json(&json!({"external_userid": "wmLost1", "userid": "li.sh0052"})).send().await.unwrap();
    common::wait_until("the loss to be applied", async || {
        let (_, p) = app.lookup("external_userid=wmLost1").await;
        p["owners"][0]["status"] == json!("deleted")
    })
    .await;
    outreach.tick().await.unwrap();
    let alerts: Vec<(String, String)> = sim.app_messages().into_iter().filter(|(_, text)| text.starts_with("流失提醒")).collect();
    let to: Vec<&str> = alerts.iter().map(|(u, _)| u.as_str()).collect();
    assert_eq!(to, ["li.sh0052", "wang.sh0001"], "the guide and the store manager: {alerts:?}");
    assert!(alerts[0].1.contains("周思远") && alerts[0].1.contains("李晨") && alerts[0].1.contains("秋季新豆到店"), "{}", alerts[0].1);
    assert!(!alerts[0].1.contains("欢迎来静安店"), "the welcome is not a touch before the loss: {}", alerts[0].1);
    outreach.tick().await.unwrap();
    assert_eq!(sim.app_messages().iter().filter(|(_, t)| t.starts_with("流失提醒")).count(), 2, "alerted once");

    // The console lists the loss with the touch before it.
    let cookie = session_of(&sign_in(&app, &password).await);
    let page = browser().get(app.url("/console/lost")).header(COOKIE, &cookie).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("周思远") && page.contains("li.sh0052") && page.contains("秋季新豆到店") && page.contains("campaign #"), "{page}");
});
