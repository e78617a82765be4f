//! Siyu's segment engine: "which customers?" answered in milliseconds over millions of
//! profiles, and kept live as events arrive.
//!
//! - [`index`]: the columnar in-memory index (bitmaps, columns, event series);
//! - [`eval`]: rules as bitmap operations and column scans;
//! - [`segments`]: named live segments and their entered/exited changes;
//! - [`lifecycle`]: stages, RFM and the four highs;
//! - [`load`] / [`build`]: building the index from a store snapshot or from rows;
//! - [`source`] / [`ingest`]: what the engine reads (the store implements them).
//!
//! One engine thread applies every change in order (ingest batches, lazy index builds,
//! tags, segment definitions, the minute tick); readers evaluate under a read lock.

pub mod build;
pub mod early;
pub mod eval;
pub mod index;
pub mod ingest;
pub mod leads;
pub mod lifecycle;
pub mod load;
pub mod scan;
pub mod segments;
pub mod series;
pub mod source;
pub mod time;
pub mod traits;

use std::collections::HashSet;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, mpsc};

use base64::Engine as _;
use roaring::RoaringBitmap;
use siyu_core::Timestamp;
use siyu_core::rule::Rule;
use tokio::sync::oneshot;

pub use build::Spec;
pub use eval::Missing;
pub use index::{Index, Lifecycle, MemoryUse};
pub use ingest::{AcknowledgedBatch, Applied, CommittedBatch};
pub use lifecycle::LifecycleConfig;
pub use segments::{MembershipChange, MembershipReport, SegmentDef, Segments};
pub use source::{IndexSource, SavedSegment, SourceError};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("{0}")]
    Define(#[from] segments::DefineError),
    #[error("{0}")]
    Missing(Missing),
    #[error("the segment engine has stopped")]
    Stopped,
}

/// What the engine holds: the index and the segments over it.
pub struct State {
    pub index: Index,
    pub segments: Segments,
}

impl State {
    pub fn cx(&self, now: Timestamp) -> eval::Cx<'_> {
        eval::Cx { index: &self.index, segments: &self.segments, now }
    }

    /// The members of a rule, if everything it needs is indexed.
    pub fn evaluate(&self, rule: &Rule, now: Timestamp) -> Result<RoaringBitmap, Missing> {
        if let Some(m) = eval::missing(&self.index, &self.segments, rule).into_iter().next() {
            return Err(m);
        }
        Ok(eval::eval_all(&self.cx(now), rule, None))
    }
}

/// Where membership reports go (the server turns them into events).
pub type ChangeSink = Box<dyn Fn(MembershipReport) + Send>;

/// The engine's notion of now: the wall clock, moved forward by an offset that tests
/// (and a demo's "time travel") can set. Every evaluation and tick reads this one clock.
#[derive(Clone, Default)]
pub struct Clock(Arc<AtomicI64>);

impl Clock {
    pub fn now(&self) -> Timestamp {
        Timestamp(Timestamp::now().0 + self.0.load(Ordering::Relaxed))
    }

    pub fn advance(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::Relaxed);
    }
}

enum Command {
    Acknowledged(Arc<dyn AcknowledgedBatch>),
    Apply(Arc<dyn CommittedBatch>),
    Ensure(Vec<Missing>, oneshot::Sender<Result<(), EngineError>>),
    Tag(u32, String, bool),
    Define(SegmentDef, oneshot::Sender<Result<u64, EngineError>>),
    Remove(String, oneshot::Sender<Result<(), EngineError>>),
    Tick(oneshot::Sender<()>),
    Sync(oneshot::Sender<()>),
    ReportCurrent,
    Stop(oneshot::Sender<()>),
}

#[derive(Clone)]
pub struct Engine {
    state: Arc<RwLock<State>>,
    commands: mpsc::Sender<Command>,
    clock: Clock,
    feed: Arc<Feed>,
}

/// Messages handed to the engine thread and not yet applied, at most [`FEED_LIMIT`]:
/// past it, whoever hands more (the ingest appender and indexer) waits, so memory
/// stays bounded however far the engine falls behind.
const FEED_LIMIT: usize = 400_000;

#[derive(Default)]
struct Feed {
    queued: std::sync::Mutex<usize>,
    freed: std::sync::Condvar,
    /// The engine thread has stopped: nothing waits for it any more.
    closed: std::sync::atomic::AtomicBool,
}

