//! Stores and staff: `/api/v1/stores…`, `/api/v1/staff…`.

use axum::extract::State;
use serde::{Deserialize, Serialize};
use siyu_core::org::{DEFAULT_CUSTOMER_CAP, DEFAULT_TIME_ZONE, Staff, Store as StoreInfo};
use siyu_core::{ProfileId, Timestamp};
use siyu_store::org::{self, StaffCustomer, StaffView, StoreSummary, StoreView};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::App;
use crate::http::auth::{AdminCaller, Caller};
use crate::http::error::{ApiError, ApiResult, ErrorBody};
use crate::http::extract::{Json, Path, Query};

pub fn routes() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .routes(routes!(list_stores))
        .routes(routes!(get_store, put_store))
        .routes(routes!(list_staff))
        .routes(routes!(get_staff, put_staff, remove_staff))
        .routes(routes!(staff_customers))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StoreFilter {
    /// Only stores in this city.
    pub city: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/stores", tag = "organisation", summary = "Stores with their staff and customer counts",
    params(StoreFilter), responses((status = 200, body = Vec<StoreSummary>)), security(("bearer" = [])))]
pub async fn list_stores(State(app): State<App>, _: AdminCaller, Query(f): Query<StoreFilter>) -> ApiResult<Json<Vec<StoreSummary>>> {
    let stores = app.store.run(move |db| Box::pin(async move { org::list_stores(db, f.city.as_deref()).await })).await?;
    Ok(Json(stores))
}

#[utoipa::path(get, path = "/api/v1/stores/{id}", tag = "organisation", summary = "One store",
    params(("id" = String, Path)), responses((status = 200, body = StoreView), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_store(State(app): State<App>, _: AdminCaller, Path(id): Path<String>) -> ApiResult<Json<StoreView>> {
    let store = app.store.run(move |db| Box::pin(async move { org::get_store(db, &id).await })).await?;
    store.map(Json).ok_or_else(|| ApiError::not_found("no such store"))
}

#[derive(Deserialize, ToSchema)]
pub struct StoreInput {
    pub name: String,
    pub city: String,
    /// IANA zone; defaults to Asia/Shanghai.
    pub time_zone: Option<String>,
}

#[utoipa::path(put, path = "/api/v1/stores/{id}", tag = "organisation", summary = "Create or update a store",
    params(("id" = String, Path)), request_body = StoreInput,
    responses((status = 200, body = StoreView), (status = 400, body = ErrorBody)), security(("bearer" = [])))]
pub async fn put_store(State(app): State<App>, _: AdminCaller, Path(id): Path<String>, Json(input): Json<StoreInput>) -> ApiResult<Json<StoreView>> {
    let time_zone = input.time_zone.unwrap_or_else(|| DEFAULT_TIME_ZONE.to_string());
    siyu_core::org::validate_time_zone(&time_zone).map_err(|m| ApiError::bad_request("invalid_time_zone", m))?;
    if id.trim().is_empty() || input.name.trim().is_empty() || input.city.trim().is_empty() {
        return Err(ApiError::bad_request("invalid_store", "a store needs an id, a name and a city"));
    }
    let s = StoreInfo { id: id.clone(), name: input.name, city: input.city, time_zone };
    app.store.run(move |db| Box::pin(async move { org::upsert_store(db, &s, Timestamp::now()).await })).await?;
    let stored = app.store.run(move |db| Box::pin(async move { org::get_store(db, &id).await })).await?;
    stored.map(Json).ok_or_else(|| ApiError::not_found("no such store"))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StaffFilter {
    /// Only staff of this store.
    pub store_id: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/staff", tag = "organisation", summary = "Staff with their active customer counts",
    params(StaffFilter), responses((status = 200, body = Vec<StaffView>)), security(("bearer" = [])))]
pub async fn list_staff(State(app): State<App>, _: AdminCaller, Query(f): Query<StaffFilter>) -> ApiResult<Json<Vec<StaffView>>> {
    let staff = app.store.run(move |db| Box::pin(async move { org::list_staff(db, f.store_id.as_deref()).await })).await?;
    Ok(Json(staff))
}

/// Staff may read their own record; admins anyone's.
fn require_self_or_admin(caller: &Caller, userid: &str) -> ApiResult<()> {
    match caller {
        Caller::Admin => Ok(()),
        Caller::Staff { userid: me, .. } if me == userid => Ok(()),
        Caller::Staff { .. } => Err(ApiError::forbidden("staff can only see their own record and customers")),
    }
}

