//! Analytics for the Overview page: `/api/v1/analytics/…`. Every chart has a JSON
//! endpoint and a CSV export; `overview` has them all in one answer. All take the same
//! query: a period (`from`, `to`, whole days in the definitions' time zone) and an
//! optional slice (`city`, `store`, `channel`). The definitions are in
//! `siyu_store::analytics` and docs/analytics.md.
//!
//! Scope: admins and HQ operators see everything; a store manager sees their own store
//! (whatever `store` they ask for); a guide gets 403.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{FromRequestParts, State};
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use chrono::Duration;
use serde::Deserialize;
use siyu_core::analytics::{Factor, Period, PeriodError, parse_day, parse_zone};
use siyu_store::analytics::{self as stored, Contacts, Definitions, Gmv, Overview, Rates, Slice};
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::http::App;
use crate::http::auth::Scope;
use crate::http::error::{ApiError, ApiResult, ErrorBody};
use crate::http::extract::{Json, Query};

pub fn routes() -> OpenApiRouter<App> {
    OpenApiRouter::new()
        .routes(routes!(overview))
        .routes(routes!(gmv))
        .routes(routes!(gmv_csv))
        .routes(routes!(contacts))
        .routes(routes!(contacts_csv))
        .routes(routes!(rates))
        .routes(routes!(rates_csv))
}

/// The analytics definitions the server started with (`DATA_DIR/analytics.json`, put on
/// every request by `app`); the defaults when there are none.
pub struct Defs(pub Arc<Definitions>);

impl<S: Send + Sync> FromRequestParts<S> for Defs {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Defs, Infallible> {
        Ok(Defs(parts.extensions.get::<Arc<Definitions>>().cloned().unwrap_or_default()))
    }
}

#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AnalyticsQuery {
    /// The first day, `YYYY-MM-DD` (default: 29 days before `to`, so 30 days in all).
    pub from: Option<String>,
    /// The last day, included, `YYYY-MM-DD` (default: yesterday in the definitions' time
    /// zone). At most 731 days from `from`.
    pub to: Option<String>,
    /// Customers whose `city` trait is this.
    pub city: Option<String>,
    /// Only relationships with staff of this store (a store manager always gets their own).
    pub store: Option<String>,
    /// Customers acquired through this channel (`poster`, `table_card` …).
    pub channel: Option<String>,
}

/// The slice and period a request asks for, as the caller may see them.
fn read(app: &App, scope: &Scope, defs: &Definitions, q: &AnalyticsQuery) -> ApiResult<(Slice, Period)> {
    let given = |v: &Option<String>| v.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(String::from);
    let mut slice = Slice { city: given(&q.city), store: given(&q.store), channel: given(&q.channel) };
    match scope {
        Scope::All => {}
        Scope::Store(store) => slice.store = Some(store.clone()),
        Scope::Guide(_) => return Err(ApiError::forbidden("analytics are for HQ and store managers; a guide's own customers are in their customer list")),
    }
    let zone = parse_zone(&defs.time_zone).map_err(ApiError::internal)?;
    let today = app.engine.now().to_datetime().with_timezone(&zone).date_naive();
    let bad = |e: PeriodError| ApiError::bad_request("invalid_period", e.to_string());
    let to = match given(&q.to) {
        Some(to) => to,
        None => (today - Duration::days(1)).to_string(),
    };
    let from = match given(&q.from) {
        Some(from) => from,
        None => (parse_day("to", &to).map_err(bad)? - Duration::days(29)).to_string(),
    };
    Ok((slice, defs.period(&from, &to).map_err(bad)?))
}

async fn run<T: Send + 'static>(
    app: &App,
    work: impl for<'c> FnOnce(&'c mut dyn siyu_store::Db) -> futures::future::BoxFuture<'c, Result<T, siyu_store::StoreError>> + Send + 'static,
) -> ApiResult<T> {
    Ok(app.store.run(work).await?)
}

#[utoipa::path(get, path = "/api/v1/analytics/overview", tag = "analytics",
    summary = "The Overview page: GMV and its four factors for this period and the one before, the change by factor (LMDI), private-domain customers by day, block rate, repurchase rate, private vs non-private ARPU",
    params(AnalyticsQuery),
    responses((status = 200, body = Overview), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)), security(("bearer" = [])))]
