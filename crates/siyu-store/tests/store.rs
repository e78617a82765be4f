//! The store suite: every test runs on SQLite and on PostgreSQL.

use serde_json::json;
use sha2::{Digest, Sha256};
use siyu_core::message::{ParseContext, parse_batch};
use siyu_core::org::{Staff, StaffRole, Store as StoreInfo};
use siyu_core::{Identity, IdentityKind, Message, ProfileId, Timestamp};
use siyu_store::ingest::{self, Outcome};
use siyu_store::profiles::{self, EventCursor};
use siyu_store::{Backend, Store, StoreConfig, both_backends, org, params};

/// Parses a Segment batch the way the HTTP layer does.
fn messages(batch: serde_json::Value) -> Vec<Message> {
    let body = serde_json::to_vec(&json!({ "batch": batch })).unwrap();
    let next = || uuid::Uuid::new_v4().to_string();
    let cx = ParseContext { received_at: Timestamp::now(), new_message_id: &next };
    parse_batch(&body, &cx).expect("valid batch").messages
}

async fn apply(store: &Store, batch: serde_json::Value) -> Vec<Outcome> {
    let msgs = messages(batch);
    store
        .transaction(move |db| {
            Box::pin(async move {
                let mut out = Vec::new();
                for m in &msgs {
                    out.push(ingest::apply(db, m).await?);
                }
                Ok(out)
            })
        })
        .await
        .unwrap()
}

async fn lookup(store: &Store, kind: IdentityKind, value: &str) -> Option<ProfileId> {
    let identity = Identity::new(kind, value, None).unwrap();
    store.run(move |db| Box::pin(async move { profiles::find_by_identity(db, &identity).await })).await.unwrap()
}

async fn load(store: &Store, id: ProfileId) -> profiles::ProfileView {
    store.run(move |db| Box::pin(async move { profiles::load(db, id, 50).await })).await.unwrap().expect("profile")
}

async fn stats(store: &Store) -> profiles::Stats {
    store.run(|db| Box::pin(profiles::stats(db))).await.unwrap()
}

both_backends!(identify_creates_a_profile_findable_by_every_identity, |store: Store, _log: std::path::PathBuf| async move {
    apply(
        &store,
        json!([{
            "type": "identify", "userId": "u1", "anonymousId": "a1", "messageId": "m1",
            "traits": {"name": "王芳", "phone": "138 0013 8000", "city": "Shanghai"},
            "context": {"externalIds": [
                {"id": "wmEXT1", "type": "external_userid", "collection": "users", "encoding": "none"},
                {"id": "oUNION1", "type": "unionid"},
                {"id": "oOPEN1", "type": "openid", "appId": "wxmini"},
                {"id": "M0001", "type": "member_no"}
            ]}
        }]),
    )
    .await;
    let id = lookup(&store, IdentityKind::UserId, "u1").await.expect("found by user id");
    for (kind, value) in [
        (IdentityKind::AnonymousId, "a1"),
        (IdentityKind::ExternalUserid, "wmEXT1"),
        (IdentityKind::Unionid, "oUNION1"),
        (IdentityKind::Openid, "wxmini:oOPEN1"),
        (IdentityKind::Phone, "+8613800138000"),
        (IdentityKind::MemberNo, "M0001"),
    ] {
        assert_eq!(lookup(&store, kind, value).await, Some(id), "{kind}");
    }
    let p = load(&store, id).await;
    assert_eq!(p.traits["name"], json!("王芳"));
    assert_eq!(p.traits["phone"], json!("+8613800138000"), "phone stored normalised");
    assert_eq!(p.identities.len(), 7);
    assert_eq!(p.recent_events.len(), 1);
    assert_eq!(stats(&store).await.profiles, 1);
});

