//! The journey runner. Each round it reads new events from the store (by id, with a
//! persisted cursor), takes customers off journeys whose exit event happened and puts
//! customers on journeys whose trigger happened, then advances every customer whose
//! wait is over. A customer's position is a row in `journey_states`, written with the
//! step's effects, so a restart resumes where it was and repeats nothing: every send
//! has an idempotency key per (journey, entry, step, customer).

use std::collections::{BTreeSet, HashMap};

use siyu_core::delivery::DeliveryStatus;
use siyu_core::rule::{Channel, Rule, parse};
use siyu_core::{ProfileId, Timestamp};
use siyu_engine::eval::eval_one;
use siyu_outreach::journey::{JourneySpec, Step, wake_after};
use siyu_outreach::plan::delivery_state;
use siyu_outreach::policy::{Facts, Touch, decide};
use siyu_outreach::quiet::zone;
use siyu_outreach::template::Template;
use siyu_store::outreach::{self as stored, JourneyRow, JourneyState, NewDelivery, NewTask};
use siyu_store::profiles;

use super::{Outreach, audience, render};

const CURSOR: &str = stored::JOURNEYS_CURSOR;
const EVENTS_PER_ROUND: i64 = 10_000;
/// Intake rounds per tick: enough to keep up with a busy ingest, bounded so sends and
/// tasks still get their turn every few seconds.
const ROUNDS_PER_TICK: usize = 10;
const STATES_PER_ROUND: i64 = 1000;

pub fn read_spec(value: &serde_json::Value) -> Result<JourneySpec, String> {
    let spec: JourneySpec = serde_json::from_value(value.clone()).map_err(|e| format!("journey: {e}"))?;
    spec.validate()?;
    for (i, step) in spec.steps.iter().enumerate() {
        if let Step::Branch { rule, .. } = step {
            branch_rule(rule).map_err(|e| format!("steps[{i}].branch.rule: {e}"))?;
        }
    }
    Ok(spec)
}

fn branch_rule(value: &serde_json::Value) -> Result<Rule, String> {
    match value {
        serde_json::Value::String(text) => parse(text),
        other => Rule::from_json(other),
    }
    .map_err(|e| e.to_string())
}

async fn enabled(o: &Outreach) -> anyhow::Result<Vec<(JourneyRow, JourneySpec)>> {
    let rows = o.store.run(|db| Box::pin(stored::list_journeys(db))).await?;
    Ok(rows
        .into_iter()
        .filter(|j| j.enabled)
        .filter_map(|j| match read_spec(&j.spec) {
            Ok(spec) => Some((j, spec)),
            Err(e) => {
                tracing::warn!(journey = j.id, error = %e, "journey definition is invalid; skipped");
                None
            }
        })
        .collect())
}

pub async fn tick(o: &Outreach, now: Timestamp) -> anyhow::Result<()> {
    let journeys = enabled(o).await?;
    if journeys.is_empty() {
        return Ok(());
    }
    intake(o, &journeys, now).await?;
    date_entries(o, &journeys, now).await?;
    advance_due(o, &journeys, now).await
}