pub async fn overview(State(app): State<App>, scope: Scope, Defs(defs): Defs, Query(q): Query<AnalyticsQuery>) -> ApiResult<Json<Overview>> {
    Ok(Json(overview_for(&app, &scope, defs, &q).await?))
}

#[utoipa::path(get, path = "/api/v1/analytics/gmv", tag = "analytics",
    summary = "GMV = users × conversion × AOV × frequency, this period and the one before, and the change by factor (LMDI)",
    params(AnalyticsQuery),
    responses((status = 200, body = Gmv), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)), security(("bearer" = [])))]
pub async fn gmv(State(app): State<App>, scope: Scope, Defs(defs): Defs, Query(q): Query<AnalyticsQuery>) -> ApiResult<Json<Gmv>> {
    let (slice, period) = read(&app, &scope, &defs, &q)?;
    Ok(Json(run(&app, move |db| Box::pin(async move { stored::gmv(db, &defs, &slice, &period).await })).await?))
}

#[utoipa::path(get, path = "/api/v1/analytics/gmv.csv", tag = "analytics",
    summary = "The GMV chart as CSV: each factor (and buyers, orders, GMV) previous, current, change and LMDI contribution",
    params(AnalyticsQuery),
    responses((status = 200, description = "measure,previous,current,change,contribution,contribution_fen", content_type = "text/csv", body = String),
        (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn gmv_csv(State(app): State<App>, scope: Scope, Defs(defs): Defs, Query(q): Query<AnalyticsQuery>) -> ApiResult<Response> {
    let (slice, period) = read(&app, &scope, &defs, &q)?;
    let g = run(&app, move |db| Box::pin(async move { stored::gmv(db, &defs, &slice, &period).await })).await?;
    csv_answer("gmv", &period, gmv_rows(&g))
}

/// One row per measure. The four factors carry their LMDI contribution (empty when the
/// decomposition is unavailable); the GMV row carries their sum, which is the change.
fn gmv_rows(g: &Gmv) -> Vec<Vec<String>> {
    let mut rows = vec![["measure", "previous", "current", "change", "contribution", "contribution_fen"].map(String::from).to_vec()];
    let (p, c, d) = (&g.previous, &g.current, &g.decomposition);
    let factor = |f: Factor| match f {
        Factor::Users => (p.users as f64, c.users as f64),
        Factor::Conversion => (p.conversion, c.conversion),
        Factor::Aov => (p.aov_fen, c.aov_fen),
        Factor::Frequency => (p.frequency, c.frequency),
    };
    for f in Factor::ALL {
        let (prev, cur) = factor(f);
        let name = if f == Factor::Aov { "aov_fen" } else { f.as_str() };
        let (value, fen) = d.get(f).map_or((String::new(), String::new()), |x| (x.value.to_string(), x.fen.to_string()));
        rows.push(vec![name.to_string(), prev.to_string(), cur.to_string(), (cur - prev).to_string(), value, fen]);
    }
    let (sum, sum_fen) = if d.contributions.is_empty() { (String::new(), String::new()) } else { (d.sum().to_string(), d.sum_fen().to_string()) };
    rows.push(vec!["gmv_fen".into(), p.gmv_fen.to_string(), c.gmv_fen.to_string(), d.change_fen.to_string(), sum, sum_fen]);
    for (name, prev, cur) in [("buyers", p.buyers, c.buyers), ("orders", p.orders, c.orders)] {
        rows.push(vec![name.into(), prev.to_string(), cur.to_string(), (cur as i64 - prev as i64).to_string(), String::new(), String::new()]);
    }
    rows
}

#[utoipa::path(get, path = "/api/v1/analytics/contacts", tag = "analytics",
    summary = "Private-domain customers (active WeCom contacts) by day: added, lost, net, total",
    params(AnalyticsQuery),
    responses((status = 200, body = Contacts), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)), security(("bearer" = [])))]
pub async fn contacts(State(app): State<App>, scope: Scope, Defs(defs): Defs, Query(q): Query<AnalyticsQuery>) -> ApiResult<Json<Contacts>> {
    let (slice, period) = read(&app, &scope, &defs, &q)?;
    Ok(Json(run(&app, move |db| Box::pin(async move { stored::contacts(db, &slice, &period).await })).await?))
}