both_backends!(a_repeated_message_id_is_stored_once, |store: Store, _log: std::path::PathBuf| async move {
    let msg = json!({"type": "track", "userId": "u1", "event": "Order Completed", "messageId": "dup-1",
                     "properties": {"revenue": 3200}});
    let first = apply(&store, json!([msg.clone()])).await;
    let again = apply(&store, json!([msg.clone(), msg])).await;
    assert!(!first[0].is_duplicate());
    assert!(again.iter().all(Outcome::is_duplicate));
    let id = lookup(&store, IdentityKind::UserId, "u1").await.unwrap();
    let events = load(&store, id).await.recent_events;
    assert_eq!(events.len(), 1);
    assert_eq!(stats(&store).await.events, 0, "counters are the writer's job; apply alone does not bump them");
});

// What the indexer does with a large batch: multi-row statements, same results as
// applying the messages one by one.
both_backends!(a_large_batch_is_applied_as_one_by_one_would, |store: Store, _log: std::path::PathBuf| async move {
    apply(&store, json!([{"type": "track", "userId": "seen", "event": "Page", "messageId": "old-1"}])).await;
    let mut batch = Vec::new();
    // 230 messages: two full multi-row chunks and a remainder.
    for i in 0..220 {
        batch.push(json!({"type": "track", "anonymousId": "device-7", "event": "Product Viewed", "messageId": format!("v{i}")}));
    }
    batch.push(json!({"type": "track", "anonymousId": "device-7", "event": "Product Viewed", "messageId": "v3"}));
    batch.push(json!({"type": "track", "userId": "seen", "event": "Page", "messageId": "old-1"}));
    batch.push(json!({"type": "identify", "userId": "member-7", "traits": {"tier": "gold"}}));
    // The anonymous device turns out to be member-7: its 220 events move to the survivor.
    batch.push(json!({"type": "alias", "previousId": "device-7", "userId": "member-7"}));
    for i in 0..6 {
        batch.push(json!({"type": "track", "userId": "member-7", "event": "Order Completed", "messageId": format!("o{i}")}));
    }
    let msgs = messages(json!(batch));
    let out = store.transaction(move |db| Box::pin(async move { ingest::apply_all(db, &msgs.iter().collect::<Vec<_>>(), None).await })).await.unwrap();
    assert_eq!(out.len(), 230);
    assert!(out[..220].iter().all(|o| !o.is_duplicate()));
    assert!(out[220].is_duplicate(), "repeated inside the batch");
    assert!(out[221].is_duplicate(), "seen in an earlier batch");
    let member = lookup(&store, IdentityKind::UserId, "member-7").await.unwrap();
    assert_eq!(lookup(&store, IdentityKind::AnonymousId, "device-7").await, Some(member));
    let events = store.run(move |db| Box::pin(async move { profiles::events_page(db, member, None, 1000).await })).await.unwrap();
    assert_eq!(events.len(), 220 + 2 + 6, "viewed + identify + alias + orders, all on the survivor");
    assert_eq!(load(&store, member).await.traits["tier"], json!("gold"));

    // A messageId repeated inside one multi-row statement (a full chunk of 100).
    let repeated: Vec<serde_json::Value> =
        (0..100).map(|i| json!({"type": "track", "userId": "u-chunk", "event": "Page", "messageId": format!("c{}", i % 99)})).collect();
    let msgs = messages(json!(repeated));
    let out = store.transaction(move |db| Box::pin(async move { ingest::apply_all(db, &msgs.iter().collect::<Vec<_>>(), None).await })).await.unwrap();
    assert_eq!(out.iter().filter(|o| o.is_duplicate()).count(), 1, "the second c0 only");
    assert!(out[99].is_duplicate());
});

both_backends!(latest_trait_wins_even_out_of_order, |store: Store, _log: std::path::PathBuf| async move {
    apply(
        &store,
        json!([
            {"type": "identify", "userId": "u1", "timestamp": "2024-05-02T10:00:00Z", "traits": {"tier": "gold", "city": "Hangzhou"}},
            {"type": "identify", "userId": "u1", "timestamp": "2024-05-01T10:00:00Z", "traits": {"tier": "silver", "language": "Cantonese"}},
        ]),
    )
    .await;
    apply(
        &store,
        json!([
            {"type": "track", "userId": "u1", "event": "Checked In", "timestamp": "2024-04-01T00:00:00Z",
             "context": {"traits": {"city": "Suzhou"}}},
        ]),
    )
    .await;
    let id = lookup(&store, IdentityKind::UserId, "u1").await.unwrap();
    let p = load(&store, id).await;
    assert_eq!(p.traits["tier"], json!("gold"), "the older identify arrived later and must not win");
    assert_eq!(p.traits["language"], json!("Cantonese"));
    assert_eq!(p.traits["city"], json!("Hangzhou"));
    assert_eq!(p.first_seen, Timestamp::parse_iso8601("2024-04-01T00:00:00Z").unwrap());
    assert_eq!(p.last_seen, Timestamp::parse_iso8601("2024-05-02T10:00:00Z").unwrap());
});

