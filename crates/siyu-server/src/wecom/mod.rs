//! WeCom in the server, one folder: the callback configuration and the guard against
//! replays (here), the welcome message on a new contact (here), the full sync (`sync`),
//! customer groups (`groups`), tag mirroring (`tags`) and customer transfers
//! (`transfer`). WeCom's wire protocol and API client are the `siyu-wecom` crate; the
//! mass-message channel is an outreach sink (`outreach::sinks::wecom`).
//!
//! Configured by `DATA_DIR/wecom.json` (`{"corp_id", "token", "encoding_aes_key",
//! "secret", "api_base", "agent_id"}`) or the environment (`SIYU_WECOM_CORP_ID`,
//! `SIYU_WECOM_TOKEN`, `SIYU_WECOM_AES_KEY`, `SIYU_WECOM_SECRET`, `SIYU_WECOM_API_BASE`,
//! `SIYU_WECOM_AGENT_ID`); the environment wins. `agent_id` is the self-built app the
//! secret belongs to: with it, task reminders reach guides as app messages. Without
//! token and key `/wecom/callback` answers 404; without the secret Siyu
//! makes no WeCom API calls (no welcome messages, contact ways or mass messages).

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::Mutex;

use anyhow::Context;
use serde::Deserialize;
use siyu_core::delivery::DeliveryStatus;
use siyu_wecom::crypto::MsgCrypt;

use crate::state::Core;

pub mod groups;
pub mod sync;
pub mod tags;
pub mod transfer;

/// What the WeCom glue works with: the handles every service shares and WeCom's
/// configuration (absent when WeCom is not set up).
#[derive(Clone)]
pub struct WecomContext {
    pub core: Core,
    pub wecom: Option<std::sync::Arc<WecomCallbacks>>,
}

/// WeCom's API client, when WeCom is set up with the customer-contact secret.
pub fn client_of(wecom: Option<&std::sync::Arc<WecomCallbacks>>) -> Option<std::sync::Arc<siyu_wecom::client::Client>> {
    wecom.and_then(|w| w.client.clone())
}

impl WecomContext {
    /// WeCom's API client, when the secret is configured.
    pub fn client(&self) -> Option<std::sync::Arc<siyu_wecom::client::Client>> {
        client_of(self.wecom.as_ref())
    }
}

impl std::ops::Deref for WecomContext {
    type Target = Core;

    fn deref(&self) -> &Core {
        &self.core
    }
}

/// How far a callback's timestamp may be from now, and how long nonces are remembered.
pub const FRESHNESS_SECS: i64 = 300;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct WecomFile {
    corp_id: Option<String>,
    token: Option<String>,
    encoding_aes_key: Option<String>,
    secret: Option<String>,
    api_base: Option<String>,
    agent_id: Option<i64>,
}

pub struct WecomCallbacks {
    pub crypt: MsgCrypt,
    /// The API client, when the customer-contact secret is configured.
    pub client: Option<std::sync::Arc<siyu_wecom::client::Client>>,
    /// The full sync's progress.
    pub sync: sync::SyncState,
    /// Nonces seen within the freshness window, for replay detection.
    seen: Mutex<Nonces>,
}

/// Callback nonces seen lately: a map for lookups and a queue in arrival order, so
/// expiry is cheap (from the front) and the memory is bounded (the oldest go first).
/// Kept by hand rather than an LRU crate: nonces must expire by age, eagerly, and an
/// LRU cache forgets only when full.
#[derive(Default)]
pub struct Nonces {
    at: HashMap<String, i64>,
    order: VecDeque<(i64, String)>,
}

/// At most this many nonces are remembered (WeCom sends far fewer in 10 minutes).
pub const MAX_NONCES: usize = 200_000;

impl Nonces {
    /// Records `key` at `now`; false if it was already there (a replay).
    pub fn spend(&mut self, key: String, now: i64) -> bool {
        while let Some((t, k)) = self.order.front() {
            if now - *t <= 2 * FRESHNESS_SECS && self.order.len() < MAX_NONCES {
                break;
            }
            if self.at.get(k) == Some(t) {
                self.at.remove(k);
            }
            self.order.pop_front();
        }
        if self.at.contains_key(&key) {
            return false;
        }
        self.at.insert(key.clone(), now);
        self.order.push_back((now, key));
        true
    }

    /// Gives a nonce back: its callback was not recorded, and WeCom's retry carries it.
    pub fn release(&mut self, key: &str) {
        self.at.remove(key);
    }

    pub fn len(&self) -> usize {
        self.at.len()
    }

    pub fn is_empty(&self) -> bool {
        self.at.is_empty()
    }
}

