//! Starting and stopping the server: lock the data directory, open the store, settle
//! the write key and the admin token, build the segment engine, start ingest, the
//! membership reporter and the outreach runner, bind the listener; and on stop, the
//! same in reverse, so a restart has nothing to replay or report twice.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use siyu_core::Timestamp;
use siyu_engine::{Engine, LifecycleConfig, MembershipReport, Spec};
use siyu_store::ingest::{self, CommitObserver, Committed};
use siyu_store::{Store, StoreConfig, admin};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::http::auth::ADMIN_ROLE;
use crate::http::{App, AppState};
use crate::metrics::Metrics;
use crate::secrets::random_token;
use crate::state::Core;

#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub store: StoreConfig,
    /// Holds the ingest log (and, on the embedded default, the SQLite file).
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// `--write-key` / `SIYU_WRITE_KEY`; otherwise the one kept in the store.
    pub write_key: Option<String>,
    /// The client-side write key (default: the remembered one, or a new one).
    pub client_write_key: Option<String>,
    /// `SIYU_ADMIN_TOKEN`.
    pub admin_token: Option<String>,
    /// Timeouts and concurrency limits of the HTTP server.
    pub limits: crate::http::server::Limits,
}

pub struct Running {
    pub addr: SocketAddr,
    pub state: App,
    /// Set when this start generated the admin token; shown once, never stored in clear.
    pub generated_admin_token: Option<String>,
    /// Set when this start made the console's `admin` account with a generated
    /// password; shown once, only its argon2 hash is stored.
    pub generated_admin_password: Option<String>,
    /// Set when this start generated the write key.
    pub generated_write_key: bool,
    shutdown: Option<tokio::sync::watch::Sender<bool>>,
    server: JoinHandle<()>,
    background: Vec<JoinHandle<()>>,
    reporter: JoinHandle<()>,
    reporter_stop: CancellationToken,
    _lock: crate::datadir::DataDirLock,
}

impl Running {
    /// A clean stop: no new connections, in-flight requests and background work finish,
    /// the engine's last membership changes are reported, and ingest applies everything
    /// it acknowledged. The next start has nothing to replay.
    pub async fn stop(mut self) {
        if let Some(s) = self.shutdown.take() {
            let _ = s.send(true);
        }
        let _ = self.server.await;
        let state = &self.state;
        state.stop.cancel();
        for task in self.background.drain(..) {
            let _ = task.await;
        }
        state.tasks.close();
        state.tasks.wait().await;
        // What ingest acknowledged reaches the engine, which then reports its last changes.
        state.ingest.settle().await;
        state.engine.stop().await;
        self.reporter_stop.cancel();
        let _ = (&mut self.reporter).await;
        state.ingest.close().await;
        tracing::info!("stopped");
    }

    /// Serves until Ctrl-C or SIGTERM.
    pub async fn wait_for_signal(self) {
        shutdown_signal().await;
        tracing::info!("shutting down");
        self.stop().await;
    }
}

pub const WRITE_KEY_SETTING: &str = "write_key";
const CLIENT_WRITE_KEY_SETTING: &str = "client_write_key";

pub async fn start(opts: ServeOptions) -> anyhow::Result<Running> {
    let lock = crate::datadir::DataDirLock::acquire(&opts.data_dir)?;
    let store = Store::open(&opts.store).await.context("opening the store")?;
    // The analytics definitions (DATA_DIR/analytics.json, docs/analytics.md): a bad file
    // stops the start here, before anything runs.
    let analytics = Arc::new(siyu_store::analytics::Definitions::load(&opts.data_dir).context("loading the analytics definitions")?);
    let (write_key, generated_write_key) = settle_write_key(&store, WRITE_KEY_SETTING, opts.write_key, "wk_").await?;
    let (client_write_key, _) = settle_write_key(&store, CLIENT_WRITE_KEY_SETTING, opts.client_write_key, "wkc_").await?;
    if client_write_key == write_key {
        anyhow::bail!("the client write key must differ from the server write key (SIYU_CLIENT_WRITE_KEY and SIYU_WRITE_KEY): a client key is public");
    }
    let generated_admin_token = match &opts.admin_token {
        Some(_) => None,
        None => ensure_admin_token(&store).await?,
    };
    let admin_password = std::env::var("SIYU_ADMIN_PASSWORD").ok().filter(|p| !p.is_empty());
    let generated_admin_password = crate::http::console::session::ensure_admin_account(&store, admin_password).await?;
    let metrics = Arc::new(Metrics::default());
    // Membership reports become events once ingest is running.
    let (reports_tx, reports_rx) = tokio::sync::mpsc::unbounded_channel::<MembershipReport>();
    let engine = start_engine(&store, lifecycle_config(&opts.data_dir)?, reports_tx).await?;
    let observers: Vec<CommitObserver> = vec![count_commits(metrics.clone()), engine.observer()];
    let observers = ingest::Observers { acknowledged: vec![engine.acknowledged_observer()], committed: observers };
    let ingest = ingest::start(&store, &opts.data_dir.join("ingest-log"), observers).await.context("starting ingest")?;
    // After the log is replayed into the store: what was reported before is all there.
    let reporter = crate::membership::Reporter::load(store.clone(), ingest.clone(), engine.clock().clone()).await.context("loading reported membership")?;
    let reporter_stop = CancellationToken::new();
    let reporter = tokio::spawn(reporter.run(engine.clone(), reports_rx, reporter_stop.clone()));
    let stop = CancellationToken::new();
    let mut background = vec![tokio::spawn(minute_ticks(engine.clone(), stop.clone()))];
    let wecom = crate::wecom::WecomCallbacks::load(&opts.data_dir)?.map(Arc::new);
    let wecom_client = crate::wecom::client_of(wecom.as_ref());
    let tasks = TaskTracker::new();
    let core = Core { store, ingest, engine, tasks };
    let outreach = crate::outreach::Outreach::start(core.clone(), &opts.data_dir, wecom_client).await.context("starting outreach")?;
    background.push(tokio::spawn(crate::outreach::run(outreach.clone(), stop.clone())));
    let state = Arc::new(AppState { core, write_key, client_write_key, admin_token: opts.admin_token, metrics, outreach, wecom, stop, limits: opts.limits });

    let listener = tokio::net::TcpListener::bind(opts.listen).await.with_context(|| format!("listening on {}", opts.listen))?;
    let addr = listener.local_addr()?;
    let (shutdown, stopped) = tokio::sync::watch::channel(false);
    // The analytics definitions, on every request for the /api/v1/analytics routes.
    let router = crate::http::router(state.clone(), &opts.limits).layer(axum::Extension(analytics));
    let server = tokio::spawn(crate::http::server::serve(listener, router, opts.limits, stopped));
    lock.record_address(addr);
    tracing::info!(%addr, backend = ?state.store.backend(), "serving");
    Ok(Running {
        addr,
        state,
        generated_admin_token,
        generated_admin_password,
        generated_write_key,
        shutdown: Some(shutdown),
        server,
        background,
        reporter,
        reporter_stop,
        _lock: lock,
    })
}

