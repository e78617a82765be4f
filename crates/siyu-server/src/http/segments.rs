//! Segments: `/api/v1/segments…`. A rule is given in either form: a JSON rule tree, or
//! the one-line text form as a string.

use std::time::Instant;

use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use roaring::RoaringBitmap;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use siyu_core::rule::{Rule, RuleError, parse};
use siyu_core::{ProfileId, Timestamp};
use siyu_engine::{EngineError, Missing, SegmentDef};
use siyu_store::profiles::{self, ProfileSummary};
use siyu_store::segments as stored;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::App;
use crate::http::auth::AdminCaller;
use crate::http::error::{ApiError, ApiResult, ErrorBody};
use crate::http::extract::{Json, Path, Query};

pub fn routes() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(preview))
        .routes(routes!(show, update, remove))
        .routes(routes!(members))
        .routes(routes!(export))
        .routes(routes!(list_profiles))
}

/// Reads a rule given as JSON or as text, with an error that points at the problem.
pub fn read_rule(value: &Value) -> ApiResult<Rule> {
    let result = match value {
        Value::String(text) => parse(text),
        other => Rule::from_json(other),
    };
    result.map_err(|e: RuleError| ApiError::bad_request("invalid_rule", e.to_string()))
}

fn engine_error(e: EngineError) -> ApiError {
    match e {
        EngineError::Missing(m @ Missing::Segment(_)) => ApiError::bad_request("unknown_segment", m.to_string()),
        EngineError::Define(d) => ApiError::new(StatusCode::CONFLICT, "segment_conflict", d.to_string()),
        EngineError::Source(s) => siyu_store::StoreError::from(s).into(),
        other => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "engine_unavailable", other.to_string()),
    }
}

#[derive(Deserialize, ToSchema)]
pub struct PreviewRequest {
    /// A JSON rule tree, or the text form as a string.
    #[schema(schema_with = rule_input)]
    pub rule: Value,
    /// How many sample profiles to return (default 10, at most 100).
    pub sample: Option<usize>,
}

#[derive(Serialize, ToSchema)]
pub struct Preview {
    pub count: u64,
    pub sample: Vec<ProfileSummary>,
    /// Milliseconds the engine took to evaluate the rule.
    pub took_ms: f64,
    /// The rule in its canonical text form.
    pub rule_text: String,
    #[schema(value_type = Object)]
    pub rule: Value,
}

async fn sample_of(app: &App, members: &RoaringBitmap, n: usize) -> ApiResult<Vec<ProfileSummary>> {
    let ids: Vec<ProfileId> = members.iter().take(n).map(ProfileId::from_bit).collect();
    Ok(app.store.run(move |db| Box::pin(async move { profiles::summaries(db, &ids).await })).await?)
}

#[utoipa::path(post, path = "/api/v1/segments/preview", tag = "segments",
    summary = "Count, sample and timing for a rule, before saving it",
    request_body = PreviewRequest,
    responses((status = 200, body = Preview), (status = 400, body = ErrorBody)), security(("bearer" = [])))]
pub async fn preview(State(app): State<App>, _: AdminCaller, Json(req): Json<PreviewRequest>) -> ApiResult<Json<Preview>> {
    let rule = read_rule(&req.rule)?;
    let started = Instant::now();
    let members = app.engine.evaluate(&rule, app.engine.now()).await.map_err(engine_error)?;
    let took_ms = started.elapsed().as_secs_f64() * 1000.0;
    let sample = sample_of(&app, &members, req.sample.unwrap_or(10).min(100)).await?;
    Ok(Json(Preview { count: members.len(), sample, took_ms, rule_text: rule.to_string(), rule: rule.to_json() }))
}

#[derive(Serialize, ToSchema)]
pub struct SegmentView {
    pub name: String,
    pub description: String,
    #[schema(value_type = Object)]
    pub rule: Value,
    pub rule_text: String,
    /// Current members.
    pub members: u64,
    /// Whether members also move with the clock (re-checked every minute).
    pub time_dependent: bool,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// Set when the stored segment cannot be evaluated (its rule cannot be read, or
    /// names a segment that is gone): it has no members until it is replaced (PUT).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broken: Option<String>,
}