impl WecomCallbacks {
    pub fn load(data_dir: &Path) -> anyhow::Result<Option<WecomCallbacks>> {
        let path = data_dir.join("wecom.json");
        let file: WecomFile = match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text).with_context(|| format!("reading {}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => WecomFile::default(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let corp = env("SIYU_WECOM_CORP_ID").or(file.corp_id);
        let token = env("SIYU_WECOM_TOKEN").or(file.token);
        let key = env("SIYU_WECOM_AES_KEY").or(file.encoding_aes_key);
        let secret = env("SIYU_WECOM_SECRET").or(file.secret);
        let agent_id = match env("SIYU_WECOM_AGENT_ID") {
            Some(v) => Some(v.trim().parse::<i64>().context("SIYU_WECOM_AGENT_ID must be the app's numeric agentid")?),
            None => file.agent_id,
        };
        let base = env("SIYU_WECOM_API_BASE").or(file.api_base).unwrap_or_else(|| siyu_wecom::client::DEFAULT_BASE.to_string());
        match (corp, token, key) {
            (Some(corp), Some(token), Some(key)) => {
                let crypt = MsgCrypt::new(&token, &key, &corp).context("the WeCom EncodingAESKey")?;
                let client = secret.map(|s| std::sync::Arc::new(siyu_wecom::client::Client::new(&base, &corp, &s).with_agent_id(agent_id)));
                tracing::info!(corp_id = %corp, api = client.is_some(), "WeCom callbacks enabled at /wecom/callback");
                Ok(Some(WecomCallbacks { crypt, client, sync: Default::default(), seen: Mutex::new(Nonces::default()) }))
            }
            (None, None, None) => Ok(None),
            _ => anyhow::bail!("WeCom callbacks need all three of corp_id, token and encoding_aes_key"),
        }
    }

    /// Accepts a (timestamp, nonce) once, within the freshness window. Call it only for
    /// a request whose signature is valid; give the nonce back with [`Self::release`]
    /// if the callback could not be recorded.
    pub fn admit(&self, timestamp: &str, nonce: &str, now_secs: i64) -> Result<String, &'static str> {
        let ts: i64 = timestamp.parse().map_err(|_| "the timestamp is not a number")?;
        if (now_secs - ts).abs() > FRESHNESS_SECS {
            return Err("the timestamp is too old (or in the future)");
        }
        if nonce.is_empty() {
            return Err("the nonce is empty");
        }
        let key = format!("{timestamp}:{nonce}");
        if !self.seen.lock().expect("nonce lock").spend(key.clone(), now_secs) {
            return Err("this nonce was already used: a replay");
        }
        Ok(key)
    }

    pub fn release(&self, key: &str) {
        self.seen.lock().expect("nonce lock").release(key);
    }
}

/// After a customer added a guide: the welcome message through `send_welcome_msg`, the
/// contact way's tags, and the contact's name.
pub async fn after_contact_added(cx: WecomContext, seq: u64, staff: String, external: String, state: Option<String>, welcome_code: Option<String>) {
    if let Err(e) = welcome(&cx, seq, &staff, &external, state, welcome_code).await {
        tracing::warn!(error = %e, "welcoming a new WeCom contact failed");
    }
}

