//! The console's pages, one handler each. A handler reads what its page shows through
//! the same store, engine and scope as the API, and renders a template.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use siyu_core::identity::{Identity, IdentityKind};
use siyu_core::{ProfileId, Timestamp};
use siyu_store::profiles::ProfileView;
use siyu_store::{console as stored, outreach as outreach_store, profiles};

use super::{Chrome, Viewer, internal, render};
use crate::http::App;
use crate::http::auth::{Caller, Scope};

/// Dates and times as the console shows them: China time, to the minute.
fn when(t: Timestamp) -> String {
    t.to_datetime().with_timezone(&chrono_tz::Asia::Shanghai).format("%Y-%m-%d %H:%M").to_string()
}

fn forbidden(v: &Viewer) -> Response {
    let _ = v;
    (StatusCode::FORBIDDEN, "This page is for HQ.").into_response()
}

// ---------- customers ----------

#[derive(Deserialize)]
pub struct CustomerQuery {
    q: Option<String>,
    segment: Option<String>,
}

pub struct CustomerRow {
    id: ProfileId,
    name: String,
    phone: String,
    city: String,
}

#[derive(Template)]
#[template(path = "console/customers.html")]
struct CustomersPage {
    c: Chrome,
    query: String,
    rows: Vec<CustomerRow>,
    error: Option<String>,
}

/// Profiles a search names: the number itself, or any identity it could be (phone,
/// member number, user id, WeCom external user id), or a customer's exact name.
async fn search(app: &App, q: &str) -> anyhow::Result<Vec<ProfileId>> {
    let mut found = Vec::new();
    if let Ok(id) = q.parse::<ProfileId>() {
        found.push(id);
    }
    let candidates: Vec<Identity> = [IdentityKind::Phone, IdentityKind::MemberNo, IdentityKind::UserId, IdentityKind::ExternalUserid]
        .into_iter()
        .filter_map(|kind| Identity::new(kind, q, None).ok())
        .collect();
    let ids = app
        .store
        .run(move |db| {
            Box::pin(async move {
                let mut out = Vec::new();
                for identity in &candidates {
                    if let Some(p) = profiles::find_by_identity(db, identity).await? {
                        out.push(p);
                    }
                }
                Ok(out)
            })
        })
        .await?;
    found.extend(ids);
    // A name: the engine holds every trait, so an exact match costs no table scan.
    let rule = siyu_core::rule::parse(&format!("name = {}", serde_json::Value::String(q.to_string())));
    if let Ok(rule) = rule
        && let Ok(members) = app.engine.evaluate(&rule, app.engine.now()).await
    {
        found.extend(members.iter().take(50).map(ProfileId::from_bit));
    }
    found.sort();
    found.dedup();
    Ok(found)
}

/// Of these profiles, those the viewer may see (live ones only).
async fn visible(app: &App, v: &Viewer, ids: Vec<ProfileId>) -> anyhow::Result<Vec<ProfileId>> {
    let caller = v.caller.clone();
    Ok(app
        .store
        .run(move |db| {
            Box::pin(async move {
                let mut out = Vec::new();
                for id in ids {
                    let Some(live) = profiles::live_id(db, id).await? else { continue };
                    let ok = match &caller {
                        Caller::Admin => true,
                        Caller::Staff { userid, .. } => siyu_store::org::can_see_customer(db, userid, live).await?,
                    };
                    if ok && !out.contains(&live) {
                        out.push(live);
                    }
                }
                Ok(out)
            })
        })
        .await?)
}