fn view(app: &App, s: stored::StoredSegment) -> SegmentView {
    let state = app.engine.read();
    let live = state.segments.get(&s.name);
    let parsed = Rule::from_json(&s.rule);
    let broken = match (&s.broken, &parsed, live) {
        (Some(why), _, _) => Some(why.clone()),
        (None, Err(e), _) => Some(format!("the stored rule is not valid: {e}")),
        (None, Ok(_), None) => Some("the segment could not be defined when Siyu started (see the server log); save it again".to_string()),
        (None, Ok(_), Some(_)) => None,
    };
    let rule_text = parsed.map(|r| r.to_string()).unwrap_or_default();
    SegmentView {
        broken,
        members: live.map_or(0, |l| l.members.len()),
        time_dependent: live.is_some_and(|l| l.time_dependent),
        name: s.name,
        description: s.description,
        rule: s.rule,
        rule_text,
        created_at: s.created_at,
        updated_at: s.updated_at,
    }
}

#[utoipa::path(get, path = "/api/v1/segments", tag = "segments", summary = "All segments with their member counts",
    responses((status = 200, body = Vec<SegmentView>)), security(("bearer" = [])))]
pub async fn list(State(app): State<App>, _: AdminCaller) -> ApiResult<Json<Vec<SegmentView>>> {
    let all = app.store.run(|db| Box::pin(stored::list(db))).await?;
    Ok(Json(all.into_iter().map(|s| view(&app, s)).collect()))
}

#[derive(Deserialize, ToSchema)]
pub struct SegmentInput {
    /// 1–64 characters; rules refer to it as `segment = "name"`.
    pub name: Option<String>,
    pub description: Option<String>,
    /// A JSON rule tree, or the text form as a string.
    #[schema(schema_with = rule_input)]
    pub rule: Value,
}

fn valid_name(name: &str) -> ApiResult<()> {
    let ok = !name.trim().is_empty() && name.chars().count() <= 64 && !name.chars().any(|c| c.is_control() || c == '/');
    if ok { Ok(()) } else { Err(ApiError::bad_request("invalid_name", "a segment name is 1 to 64 characters, without / or control characters")) }
}

async fn save(app: &App, name: String, description: String, rule: Rule) -> ApiResult<SegmentView> {
    // The engine checks references and cycles before anything is stored.
    app.engine.define(SegmentDef { name: name.clone(), rule: rule.clone() }).await.map_err(engine_error)?;
    let json = rule.to_json();
    let n = name.clone();
    app.store.run(move |db| Box::pin(async move { stored::put(db, &n, &description, &json, Timestamp::now()).await })).await?;
    let s = app.store.run(move |db| Box::pin(async move { stored::get(db, &name).await })).await?.ok_or_else(|| ApiError::not_found("no such segment"))?;
    Ok(view(app, s))
}

#[utoipa::path(post, path = "/api/v1/segments", tag = "segments", summary = "Create a live segment",
    request_body = SegmentInput,
    responses((status = 201, body = SegmentView), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create(State(app): State<App>, _: AdminCaller, Json(input): Json<SegmentInput>) -> ApiResult<(StatusCode, Json<SegmentView>)> {
    let name = input.name.clone().ok_or_else(|| ApiError::bad_request("invalid_name", "a segment needs a name"))?;
    valid_name(&name)?;
    let rule = read_rule(&input.rule)?;
    let n = name.clone();
    if app.store.run(move |db| Box::pin(async move { stored::get(db, &n).await })).await?.is_some() {
        return Err(ApiError::new(StatusCode::CONFLICT, "segment_exists", format!("a segment named {name:?} exists; PUT to change it")));
    }
    let v = save(&app, name, input.description.unwrap_or_default(), rule).await?;
    Ok((StatusCode::CREATED, Json(v)))
}

#[utoipa::path(get, path = "/api/v1/segments/{name}", tag = "segments", summary = "One segment",
    params(("name" = String, Path)), responses((status = 200, body = SegmentView), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn show(State(app): State<App>, _: AdminCaller, Path(name): Path<String>) -> ApiResult<Json<SegmentView>> {
    let s = app.store.run(move |db| Box::pin(async move { stored::get(db, &name).await })).await?.ok_or_else(|| ApiError::not_found("no such segment"))?;
    Ok(Json(view(&app, s)))
}

#[utoipa::path(put, path = "/api/v1/segments/{name}", tag = "segments", summary = "Change a segment's rule (or create it)",
    params(("name" = String, Path)), request_body = SegmentInput,
    responses((status = 200, body = SegmentView), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn update(State(app): State<App>, _: AdminCaller, Path(name): Path<String>, Json(input): Json<SegmentInput>) -> ApiResult<Json<SegmentView>> {
    valid_name(&name)?;
    let rule = read_rule(&input.rule)?;
    Ok(Json(save(&app, name, input.description.unwrap_or_default(), rule).await?))
}

#[utoipa::path(delete, path = "/api/v1/segments/{name}", tag = "segments", summary = "Delete a segment no other segment, campaign or journey uses",
    params(("name" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)), security(("bearer" = [])))]
pub async fn remove(State(app): State<App>, _: AdminCaller, Path(name): Path<String>) -> ApiResult<StatusCode> {
    if app.engine.read().segments.get(&name).is_none() {
        return Err(ApiError::not_found("no such segment"));
    }
    let users = users_of(&app, &name).await?;
    if !users.is_empty() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "segment_in_use",
            format!("segment {name:?} is used by {}; change or delete them first", users.join(", ")),
        ));
    }
    app.engine.remove(&name).await.map_err(engine_error)?;
    app.store.run(move |db| Box::pin(async move { stored::delete(db, &name).await })).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Campaigns (not yet completed) and journeys that name the segment.
