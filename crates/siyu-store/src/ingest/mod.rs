//! Durable ingest: sources → ingest log → indexer → store.
//!
//! A tracking request is validated by the HTTP layer and handed to the **appender**,
//! which writes every queued request to the [`log`] and makes them durable with one
//! fdatasync (group commit), then acknowledges each: a 200 means the messages survive a
//! `kill -9` or a power cut. The **indexer** applies logged messages to the store in
//! large transactions, recording the last applied sequence number in the same
//! transaction; on start, whatever the store has not applied is replayed. So nothing
//! acknowledged is lost, and nothing is applied twice (and a retried messageId is
//! stored once: see [`apply`]).
//!
//! Large index batches are what make ingest fast: a batch of 20,000 events rewrites
//! each touched index page once, where per-request commits would rewrite it per event.

pub mod apply;
pub mod log;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use siyu_core::{Message, Timestamp};
use tokio::sync::{mpsc, oneshot, watch};

use crate::resolve::IdentityCache;
pub use apply::{Outcome, apply, apply_all, set_trait};
use log::{IngestLog, LogPrefetch};

use crate::sql::{Db, finish};
use crate::sqlite::{ConnRole, SqliteDb};
use crate::{Store, StoreError, counters, params};

/// The most messages one index transaction applies: large enough that each index page
/// is rewritten once for many events, small enough to keep profiles fresh.
const MAX_INDEX_BATCH: usize = 50_000;
/// The most messages one log sync covers.
const MAX_APPEND_GROUP: usize = 50_000;
/// Requests waiting for the appender before senders wait.
const QUEUE_DEPTH: usize = 4_096;
/// Messages handed to the indexer in memory, at most. Past this the appender drops its
/// copy and the indexer reads those messages back from the log: acknowledgements never
/// wait for indexing, and memory stays bounded however far indexing falls behind.
/// Counted in messages, not groups: under load groups are small and frequent, and a
/// feed of a few groups would push the indexer to re-read (and re-parse) the log just
/// when it has least time for it.
const MAX_FEED_MESSAGES: usize = 200_000;
/// Groups in the feed; the message count above is the real bound.
const INDEX_QUEUE_DEPTH: usize = 65_536;

/// Everything one index transaction applied, in log order, for whoever keeps derived
/// state (metrics, the segment engine) up to date.
pub struct Committed {
    pub messages: Vec<(Message, Outcome)>,
    /// The last log sequence number applied.
    pub last_seq: u64,
}

impl Committed {
    /// The log sequence number of `messages[i]`: a batch is a contiguous run of the log.
    pub fn seq_of(&self, i: usize) -> u64 {
        self.last_seq + 1 + i as u64 - self.messages.len() as u64
    }
}

pub type CommitObserver = Box<dyn Fn(&Arc<Committed>) + Send + Sync>;

/// Messages just made durable, in log order, before the store has applied them: for
/// derived state that can act on some of them at once (the segment engine applies a
/// known customer's event without waiting for the store).
pub struct Acknowledged {
    pub first_seq: u64,
    pub messages: Vec<Message>,
}

pub type AckObserver = Box<dyn Fn(Arc<Acknowledged>) + Send>;

/// Who hears about messages: once acknowledged (in log order, always before the same
/// messages are committed) and once committed.
#[derive(Default)]
pub struct Observers {
    pub acknowledged: Vec<AckObserver>,
    pub committed: Vec<CommitObserver>,
}

impl From<Vec<CommitObserver>> for Observers {
    fn from(committed: Vec<CommitObserver>) -> Self {
        Observers { acknowledged: Vec::new(), committed }
    }
}

/// Where a request's messages landed in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Receipt {
    /// Sequence number of the request's last message.
    pub last_seq: u64,
}

struct Pending {
    messages: Vec<Message>,
    ack: oneshot::Sender<Result<Receipt, StoreError>>,
}