impl Feed {
    /// Waits until `n` more messages fit (one batch always fits an empty feed). Ingest
    /// calls this from async tasks: a wait moves the task's worker thread out of the
    /// runtime's pool first, so the rest of the server (and the engine's own store
    /// reads) keep running while the feed drains.
    fn take(&self, n: usize) {
        let full = |queued: usize| queued > 0 && queued + n > FEED_LIMIT;
        {
            let mut queued = self.queued.lock().expect("feed lock");
            if !full(*queued) || self.closed.load(Ordering::Acquire) {
                *queued += n;
                return;
            }
        }
        let wait = || {
            let mut queued = self.queued.lock().expect("feed lock");
            while full(*queued) && !self.closed.load(Ordering::Acquire) {
                queued = self.freed.wait(queued).expect("feed lock");
            }
            *queued += n;
        };
        match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(wait),
            _ => wait(),
        }
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.freed.notify_all();
    }

    fn give_back(&self, n: usize) {
        let mut queued = self.queued.lock().expect("feed lock");
        *queued = queued.saturating_sub(n);
        self.freed.notify_all();
    }
}

/// Segment definitions with references first, so each can be defined in turn.
fn in_dependency_order(defs: Vec<SegmentDef>) -> Vec<SegmentDef> {
    let mut pending = defs;
    let mut out: Vec<SegmentDef> = Vec::new();
    while !pending.is_empty() {
        let before = pending.len();
        let (ready, rest): (Vec<_>, Vec<_>) =
            pending.into_iter().partition(|d| d.rule.segment_refs().iter().all(|r| r == &d.name || out.iter().any(|o| &o.name == r)));
        out.extend(ready);
        pending = rest;
        if pending.len() == before {
            // Dangling references: define them anyway; the definition will say why not.
            out.extend(pending);
            break;
        }
    }
    out
}

impl Engine {
    /// Loads the index from the source (the store) and defines the saved segments, then
    /// starts the engine thread. (What changed while Siyu was down is found by whoever
    /// keeps the reported membership: see [`Engine::report_current`].)
    pub async fn start(
        source: impl IndexSource,
        config: LifecycleConfig,
        mut spec: Spec,
        now: Timestamp,
        progress: load::Progress,
        sink: ChangeSink,
    ) -> Result<Engine, EngineError> {
        let saved = source.saved_segments().await?;
        let mut defs = Vec::new();
        for s in saved {
            match Rule::from_json(&s.rule) {
                Ok(rule) => {
                    rule.visit(&mut |r| match r {
                        Rule::Field(siyu_core::rule::FieldPredicate { field: siyu_core::rule::Field::Trait(t), .. }) => spec.traits.push(t.clone()),
                        Rule::Aggregate(a) => spec.series.push(eval::series_key(a)),
                        _ => {}
                    });
                    defs.push(SegmentDef { name: s.name, rule });
                }
                Err(e) => tracing::error!(segment = %s.name, error = %e, "stored segment rule is invalid; skipped"),
            }
        }
        let index = load::load(&source, config, spec, now, progress).await?;
        let mut state = State { index, segments: Segments::default() };
        for def in in_dependency_order(defs) {
            let name = def.name.clone();
            if let Err(e) = state.segments.define(&state.index, def, now) {
                tracing::error!(segment = %name, error = %e, "stored segment cannot be defined");
            }
        }
        Ok(Engine::from_state(state, Some(Arc::new(source)), sink))
    }

