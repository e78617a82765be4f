//! The official Segment Python SDK (PyPI `segment-analytics-python`) works against
//! Siyu unchanged: events sent through it are found through the admin API.
//!
//! The SDK is installed by `scripts/test` into a virtualenv whose Python it passes as
//! `SIYU_TEST_PYTHON`. Without it this test is skipped locally and fails under CI=true.

mod common;

use std::path::PathBuf;
use std::process::Command;

use reqwest::StatusCode;
use serde_json::json;

use common::{TestApp, WRITE_KEY};
use siyu_store::testing::python_with;

fn client_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/python/segment_sdk_client.py")
}

async fn send_with_sdk(app: &TestApp, python: &str, run: &str) {
    let (python, script, host, run) = (python.to_string(), client_script(), app.base.clone(), run.to_string());
    let out = tokio::task::spawn_blocking(move || Command::new(python).arg(script).args([&host, WRITE_KEY, &run]).output().unwrap()).await.unwrap();
    assert!(out.status.success(), "SDK client failed:\n{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

app_test!(the_official_segment_python_sdk_works_unchanged, |app| {
    if let Some(python) = python_with("segment.analytics") {
        send_with_sdk(&app, &python, "r1").await;
        let (status, p) = app.lookup("user_id=sdk-user-r1").await;
        assert_eq!(status, StatusCode::OK, "{p}");
        assert_eq!(p["traits"]["name"], json!("林小满"));
        assert_eq!(p["traits"]["phone"], json!("+8613912345678"));
        let names: Vec<&str> = p["recent_events"].as_array().unwrap().iter().filter_map(|e| e["name"].as_str()).collect();
        for expected in ["Order Completed", "Product Viewed", "Coffee", "Checkout"] {
            assert!(names.contains(&expected), "{expected} missing from {names:?}");
        }
        let kinds: Vec<&str> = p["recent_events"].as_array().unwrap().iter().filter_map(|e| e["type"].as_str()).collect();
        for expected in ["identify", "track", "page", "screen", "group", "alias"] {
            assert!(kinds.contains(&expected), "{expected} missing from {kinds:?}");
        }
        // The alias merged the device profile (with its WeCom identity) into the user.
        for q in ["anonymous_id=sdk-device-r1", "external_userid=wm-r1", "phone=13912345678", "anonymous_id=sdk-anon-r1"] {
            let (_, other) = app.lookup(q).await;
            assert_eq!(other["id"], p["id"], "{q}");
        }
        assert_eq!(app.counts().await, (1, 7));
    }
});
