//! The console's sign-in: local accounts, sessions and the audit log of personal data.
//!
//! Passwords arrive here already hashed (argon2, by the server); session secrets are
//! looked up by their SHA-256 like API tokens, so the store never holds a secret that
//! would let someone in.

use serde::Serialize;
use siyu_core::Timestamp;
use utoipa::ToSchema;

use crate::admin::hash_token;
use crate::sql::{Db, Row};
use crate::{StoreError, params};

/// A local account as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub username: String,
    pub password_hash: String,
    /// `None`: an admin.
    pub staff_userid: Option<String>,
    pub failed_logins: i64,
    /// Epoch milliseconds; sign-in is refused before then.
    pub locked_until: i64,
}

pub async fn count_accounts(db: &mut dyn Db) -> Result<i64, StoreError> {
    db.query_one("SELECT COUNT(*) FROM console_accounts", &[]).await?.int(0)
}

pub async fn add_account(db: &mut dyn Db, username: &str, password_hash: &str, staff_userid: Option<&str>, at: Timestamp) -> Result<(), StoreError> {
    db.execute(
        "INSERT INTO console_accounts (username, password_hash, staff_userid, created_at) VALUES ($1, $2, $3, $4)",
        params![username, password_hash, staff_userid, at.0],
    )
    .await?;
    Ok(())
}

pub async fn get_account(db: &mut dyn Db, username: &str) -> Result<Option<Account>, StoreError> {
    db.query_opt("SELECT username, password_hash, staff_userid, failed_logins, locked_until FROM console_accounts WHERE username = $1", params![username])
        .await?
        .map(|r| {
            Ok(Account { username: r.text(0)?, password_hash: r.text(1)?, staff_userid: r.opt_text(2)?, failed_logins: r.int(3)?, locked_until: r.int(4)? })
        })
        .transpose()
}

/// Counts a sign-in attempt before its password is checked, so that attempts made at
/// once cannot slip past the limit: the attempt's number since the last success, or
/// `None` when the account is locked (or does not exist).
pub async fn reserve_attempt(db: &mut dyn Db, username: &str, now: Timestamp) -> Result<Option<i64>, StoreError> {
    db.query_opt(
        "UPDATE console_accounts SET failed_logins = failed_logins + 1 WHERE username = $1 AND locked_until <= $2 RETURNING failed_logins",
        params![username, now.0],
    )
    .await?
    .map(|r| r.int(0))
    .transpose()
}

/// Locks an account until `until`; the count of attempts starts again.
pub async fn lock(db: &mut dyn Db, username: &str, until: Timestamp) -> Result<(), StoreError> {
    db.execute("UPDATE console_accounts SET failed_logins = 0, locked_until = $2 WHERE username = $1", params![username, until.0]).await?;
    Ok(())
}

pub async fn record_success(db: &mut dyn Db, username: &str) -> Result<(), StoreError> {
    db.execute("UPDATE console_accounts SET failed_logins = 0, locked_until = 0 WHERE username = $1", params![username]).await?;
    Ok(())
}

/// A signed-in browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// `None`: an admin.
    pub staff_userid: Option<String>,
    pub method: String,
    /// The token every state-changing request from this session must carry.
    pub csrf: String,
    pub last_seen: i64,
}

/// Starts a session, and clears away sessions unused since `idle_since` (nothing else
/// deletes a session nobody comes back to).
pub async fn add_session(
    db: &mut dyn Db,
    secret: &str,
    staff_userid: Option<&str>,
    method: &str,
    csrf: &str,
    at: Timestamp,
    idle_since: Timestamp,
) -> Result<(), StoreError> {
    db.execute("DELETE FROM console_sessions WHERE last_seen < $1", params![idle_since.0]).await?;
    db.execute(
        "INSERT INTO console_sessions (id_hash, staff_userid, method, csrf, created_at, last_seen) VALUES ($1, $2, $3, $4, $5, $5)",
        params![&hash_token(secret), staff_userid, method, csrf, at.0],
    )
    .await?;
    Ok(())
}

/// The session this secret opens, if it was used since `idle_since`; using it moves its
/// idle clock on. An idle session is deleted.
pub async fn touch_session(db: &mut dyn Db, secret: &str, idle_since: Timestamp, now: Timestamp) -> Result<Option<Session>, StoreError> {
    let id = hash_token(secret);
    let row = db.query_opt("SELECT staff_userid, method, csrf, last_seen FROM console_sessions WHERE id_hash = $1", params![&id]).await?;
    let Some(r) = row else { return Ok(None) };
    let session = Session { staff_userid: r.opt_text(0)?, method: r.text(1)?, csrf: r.text(2)?, last_seen: r.int(3)? };
    if session.last_seen < idle_since.0 {
        db.execute("DELETE FROM console_sessions WHERE id_hash = $1", params![&id]).await?;
        return Ok(None);
    }
    // Written at most once a minute per session: a page with several requests does
    // not turn every read into a write.
    if now.0 - session.last_seen > 60_000 {
        db.execute("UPDATE console_sessions SET last_seen = $2 WHERE id_hash = $1", params![&id, now.0]).await?;
    }
    Ok(Some(session))
}

