//! `siyu` subcommands, one file each.

pub mod admin_client;
pub mod campaign;
pub mod demo;
pub mod import;
pub mod segment;
pub mod token;
pub mod wecom_sim;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use siyu_store::StoreConfig;

use siyu_server::app::{self, ServeOptions};

#[derive(Parser)]
#[command(name = "siyu", version, about = "Siyu: self-hosted private-domain operations (私域运营).")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone, Debug)]
pub struct StoreArgs {
    /// Directory of the embedded SQLite store.
    #[arg(long, env = "SIYU_DATA_DIR", default_value = "siyu-data")]
    pub data_dir: PathBuf,
    /// Use PostgreSQL instead: postgres://user@host:5432/db
    #[arg(long, env = "SIYU_DATABASE_URL")]
    pub database_url: Option<String>,
}

impl StoreArgs {
    pub fn config(&self) -> StoreConfig {
        StoreConfig::from_args(&self.data_dir, self.database_url.as_deref())
    }

    pub fn describe(&self) -> String {
        match self.config() {
            StoreConfig::Sqlite { data_dir } => format!("SQLite, {}", data_dir.join(siyu_store::sqlite::DB_FILE).display()),
            StoreConfig::Postgres { .. } => "PostgreSQL".to_string(),
        }
    }
}

#[derive(Args, Clone, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Address to listen on.
    #[arg(long, env = "SIYU_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// The tracking API's write key (default: the remembered one, or a new one).
    #[arg(long, env = "SIYU_WRITE_KEY", hide_env_values = true)]
    pub write_key: Option<String>,
    /// The write key for client-side SDKs (web, mini programs), which embed it in public
    /// code: it cannot change relationships, give consent or attribute customers to staff.
    #[arg(long, env = "SIYU_CLIENT_WRITE_KEY", hide_env_values = true)]
    pub client_write_key: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the tracking API, the admin API and the console.
    Serve(ServeArgs),
    /// Create a realistic demo brand (a coffee chain) and serve it.
    Demo(demo::DemoArgs),
    /// Import customers, events, stores or staff from CSV or JSON lines.
    Import(ImportArgs),
    /// Count the customers a rule selects: siyu segment 'city = "Shanghai" and count(Order Completed, 30d) >= 2'
    Segment(segment::SegmentArgs),
    /// Campaigns on a running server: siyu campaign preview ID
    Campaign(campaign::CampaignArgs),
    /// API tokens on a running server: siyu token create --staff USERID
    Token(token::TokenArgs),
    /// A WeCom simulator (the API endpoints Siyu uses, and customer callbacks).
    WecomSim(wecom_sim::WecomSimArgs),
    /// Benchmarks that print the figures the issues ask for (the `siyu-bench` binary
    /// beside this one): siyu bench ingest|segments|outreach --help
    #[command(disable_help_flag = true)]
    Bench {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

#[derive(Args)]
struct ImportArgs {
    /// What the file holds.
    kind: import::ImportKind,
    /// A .csv file with a header row, or a .jsonl file with one JSON object per line.
    file: PathBuf,
    #[command(flatten)]
    store: StoreArgs,
    /// Import nothing if any row is invalid (default: skip invalid rows and report them).
    #[arg(long)]
    strict: bool,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    siyu_server::process::init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: could not start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve(args) => serve(args).await,
            Command::Demo(args) => demo::run(args).await,
            Command::Import(args) => import(args).await,
            Command::Segment(args) => segment::run(args).await,
            Command::Campaign(args) => campaign::run(args).await,
            Command::Token(args) => token::run(args).await,
            Command::WecomSim(args) => wecom_sim::run(args).await,
            Command::Bench { args } => bench(args),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the benchmarks' own binary, `siyu-bench`, built beside this one: the server
/// binary carries no benchmark code.
fn bench(args: Vec<String>) -> anyhow::Result<ExitCode> {
    let bench =
        siyu_server::process::sibling_binary("siyu-bench", "the benchmarks are a binary of their own; build it with `cargo build --release -p siyu-bench`")?;
    let status = std::process::Command::new(&bench).args(&args).status().map_err(|e| anyhow::anyhow!("running {}: {e}", bench.display()))?;
    Ok(siyu_server::process::exit_code_of(status))
}

/// `SIYU_ADMIN_TOKEN` is read from the environment only, never from a flag, so it
/// does not show up in process listings.
pub fn admin_token_from_env() -> Option<String> {
    std::env::var("SIYU_ADMIN_TOKEN").ok().filter(|t| !t.trim().is_empty())
}

async fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let running = app::start(ServeOptions {
        store: args.store.config(),
        data_dir: args.store.data_dir.clone(),
        listen: args.listen,
        write_key: args.write_key.clone(),
        client_write_key: args.client_write_key.clone(),
        admin_token: admin_token_from_env(),
        limits: siyu_server::http::server::Limits::from_env(),
    })
    .await?;
    print_banner(&running, &args.store.describe(), None);
    running.wait_for_signal().await;
    Ok(ExitCode::SUCCESS)
}

/// Imports into the server running on the data directory, through its APIs, so its
/// segment engine sees the rows at once (a direct import would reach only the store).
async fn import_through(server: &str, args: ImportArgs) -> anyhow::Result<ExitCode> {
    eprintln!("A Siyu server is running on this data directory ({server}): importing through it.");
    let write_key = match std::env::var("SIYU_WRITE_KEY").ok().filter(|k| !k.trim().is_empty()) {
        Some(k) => k,
        None => {
            let store = siyu_store::Store::open(&args.store.config()).await?;
            let key = store.run(|db| Box::pin(siyu_store::admin::get_setting(db, app::WRITE_KEY_SETTING))).await?;
            key.ok_or_else(|| anyhow::anyhow!("the server's write key is not in the store; set SIYU_WRITE_KEY"))?
        }
    };
    let token = admin_token_from_env();
    let report = import::through_server(server, &write_key, token.as_deref(), args.kind, &args.file, args.strict).await?;
    report.print(&args.file);
    println!("  (sent through the running server: rows already imported before are stored once)");
    Ok(if report.errors.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(2) })
}

