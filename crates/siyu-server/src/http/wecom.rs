//! `GET|POST /wecom/callback`: WeCom's URL verification and encrypted event callbacks.
//! Everything is checked before anything is recorded: signature, freshness, replay,
//! decryption, receive id (corp id), XML. An accepted event is made durable through the
//! ingest pipeline (its message id is the callback's dedupe key, so WeCom's retries are
//! stored once) and answered at once; profiles are updated by the indexer.

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use siyu_core::Timestamp;
use siyu_wecom::callback::{self, CallbackEvent};
use siyu_wecom::crypto::CryptoError;
use siyu_wecom::events;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::App;

pub fn routes() -> OpenApiRouter<App> {
    OpenApiRouter::new().route("/wecom/callback", get(verify_url).post(receive))
}

#[derive(Deserialize)]
pub struct CallbackQuery {
    msg_signature: Option<String>,
    timestamp: Option<String>,
    nonce: Option<String>,
    echostr: Option<String>,
}

fn reject(status: StatusCode, why: &str) -> Response {
    tracing::warn!(status = status.as_u16(), why, "WeCom callback rejected");
    (status, why.to_string()).into_response()
}

fn crypto_status(e: &CryptoError) -> StatusCode {
    match e {
        CryptoError::BadSignature | CryptoError::WrongReceiver { .. } => StatusCode::FORBIDDEN,
        _ => StatusCode::BAD_REQUEST,
    }
}

/// The signature, timestamp and nonce every callback carries.
fn params(q: &CallbackQuery) -> Option<(&str, &str, &str)> {
    match (&q.msg_signature, &q.timestamp, &q.nonce) {
        (Some(s), Some(t), Some(n)) => Some((s, t, n)),
        _ => None,
    }
}

const MISSING_PARAMS: &str = "msg_signature, timestamp and nonce are required";

/// URL verification: return the decrypted `echostr`.
async fn verify_url(State(app): State<App>, Query(q): Query<CallbackQuery>) -> Response {
    let Some(wecom) = &app.wecom else { return reject(StatusCode::NOT_FOUND, "WeCom is not configured on this server") };
    let Some((sig, ts, nonce)) = params(&q) else { return reject(StatusCode::BAD_REQUEST, MISSING_PARAMS) };
    let Some(echostr) = &q.echostr else { return reject(StatusCode::BAD_REQUEST, "echostr is required") };
    // The signature first: an unsigned request must not use up a nonce.
    let plain = match wecom.crypt.open(sig, ts, nonce, echostr) {
        Ok(plain) => plain,
        Err(e) => return reject(crypto_status(&e), &e.to_string()),
    };
    match wecom.admit(ts, nonce, Timestamp::now().0 / 1000) {
        Ok(_) => plain.into_response(),
        Err(why) => reject(StatusCode::FORBIDDEN, why),
    }
}

