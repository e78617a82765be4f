//! `siyu import`: CSV and JSON lines, row-level errors with line numbers, all or
//! nothing on fatal errors. The library on both backends; the binary for exit codes.

mod common;

use std::path::{Path, PathBuf};

use common::{wait_ready, wait_until};
use serde_json::json;
use siyu::cli::import::{self, ImportKind, ImportOptions};
use siyu_core::{Identity, IdentityKind};
use siyu_store::{Store, both_backends, profiles};

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

async fn run(store: &Store, kind: ImportKind, path: &Path, strict: bool) -> anyhow::Result<import::ImportReport> {
    import::run(store, kind, path, ImportOptions { strict, progress: false }).await
}

async fn find(store: &Store, kind: IdentityKind, value: &str) -> Option<profiles::ProfileView> {
    let identity = Identity::new(kind, value, None).unwrap();
    store
        .run(move |db| {
            Box::pin(async move {
                match profiles::find_by_identity(db, &identity).await? {
                    Some(id) => profiles::load(db, id, 10).await,
                    None => Ok(None),
                }
            })
        })
        .await
        .unwrap()
}

async fn stats(store: &Store) -> (i64, i64) {
    let s = store.run(|db| Box::pin(profiles::stats(db))).await.unwrap();
    (s.profiles, s.events)
}

both_backends!(organisation_then_customers_from_csv, |store: Store, _log: PathBuf| async move {
    let dir = tempfile::tempdir().unwrap();
    let stores = write(
        dir.path(),
        "stores.csv",
        "id,name,city,time_zone\nSH001,静安寺店,Shanghai,Asia/Shanghai\nGZ001,天河城店,Guangzhou,\nXX1,Nowhere,,\nBAD,Bad zone,Beijing,Asia/Atlantis\n",
    );
    let r = run(&store, ImportKind::Stores, &stores, false).await.unwrap();
    assert_eq!((r.rows, r.imported), (4, 2));
    assert_eq!(r.errors.iter().map(|e| e.line).collect::<Vec<_>>(), vec![4, 5]);
    assert!(r.errors[0].reason.contains("city"), "{}", r.errors[0].reason);
    assert!(r.errors[1].reason.contains("Asia/Atlantis"), "{}", r.errors[1].reason);

    let staff = write(
        dir.path(),
        "staff.csv",
        "userid,name,store_id,role,customer_cap\nwang.sh,王芳,SH001,guide,\nli.gz,李娜,GZ001,店长,\nghost,Ghost,ZZ999,guide,\nodd,Odd,SH001,janitor,\n",
    );
    let r = run(&store, ImportKind::Staff, &staff, false).await.unwrap();
    assert_eq!(r.imported, 2);
    assert_eq!(
        r.errors.iter().map(|e| (e.line, e.reason.contains("import stores first") || e.reason.contains("janitor"))).collect::<Vec<_>>(),
        vec![(4, true), (5, true)]
    );

    let customers = write(
        dir.path(),
        "customers.csv",
        "user_id,phone,name,city,tags,staff_userid,unionid,email\n\
        c1,13800000001,张三,Shanghai,说粤语;燕麦奶,wang.sh,ouA,\n\
        ,13800000002,李四,Guangzhou,,li.gz,,\n\
        c3,not-a-phone,王五,Shanghai,,,,\n\
        ,,,Nowhere,,,,\n\
        ,,赵六,Beijing,,,,Zhao.Liu@Example.com\n",
    );
    let r = run(&store, ImportKind::Customers, &customers, false).await.unwrap();
    assert_eq!((r.rows, r.imported), (5, 3), "{:?}", r.errors);
    let c5 = find(&store, IdentityKind::Email, "zhao.liu@example.com").await.expect("known only by e-mail");
    assert_eq!(c5.traits["email"], json!("zhao.liu@example.com"));
    assert_eq!(r.errors.iter().map(|e| e.line).collect::<Vec<_>>(), vec![4, 5]);
    assert!(r.errors[0].reason.contains("not a phone"), "{}", r.errors[0].reason);
    assert!(r.errors[1].reason.contains("no identity"), "{}", r.errors[1].reason);
    let c1 = find(&store, IdentityKind::Phone, "+86 138 0000 0001").await.expect("c1 by phone");
    assert_eq!(c1.traits["name"], json!("张三"));
    assert_eq!(c1.tags, vec!["燕麦奶".to_string(), "说粤语".to_string()]);
    assert_eq!(c1.owners[0].staff_userid, "wang.sh");
    assert!(find(&store, IdentityKind::Unionid, "ouA").await.is_some());
    let c2 = find(&store, IdentityKind::Phone, "13800000002").await.expect("known only by phone");
    assert_eq!(c2.owners[0].store_id.as_deref(), Some("GZ001"));

    // The same file again changes nothing.
    let before = stats(&store).await;
    let again = run(&store, ImportKind::Customers, &customers, false).await.unwrap();
    assert_eq!((again.imported, again.duplicates), (0, 3));
    assert_eq!(stats(&store).await, before);
});