/// What the appender is asked to do, in order.
enum Queued {
    Append(Pending),
    /// Stop after everything queued before: the indexer then applies what is logged
    /// and stops too.
    Close,
}

struct Progress {
    appended: AtomicU64,
    indexed: watch::Sender<u64>,
    /// Set when a log sync failed: the file's state is unknown, so nothing more is
    /// acknowledged until a restart replays the log.
    log_failed: AtomicBool,
    /// Messages in the in-memory feed to the indexer.
    in_feed: AtomicUsize,
    feed_limit: usize,
    /// Set once the indexer has stopped (after [`IngestHandle::close`]).
    indexer_stopped: watch::Sender<bool>,
}

/// Hands messages to the pipeline. Cheap to clone.
#[derive(Clone)]
pub struct IngestHandle {
    queue: mpsc::Sender<Queued>,
    progress: Arc<Progress>,
}

impl IngestHandle {
    /// Makes the messages durable in the ingest log; returns once they are.
    pub async fn submit(&self, messages: Vec<Message>) -> Result<Receipt, StoreError> {
        if messages.is_empty() {
            return Ok(Receipt { last_seq: self.appended() });
        }
        let (ack, done) = oneshot::channel();
        self.queue.send(Queued::Append(Pending { messages, ack })).await.map_err(|_| StoreError::WriterStopped)?;
        done.await.map_err(|_| StoreError::WriterStopped)?
    }

    /// Stops taking messages, and returns once everything acknowledged before is
    /// applied to the store and the appender and indexer have stopped (a clean
    /// shutdown: the next start has nothing to replay). Later submissions fail.
    pub async fn close(&self) {
        let _ = self.queue.send(Queued::Close).await;
        let mut stopped = self.progress.indexer_stopped.subscribe();
        let _ = stopped.wait_for(|s| *s).await;
    }

    /// The last durable sequence number.
    pub fn appended(&self) -> u64 {
        self.progress.appended.load(Ordering::Acquire)
    }

    /// The last sequence number applied to the store.
    pub fn indexed(&self) -> u64 {
        *self.progress.indexed.borrow()
    }

    /// Waits until the store has applied everything up to `seq`.
    pub async fn wait_indexed(&self, seq: u64) {
        let mut rx = self.progress.indexed.subscribe();
        let _ = rx.wait_for(|applied| *applied >= seq).await;
    }

    /// Waits until everything acknowledged so far is in the store.
    pub async fn settle(&self) {
        self.wait_indexed(self.appended()).await
    }

    /// [`IngestHandle::submit`], then wait until the store has applied the messages.
    pub async fn submit_and_apply(&self, messages: Vec<Message>) -> Result<Receipt, StoreError> {
        let receipt = self.submit(messages).await?;
        self.wait_indexed(receipt.last_seq).await;
        Ok(receipt)
    }
}

/// How the pipeline is sized.
#[derive(Debug, Clone, Copy)]
pub struct IngestOptions {
    /// Messages handed to the indexer in memory, at most (see [`MAX_FEED_MESSAGES`]).
    pub feed_messages: usize,
}

impl Default for IngestOptions {
    fn default() -> Self {
        IngestOptions { feed_messages: MAX_FEED_MESSAGES }
    }
}

/// Opens the log in `log_dir`, replays what the store has not applied, and starts the
/// appender and the indexer.
pub async fn start(store: &Store, log_dir: &Path, observers: impl Into<Observers>) -> Result<IngestHandle, StoreError> {
    start_with(store, log_dir, observers, IngestOptions::default()).await
}