/// An encrypted event.
async fn receive(State(app): State<App>, Query(q): Query<CallbackQuery>, body: Bytes) -> Response {
    let Some(wecom) = &app.wecom else { return reject(StatusCode::NOT_FOUND, "WeCom is not configured on this server") };
    let Some((sig, ts, nonce)) = params(&q) else { return reject(StatusCode::BAD_REQUEST, MISSING_PARAMS) };
    let Ok(text) = std::str::from_utf8(&body) else { return reject(StatusCode::BAD_REQUEST, "the body is not UTF-8") };
    let envelope = match callback::parse(text) {
        Ok(f) => f,
        Err(e) => return reject(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    let Some(encrypted) = envelope.get("Encrypt") else { return reject(StatusCode::BAD_REQUEST, "the body has no <Encrypt>") };
    // The signature first: an unsigned request must not use up a nonce.
    if let Err(e) = wecom.crypt.verify(sig, ts, nonce, encrypted) {
        return reject(crypto_status(&e), &e.to_string());
    }
    let spent = match wecom.admit(ts, nonce, Timestamp::now().0 / 1000) {
        Ok(key) => key,
        Err(why) => return reject(StatusCode::FORBIDDEN, why),
    };
    match record(&app, wecom, sig, ts, nonce, encrypted).await {
        Ok(response) => response,
        Err(response) => {
            // Not recorded: the nonce is given back so that WeCom's retry is accepted.
            wecom.release(&spent);
            response
        }
    }
}

/// Decrypts, reads and records a verified callback; `Err` carries the answer for one
/// that was not recorded.
async fn record(app: &App, wecom: &crate::wecom::WecomCallbacks, sig: &str, ts: &str, nonce: &str, encrypted: &str) -> Result<Response, Response> {
    let message = match wecom.crypt.open(sig, ts, nonce, encrypted) {
        Ok(m) => m,
        Err(e) => return Err(reject(crypto_status(&e), &e.to_string())),
    };
    let fields = match callback::parse(&message) {
        Ok(f) => f,
        Err(e) => return Err(reject(StatusCode::BAD_REQUEST, &e.to_string())),
    };
    let event = match CallbackEvent::from_fields(&fields) {
        Ok(e) => e,
        Err(e) => return Err(reject(StatusCode::BAD_REQUEST, &e.to_string())),
    };
    tracing::debug!(?event, "WeCom callback");
    let now = Timestamp::now();
    let mut messages = events::to_messages(&fields, &event, now);
    if let CallbackEvent::Group { chat_id, change, .. } = &event
        && change == "dismiss"
    {
        match crate::wecom::groups::dismissed(&app.wecom_context(), &fields, chat_id, now).await {
            Ok(left) => messages.extend(left),
            Err(e) => return Err(not_recorded(&e.to_string())),
        }
    }
    let mut last_seq = 0;
    if !messages.is_empty() {
        match app.ingest.submit(messages).await {
            Ok(r) => last_seq = r.last_seq,
            Err(e) => return Err(not_recorded(&e.to_string())),
        }
    }
    // Tags, the welcome message and a new group's members happen after the answer:
    // WeCom wants it fast.
    match event {
        CallbackEvent::ContactAdded { staff, external_userid, state, welcome_code } => {
            app.tasks.spawn(crate::wecom::after_contact_added(app.wecom_context(), last_seq, staff, external_userid, state, welcome_code));
        }
        CallbackEvent::ContactEdited { external_userid, .. } => {
            app.tasks.spawn(crate::wecom::tags::pull(app.wecom_context(), last_seq, external_userid));
        }
        CallbackEvent::Group { chat_id, change, .. } if change == "create" => {
            app.tasks.spawn(crate::wecom::groups::created(app.wecom_context(), chat_id));
        }
        CallbackEvent::Tag { id, tag_type, change } if tag_type == "tag" && (change == "update" || change == "delete") => {
            app.tasks.spawn(crate::wecom::tags::corp_tag_changed(app.wecom_context(), id, change));
        }
        _ => {}
    }
    Ok("success".into_response())
}

/// Not acknowledged: WeCom retries.
fn not_recorded(error: &str) -> Response {
    tracing::error!(error, "could not record a WeCom callback");
    (StatusCode::SERVICE_UNAVAILABLE, "try again").into_response()
}

// ---------- live QR codes (contact ways), admin API ----------

use crate::http::extract::Json;
use serde::Serialize;
use siyu_store::wecom::{self as wstore, ContactWay};
use utoipa::ToSchema;

use crate::http::auth::AdminCaller;
use crate::http::error::{ApiError, ApiResult, ErrorBody};

pub fn admin_routes() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .routes(routes!(create_contact_way, list_contact_ways))
        .routes(routes!(start_sync, sync_progress))
        .routes(routes!(request_transfer, list_transfers))
        .routes(routes!(list_synced_tags))
        .routes(routes!(sync_tag, unsync_tag))
}

#[derive(Deserialize, ToSchema)]
pub struct ContactWayInput {
    /// The guide whose QR code it is.
    pub guide: String,
    /// poster, table_card, parcel_insert, official_account …
    pub channel: String,
    /// Defaults to the guide's store.
    pub store_id: Option<String>,
    /// Tags for customers who add through it.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Welcome message template (`{{ traits.name }}`, `{{ owner.name }}`, `{{ store.name }}`).
    pub welcome: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct ContactWayView {
    #[serde(flatten)]
    #[schema(inline)]
    pub way: ContactWay,
    /// Customers who added through it, and how many later removed the guide.
    pub adds: i64,
    pub deletions: i64,
}

#[utoipa::path(post, path = "/api/v1/wecom/contact-ways", tag = "wecom", summary = "Create a live QR code (contact way) for a guide and channel",
    request_body = ContactWayInput, responses((status = 201, body = ContactWay), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody), (status = 502, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create_contact_way(State(app): State<App>, _: AdminCaller, Json(input): Json<ContactWayInput>) -> ApiResult<(StatusCode, Json<ContactWay>)> {
    let client = app
        .wecom_client()
        .ok_or_else(|| ApiError::new(StatusCode::CONFLICT, "wecom_not_configured", "set the WeCom corp id, secret, token and key first (see docs/wecom.md)"))?;
    if input.channel.is_empty() || input.channel.contains('-') || !input.channel.is_ascii() {
        return Err(ApiError::bad_request("invalid_channel", "channel: ASCII without '-', e.g. table_card"));
    }
    if let Some(w) = &input.welcome {
        siyu_outreach::template::Template::parse(w).map_err(|e| ApiError::bad_request("invalid_welcome", e.to_string()))?;
    }
    let g = input.guide.clone();
    let staff = app
        .store
        .run(move |db| Box::pin(async move { siyu_store::org::get_staff(db, &g).await }))
        .await?
        .ok_or_else(|| ApiError::bad_request("unknown_guide", format!("no staff {:?}", input.guide)))?;
    let store = input.store_id.clone().or(staff.store_id).ok_or_else(|| ApiError::bad_request("missing_store", "the guide has no store; give store_id"))?;
    // WeCom allows 30 characters of state; Siyu's is `STORE-channel`.
    let state = format!("{store}-{}", input.channel);
    if state.len() > 30 {
        return Err(ApiError::bad_request("state_too_long", format!("{state:?} is longer than WeCom's 30 characters")));
    }
    let s = state.clone();
    if app.store.run(move |db| Box::pin(async move { wstore::contact_way_by_state(db, &s).await })).await?.is_some() {
        return Err(ApiError::new(StatusCode::CONFLICT, "contact_way_exists", format!("store {store} already has a {} QR code", input.channel)));
    }
    let (config_id, qr_code) = client
        .add_contact_way(&[input.guide.as_str()], &state, &input.channel)
        .await
        .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, "wecom_error", e.to_string()))?;
    let way = ContactWay {
        config_id,
        state,
        store_id: Some(store),
        guide: input.guide,
        channel: input.channel,
        tags: input.tags,
        welcome: input.welcome,
        qr_code,
        created_at: Timestamp::now(),
    };
    let w = way.clone();
    app.store.run(move |db| Box::pin(async move { wstore::add_contact_way(db, &w).await })).await?;
    Ok((StatusCode::CREATED, Json(way)))
}

#[utoipa::path(get, path = "/api/v1/wecom/contact-ways", tag = "wecom", summary = "Live QR codes with adds and later deletions per channel",
    responses((status = 200, body = [ContactWayView])), security(("bearer" = [])))]