    /// An engine over an index built elsewhere (the benchmark builds one in memory).
    pub fn from_state(state: State, source: Option<Arc<dyn IndexSource>>, sink: ChangeSink) -> Engine {
        let state = Arc::new(RwLock::new(state));
        let (commands, rx) = mpsc::channel();
        let clock = Clock::default();
        let feed = Arc::new(Feed::default());
        let worker =
            Worker { feed: feed.clone(), state: state.clone(), source, sink, runtime: tokio::runtime::Handle::try_current().ok(), clock: clock.clone() };
        std::thread::Builder::new()
            .name("segment-engine".into())
            .spawn(move || {
                let feed = worker.feed.clone();
                // A panic here would leave the index half-changed behind poisoned locks:
                // stop the whole process instead, loudly. A restart rebuilds the index
                // from the store and replays the ingest log; nothing acknowledged is lost.
                if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || worker.run(rx))) {
                    let what = panic.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| panic.downcast_ref::<String>().cloned()).unwrap_or_default();
                    tracing::error!(panic = %what, "the segment engine failed; stopping Siyu (restart it: nothing acknowledged is lost)");
                    eprintln!("error: the segment engine failed ({what}); stopping");
                    feed.close();
                    std::process::exit(70);
                }
            })
            .expect("engine thread");
        Engine { state, commands, clock, feed }
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    pub fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().expect("engine lock")
    }

    /// Feeds the engine every committed ingest batch (the ingest pipeline's commit
    /// observer: `C` is its batch type).
    pub fn observer<C: CommittedBatch + 'static>(&self) -> Box<dyn Fn(&Arc<C>) + Send + Sync> {
        let (tx, feed) = (self.commands.clone(), self.feed.clone());
        Box::new(move |c: &Arc<C>| {
            feed.take(c.len());
            if tx.send(Command::Apply(c.clone())).is_err() {
                feed.give_back(c.len());
            }
        })
    }

    /// Feeds the engine every acknowledged message, so a known customer's events count
    /// before the store has applied them (see [`early`]).
    pub fn acknowledged_observer<A: AcknowledgedBatch + 'static>(&self) -> Box<dyn Fn(Arc<A>) + Send> {
        let (tx, feed) = (self.commands.clone(), self.feed.clone());
        Box::new(move |a: Arc<A>| {
            let n = a.messages().len();
            feed.take(n);
            if tx.send(Command::Acknowledged(a)).is_err() {
                feed.give_back(n);
            }
        })
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, EngineError> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(make(tx)).map_err(|_| EngineError::Stopped)?;
        rx.await.map_err(|_| EngineError::Stopped)
    }

    /// Builds whatever the rule needs that is not indexed yet (a trait or an aggregate
    /// first used now), then evaluates it.
    pub async fn evaluate(&self, rule: &Rule, now: Timestamp) -> Result<RoaringBitmap, EngineError> {
        loop {
            let missing = {
                let state = self.read();
                match state.evaluate(rule, now) {
                    Ok(members) => return Ok(members),
                    Err(_) => eval::missing(&state.index, &state.segments, rule),
                }
            };
            if let Some(Missing::Segment(s)) = missing.iter().find(|m| matches!(m, Missing::Segment(_))) {
                return Err(EngineError::Missing(Missing::Segment(s.clone())));
            }
            self.ask(|tx| Command::Ensure(missing, tx)).await??;
        }
    }

    pub async fn define(&self, def: SegmentDef) -> Result<u64, EngineError> {
        // Index what it needs first, so the definition never waits on the store.
        {
            let missing = {
                let state = self.read();
                eval::missing(&state.index, &state.segments, &def.rule)
            };
            let not_segments: Vec<Missing> = missing.into_iter().filter(|m| !matches!(m, Missing::Segment(_))).collect();
            if !not_segments.is_empty() {
                self.ask(|tx| Command::Ensure(not_segments, tx)).await??;
            }
        }
        self.ask(|tx| Command::Define(def, tx)).await?
    }

    pub async fn remove(&self, name: &str) -> Result<(), EngineError> {
        self.ask(|tx| Command::Remove(name.to_string(), tx)).await?
    }

    pub fn set_tag(&self, profile: u32, tag: &str, on: bool) {
        let _ = self.commands.send(Command::Tag(profile, tag.to_string(), on));
    }

    /// Time passes: lifecycle, RFM boundaries and clock-dependent segments move.
    pub async fn tick(&self) -> Result<(), EngineError> {
        self.ask(Command::Tick).await
    }

    /// Waits until everything sent to the engine before is applied.
    pub async fn sync(&self) -> Result<(), EngineError> {
        self.ask(Command::Sync).await
    }

    /// Reports every segment's members ([`MembershipReport::Current`]) to the sink, in
    /// order with the changes: what was reported before it is included, what after is not.
    pub fn report_current(&self) {
        let _ = self.commands.send(Command::ReportCurrent);
    }

    /// Stops the engine thread once everything sent before is applied; later calls
    /// find it stopped.
    pub async fn stop(&self) {
        let _ = self.ask(Command::Stop).await;
    }
}

