//! Settings and API tokens. Tokens are stored as SHA-256 hashes, never in clear.

use sha2::{Digest, Sha256};
use siyu_core::Timestamp;

use crate::sql::Db;
use crate::{StoreError, params};

pub async fn get_setting(db: &mut dyn Db, key: &str) -> Result<Option<String>, StoreError> {
    db.query_opt("SELECT value FROM settings WHERE key = $1", params![key]).await?.map(|r| r.text(0)).transpose()
}

pub async fn set_setting(db: &mut dyn Db, key: &str, value: &str) -> Result<(), StoreError> {
    db.execute("INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value", params![key, value]).await?;
    Ok(())
}

pub fn hash_token(token: &str) -> String {
    Sha256::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// Who a token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenGrant {
    pub role: String,
    pub staff_userid: Option<String>,
    pub label: String,
}

pub async fn add_token(db: &mut dyn Db, token: &str, role: &str, staff_userid: Option<&str>, label: &str) -> Result<(), StoreError> {
    db.execute(
        "INSERT INTO api_tokens (token_hash, role, staff_userid, label, created_at) VALUES ($1, $2, $3, $4, $5)",
        params![&hash_token(token), role, staff_userid, label, Timestamp::now().0],
    )
    .await?;
    Ok(())
}

pub async fn find_token(db: &mut dyn Db, token: &str) -> Result<Option<TokenGrant>, StoreError> {
    db.query_opt("SELECT role, staff_userid, label FROM api_tokens WHERE token_hash = $1", params![&hash_token(token)])
        .await?
        .map(|r| Ok(TokenGrant { role: r.text(0)?, staff_userid: r.opt_text(1)?, label: r.text(2)? }))
        .transpose()
}

pub async fn count_tokens(db: &mut dyn Db, role: &str) -> Result<i64, StoreError> {
    db.query_one("SELECT COUNT(*) FROM api_tokens WHERE role = $1", params![role]).await?.int(0)
}
