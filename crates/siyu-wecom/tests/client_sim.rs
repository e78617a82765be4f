//! The client against the simulator over real HTTP: one shared token, refresh on expiry,
//! retries on "system busy", typed errors, cursor paging, WeCom's limits.

use std::sync::Arc;

use serde_json::json;
use siyu_wecom::client::{Client, WecomError};
use siyu_wecom::sim::{SimConfig, Simulator};

async fn start() -> (Arc<Simulator>, String) {
    let sim = Simulator::new(SimConfig::new("wwsim", "sim-secret", "t", "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt"));
    sim.add_staff(&["li.sh0052", "wang.sh0001"]);
    let base = siyu_wecom::sim::spawn_local(sim.clone()).await.unwrap();
    (sim, base)
}

async fn scan(base: &str, config_id: &str, external: &str) {
    let v: serde_json::Value = siyu_wecom::client::http_builder()
        .build()
        .unwrap()
        .post(format!("{base}/sim/scan"))
        .json(&json!({"config_id": config_id, "external_userid": external, "name": external}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["errcode"], json!(0), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_token_shared_refreshed_once_and_retries() {
    let (sim, base) = start().await;
    let client = Arc::new(Client::new(&base, "wwsim", "sim-secret"));
    let calls: Vec<_> = (0..20)
        .map(|_| {
            let c = client.clone();
            tokio::spawn(async move { c.get_follow_user_list().await })
        })
        .collect();
    for c in calls {
        assert_eq!(c.await.unwrap().unwrap(), vec!["li.sh0052".to_string(), "wang.sh0001".to_string()]);
    }
    assert_eq!(sim.token_requests(), 1, "twenty concurrent calls, one token");

    sim.expire_tokens();
    assert!(client.get_follow_user_list().await.is_ok());
    assert_eq!(sim.token_requests(), 2, "an expired token is refreshed once");

    sim.set_busy(2);
    assert!(client.get_follow_user_list().await.is_ok(), "system busy is retried");
    sim.set_busy(10);
    assert_eq!(client.get_follow_user_list().await.unwrap_err().code(), Some(-1), "…up to a limit, then a typed error");
    sim.set_busy(0);

    let e = client.list_external_contacts("nobody").await.unwrap_err();
    assert_eq!(e, WecomError::Api { errcode: 84061, errmsg: "not external contact".into() });
    let bad = Client::new(&base, "wwsim", "wrong-secret");
    assert_eq!(bad.get_follow_user_list().await.unwrap_err().code(), Some(40001));
    assert!(!format!("{client:?}").contains("sim-secret"), "the secret is not printed");

    // App messages to staff: who could not be reached comes back; nobody at all is 81013.
    assert_eq!(client.send_text_message(1_000_002, &["li.sh0052", "Gone.Staff"], "提醒").await.unwrap(), vec!["gone.staff".to_string()]);
    assert_eq!(client.send_text_message(1_000_002, &["gone.staff"], "提醒").await.unwrap_err().code(), Some(81013));
    assert_eq!(client.send_text_message(7, &["li.sh0052"], "提醒").await.unwrap_err().code(), Some(40056));
    assert_eq!(sim.app_messages(), vec![("li.sh0052".to_string(), "提醒".to_string())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contact_ways_paging_tags_welcome_and_mass_message_limits() {
    let (sim, base) = start().await;
    let client = Client::new(&base, "wwsim", "sim-secret");
    let (config_id, qr) = client.add_contact_way(&["li.sh0052"], "SH001-poster", "poster").await.unwrap();
    assert!(qr.contains(&config_id));
    let way = client.get_contact_way(&config_id).await.unwrap()["contact_way"].clone();
    assert_eq!((way["state"].clone(), way["remark"].clone(), way["skip_verify"].clone()), (json!("SH001-poster"), json!("poster"), json!(true)), "{way}");
    assert_eq!(way["qr_code"], json!(qr));
    for i in 0..120 {
        scan(&base, &config_id, &format!("wm{i:04}")).await;
    }
    let all = client.batch_get_by_user(&["li.sh0052".to_string()], 50).await.unwrap();
    assert_eq!(all.len(), 120, "three pages followed");
    assert_eq!(client.list_external_contacts("li.sh0052").await.unwrap().len(), 120);
    assert_eq!(client.get_external_contact("wm0007").await.unwrap()["follow_user"][0]["state"], json!("SH001-poster"));

    let group = client.add_corp_tag("口味", &["燕麦奶", "美式"]).await.unwrap();
    let tag = group["tag_group"]["tag"][0]["id"].as_str().unwrap().to_string();
    client.mark_tag("li.sh0052", "wm0001", std::slice::from_ref(&tag), &[]).await.unwrap();
    let contact = client.get_external_contact("wm0001").await.unwrap();
    let marked = &contact["follow_user"][0]["tags"][0];
    assert_eq!((marked["tag_id"].clone(), marked["group_name"].clone(), marked["tag_name"].clone()), (json!(tag), json!("口味"), json!("燕麦奶")));
    // The fields clients read are there, as WeCom documents them.
    for field in ["avatar", "gender"] {
        assert!(contact["external_contact"].get(field).is_some(), "{field}: {contact}");
    }
    for field in ["remark", "description", "add_way", "oper_userid"] {
        assert!(contact["follow_user"][0].get(field).is_some(), "{field}: {contact}");
    }
    client.edit_corp_tag(&tag, "燕麦").await.unwrap();
    let list = client.get_corp_tag_list(&[]).await.unwrap();
    let first = &list["tag_group"][0]["tag"][0];
    assert_eq!(first["name"], json!("燕麦"));
    assert!(first["create_time"].as_i64().unwrap() > 0 && first["order"].is_number(), "{list}");

    // A welcome code works once.
    let code: serde_json::Value = siyu_wecom::client::http_builder()
        .build()
        .unwrap()
        .post(format!("{base}/sim/scan"))
        .json(&json!({"config_id": config_id, "external_userid": "wmNew", "name": "new"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let code = code["welcome_code"].as_str().unwrap();
    client.send_welcome_msg(code, "欢迎").await.unwrap();
    assert_eq!(client.send_welcome_msg(code, "欢迎").await.unwrap_err().code(), Some(41051));

    // Mass messages: per-recipient results; more than 10,000 recipients is refused.
    let to: Vec<String> = vec!["wm0001".into(), "wm0002".into(), "stranger".into()];
    let (msgid, fail) = client.add_msg_template("li.sh0052", &to, "秋季新豆").await.unwrap();
    assert_eq!(fail, vec!["stranger".to_string()]);
    let results = client.get_groupmsg_send_result(&msgid, "li.sh0052").await.unwrap();
    let status: Vec<u64> = results.iter().map(|r| r["status"].as_u64().unwrap()).collect();
    assert_eq!(status, vec![1, 1, 2]);
    let too_many: Vec<String> = (0..10_001).map(|i| format!("x{i}")).collect();
    assert_eq!(client.add_msg_template("li.sh0052", &too_many, "x").await.unwrap_err().code(), Some(40058));
    assert!(sim.mass_messages().len() == 1);
    for _ in 0..3 {
        client.remind_groupmsg_send(&msgid).await.unwrap();
    }
    assert_eq!(client.remind_groupmsg_send(&msgid).await.unwrap_err().code(), Some(40058), "three reminders a day");

    // Transfers: waiting (2) until taken over (1), and at most twice in 90 days.
    let one = vec!["wm0003".to_string()];
    for (from, to, code) in [("li.sh0052", "wang.sh0001", 0), ("wang.sh0001", "li.sh0052", 0), ("li.sh0052", "wang.sh0001", 40058)] {
        let r = client.transfer_customer(from, to, &one).await.unwrap();
        assert_eq!(r["customer"][0]["errcode"], json!(code));
        if code == 0 {
            let waiting = client.transfer_result(from, to, "").await.unwrap();
            assert_eq!(waiting["customer"][0]["status"], json!(2), "{waiting}");
            let again = client.transfer_customer(from, to, &one).await.unwrap();
            assert_eq!(again["customer"][0]["errcode"], json!(40129), "already being transferred");
            sim.complete_transfers().await.unwrap();
            let done = client.transfer_result(from, to, "").await.unwrap();
            assert_eq!(done["customer"][0]["status"], json!(1), "{done}");
        }
    }
}