async fn welcome(cx: &WecomContext, seq: u64, staff: &str, external: &str, state: Option<String>, welcome_code: Option<String>) -> anyhow::Result<()> {
    use siyu_core::identity::{Identity, IdentityKind};
    use siyu_store::{outreach as stored, profiles, wecom as wstore};

    let client = cx.client();
    // WeCom's callback carries no name: read the contact, so templates can greet them.
    let name = match &client {
        Some(client) => {
            client.get_external_contact(external).await.ok().and_then(|c| c["external_contact"]["name"].as_str().filter(|n| !n.is_empty()).map(String::from))
        }
        None => None,
    };
    let way = match state.clone() {
        Some(s) => cx.store.run(move |db| Box::pin(async move { wstore::contact_way_by_state(db, &s).await })).await?,
        None => None,
    };
    // WeCom takes the welcome code only within 20 seconds of the add, so the message is
    // written and sent first, from what is known now: it does not wait for the add to
    // be applied, which under a burst of tracking traffic queues behind many seconds of
    // the ingest log.
    let identity = Identity::new(IdentityKind::ExternalUserid, external, None)?;
    let sent = match (way.as_ref().and_then(|w| w.welcome.clone()), welcome_code, &client) {
        (Some(template), Some(code), Some(client)) => {
            let template = siyu_outreach::template::Template::parse(&template).map_err(|e| anyhow::anyhow!("{e}"))?;
            let (known, dir, mut traits) = {
                let identity = identity.clone();
                cx.store
                    .run(move |db| {
                        Box::pin(async move {
                            let known = profiles::find_by_identity(db, &identity).await?;
                            let traits = stored::traits_of(db, &known.into_iter().collect::<Vec<_>>()).await?;
                            Ok((known, stored::directory(db).await?, traits))
                        })
                    })
                    .await?
            };
            let mut own = known.and_then(|p| traits.remove(&p)).unwrap_or_default();
            if let Some(n) = &name {
                own.insert("name".into(), serde_json::json!(n));
            }
            let text = template.render(&crate::content::vars(Some(&own), Some(staff), &dir, None, known.unwrap_or_default()));
            let outcome = match client.send_welcome_msg(&code, &text).await {
                Ok(_) => (DeliveryStatus::Sent, None),
                // The code was used: by this welcome whose answer was lost, or by the
                // task of a callback WeCom delivered twice. Either way it went out
                // (both tasks record the same key; the first row stays).
                Err(e) if e.code() == Some(WELCOME_CODE_USED) => (DeliveryStatus::Sent, None),
                Err(e) => (DeliveryStatus::Failed, Some(format!("wecom_{}", e.code().unwrap_or(0)))),
            };
            Some((format!("welcome:{}:{external}:{code}", state.as_deref().unwrap_or_default()), text, outcome))
        }
        _ => None,
    };

    // The rest belongs on the customer's profile, which exists once the add is applied.
    // The welcome has gone out: what follows is best effort, and the delivery row is
    // written whatever happens to the name and the tags.
    cx.ingest.wait_indexed(seq).await;
    if let Some(name) = name
        && let Err(e) = remember_name(cx, seq, external, name).await
    {
        tracing::warn!(error = %e, "recording a new WeCom contact's name failed");
    }
    let Some(profile) = cx.store.run(move |db| Box::pin(async move { profiles::find_by_identity(db, &identity).await })).await? else {
        if sent.is_some() {
            tracing::warn!("a welcome was sent to a WeCom contact whose profile was not created; it is not recorded as a delivery");
        }
        return Ok(());
    };
    let now = siyu_core::Timestamp::now();
    let tags = way.map(|w| w.tags).unwrap_or_default();
    let tagged = {
        let tags = tags.clone();
        cx.store
            .run(move |db| {
                Box::pin(async move {
                    for t in &tags {
                        profiles::add_tag(db, profile, t, "contact_way", now).await?;
                    }
                    Ok(())
                })
            })
            .await
    };
    match tagged {
        Ok(()) => tags.iter().for_each(|t| cx.engine.set_tag(profile.bit(), t, true)),
        Err(e) => tracing::warn!(error = %e, "tagging a new WeCom contact from its contact way failed"),
    }
    let Some((key, text, (status, reason))) = sent else { return Ok(()) };
    let row = stored::NewDelivery {
        key,
        profile_id: profile,
        campaign_id: None,
        journey_id: None,
        channel: siyu_core::rule::Channel::Wecom,
        kind: siyu_core::delivery::TouchKind::Service,
        status,
        reason,
        guide: Some(staff.to_string()),
        task_id: None,
        content: Some(text),
        created_at: now,
        due_at: now,
    };
    cx.store.run(move |db| Box::pin(async move { stored::insert_deliveries(db, &[row]).await })).await?;
    Ok(())
}

/// WeCom's answer to a welcome code used a second time.
const WELCOME_CODE_USED: i64 = 41051;

/// The name WeCom gave for a new contact, as a trait on their profile.
async fn remember_name(cx: &WecomContext, seq: u64, external: &str, name: String) -> anyhow::Result<()> {
    let now = siyu_core::Timestamp::now();
    let who = siyu_wecom::events::contact_identity(external).ok_or_else(|| anyhow::anyhow!("invalid external_userid"))?;
    let traits = vec![("name".to_string(), serde_json::json!(name))];
    let message = siyu_core::message::Message::identify_about(vec![who], format!("wecom:contact:{external}:{seq}"), traits, now, "wecom");
    cx.ingest.submit(vec![message]).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonces_expire_and_stay_bounded() {
        let mut n = Nonces::default();
        assert!(n.spend("1:a".into(), 1000));
        assert!(!n.spend("1:a".into(), 1001), "a replay");
        // Ten minutes on, the old nonce is forgotten without scanning everything.
        assert!(n.spend("2:b".into(), 1000 + 2 * FRESHNESS_SECS + 1));
        assert_eq!(n.len(), 1);
        for i in 0..(MAX_NONCES + 10) {
            n.spend(format!("3:{i}"), 2000);
        }
        assert!(n.len() <= MAX_NONCES);
        // A nonce given back (its callback was not recorded) is accepted again.
        n.release("3:9");
        n.release(&format!("3:{}", MAX_NONCES + 9));
        assert!(n.spend(format!("3:{}", MAX_NONCES + 9), 2001));
    }
}