#[utoipa::path(get, path = "/api/v1/analytics/contacts.csv", tag = "analytics",
    summary = "Private-domain customers by day as CSV",
    params(AnalyticsQuery),
    responses((status = 200, description = "day,added,lost,net,total", content_type = "text/csv", body = String),
        (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn contacts_csv(State(app): State<App>, scope: Scope, Defs(defs): Defs, Query(q): Query<AnalyticsQuery>) -> ApiResult<Response> {
    let (slice, period) = read(&app, &scope, &defs, &q)?;
    let c = run(&app, move |db| Box::pin(async move { stored::contacts(db, &slice, &period).await })).await?;
    let mut rows = vec![["day", "added", "lost", "net", "total"].map(String::from).to_vec()];
    rows.extend(c.by_day.iter().map(|d| vec![d.day.to_string(), d.added.to_string(), d.lost.to_string(), d.net.to_string(), d.total.to_string()]));
    csv_answer("contacts", &period, rows)
}

#[utoipa::path(get, path = "/api/v1/analytics/rates", tag = "analytics",
    summary = "Block rate, repurchase rate, and ARPU of private-domain customers against the rest",
    params(AnalyticsQuery),
    responses((status = 200, body = Rates), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)), security(("bearer" = [])))]
pub async fn rates(State(app): State<App>, scope: Scope, Defs(defs): Defs, Query(q): Query<AnalyticsQuery>) -> ApiResult<Json<Rates>> {
    let (slice, period) = read(&app, &scope, &defs, &q)?;
    Ok(Json(run(&app, move |db| Box::pin(async move { stored::rates(db, &defs, &slice, &period).await })).await?))
}

#[utoipa::path(get, path = "/api/v1/analytics/rates.csv", tag = "analytics",
    summary = "Block rate, repurchase rate and ARPU as CSV: each with its numerator and denominator",
    params(AnalyticsQuery),
    responses((status = 200, description = "metric,numerator,denominator,value", content_type = "text/csv", body = String),
        (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn rates_csv(State(app): State<App>, scope: Scope, Defs(defs): Defs, Query(q): Query<AnalyticsQuery>) -> ApiResult<Response> {
    let (slice, period) = read(&app, &scope, &defs, &q)?;
    let r = run(&app, move |db| Box::pin(async move { stored::rates(db, &defs, &slice, &period).await })).await?;
    let row = |metric: &str, numerator: String, denominator: u64, value: f64| vec![metric.to_string(), numerator, denominator.to_string(), value.to_string()];
    let rows = vec![
        ["metric", "numerator", "denominator", "value"].map(String::from).to_vec(),
        row("block_rate", r.block_rate.blocked.to_string(), r.block_rate.contacts, r.block_rate.rate),
        row("repurchase_rate", r.repurchase.repeat_buyers.to_string(), r.repurchase.buyers, r.repurchase.rate),
        row("arpu_private_fen", r.arpu.private.gmv_fen.to_string(), r.arpu.private.customers, r.arpu.private.arpu_fen),
        row("arpu_rest_fen", r.arpu.rest.gmv_fen.to_string(), r.arpu.rest.customers, r.arpu.rest.arpu_fen),
    ];
    csv_answer("rates", &period, rows)
}

/// A CSV download named after the chart and the period.
fn csv_answer(chart: &str, period: &Period, rows: Vec<Vec<String>>) -> ApiResult<Response> {
    let mut w = csv::Writer::from_writer(Vec::new());
    for r in &rows {
        w.write_record(r).map_err(ApiError::internal)?;
    }
    let body = w.into_inner().map_err(ApiError::internal)?;
    let filename = format!("attachment; filename=\"{chart}_{}_{}.csv\"", period.from, period.to);
    Ok(([(CONTENT_TYPE, "text/csv; charset=utf-8".to_string()), (CONTENT_DISPOSITION, filename)], body).into_response())
}

/// The Overview page's figures for a viewer in the console: the same answer, scope and
/// errors as `GET /api/v1/analytics/overview`.
pub async fn overview_for(app: &App, scope: &Scope, defs: Arc<Definitions>, q: &AnalyticsQuery) -> ApiResult<Overview> {
    let (slice, period) = read(app, scope, &defs, q)?;
    run(app, move |db| Box::pin(async move { stored::overview(db, &defs, &slice, &period).await })).await
}