pub fn encode_members(members: &RoaringBitmap) -> String {
    let mut bytes = Vec::with_capacity(members.serialized_size());
    members.serialize_into(&mut bytes).expect("in-memory write");
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub fn decode_members(text: &str) -> RoaringBitmap {
    base64::engine::general_purpose::STANDARD.decode(text).ok().and_then(|b| RoaringBitmap::deserialize_from(&b[..]).ok()).unwrap_or_default()
}

struct Worker {
    feed: Arc<Feed>,
    state: Arc<RwLock<State>>,
    source: Option<Arc<dyn IndexSource>>,
    sink: ChangeSink,
    runtime: Option<tokio::runtime::Handle>,
    clock: Clock,
}

impl Worker {
    fn run(mut self, rx: mpsc::Receiver<Command>) {
        while let Ok(cmd) = rx.recv() {
            match cmd {
                Command::Acknowledged(a) => {
                    self.acknowledged(&*a);
                    self.feed.give_back(a.messages().len());
                }
                Command::Apply(c) => {
                    self.apply(&*c);
                    self.feed.give_back(c.len());
                }
                Command::Ensure(missing, reply) => {
                    let _ = reply.send(self.ensure(missing));
                }
                Command::Tag(p, tag, on) => {
                    let mut state = self.state.write().expect("engine lock");
                    state.index.set_tag(p, &tag, on);
                    let now = self.clock.now();
                    let State { index, segments } = &mut *state;
                    let changes = segments.update_profiles(index, &HashSet::from([p]), now);
                    drop(state);
                    self.emit(changes);
                }
                Command::Define(def, reply) => {
                    let mut state = self.state.write().expect("engine lock");
                    let State { index, segments } = &mut *state;
                    let result = segments.define(index, def, self.clock.now()).map(|s| (s.def.name.clone(), s.def.rule.to_string(), s.members.clone()));
                    drop(state);
                    let _ = reply.send(match result {
                        Ok((segment, rule, members)) => {
                            let n = members.len();
                            (self.sink)(MembershipReport::Defined { segment, rule, members });
                            Ok(n)
                        }
                        Err(e) => Err(e.into()),
                    });
                }
                Command::Remove(name, reply) => {
                    let result = self.state.write().expect("engine lock").segments.remove(&name);
                    if result.is_ok() {
                        (self.sink)(MembershipReport::Removed(name));
                    }
                    let _ = reply.send(result.map_err(EngineError::from));
                }
                Command::ReportCurrent => {
                    let current = self.state.read().expect("engine lock").segments.current();
                    (self.sink)(MembershipReport::Current(current));
                }
                Command::Stop(reply) => {
                    self.feed.close();
                    let _ = reply.send(());
                    return;
                }
                Command::Tick(reply) => {
                    self.tick(self.clock.now());
                    let _ = reply.send(());
                }
                Command::Sync(reply) => {
                    let _ = reply.send(());
                }
            }
        }
    }

    fn block_on<T>(&self, f: impl std::future::Future<Output = T>) -> Option<T> {
        self.runtime.as_ref().map(|rt| rt.block_on(f))
    }

    fn apply(&mut self, c: &dyn CommittedBatch) {
        let now = self.clock.now();
        // Guide relationships follow the store's rules (timestamps, repeats): re-read
        // them for the profiles whose contact status this batch changed.
        let contacts = Index::guide_changes(c);
        let guides = match (&self.source, contacts.is_empty()) {
            (Some(source), false) => self.block_on(source.guides_of(contacts)).and_then(|r| r.ok()),
            _ => None,
        };
        let mut state = self.state.write().expect("engine lock");
        let mut touched = state.index.apply(c, now);
        for (p, g) in guides.into_iter().flatten() {
            state.index.set_guides(p, &g);
            state.index.recompute_lifecycle(p, now);
            touched.insert(p);
        }
        let State { index, segments } = &mut *state;
        let changes = segments.update_profiles(index, &touched, now);
        drop(state);
        self.emit(changes);
    }

    fn acknowledged(&mut self, a: &dyn AcknowledgedBatch) {
        let now = self.clock.now();
        let mut state = self.state.write().expect("engine lock");
        let touched = state.index.apply_acknowledged(a, now);
        if touched.is_empty() {
            return;
        }
        let State { index, segments } = &mut *state;
        let changes = segments.update_profiles(index, &touched, now);
        drop(state);
        self.emit(changes);
    }

    fn ensure(&mut self, missing: Vec<Missing>) -> Result<(), EngineError> {
        let Some(source) = self.source.clone() else {
            return Err(EngineError::Missing(missing.into_iter().next().expect("something missing")));
        };
        for m in missing {
            match m {
                Missing::Trait(t) => {
                    let started = std::time::Instant::now();
                    let (column, seq) = self.block_on(load::load_trait(&*source, &t)).ok_or(EngineError::Stopped)??;
                    tracing::info!(trait_name = %t, seconds = started.elapsed().as_secs_f64(), "indexed a trait");
                    self.state.write().expect("engine lock").index.install_trait_at(&t, column, seq);
                }
                Missing::Series(key) => {
                    let started = std::time::Instant::now();
                    let (series, seq) = self.block_on(load::load_series(&*source, key.clone(), self.clock.now())).ok_or(EngineError::Stopped)??;
                    tracing::info!(aggregate = %key.id(), seconds = started.elapsed().as_secs_f64(), "indexed an aggregate");
                    self.state.write().expect("engine lock").index.install_series_at(key, series, seq);
                }
                Missing::Segment(s) => return Err(EngineError::Missing(Missing::Segment(s))),
            }
        }
        Ok(())
    }

    fn tick(&mut self, now: Timestamp) {
        // Read before taking the lock: readers never wait on the store.
        let org = self.source.as_ref().and_then(|source| self.block_on(source.org())).and_then(Result::ok);
        let mut state = self.state.write().expect("engine lock");
        if let Some(org) = org {
            state.index.set_org(org);
        }
        state.index.refresh_lifecycle(now);
        let State { index, segments } = &mut *state;
        let changes = segments.refresh_time(index, now);
        drop(state);
        self.emit(changes);
    }

    fn emit(&self, changes: Vec<MembershipChange>) {
        if !changes.is_empty() {
            (self.sink)(MembershipReport::Changes(changes));
        }
    }
}