/// [`start`] with other sizes (tests make the indexer read from the log).
pub async fn start_with(store: &Store, log_dir: &Path, observers: impl Into<Observers>, options: IngestOptions) -> Result<IngestHandle, StoreError> {
    let Observers { mut acknowledged, committed: observers } = observers.into();
    let applied = store.run(|db| Box::pin(counters::get(db, counters::INGEST_APPLIED_SEQ))).await? as u64;
    let log = IngestLog::open(log_dir, applied)?;
    let appended = log.next_seq() - 1;
    if appended > applied {
        tracing::info!(messages = appended - applied, from = applied + 1, "replaying the ingest log into the store");
        // Acknowledged before the crash: observers hear of them as of any other, in
        // order and before anything new; a chunk at a time, so a long backlog is never
        // in memory at once. (The indexer reads them back from the log itself.)
        let dir = log_dir.to_path_buf();
        let observers = std::mem::take(&mut acknowledged);
        acknowledged = tokio::task::spawn_blocking(move || tell_replayed(&dir, applied + 1, appended, observers))
            .await
            .map_err(|e| StoreError::Io(format!("replay task: {e}")))??;
    }
    let (indexed, _) = watch::channel(applied);
    let progress = Arc::new(Progress {
        appended: AtomicU64::new(appended),
        indexed,
        log_failed: AtomicBool::new(false),
        in_feed: AtomicUsize::new(0),
        feed_limit: options.feed_messages,
        indexer_stopped: watch::channel(false).0,
    });

    let (to_indexer, index_rx) = mpsc::channel::<Vec<(u64, Message)>>(INDEX_QUEUE_DEPTH);
    let indexer = Indexer {
        progress: progress.clone(),
        observers,
        log_dir: log_dir.to_path_buf(),
        next: applied + 1,
        prefetch: None,
        backend: store.backend(),
        identities: IdentityCache::default(),
    };
    if let Some(path) = store.sqlite_path() {
        let mut db = SqliteDb::open(path, ConnRole::Writer)?;
        crate::sqlite::spawn_checkpointer(path.to_path_buf())?;
        std::thread::Builder::new()
            .name("ingest-indexer".into())
            .spawn(move || futures::executor::block_on(indexer.run(&mut db, index_rx)))
            .map_err(|e| StoreError::Io(e.to_string()))?;
    } else if let Some(pool) = store.pg_pool() {
        let mut db = crate::postgres::PgDb::new(pool.acquire().await?);
        tokio::spawn(async move { indexer.run(&mut db, index_rx).await });
    }

    let (queue, rx) = mpsc::channel(QUEUE_DEPTH);
    let p = progress.clone();
    std::thread::Builder::new()
        .name("ingest-appender".into())
        .spawn(move || append_loop(log, rx, to_indexer, p, acknowledged))
        .map_err(|e| StoreError::Io(e.to_string()))?;
    Ok(IngestHandle { queue, progress })
}

