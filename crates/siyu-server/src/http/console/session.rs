//! Signing in to the console: local accounts (argon2 password hashes, lockout after
//! repeated failures) and WeCom sign-in (the OAuth2 code → `auth/getuserinfo` → staff
//! userid), sessions in an HttpOnly cookie with an idle expiry, and a CSRF token every
//! state-changing request must carry.
//!
//! A session stands for the same [`Caller`] an API token does, so every page and every
//! API call behind it is scoped exactly as the API is.

use std::time::Duration;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use axum::http::header::{COOKIE, HOST, ORIGIN};
use axum::http::{HeaderMap, Method};
use siyu_core::Timestamp;
use siyu_store::console as stored;

use crate::http::App;
use crate::http::auth::{ADMIN_ROLE, Caller};
use crate::secrets::{constant_time_eq, random_token};

pub const SESSION_COOKIE: &str = "siyu_session";
/// Failed sign-ins in a row before an account is locked, and for how long.
pub const MAX_FAILURES: i64 = 5;
pub const LOCKOUT: Duration = Duration::from_secs(15 * 60);

/// How long a session may sit unused: `SIYU_SESSION_IDLE_MINUTES`, default 120.
pub fn idle_limit() -> Duration {
    let minutes = std::env::var("SIYU_SESSION_IDLE_MINUTES").ok().and_then(|v| v.parse::<u64>().ok()).filter(|m| *m > 0).unwrap_or(120);
    Duration::from_secs(minutes * 60)
}

/// A signed-in browser: who, and the token its forms and scripts send back.
#[derive(Debug, Clone)]
pub struct SignedIn {
    pub caller: Caller,
    pub csrf: String,
}

/// A cookie's value from the request, if sent.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// The session a request's cookie opens, if any and not idle too long.
pub async fn signed_in(app: &App, headers: &HeaderMap) -> anyhow::Result<Option<SignedIn>> {
    let Some(secret) = cookie(headers, SESSION_COOKIE).filter(|s| !s.is_empty()).map(str::to_string) else { return Ok(None) };
    let now = Timestamp::now();
    let idle_since = Timestamp(now.0 - idle_limit().as_millis() as i64);
    let session = app.store.run(move |db| Box::pin(async move { stored::touch_session(db, &secret, idle_since, now).await })).await?;
    let Some(session) = session else { return Ok(None) };
    let caller = match session.staff_userid {
        None => Caller::Admin,
        // Role and store as the staff record says now: a member removed or demoted
        // loses what they could see at once, as with API tokens.
        Some(userid) => {
            let u = userid.clone();
            match app.store.run(move |db| Box::pin(async move { siyu_store::org::get_staff(db, &u).await })).await? {
                Some(staff) => Caller::Staff { userid, role: staff.role },
                None => return Ok(None),
            }
        }
    };
    Ok(Some(SignedIn { caller, csrf: session.csrf }))
}

/// Whether a state-changing request from a session may go ahead: it carries the
/// session's CSRF token (form field or `x-csrf-token` header) and, when the browser
/// says where it comes from, comes from this site.
pub fn csrf_ok(method: &Method, headers: &HeaderMap, expected: &str, sent: Option<&str>) -> bool {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return true;
    }
    let sent = sent.or_else(|| headers.get("x-csrf-token").and_then(|v| v.to_str().ok()));
    same_origin(headers) && sent.is_some_and(|s| constant_time_eq(s, expected))
}

/// A request's `Origin`, when the browser sent one, names this host.
pub fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(ORIGIN).and_then(|v| v.to_str().ok()) else { return true };
    let host = headers.get(HOST).and_then(|v| v.to_str().ok()).unwrap_or_default();
    origin.split_once("://").is_some_and(|(_, rest)| rest == host)
}

/// Starts a session; returns the `Set-Cookie` value.
pub async fn start(app: &App, staff_userid: Option<String>, method: String, secure: bool) -> anyhow::Result<String> {
    let secret = random_token("");
    let csrf = random_token("");
    let s = secret.clone();
    let now = Timestamp::now();
    let idle_since = Timestamp(now.0 - idle_limit().as_millis() as i64);
    app.store.run(move |db| Box::pin(async move { stored::add_session(db, &s, staff_userid.as_deref(), &method, &csrf, now, idle_since).await })).await?;
    Ok(session_cookie(&secret, secure, None))
}