/// Entries and exits from new events. A round is read and decided outside any write
/// transaction (only this runner, one round at a time, writes positions) and its
/// changes are written with the cursor in one short transaction, so ingest never waits
/// behind the runner's reading.
async fn intake(o: &Outreach, journeys: &[(JourneyRow, JourneySpec)], now: Timestamp) -> anyhow::Result<()> {
    let mut names: Vec<String> =
        journeys.iter().flat_map(|(_, s)| s.trigger.as_event().map(|e| e.event).into_iter().chain(s.exit_on.iter().map(|e| e.event.clone()))).collect();
    names.sort();
    names.dedup();
    let ids: Vec<i64> = journeys.iter().map(|(j, _)| j.id).collect();
    for _ in 0..ROUNDS_PER_TICK {
        let (names, ids) = (names.clone(), ids.clone());
        let (start, events, states, starts) = o
            .store
            .run(move |db| {
                Box::pin(async move {
                    // Set when the first journey was created (a data directory from
                    // before that has none: history does not trigger journeys).
                    let cursor = match stored::cursor_opt(db, CURSOR).await? {
                        Some(c) => c,
                        None => stored::max_event_id(db).await?,
                    };
                    let events = stored::events_after(db, cursor, &names, EVENTS_PER_ROUND).await?;
                    let mut profiles: Vec<ProfileId> = events.iter().map(|e| e.1).collect();
                    profiles.sort_unstable();
                    profiles.dedup();
                    let states = stored::states_of(db, &ids, &profiles).await?;
                    let mut starts = HashMap::new();
                    for id in &ids {
                        starts.insert(*id, stored::cursor(db, &stored::journey_start(*id)).await?);
                    }
                    Ok((cursor, events, states, starts))
                })
            })
            .await?;
        let mut positions: HashMap<(i64, ProfileId), JourneyState> = states.into_iter().map(|s| ((s.journey_id, s.profile_id), s)).collect();
        let mut changed = BTreeSet::new();
        for (event_id, profile, name, ts, payload) in &events {
            let props: serde_json::Value = serde_json::from_str(payload).unwrap_or(serde_json::Value::Null);
            // Imported history (a customer's guide brought in by `siyu import`) is not a
            // new event for journeys to greet.
            if props["source"] == "import" {
                continue;
            }
            for (j, spec) in journeys.iter().filter(|(j, _)| starts.get(&j.id).is_none_or(|from| event_id > from)) {
                let key = (j.id, *profile);
                let state = positions.get(&key).cloned();
                let active = state.as_ref().filter(|s| s.status == "active");
                let exits = matches!((&spec.exit_on, active), (Some(exit), Some(s)) if exit.matches(name, &props) && *ts >= s.entered_at);
                if exits {
                    positions.insert(key, JourneyState { status: "exited".into(), ..state.clone().expect("active") });
                    changed.insert(key);
                }
                if let Some(entered) = entry(j.id, spec, *profile, name, &props, state.as_ref(), now, exits) {
                    positions.insert(key, entered);
                    changed.insert(key);
                }
            }
        }
        let last = events.last().map_or(start, |e| e.0);
        let writes: Vec<JourneyState> = changed.iter().map(|k| positions[k].clone()).collect();
        o.store
            .transaction(move |db| {
                Box::pin(async move {
                    for s in &writes {
                        stored::save_state(db, s, now).await?;
                    }
                    stored::set_cursor(db, CURSOR, last).await
                })
            })
            .await?;
        if (events.len() as i64) < EVENTS_PER_ROUND {
            break;
        }
    }
    Ok(())
}

/// The customer's new position if the event is the journey's trigger and re-entry
/// allows it; `None` leaves the position as it is.
#[allow(clippy::too_many_arguments)]
fn entry(
    journey: i64,
    spec: &JourneySpec,
    profile: ProfileId,
    name: &str,
    props: &serde_json::Value,
    state: Option<&JourneyState>,
    now: Timestamp,
    just_exited: bool,
) -> Option<JourneyState> {
    if !spec.trigger.as_event().is_some_and(|t| t.matches(name, props)) {
        return None;
    }
    enter(journey, spec, profile, state, now, just_exited)
}

/// Puts the customer (back) on the journey unless they are on it or re-entry forbids.
fn enter(journey: i64, spec: &JourneySpec, profile: ProfileId, state: Option<&JourneyState>, now: Timestamp, just_exited: bool) -> Option<JourneyState> {
    if state.is_some_and(|s| s.status == "active" && !just_exited) {
        return None;
    }
    if !spec.reentry.allows(state.map(|s| s.entered_at), now) {
        return None;
    }
    let entry = state.map(|s| s.entry).unwrap_or(0) + 1;
    Some(JourneyState { journey_id: journey, profile_id: profile, entry, step: 0, status: "active".into(), wake_at: now, entered_at: now })
}

/// Date triggers: once per day (in the brand's zone, Asia/Shanghai), customers whose
/// trait date matches today enter.
async fn date_entries(o: &Outreach, journeys: &[(JourneyRow, JourneySpec)], now: Timestamp) -> anyhow::Result<()> {
    use chrono::Datelike;
    let today = now.to_datetime().with_timezone(&zone(None)).date_naive();
    let day_number = today.num_days_from_ce() as i64;
    for (j, spec) in journeys {
        let siyu_outreach::journey::Trigger::Date(trigger) = &spec.trigger else { continue };
        let cursor = format!("journey:{}:day", j.id);
        let c = cursor.clone();
        if o.store.run(move |db| Box::pin(async move { stored::cursor(db, &c).await })).await? >= day_number {
            continue;
        }
        let rule = parse(&format!("{} exists", trigger.trait_name)).map_err(|e| anyhow::anyhow!("date trigger trait: {e}"))?;
        let having = o.engine.evaluate(&rule, now).await?;
        let entering: Vec<ProfileId> = {
            let st = o.engine.read();
            having
                .iter()
                .filter(|&p| st.index.trait_value(&trigger.trait_name, p).and_then(|v| v.as_str()).is_some_and(|v| trigger.matches(v, today)))
                .map(ProfileId::from_bit)
                .collect()
        };
        let jid = j.id;
        let (entering, states) = o.store.run(move |db| Box::pin(async move { stored::states_of(db, &[jid], &entering).await.map(|s| (entering, s)) })).await?;
        let positions: HashMap<ProfileId, JourneyState> = states.into_iter().map(|s| (s.profile_id, s)).collect();
        let writes: Vec<JourneyState> = entering.iter().filter_map(|p| enter(jid, spec, *p, positions.get(p), now, false)).collect();
        o.store
            .transaction(move |db| {
                Box::pin(async move {
                    for s in &writes {
                        stored::save_state(db, s, now).await?;
                    }
                    stored::set_cursor(db, &cursor, day_number).await
                })
            })
            .await?;
    }
    Ok(())
}

