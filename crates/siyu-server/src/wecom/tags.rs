//! Tag mirroring between Siyu and WeCom for the tags an operator marks "sync".
//!
//! - Siyu → WeCom: adding or removing a synced tag on a profile marks or unmarks the
//!   corp tag of the same name (group "Siyu", created on first use) for every guide the
//!   customer has, with `mark_tag`.
//! - WeCom → Siyu: when a guide edits a customer (`edit_external_contact` callback),
//!   Siyu reads the contact's tags with `externalcontact/get`, and a synced tag any guide
//!   has set is added in Siyu, one no guide has any more is removed.
//! - A synced tag's corp tag renamed or deleted in WeCom (a `change_external_tag`
//!   callback, which names only the id) ends the mirroring of that tag; the tag stays on
//!   Siyu's profiles, and marking it "sync" again creates a fresh corp tag. Siyu does not
//!   silently re-create what an administrator removed.

use std::collections::{BTreeSet, HashMap};

use siyu_core::identity::{Identity, IdentityKind};
use siyu_core::{ProfileId, Timestamp};
use siyu_store::{admin, outreach as stored, profiles};
use siyu_wecom::client::Client;

use siyu_store::Store;

use super::WecomContext;

const SETTING: &str = "wecom_synced_tags";
/// Corp tag id → tag name of the synced tags, as WeCom gave them.
const IDS: &str = "wecom_synced_tag_ids";
/// The corp tag group Siyu keeps its synced tags in.
pub const GROUP: &str = "Siyu";

pub async fn synced(store: &Store) -> anyhow::Result<BTreeSet<String>> {
    let text = store.run(|db| Box::pin(admin::get_setting(db, SETTING))).await?;
    Ok(text.map(|t| serde_json::from_str(&t).unwrap_or_default()).unwrap_or_default())
}

/// Marks a tag synced (creating its corp tag, so guides can use it in WeCom) or not.
pub async fn set_synced(cx: &WecomContext, tag: &str, on: bool) -> anyhow::Result<BTreeSet<String>> {
    let mut tags = synced(&cx.store).await?;
    if on {
        if let Some(client) = cx.client() {
            corp_tags(&cx.store, &client, &[tag.to_string()]).await?;
        }
        tags.insert(tag.to_string());
    } else {
        tags.remove(tag);
        let mut ids = synced_ids(&cx.store).await?;
        ids.retain(|_, name| name != tag);
        save_ids(&cx.store, &ids).await?;
    }
    let text = serde_json::to_string(&tags)?;
    cx.store.run(move |db| Box::pin(async move { admin::set_setting(db, SETTING, &text).await })).await?;
    Ok(tags)
}

async fn synced_ids(store: &Store) -> anyhow::Result<HashMap<String, String>> {
    let text = store.run(|db| Box::pin(admin::get_setting(db, IDS))).await?;
    Ok(text.map(|t| serde_json::from_str(&t).unwrap_or_default()).unwrap_or_default())
}

async fn save_ids(store: &Store, ids: &HashMap<String, String>) -> anyhow::Result<()> {
    let text = serde_json::to_string(ids)?;
    store.run(move |db| Box::pin(async move { admin::set_setting(db, IDS, &text).await })).await?;
    Ok(())
}

/// After a `change_external_tag` callback for a tag (`update` or `delete`): a synced
/// tag's corp tag changed in WeCom, so Siyu stops mirroring it.
pub async fn corp_tag_changed(cx: WecomContext, id: String, change: String) {
    let result = async {
        let Some(name) = synced_ids(&cx.store).await?.remove(&id) else { return anyhow::Ok(()) };
        set_synced(&cx, &name, false).await?;
        tracing::info!(tag = %name, change = %change, "a synced tag's corp tag was changed in WeCom; Siyu no longer mirrors it");
        Ok(())
    }
    .await;
    if let Err(e) = result {
        tracing::warn!(error = %e, "handling a corp tag change failed");
    }
}

/// Corp tag ids of Siyu's group by name, creating the ones `wanted` that do not exist.
/// The ids of the `wanted` ones are remembered: a `change_external_tag` callback names
/// only the id.
async fn corp_tags(store: &Store, client: &Client, wanted: &[String]) -> anyhow::Result<HashMap<String, String>> {
    let ids = corp_tag_ids(client, wanted).await?;
    let mut known = synced_ids(store).await?;
    let mut changed = false;
    for (name, id) in wanted.iter().filter_map(|w| ids.get(w).map(|id| (w, id))) {
        if known.get(id) != Some(name) {
            known.insert(id.clone(), name.clone());
            changed = true;
        }
    }
    if changed {
        save_ids(store, &known).await?;
    }
    Ok(ids)
}