/// Lifecycle thresholds: `lifecycle.json` in the data directory overrides any of the
/// defaults (see docs/segments.md); a missing file means the defaults.
pub fn lifecycle_config(data_dir: &std::path::Path) -> anyhow::Result<LifecycleConfig> {
    let path = data_dir.join("lifecycle.json");
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text).with_context(|| format!("reading lifecycle thresholds from {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(LifecycleConfig::default()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Builds the segment engine from the store, with a progress bar and the time it took.
async fn start_engine(store: &Store, lifecycle: LifecycleConfig, reports: tokio::sync::mpsc::UnboundedSender<MembershipReport>) -> anyhow::Result<Engine> {
    let started = std::time::Instant::now();
    let bar = ProgressBar::new_spinner();
    bar.set_style(ProgressStyle::with_template("{spinner} segment engine: indexing {msg}").expect("template"));
    let b = bar.clone();
    let progress = Box::new(move |what: &str, n: u64| {
        if n.is_multiple_of(20_000) {
            b.set_message(format!("{what} ({n})"));
            b.tick();
        }
    });
    let sink = Box::new(move |r: MembershipReport| {
        let _ = reports.send(r);
    });
    // Every campaign plan reads customers' own time zones: index them with the rest,
    // not in a second pass over the traits at the first campaign.
    let spec = Spec { traits: vec![crate::outreach::audience::TIMEZONE_TRAIT.to_string()], ..Spec::default() };
    let engine = Engine::start(store.clone(), lifecycle, spec, Timestamp::now(), progress, sink).await.context("building the segment engine")?;
    bar.finish_and_clear();
    let (profiles, memory, segments) = {
        let state = engine.read();
        (state.index.profiles(), state.index.memory(), state.segments.len())
    };
    tracing::info!(
        profiles,
        segments,
        seconds = format!("{:.2}", started.elapsed().as_secs_f64()),
        index_mib = memory.index_bytes / (1 << 20),
        events_mib = memory.event_bytes / (1 << 20),
        "segment engine ready"
    );
    Ok(engine)
}

/// Once a minute: time moves customers between stages and clock-dependent segments.
async fn minute_ticks(engine: Engine, stop: CancellationToken) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(60));
    every.tick().await;
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stop.cancelled() => return,
        }
        if tracing::Instrument::instrument(engine.tick(), tracing::info_span!("minute_tick")).await.is_err() {
            return;
        }
    }
}

/// Counts what the indexer applied, for `/metrics`.
fn count_commits(metrics: Arc<Metrics>) -> CommitObserver {
    Box::new(move |c: &Arc<Committed>| {
        for (_, o) in &c.messages {
            let counter = if o.failed {
                &metrics.messages_failed
            } else if o.is_duplicate() {
                &metrics.messages_duplicate
            } else {
                &metrics.messages_stored
            };
            counter.fetch_add(1, Ordering::Relaxed);
            metrics.profiles_created.fetch_add(u64::from(o.created), Ordering::Relaxed);
            metrics.profiles_merged.fetch_add(o.merged.len() as u64, Ordering::Relaxed);
        }
    })
}

/// A write key given on the command line wins and is remembered; otherwise the
/// remembered one; otherwise a new one.
async fn settle_write_key(store: &Store, setting: &'static str, given: Option<String>, prefix: &str) -> anyhow::Result<(String, bool)> {
    let stored = store.run(move |db| Box::pin(admin::get_setting(db, setting))).await?;
    let (key, generated) = match (given, stored) {
        (Some(k), _) => (k, false),
        (None, Some(k)) => (k, false),
        (None, None) => (random_token(prefix), true),
    };
    let k = key.clone();
    store.run(move |db| Box::pin(async move { admin::set_setting(db, setting, &k).await })).await?;
    Ok((key, generated))
}

/// With no admin token configured and none stored, makes one. Only its hash is kept.
async fn ensure_admin_token(store: &Store) -> anyhow::Result<Option<String>> {
    let existing = store.run(|db| Box::pin(admin::count_tokens(db, ADMIN_ROLE))).await?;
    if existing > 0 {
        return Ok(None);
    }
    let token = random_token("siyu_admin_");
    let t = token.clone();
    store.run(move |db| Box::pin(async move { admin::add_token(db, &t, ADMIN_ROLE, None, "generated at first start").await })).await?;
    Ok(Some(token))
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