pub async fn end_session(db: &mut dyn Db, secret: &str) -> Result<(), StoreError> {
    db.execute("DELETE FROM console_sessions WHERE id_hash = $1", params![&hash_token(secret)]).await?;
    Ok(())
}

/// One line of the audit log: personal data shown in full, or customer data exported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct AuditEntry {
    pub id: i64,
    pub at: Timestamp,
    /// `admin` or the staff userid.
    pub actor: String,
    /// `reveal_phone`, `export_segment` …
    pub action: String,
    /// Whose data: `profile:42`, `segment:vip` …
    pub subject: String,
    /// The client's address as the server saw it.
    pub ip: Option<String>,
}

pub async fn audit(db: &mut dyn Db, actor: &str, action: &str, subject: &str, ip: Option<&str>, at: Timestamp) -> Result<(), StoreError> {
    db.execute("INSERT INTO audit_log (at, actor, action, subject, ip) VALUES ($1, $2, $3, $4, $5)", params![at.0, actor, action, subject, ip]).await?;
    Ok(())
}

fn audit_entry(r: &Row) -> Result<AuditEntry, StoreError> {
    Ok(AuditEntry { id: r.int(0)?, at: Timestamp(r.int(1)?), actor: r.text(2)?, action: r.text(3)?, subject: r.text(4)?, ip: r.opt_text(5)? })
}

/// The newest entries first.
pub async fn audit_entries(db: &mut dyn Db, limit: i64) -> Result<Vec<AuditEntry>, StoreError> {
    db.query("SELECT id, at, actor, action, subject, ip FROM audit_log ORDER BY id DESC LIMIT $1", params![limit]).await?.iter().map(audit_entry).collect()
}

/// The customers a console list shows: a guide's own active contacts, a store's (any of
/// its guides'), or everyone; newest first.
pub async fn customers_in_scope(db: &mut dyn Db, guide: Option<&str>, store: Option<&str>, limit: i64) -> Result<Vec<siyu_core::ProfileId>, StoreError> {
    let rows = match (guide, store) {
        (Some(g), _) => {
            db.query(
                "SELECT profile_id FROM staff_customers WHERE staff_userid = $1 AND status = 'active' ORDER BY added_at DESC, profile_id LIMIT $2",
                params![g, limit],
            )
            .await?
        }
        (None, Some(s)) => {
            db.query(
                "SELECT sc.profile_id FROM staff_customers sc JOIN staff s ON s.userid = sc.staff_userid
                  WHERE s.store_id = $1 AND sc.status = 'active' GROUP BY sc.profile_id ORDER BY sc.profile_id DESC LIMIT $2",
                params![s, limit],
            )
            .await?
        }
        (None, None) => db.query("SELECT id FROM profiles WHERE merged_into IS NULL ORDER BY id DESC LIMIT $1", params![limit]).await?,
    };
    rows.iter().map(|r| r.profile(0)).collect()
}

/// A customer who deleted (or was deleted by) a guide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lost {
    pub profile_id: siyu_core::ProfileId,
    pub staff_userid: String,
    pub removed_at: Timestamp,
}

/// Relationships that ended in a deletion since `since`, newest first: a guide's, a
/// store's (any of its guides'), or everyone's. A handover to another guide is not a
/// loss.
pub async fn lost_customers(db: &mut dyn Db, guide: Option<&str>, store: Option<&str>, since: Timestamp, limit: i64) -> Result<Vec<Lost>, StoreError> {
    const COLUMNS: &str = "sc.profile_id, sc.staff_userid, sc.removed_at";
    let rows = match (guide, store) {
        (Some(g), _) => {
            let sql = format!(
                "SELECT {COLUMNS} FROM staff_customers sc WHERE sc.staff_userid = $1 AND sc.status = 'deleted' AND sc.removed_at >= $2 ORDER BY sc.removed_at DESC LIMIT $3"
            );
            db.query(&sql, params![g, since.0, limit]).await?
        }
        (None, Some(s)) => {
            let sql = format!(
                "SELECT {COLUMNS} FROM staff_customers sc JOIN staff s ON s.userid = sc.staff_userid
                  WHERE s.store_id = $1 AND sc.status = 'deleted' AND sc.removed_at >= $2 ORDER BY sc.removed_at DESC LIMIT $3"
            );
            db.query(&sql, params![s, since.0, limit]).await?
        }
        (None, None) => {
            let sql =
                format!("SELECT {COLUMNS} FROM staff_customers sc WHERE sc.status = 'deleted' AND sc.removed_at >= $1 ORDER BY sc.removed_at DESC LIMIT $2");
            db.query(&sql, params![since.0, limit]).await?
        }
    };
    rows.iter().map(|r| Ok(Lost { profile_id: r.profile(0)?, staff_userid: r.text(1)?, removed_at: Timestamp(r.int(2)?) })).collect()
}
