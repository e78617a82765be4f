//! Durable ingest with group commit.
//!
//! HTTP handlers validate a request, hand its messages to the one writer and wait.
//! The writer takes every request that is queued, applies them all in one transaction
//! and commits once (one fsync for the group), then acknowledges each request. A
//! request is acknowledged only after its commit, so a 200 means durable; and a group
//! is never split, so a crash loses either nothing acknowledged or a whole unacked group.

use serde_json::{Map, Value as Json};
use siyu_core::{Message, MessageKind, ProfileId, Timestamp};
use tokio::sync::{mpsc, oneshot};

use crate::resolve::{resolve, Resolution};
use crate::sql::Db;
use crate::sqlite::{ConnRole, SqliteDb};
use crate::{counters, params, Store, StoreError};

/// What happened to one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// `None` when the message was a duplicate (its `messageId` was seen before).
    pub profile_id: Option<ProfileId>,
    pub created: bool,
    pub merged: Vec<ProfileId>,
}

impl Outcome {
    pub fn is_duplicate(&self) -> bool {
        self.profile_id.is_none()
    }
}

/// Everything one committed group changed, for whoever keeps derived state (the
/// segment engine) up to date.
#[derive(Debug, Clone)]
pub struct Committed {
    pub messages: Vec<(Message, Outcome)>,
}

/// Stores one message in the open transaction.
pub async fn apply(db: &mut dyn Db, msg: &Message) -> Result<Outcome, StoreError> {
    let fresh = db
        .execute(
            "INSERT INTO message_ids (message_id, received_at) VALUES ($1, $2) ON CONFLICT (message_id) DO NOTHING",
            params![&msg.message_id, msg.received_at.0],
        )
        .await?;
    if fresh == 0 {
        return Ok(Outcome { profile_id: None, created: false, merged: Vec::new() });
    }
    let Resolution { profile_id, created, merged } = resolve(db, msg).await?;
    db.execute(
        "INSERT INTO events (profile_id, message_id, kind, name, ts, received_at, user_id, anonymous_id, payload, context)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        params![
            profile_id,
            &msg.message_id,
            msg.kind.as_str(),
            &msg.event,
            msg.timestamp.0,
            msg.received_at.0,
            &msg.user_id,
            &msg.anonymous_id,
            &msg.payload,
            &msg.context,
        ],
    )
    .await?;
    if !created {
        db.execute(
            "UPDATE profiles SET
                first_seen = CASE WHEN $2 < first_seen THEN $2 ELSE first_seen END,
                last_seen = CASE WHEN $2 > last_seen THEN $2 ELSE last_seen END
              WHERE id = $1",
            params![profile_id, msg.timestamp.0],
        )
        .await?;
    }
    for (key, value) in &msg.traits {
        set_trait(db, profile_id, key, value, msg.timestamp).await?;
    }
    if msg.kind == MessageKind::Track {
        apply_relationship(db, profile_id, msg).await?;
    }
    Ok(Outcome { profile_id: Some(profile_id), created, merged })
}

/// Sets a trait unless a newer value is already stored: latest timestamp wins, whatever
/// order the events arrive in.
pub async fn set_trait(db: &mut dyn Db, profile: ProfileId, key: &str, value: &Json, ts: Timestamp) -> Result<(), StoreError> {
    let text = serde_json::to_string(value).unwrap_or_else(|_| "null".into());
    db.execute(
        "INSERT INTO traits (profile_id, key, value, updated_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (profile_id, key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at
         WHERE excluded.updated_at >= traits.updated_at",
        params![profile, key, &text, ts.0],
    )
    .await?;
    Ok(())
}

/// `Contact Added` / `Contact Deleted` keep the guide–customer relationships current.
/// The guide is `properties.staff_userid` (or `userid`), as WeCom callbacks name them.
async fn apply_relationship(db: &mut dyn Db, profile: ProfileId, msg: &Message) -> Result<(), StoreError> {
    let adds = match msg.event.as_deref() {
        Some("Contact Added") => true,
        Some("Contact Deleted") => false,
        _ => return Ok(()),
    };
    let props: Map<String, Json> = serde_json::from_str(&msg.payload).unwrap_or_default();
    let staff = ["staff_userid", "userid", "staff_id"].iter().find_map(|k| props.get(*k).and_then(Json::as_str));
    let Some(staff) = staff else { return Ok(()) };
    if adds {
        let state = props.get("state").and_then(Json::as_str);
        db.execute(
            "INSERT INTO staff_customers (profile_id, staff_userid, status, added_at, removed_at, state)
             VALUES ($1, $2, 'active', $3, NULL, $4)
             ON CONFLICT (profile_id, staff_userid) DO UPDATE
                SET status = 'active', added_at = excluded.added_at, removed_at = NULL,
                    state = COALESCE(excluded.state, staff_customers.state)
              WHERE excluded.added_at >= staff_customers.added_at",
            params![profile, staff, msg.timestamp.0, state],
        )
        .await?;
    } else {
        db.execute(
            "UPDATE staff_customers SET status = 'deleted', removed_at = $3
              WHERE profile_id = $1 AND staff_userid = $2 AND added_at <= $3",
            params![profile, staff, msg.timestamp.0],
        )
        .await?;
    }
    Ok(())
}