pub async fn customers(State(app): State<App>, v: Viewer, Query(q): Query<CustomerQuery>) -> Response {
    let query = q.q.unwrap_or_default().trim().to_string();
    let mut error = None;
    let ids = if !query.is_empty() {
        search(&app, &query).await
    } else if let Some(segment) = q.segment.filter(|s| !s.is_empty()) {
        let members = app.engine.read().segments.get(&segment).map(|s| s.members.iter().take(500).map(ProfileId::from_bit).collect::<Vec<_>>());
        if members.is_none() {
            error = Some(format!("no segment {segment:?}"));
        }
        Ok(members.unwrap_or_default())
    } else {
        let (guide, store) = v.scope.filter();
        app.store.run(move |db| Box::pin(async move { stored::customers_in_scope(db, guide.as_deref(), store.as_deref(), 50).await })).await.map_err(Into::into)
    };
    let ids = match ids {
        Ok(ids) => ids,
        Err(e) => return internal(&e),
    };
    let ids = match visible(&app, &v, ids).await {
        Ok(ids) => ids.into_iter().take(50).collect::<Vec<_>>(),
        Err(e) => return internal(&e),
    };
    let summaries = match app.store.run(move |db| Box::pin(async move { profiles::summaries(db, &ids).await })).await {
        Ok(s) => s,
        Err(e) => return internal(&e.into()),
    };
    let full = v.caller.sees_phones();
    let rows = summaries
        .into_iter()
        .map(|s| CustomerRow {
            id: s.id,
            name: s.name.unwrap_or_default(),
            phone: s.phone.map(|p| if full { p } else { siyu_core::phone::mask(&p) }).unwrap_or_default(),
            city: s.city.unwrap_or_default(),
        })
        .collect();
    let title = v.t().customers;
    render(CustomersPage { c: Chrome::new(&v, title, "/console/customers"), query, rows, error })
}

#[derive(Template)]
#[template(path = "console/customer.html")]
struct CustomerPage {
    c: Chrome,
    id: ProfileId,
    identities: Vec<(String, String)>,
    traits: Vec<(String, String)>,
    tags: Vec<String>,
    masked: bool,
    stage: String,
    rfm: String,
    guides: String,
    segments: String,
    deliveries: Vec<(String, String, String, String, String)>,
    events: Vec<(String, String, String)>,
}

/// A profile the viewer may see, or a 404 page (another guide's customer does not
/// exist, as far as the viewer can tell).
async fn profile_for(app: &App, v: &Viewer, reference: &str) -> Result<ProfileId, Response> {
    crate::http::admin::resolve_profile(app, &v.caller, reference).await.map_err(IntoResponse::into_response)
}

async fn show_customer(app: &App, v: &Viewer, id: ProfileId, reveal: bool) -> Response {
    let loaded = app
        .store
        .run(move |db| Box::pin(async move { Ok((profiles::load(db, id, 50).await?, outreach_store::deliveries_of_profile(db, id, 50).await?)) }))
        .await;
    let (profile, deliveries) = match loaded {
        Ok((Some(p), d)) => (p, d),
        Ok((None, _)) => return (StatusCode::NOT_FOUND, "no such profile").into_response(),
        Err(e) => return internal(&e.into()),
    };
    let full = reveal || v.caller.sees_phones();
    // What the API would show this viewer; a reveal shows the one number in full.
    let masked_view = crate::http::admin::for_caller(&v.caller, profile.clone());
    let profile = if reveal { ProfileView { traits: profile.traits.clone(), ..masked_view } } else { masked_view };
    let show = |value: &serde_json::Value| -> String { value.as_str().map(str::to_string).unwrap_or_else(|| value.to_string()) };
    let (lifecycle, segments) = {
        let state = app.engine.read();
        let p = id.bit();
        let segments: Vec<String> = state.segments.names().filter(|n| state.segments.get(n).is_some_and(|s| s.members.contains(p))).cloned().collect();
        (state.index.lifecycle_of(p), segments)
    };
    let page = CustomerPage {
        c: Chrome::new(v, &format!("{} #{id}", v.t().profile), "/console/customers"),
        id,
        // Phones and e-mail addresses are kept as hashes among identities: nothing to mask.
        identities: profile.identities.iter().map(|i| (i.kind.clone(), i.value.clone())).collect(),
        traits: profile.traits.iter().map(|(k, val)| (k.clone(), show(val))).collect(),
        tags: profile.tags.clone(),
        masked: !full && profile.traits.contains_key("phone"),
        stage: lifecycle.as_ref().map(|l| l.stage.clone()).unwrap_or_default(),
        rfm: lifecycle.as_ref().and_then(|l| l.rfm.as_ref()).map(|r| format!("R{} F{} M{}", r.r, r.f, r.m)).unwrap_or_else(|| "–".into()),
        guides: profile
            .owners
            .iter()
            .filter(|o| o.status == "active")
            .map(|o| o.staff_name.clone().unwrap_or_else(|| o.staff_userid.clone()))
            .collect::<Vec<_>>()
            .join(", "),
        segments: segments.join(", "),
        deliveries: deliveries
            .iter()
            .map(|d| {
                (
                    when(d.due_at),
                    d.channel.as_str().to_string(),
                    d.status.as_str().to_string(),
                    d.reason.clone().unwrap_or_default(),
                    d.content.clone().unwrap_or_default(),
                )
            })
            .collect(),
        events: profile
            .recent_events
            .iter()
            .map(|e| (when(e.timestamp), e.name.clone().unwrap_or_else(|| e.kind.clone()), e.payload.to_string().chars().take(160).collect()))
            .collect(),
    };
    render(page)
}

