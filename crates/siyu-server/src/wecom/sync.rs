//! The initial full sync from WeCom: staff with the customer-contact feature, each
//! guide's external contacts with their follow info (who added whom, when, through which
//! QR code), and customer groups with their external members. Everything enters through
//! the ingest pipeline as `Contact Added` / `Group Joined` events whose message ids are
//! derived from WeCom's data, so a sync repeated or resumed after a crash stores nothing
//! twice. Progress (the guides done) is kept in the store: a restarted sync resumes.
//! After it, callbacks keep Siyu current.

use std::collections::BTreeSet;
use std::sync::Mutex;

use serde::Serialize;
use serde_json::json;
use siyu_core::Timestamp;
use siyu_core::message::Message;
use siyu_store::admin;
use utoipa::ToSchema;

use super::WecomContext;

const DONE: &str = "wecom_sync_guides_done";

#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct SyncProgress {
    /// idle · running · done · failed
    pub state: String,
    pub guides_total: usize,
    pub guides_done: usize,
    pub contacts: u64,
    pub group_members: u64,
    pub error: Option<String>,
}

/// The current (or last) sync of this server.
#[derive(Debug, Default)]
pub struct SyncState(Mutex<Option<SyncProgress>>);

impl SyncState {
    pub fn progress(&self) -> SyncProgress {
        self.0.lock().expect("progress").clone().unwrap_or_else(|| SyncProgress { state: "idle".into(), ..Default::default() })
    }

    /// Marks a sync as running; false if one already is.
    pub fn begin(&self) -> bool {
        let mut p = self.0.lock().expect("progress");
        if p.as_ref().is_some_and(|p| p.state == "running") {
            return false;
        }
        *p = Some(SyncProgress { state: "running".into(), ..Default::default() });
        true
    }

    fn update(&self, f: impl FnOnce(&mut SyncProgress)) {
        let mut p = self.0.lock().expect("progress");
        f(p.get_or_insert_with(SyncProgress::default));
    }
}

/// A Siyu event about the customer with this `external_userid`, read from WeCom's API
/// (`source`: `wecom_sync`, or `wecom` when a callback led to the read).
pub fn event(
    external: &str,
    name: &str,
    message_id: String,
    at: Timestamp,
    props: serde_json::Value,
    traits: Vec<(String, serde_json::Value)>,
    source: &str,
) -> Option<Message> {
    let who = siyu_wecom::events::contact_identity(external)?;
    Some(Message::track_about(vec![who], name, message_id, props, at, Timestamp::now(), source).with_traits(traits))
}

/// Runs a sync begun with [`SyncState::begin`].
pub async fn run(cx: WecomContext) {
    let Some(state) = cx.wecom.as_ref().map(|w| &w.sync) else { return };
    let update = |f: &dyn Fn(&mut SyncProgress)| state.update(f);
    match sync(&cx).await {
        Ok(()) => update(&|p| p.state = "done".into()),
        Err(e) => {
            tracing::warn!(error = %e, "WeCom sync failed; it resumes where it stopped when started again");
            let why = e.to_string();
            update(&|p| {
                p.state = "failed".into();
                p.error = Some(why.clone());
            });
        }
    }
}

async fn sync(cx: &WecomContext) -> anyhow::Result<()> {
    let state = &cx.wecom.as_ref().ok_or_else(|| anyhow::anyhow!("WeCom is not configured"))?.sync;
    let update = |f: &dyn Fn(&mut SyncProgress)| state.update(f);
    let client = cx.client().ok_or_else(|| anyhow::anyhow!("WeCom API is not configured"))?;
    let guides = client.get_follow_user_list().await?;
    let done: BTreeSet<String> =
        cx.store.run(|db| Box::pin(admin::get_setting(db, DONE))).await?.map(|t| serde_json::from_str(&t).unwrap_or_default()).unwrap_or_default();
    let (total, already) = (guides.len(), done.len());
    update(&|p| {
        p.guides_total = total;
        p.guides_done = already;
    });
    let mut done = done;
    let todo: Vec<String> = guides.iter().filter(|g| !done.contains(*g)).cloned().collect();
    for guide in &todo {
        let contacts = client.batch_get_by_user(std::slice::from_ref(guide), 100).await?;
        let messages: Vec<Message> = contacts
            .iter()
            .filter_map(|c| {
                let external = c["external_contact"]["external_userid"].as_str()?;
                let follow = &c["follow_info"];
                let created = follow["createtime"].as_i64().unwrap_or(0);
                let state = follow["state"].as_str();
                let (store, channel) = state.map(siyu_wecom::events::attribution).unwrap_or((None, None));
                let name = c["external_contact"]["name"].as_str().map(|n| vec![("name".to_string(), json!(n))]).unwrap_or_default();
                event(
                    external,
                    "Contact Added",
                    format!("wecom:sync:{guide}:{external}:{created}"),
                    Timestamp(created * 1000),
                    json!({"staff_userid": guide, "state": state, "store_id": store, "channel": channel, "source": "wecom_sync"}),
                    name,
                    "wecom_sync",
                )
            })
            .collect();
        let n = messages.len() as u64;
        for chunk in messages.chunks(1000) {
            cx.ingest.submit(chunk.to_vec()).await?;
        }
        done.insert(guide.clone());
        let text = serde_json::to_string(&done)?;
        cx.store.run(move |db| Box::pin(async move { admin::set_setting(db, DONE, &text).await })).await?;
        update(&|p| {
            p.guides_done += 1;
            p.contacts += n;
        });
    }
    // Customer groups: each external member as `Group Joined`.
    let mut cursor = String::new();
    loop {
        let page = client.groupchat_list(&cursor).await?;
        for g in page["group_chat_list"].as_array().into_iter().flatten() {
            let Some(chat) = g["chat_id"].as_str() else { continue };
            let detail = client.groupchat_get(chat).await?;
            let members = super::groups::member_events(chat, &detail, "wecom_sync");
            let n = members.len() as u64;
            cx.ingest.submit(members).await?;
            update(&|p| p.group_members += n);
        }
        match page["next_cursor"].as_str() {
            Some(c) if !c.is_empty() => cursor = c.to_string(),
            _ => break,
        }
    }
    // A finished sync starts from scratch next time.
    cx.store.run(|db| Box::pin(admin::set_setting(db, DONE, "[]"))).await?;
    Ok(())
}
