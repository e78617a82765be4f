//! The simulator's fidelity, judged by an independent client: `wechatpy`'s enterprise
//! `WeChatClient` (its API base pointed at the simulator) fetches a token and calls the
//! external-contact endpoints, and gets WeCom's shapes and error codes back.

use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use siyu_wecom::sim::{SimConfig, Simulator};

fn python() -> Option<String> {
    let python = std::env::var("SIYU_TEST_PYTHON").unwrap_or_else(|_| "python3".to_string());
    let ok = Command::new(&python).args(["-c", "import wechatpy.enterprise"]).output().map(|o| o.status.success()).unwrap_or(false);
    if ok {
        return Some(python);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!("{python} cannot import wechatpy; scripts/test installs it (CI must run this test)");
    }
    eprintln!("skipping: {python} cannot import wechatpy (run scripts/test to install it)");
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wechatpy_drives_the_simulator() {
    let Some(py) = python() else { return };
    let sim = Simulator::new(SimConfig {
        corp_id: "wwsim".into(),
        secret: "sim-secret".into(),
        token_ttl: Duration::from_secs(7200),
        receive_limit_per_month: 0,
        customers_per_staff: 5_000,
        callback_url: None,
        callback_token: "t".into(),
        encoding_aes_key: "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt".into(),
    });
    sim.add_staff(&["li.sh0052"]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(siyu_wecom::sim::serve(sim.clone(), listener));

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/python/wecom_sim_client.py");
    let b = base.clone();
    let out = tokio::task::spawn_blocking(move || Command::new(&py).arg(script).args([&b, "wwsim", "sim-secret", "li.sh0052"]).output().unwrap()).await.unwrap();
    assert!(out.status.success(), "wechatpy failed: {}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["follow_user"], json!(["li.sh0052"]));
    assert_eq!(v["contact_way_state"], json!("SH001-poster"));
    assert_eq!(v["contacts"], json!([]));
    assert_eq!(v["tag_group"], json!("口味"));
    assert_eq!(v["corp_tags"], json!(["口味"]));
    assert_eq!(v["missing_contact_error"], json!(84061), "WeCom's error code reaches wechatpy's exception");
    assert_eq!(sim.token_requests(), 1, "wechatpy fetched one token and reused it");
}