both_backends!(strict_mode_and_fatal_errors_import_nothing, |store: Store, _log: PathBuf| async move {
    let dir = tempfile::tempdir().unwrap();
    let events = write(
        dir.path(),
        "events.jsonl",
        concat!(
            r#"{"type":"track","userId":"e1","event":"Order Completed","properties":{"revenue_fen":2900},"messageId":"imp-1"}"#,
            "\n",
            "\n",
            r#"{"type":"identify","userId":"e1","traits":{"tier":"gold"},"messageId":"imp-2"}"#,
            "\n",
            r#"{"type":"track","event":"no id","messageId":"imp-3"}"#,
            "\n",
            "{not json\n",
        ),
    );
    let err = run(&store, ImportKind::Events, &events, true).await.unwrap_err();
    assert!(err.to_string().contains("--strict"), "{err}");
    assert_eq!(stats(&store).await, (0, 0), "strict: nothing imported");

    let r = run(&store, ImportKind::Events, &events, false).await.unwrap();
    assert_eq!((r.rows, r.imported), (4, 2));
    assert_eq!(r.errors.iter().map(|e| e.line).collect::<Vec<_>>(), vec![4, 5]);
    assert!(r.errors[0].reason.contains("userId"), "{}", r.errors[0].reason);
    assert_eq!(stats(&store).await, (1, 2));

    let csv = write(
        dir.path(),
        "events.csv",
        "type,event,user_id,timestamp,revenue_fen,properties\ntrack,Coupon Redeemed,e1,2026-05-01T08:00:00Z,0,\"{\"\"coupon_code\"\":\"\"C1\"\"}\"\ntrack,Shared,e1,yesterday,,\n",
    );
    let r = run(&store, ImportKind::Events, &csv, false).await.unwrap();
    assert_eq!(r.imported, 1);
    assert_eq!(r.errors[0].line, 3);
    let e1 = find(&store, IdentityKind::UserId, "e1").await.unwrap();
    let redeemed = e1.recent_events.iter().find(|e| e.name.as_deref() == Some("Coupon Redeemed")).unwrap();
    assert_eq!(redeemed.payload, json!({"coupon_code": "C1", "revenue_fen": "0"}));

    assert!(run(&store, ImportKind::Events, &dir.path().join("missing.jsonl"), false).await.is_err());
    let unknown = write(dir.path(), "events.xlsx", "whatever");
    let err = run(&store, ImportKind::Events, &unknown, false).await.unwrap_err();
    assert!(err.to_string().contains(".csv"), "{err}");
});

#[test]
fn the_cli_reports_rows_and_exits_non_zero_on_rejections() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "stores.csv", "id,name,city\nSH001,静安寺店,Shanghai\nBAD,,Shanghai\n");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_siyu"))
        .args(["import", "stores"])
        .arg(&file)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env("SIYU_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    assert!(stdout.contains("2 rows read, 1 imported, 0 already present, 1 rejected"), "{stdout}");
    assert!(stdout.contains("line 3: missing name"), "{stdout}");
    let strict = std::process::Command::new(env!("CARGO_BIN_EXE_siyu"))
        .args(["import", "stores", "--strict"])
        .arg(&file)
        .arg("--data-dir")
        .arg(dir.path().join("strict"))
        .env("SIYU_LOG", "warn")
        .output()
        .unwrap();
    assert_eq!(strict.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&strict.stderr).contains("nothing was imported"));
}

