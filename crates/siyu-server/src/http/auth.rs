//! Authentication for the admin API. Every `/api/v1` route requires a bearer token (the
//! admin token from `SIYU_ADMIN_TOKEN` or generated and printed once at first start, or
//! a token issued to a member of staff) or a console session cookie, whose
//! state-changing requests must also carry the session's CSRF token.

use axum::extract::{FromRequestParts, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::Response;
use siyu_core::org::StaffRole;
use siyu_store::admin;
use std::sync::atomic::Ordering;

use crate::http::App;
use crate::http::error::ApiError;
use crate::secrets::constant_time_eq;

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// HQ: sees everything.
    Admin,
    /// A member of staff, scoped to their own customers (guide) or store (manager).
    Staff { userid: String, role: StaffRole },
}

impl Caller {
    /// Whether this caller sees customers' phone numbers in full (PIPL): HQ does; guides
    /// and store managers see them masked, and reveal one at a time on the audit log.
    pub fn sees_phones(&self) -> bool {
        matches!(self, Caller::Admin | Caller::Staff { role: StaffRole::Operator, .. })
    }
}

/// A handler that takes a `Caller` runs only behind `require_token`, which put it in the
/// request; without it (a route mounted outside the admin API by mistake) the answer is
/// 401, never an anonymous caller.
impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Caller, ApiError> {
        parts.extensions.get::<Caller>().cloned().ok_or_else(|| ApiError::unauthorized("send an admin token as `Authorization: Bearer <token>`"))
    }
}

/// A caller with an admin token: a handler that takes one cannot run for staff (403).
#[derive(Debug, Clone)]
pub struct AdminCaller(pub Caller);

impl<S: Send + Sync> FromRequestParts<S> for AdminCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<AdminCaller, ApiError> {
        match Caller::from_request_parts(parts, state).await? {
            Caller::Admin => Ok(AdminCaller(Caller::Admin)),
            Caller::Staff { .. } => Err(ApiError::forbidden("this needs an admin token")),
        }
    }
}

/// What a caller may see, from their role: everything (admin, HQ operator), one store
/// (store manager) or one guide's own customers and tasks. Handlers that list or open
/// scoped things take this instead of working it out from the [`Caller`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    All,
    Store(String),
    Guide(String),
}

impl Scope {
    /// The (guide, store) filter a store query takes for this scope.
    pub fn filter(&self) -> (Option<String>, Option<String>) {
        match self {
            Scope::All => (None, None),
            Scope::Store(s) => (None, Some(s.clone())),
            Scope::Guide(g) => (Some(g.clone()), None),
        }
    }
}

impl FromRequestParts<App> for Scope {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Scope, ApiError> {
        match Caller::from_request_parts(parts, app).await? {
            Caller::Admin | Caller::Staff { role: StaffRole::Operator, .. } => Ok(Scope::All),
            Caller::Staff { userid, role: StaffRole::StoreManager } => {
                // The store as the staff record says now, like the role.
                let staff = app.store.run(move |db| Box::pin(async move { siyu_store::org::get_staff(db, &userid).await })).await?;
                match staff.and_then(|s| s.store_id) {
                    Some(store) => Ok(Scope::Store(store)),
                    None => Err(ApiError::forbidden("this manager has no store")),
                }
            }
            Caller::Staff { userid, role: StaffRole::Guide } => Ok(Scope::Guide(userid)),
        }
    }
}

pub const ADMIN_ROLE: &str = "admin";

pub async fn require_token(State(app): State<App>, mut req: Request, next: Next) -> Result<Response, ApiError> {
    let token = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(|t| t.trim().to_string());
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        // The console's own calls: the session stands for the same caller a token would.
        let session = crate::http::console::session::signed_in(&app, req.headers()).await.map_err(ApiError::internal)?;
        if let Some(s) = session {
            if !crate::http::console::session::csrf_ok(req.method(), req.headers(), &s.csrf, None) {
                return Err(ApiError::forbidden("a console request that changes something must carry the page's CSRF token (x-csrf-token)"));
            }
            app.metrics.admin_requests.fetch_add(1, Ordering::Relaxed);
            req.extensions_mut().insert(s.caller);
            return Ok(next.run(req).await);
        }
        app.metrics.admin_unauthorized.fetch_add(1, Ordering::Relaxed);
        return Err(ApiError::unauthorized("send an admin token as `Authorization: Bearer <token>`"));
    };
    let caller = match identify(&app, token).await? {
        Some(c) => c,
        None => {
            app.metrics.admin_unauthorized.fetch_add(1, Ordering::Relaxed);
            return Err(ApiError::unauthorized("the token is not valid"));
        }
    };
    app.metrics.admin_requests.fetch_add(1, Ordering::Relaxed);
    req.extensions_mut().insert(caller);
    Ok(next.run(req).await)
}

async fn identify(app: &App, token: String) -> Result<Option<Caller>, ApiError> {
    if let Some(admin_token) = &app.admin_token
        && constant_time_eq(admin_token, &token)
    {
        return Ok(Some(Caller::Admin));
    }
    // Stored tokens are looked up by hash, so the comparison never sees the secret.
    let grant = app.store.run(move |db| Box::pin(async move { admin::find_token(db, &token).await })).await?;
    let Some(grant) = grant else { return Ok(None) };
    match grant.staff_userid {
        // A staff token carries who, not what: the role and store come from the staff
        // record as it is now, so a member removed or demoted loses access at once.
        Some(userid) if grant.role != ADMIN_ROLE => {
            let u = userid.clone();
            let staff = app.store.run(move |db| Box::pin(async move { siyu_store::org::get_staff(db, &u).await })).await?;
            Ok(staff.map(|s| Caller::Staff { userid, role: s.role }))
        }
        _ => Ok(Some(Caller::Admin)),
    }
}