pub async fn customer(State(app): State<App>, v: Viewer, Path(reference): Path<String>) -> Response {
    match profile_for(&app, &v, &reference).await {
        Ok(id) => show_customer(&app, &v, id, false).await,
        Err(r) => r,
    }
}

/// Shows a customer's phone number in full, once, and writes who saw whose number,
/// when and from where to the audit log.
pub async fn reveal(
    State(app): State<App>,
    v: Viewer,
    headers: axum::http::HeaderMap,
    Path(reference): Path<String>,
    axum::Form(form): axum::Form<super::CsrfForm>,
) -> Response {
    if !super::session::csrf_ok(&axum::http::Method::POST, &headers, &v.csrf, form.csrf.as_deref()) {
        return (StatusCode::FORBIDDEN, "the form is stale; reload the page").into_response();
    }
    let id = match profile_for(&app, &v, &reference).await {
        Ok(id) => id,
        Err(r) => return r,
    };
    if let Err(e) = crate::http::audit::record(&app, &v.actor(), "reveal_phone", &format!("profile:{id}"), &headers).await {
        return e.into_response();
    }
    show_customer(&app, &v, id, true).await
}

// ---------- segments ----------

#[derive(Template)]
#[template(path = "console/segments.html")]
struct SegmentsPage {
    c: Chrome,
    segments: Vec<(String, String, u64)>,
    pickers: Vec<&'static str>,
}

/// Common predicates a builder inserts with one click.
const PICKERS: &[&str] = &[
    r#"stage = "at_risk""#,
    "has(wecom)",
    "consent(sms)",
    "count(Order Completed, 30d) >= 2",
    "sum(Order Completed, revenue_fen, 365d) >= 300000",
    "last(Order Completed) < ago(60d)",
    r#"city = "Shanghai""#,
    "rfm.r >= 4",
];

pub async fn segments(State(app): State<App>, v: Viewer) -> Response {
    if !v.is_admin() {
        return forbidden(&v);
    }
    let stored = match app.store.run(|db| Box::pin(siyu_store::segments::list(db))).await {
        Ok(s) => s,
        Err(e) => return internal(&e.into()),
    };
    let segments = {
        let state = app.engine.read();
        stored
            .into_iter()
            .map(|s| {
                let text = siyu_core::rule::Rule::from_json(&s.rule).map(|r| r.to_string()).unwrap_or_default();
                let members = state.segments.get(&s.name).map_or(0, |l| l.members.len());
                (s.name, text, members)
            })
            .collect()
    };
    let title = v.t().segments;
    render(SegmentsPage { c: Chrome::new(&v, title, "/console/segments"), segments, pickers: PICKERS.to_vec() })
}

// ---------- campaigns ----------

#[derive(Template)]
#[template(path = "console/campaigns.html")]
struct CampaignsPage {
    c: Chrome,
    rows: Vec<(i64, String, String, String)>,
}

