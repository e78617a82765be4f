//! `siyu wecom-sim`: the WeCom simulator as a process, for the demo and for trying a
//! WeCom setup without a corp.

use std::process::ExitCode;

use clap::Args;
use siyu_wecom::sim::{SimConfig, Simulator};

#[derive(Args, Debug)]
pub struct WecomSimArgs {
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub listen: std::net::SocketAddr,
    /// The corp id (the same variable `siyu serve` reads, so one environment serves both).
    #[arg(long, env = "SIYU_WECOM_CORP_ID", default_value = "wwsimulatedcorp")]
    pub corp_id: String,
    /// The customer-contact secret clients must present to /cgi-bin/gettoken.
    #[arg(long, env = "SIYU_WECOM_SECRET", default_value = "sim-secret")]
    pub secret: String,
    /// Siyu's callback URL, e.g. http://127.0.0.1:8080/wecom/callback
    #[arg(long)]
    pub callback_url: Option<String>,
    #[arg(long, env = "SIYU_WECOM_TOKEN", default_value = "simcallbacktoken")]
    pub token: String,
    #[arg(long, env = "SIYU_WECOM_AES_KEY", default_value = "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt")]
    pub aes_key: String,
    /// Staff with the customer-contact feature, comma-separated.
    #[arg(long, default_value = "")]
    pub staff: String,
    /// Customer groups, as CHAT_ID=OWNER (repeatable), for /sim/join_group.
    #[arg(long = "group")]
    pub groups: Vec<String>,
    /// Mass messages a customer may receive per month (0: the days of the month).
    #[arg(long, default_value_t = 0)]
    pub receive_limit: u32,
    /// The simulated self-built app's agentid, which `message/send` must name.
    #[arg(long, env = "SIYU_WECOM_AGENT_ID", default_value_t = 1_000_002)]
    pub agent_id: i64,
    /// Mass messages wait for the guide to press send (`POST /sim/guide_sends`) instead
    /// of counting as sent at once.
    #[arg(long)]
    pub hold_sends: bool,
}

pub async fn run(args: WecomSimArgs) -> anyhow::Result<ExitCode> {
    let sim = Simulator::new(SimConfig {
        receive_limit_per_month: args.receive_limit,
        callback_url: args.callback_url.clone(),
        agent_id: args.agent_id,
        ..SimConfig::new(&args.corp_id, &args.secret, &args.token, &args.aes_key)
    });
    sim.hold_sends(args.hold_sends);
    let staff: Vec<&str> = args.staff.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
    sim.add_staff(&staff);
    for g in &args.groups {
        let Some((chat_id, owner)) = g.split_once('=') else { anyhow::bail!("--group {g}: expected CHAT_ID=OWNER") };
        sim.add_group(chat_id, chat_id, owner, &[]);
    }
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    println!("WeCom simulator for corp {} on http://{}", args.corp_id, listener.local_addr()?);
    // What `siyu serve` must be given to match, secrets included: they are the
    // simulator's own, not a real corp's.
    println!("  run Siyu against it with these (the same variables this command reads):");
    println!("    SIYU_WECOM_API_BASE=http://{}", listener.local_addr()?);
    println!("    SIYU_WECOM_CORP_ID={}", args.corp_id);
    println!("    SIYU_WECOM_SECRET={}", args.secret);
    println!("    SIYU_WECOM_TOKEN={}", args.token);
    println!("    SIYU_WECOM_AES_KEY={}", args.aes_key);
    println!("    SIYU_WECOM_AGENT_ID={}   (app messages to staff are listed at GET /sim/app_messages)", args.agent_id);
    if args.hold_sends {
        println!("  mass messages wait for POST /sim/guide_sends {{\"msgid\"}}, as a guide pressing send in WeCom");
    }
    if let Some(url) = &args.callback_url {
        println!(
            "  callbacks go to {url}; play a customer with POST /sim/scan {{\"config_id\",\"external_userid\",\"name\"}}, /sim/join_group {{\"chat_id\",\"external_userid\"}}"
        );
    }
    siyu_wecom::sim::serve(sim, listener).await?;
    Ok(ExitCode::SUCCESS)
}
