//! The HTTP surface: tracking API (`/v1`), admin API (`/api/v1`, bearer tokens),
//! OpenAPI at `/api/openapi.json`, Prometheus metrics at `/metrics`, `/healthz`.

pub mod admin;
pub mod analytics;
pub mod audit;
pub mod auth;
pub mod console;
pub mod error;
pub mod extract;
pub mod openapi;
pub mod org;
pub mod outreach;
pub mod segments;
pub mod server;
mod state;
pub mod tokens;
pub mod tracking;
pub mod wecom;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router, middleware};
use serde_json::json;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnFailure, TraceLayer};
use utoipa_axum::router::OpenApiRouter;

pub use state::{App, AppState};

pub fn router(app: App, limits: &server::Limits) -> Router {
    let admin_api = OpenApiRouter::new()
        .merge(admin::routes())
        .merge(analytics::routes())
        .merge(audit::routes())
        .merge(org::routes())
        .merge(tokens::routes())
        .merge(segments::routes())
        .merge(outreach::routes())
        .merge(wecom::admin_routes())
        .route_layer(middleware::from_fn_with_state(app.clone(), auth::require_token));
    let (routes, paths) = OpenApiRouter::new().merge(tracking::routes()).merge(wecom::routes()).merge(admin_api).split_for_parts();
    // Written once: the document does not change while the server runs.
    let document = axum::body::Bytes::from(serde_json::to_vec(&openapi::document(paths)).expect("the OpenAPI document serialises"));
    routes
        .route("/api/openapi.json", get(move || std::future::ready(([(CONTENT_TYPE, "application/json")], document.clone()))))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .merge(crate::http::console::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // Bodies the handlers read whole (admin JSON, WeCom callbacks); the tracking API
        // checks its own, smaller limits.
        .layer(axum::extract::DefaultBodyLimit::max(1 << 20))
        .layer(middleware::from_fn_with_state(server::Guard::new(limits), server::guard))
        // Every request in a span of its own with a request id (the client's
        // `x-request-id`, or a new UUID), echoed in the answer, so a log line can be
        // traced to the request that caused it. The span names the path, never the
        // query (it may carry secrets).
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                // A 503 is how Siyu sheds load (a full backlog, too many requests): an
                // answer it chose, not an error to shout about once per request.
                .on_failure(DefaultOnFailure::new().level(tracing::Level::DEBUG)),
        )
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .with_state(app)
}

fn request_span(req: &axum::extract::Request) -> tracing::Span {
    let id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("");
    tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
}

async fn metrics(State(app): State<App>) -> impl IntoResponse {
    let stats = app.store.run(|db| Box::pin(siyu_store::profiles::stats(db))).await.ok();
    let engine = {
        let state = app.engine.read();
        crate::metrics::EngineCounters { early: state.index.early_applied, taken_back: state.index.early_taken_back, waits: state.index.early_waits() }
    };
    let body = app.metrics.render(stats.map(|s| (s.profiles, s.events)), (app.ingest.appended(), app.ingest.indexed()), engine);
    ([(CONTENT_TYPE, "text/plain; version=0.0.4")], body)
}

async fn healthz(State(app): State<App>) -> impl IntoResponse {
    let ok = app.store.run(|db| Box::pin(async move { db.query_one("SELECT 1", &[]).await })).await.is_ok();
    let status = if ok { axum::http::StatusCode::OK } else { axum::http::StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(json!({ "status": if ok { "ok" } else { "store unavailable" } })))
}

async fn method_not_allowed() -> error::ApiError {
    error::ApiError::new(axum::http::StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "this endpoint does not take that method; see /api/openapi.json")
}

async fn not_found() -> error::ApiError {
    error::ApiError::not_found("no such endpoint; see /api/openapi.json")
}
