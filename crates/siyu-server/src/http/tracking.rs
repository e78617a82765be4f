//! The Segment-spec tracking API: `POST /v1/identify|track|page|screen|group|alias|batch`.
//!
//! The write key is the HTTP Basic user name (empty password), or `writeKey` in the body
//! or on each message of a batch, as newer Segment and RudderStack SDKs send it. Bodies
//! may be gzip-compressed. A 200 is sent only after the messages are committed.
//!
//! There are two write keys. The server-side key is for the brand's backend; the
//! client-side key is for SDKs in web pages and mini programs, where anyone can read it,
//! so it may not change who serves a customer, give consent or attribute a customer to
//! staff (403 `server_key_required`).

use std::io::Read;
use std::sync::atomic::Ordering;
use std::time::Instant;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header::{AUTHORIZATION, CONTENT_ENCODING};
use axum::http::{HeaderMap, StatusCode};
use base64::Engine;
use serde::Serialize;
use siyu_core::message::{self, MAX_BATCH_BYTES, Message, MessageKind, ParseContext, ParsedRequest, RequestError};
use siyu_core::{IdentityKind, Timestamp};
use utoipa::ToSchema;

use crate::http::App;
use crate::http::error::{ApiError, ApiResult};
use crate::secrets::constant_time_eq;

pub fn routes() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .routes(routes!(identify))
        .routes(routes!(track))
        .routes(routes!(page))
        .routes(routes!(screen))
        .routes(routes!(group))
        .routes(routes!(alias))
        .routes(routes!(batch))
        // Segment's older name for the batch endpoint.
        .routes(routes!(import))
}

#[derive(Serialize, ToSchema)]
pub struct Accepted {
    /// Always `true`: the messages are durably stored.
    pub success: bool,
}

/// A Segment-spec message. Fields beyond these (`integrations`, `channel`, …) are
/// accepted and ignored.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SegmentMessage {
    /// In a batch: identify, track, page, screen, group or alias.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// Idempotency key; assigned when missing. A repeat is acknowledged and stored once.
    pub message_id: Option<String>,
    /// The brand's customer id. This or `anonymousId` is required.
    pub user_id: Option<String>,
    pub anonymous_id: Option<String>,
    /// track: the event name, e.g. `Order Completed`.
    pub event: Option<String>,
    /// page/screen: the page name.
    pub name: Option<String>,
    /// alias: the id that becomes `userId`.
    pub previous_id: Option<String>,
    /// group: the group id.
    pub group_id: Option<String>,
    /// ISO-8601; corrected for client clock skew with `sentAt`.
    pub timestamp: Option<String>,
    pub sent_at: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub properties: Option<serde_json::Value>,
    #[schema(value_type = Option<Object>)]
    pub traits: Option<serde_json::Value>,
    /// `context.externalIds` carries WeCom external_userid, unionid, openid (with
    /// `appId`), phone, email and member_no identities; `context.traits` sets profile traits.
    #[schema(value_type = Option<Object>)]
    pub context: Option<serde_json::Value>,
    pub write_key: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SegmentBatch {
    pub batch: Vec<SegmentMessage>,
    pub sent_at: Option<String>,
    pub write_key: Option<String>,
}

macro_rules! single_endpoint {
    ($fn:ident, $kind:expr, $path:literal, $summary:literal) => {
        #[utoipa::path(post, path = $path, tag = "tracking", summary = $summary, request_body = SegmentMessage, responses(
                    (status = 200, body = Accepted), (status = 400, body = crate::http::error::ErrorBody), (status = 401, body = crate::http::error::ErrorBody),
              (status = 403, body = crate::http::error::ErrorBody, description = "a client-side write key sent what only a server-side key may")
                ), security(("write_key" = [])))]
        pub async fn $fn(State(app): State<App>, headers: HeaderMap, body: Body) -> ApiResult<Json<Accepted>> {
            receive(&app, &headers, body, Some($kind)).await
        }
    };
}

single_endpoint!(identify, MessageKind::Identify, "/v1/identify", "Who the customer is: traits and identities");
single_endpoint!(track, MessageKind::Track, "/v1/track", "Something the customer did");
single_endpoint!(page, MessageKind::Page, "/v1/page", "A page view (web, official-account article, H5)");
single_endpoint!(screen, MessageKind::Screen, "/v1/screen", "A screen view (mini program, app)");
single_endpoint!(group, MessageKind::Group, "/v1/group", "Associates the customer with a group");
single_endpoint!(alias, MessageKind::Alias, "/v1/alias", "Declares previousId and userId the same customer");

#[utoipa::path(post, path = "/v1/import", tag = "tracking", summary = "The same as /v1/batch (Segment's older name for it)",
    request_body = SegmentBatch,
    responses((status = 200, body = Accepted), (status = 400, body = crate::http::error::ErrorBody),
              (status = 401, body = crate::http::error::ErrorBody),
              (status = 403, body = crate::http::error::ErrorBody, description = "a client-side write key sent what only a server-side key may")),
    security(("write_key" = [])))]