pub async fn end(app: &App, headers: &HeaderMap) -> anyhow::Result<()> {
    if let Some(secret) = cookie(headers, SESSION_COOKIE).map(str::to_string) {
        app.store.run(move |db| Box::pin(async move { stored::end_session(db, &secret).await })).await?;
    }
    Ok(())
}

/// HttpOnly (no script reads it), SameSite=Lax (not sent on another site's POST),
/// Secure behind TLS. Without `max_age` it lasts while the browser does: the server's
/// idle limit decides when a session ends, not a clock started at sign-in.
pub fn session_cookie(value: &str, secure: bool, max_age: Option<Duration>) -> String {
    let secure = if secure { "; Secure" } else { "" };
    let age = max_age.map(|a| format!("; Max-Age={}", a.as_secs())).unwrap_or_default();
    format!("{SESSION_COOKIE}={value}; Path=/; HttpOnly; SameSite=Lax{age}{secure}")
}

/// Whether the browser reached Siyu over TLS (directly or through a proxy that says so).
pub fn behind_tls(headers: &HeaderMap) -> bool {
    headers.get("x-forwarded-proto").and_then(|v| v.to_str().ok()).is_some_and(|p| p.eq_ignore_ascii_case("https"))
}

/// Why a password sign-in was refused. The message never says whether the account
/// exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    Wrong,
    Locked,
}

/// Checks a local account's password. Each attempt is counted before the password is
/// checked, so even attempts made at once get at most [`MAX_FAILURES`] checks before
/// the account locks. Returns the account's staff userid (`None`: an admin).
pub async fn check_password(app: &App, username: &str, password: &str) -> anyhow::Result<Result<Option<String>, Refused>> {
    let name = username.to_string();
    let now = Timestamp::now();
    let (account, attempt) =
        app.store.run(move |db| Box::pin(async move { Ok((stored::get_account(db, &name).await?, stored::reserve_attempt(db, &name, now).await?)) })).await?;
    let Some(account) = account else {
        // Hash anyway, so an unknown name takes as long as a wrong password.
        let _ = hash_password(password.to_string()).await;
        return Ok(Err(Refused::Wrong));
    };
    let Some(attempt) = attempt else { return Ok(Err(Refused::Locked)) };
    let name = username.to_string();
    let lock_until = Timestamp(now.0 + LOCKOUT.as_millis() as i64);
    if attempt > MAX_FAILURES {
        app.store.run(move |db| Box::pin(async move { stored::lock(db, &name, lock_until).await })).await?;
        return Ok(Err(Refused::Locked));
    }
    if verify(password.to_string(), account.password_hash.clone()).await {
        app.store.run(move |db| Box::pin(async move { stored::record_success(db, &name).await })).await?;
        return Ok(Ok(account.staff_userid));
    }
    if attempt == MAX_FAILURES {
        app.store.run(move |db| Box::pin(async move { stored::lock(db, &name, lock_until).await })).await?;
        tracing::warn!(username = %username, "console account locked after repeated failed sign-ins");
        return Ok(Err(Refused::Locked));
    }
    Ok(Err(Refused::Wrong))
}

/// An argon2id hash (PHC string) of a password, with a fresh salt.
pub async fn hash_password(password: String) -> anyhow::Result<String> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
        argon2::Argon2::default().hash_password(password.as_bytes(), &salt).map(|h| h.to_string()).map_err(|e| anyhow::anyhow!("hashing a password: {e}"))
    })
    .await?
}

async fn verify(password: String, hash: String) -> bool {
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&hash).is_ok_and(|parsed| argon2::Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
    })
    .await
    .unwrap_or(false)
}

/// With no console account yet, makes `admin` with `SIYU_ADMIN_PASSWORD` or a generated
/// password, which is returned to be printed once.
pub async fn ensure_admin_account(store: &siyu_store::Store, from_env: Option<String>) -> anyhow::Result<Option<String>> {
    if store.run(|db| Box::pin(stored::count_accounts(db))).await? > 0 {
        return Ok(None);
    }
    let generated = from_env.is_none();
    let password = from_env.unwrap_or_else(|| random_token("").chars().take(16).collect());
    let hash = hash_password(password.clone()).await?;
    store.run(move |db| Box::pin(async move { stored::add_account(db, ADMIN_ROLE, &hash, None, Timestamp::now()).await })).await?;
    Ok(generated.then_some(password))
}