async fn users_of(app: &App, segment: &str) -> ApiResult<Vec<String>> {
    use siyu_store::outreach as outreach_store;
    let (campaigns, journeys) =
        app.store.run(|db| Box::pin(async move { Ok((outreach_store::list_campaigns(db).await?, outreach_store::list_journeys(db).await?)) })).await?;
    let mut users = Vec::new();
    for c in campaigns.iter().filter(|c| c.status != siyu_core::campaign::Status::Completed) {
        if c.spec["audience"]["segment"].as_str() == Some(segment) {
            users.push(format!("campaign {} ({})", c.id, c.name));
        }
    }
    for j in &journeys {
        let refs = serde_json::from_value::<siyu_outreach::journey::JourneySpec>(j.spec.clone()).map(|s| s.segment_refs()).unwrap_or_default();
        if refs.iter().any(|r| r == segment) {
            users.push(format!("journey {} ({})", j.id, j.name));
        }
    }
    Ok(users)
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Page {
    /// Members with a profile id above this (the previous page's `next`).
    pub after: Option<ProfileId>,
    /// 1–1000, default 100.
    pub limit: Option<usize>,
}

#[derive(Serialize, ToSchema)]
pub struct MemberPage {
    pub total: u64,
    pub members: Vec<ProfileSummary>,
    pub next: Option<ProfileId>,
}

fn page_ids(members: &RoaringBitmap, after: Option<ProfileId>, limit: usize) -> Vec<ProfileId> {
    let mut it = members.iter();
    if let Some(a) = after {
        // Past the last id there is nothing more; `next` saturates, so check.
        if a == ProfileId::MAX {
            return Vec::new();
        }
        it.advance_to(a.next().bit());
    }
    it.take(limit).map(ProfileId::from_bit).collect()
}

fn check_limit(limit: Option<usize>) -> ApiResult<usize> {
    let limit = limit.unwrap_or(100);
    if (1..=1000).contains(&limit) { Ok(limit) } else { Err(ApiError::bad_request("invalid_limit", "limit must be between 1 and 1000")) }
}

#[utoipa::path(get, path = "/api/v1/segments/{name}/members", tag = "segments", summary = "A page of a segment's members",
    params(("name" = String, Path), Page),
    responses((status = 200, body = MemberPage), (status = 404, body = ErrorBody)), security(("bearer" = [])))]
