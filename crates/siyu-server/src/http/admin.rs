//! The admin API for profiles, tags and counts: `/api/v1/profiles…`, `/api/v1/stats`.

use std::collections::HashMap;

use axum::extract::State;
use serde::{Deserialize, Serialize};
use siyu_core::{Identity, IdentityKind, ProfileId, Timestamp};
use siyu_engine::Lifecycle;
use siyu_store::profiles::{self, EventCursor, EventView, ProfileView, Stats};
use siyu_store::{Db, StoreError, org};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::App;
use crate::http::auth::{AdminCaller, Caller};
use crate::http::error::{ApiError, ApiResult, ErrorBody};
use crate::http::extract::{Json, Path, Query};

pub fn routes() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .routes(routes!(lookup))
        .routes(routes!(profile))
        .routes(routes!(events))
        .routes(routes!(add_tag, remove_tag))
        .routes(routes!(stats))
        .routes(routes!(ingest_status))
}

/// A profile reference in a path: the numeric id or the public UUID.
pub async fn resolve_profile(app: &App, caller: &Caller, reference: &str) -> ApiResult<ProfileId> {
    let reference = reference.to_string();
    let caller = caller.clone();
    let found = app
        .store
        .run(move |db| {
            Box::pin(async move {
                let id = match reference.parse::<ProfileId>() {
                    Ok(n) => profiles::live_id(db, n).await?,
                    Err(_) => profiles::find_by_uuid(db, &reference).await?,
                };
                match id {
                    Some(id) if visible(db, &caller, id).await? => Ok(Some(id)),
                    _ => Ok(None),
                }
            })
        })
        .await?;
    found.ok_or_else(|| ApiError::not_found("no such profile"))
}

/// Staff see only their own customers (guides) or their store's (managers); a profile
/// they may not see is reported as not found, so its existence does not leak.
async fn visible(db: &mut dyn Db, caller: &Caller, profile: ProfileId) -> Result<bool, StoreError> {
    match caller {
        Caller::Admin => Ok(true),
        Caller::Staff { userid, .. } => org::can_see_customer(db, userid, profile).await,
    }
}

/// A profile as the store has it, with what the segment engine knows of it.
#[derive(Serialize, ToSchema)]
pub struct ProfileDetail {
    #[serde(flatten)]
    pub profile: ProfileView,
    /// Stage, RFM and four-highs scores.
    pub lifecycle: Option<Lifecycle>,
    /// Segments the profile is a member of.
    pub segments: Vec<String>,
}

/// A profile as this caller may read it: phone numbers masked for store staff (PIPL),
/// in traits and in the timeline's payloads alike.
pub fn for_caller(caller: &Caller, mut profile: ProfileView) -> ProfileView {
    if !caller.sees_phones() {
        let mut traits = serde_json::Value::Object(std::mem::take(&mut profile.traits));
        siyu_core::phone::mask_in(&mut traits);
        if let serde_json::Value::Object(t) = traits {
            profile.traits = t;
        }
        profile.recent_events = mask_events(caller, profile.recent_events);
    }
    profile
}

pub fn mask_events(caller: &Caller, mut events: Vec<EventView>) -> Vec<EventView> {
    if !caller.sees_phones() {
        for e in &mut events {
            siyu_core::phone::mask_in(&mut e.payload);
            if let Some(c) = e.context.as_mut() {
                siyu_core::phone::mask_in(c);
            }
        }
    }
    events
}