pub async fn import(State(app): State<App>, headers: HeaderMap, body: Body) -> ApiResult<Json<Accepted>> {
    receive(&app, &headers, body, None).await
}

#[utoipa::path(post, path = "/v1/batch", tag = "tracking", summary = "Many messages at once (at most 500 KB, 32 KB each)",
    request_body = SegmentBatch,
    responses((status = 200, body = Accepted), (status = 400, body = crate::http::error::ErrorBody),
              (status = 401, body = crate::http::error::ErrorBody),
              (status = 403, body = crate::http::error::ErrorBody, description = "a client-side write key sent what only a server-side key may")),
    security(("write_key" = [])))]
pub async fn batch(State(app): State<App>, headers: HeaderMap, body: Body) -> ApiResult<Json<Accepted>> {
    receive(&app, &headers, body, None).await
}

async fn receive(app: &App, headers: &HeaderMap, body: Body, kind: Option<MessageKind>) -> ApiResult<Json<Accepted>> {
    let started = Instant::now();
    let result = accept(app, headers, body, kind).await;
    let counter = match &result {
        Ok(()) => &app.metrics.tracking_requests_ok,
        Err(e) if e.status.is_client_error() => &app.metrics.tracking_requests_rejected,
        Err(e) if e.code == "backlog_full" => &app.metrics.tracking_backlog_refused,
        Err(_) => &app.metrics.tracking_requests_failed,
    };
    counter.fetch_add(1, Ordering::Relaxed);
    if result.is_ok() {
        app.metrics.ingest_latency.observe(started.elapsed().as_secs_f64());
    }
    result.map(|()| Json(Accepted { success: true }))
}

async fn accept(app: &App, headers: &HeaderMap, body: Body, kind: Option<MessageKind>) -> ApiResult<()> {
    let header_key = match basic_auth_user(headers)? {
        Some(key) => Some(check_key(app, &key)?),
        None => None,
    };
    let raw = axum::body::to_bytes(body, MAX_BATCH_BYTES + 1)
        .await
        .map_err(|_| ApiError::bad_request("payload_too_large", format!("the request body is over {MAX_BATCH_BYTES} bytes (or was cut off)")))?;
    let body = decode(headers, raw)?;
    let mut parsed = parse(&body, kind)?;
    if authorize(app, header_key, &parsed)? == KeyKind::Client {
        keep_contact_traits_as_traits(&mut parsed.messages);
        refuse_from_client(&parsed.messages)?;
    }
    let backlog = app.ingest.appended().saturating_sub(app.ingest.indexed());
    if backlog > app.limits.backlog {
        let mut e = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "backlog_full", format!("{backlog} messages are waiting to be stored; retry shortly"));
        e.retry_after = Some(5);
        return Err(e);
    }

    app.ingest.submit(parsed.messages).await.map_err(|e| {
        tracing::error!(error = %e, "ingest failed");
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", "the events could not be stored; retry the request")
    })?;
    Ok(())
}

fn parse(body: &[u8], kind: Option<MessageKind>) -> ApiResult<ParsedRequest> {
    let new_id = || uuid::Uuid::new_v4().to_string();
    let cx = ParseContext { received_at: Timestamp::now(), new_message_id: &new_id };
    match kind {
        Some(kind) => message::parse_single(kind, body, &cx),
        None => message::parse_batch(body, &cx),
    }
    .map_err(request_error)
}

/// The write key from `Authorization: Basic base64(key:)`, if the header is there.
fn basic_auth_user(headers: &HeaderMap) -> ApiResult<Option<String>> {
    let Some(value) = headers.get(AUTHORIZATION) else { return Ok(None) };
    let bad = || ApiError::unauthorized("the Authorization header must be `Basic base64(<write key>:)`");
    let value = value.to_str().map_err(|_| bad())?;
    let encoded = value.strip_prefix("Basic ").or_else(|| value.strip_prefix("basic ")).ok_or_else(bad)?;
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).map_err(|_| bad())?;
    let text = String::from_utf8(decoded).map_err(|_| bad())?;
    let user = text.split_once(':').map(|(u, _)| u).unwrap_or(&text);
    Ok(Some(user.to_string()))
}

/// Who sent a request: a trusted server-side source (the brand's backend, imports) or
/// a client-side SDK whose key is public (web, mini programs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Server,
    Client,
}

fn check_key(app: &App, key: &str) -> ApiResult<KeyKind> {
    if constant_time_eq(key, &app.write_key) {
        Ok(KeyKind::Server)
    } else if constant_time_eq(key, &app.client_write_key) {
        Ok(KeyKind::Client)
    } else {
        Err(ApiError::unauthorized("the write key is not valid for this Siyu source"))
    }
}