pub async fn list_contact_ways(State(app): State<App>, _: AdminCaller) -> ApiResult<Json<Vec<ContactWayView>>> {
    let (ways, counts) = app.store.run(|db| Box::pin(async move { Ok((wstore::contact_ways(db).await?, wstore::contact_way_counts(db).await?)) })).await?;
    Ok(Json(
        ways.into_iter()
            .map(|way| {
                let (adds, deletions) = counts.iter().find(|(s, _, _)| *s == way.state).map(|(_, a, d)| (*a, *d)).unwrap_or((0, 0));
                ContactWayView { way, adds, deletions }
            })
            .collect(),
    ))
}

#[utoipa::path(post, path = "/api/v1/wecom/sync", tag = "wecom", summary = "Start (or resume) the full sync from WeCom",
    responses((status = 202, body = crate::wecom::sync::SyncProgress), (status = 409, body = ErrorBody)), security(("bearer" = [])))]
pub async fn start_sync(State(app): State<App>, _: AdminCaller) -> ApiResult<(StatusCode, Json<crate::wecom::sync::SyncProgress>)> {
    let Some(wecom) = app.wecom.as_ref().filter(|w| w.client.is_some()) else {
        return Err(ApiError::new(StatusCode::CONFLICT, "wecom_not_configured", "set the WeCom corp id and secret first (see docs/wecom.md)"));
    };
    if !wecom.sync.begin() {
        return Err(ApiError::new(StatusCode::CONFLICT, "sync_running", "a sync is already running"));
    }
    app.tasks.spawn(crate::wecom::sync::run(app.wecom_context()));
    Ok((StatusCode::ACCEPTED, Json(wecom.sync.progress())))
}

#[utoipa::path(get, path = "/api/v1/wecom/sync", tag = "wecom", summary = "Progress of the WeCom sync",
    responses((status = 200, body = crate::wecom::sync::SyncProgress)), security(("bearer" = [])))]