pub async fn campaigns(State(app): State<App>, v: Viewer) -> Response {
    if !v.is_admin() {
        return forbidden(&v);
    }
    let rows = match app.store.run(|db| Box::pin(outreach_store::list_campaigns(db))).await {
        Ok(r) => r,
        Err(e) => return internal(&e.into()),
    };
    let rows = rows
        .into_iter()
        .map(|c| {
            let channel = c.spec["channel"].as_str().unwrap_or_default().to_string();
            (c.id, c.name, channel, c.status.as_str().to_string())
        })
        .collect();
    let title = v.t().campaigns;
    render(CampaignsPage { c: Chrome::new(&v, title, "/console/campaigns"), rows })
}

#[derive(Template)]
#[template(path = "console/campaign.html")]
struct CampaignPage {
    c: Chrome,
    audience: u64,
    would_send: u64,
    reasons: Vec<(String, u64)>,
    reasons_total: u64,
    samples: Vec<(ProfileId, String, String)>,
}

pub async fn campaign(State(app): State<App>, v: Viewer, Path(id): Path<i64>) -> Response {
    if !v.is_admin() {
        return forbidden(&v);
    }
    let preview = match crate::outreach::campaigns::preview(&app.outreach, id, 5).await {
        Ok(p) => p,
        Err(e) => return crate::http::error::ApiError::from(e).into_response(),
    };
    // Every member of the audience is either sent to or stopped for one reason, so the
    // table sums to the audience.
    let mut reasons = vec![(v.t().would_send.to_string(), preview.would_send)];
    reasons.extend(preview.suppressed.iter().map(|s| (format!("{} — {}", s.reason, s.why), s.count)));
    let reasons_total = reasons.iter().map(|r| r.1).sum();
    let page = CampaignPage {
        c: Chrome::new(&v, &format!("{} #{id}", v.t().campaigns), "/console/campaigns"),
        audience: preview.audience,
        would_send: preview.would_send,
        reasons,
        reasons_total,
        samples: preview.sample.iter().map(|s| (s.profile_id, s.guide.clone().unwrap_or_default(), s.content.clone())).collect(),
    };
    render(page)
}

// ---------- guide tasks ----------

pub struct TaskCard {
    id: i64,
    title: String,
    deadline: String,
    done: usize,
    total: usize,
    items: Vec<TaskItemView>,
}

pub struct TaskItemView {
    delivery: i64,
    customer: String,
    content: String,
    open: bool,
    status: String,
}

#[derive(Template)]
#[template(path = "console/tasks.html")]
struct TasksPage {
    c: Chrome,
    tasks: Vec<TaskCard>,
}

pub async fn tasks(State(app): State<App>, v: Viewer) -> Response {
    let (guide, store) = v.scope.filter();
    let open = app.store.run(move |db| Box::pin(async move { outreach_store::list_tasks(db, guide.as_deref(), store.as_deref(), 20).await })).await;
    let open: Vec<_> = match open {
        Ok(t) => t.into_iter().filter(|t| t.status == "open").collect(),
        Err(e) => return internal(&e.into()),
    };
    let mut cards = Vec::new();
    for task in open {
        let tid = task.id;
        let rows = match app.store.run(move |db| Box::pin(outreach_store::deliveries_of_task(db, tid))).await {
            Ok(r) => r,
            Err(e) => return internal(&e.into()),
        };
        // The guide sees the words the mass message will carry: rendered once, stored.
        let outgoing = match crate::outreach::render::rendered_once(&app.outreach, &rows).await {
            Ok(o) => o,
            Err(e) => return internal(&e),
        };
        let ids: Vec<ProfileId> = rows.iter().map(|d| d.profile_id).collect();
        let names = match app.store.run(move |db| Box::pin(async move { profiles::summaries(db, &ids).await })).await {
            Ok(s) => s,
            Err(e) => return internal(&e.into()),
        };
        let name_of = |p: ProfileId| names.iter().find(|s| s.id == p).and_then(|s| s.name.clone()).unwrap_or_else(|| format!("#{p}"));
        let items: Vec<TaskItemView> = rows
            .iter()
            .zip(outgoing)
            .map(|(d, o)| TaskItemView {
                delivery: d.id,
                customer: name_of(d.profile_id),
                content: o.content,
                open: d.status == siyu_core::delivery::DeliveryStatus::PendingStaff,
                status: d.status.as_str().to_string(),
            })
            .collect();
        let done = items.iter().filter(|i| !i.open).count();
        cards.push(TaskCard { id: task.id, title: task.title, deadline: when(task.deadline), done, total: items.len(), items });
    }
    let title = v.t().tasks;
    render(TasksPage { c: Chrome::new(&v, title, "/console/tasks"), tasks: cards })
}

