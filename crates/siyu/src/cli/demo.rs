//! `siyu demo`: the demo brand (the `siyu-demo` crate) in the data directory, then
//! serve it. The same `--seed` and `--anchor-date` give the same brand.

use std::process::ExitCode;

use anyhow::{Context, bail};
use chrono::NaiveDate;
use clap::Args;
use siyu_demo::{DEMO_SETTING, brand, generate_into, wecom};
use siyu_server::app::{self, ServeOptions};
use siyu_server::http::auth::ADMIN_ROLE;
use siyu_server::metrics::peak_rss_bytes;
use siyu_server::secrets::random_token;
use siyu_store::{Store, admin};

use super::{ServeArgs, admin_token_from_env, print_banner};

#[derive(Args, Debug, Clone)]
pub struct DemoArgs {
    #[command(flatten)]
    pub serve: ServeArgs,
    /// How many customers.
    #[arg(long, default_value_t = 100_000)]
    pub customers: u64,
    /// Same seed, same brand.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// The last day of the demo year, YYYY-MM-DD (default: today), so relative
    /// windows such as "ordered in the last 30 days" find customers.
    #[arg(long)]
    pub anchor_date: Option<NaiveDate>,
    /// Generate the brand and exit instead of serving it.
    #[arg(long)]
    pub no_serve: bool,
    /// Run a simulated WeCom corp beside the demo and connect Siyu to it.
    #[arg(long)]
    pub wecom_sim: bool,
}

pub async fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    let config = args.serve.store.config();
    let store = Store::open(&config).await.context("opening the store")?;
    let existing = store.run(|db| Box::pin(admin::get_setting(db, DEMO_SETTING))).await?;
    match existing.as_deref() {
        Some(s) if s.starts_with("loading") => bail!(
            "a previous `siyu demo` into this store did not finish; start from an empty store (remove {} or use another --data-dir)",
            args.serve.store.data_dir.display()
        ),
        Some(s) => println!("The demo brand is already here ({s}); serving it."),
        None => {
            let g = generate_into(&store, args.customers, args.seed, args.anchor_date, true).await?;
            println!(
                "Created {} with {} customers and {} events in {:.1} s (peak memory {} MiB).",
                brand::BRAND,
                g.customers,
                g.events,
                g.seconds,
                peak_rss_bytes().unwrap_or(0) / (1024 * 1024)
            );
        }
    }
    if args.no_serve {
        return Ok(ExitCode::SUCCESS);
    }
    let sim = if args.wecom_sim { Some(wecom::start(&store, &args.serve.store.data_dir, args.serve.listen).await?) } else { None };
    drop(store);

    let running = app::start(ServeOptions {
        store: config,
        data_dir: args.serve.store.data_dir.clone(),
        listen: args.serve.listen,
        write_key: args.serve.write_key.clone(),
        client_write_key: args.serve.client_write_key.clone(),
        admin_token: admin_token_from_env(),
        limits: siyu_server::http::server::Limits::from_env(),
    })
    .await?;
    // A demo is for trying things: give this session a token to use right away.
    let token = match (&running.generated_admin_token, &running.state.admin_token) {
        (_, Some(_)) => None,
        (Some(t), None) => Some(t.clone()),
        (None, None) => {
            let t = random_token("siyu_admin_");
            let stored = t.clone();
            running.state.store.run(move |db| Box::pin(async move { admin::add_token(db, &stored, ADMIN_ROLE, None, "demo session").await })).await?;
            Some(t)
        }
    };
    print_banner(&running, &args.serve.store.describe(), token.as_deref());
    // With SIYU_ADMIN_TOKEN set the token is not printed: the lines name the variable.
    let bearer = token.unwrap_or_else(|| "$SIYU_ADMIN_TOKEN".to_string());
    let member = running
        .state
        .store
        .run(|db| {
            Box::pin(async move {
                db.query_opt("SELECT value FROM identities WHERE kind = 'user_id' ORDER BY profile_id LIMIT 1", &[]).await?.map(|r| r.text(0)).transpose()
            })
        })
        .await?;
    println!("\nTry:");
    for line in try_lines(&running.addr.to_string(), &running.state.write_key, &bearer, member.as_deref().unwrap_or("m00000001")) {
        println!("  {line}");
    }
    if let Some((base, _)) = &sim {
        println!("\nWeCom simulator on {base} (Siyu is connected to it). Create a QR code and play a customer:");
        println!(
            "  curl -s -X POST -H 'Authorization: Bearer TOKEN' -H 'content-type: application/json' http://{}/api/v1/wecom/contact-ways -d '{{\"guide\":\"GUIDE\",\"channel\":\"table_card\",\"welcome\":\"欢迎！\"}}'",
            running.addr
        );
        println!(
            "  curl -s -X POST -H 'content-type: application/json' {base}/sim/scan -d '{{\"config_id\":\"CONFIG_ID\",\"external_userid\":\"wmDemo1\",\"name\":\"小林\"}}'"
        );
        println!(
            "  curl -s -X POST -H 'content-type: application/json' {base}/sim/join_group -d '{{\"chat_id\":\"wrSTORE_ID\",\"external_userid\":\"wmDemo1\"}}'   # the store's community group"
        );
        println!(
            "  curl -s -X POST -H 'content-type: application/json' {base}/sim/resign -d '{{\"userid\":\"GUIDE\"}}'   # a guide leaves; hand over with resigned: true"
        );
        println!("  curl -s -X POST {base}/sim/complete_transfers   # customer transfers complete now instead of after WeCom's 24 hours");
        println!("  curl -s {base}/sim/app_messages   # task reminders the guides received in WeCom");
    }
    running.wait_for_signal().await;
    Ok(ExitCode::SUCCESS)
}

/// Commands a newcomer can paste: they name a customer who exists (`member`, a user id).
pub fn try_lines(addr: &str, write_key: &str, bearer: &str, member: &str) -> Vec<String> {
    let auth = format!("-H \"Authorization: Bearer {bearer}\"");
    vec![
        format!("curl -s {auth} http://{addr}/api/v1/stats"),
        format!("curl -s {auth} 'http://{addr}/api/v1/profiles/lookup?user_id={member}'"),
        format!("curl -s -u {write_key}: http://{addr}/v1/track -d '{{\"userId\":\"{member}\",\"event\":\"Order Completed\"}}'"),
        format!("curl -s -X POST {auth} http://{addr}/api/v1/campaigns/1/preview   # the demo broadcast's dry run"),
    ]
}