both_backends!(alias_merges_the_anonymous_profile_into_the_user, |store: Store, _log: std::path::PathBuf| async move {
    apply(
        &store,
        json!([
            {"type": "page", "anonymousId": "anon-9", "name": "Menu", "timestamp": "2024-05-01T08:00:00Z"},
            {"type": "track", "anonymousId": "anon-9", "event": "Product Viewed", "timestamp": "2024-05-01T08:01:00Z",
             "context": {"traits": {"favourite": "oat latte"}}},
            {"type": "identify", "userId": "member-7", "timestamp": "2024-05-01T09:00:00Z", "traits": {"name": "Chen"}},
        ]),
    )
    .await;
    let anon = lookup(&store, IdentityKind::AnonymousId, "anon-9").await.unwrap();
    let user = lookup(&store, IdentityKind::UserId, "member-7").await.unwrap();
    assert_ne!(anon, user);
    assert_eq!(stats_profiles(&store).await, 2);

    let out = apply(&store, json!([{"type": "alias", "previousId": "anon-9", "userId": "member-7"}])).await;
    let survivor = anon.min(user);
    let merged = anon.max(user);
    assert_eq!(out[0].profile_id, Some(survivor));
    assert_eq!(out[0].merged, vec![merged]);
    assert_eq!(lookup(&store, IdentityKind::AnonymousId, "anon-9").await, Some(survivor));
    assert_eq!(lookup(&store, IdentityKind::UserId, "member-7").await, Some(survivor));
    let p = load(&store, merged).await;
    assert_eq!(p.id, survivor, "loading the merged id follows to the survivor");
    assert_eq!(p.merged_from, vec![merged]);
    assert_eq!(p.recent_events.len(), 4, "events of both profiles plus the alias itself");
    assert_eq!(p.traits["favourite"], json!("oat latte"));
    assert_eq!(p.traits["name"], json!("Chen"));
    assert_eq!(stats_profiles(&store).await, 1);
});

async fn stats_profiles(store: &Store) -> i64 {
    stats(store).await.profiles
}

both_backends!(shared_external_ids_merge_profiles, |store: Store, _log: std::path::PathBuf| async move {
    // The mini program knows the customer by unionid; the WeCom side by external_userid.
    apply(
        &store,
        json!([
            {"type": "track", "anonymousId": "mp-device-1", "event": "Order Completed",
             "context": {"externalIds": [{"id": "oUnion42", "type": "unionid"}]}},
            {"type": "track", "userId": "u42", "event": "Contact Added",
             "properties": {"staff_userid": "guide-1"},
             "context": {"externalIds": [{"id": "wmGuest42", "type": "external_userid"}]}},
        ]),
    )
    .await;
    let a = lookup(&store, IdentityKind::Unionid, "oUnion42").await.unwrap();
    let b = lookup(&store, IdentityKind::UserId, "u42").await.unwrap();
    assert_ne!(a, b);
    // A later message names both: they are one customer.
    let out = apply(
        &store,
        json!([
            {"type": "identify", "userId": "u42",
             "context": {"externalIds": [{"id": "oUnion42", "type": "unionid"}]}},
        ]),
    )
    .await;
    let survivor = a.min(b);
    assert_eq!(out[0].profile_id, Some(survivor));
    for (kind, value) in [
        (IdentityKind::Unionid, "oUnion42"),
        (IdentityKind::UserId, "u42"),
        (IdentityKind::AnonymousId, "mp-device-1"),
        (IdentityKind::ExternalUserid, "wmGuest42"),
    ] {
        assert_eq!(lookup(&store, kind, value).await, Some(survivor), "{kind}");
    }
    let p = load(&store, survivor).await;
    assert_eq!(p.owners.len(), 1, "the guide relationship moved too");
    assert_eq!(p.recent_events.len(), 3);
});

