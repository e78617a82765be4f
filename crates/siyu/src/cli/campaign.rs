//! `siyu campaign list|preview ID`: campaigns from the command line, through a running
//! server's admin API (the server holds the live segments and the contact ledger).

use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::Value;

#[derive(Args, Debug)]
pub struct CampaignArgs {
    #[command(subcommand)]
    pub what: CampaignCommand,
    /// The running Siyu server.
    #[arg(long, env = "SIYU_SERVER", default_value = "http://127.0.0.1:8080", global = true)]
    pub server: String,
    /// Print the API's JSON instead of a summary.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Subcommand, Debug)]
pub enum CampaignCommand {
    /// Campaigns and their status.
    List,
    /// The dry run: who would receive it, who is suppressed and why, per-guide tasks.
    Preview { id: i64 },
}

pub async fn run(args: CampaignArgs) -> anyhow::Result<ExitCode> {
    let server = super::admin_client::AdminServer::from_env(&args.server)?;
    let body = match args.what {
        CampaignCommand::List => server.call(reqwest::Method::GET, "/api/v1/campaigns", None).await?,
        CampaignCommand::Preview { id } => server.call(reqwest::Method::POST, &format!("/api/v1/campaigns/{id}/preview?sample=3"), None).await?,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&body)?);
        return Ok(ExitCode::SUCCESS);
    }
    match args.what {
        CampaignCommand::List => {
            for c in body.as_array().into_iter().flatten() {
                println!("{:>4}  {:<10}  {}", c["id"], c["status"].as_str().unwrap_or(""), c["name"].as_str().unwrap_or(""));
            }
        }
        CampaignCommand::Preview { .. } => print_preview(&body),
    }
    Ok(ExitCode::SUCCESS)
}

fn print_preview(p: &Value) {
    println!("audience          {}", p["audience"]);
    println!("would receive     {}  ({} deferred to the end of quiet hours)", p["would_send"], p["deferred_by_quiet_hours"]);
    println!("suppressed:");
    for s in p["suppressed"].as_array().into_iter().flatten() {
        println!("  {:>8}  {:<18} {}", s["count"].as_u64().unwrap_or(0), s["reason"].as_str().unwrap_or(""), s["why"].as_str().unwrap_or(""));
    }
    let guides = p["per_guide"].as_object().map(|m| m.len()).unwrap_or(0);
    if guides > 0 {
        let sizes: Vec<u64> = p["per_guide"].as_object().into_iter().flatten().filter_map(|(_, n)| n.as_u64()).collect();
        println!("guide tasks       {} tasks for {guides} guides, largest {}", p["tasks"], sizes.iter().max().unwrap_or(&0));
    }
    for m in p["sample"].as_array().into_iter().flatten() {
        println!("sample  profile {} via {}: {}", m["profile_id"], m["guide"].as_str().unwrap_or("-"), m["content"].as_str().unwrap_or(""));
    }
    println!("took {:.1} ms", p["took_ms"].as_f64().unwrap_or(0.0));
}
