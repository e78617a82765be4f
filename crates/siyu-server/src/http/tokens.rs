//! API tokens: `/api/v1/tokens`. An admin issues a token for a member of staff (or
//! another admin), lists tokens without their secrets, and revokes them. A staff token
//! names who holds it; what they may see follows their staff record at each request.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use siyu_core::Timestamp;
use siyu_store::admin::{self, TokenInfo};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::App;
use crate::http::auth::{ADMIN_ROLE, AdminCaller};
use crate::http::error::{ApiError, ApiResult, ErrorBody};
use crate::http::extract::{Json, Path};

pub fn routes() -> OpenApiRouter<App> {
    OpenApiRouter::new().routes(routes!(list_tokens, create_token)).routes(routes!(revoke_token))
}

/// What a stored staff token is granted: the staff record decides the rest.
pub const STAFF_ROLE: &str = "staff";

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// The member of staff the token acts as (a guide, store manager or operator, as
    /// their staff record says). Leave out for an admin token.
    pub staff_userid: Option<String>,
    /// What the token is for, e.g. "Li's phone".
    pub label: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct IssuedToken {
    /// The secret: shown once, never again (Siyu keeps only its hash).
    pub token: String,
    #[serde(flatten)]
    pub info: TokenInfo,
}

#[utoipa::path(post, path = "/api/v1/tokens", tag = "tokens", summary = "Issue a token for a member of staff, or an admin token",
    request_body = NewToken,
    responses((status = 201, body = IssuedToken), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create_token(State(app): State<App>, _: AdminCaller, Json(input): Json<NewToken>) -> ApiResult<(StatusCode, Json<IssuedToken>)> {
    let label = input.label.unwrap_or_default().trim().to_string();
    if label.chars().count() > 200 {
        return Err(ApiError::bad_request("invalid_label", "label: at most 200 characters"));
    }
    let staff = input.staff_userid.map(|s| s.trim().to_string());
    if let Some(userid) = staff.clone() {
        let found = app.store.run(move |db| Box::pin(async move { siyu_store::org::get_staff(db, &userid).await })).await?;
        if found.is_none() {
            return Err(ApiError::bad_request(
                "unknown_staff",
                format!("staff_userid: there is no member of staff {:?}; add them with PUT /api/v1/staff/{{userid}} first", staff.as_deref().unwrap_or("")),
            ));
        }
    }
    let token = crate::secrets::random_token(if staff.is_some() { "siyu_staff_" } else { "siyu_admin_" });
    let role = if staff.is_some() { STAFF_ROLE } else { ADMIN_ROLE };
    let (t, s, l) = (token.clone(), staff.clone(), label.clone());
    app.store.run(move |db| Box::pin(async move { admin::add_token(db, &t, role, s.as_deref(), &l).await })).await?;
    let info = TokenInfo { id: admin::token_id(&token), role: role.to_string(), staff_userid: staff, label, created_at: Timestamp::now() };
    tracing::info!(id = %info.id, role, staff = ?info.staff_userid, "token issued");
    Ok((StatusCode::CREATED, Json(IssuedToken { token, info })))
}

#[utoipa::path(get, path = "/api/v1/tokens", tag = "tokens", summary = "Tokens (ids, never secrets)",
    responses((status = 200, body = Vec<TokenInfo>), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)), security(("bearer" = [])))]
pub async fn list_tokens(State(app): State<App>, _: AdminCaller) -> ApiResult<Json<Vec<TokenInfo>>> {
    Ok(Json(app.store.run(|db| Box::pin(admin::list_tokens(db))).await?))
}

#[utoipa::path(delete, path = "/api/v1/tokens/{id}", tag = "tokens", summary = "Revoke a token: it stops working at once",
    params(("id" = String, Path)),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn revoke_token(State(app): State<App>, _: AdminCaller, Path(id): Path<String>) -> ApiResult<StatusCode> {
    let i = id.clone();
    if app.store.run(move |db| Box::pin(async move { admin::revoke_token(db, &i).await })).await? {
        tracing::info!(id = %id, "token revoked");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("no token {id}")))
    }
}