// ---------- audit log ----------

#[derive(Template)]
#[template(path = "console/audit.html")]
struct AuditPage {
    c: Chrome,
    entries: Vec<(String, String, String, String, String)>,
}

pub async fn audit(State(app): State<App>, v: Viewer) -> Response {
    if !v.is_admin() {
        return forbidden(&v);
    }
    let entries = match app.store.run(|db| Box::pin(stored::audit_entries(db, 200))).await {
        Ok(e) => e,
        Err(e) => return internal(&e.into()),
    };
    let entries = entries.into_iter().map(|e| (when(e.at), e.actor, e.action, e.subject, e.ip.unwrap_or_default())).collect();
    let title = v.t().audit_log;
    render(AuditPage { c: Chrome::new(&v, title, "/console/audit"), entries })
}

// ---------- lost customers ----------

pub struct LostRow {
    /// HQ may open the profile; for the guide and store the customer is gone.
    link: bool,
    when: String,
    profile: ProfileId,
    name: String,
    guide: String,
    touches: Vec<String>,
}

#[derive(Template)]
#[template(path = "console/lost.html")]
struct LostPage {
    c: Chrome,
    rows: Vec<LostRow>,
}

/// Customers who deleted their guide in the last 30 days, in the viewer's scope, each
/// with what Siyu sent them in the seven days before.
pub async fn lost(State(app): State<App>, v: Viewer) -> Response {
    let (guide, store) = v.scope.filter();
    let since = Timestamp(app.engine.now().0 - 30 * 86_400_000);
    let found = app
        .store
        .run(move |db| {
            Box::pin(async move {
                let lost = stored::lost_customers(db, guide.as_deref(), store.as_deref(), since, 100).await?;
                let ids: Vec<ProfileId> = lost.iter().map(|l| l.profile_id).collect();
                let names = profiles::summaries(db, &ids).await?;
                let mut rows = Vec::new();
                for l in lost {
                    let deliveries = outreach_store::deliveries_of_profile(db, l.profile_id, 50).await?;
                    rows.push((l, deliveries));
                }
                Ok((rows, names))
            })
        })
        .await;
    let (found, names) = match found {
        Ok(f) => f,
        Err(e) => return internal(&e.into()),
    };
    let rows = found
        .into_iter()
        .map(|(l, deliveries)| {
            let touches = crate::outreach::losses::touches_before(&deliveries, l.removed_at)
                .into_iter()
                .map(|d| {
                    let source = d.campaign_id.map(|c| format!("campaign #{c}")).or(d.journey_id.map(|j| format!("journey #{j}"))).unwrap_or_default();
                    format!("{} {} {source}: {}", when(d.sent_at.unwrap_or(d.due_at)), d.channel.as_str(), d.content.as_deref().unwrap_or(""))
                })
                .collect();
            LostRow {
                link: matches!(v.scope, Scope::All),
                when: when(l.removed_at),
                profile: l.profile_id,
                name: names.iter().find(|s| s.id == l.profile_id).and_then(|s| s.name.clone()).unwrap_or_else(|| format!("#{}", l.profile_id)),
                guide: l.staff_userid,
                touches,
            }
        })
        .collect();
    let title = v.t().lost_page;
    render(LostPage { c: Chrome::new(&v, title, "/console/lost"), rows })
}
