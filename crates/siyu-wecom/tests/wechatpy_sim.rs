//! The simulator's fidelity, judged by an independent client: `wechatpy`'s enterprise
//! `WeChatClient` (its API base pointed at the simulator) fetches a token and calls the
//! external-contact endpoints, and gets WeCom's shapes and error codes back.

use std::process::Command;

use serde_json::{Value, json};
use siyu_store::testing::python_with;
use siyu_wecom::sim::{SimConfig, Simulator};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wechatpy_drives_the_simulator() {
    let Some(py) = python_with("wechatpy.enterprise") else { return };
    let sim = Simulator::new(SimConfig::new("wwsim", "sim-secret", "t", "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt"));
    sim.add_staff(&["li.sh0052"]);
    let base = siyu_wecom::sim::spawn_local(sim.clone()).await.unwrap();

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/python/wecom_sim_client.py");
    let b = base.clone();
    let out =
        tokio::task::spawn_blocking(move || Command::new(&py).arg(script).args([&b, "wwsim", "sim-secret", "li.sh0052"]).output().unwrap()).await.unwrap();
    assert!(out.status.success(), "wechatpy failed: {}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["follow_user"], json!(["li.sh0052"]));
    assert_eq!(v["contact_way_state"], json!("SH001-poster"));
    assert_eq!(v["contacts"], json!([]));
    assert_eq!(v["tag_group"], json!("口味"));
    assert_eq!(v["corp_tags"], json!(["口味"]));
    assert_eq!(v["missing_contact_error"], json!(84061), "WeCom's error code reaches wechatpy's exception");
    assert_eq!(v["app_message_invalid"], json!("nobody.here"), "message/send names who it could not reach");
    assert_eq!(v["wrong_agent_error"], json!(40056));
    assert_eq!(sim.app_messages(), vec![("li.sh0052".to_string(), "任务提醒：秋季新豆今晚截止".to_string())]);
    assert_eq!(sim.token_requests(), 1, "wechatpy fetched one token and reused it");
}