async fn corp_tag_ids(client: &Client, wanted: &[String]) -> anyhow::Result<HashMap<String, String>> {
    let list = client.get_corp_tag_list(&[]).await?;
    let mut ids = HashMap::new();
    for group in list["tag_group"].as_array().into_iter().flatten().filter(|g| g["group_name"] == GROUP) {
        for t in group["tag"].as_array().into_iter().flatten() {
            if let (Some(name), Some(id)) = (t["name"].as_str(), t["id"].as_str()) {
                ids.insert(name.to_string(), id.to_string());
            }
        }
    }
    let missing: Vec<&str> = wanted.iter().filter(|w| !ids.contains_key(*w)).map(String::as_str).collect();
    if !missing.is_empty() {
        let created = client.add_corp_tag(GROUP, &missing).await?;
        for t in created["tag_group"]["tag"].as_array().into_iter().flatten() {
            if let (Some(name), Some(id)) = (t["name"].as_str(), t["id"].as_str()) {
                ids.insert(name.to_string(), id.to_string());
            }
        }
    }
    Ok(ids)
}

/// Siyu → WeCom for one profile and tag (does nothing for tags not synced, or without
/// a WeCom client).
pub async fn push(store: Store, client: Option<std::sync::Arc<Client>>, profile: ProfileId, tag: String, on: bool) {
    let Some(client) = client else { return };
    if let Err(e) = try_push(&store, &client, profile, &tag, on).await {
        tracing::warn!(error = %e, profile = %profile, tag = %tag, "mirroring a tag to WeCom failed");
    }
}

async fn try_push(store: &Store, client: &Client, profile: ProfileId, tag: &str, on: bool) -> anyhow::Result<()> {
    if !synced(store).await?.contains(tag) {
        return Ok(());
    }
    let (identities, owners) =
        store.run(move |db| Box::pin(async move { Ok((stored::identities_of(db, &[profile]).await?, profiles::owners(db, profile).await?)) })).await?;
    let Some(external) = identities.get(&profile).and_then(|m| m.get("external_userid")).and_then(|v| v.as_str()).map(str::to_string) else { return Ok(()) };
    let ids = corp_tags(store, client, &[tag.to_string()]).await?;
    let id = ids.get(tag).cloned().ok_or_else(|| anyhow::anyhow!("corp tag {tag:?} could not be created"))?;
    for o in owners.iter().filter(|o| o.status == "active") {
        let (add, remove) = if on { (vec![id.clone()], vec![]) } else { (vec![], vec![id.clone()]) };
        client.mark_tag(&o.staff_userid, &external, &add, &remove).await?;
    }
    Ok(())
}

/// WeCom → Siyu after a guide edited a customer.
pub async fn pull(cx: WecomContext, seq: u64, external: String) {
    if let Err(e) = try_pull(&cx, seq, &external).await {
        tracing::warn!(error = %e, "reading a WeCom contact's tags failed");
    }
}

async fn try_pull(cx: &WecomContext, seq: u64, external: &str) -> anyhow::Result<()> {
    let Some(client) = cx.client() else { return Ok(()) };
    let synced: Vec<String> = synced(&cx.store).await?.into_iter().collect();
    if synced.is_empty() {
        return Ok(());
    }
    cx.ingest.wait_indexed(seq).await;
    let contact = client.get_external_contact(external).await?;
    let by_id: HashMap<String, String> = corp_tags(&cx.store, &client, &synced).await?.into_iter().map(|(name, id)| (id, name)).collect();
    let present: BTreeSet<String> = contact["follow_user"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|f| f["tags"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["tag_id"].as_str().and_then(|id| by_id.get(id)).cloned())
        .collect();
    let identity = Identity::new(IdentityKind::ExternalUserid, external, None)?;
    let Some(profile) = cx.store.run(move |db| Box::pin(async move { profiles::find_by_identity(db, &identity).await })).await? else { return Ok(()) };
    let now = Timestamp::now();
    for tag in &synced {
        let on = present.contains(tag);
        let t = tag.clone();
        let changed = cx
            .store
            .run(move |db| {
                Box::pin(async move { if on { profiles::add_tag(db, profile, &t, "wecom", now).await } else { profiles::remove_tag(db, profile, &t).await } })
            })
            .await?;
        if changed {
            cx.engine.set_tag(profile.bit(), tag, on);
        }
    }
    Ok(())
}
