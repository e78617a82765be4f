//! Broadcasts: creating, scheduling, the dry run, the run itself, and watching what a
//! running campaign causes (guardrails, completion, lift).

use std::collections::BTreeMap;
use std::time::Instant;

use roaring::RoaringBitmap;
use serde::Serialize;
use siyu_core::Timestamp;
use siyu_core::rule::Channel;
use siyu_engine::{decode_members, encode_members};
use siyu_outreach::campaign::{Action, CampaignSpec, Status};
use siyu_outreach::guardrail::{Lift, Metrics};
use siyu_outreach::plan::{Outcome, PlanOptions, PlanSummary, delivery_state, dry_run, plan};
use siyu_outreach::policy::{Decision, Reason};
use siyu_outreach::template::Template;
use siyu_store::outreach::{self as stored, CampaignRow, NewDelivery, NewTask, StatusChange};
use utoipa::ToSchema;

use super::{Outreach, audience, render};

/// Why a campaign request cannot be done, in words for the operator.
#[derive(Debug, thiserror::Error)]
pub enum CampaignError {
    #[error("no campaign {0}")]
    NotFound(i64),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl From<siyu_store::StoreError> for CampaignError {
    fn from(e: siyu_store::StoreError) -> Self {
        CampaignError::Other(e.into())
    }
}

pub fn read_spec(value: &serde_json::Value) -> Result<CampaignSpec, CampaignError> {
    let spec: CampaignSpec = serde_json::from_value(value.clone()).map_err(|e| CampaignError::Invalid(format!("campaign: {e}")))?;
    spec.validate().map_err(CampaignError::Invalid)?;
    Ok(spec)
}

async fn check_segment(o: &Outreach, spec: &CampaignSpec) -> Result<(), CampaignError> {
    if o.engine.read().segments.get(&spec.audience.segment).is_none() {
        return Err(CampaignError::Invalid(format!("audience.segment: there is no segment named {:?}", spec.audience.segment)));
    }
    Ok(())
}

pub async fn get(o: &Outreach, id: i64) -> Result<CampaignRow, CampaignError> {
    o.store.run(move |db| Box::pin(stored::get_campaign(db, id))).await?.ok_or(CampaignError::NotFound(id))
}

pub async fn create(o: &Outreach, spec_json: serde_json::Value, actor: String) -> Result<CampaignRow, CampaignError> {
    let spec = read_spec(&spec_json)?;
    check_segment(o, &spec).await?;
    let now = o.now();
    let value = serde_json::to_value(&spec).map_err(anyhow::Error::from)?;
    let id = o.store.run(move |db| Box::pin(async move { stored::create_campaign(db, &spec.name, &value, &actor, now).await })).await?;
    get(o, id).await
}

/// Edits are for drafts: a scheduled campaign is unscheduled first.
pub async fn update(o: &Outreach, id: i64, spec_json: serde_json::Value, actor: String) -> Result<CampaignRow, CampaignError> {
    let c = get(o, id).await?;
    if c.status != Status::Draft {
        return Err(CampaignError::Conflict(format!("only a draft can be edited; this campaign is {}", c.status.as_str())));
    }
    let spec = read_spec(&spec_json)?;
    check_segment(o, &spec).await?;
    let now = o.now();
    let value = serde_json::to_value(&spec).map_err(anyhow::Error::from)?;
    o.store.run(move |db| Box::pin(async move { stored::update_spec(db, id, &spec.name, &value, &actor, now).await })).await?;
    get(o, id).await
}

/// An operator's action: schedule, unschedule, pause, resume, complete.
pub async fn act(o: &Outreach, id: i64, action: Action, actor: String) -> Result<CampaignRow, CampaignError> {
    let c = get(o, id).await?;
    let spec = read_spec(&c.spec)?;
    if action == Action::Start {
        return Err(CampaignError::Invalid("campaigns start by themselves when their time comes: schedule it".into()));
    }
    let next = c.status.apply(action).map_err(CampaignError::Conflict)?;
    let now = o.now();
    let mut next_run_at = c.next_run_at;
    if action == Action::Schedule {
        check_segment(o, &spec).await?;
        next_run_at = Some(spec.schedule.at.unwrap_or(now).max(now));
        if spec.audience.snapshot {
            let members = audience::segment_members(o, &spec.audience.segment, now).await?;
            let text = encode_members(&members);
            o.store.run(move |db| Box::pin(async move { stored::save_snapshot(db, id, &text).await })).await?;
        }
    }
    o.store
        .run(move |db| {
            Box::pin(async move {
                let change = StatusChange { status: next, reason: None, next_run_at, actor: &actor, action: action.as_str() };
                stored::set_status(db, id, change, now).await
            })
        })
        .await?;
    get(o, id).await
}

async fn members_of(o: &Outreach, c: &CampaignRow, spec: &CampaignSpec, now: Timestamp) -> anyhow::Result<RoaringBitmap> {
    if spec.audience.snapshot {
        let id = c.id;
        if let Some(text) = o.store.run(move |db| Box::pin(stored::snapshot(db, id))).await? {
            return Ok(decode_members(&text));
        }
    }
    audience::segment_members(o, &spec.audience.segment, now).await
}

fn options(c: &CampaignRow, spec: &CampaignSpec, now: Timestamp) -> PlanOptions {
    PlanOptions { channel: spec.channel, kind: spec.kind, now, source: format!("campaign:{}:run:{}", c.id, c.runs + 1), holdout_percent: spec.holdout_percent }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Suppression {
    pub reason: String,
    pub count: u64,
    /// What the reason means, for a person.
    pub why: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SampleMessage {
    pub profile_id: siyu_core::ProfileId,
    pub guide: Option<String>,
    pub send_at: Timestamp,
    pub deferred: bool,
    pub content: String,
}

/// What would happen if the campaign ran now. Nothing is sent or recorded.
#[derive(Debug, Serialize, ToSchema)]
pub struct Preview {
    pub campaign_id: i64,
    pub channel: String,
    pub audience: u64,
    pub would_send: u64,
    /// Of those, moved to the end of quiet hours in the customer's zone.
    pub deferred_by_quiet_hours: u64,
    pub suppressed: Vec<Suppression>,
    /// WeCom: customers in each guide's task.
    pub per_guide: BTreeMap<String, u64>,
    pub tasks: u64,
    pub sample: Vec<SampleMessage>,
    pub took_ms: f64,
}

pub async fn preview(o: &Outreach, id: i64, sample: usize) -> Result<Preview, CampaignError> {
    let started = Instant::now();
    let c = get(o, id).await?;
    let spec = read_spec(&c.spec)?;
    check_segment(o, &spec).await?;
    let now = o.now();
    let members = members_of(o, &c, &spec, now).await?;
    let facts = audience::facts(o, &members, spec.channel, now).await?;
    let opts = options(&c, &spec, now);
    let (outcomes, summary) = {
        let mut ledger = o.ledger.lock().await;
        let aud = facts.audience(&members);
        super::off_the_runtime(|| dry_run(o.policy(), &aud, &opts, &mut ledger))
    };
    let picked: Vec<&Outcome> = outcomes.iter().filter(|x| matches!(x.decision, Decision::Send { .. })).take(sample).collect();
    let targets: Vec<(siyu_core::ProfileId, Option<String>, String)> = picked
        .iter()
        .map(|x| {
            (siyu_core::ProfileId::from_bit(x.profile), x.guide.map(|g| facts.owners.guides[g as usize].clone()), format!("{}:{}", opts.source, x.profile))
        })
        .collect();
    let template = Template::parse(&spec.content).map_err(|e| CampaignError::Invalid(e.to_string()))?;
    let texts = render::render_many(o, &template, spec.coupon.as_deref(), &targets).await?;
    let sample = picked
        .iter()
        .zip(targets)
        .zip(texts)
        .map(|((x, (p, guide, _)), content)| {
            let (send_at, deferred) = match x.decision {
                Decision::Send { at, deferred } => (at, deferred),
                Decision::Suppress(_) => (now, false),
            };
            SampleMessage { profile_id: p, guide, send_at, deferred, content }
        })
        .collect();
    Ok(Preview {
        campaign_id: id,
        channel: spec.channel.as_str().to_string(),
        audience: summary.audience,
        would_send: summary.sends,
        deferred_by_quiet_hours: summary.deferred,
        suppressed: explain(&summary),
        per_guide: summary.per_guide,
        tasks: summary.tasks,
        sample,
        took_ms: started.elapsed().as_secs_f64() * 1e3,
    })
}

/// Suppressions in the order the policy applies its rules.
fn explain(summary: &PlanSummary) -> Vec<Suppression> {
    let mut out: Vec<(Option<Reason>, Suppression)> = summary
        .suppressed
        .iter()
        .map(|(code, n)| {
            let reason = Reason::parse(code);
            (reason, Suppression { reason: code.clone(), count: *n, why: reason.map(Reason::explain).unwrap_or("").to_string() })
        })
        .collect();
    out.sort_by_key(|(r, _)| *r);
    out.into_iter().map(|(_, s)| s).collect()
}

/// Runs every scheduled campaign whose time has come.
pub async fn run_due(o: &Outreach, now: Timestamp) -> anyhow::Result<()> {
    for c in o.store.run(move |db| Box::pin(stored::due_campaigns(db, now))).await? {
        let id = c.id;
        if let Err(e) = run_one(o, c, now).await {
            tracing::warn!(campaign = id, error = %e, "campaign run failed; it stays scheduled and is retried");
        }
    }
    Ok(())
}

/// One run: plan through the policy, then record every outcome, the guide tasks and the
/// new status in one transaction.
pub async fn run_one(o: &Outreach, c: CampaignRow, now: Timestamp) -> anyhow::Result<PlanSummary> {
    let spec = read_spec(&c.spec).map_err(|e| anyhow::anyhow!("{e}"))?;
    let members = members_of(o, &c, &spec, now).await?;
    let facts = audience::facts(o, &members, spec.channel, now).await?;
    let opts = options(&c, &spec, now);
    let mut ledger = o.ledger.lock().await;
    let (outcomes, summary) = {
        let aud = facts.audience(&members);
        super::off_the_runtime(|| plan(o.policy(), &aud, &opts, &mut ledger))
    };
    let (rows, groups) = deliveries(&c, &spec, &opts, &outcomes, &facts.owners.guides, o.policy().wecom_task_limit);
    let recurring = spec.schedule.every_days.map(|d| Timestamp(c.next_run_at.unwrap_or(now).0 + d as i64 * 86_400_000));
    let (id, name, deadline) = (c.id, spec.name.clone(), Timestamp(now.0 + spec.task_deadline_hours as i64 * 3_600_000));
    let detail =
        format!("run {}: {} sends ({} deferred by quiet hours), {} suppressed", c.runs + 1, summary.sends, summary.deferred, summary.audience - summary.sends);
    let result = o
        .store
        .transaction(move |db| {
            Box::pin(async move {
                let mut rows = rows;
                for (guide, indexes) in &groups {
                    let task = stored::create_task(db, NewTask { campaign_id: Some(id), journey_id: None, guide, title: &name, deadline }, now).await?;
                    for &i in indexes {
                        rows[i].task_id = Some(task);
                    }
                }
                stored::insert_deliveries(db, &rows).await?;
                stored::count_run(db, id).await?;
                let change = match recurring {
                    Some(next) => StatusChange { status: Status::Scheduled, reason: None, next_run_at: Some(next), actor: "siyu", action: "ran" },
                    None => StatusChange { status: Status::Running, reason: None, next_run_at: None, actor: "siyu", action: "started" },
                };
                stored::set_status(db, id, change, now).await?;
                stored::audit(db, id, "siyu", "planned", &detail, now).await
            })
        })
        .await;
    o.keep_ledger_true(ledger, result).await?;
    tracing::info!(campaign = c.id, sends = summary.sends, deferred = summary.deferred, suppressed = ?summary.suppressed, "campaign planned");
    Ok(summary)
}

/// Delivery rows for a plan, and for WeCom the guide tasks they go into (chunks of at
/// most the per-task limit): (guide, row indexes).
pub fn deliveries(
    c: &CampaignRow,
    spec: &CampaignSpec,
    opts: &PlanOptions,
    outcomes: &[Outcome],
    guides: &[String],
    task_limit: usize,
) -> (Vec<NewDelivery>, Vec<(String, Vec<usize>)>) {
    let wecom = spec.channel == Channel::Wecom;
    let mut by_guide: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    let rows: Vec<NewDelivery> = outcomes
        .iter()
        .enumerate()
        .map(|(i, x)| {
            let (status, reason, due) = delivery_state(&x.decision, spec.channel, opts.now);
            if let (true, Decision::Send { .. }, Some(g)) = (wecom, &x.decision, x.guide) {
                by_guide.entry(g).or_default().push(i);
            }
            NewDelivery {
                key: format!("{}:{}", opts.source, x.profile),
                profile_id: siyu_core::ProfileId::from_bit(x.profile),
                campaign_id: Some(c.id),
                journey_id: None,
                channel: spec.channel,
                kind: spec.kind,
                status,
                reason: Some(reason.to_string()),
                guide: x.guide.map(|g| guides[g as usize].clone()),
                task_id: None,
                content: None,
                created_at: opts.now,
                due_at: due,
            }
        })
        .collect();
    let groups = by_guide
        .into_iter()
        .flat_map(|(g, idx)| idx.chunks(task_limit.max(1)).map(|chunk| (guides[g as usize].clone(), chunk.to_vec())).collect::<Vec<_>>())
        .collect();
    (rows, groups)
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Report {
    pub campaign: CampaignRow,
    pub metrics: Metrics,
    pub lift: Lift,
    /// Deliveries by status, and suppressions by reason.
    pub deliveries: BTreeMap<String, i64>,
    pub suppressed: BTreeMap<String, i64>,
}

/// What a campaign's touches did, with its deliveries by status and suppressions by
/// reason. (Lift, which reads every touched customer's events, is for the report only.)
pub async fn metrics(o: &Outreach, c: &CampaignRow, spec: &CampaignSpec) -> anyhow::Result<(Metrics, BTreeMap<String, i64>, BTreeMap<String, i64>)> {
    let (id, window) = (c.id, spec.guardrail.block_window_days as i64);
    let (counts, responses, blocks) = o
        .store
        .run(move |db| {
            Box::pin(async move {
                Ok((
                    stored::campaign_counts(db, id).await?,
                    stored::campaign_responses(db, id, &["Message Clicked", "Message Replied", "Unsubscribed", "Message Complained"]).await?,
                    stored::campaign_blocks(db, id, window).await?,
                ))
            })
        })
        .await?;
    let mut by_status = BTreeMap::new();
    let mut suppressed = BTreeMap::new();
    for (status, reason, n) in counts {
        *by_status.entry(status.clone()).or_default() += n;
        if let (Some(r), "suppressed") = (reason, status.as_str()) {
            *suppressed.entry(r).or_default() += n;
        }
    }
    let response = |name: &str| responses.iter().find(|(n, _)| n == name).map(|(_, c)| *c as u64).unwrap_or(0);
    let sent = (by_status.get("sent").copied().unwrap_or(0) + by_status.get("confirmed").copied().unwrap_or(0)) as u64;
    let m = Metrics {
        sent,
        delivered: sent,
        clicks: response("Message Clicked"),
        replies: response("Message Replied"),
        unsubscribes: response("Unsubscribed"),
        complaints: response("Message Complained"),
        blocks: blocks as u64,
        holdout: suppressed.get("holdout").copied().unwrap_or(0) as u64,
    };
    Ok((m, by_status, suppressed))
}

pub async fn report(o: &Outreach, id: i64) -> Result<Report, CampaignError> {
    let campaign = get(o, id).await?;
    let spec = read_spec(&campaign.spec)?;
    let (metrics, deliveries, suppressed) = metrics(o, &campaign, &spec).await?;
    let event = spec.conversion_event.clone();
    let (sent, sent_converted, holdout, holdout_converted) =
        o.store.run(move |db| Box::pin(async move { stored::campaign_conversions(db, id, &event).await })).await?;
    let lift = Lift::compute(&spec.conversion_event, sent as u64, sent_converted as u64, holdout as u64, holdout_converted as u64);
    Ok(Report { campaign, metrics, lift, deliveries, suppressed })
}

/// Running campaigns: pause on a crossed guardrail; complete when nothing is left to send.
pub async fn watch(o: &Outreach, now: Timestamp) -> anyhow::Result<()> {
    let running = o.store.run(|db| Box::pin(stored::campaigns_with_status(db, Status::Running))).await?;
    for c in running {
        let Ok(spec) = read_spec(&c.spec) else { continue };
        let (m, by_status, _) = metrics(o, &c, &spec).await?;
        let id = c.id;
        if let Some(why) = spec.guardrail.check(&m) {
            tracing::warn!(campaign = id, %why, "guardrail crossed: pausing");
            o.store
                .run(move |db| {
                    Box::pin(async move {
                        let change = StatusChange { status: Status::Paused, reason: Some(&why), next_run_at: None, actor: "guardrail", action: "pause" };
                        stored::set_status(db, id, change, now).await
                    })
                })
                .await?;
            continue;
        }
        // Blocks count for `block_window_days` after a touch: the campaign stays running
        // (and watched) that long after its last planned touch.
        let open = by_status.get("queued").copied().unwrap_or(0) + by_status.get("pending_staff").copied().unwrap_or(0);
        let watched_long_enough = now.0 - c.updated_at.0 >= spec.guardrail.block_window_days as i64 * 86_400_000;
        if open == 0 && watched_long_enough {
            o.store
                .run(move |db| {
                    Box::pin(async move {
                        let change = StatusChange { status: Status::Completed, reason: None, next_run_at: None, actor: "siyu", action: "complete" };
                        stored::set_status(db, id, change, now).await
                    })
                })
                .await?;
        }
    }
    Ok(())
}
