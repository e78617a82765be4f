//! Outreach: campaigns (`/api/v1/campaigns…`), journeys, guide tasks, and every touch
//! of a profile with why it was or was not sent.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use siyu_outreach::ContactPolicy;
use siyu_outreach::campaign::Action;
use siyu_store::outreach::{self as stored, AuditEntry, CampaignRow, Completion, DeliveryRow, JourneyRow, JourneyState, TaskRow};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::App;
use crate::http::admin::resolve_profile;
use crate::http::auth::{AdminCaller, Caller, Scope};
use crate::http::error::{ApiError, ApiResult, ErrorBody};
use crate::http::extract::{Json, Path, Query};
use crate::outreach::campaigns::{self, CampaignError, Preview, Report};
use crate::outreach::{journeys, render};

pub fn routes() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .routes(routes!(list_campaigns, create_campaign))
        .routes(routes!(show_campaign, update_campaign))
        .routes(routes!(preview_campaign))
        .routes(routes!(campaign_report))
        .routes(routes!(campaign_audit))
        .routes(routes!(campaign_action))
        .routes(routes!(list_journeys, put_journey))
        .routes(routes!(show_journey))
        .routes(routes!(profile_deliveries))
        .routes(routes!(list_tasks))
        .routes(routes!(completion))
        .routes(routes!(show_task))
        .routes(routes!(resolve_item))
        .routes(routes!(contact_policy))
}

impl From<CampaignError> for ApiError {
    fn from(e: CampaignError) -> ApiError {
        match e {
            CampaignError::NotFound(_) => ApiError::not_found(e.to_string()),
            CampaignError::Invalid(m) => ApiError::bad_request("invalid_campaign", m),
            CampaignError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "campaign_conflict", m),
            CampaignError::Other(e) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
        }
    }
}

fn actor(caller: &Caller) -> String {
    match caller {
        Caller::Admin => "admin".into(),
        Caller::Staff { userid, .. } => userid.clone(),
    }
}

// ---------- campaigns ----------

#[utoipa::path(get, path = "/api/v1/campaigns", tag = "outreach", summary = "All campaigns",
    responses((status = 200, body = [CampaignRow])), security(("bearer" = [])))]
pub async fn list_campaigns(State(app): State<App>, _: AdminCaller) -> ApiResult<Json<Vec<CampaignRow>>> {
    Ok(Json(app.store.run(|db| Box::pin(stored::list_campaigns(db))).await?))
}

#[utoipa::path(post, path = "/api/v1/campaigns", tag = "outreach", summary = "Create a campaign (a draft)",
    request_body(content = Object, description = "A CampaignSpec: name, audience {segment, snapshot}, channel, content, coupon, schedule {at, every_days}, holdout_percent, guardrail, conversion_event, task_deadline_hours"),
    responses((status = 201, body = CampaignRow), (status = 400, body = ErrorBody)), security(("bearer" = [])))]
pub async fn create_campaign(State(app): State<App>, AdminCaller(caller): AdminCaller, Json(spec): Json<Value>) -> ApiResult<(StatusCode, Json<CampaignRow>)> {
    Ok((StatusCode::CREATED, Json(campaigns::create(&app.outreach, spec, actor(&caller)).await?)))
}

#[utoipa::path(get, path = "/api/v1/campaigns/{id}", tag = "outreach", summary = "One campaign",
    params(("id" = i64, Path)), responses((status = 200, body = CampaignRow), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn show_campaign(State(app): State<App>, _: AdminCaller, Path(id): Path<i64>) -> ApiResult<Json<CampaignRow>> {
    Ok(Json(campaigns::get(&app.outreach, id).await?))
}

#[utoipa::path(put, path = "/api/v1/campaigns/{id}", tag = "outreach", summary = "Edit a draft campaign",
    params(("id" = i64, Path)), request_body = Object,
    responses((status = 200, body = CampaignRow), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)), security(("bearer" = [])))]
pub async fn update_campaign(
    State(app): State<App>,
    AdminCaller(caller): AdminCaller,
    Path(id): Path<i64>,
    Json(spec): Json<Value>,
) -> ApiResult<Json<CampaignRow>> {
    Ok(Json(campaigns::update(&app.outreach, id, spec, actor(&caller)).await?))
}

#[derive(Deserialize, IntoParams)]
pub struct PreviewParams {
    /// Sample messages to render (default 5, at most 50).
    pub sample: Option<usize>,
}