pub async fn sync_progress(State(app): State<App>, _: AdminCaller) -> ApiResult<Json<crate::wecom::sync::SyncProgress>> {
    let wecom = app.wecom.as_ref().ok_or_else(|| ApiError::not_found("WeCom is not configured on this server"))?;
    Ok(Json(wecom.sync.progress()))
}

#[utoipa::path(get, path = "/api/v1/wecom/synced-tags", tag = "wecom", summary = "Tags mirrored between Siyu and WeCom corp tags",
    responses((status = 200, body = [String])), security(("bearer" = [])))]
pub async fn list_synced_tags(State(app): State<App>, _: AdminCaller) -> ApiResult<Json<Vec<String>>> {
    Ok(Json(crate::wecom::tags::synced(&app.store).await.map_err(ApiError::internal)?.into_iter().collect()))
}

#[utoipa::path(put, path = "/api/v1/wecom/synced-tags/{tag}", tag = "wecom", summary = "Mirror a tag to WeCom (group \"Siyu\") and back",
    params(("tag" = String, Path)), responses((status = 200, body = [String])), security(("bearer" = [])))]
pub async fn sync_tag(
    State(app): State<App>,
    _: AdminCaller,
    crate::http::extract::Path(tag): crate::http::extract::Path<String>,
) -> ApiResult<Json<Vec<String>>> {
    crate::http::admin::validate_tag(&tag)?;
    Ok(Json(crate::wecom::tags::set_synced(&app.wecom_context(), &tag, true).await.map_err(ApiError::internal)?.into_iter().collect()))
}

#[utoipa::path(delete, path = "/api/v1/wecom/synced-tags/{tag}", tag = "wecom", summary = "Stop mirroring a tag",
    params(("tag" = String, Path)), responses((status = 200, body = [String])), security(("bearer" = [])))]
pub async fn unsync_tag(
    State(app): State<App>,
    _: AdminCaller,
    crate::http::extract::Path(tag): crate::http::extract::Path<String>,
) -> ApiResult<Json<Vec<String>>> {
    Ok(Json(crate::wecom::tags::set_synced(&app.wecom_context(), &tag, false).await.map_err(ApiError::internal)?.into_iter().collect()))
}

// ---------- customer transfers ----------

#[derive(Debug, Deserialize, ToSchema)]
pub struct TransferRequest {
    /// The guide handing over their customers.
    pub from: String,
    /// The guide taking them over.
    pub to: String,
    /// The handing-over guide has left the corp (离职继承); otherwise an in-service
    /// transfer (在职继承), which WeCom announces to each customer.
    #[serde(default)]
    pub resigned: bool,
}

#[utoipa::path(post, path = "/api/v1/wecom/transfers", tag = "wecom", summary = "Hand a guide's customers to another guide through WeCom",
    request_body = TransferRequest,
    responses((status = 200, body = crate::wecom::transfer::Requested), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody), (status = 502, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn request_transfer(State(app): State<App>, _: AdminCaller, Json(req): Json<TransferRequest>) -> ApiResult<Json<crate::wecom::transfer::Requested>> {
    let Some(client) = app.wecom_client() else {
        return Err(ApiError::new(StatusCode::CONFLICT, "wecom_not_configured", "set the WeCom corp id and secret first (see docs/wecom.md)"));
    };
    if req.from == req.to {
        return Err(ApiError::bad_request("same_guide", "`from` and `to` are the same guide"));
    }
    if req.from.trim().is_empty() || req.to.trim().is_empty() {
        return Err(ApiError::bad_request("missing_guide", "name both guides: `from` and `to` (WeCom userids)"));
    }
    // WeCom is the authority on its members: an unknown takeover is refused per customer.
    crate::wecom::transfer::request(&app.store, &client, &req.from, &req.to, req.resigned)
        .await
        .map(Json)
        .map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, "wecom_error", format!("WeCom refused the transfer: {e}")))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct TransferQuery {
    /// Only transfers from this guide.
    pub from: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/wecom/transfers", tag = "wecom", summary = "Customer transfers, newest first, with their status",
    params(TransferQuery), responses((status = 200, body = [siyu_store::wecom::Transfer])), security(("bearer" = [])))]
pub async fn list_transfers(
    State(app): State<App>,
    _: AdminCaller,
    crate::http::extract::Query(q): crate::http::extract::Query<TransferQuery>,
) -> ApiResult<Json<Vec<siyu_store::wecom::Transfer>>> {
    Ok(Json(app.store.run(move |db| Box::pin(async move { wstore::transfers(db, q.from.as_deref(), 1000).await })).await?))
}