/// Every write key the request carries must be right, and there must be at least one:
/// in the header, in the body, or on every message. One client key anywhere makes the
/// whole request a client's.
fn authorize(app: &App, header: Option<KeyKind>, parsed: &ParsedRequest) -> ApiResult<KeyKind> {
    let mut kinds: Vec<KeyKind> = header.into_iter().collect();
    if let Some(k) = &parsed.body_write_key {
        kinds.push(check_key(app, k)?);
    }
    for k in parsed.message_write_keys.iter().flatten() {
        kinds.push(check_key(app, k)?);
    }
    let every_message_keyed = parsed.message_write_keys.iter().all(Option::is_some);
    if !(header.is_some() || parsed.body_write_key.is_some() || every_message_keyed) {
        return Err(ApiError::unauthorized("no write key: send it as the HTTP Basic user name with an empty password, or as writeKey in the body"));
    }
    Ok(if kinds.contains(&KeyKind::Client) { KeyKind::Client } else { KeyKind::Server })
}

/// Events only the WeCom callback, sync, imports and server-side keys may send: who
/// serves a customer, and complaints (which count against a campaign's guardrail).
pub const SERVER_EVENTS: [&str; 6] =
    ["Contact Added", "Contact Deleted", "Contact Transferred", "Contact Handed Over", "Transfer Failed", "Message Complained"];

/// A `phone` or `email` trait sent with the client key stays a trait (a web page may
/// well ask for them) but is not matched on: anyone could type someone else's.
fn keep_contact_traits_as_traits(messages: &mut [Message]) {
    for m in messages {
        let from_traits = message::identities_from_traits(&m.traits);
        m.identities.retain(|i| !from_traits.contains(i));
    }
}

/// What a client-side key may not do, since anyone can copy it from a web page: change
/// who serves a customer, complain, give consent in the brand's favour, attribute a
/// customer to a member of staff (whose token would then read the customer's details),
/// or claim identities that join profiles (alias, `context.externalIds`): joining
/// a stranger's profile to one a guide serves would show that guide the stranger.
fn refuse_from_client(messages: &[Message]) -> ApiResult<()> {
    let forbidden = |why: String| ApiError::new(StatusCode::FORBIDDEN, "server_key_required", why);
    for (i, m) in messages.iter().enumerate() {
        let at = if messages.len() > 1 { format!("batch[{i}]: ") } else { String::new() };
        if let Some(event) = m.event.as_deref().filter(|e| SERVER_EVENTS.contains(e)) {
            return Err(forbidden(format!(
                "{at}`{event}` must come from the brand's systems: send it with the server write key from your backend, not the client key"
            )));
        }
        if m.kind == MessageKind::Alias {
            return Err(forbidden(format!("{at}alias joins two identities into one customer: call it with the server write key from your backend")));
        }
        if let Some(id) = m.identities.iter().find(|id| !matches!(id.kind, IdentityKind::UserId | IdentityKind::AnonymousId)) {
            return Err(forbidden(format!(
                "{at}a {} identity in context.externalIds joins profiles: send verified identities with the server write key from your backend",
                id.kind.as_str()
            )));
        }
        if let Some((key, _)) = m.traits.iter().find(|(k, v)| k.starts_with("consent.") && *v == serde_json::Value::Bool(true)) {
            return Err(forbidden(format!(
                "{at}`{key}: true` gives consent: record it with the server write key from your backend (a client key may only withdraw consent)"
            )));
        }
        if m.payload.contains("staff_userid") {
            let props: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&m.payload).unwrap_or_default();
            if props.contains_key("staff_userid") {
                return Err(forbidden(format!("{at}`staff_userid` attributes the customer to a member of staff: send it with the server write key")));
            }
        }
    }
    Ok(())
}

fn decode(headers: &HeaderMap, raw: Bytes) -> ApiResult<Bytes> {
    let encoding = headers.get(CONTENT_ENCODING).and_then(|v| v.to_str().ok()).map(|v| v.trim().to_ascii_lowercase());
    match encoding.as_deref() {
        None | Some("") | Some("identity") => Ok(raw),
        Some("gzip") | Some("x-gzip") => {
            let mut out = Vec::with_capacity(raw.len() * 4);
            flate2::read::GzDecoder::new(&raw[..])
                .take(MAX_BATCH_BYTES as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| ApiError::bad_request("invalid_gzip", format!("the gzip body could not be decompressed: {e}")))?;
            Ok(Bytes::from(out))
        }
        Some(other) => Err(ApiError::bad_request("unsupported_encoding", format!("Content-Encoding {other:?} is not supported; send plain JSON or gzip"))),
    }
}

fn request_error(e: RequestError) -> ApiError {
    let message = e.to_string();
    let code = e.code();
    match e {
        RequestError::Invalid(rejected) => ApiError { rejected, ..ApiError::bad_request(code, message) },
        _ => ApiError::bad_request(code, message),
    }
}
