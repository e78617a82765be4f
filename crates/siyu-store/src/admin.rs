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
    hex::encode(Sha256::digest(token.as_bytes()))
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

/// A token as it is listed: never the secret, only an id made of the first characters
/// of its hash (enough to tell tokens apart and to revoke one).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct TokenInfo {
    pub id: String,
    /// `admin`, or `staff` for a token that acts as `staff_userid` with the role the
    /// staff record has at each request.
    pub role: String,
    pub staff_userid: Option<String>,
    pub label: String,
    pub created_at: Timestamp,
}

/// How many hex characters of the hash make a token's id.
pub const TOKEN_ID_LEN: usize = 12;

pub fn token_id(token: &str) -> String {
    hash_token(token)[..TOKEN_ID_LEN].to_string()
}

pub async fn list_tokens(db: &mut dyn Db) -> Result<Vec<TokenInfo>, StoreError> {
    db.query("SELECT token_hash, role, staff_userid, label, created_at FROM api_tokens ORDER BY created_at, token_hash", &[])
        .await?
        .iter()
        .map(|r| {
            Ok(TokenInfo {
                id: r.text(0)?[..TOKEN_ID_LEN].to_string(),
                role: r.text(1)?,
                staff_userid: r.opt_text(2)?,
                label: r.text(3)?,
                created_at: Timestamp(r.int(4)?),
            })
        })
        .collect()
}

/// Revokes the token with this id; false when there is none.
pub async fn revoke_token(db: &mut dyn Db, id: &str) -> Result<bool, StoreError> {
    if id.len() != TOKEN_ID_LEN || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(false);
    }
    let pattern = format!("{}%", id.to_ascii_lowercase());
    Ok(db.execute("DELETE FROM api_tokens WHERE token_hash LIKE $1", params![&pattern]).await? > 0)
}

/// Revokes every token of a member of staff (when they leave).
pub async fn revoke_staff_tokens(db: &mut dyn Db, staff_userid: &str) -> Result<u64, StoreError> {
    db.execute("DELETE FROM api_tokens WHERE staff_userid = $1", params![staff_userid]).await
}
