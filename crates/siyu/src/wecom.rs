//! WeCom in the server: the callback configuration and the guard against replays.
//!
//! Configured by `DATA_DIR/wecom.json` (`{"corp_id", "token", "encoding_aes_key"}`) or
//! the environment (`SIYU_WECOM_CORP_ID`, `SIYU_WECOM_TOKEN`, `SIYU_WECOM_AES_KEY`); the
//! environment wins. Without a configuration `/wecom/callback` answers 404.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use anyhow::Context;
use serde::Deserialize;
use siyu_wecom::crypto::MsgCrypt;

/// How far a callback's timestamp may be from now, and how long nonces are remembered.
pub const FRESHNESS_SECS: i64 = 300;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct WecomFile {
    corp_id: Option<String>,
    token: Option<String>,
    encoding_aes_key: Option<String>,
}

pub struct WecomCallbacks {
    pub crypt: MsgCrypt,
    /// nonce → when it was seen (seconds), for replay detection.
    seen: Mutex<HashMap<String, i64>>,
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
        match (corp, token, key) {
            (Some(corp), Some(token), Some(key)) => {
                let crypt = MsgCrypt::new(&token, &key, &corp).context("the WeCom EncodingAESKey")?;
                tracing::info!(corp_id = %corp, "WeCom callbacks enabled at /wecom/callback");
                Ok(Some(WecomCallbacks { crypt, seen: Mutex::new(HashMap::new()) }))
            }
            (None, None, None) => Ok(None),
            _ => anyhow::bail!("WeCom callbacks need all three of corp_id, token and encoding_aes_key"),
        }
    }

    /// Accepts a (timestamp, nonce) once, within the freshness window.
    pub fn admit(&self, timestamp: &str, nonce: &str, now_secs: i64) -> Result<(), &'static str> {
        let ts: i64 = timestamp.parse().map_err(|_| "the timestamp is not a number")?;
        if (now_secs - ts).abs() > FRESHNESS_SECS {
            return Err("the timestamp is too old (or in the future)");
        }
        if nonce.is_empty() {
            return Err("the nonce is empty");
        }
        let mut seen = self.seen.lock().expect("nonce lock");
        seen.retain(|_, at| now_secs - *at <= 2 * FRESHNESS_SECS);
        if seen.insert(format!("{timestamp}:{nonce}"), now_secs).is_some() {
            return Err("this nonce was already used: a replay");
        }
        Ok(())
    }
}