/// Applies a whole group in one transaction.
async fn apply_group(db: &mut dyn Db, group: &[Pending]) -> Result<Vec<Vec<Outcome>>, StoreError> {
    db.begin().await?;
    let result = async {
        let mut all = Vec::with_capacity(group.len());
        let mut stored = 0;
        for pending in group {
            let mut outcomes = Vec::with_capacity(pending.messages.len());
            for msg in &pending.messages {
                let o = apply(db, msg).await?;
                stored += i64::from(!o.is_duplicate());
                outcomes.push(o);
            }
            all.push(outcomes);
        }
        counters::add(db, counters::EVENTS, stored).await?;
        Ok(all)
    }
    .await;
    match result {
        Ok(all) => {
            db.commit().await?;
            Ok(all)
        }
        Err(e) => {
            db.rollback().await.ok();
            Err(e)
        }
    }
}

struct Pending {
    messages: Vec<Message>,
    ack: oneshot::Sender<Result<Vec<Outcome>, StoreError>>,
}

/// The most messages one group commits; more wait for the next group.
const MAX_GROUP_MESSAGES: usize = 20_000;
/// Requests waiting for the writer before senders are slowed down.
const QUEUE_DEPTH: usize = 4_096;

/// Hands messages to the writer. Cheap to clone.
#[derive(Clone)]
pub struct IngestHandle {
    queue: mpsc::Sender<Pending>,
}

impl IngestHandle {
    /// Stores the messages durably; returns once they are committed.
    pub async fn submit(&self, messages: Vec<Message>) -> Result<Vec<Outcome>, StoreError> {
        let (ack, done) = oneshot::channel();
        self.queue.send(Pending { messages, ack }).await.map_err(|_| StoreError::WriterStopped)?;
        done.await.map_err(|_| StoreError::WriterStopped)?
    }
}

/// Receives every committed group, in commit order.
pub type CommitObserver = Box<dyn Fn(Committed) + Send + Sync>;

/// Starts the writer for this store: its own thread and connection for SQLite, a
/// task and a dedicated connection for PostgreSQL.
pub async fn spawn_writer(store: &Store, observer: Option<CommitObserver>) -> Result<IngestHandle, StoreError> {
    let (queue, rx) = mpsc::channel(QUEUE_DEPTH);
    if let Some(path) = store.sqlite_path() {
        let mut db = SqliteDb::open(path, ConnRole::Writer)?;
        std::thread::Builder::new()
            .name("ingest-writer".into())
            .spawn(move || futures::executor::block_on(writer_loop(&mut db, rx, observer)))
            .map_err(|e| StoreError::Io(e.to_string()))?;
    } else if let Some(pool) = store.pg_pool() {
        let mut db = crate::postgres::PgDb::new(pool.acquire().await?);
        tokio::spawn(async move { writer_loop(&mut db, rx, observer).await });
    }
    Ok(IngestHandle { queue })
}

async fn writer_loop(db: &mut dyn Db, mut rx: mpsc::Receiver<Pending>, observer: Option<CommitObserver>) {
    while let Some(first) = rx.recv().await {
        let mut size = first.messages.len();
        let mut group = vec![first];
        while size < MAX_GROUP_MESSAGES {
            match rx.try_recv() {
                Ok(p) => {
                    size += p.messages.len();
                    group.push(p);
                }
                Err(_) => break,
            }
        }
        commit_group(db, group, observer.as_ref()).await;
    }
}

async fn commit_group(db: &mut dyn Db, group: Vec<Pending>, observer: Option<&CommitObserver>) {
    match apply_group(db, &group).await {
        Ok(outcomes) => finish(group, outcomes, observer),
        Err(e) if group.len() == 1 => {
            tracing::error!(error = %e, "ingest commit failed");
            let _ = group.into_iter().next().map(|p| p.ack.send(Err(e)));
        }
        Err(e) => {
            // One bad request must not fail the others: retry each on its own.
            tracing::warn!(error = %e, requests = group.len(), "group commit failed; retrying requests one by one");
            for pending in group {
                match apply_group(db, std::slice::from_ref(&pending)).await {
                    Ok(outcomes) => finish(vec![pending], outcomes, observer),
                    Err(e) => {
                        tracing::error!(error = %e, "ingest commit failed");
                        let _ = pending.ack.send(Err(e));
                    }
                }
            }
        }
    }
}

fn finish(group: Vec<Pending>, outcomes: Vec<Vec<Outcome>>, observer: Option<&CommitObserver>) {
    let mut committed = observer.map(|_| Committed { messages: Vec::new() });
    for (pending, outcomes) in group.into_iter().zip(outcomes) {
        if let Some(c) = committed.as_mut() {
            c.messages.extend(pending.messages.into_iter().zip(outcomes.iter().cloned()));
        }
        let _ = pending.ack.send(Ok(outcomes));
    }
    if let (Some(observe), Some(c)) = (observer, committed) {
        observe(c);
    }
}
