//! Customer groups from callbacks: a group's creation and its dismissal. Member joins
//! and leaves name their members and become events directly (`siyu_wecom::events`);
//! these two do not name anyone.
//!
//! - Created: the group is read with `groupchat/get` and each customer in it becomes
//!   `Group Joined`, with the message id the full sync gives the same membership, so a
//!   later sync adds nothing (and a failed read here is made good by the next sync).
//! - Dismissed: WeCom can no longer say who was in the group. Every customer Siyu knows
//!   to be in it (from the events in the store, after waiting up to 2 s for the indexer
//!   to apply what was acknowledged) gets `Group Left`, recorded before WeCom is
//!   answered.

use serde_json::{Value, json};
use siyu_core::Timestamp;
use siyu_core::message::Message;
use siyu_wecom::callback::{Fields, dedupe_key};

use super::WecomContext;

/// `Group Joined` for each customer (member type 2) of a `groupchat/get` answer.
pub fn member_events(chat: &str, detail: &Value, source: &str) -> Vec<Message> {
    let name = detail["group_chat"]["name"].as_str().unwrap_or_default();
    detail["group_chat"]["member_list"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["type"].as_i64() == Some(2))
        .filter_map(|m| {
            let external = m["userid"].as_str()?;
            let joined = Timestamp(m["join_time"].as_i64().unwrap_or(0) * 1000);
            let props = json!({"chat_id": chat, "name": name, "join_scene": m["join_scene"], "source": source});
            super::sync::event(external, "Group Joined", format!("wecom:sync:group:{chat}:{external}"), joined, props, Vec::new(), source)
        })
        .collect()
}

/// After a `create` callback (answered already: WeCom wants the answer fast).
pub async fn created(cx: WecomContext, chat_id: String) {
    let Some(client) = cx.client() else { return };
    let result = async {
        let detail = client.groupchat_get(&chat_id).await?;
        let members = member_events(&chat_id, &detail, "wecom");
        if !members.is_empty() {
            cx.ingest.submit(members).await?;
        }
        anyhow::Ok(())
    }
    .await;
    if let Err(e) = result {
        tracing::warn!(error = %e, chat_id = %chat_id, "reading a new customer group failed; the next full sync brings its members in");
    }
}

/// `Group Left` for every customer Siyu knows to be in a dismissed group. The message
/// ids come from the callback, so WeCom's retries record nothing twice.
pub async fn dismissed(cx: &WecomContext, fields: &Fields, chat_id: &str, received_at: Timestamp) -> anyhow::Result<Vec<Message>> {
    // Joins acknowledged moments ago may still wait for the store: give the indexer a
    // moment to apply them, well inside the 5 seconds WeCom allows for the answer.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), cx.ingest.settle()).await;
    let chat = chat_id.to_string();
    let members = cx.store.run(move |db| Box::pin(async move { siyu_store::wecom::group_members(db, &chat).await })).await?;
    let at = fields.get("CreateTime").and_then(|t| t.parse::<i64>().ok()).map(|s| Timestamp(s * 1000)).unwrap_or(received_at);
    let key = dedupe_key(fields);
    Ok(members
        .into_iter()
        .map(|p| {
            let props = json!({"chat_id": chat_id, "quit_scene": "dismissed", "source": "wecom"});
            Message::internal(p, "Group Left", format!("{key}:{p}"), props, at).from_source("wecom", received_at)
        })
        .collect())
}