/// Advances every customer whose wait is over.
async fn advance_due(o: &Outreach, journeys: &[(JourneyRow, JourneySpec)], now: Timestamp) -> anyhow::Result<()> {
    let due = o.store.run(move |db| Box::pin(stored::due_states(db, now, STATES_PER_ROUND))).await?;
    for state in due {
        let Some((_, spec)) = journeys.iter().find(|(j, _)| j.id == state.journey_id) else { continue };
        if let Err(e) = advance(o, spec, state.clone(), now).await {
            tracing::warn!(journey = state.journey_id, profile = %state.profile_id, error = %e, "journey step failed; retried next round");
        }
    }
    Ok(())
}

/// Runs steps until the customer waits, exits or finishes. Each step's effect and the
/// new position are saved together.
async fn advance(o: &Outreach, spec: &JourneySpec, mut state: JourneyState, now: Timestamp) -> anyhow::Result<()> {
    let p = state.profile_id;
    loop {
        let Some(step) = spec.steps.get(state.step as usize) else {
            state.status = "completed".into();
            return save(o, state, now).await;
        };
        let key = format!("journey:{}:{}:{}:{}", state.journey_id, state.entry, state.step, p);
        state.step += 1;
        match step {
            Step::Wait { .. } | Step::WaitUntil { .. } => {
                let guide = audience::guide_of(o, p.bit()).await?;
                let guide_zone = guide.as_ref().map(|(_, z)| *z).unwrap_or_else(|| zone(None));
                let z = audience::customer_zone(o, p.bit(), guide_zone, now).await?;
                state.wake_at = wake_after(step, now, z).unwrap_or(now);
                return save(o, state, now).await;
            }
            Step::Branch { rule, then, otherwise } => {
                let rule = branch_rule(rule).map_err(|e| anyhow::anyhow!(e))?;
                o.engine.evaluate(&rule, now).await?; // indexes what the rule needs
                let yes = {
                    let st = o.engine.read();
                    eval_one(&st.cx(now), &rule, p.bit())
                };
                let target = if yes { *then } else { *otherwise };
                if let Some(t) = target {
                    state.step = t as i64;
                }
            }
            Step::Send { channel, content, kind } => {
                send(o, &state, &key, *channel, content, *kind, now).await?;
            }
            Step::Tag { add, remove } => {
                let (a, r) = (add.clone(), remove.clone());
                o.store
                    .run(move |db| {
                        Box::pin(async move {
                            if let Some(t) = &a {
                                profiles::add_tag(db, p, t, "journey", now).await?;
                            }
                            if let Some(t) = &r {
                                profiles::remove_tag(db, p, t).await?;
                            }
                            Ok(())
                        })
                    })
                    .await?;
                for (tag, on) in add.iter().map(|t| (t, true)).chain(remove.iter().map(|t| (t, false))) {
                    o.engine.set_tag(p.bit(), tag, on);
                    o.tasks.spawn(crate::wecom::tags::push(o.store.clone(), o.wecom.clone(), p, tag.clone(), on));
                }
            }
            Step::Coupon { code } => {
                // The loyalty work turns this event into a real coupon; the message id
                // makes it once per step whatever restarts happen.
                let props = serde_json::json!({ "code": crate::content::coupon_code(code, &key), "journey_id": state.journey_id });
                o.ingest.submit(vec![siyu_core::Message::internal(p, "Coupon Issued", key.clone(), props, now)]).await?;
            }
            Step::Task { title, content, deadline_hours } => {
                task(o, &state, &key, title, content, *deadline_hours, now).await?;
            }
            Step::Exit => {
                state.status = "exited".into();
                return save(o, state, now).await;
            }
        }
        save(o, state.clone(), now).await?;
    }
}