fn detail(app: &App, profile: ProfileView) -> ProfileDetail {
    let state = app.engine.read();
    let p = profile.id.bit();
    let lifecycle = state.index.lifecycle_of(p);
    let segments = state.segments.names().filter(|n| state.segments.get(n).is_some_and(|s| s.members.contains(p))).cloned().collect();
    ProfileDetail { profile, lifecycle, segments }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LookupQuery {
    /// The brand's customer id (Segment userId).
    pub user_id: Option<String>,
    pub anonymous_id: Option<String>,
    /// WeCom external contact id (wm…).
    pub external_userid: Option<String>,
    pub unionid: Option<String>,
    /// WeChat openid; give `app_id` too (or `appid:openid`).
    pub openid: Option<String>,
    pub app_id: Option<String>,
    /// Any common form: +8613812345678, 138 1234 5678 …
    pub phone: Option<String>,
    /// An e-mail address, any case.
    pub email: Option<String>,
    pub member_no: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/profiles/lookup", tag = "profiles",
    summary = "Find a profile by any one of its identities",
    params(LookupQuery),
    responses((status = 200, body = ProfileDetail), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn lookup(State(app): State<App>, caller: Caller, Query(q): Query<HashMap<String, String>>) -> ApiResult<Json<ProfileDetail>> {
    let app_id = q.get("app_id").map(String::as_str);
    let mut identities = Vec::new();
    for (key, value) in &q {
        if key == "app_id" {
            continue;
        }
        let Some(kind) = IdentityKind::parse(key) else {
            return Err(ApiError::bad_request(
                "unknown_identity",
                format!(
                    "{key:?} is not an identity kind; use one of user_id, anonymous_id, external_userid, unionid, openid (with app_id), phone, email, member_no"
                ),
            ));
        };
        let identity = Identity::new(kind, value, app_id).map_err(|e| ApiError::bad_request("invalid_identity", e.to_string()))?;
        identities.push(identity);
    }
    let identity = match identities.len() {
        1 => identities.remove(0),
        0 => return Err(ApiError::bad_request("missing_identity", "give one identity, e.g. ?user_id=u1 or ?phone=+8613812345678")),
        _ => return Err(ApiError::bad_request("ambiguous_lookup", "give exactly one identity to look up")),
    };
    let caller2 = caller.clone();
    let profile = app
        .store
        .run(move |db| {
            Box::pin(async move {
                match profiles::find_by_identity(db, &identity).await? {
                    Some(id) if visible(db, &caller, id).await? => profiles::load(db, id, RECENT_EVENTS).await,
                    _ => Ok(None),
                }
            })
        })
        .await?;
    profile.map(|p| Json(detail(&app, for_caller(&caller2, p)))).ok_or_else(|| ApiError::not_found("no profile has that identity"))
}

const RECENT_EVENTS: i64 = 20;

#[utoipa::path(get, path = "/api/v1/profiles/{id}", tag = "profiles",
    summary = "A profile by numeric id or UUID (merged ids lead to the survivor)",
    params(("id" = String, Path, description = "Profile id or UUID")),
    responses((status = 200, body = ProfileDetail), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn profile(State(app): State<App>, caller: Caller, Path(id): Path<String>) -> ApiResult<Json<ProfileDetail>> {
    let id = resolve_profile(&app, &caller, &id).await?;
    let p = app.store.run(move |db| Box::pin(async move { profiles::load(db, id, RECENT_EVENTS).await })).await?;
    p.map(|p| Json(detail(&app, for_caller(&caller, p)))).ok_or_else(|| ApiError::not_found("no such profile"))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Page size, 1–500 (default 50).
    pub limit: Option<i64>,
    /// The `next` cursor of the previous page.
    pub before: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct EventPage {
    pub events: Vec<EventView>,
    /// Pass as `before` for the next (older) page; absent on the last page.
    pub next: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/profiles/{id}/events", tag = "profiles",
    summary = "The profile's timeline, newest first",
    params(("id" = String, Path, description = "Profile id or UUID"), EventsQuery),
    responses((status = 200, body = EventPage), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn events(State(app): State<App>, caller: Caller, Path(id): Path<String>, Query(q): Query<EventsQuery>) -> ApiResult<Json<EventPage>> {
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::bad_request("invalid_limit", "limit must be between 1 and 500"));
    }
    let before = match &q.before {
        None => None,
        Some(c) => Some(EventCursor::decode(c).ok_or_else(|| ApiError::bad_request("invalid_cursor", "before must be a `next` value from a previous page"))?),
    };
    let id = resolve_profile(&app, &caller, &id).await?;
    let events = app.store.run(move |db| Box::pin(async move { profiles::events_page(db, id, before, limit).await })).await?;
    let next = (events.len() as i64 == limit).then(|| events.last().map(|e| EventCursor { ts: e.timestamp.0, id: e.id }.encode())).flatten();
    Ok(Json(EventPage { events: mask_events(&caller, events), next }))
}

#[derive(Serialize, ToSchema)]
pub struct TagChange {
    pub profile_id: ProfileId,
    pub tag: String,
    /// Whether this call changed anything (false: it was already so).
    pub changed: bool,
}

/// Tags are short labels a person reads: 1–64 characters, no control characters.
pub fn validate_tag(tag: &str) -> ApiResult<()> {
    siyu_core::tag::validate(tag).map_err(|m| ApiError::bad_request("invalid_tag", m))
}

#[utoipa::path(put, path = "/api/v1/profiles/{id}/tags/{tag}", tag = "profiles", summary = "Add a manual tag",
    params(("id" = String, Path, description = "Profile id or UUID"), ("tag" = String, Path)),
    responses((status = 200, body = TagChange), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn add_tag(State(app): State<App>, caller: Caller, Path((id, tag)): Path<(String, String)>) -> ApiResult<Json<TagChange>> {
    validate_tag(&tag)?;
    let profile_id = resolve_profile(&app, &caller, &id).await?;
    let t = tag.clone();
    let changed = app.store.run(move |db| Box::pin(async move { profiles::add_tag(db, profile_id, &t, "manual", Timestamp::now()).await })).await?;
    app.engine.set_tag(profile_id.bit(), &tag, true);
    app.tasks.spawn(crate::wecom::tags::push(app.store.clone(), app.wecom_client(), profile_id, tag.clone(), true));
    Ok(Json(TagChange { profile_id, tag, changed }))
}

#[utoipa::path(delete, path = "/api/v1/profiles/{id}/tags/{tag}", tag = "profiles", summary = "Remove a tag",
    params(("id" = String, Path, description = "Profile id or UUID"), ("tag" = String, Path)),
    responses((status = 200, body = TagChange), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn remove_tag(State(app): State<App>, caller: Caller, Path((id, tag)): Path<(String, String)>) -> ApiResult<Json<TagChange>> {
    let profile_id = resolve_profile(&app, &caller, &id).await?;
    let t = tag.clone();
    let changed = app.store.run(move |db| Box::pin(async move { profiles::remove_tag(db, profile_id, &t).await })).await?;
    app.engine.set_tag(profile_id.bit(), &tag, false);
    if changed {
        app.tasks.spawn(crate::wecom::tags::push(app.store.clone(), app.wecom_client(), profile_id, tag.clone(), false));
    }
    if !changed {
        return Err(ApiError::not_found(format!("the profile has no tag {tag:?}")));
    }
    Ok(Json(TagChange { profile_id, tag, changed }))
}

#[derive(Serialize, ToSchema)]
pub struct StatsView {
    #[serde(flatten)]
    #[schema(inline)]
    pub counts: Stats,
    /// Bytes the store occupies on disk.
    pub disk_bytes: u64,
    /// sqlite or postgres.
    pub backend: String,
}

#[utoipa::path(get, path = "/api/v1/stats", tag = "profiles", summary = "How many profiles and events",
    responses((status = 200, body = StatsView)), security(("bearer" = [])))]
pub async fn stats(State(app): State<App>, _: AdminCaller) -> ApiResult<Json<StatsView>> {
    let counts = app.store.run(|db| Box::pin(profiles::stats(db))).await?;
    let disk_bytes = app.store.disk_bytes().await?;
    let backend = format!("{:?}", app.store.backend()).to_lowercase();
    Ok(Json(StatsView { counts, disk_bytes, backend }))
}

#[derive(Serialize, ToSchema)]
pub struct IngestStatus {
    /// Sequence number of the last acknowledged (durable) message.
    pub appended_seq: u64,
    /// Sequence number of the last message applied to the store.
    pub applied_seq: u64,
    /// Acknowledged messages not yet visible in profiles and timelines.
    pub lag: u64,
}

#[utoipa::path(get, path = "/api/v1/ingest", tag = "profiles",
    summary = "Ingest progress: acknowledged messages are applied to profiles within moments",
    responses((status = 200, body = IngestStatus)), security(("bearer" = [])))]
pub async fn ingest_status(State(app): State<App>, _: AdminCaller) -> ApiResult<Json<IngestStatus>> {
    let (appended_seq, applied_seq) = (app.ingest.appended(), app.ingest.indexed());
    Ok(Json(IngestStatus { appended_seq, applied_seq, lag: appended_seq.saturating_sub(applied_seq) }))
}