#[utoipa::path(post, path = "/api/v1/campaigns/{id}/preview", tag = "outreach", summary = "Dry run: who would get it, who is suppressed and why",
    params(("id" = i64, Path), PreviewParams), responses((status = 200, body = Preview), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn preview_campaign(State(app): State<App>, _: AdminCaller, Path(id): Path<i64>, Query(q): Query<PreviewParams>) -> ApiResult<Json<Preview>> {
    Ok(Json(campaigns::preview(&app.outreach, id, q.sample.unwrap_or(5).min(50)).await?))
}

#[utoipa::path(get, path = "/api/v1/campaigns/{id}/report", tag = "outreach", summary = "Sends, responses, blocks, lift against the holdout",
    params(("id" = i64, Path)), responses((status = 200, body = Report), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn campaign_report(State(app): State<App>, _: AdminCaller, Path(id): Path<i64>) -> ApiResult<Json<Report>> {
    Ok(Json(campaigns::report(&app.outreach, id).await?))
}

#[utoipa::path(get, path = "/api/v1/campaigns/{id}/audit", tag = "outreach", summary = "Who changed what, and what the campaign did",
    params(("id" = i64, Path)), responses((status = 200, body = [AuditEntry])), security(("bearer" = [])))]
pub async fn campaign_audit(State(app): State<App>, _: AdminCaller, Path(id): Path<i64>) -> ApiResult<Json<Vec<AuditEntry>>> {
    campaigns::get(&app.outreach, id).await?;
    Ok(Json(app.store.run(move |db| Box::pin(stored::audit_trail(db, id))).await?))
}

#[utoipa::path(post, path = "/api/v1/campaigns/{id}/actions/{action}", tag = "outreach", summary = "schedule · unschedule · pause · resume · complete",
    params(("id" = i64, Path), ("action" = String, Path)),
    responses((status = 200, body = CampaignRow), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)), security(("bearer" = [])))]
pub async fn campaign_action(
    State(app): State<App>,
    AdminCaller(caller): AdminCaller,
    Path((id, action)): Path<(i64, String)>,
) -> ApiResult<Json<CampaignRow>> {
    let action: Action = serde_json::from_value(Value::String(action.clone()))
        .map_err(|_| ApiError::bad_request("unknown_action", format!("unknown action {action:?}; use schedule, unschedule, pause, resume or complete")))?;
    Ok(Json(campaigns::act(&app.outreach, id, action, actor(&caller)).await?))
}

// ---------- journeys ----------

#[derive(Serialize, ToSchema)]
pub struct JourneyView {
    #[serde(flatten)]
    #[schema(inline)]
    pub journey: JourneyRow,
    /// Customers by status: active, completed, exited.
    pub customers: std::collections::BTreeMap<String, i64>,
}

#[utoipa::path(get, path = "/api/v1/journeys", tag = "outreach", summary = "All journeys",
    responses((status = 200, body = [JourneyRow])), security(("bearer" = [])))]
pub async fn list_journeys(State(app): State<App>, _: AdminCaller) -> ApiResult<Json<Vec<JourneyRow>>> {
    Ok(Json(app.store.run(|db| Box::pin(stored::list_journeys(db))).await?))
}

#[derive(Deserialize, ToSchema)]
pub struct JourneyInput {
    /// A JourneySpec: name, trigger, steps, exit_on, reentry.
    #[schema(value_type = Object)]
    pub spec: Value,
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn yes() -> bool {
    true
}

#[utoipa::path(post, path = "/api/v1/journeys", tag = "outreach", summary = "Create or replace a journey (by name)",
    request_body = JourneyInput, responses((status = 200, body = JourneyView), (status = 400, body = ErrorBody)), security(("bearer" = [])))]
pub async fn put_journey(State(app): State<App>, _: AdminCaller, Json(input): Json<JourneyInput>) -> ApiResult<Json<JourneyView>> {
    let spec = journeys::read_spec(&input.spec).map_err(|m| ApiError::bad_request("invalid_journey", m))?;
    let now = app.outreach.now();
    let value = serde_json::to_value(&spec).map_err(ApiError::internal)?;
    let id = app.store.run(move |db| Box::pin(async move { stored::put_journey(db, &spec.name, &value, input.enabled, now).await })).await?;
    journey_view(&app, id).await.map(Json)
}