both_backends!(a_shared_device_does_not_merge_two_members, |store: Store, _log: std::path::PathBuf| async move {
    apply(&store, json!([{"type": "identify", "userId": "mum", "anonymousId": "family-tablet"}])).await;
    let out = apply(&store, json!([{"type": "track", "userId": "dad", "anonymousId": "family-tablet", "event": "Order Completed"}])).await;
    let mum = lookup(&store, IdentityKind::UserId, "mum").await.unwrap();
    let dad = lookup(&store, IdentityKind::UserId, "dad").await.unwrap();
    assert_ne!(mum, dad);
    assert_eq!(out[0].profile_id, Some(dad));
    assert!(out[0].merged.is_empty());
    assert_eq!(lookup(&store, IdentityKind::AnonymousId, "family-tablet").await, Some(mum), "the device stays put");
});

both_backends!(tags_are_added_and_removed, |store: Store, _log: std::path::PathBuf| async move {
    apply(&store, json!([{"type": "identify", "userId": "u1"}])).await;
    let id = lookup(&store, IdentityKind::UserId, "u1").await.unwrap();
    let (added, again, removed, gone) = store
        .transaction(move |db| {
            Box::pin(async move {
                let now = Timestamp::now();
                let added = profiles::add_tag(db, id, "speaks-cantonese", "manual", now).await?;
                let again = profiles::add_tag(db, id, "speaks-cantonese", "manual", now).await?;
                profiles::add_tag(db, id, "vip", "manual", now).await?;
                let removed = profiles::remove_tag(db, id, "vip").await?;
                let gone = profiles::remove_tag(db, id, "vip").await?;
                Ok((added, again, removed, gone))
            })
        })
        .await
        .unwrap();
    assert!(added && !again && removed && !gone);
    assert_eq!(load(&store, id).await.tags, vec!["speaks-cantonese".to_string()]);
});

both_backends!(guides_own_customers_through_contact_events, |store: Store, _log: std::path::PathBuf| async move {
    store
        .transaction(|db| {
            Box::pin(async move {
                let now = Timestamp::now();
                let s = StoreInfo { id: "SH001".into(), name: "静安寺店".into(), city: "Shanghai".into(), time_zone: "Asia/Shanghai".into() };
                org::upsert_store(db, &s, now).await?;
                let g = Staff { userid: "zhangwei".into(), name: "张伟".into(), store_id: Some("SH001".into()), role: StaffRole::Guide, customer_cap: 5000 };
                org::upsert_staff(db, &g, now).await
            })
        })
        .await
        .unwrap();
    apply(
        &store,
        json!([
            {"type": "track", "userId": "c1", "event": "Contact Added", "timestamp": "2024-05-01T00:00:00Z",
             "properties": {"staff_userid": "zhangwei", "state": "SH001-table-card"}},
            {"type": "track", "userId": "c2", "event": "Contact Added", "timestamp": "2024-05-01T00:00:00Z",
             "properties": {"staff_userid": "zhangwei"}},
            {"type": "track", "userId": "c2", "event": "Contact Deleted", "timestamp": "2024-05-03T00:00:00Z",
             "properties": {"staff_userid": "zhangwei"}},
        ]),
    )
    .await;
    let c1 = lookup(&store, IdentityKind::UserId, "c1").await.unwrap();
    let p = load(&store, c1).await;
    assert_eq!(p.owners[0].staff_userid, "zhangwei");
    assert_eq!(p.owners[0].store_id.as_deref(), Some("SH001"));
    assert_eq!(p.owners[0].state.as_deref(), Some("SH001-table-card"));
    let (active, all, stores, staff) = store
        .run(|db| {
            Box::pin(async move {
                Ok((
                    org::staff_customers(db, "zhangwei", false, None, 100).await?,
                    org::staff_customers(db, "zhangwei", true, None, 100).await?,
                    org::list_stores(db, Some("Shanghai")).await?,
                    org::list_staff(db, Some("SH001")).await?,
                ))
            })
        })
        .await
        .unwrap();
    assert_eq!(active.iter().map(|c| c.profile_id).collect::<Vec<_>>(), vec![c1]);
    assert_eq!(all.len(), 2);
    assert_eq!(all[1].status, "deleted");
    assert_eq!((stores.len(), stores[0].staff, stores[0].customers), (1, 1, 1));
    assert_eq!(staff[0].active_customers, 1);
});

