//! The audit log of personal data (PIPL): every phone number shown in full and every
//! export of customer data, with who, whose, when and from where. Admins read it here
//! and in the console.

use axum::extract::State;
use axum::http::HeaderMap;
use serde::Deserialize;
use siyu_core::Timestamp;
use siyu_store::console::{self as stored, AuditEntry};
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::App;
use crate::http::auth::AdminCaller;
use crate::http::error::{ApiResult, ErrorBody};
use crate::http::extract::{Json, Query};

pub fn routes() -> OpenApiRouter<App> {
    OpenApiRouter::new().routes(routes!(list))
}

/// The client's address as the server saw it: the first `X-Forwarded-For` hop behind a
/// proxy.
pub fn client_ip(headers: &HeaderMap) -> Option<String> {
    headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()).map(|v| v.split(',').next().unwrap_or(v).trim().to_string())
}

pub async fn record(app: &App, actor: &str, action: &str, subject: &str, headers: &HeaderMap) -> ApiResult<()> {
    let (actor, action, subject, ip) = (actor.to_string(), action.to_string(), subject.to_string(), client_ip(headers));
    app.store.run(move |db| Box::pin(async move { stored::audit(db, &actor, &action, &subject, ip.as_deref(), Timestamp::now()).await })).await?;
    Ok(())
}

#[derive(Deserialize, IntoParams)]
pub struct AuditQuery {
    /// Newest first; default 100, at most 1000.
    pub limit: Option<i64>,
}

#[utoipa::path(get, path = "/api/v1/audit", tag = "organisation", summary = "Who saw or exported whose personal data, newest first",
    params(AuditQuery), responses((status = 200, body = [AuditEntry]), (status = 400, body = ErrorBody)), security(("bearer" = [])))]
pub async fn list(State(app): State<App>, _: AdminCaller, Query(q): Query<AuditQuery>) -> ApiResult<Json<Vec<AuditEntry>>> {
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    Ok(Json(app.store.run(move |db| Box::pin(stored::audit_entries(db, limit))).await?))
}