pub async fn members(State(app): State<App>, _: AdminCaller, Path(name): Path<String>, Query(page): Query<Page>) -> ApiResult<Json<MemberPage>> {
    let limit = check_limit(page.limit)?;
    let (ids, total) = {
        let state = app.engine.read();
        let s = state.segments.get(&name).ok_or_else(|| ApiError::not_found("no such segment"))?;
        (page_ids(&s.members, page.after, limit), s.members.len())
    };
    let next = (ids.len() == limit).then(|| ids.last().copied()).flatten();
    let members = app.store.run(move |db| Box::pin(async move { profiles::summaries(db, &ids).await })).await?;
    Ok(Json(MemberPage { total, members, next }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExportQuery {
    /// csv (default) or jsonl.
    pub format: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/segments/{name}/export", tag = "segments",
    summary = "Every member, streamed as CSV or JSON lines",
    params(("name" = String, Path), ExportQuery),
    responses((status = 200, description = "text/csv or application/x-ndjson"), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn export(
    State(app): State<App>,
    _: AdminCaller,
    headers: axum::http::HeaderMap,
    Path(name): Path<String>,
    Query(q): Query<ExportQuery>,
) -> ApiResult<Response> {
    let csv = match q.format.as_deref().unwrap_or("csv") {
        "csv" => true,
        "jsonl" | "ndjson" => false,
        other => return Err(ApiError::bad_request("invalid_format", format!("format {other:?}: use csv or jsonl"))),
    };
    // A snapshot of the members now; the export streams it page by page.
    let members = {
        let state = app.engine.read();
        state.segments.get(&name).ok_or_else(|| ApiError::not_found("no such segment"))?.members.clone()
    };
    // Every export of customer data is on the audit log (PIPL), before any row leaves.
    crate::http::audit::record(&app, "admin", "export_segment", &format!("segment:{name}"), &headers).await?;
    let header = csv.then(|| "id,uuid,user_id,name,city,phone\n".to_string());
    let stream = futures::stream::unfold((app, members, None::<ProfileId>, header, false), move |(app, members, after, header, done)| async move {
        if let Some(h) = header {
            return Some((Ok::<_, std::io::Error>(h), (app, members, after, None, done)));
        }
        if done {
            return None;
        }
        let ids = page_ids(&members, after, 1000);
        if ids.is_empty() {
            return None;
        }
        let last = ids.last().copied();
        let rows = app.store.run(move |db| Box::pin(async move { profiles::summaries(db, &ids).await })).await;
        let chunk = match rows {
            Ok(rows) => rows.iter().map(|r| if csv { csv_line(r) } else { format!("{}\n", serde_json::to_string(r).unwrap_or_default()) }).collect::<String>(),
            Err(e) => return Some((Err(std::io::Error::other(e.to_string())), (app, members, last, None, true))),
        };
        Some((Ok(chunk), (app, members, last, None, false)))
    });
    let (content_type, ext) = if csv { ("text/csv; charset=utf-8", "csv") } else { ("application/x-ndjson", "jsonl") };
    Ok(([(CONTENT_TYPE, content_type.to_string()), (CONTENT_DISPOSITION, format!("attachment; filename=\"segment.{ext}\""))], Body::from_stream(stream))
        .into_response())
}

fn csv_field(s: Option<&str>) -> String {
    match s {
        None => String::new(),
        Some(s) if s.contains([',', '"', '\n']) => format!("\"{}\"", s.replace('"', "\"\"")),
        Some(s) => s.to_string(),
    }
}

fn csv_line(r: &ProfileSummary) -> String {
    format!(
        "{},{},{},{},{},{}\n",
        r.id,
        r.uuid,
        csv_field(r.user_id.as_deref()),
        csv_field(r.name.as_deref()),
        csv_field(r.city.as_deref()),
        csv_field(r.phone.as_deref())
    )
}

#[derive(Serialize, ToSchema)]
pub struct ProfilePage {
    pub total: i64,
    pub profiles: Vec<ProfileSummary>,
    pub next: Option<ProfileId>,
}

#[utoipa::path(get, path = "/api/v1/profiles", tag = "profiles", summary = "All profiles, a page at a time",
    params(Page), responses((status = 200, body = ProfilePage)), security(("bearer" = [])))]
pub async fn list_profiles(State(app): State<App>, _: AdminCaller, Query(page): Query<Page>) -> ApiResult<Json<ProfilePage>> {
    let limit = check_limit(page.limit)?;
    let after = page.after.unwrap_or_default();
    let (total, profiles) = app
        .store
        .run(move |db| {
            Box::pin(async move {
                let total = profiles::stats(db).await?.profiles;
                let ids = profiles::list(db, after, limit as i64).await?;
                Ok((total, profiles::summaries(db, &ids).await?))
            })
        })
        .await?;
    let next = (profiles.len() == limit).then(|| profiles.last().map(|p| p.id)).flatten();
    Ok(Json(ProfilePage { total, profiles, next }))
}

/// A rule as requests may give it: the text form, or the JSON rule tree.
fn rule_input() -> utoipa::openapi::Schema {
    use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};
    let one_of = OneOfBuilder::new()
        .item(ObjectBuilder::new().schema_type(Type::String).description(Some(r#"The text form, e.g. `city = "上海" and count(Order Completed, 30d) >= 2`"#)))
        .item(
            ObjectBuilder::new()
                .schema_type(Type::Object)
                .description(Some(r#"The JSON rule tree, e.g. {"and": [{"field": "traits.city", "op": "=", "value": "上海"}, …]}"#)),
        )
        .description(Some("A segment rule, as text or as a JSON rule tree"))
        .build();
    Schema::OneOf(one_of)
}