async fn journey_view(app: &App, id: i64) -> ApiResult<JourneyView> {
    let (journey, counts) =
        app.store.run(move |db| Box::pin(async move { Ok((stored::get_journey(db, id).await?, stored::journey_counts(db, id).await?)) })).await?;
    let journey = journey.ok_or_else(|| ApiError::not_found(format!("no journey {id}")))?;
    Ok(JourneyView { journey, customers: counts.into_iter().collect() })
}

#[utoipa::path(get, path = "/api/v1/journeys/{id}", tag = "outreach", summary = "One journey with its customers by status",
    params(("id" = i64, Path)), responses((status = 200, body = JourneyView), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn show_journey(State(app): State<App>, _: AdminCaller, Path(id): Path<i64>) -> ApiResult<Json<JourneyView>> {
    journey_view(&app, id).await.map(Json)
}

// ---------- a profile's touches ----------

#[derive(Serialize, ToSchema)]
pub struct ProfileDeliveries {
    pub profile_id: siyu_core::ProfileId,
    /// Newest first. A touch that was not sent says why in `reason`.
    pub deliveries: Vec<DeliveryRow>,
    pub journeys: Vec<JourneyState>,
}

#[utoipa::path(get, path = "/api/v1/profiles/{id}/deliveries", tag = "outreach", summary = "Every touch of a customer, and why one was not sent",
    params(("id" = String, Path, description = "Profile id or UUID")), responses((status = 200, body = ProfileDeliveries), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn profile_deliveries(State(app): State<App>, caller: Caller, Path(id): Path<String>) -> ApiResult<Json<ProfileDeliveries>> {
    let profile_id = resolve_profile(&app, &caller, &id).await?;
    let (deliveries, journeys) = app
        .store
        .run(move |db| {
            Box::pin(async move { Ok((stored::deliveries_of_profile(db, profile_id, 200).await?, stored::states_of_profile(db, profile_id).await?)) })
        })
        .await?;
    Ok(Json(ProfileDeliveries { profile_id, deliveries, journeys }))
}

// ---------- guide tasks ----------

fn may_see(scope: &Scope, task: &TaskRow) -> bool {
    match scope {
        Scope::All => true,
        Scope::Guide(g) => &task.guide == g,
        Scope::Store(s) => task.store_id.as_deref() == Some(s.as_str()),
    }
}

#[derive(Deserialize, IntoParams)]
pub struct TaskQuery {
    /// Admin only: one guide's tasks.
    pub guide: Option<String>,
    pub limit: Option<i64>,
}

#[utoipa::path(get, path = "/api/v1/tasks", tag = "tasks", summary = "Tasks: a guide sees their own, a manager their store's",
    params(TaskQuery), responses((status = 200, body = [TaskRow])), security(("bearer" = [])))]
pub async fn list_tasks(State(app): State<App>, scope: Scope, Query(q): Query<TaskQuery>) -> ApiResult<Json<Vec<TaskRow>>> {
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let (guide, store) = match scope {
        Scope::All => (q.guide, None),
        Scope::Guide(g) => (Some(g), None),
        Scope::Store(s) => (q.guide, Some(s)),
    };
    Ok(Json(app.store.run(move |db| Box::pin(async move { stored::list_tasks(db, guide.as_deref(), store.as_deref(), limit).await })).await?))
}

#[derive(Serialize, ToSchema)]
pub struct TaskItem {
    pub delivery_id: i64,
    pub profile_id: siyu_core::ProfileId,
    /// pending_staff · confirmed · skipped · expired
    pub status: siyu_core::delivery::DeliveryStatus,
    /// The message to send, rendered for this customer.
    pub content: String,
    pub due_at: siyu_core::Timestamp,
}

#[derive(Serialize, ToSchema)]
pub struct TaskView {
    #[serde(flatten)]
    #[schema(inline)]
    pub task: TaskRow,
    pub items: Vec<TaskItem>,
}

async fn visible_task(app: &App, scope: &Scope, id: i64) -> ApiResult<TaskRow> {
    let task = app.store.run(move |db| Box::pin(stored::get_task(db, id))).await?;
    // Another guide's task is "not found": its existence is not revealed.
    task.filter(|t| may_see(scope, t)).ok_or_else(|| ApiError::not_found(format!("no task {id}")))
}