#[utoipa::path(get, path = "/api/v1/staff/{userid}", tag = "organisation", summary = "One member of staff",
    params(("userid" = String, Path, description = "WeCom userid")),
    responses((status = 200, body = StaffView), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn get_staff(State(app): State<App>, caller: Caller, Path(userid): Path<String>) -> ApiResult<Json<StaffView>> {
    require_self_or_admin(&caller, &userid)?;
    let staff = app.store.run(move |db| Box::pin(async move { org::get_staff(db, &userid).await })).await?;
    staff.map(Json).ok_or_else(|| ApiError::not_found("no such member of staff"))
}

#[derive(Deserialize, ToSchema)]
pub struct StaffInput {
    pub name: String,
    pub store_id: Option<String>,
    /// guide (default), store_manager or operator.
    pub role: Option<String>,
    /// Customers this guide may hold; WeCom's default is 5,000.
    pub customer_cap: Option<i64>,
}

#[utoipa::path(put, path = "/api/v1/staff/{userid}", tag = "organisation", summary = "Create or update a member of staff",
    params(("userid" = String, Path, description = "WeCom userid")), request_body = StaffInput,
    responses((status = 200, body = StaffView), (status = 400, body = ErrorBody)), security(("bearer" = [])))]
pub async fn put_staff(State(app): State<App>, _: AdminCaller, Path(userid): Path<String>, Json(input): Json<StaffInput>) -> ApiResult<Json<StaffView>> {
    let role = org::parse_role(input.role.as_deref().unwrap_or("guide"))?;
    let customer_cap = input.customer_cap.unwrap_or(DEFAULT_CUSTOMER_CAP);
    if !(1..=20_000).contains(&customer_cap) {
        return Err(ApiError::bad_request("invalid_customer_cap", "customer_cap must be between 1 and 20,000 (WeCom's expanded limit)"));
    }
    if userid.trim().is_empty() || input.name.trim().is_empty() {
        return Err(ApiError::bad_request("invalid_staff", "staff need a userid and a name"));
    }
    let staff = Staff { userid: userid.clone(), name: input.name, store_id: input.store_id, role, customer_cap };
    let view = app
        .store
        .transaction(move |db| {
            Box::pin(async move {
                if let Some(store_id) = &staff.store_id
                    && org::get_store(db, store_id).await?.is_none()
                {
                    return Err(siyu_store::StoreError::Invalid(format!("store {store_id:?} does not exist; create it first")));
                }
                org::upsert_staff(db, &staff, Timestamp::now()).await?;
                org::get_staff(db, &userid).await
            })
        })
        .await?;
    view.map(Json).ok_or_else(|| ApiError::not_found("no such member of staff"))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CustomerPage {
    /// Include customers who deleted the guide (or were deleted).
    pub include_deleted: Option<bool>,
    /// Return customers with a profile id above this (the last id of the previous page).
    pub after: Option<ProfileId>,
    /// Page size, 1–1000 (default 100).
    pub limit: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct StaffCustomers {
    pub customers: Vec<StaffCustomer>,
    /// Pass as `after` for the next page; absent on the last page.
    pub next: Option<ProfileId>,
}

#[utoipa::path(get, path = "/api/v1/staff/{userid}/customers", tag = "organisation",
    summary = "The customers who have this guide as a WeCom contact",
    params(("userid" = String, Path, description = "WeCom userid"), CustomerPage),
    responses((status = 200, body = StaffCustomers), (status = 403, body = ErrorBody)), security(("bearer" = [])))]
pub async fn staff_customers(
    State(app): State<App>,
    caller: Caller,
    Path(userid): Path<String>,
    Query(page): Query<CustomerPage>,
) -> ApiResult<Json<StaffCustomers>> {
    require_self_or_admin(&caller, &userid)?;
    let limit = page.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request("invalid_limit", "limit must be between 1 and 1000"));
    }
    let include_deleted = page.include_deleted.unwrap_or(false);
    let customers = app.store.run(move |db| Box::pin(async move { org::staff_customers(db, &userid, include_deleted, page.after, limit).await })).await?;
    let next = (customers.len() as i64 == limit).then(|| customers.last().map(|c| c.profile_id)).flatten();
    Ok(Json(StaffCustomers { customers, next }))
}

#[utoipa::path(delete, path = "/api/v1/staff/{userid}", tag = "organisation", summary = "A member of staff leaves: their record and tokens go at once",
    params(("userid" = String, Path)),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn remove_staff(State(app): State<App>, _: AdminCaller, Path(userid): Path<String>) -> ApiResult<axum::http::StatusCode> {
    let u = userid.clone();
    if app.store.transaction(move |db| Box::pin(async move { org::remove_staff(db, &u).await })).await? {
        Ok(axum::http::StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("no member of staff {userid:?}")))
    }
}