both_backends!(the_timeline_pages_newest_first, |store: Store, _log: std::path::PathBuf| async move {
    let batch: Vec<_> = (0..25)
        .map(|i| {
            json!({"type": "track", "userId": "u1", "event": format!("E{i}"),
                        "timestamp": format!("2024-05-01T00:{i:02}:00Z")})
        })
        .collect();
    apply(&store, json!(batch)).await;
    let id = lookup(&store, IdentityKind::UserId, "u1").await.unwrap();
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = store.run(move |db| Box::pin(async move { profiles::events_page(db, id, cursor, 10).await })).await.unwrap();
        if page.is_empty() {
            break;
        }
        let last = page.last().unwrap();
        cursor = Some(EventCursor { ts: last.timestamp.0, id: last.id });
        seen.extend(page.into_iter().map(|e| e.name.unwrap()));
    }
    let expected: Vec<_> = (0..25).rev().map(|i| format!("E{i}")).collect();
    assert_eq!(seen, expected);
});

both_backends!(the_pipeline_acknowledges_durably_and_applies_everything, |store: Store, log: std::path::PathBuf| async move {
    let pipeline = ingest::start(&store, &log, vec![]).await.unwrap();
    let mut tasks = Vec::new();
    for r in 0..40 {
        let pipeline = pipeline.clone();
        let batch: Vec<_> = (0..25)
            .map(|i| {
                json!({"type": "track", "userId": format!("u{}", (r * 25 + i) % 300), "event": "Order Completed",
                            "messageId": format!("w-{r}-{i}")})
            })
            .collect();
        let msgs = messages(json!(batch));
        tasks.push(tokio::spawn(async move { pipeline.submit(msgs).await }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    pipeline.settle().await;
    // A retry of an acknowledged message stores nothing new.
    pipeline.submit_and_apply(messages(json!([{"type": "track", "userId": "u1", "event": "Order Completed", "messageId": "w-0-1"}]))).await.unwrap();
    let s = stats(&store).await;
    assert_eq!((s.profiles, s.events), (300, 1000));
    assert_eq!(pipeline.indexed(), 1001);
});

both_backends!(an_indexer_behind_its_feed_reads_the_log_in_order, |store: Store, log: std::path::PathBuf| async move {
    // A feed of one message: nearly every group is left for the indexer to read back
    // from the log (ahead of time, on the log reader's thread).
    let pipeline = ingest::start_with(&store, &log, vec![], ingest::IngestOptions { feed_messages: 1 }).await.unwrap();
    let mut tasks = Vec::new();
    for r in 0..60 {
        let pipeline = pipeline.clone();
        // One timestamp for all: of equal timestamps the message applied last sets the
        // trait, so a customer's trait tells which of their messages was applied last.
        let batch: Vec<_> = (0..20)
            .map(|i| {
                json!({"type": "identify", "userId": format!("u{}", r % 7), "messageId": format!("f-{r}-{i}"),
                            "timestamp": "2026-11-30T08:00:00Z", "traits": {"request": r, "message": i}})
            })
            .collect();
        tasks.push(tokio::spawn(async move { (r, pipeline.submit(messages(json!(batch))).await.unwrap()) }));
    }
    let mut last_in_log = std::collections::HashMap::new();
    for t in tasks {
        let (r, receipt) = t.await.unwrap();
        let last = last_in_log.entry(r % 7).or_insert((0, 0));
        if receipt.last_seq > last.0 {
            *last = (receipt.last_seq, r);
        }
    }
    pipeline.settle().await;
    assert_eq!(stats(&store).await.events, 1200);
    assert_eq!(pipeline.indexed(), 1200);
    for (u, (_, r)) in last_in_log {
        let id = lookup(&store, IdentityKind::UserId, &format!("u{u}")).await.unwrap();
        let traits = load(&store, id).await.traits;
        assert_eq!((&traits["request"], &traits["message"]), (&json!(r), &json!(19)), "u{u}: the last message in the log was applied last");
    }
});

both_backends!(unapplied_log_records_are_replayed_at_start, |store: Store, log: std::path::PathBuf| async move {
    // Records made durable by a process that died before its indexer applied them.
    let mut writer = ingest::log::IngestLog::open(&log, 0).unwrap();
    for m in messages(json!([
        {"type": "identify", "userId": "late", "messageId": "r-1", "traits": {"tier": "gold"}},
        {"type": "track", "userId": "late", "event": "Order Completed", "messageId": "r-2"},
    ])) {
        writer.append(&m).unwrap();
    }
    writer.sync().unwrap();
    drop(writer);
    let pipeline = ingest::start(&store, &log, vec![]).await.unwrap();
    pipeline.wait_indexed(2).await;
    let id = lookup(&store, IdentityKind::UserId, "late").await.expect("replayed");
    assert_eq!(load(&store, id).await.recent_events.len(), 2);
    assert_eq!(stats(&store).await.events, 2);
    // Starting again replays nothing twice.
    pipeline.close().await;
    let again = ingest::start(&store, &log, vec![]).await.unwrap();
    again.submit_and_apply(messages(json!([{"type": "track", "userId": "late", "event": "Shared", "messageId": "r-3"}]))).await.unwrap();
    assert_eq!(stats(&store).await.events, 3);
});

both_backends!(observers_hear_each_message_acknowledged_before_committed, |store: Store, log: std::path::PathBuf| async move {
    // One record left unapplied by an earlier process: replayed, and heard of like the rest.
    let mut writer = ingest::log::IngestLog::open(&log, 0).unwrap();
    for m in messages(json!([{"type": "track", "userId": "early", "event": "Shared", "messageId": "o-0"}])) {
        writer.append(&m).unwrap();
    }
    writer.sync().unwrap();
    drop(writer);
    let heard: std::sync::Arc<std::sync::Mutex<Vec<(&'static str, u64, String)>>> = Default::default();
    let (h1, h2) = (heard.clone(), heard.clone());
    let observers = ingest::Observers {
        acknowledged: vec![Box::new(move |a: std::sync::Arc<ingest::Acknowledged>| {
            let mut h = h1.lock().unwrap();
            for (i, m) in a.messages.iter().enumerate() {
                h.push(("acknowledged", a.first_seq + i as u64, m.message_id.clone()));
            }
        })],
        committed: vec![Box::new(move |c: &std::sync::Arc<ingest::Committed>| {
            let mut h = h2.lock().unwrap();
            for (i, (m, _)) in c.messages.iter().enumerate() {
                h.push(("committed", c.seq_of(i), m.message_id.clone()));
            }
        })],
    };
    let pipeline = ingest::start(&store, &log, observers).await.unwrap();
    let mut tasks = Vec::new();
    for r in 0..10 {
        let pipeline = pipeline.clone();
        let batch: Vec<_> = (0..5).map(|i| json!({"type": "track", "userId": format!("u{i}"), "event": "Shared", "messageId": format!("o-{r}-{i}")})).collect();
        tasks.push(tokio::spawn(async move { pipeline.submit(messages(json!(batch))).await.unwrap() }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    pipeline.settle().await;
    let heard = heard.lock().unwrap().clone();
    for seq in 1..=51u64 {
        let at = |what: &str| {
            let found: Vec<(usize, &String)> =
                heard.iter().enumerate().filter(|(_, (w, s, _))| *w == what && *s == seq).map(|(i, (_, _, id))| (i, id)).collect();
            assert_eq!(found.len(), 1, "seq {seq} {what} once: {heard:?}");
            found[0]
        };
        let (acked, id) = at("acknowledged");
        let (committed, same) = at("committed");
        assert!(acked < committed, "seq {seq}: acknowledged before committed");
        assert_eq!(id, same, "seq {seq} is one message");
    }
    assert_eq!(heard.iter().find(|(_, s, _)| *s == 1).map(|(_, _, id)| id.as_str()), Some("o-0"), "the replayed record first");
});

/// The store's configuration, to open it again as a restarted server would.
fn config_of(store: &Store) -> StoreConfig {
    match store.sqlite_path() {
        Some(file) => StoreConfig::Sqlite { data_dir: file.parent().expect("the data directory").to_path_buf() },
        None => StoreConfig::Postgres { url: siyu_store::testing::test_database_url(), schema: store.pg_schema().map(str::to_string) },
    }
}

/// (version, name, checksum) of every applied migration.
async fn recorded_migrations(store: &Store) -> Vec<(i64, String, Option<String>)> {
    store
        .run(|db| {
            Box::pin(async move {
                let rows = db.query("SELECT version, name, checksum FROM schema_migrations ORDER BY version", &[]).await?;
                rows.iter().map(|r| Ok((r.int(0)?, r.text(1)?, r.opt_text(2)?))).collect()
            })
        })
        .await
        .unwrap()
}

/// The sha256 of a migration file as it is in the source tree, computed here
/// independently of the store.
fn file_checksum(store: &Store, version: i64, name: &str) -> String {
    let dir = match store.backend() {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };
    let text = std::fs::read_to_string(format!("{}/migrations/{dir}/{version:04}_{name}.sql", env!("CARGO_MANIFEST_DIR"))).unwrap();
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Every applied migration carries the checksum of its file.
async fn assert_checksums_match_the_files(store: &Store) {
    let applied = recorded_migrations(store).await;
    let dir = match store.backend() {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };
    let files = std::fs::read_dir(format!("{}/migrations/{dir}", env!("CARGO_MANIFEST_DIR"))).unwrap().count();
    assert_eq!(applied.len(), files, "every migration file is applied: {applied:?}");
    for (version, name, checksum) in &applied {
        assert_eq!(checksum.as_deref(), Some(file_checksum(store, *version, name).as_str()), "migration {version}");
    }
}

/// Records `checksum` for `version`, as if the database had run another text of it: what
/// the store sees when the file is edited after it ran.
async fn record_checksum(store: &Store, version: i64, checksum: &'static str) {
    store
        .run(move |db| Box::pin(async move { db.execute("UPDATE schema_migrations SET checksum = $1 WHERE version = $2", params![checksum, version]).await }))
        .await
        .unwrap();
}

both_backends!(a_migration_changed_after_it_was_applied_is_refused, |store: Store, _log: std::path::PathBuf| async move {
    assert_checksums_match_the_files(&store).await;
    Store::open(&config_of(&store)).await.expect("unchanged migrations open again");

    record_checksum(&store, 4, "0123abcd").await;
    let e = Store::open(&config_of(&store)).await.err().expect("a changed migration is refused").to_string();
    assert!(e.starts_with("migration 0004_outreach.sql was changed after it was applied: "), "{e}");
    assert!(e.contains("recorded sha256 0123abcd") && e.contains(&file_checksum(&store, 4, "outreach")), "{e}");
});

both_backends!(a_migrations_table_from_before_checksums_is_upgraded, |store: Store, _log: std::path::PathBuf| async move {
    // What an older Siyu left: every migration applied, no checksum column.
    store.run(|db| Box::pin(async move { db.execute_script("ALTER TABLE schema_migrations DROP COLUMN checksum").await })).await.unwrap();
    let upgraded = Store::open(&config_of(&store)).await.expect("an old migrations table is upgraded");
    assert_checksums_match_the_files(&upgraded).await;

    // From then on a change is caught.
    record_checksum(&upgraded, 1, "changed").await;
    let e = Store::open(&config_of(&store)).await.err().expect("a changed migration is refused").to_string();
    assert!(e.starts_with("migration 0001_customer_graph.sql was changed after it was applied: "), "{e}");
});