#[utoipa::path(get, path = "/api/v1/tasks/{id}", tag = "tasks", summary = "A task with each customer's rendered message",
    params(("id" = i64, Path)), responses((status = 200, body = TaskView), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn show_task(State(app): State<App>, scope: Scope, Path(id): Path<i64>) -> ApiResult<Json<TaskView>> {
    let task = visible_task(&app, &scope, id).await?;
    let rows = app.store.run(move |db| Box::pin(stored::deliveries_of_task(db, id))).await?;
    // What the guide is shown is stored: the mass message later carries the same words.
    let outgoing = render::rendered_once(&app.outreach, &rows).await.map_err(ApiError::internal)?;
    let items = rows
        .iter()
        .zip(outgoing)
        .map(|(d, o)| TaskItem { delivery_id: d.id, profile_id: d.profile_id, status: d.status, content: o.content, due_at: d.due_at })
        .collect();
    Ok(Json(TaskView { task, items }))
}

#[derive(Deserialize, ToSchema)]
pub struct ItemAction {
    /// `confirm` (the guide sent it) or `skip`.
    pub action: String,
}

#[derive(Serialize, ToSchema)]
pub struct ItemResult {
    pub changed: bool,
    pub task: TaskRow,
}

#[utoipa::path(post, path = "/api/v1/tasks/{id}/items/{delivery}", tag = "tasks", summary = "Confirm or skip one customer of a task",
    params(("id" = i64, Path), ("delivery" = i64, Path)), request_body = ItemAction,
    responses((status = 200, body = ItemResult), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)), security(("bearer" = [])))]
pub async fn resolve_item(
    State(app): State<App>,
    scope: Scope,
    Path((id, delivery)): Path<(i64, i64)>,
    Json(a): Json<ItemAction>,
) -> ApiResult<Json<ItemResult>> {
    let confirmed = match a.action.as_str() {
        "confirm" => true,
        "skip" => false,
        other => return Err(ApiError::bad_request("unknown_action", format!("unknown action {other:?}; use confirm or skip"))),
    };
    let task = visible_task(&app, &scope, id).await?;
    if task.status != "open" {
        return Err(ApiError::new(StatusCode::CONFLICT, "task_closed", format!("the task is {}", task.status)));
    }
    let now = app.outreach.now();
    let changed = app.store.run(move |db| Box::pin(async move { stored::resolve_item(db, id, delivery, confirmed, now).await })).await?;
    if !changed {
        let rows = app.store.run(move |db| Box::pin(stored::deliveries_of_task(db, id))).await?;
        if !rows.iter().any(|d| d.id == delivery) {
            return Err(ApiError::not_found(format!("task {id} has no item {delivery}")));
        }
    }
    let task = visible_task(&app, &scope, id).await?;
    Ok(Json(ItemResult { changed, task }))
}

#[derive(Deserialize, IntoParams)]
pub struct CompletionQuery {
    /// `guide` (default) or `store`.
    pub by: Option<String>,
    pub campaign: Option<i64>,
}

#[utoipa::path(get, path = "/api/v1/tasks/completion", tag = "tasks", summary = "Task completion rate per guide or per store",
    params(CompletionQuery), responses((status = 200, body = [Completion]), (status = 400, body = ErrorBody)), security(("bearer" = [])))]
pub async fn completion(State(app): State<App>, scope: Scope, Query(q): Query<CompletionQuery>) -> ApiResult<Json<Vec<Completion>>> {
    let by_store = match q.by.as_deref() {
        None | Some("guide") => false,
        Some("store") => true,
        Some(other) => return Err(ApiError::bad_request("invalid_by", format!("by={other:?}: use guide or store"))),
    };
    let store = match &scope {
        Scope::Store(s) => Some(s.clone()),
        Scope::Guide(_) => return Err(ApiError::forbidden("completion rates are for managers and HQ")),
        Scope::All => None,
    };
    Ok(Json(app.store.run(move |db| Box::pin(async move { stored::completion(db, by_store, store.as_deref(), q.campaign).await })).await?))
}

#[utoipa::path(get, path = "/api/v1/contact-policy", tag = "outreach", summary = "The contact policy in force",
    responses((status = 200, body = ContactPolicy)), security(("bearer" = [])))]
pub async fn contact_policy(State(app): State<App>, _: AdminCaller) -> ApiResult<Json<ContactPolicy>> {
    Ok(Json(app.outreach.policy().clone()))
}