fn append_loop(
    mut log: IngestLog,
    mut rx: mpsc::Receiver<Queued>,
    to_indexer: mpsc::Sender<Vec<(u64, Message)>>,
    progress: Arc<Progress>,
    observers: Vec<AckObserver>,
) {
    let mut closing = false;
    while !closing {
        let first = match rx.blocking_recv() {
            Some(Queued::Append(p)) => p,
            Some(Queued::Close) | None => break,
        };
        let mut size = first.messages.len();
        let mut group = vec![first];
        while size < MAX_APPEND_GROUP {
            match rx.try_recv() {
                Ok(Queued::Append(p)) => {
                    size += p.messages.len();
                    group.push(p);
                }
                Ok(Queued::Close) => {
                    closing = true;
                    break;
                }
                Err(_) => break,
            }
        }
        if progress.log_failed.load(Ordering::Acquire) {
            for p in group {
                let _ = p.ack.send(Err(StoreError::Io("the ingest log failed earlier; restart Siyu".into())));
            }
            continue;
        }
        match append_group(&mut log, &group) {
            Ok(receipts) => {
                // Published before any acknowledgement, so whoever holds an ack can wait on it.
                if let Some((_, last)) = receipts.last() {
                    progress.appended.store(last.last_seq, Ordering::Release);
                }
                let mut entries = Vec::with_capacity(size);
                let mut seq = receipts.first().map(|(first, _)| *first).unwrap_or(0);
                for (pending, (_, receipt)) in group.into_iter().zip(receipts) {
                    let _ = pending.ack.send(Ok(receipt));
                    for m in pending.messages {
                        entries.push((seq, m));
                        seq += 1;
                    }
                }
                let n = entries.len();
                // Before the indexer sees them: so observers always hear of a message
                // acknowledged before they hear it committed.
                tell_acknowledged(&observers, &entries);
                // The indexer is far behind: it reads these from the log. (Only while the
                // feed holds something: that wakes an indexer waiting for the feed.)
                let in_feed = progress.in_feed.load(Ordering::Acquire);
                if in_feed > 0 && in_feed + n > progress.feed_limit {
                    continue;
                }
                progress.in_feed.fetch_add(n, Ordering::AcqRel);
                match to_indexer.try_send(entries) {
                    Ok(()) => {}
                    // The indexer is behind: it will read these from the log.
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        progress.in_feed.fetch_sub(n, Ordering::AcqRel);
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => {
                        tracing::error!("the indexer stopped; acknowledged messages stay in the ingest log for the next start");
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "ingest log write failed; refusing further messages until restart");
                progress.log_failed.store(true, Ordering::Release);
                for p in group {
                    let _ = p.ack.send(Err(StoreError::Io(e.to_string())));
                }
            }
        }
    }
}

/// Tells observers of the records `from..=until` of the log, a batch at a time.
fn tell_replayed(dir: &Path, from: u64, until: u64, observers: Vec<AckObserver>) -> Result<Vec<AckObserver>, StoreError> {
    if observers.is_empty() {
        return Ok(observers);
    }
    let mut reader = log::LogReader::new(dir, from);
    while reader.next_seq() <= until {
        let chunk = reader.read(until, MAX_INDEX_BATCH)?;
        if chunk.is_empty() {
            break;
        }
        tell_acknowledged(&observers, &chunk);
    }
    Ok(observers)
}

/// Hands observers a copy of acknowledged log entries (a contiguous run).
fn tell_acknowledged(observers: &[AckObserver], entries: &[(u64, Message)]) {
    let Some((first_seq, _)) = entries.first() else { return };
    if observers.is_empty() {
        return;
    }
    let acked = Arc::new(Acknowledged { first_seq: *first_seq, messages: entries.iter().map(|(_, m)| m.clone()).collect() });
    for observe in observers {
        observe(acked.clone());
    }
}

/// Appends and syncs a group; per request, (first seq, receipt).
fn append_group(log: &mut IngestLog, group: &[Pending]) -> Result<Vec<(u64, Receipt)>, StoreError> {
    let mut receipts = Vec::with_capacity(group.len());
    for pending in group {
        let first = log.next_seq();
        let mut last = first;
        for m in &pending.messages {
            last = log.append(m)?;
        }
        receipts.push((first, Receipt { last_seq: last }));
    }
    log.sync()?;
    Ok(receipts)
}

struct Indexer {
    progress: Arc<Progress>,
    observers: Vec<CommitObserver>,
    log_dir: PathBuf,
    /// The next sequence number to apply.
    next: u64,
    /// Reads back messages the in-memory feed dropped.
    prefetch: Option<LogPrefetch>,
    backend: crate::Backend,
    identities: IdentityCache,
}

impl Indexer {
    async fn run(mut self, db: &mut dyn Db, mut rx: mpsc::Receiver<Vec<(u64, Message)>>) {
        loop {
            let t0 = std::time::Instant::now();
            let batch = match self.next_batch(&mut rx).await {
                Some(b) => b,
                None => {
                    self.progress.indexer_stopped.send_replace(true);
                    return;
                }
            };
            if batch.is_empty() {
                continue;
            }
            let t1 = std::time::Instant::now();
            let last_seq = batch.last().map(|(s, _)| *s).unwrap_or(0);
            let outcomes = self.apply_until_done(db, &batch).await;
            tracing::debug!(messages = batch.len(), wait_ms = (t1 - t0).as_millis() as u64, apply_ms = t1.elapsed().as_millis() as u64, "index batch");
            self.next = last_seq + 1;
            let committed = Arc::new(Committed { messages: batch.into_iter().map(|(_, m)| m).zip(outcomes).collect(), last_seq });
            // Observers first: whoever waits for `indexed` then also sees their effects
            // (the metrics counters, the command that updates the segment engine).
            for observe in &self.observers {
                observe(&committed);
            }
            self.progress.indexed.send_replace(last_seq);
            if let Err(e) = log::remove_applied(&self.log_dir, last_seq) {
                tracing::warn!(error = %e, "could not remove applied ingest-log segments");
            }
        }
    }

    /// The next messages to apply, in log order from `self.next`: from memory when the
    /// feed kept up, from the log when it did not. `None` once the pipeline is shut down.
    async fn next_batch(&mut self, rx: &mut mpsc::Receiver<Vec<(u64, Message)>>) -> Option<Vec<(u64, Message)>> {
        let mut batch = Vec::new();
        drain(rx, &mut batch);
        let appended = self.progress.appended.load(Ordering::Acquire);
        if batch.is_empty() && appended < self.next {
            batch = rx.recv().await?;
            drain(rx, &mut batch);
        }
        self.progress.in_feed.fetch_sub(batch.len(), Ordering::AcqRel);
        batch.retain(|(seq, _)| *seq >= self.next);
        // Groups the appender dropped leave holes; what follows a hole is read from the
        // log on a later pass, in order.
        if let Some((first, _)) = batch.first() {
            let first = *first;
            let contiguous = batch.iter().enumerate().take_while(|(i, (seq, _))| *seq == first + *i as u64).count();
            batch.truncate(contiguous);
        }
        let appended = self.progress.appended.load(Ordering::Acquire);
        let gap_until = match batch.first() {
            Some((first, _)) if *first > self.next => Some(first - 1),
            None if appended >= self.next => Some(appended),
            _ => None,
        };
        let Some(until) = gap_until else { return Some(batch) };
        let prefetch = match &mut self.prefetch {
            Some(p) => p,
            None => match LogPrefetch::start(&self.log_dir) {
                Ok(p) => self.prefetch.insert(p),
                Err(e) => return Some(self.log_failed(e).await),
            },
        };
        match prefetch.read(self.next, until, MAX_INDEX_BATCH) {
            Ok(mut from_log) => {
                let last = from_log.last().map(|(s, _)| *s);
                // A full batch from the log means more waits there: read the next
                // while this one is applied.
                if let (Some(last), true) = (last, from_log.len() == MAX_INDEX_BATCH) {
                    let appended = self.progress.appended.load(Ordering::Acquire);
                    if appended > last {
                        prefetch.ahead(last + 1, appended, MAX_INDEX_BATCH);
                    }
                }
                // The in-memory messages follow only if the gap was read in full.
                if last == Some(until) {
                    from_log.extend(batch);
                }
                Some(from_log)
            }
            Err(e) => Some(self.log_failed(e).await),
        }
    }

    async fn log_failed(&mut self, e: StoreError) -> Vec<(u64, Message)> {
        tracing::error!(error = %e, "reading the ingest log failed; retrying");
        self.prefetch = None;
        pause(self.backend, Duration::from_secs(1)).await;
        Vec::new()
    }

    /// Applies a batch; a store outage is waited out (the messages are safe in the log).
    async fn apply_until_done(&mut self, db: &mut dyn Db, batch: &[(u64, Message)]) -> Vec<Outcome> {
        let mut delay = Duration::from_millis(100);
        loop {
            match apply_batch(db, batch, Some(&mut self.identities)).await {
                Ok(outcomes) => return outcomes,
                Err(e) => {
                    self.identities.clear();
                    tracing::warn!(error = %e, messages = batch.len(), "index batch failed; isolating messages");
                }
            }
            match apply_isolated(db, batch).await {
                Ok(outcomes) => return outcomes,
                Err(e) => {
                    tracing::error!(error = %e, retry_in = ?delay, "the store is failing; ingest is paused, acknowledged messages wait in the log");
                    pause(db.backend(), delay).await;
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
            }
        }
    }
}

/// Takes whatever the feed holds, up to a batch. The batch grows once to what the feed
/// holds rather than by doubling: each doubling of a batch of thousands of messages
/// faulted in fresh memory (2% of the indexer's time).
fn drain(rx: &mut mpsc::Receiver<Vec<(u64, Message)>>, batch: &mut Vec<(u64, Message)>) {
    while batch.len() < MAX_INDEX_BATCH {
        match rx.try_recv() {
            Ok(more) if batch.is_empty() => *batch = more,
            Ok(more) => {
                let expected = batch.len() + more.len() * (rx.len() + 1);
                batch.reserve(expected.min(MAX_INDEX_BATCH).saturating_sub(batch.len()).max(more.len()));
                batch.extend(more)
            }
            Err(_) => break,
        }
    }
}

/// Waits without holding up other work: the SQLite indexer has its own thread; the
/// PostgreSQL one is a task on the runtime.
async fn pause(backend: crate::Backend, delay: Duration) {
    match backend {
        crate::Backend::Sqlite => std::thread::sleep(delay),
        crate::Backend::Postgres => tokio::time::sleep(delay).await,
    }
}

/// One transaction for the whole batch.
async fn apply_batch(db: &mut dyn Db, batch: &[(u64, Message)], mut cache: Option<&mut IdentityCache>) -> Result<Vec<Outcome>, StoreError> {
    db.begin().await?;
    let result = async {
        if let Some(c) = cache.as_deref_mut() {
            c.check(db).await?;
        }
        let messages: Vec<&Message> = batch.iter().map(|(_, m)| m).collect();
        let outcomes = apply_all(db, &messages, cache.as_deref_mut()).await?;
        let stored = outcomes.iter().filter(|o| !o.is_duplicate()).count() as i64;
        counters::add(db, counters::EVENTS, stored).await?;
        if let Some((last, _)) = batch.last() {
            counters::set(db, counters::INGEST_APPLIED_SEQ, *last as i64).await?;
        }
        Ok(outcomes)
    }
    .await;
    finish(db, result).await
}

/// One transaction per message; a message that still fails is set aside in
/// `ingest_failures` with its error, so one bad record cannot stop ingest.
async fn apply_isolated(db: &mut dyn Db, batch: &[(u64, Message)]) -> Result<Vec<Outcome>, StoreError> {
    let mut outcomes = Vec::with_capacity(batch.len());
    for (seq, msg) in batch {
        match apply_batch(db, std::slice::from_ref(&(*seq, msg.clone())), None).await {
            Ok(mut o) => outcomes.push(o.remove(0)),
            Err(e) => {
                tracing::error!(seq, message_id = %msg.message_id, error = %e, "message set aside in ingest_failures");
                let text = serde_json::to_string(msg).unwrap_or_default();
                db.begin().await?;
                let result = async {
                    db.execute(
                        "INSERT INTO ingest_failures (seq, message_id, error, message, failed_at) VALUES ($1, $2, $3, $4, $5)
                         ON CONFLICT (seq) DO NOTHING",
                        params![*seq as i64, &msg.message_id, &e.to_string(), &text, Timestamp::now().0],
                    )
                    .await?;
                    counters::set(db, counters::INGEST_APPLIED_SEQ, *seq as i64).await
                }
                .await;
                finish(db, result).await?;
                outcomes.push(Outcome { profile_id: None, created: false, merged: Vec::new(), attached: Vec::new(), failed: true });
            }
        }
    }
    Ok(outcomes)
}