async fn save(o: &Outreach, state: JourneyState, now: Timestamp) -> anyhow::Result<()> {
    o.store.run(move |db| Box::pin(async move { stored::save_state(db, &state, now).await })).await?;
    Ok(())
}

async fn recorded(o: &Outreach, key: &str) -> anyhow::Result<bool> {
    let key = key.to_string();
    Ok(o.store
        .run(move |db| Box::pin(async move { Ok(db.query_opt("SELECT 1 FROM deliveries WHERE key = $1", siyu_store::params![&key]).await?.is_some()) }))
        .await?)
}

/// A journey touch through the same policy and ledger as campaigns.
async fn send(
    o: &Outreach,
    state: &JourneyState,
    key: &str,
    channel: Channel,
    content: &str,
    kind: siyu_outreach::TouchKind,
    now: Timestamp,
) -> anyhow::Result<()> {
    let p = state.profile_id;
    if recorded(o, key).await? {
        return Ok(()); // done before a restart
    }
    let (consent, recently_blocked, guide, guide_zone, z) = audience::facts_of(o, p.bit(), channel, now).await?;
    let template = Template::parse(content).map_err(|e| anyhow::anyhow!("{e}"))?;
    let text = render::render_many(o, &template, None, &[(p, guide.clone(), key.to_string())]).await?.pop().unwrap_or_default();
    let mut ledger = o.ledger.lock().await;
    let source = format!("journey:{}", state.journey_id);
    let touch = Touch { profile: p.bit(), channel, kind, now, source: &source, holdout_percent: 0.0 };
    let f = Facts { consent, recently_blocked, zone: z, guide_zone, guide: guide.as_deref() };
    let decision = decide(o.policy(), &touch, &f, &mut ledger);
    let (status, reason, due) = delivery_state(&decision, channel, now);
    let row = NewDelivery {
        key: key.to_string(),
        profile_id: p,
        campaign_id: None,
        journey_id: Some(state.journey_id),
        channel,
        kind,
        status,
        reason: Some(reason.into()),
        guide: guide.clone(),
        task_id: None,
        content: Some(text),
        created_at: now,
        due_at: due,
    };
    let journey = state.journey_id;
    let result = o
        .store
        .transaction(move |db| {
            Box::pin(async move {
                let mut row = row;
                if row.status == DeliveryStatus::PendingStaff
                    && let Some(g) = &row.guide
                {
                    let deadline = Timestamp(due.0 + 24 * 3_600_000);
                    let task =
                        stored::create_task(db, NewTask { campaign_id: None, journey_id: Some(journey), guide: g, title: "journey message", deadline }, now)
                            .await?;
                    row.task_id = Some(task);
                }
                stored::insert_deliveries(db, &[row]).await
            })
        })
        .await;
    o.keep_ledger_true(ledger, result).await?;
    Ok(())
}

/// A task for the customer's guide, with the rendered note as its one item.
async fn task(o: &Outreach, state: &JourneyState, key: &str, title: &str, content: &str, deadline_hours: u32, now: Timestamp) -> anyhow::Result<()> {
    let p = state.profile_id;
    if recorded(o, key).await? {
        return Ok(());
    }
    let Some((guide, _)) = audience::guide_of(o, p.bit()).await? else {
        tracing::info!(profile = %p, "journey task skipped: the customer has no guide");
        return Ok(());
    };
    let template = Template::parse(content).map_err(|e| anyhow::anyhow!("{e}"))?;
    let text = render::render_many(o, &template, None, &[(p, Some(guide.clone()), key.to_string())]).await?.pop().unwrap_or_default();
    let (key, title, journey) = (key.to_string(), title.to_string(), state.journey_id);
    o.store
        .transaction(move |db| {
            Box::pin(async move {
                let deadline = Timestamp(now.0 + deadline_hours as i64 * 3_600_000);
                let task =
                    stored::create_task(db, NewTask { campaign_id: None, journey_id: Some(journey), guide: &guide, title: &title, deadline }, now).await?;
                let row = NewDelivery {
                    key,
                    profile_id: p,
                    campaign_id: None,
                    journey_id: Some(journey),
                    channel: Channel::Wecom,
                    kind: siyu_core::delivery::TouchKind::Service,
                    status: DeliveryStatus::PendingStaff,
                    reason: None,
                    guide: Some(guide.clone()),
                    task_id: Some(task),
                    content: Some(text),
                    created_at: now,
                    due_at: now,
                };
                stored::insert_deliveries(db, &[row]).await.map(|_| ())
            })
        })
        .await?;
    Ok(())
}