/// `siyu import` beside a running server goes through it: the segment engine counts the
/// imported customers at once (a direct import reached only the store until a restart),
/// tags and guides included, and importing again stores nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn importing_beside_a_running_server_reaches_its_segments_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    /// Stops the server however the test ends.
    struct Killed(std::process::Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _server = Killed(
        std::process::Command::new(env!("CARGO_BIN_EXE_siyu"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
            .arg(&data)
            .env("SIYU_ADMIN_TOKEN", "import-admin")
            .env("SIYU_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let base = format!("http://127.0.0.1:{port}");
    let client = siyu_wecom::client::http_builder().no_proxy().build().unwrap();
    wait_ready(&client, &base).await;
    let admin = |method: reqwest::Method, path: &str, body: Option<serde_json::Value>| {
        let mut req = client.request(method, format!("{base}{path}")).bearer_auth("import-admin");
        if let Some(b) = body {
            req = req.json(&b);
        }
        async move {
            let resp = req.send().await.unwrap();
            (resp.status(), resp.json::<serde_json::Value>().await.unwrap_or_default())
        }
    };
    admin(reqwest::Method::POST, "/api/v1/segments", Some(json!({"name": "vip", "rule": "tag = \"VIP\""}))).await;
    let stores = write(dir.path(), "stores.csv", "id,name,city\nSH001,静安寺店,Shanghai\n");
    let staff = write(dir.path(), "staff.csv", "userid,name,store_id\nli,李,SH001\n");
    let customers = write(
        dir.path(),
        "customers.csv",
        "user_id,phone,name,tags,staff_userid,added_at\nm1,13800000001,王,VIP,li,2026-10-01T08:00:00Z\nm2,13800000002,张,VIP;new,,\nm3,,赵,,li,\n,,,VIP,,\n",
    );
    let import = |kind: &str, file: &Path, token: Option<&str>| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_siyu"));
        cmd.args(["import", kind]).arg(file).arg("--data-dir").arg(&data).env("SIYU_LOG", "warn");
        if let Some(t) = token {
            cmd.env("SIYU_ADMIN_TOKEN", t);
        }
        tokio::task::block_in_place(|| cmd.output().unwrap())
    };
    // Stores and staff need the admin token: a clear error without it.
    let out = import("stores", &stores, None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("SIYU_ADMIN_TOKEN"), "{}", String::from_utf8_lossy(&out.stderr));
    for (kind, file) in [("stores", &stores), ("staff", &staff)] {
        let out = import(kind, file, Some("import-admin"));
        assert!(out.status.success(), "{kind}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let out = import("customers", &customers, Some("import-admin"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "one row is rejected: {stdout} {}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("4 rows read, 3 imported") && stdout.contains("line 5"), "{stdout}");
    // No restart: the running engine already counts them.
    let mut counted = json!(null);
    wait_until("the engine to count the imported VIP tags", async || {
        let (_, p) = admin(reqwest::Method::POST, "/api/v1/segments/preview", Some(json!({"rule": "tag = \"VIP\""}))).await;
        counted = p["count"].clone();
        counted == json!(2)
    })
    .await;
    assert_eq!(counted, json!(2), "the engine sees the imported tags");
    let (_, owned) = admin(reqwest::Method::POST, "/api/v1/segments/preview", Some(json!({"rule": "owner.guide = \"li\""}))).await;
    assert_eq!(owned["count"], json!(2), "{owned}");
    let (_, m1) = admin(reqwest::Method::GET, "/api/v1/profiles/lookup?user_id=m1", None).await;
    assert_eq!(m1["traits"]["name"], json!("王"));
    assert_eq!(m1["owners"][0]["added_at"], json!("2026-10-01T08:00:00.000Z"), "{m1}");
    // Again: nothing stored twice.
    let (_, before) = admin(reqwest::Method::GET, "/api/v1/stats", None).await;
    let again = import("customers", &customers, Some("import-admin"));
    assert_eq!(again.status.code(), Some(2), "{}", String::from_utf8_lossy(&again.stderr));
    assert!(String::from_utf8_lossy(&again.stdout).contains("4 rows read, 3 imported"));
    wait_until("the server to apply the second import (ingest lag 0)", async || {
        let (_, status) = admin(reqwest::Method::GET, "/api/v1/ingest", None).await;
        status["lag"] == json!(0)
    })
    .await;
    let (_, after) = admin(reqwest::Method::GET, "/api/v1/stats", None).await;
    assert_eq!((before["profiles"].clone(), before["events"].clone()), (after["profiles"].clone(), after["events"].clone()), "{before} {after}");
}