/// What a person needs to reach a running Siyu.
pub fn print_banner(running: &app::Running, store: &str, admin_token: Option<&str>) {
    let url = format!("http://{}", running.addr);
    println!("Siyu is serving on {url} ({store})");
    println!("  tracking API write key (server side: your backend, imports): {}", running.state.write_key);
    println!("  client write key (web and mini-program SDKs): {}", running.state.client_write_key);
    match admin_token.or(running.generated_admin_token.as_deref()) {
        Some(token) => println!("  admin token (shown once; keep it): {token}"),
        None if running.state.admin_token.is_some() => println!("  admin token: the one in SIYU_ADMIN_TOKEN"),
        None => println!("  admin token: the one printed at first start (or set SIYU_ADMIN_TOKEN)"),
    }
    match &running.generated_admin_password {
        Some(password) => println!("  console: {url}/console   sign in as admin / {password} (shown once; keep it)"),
        None => println!("  console: {url}/console   (sign in as admin with the password printed when the account was made)"),
    }
    println!("  API reference: {url}/api/openapi.json   metrics: {url}/metrics");
}

async fn import(args: ImportArgs) -> anyhow::Result<ExitCode> {
    if let Some(server) = siyu_server::datadir::running_server(&args.store.data_dir)? {
        return import_through(&server, args).await;
    }
    let store = siyu_store::Store::open(&args.store.config()).await?;
    let report = import::run(&store, args.kind, &args.file, import::ImportOptions { strict: args.strict, progress: true }).await?;
    report.print(&args.file);
    Ok(if report.errors.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(2) })
}
