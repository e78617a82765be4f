//! `siyu token create|list|revoke`: API tokens from the command line, through a running
//! server's admin API (with `SIYU_ADMIN_TOKEN`).

use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::json;

#[derive(Args, Debug)]
pub struct TokenArgs {
    #[command(subcommand)]
    pub what: TokenCommand,
    /// The running Siyu server.
    #[arg(long, env = "SIYU_SERVER", default_value = "http://127.0.0.1:8080", global = true)]
    pub server: String,
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Issue a token: for a member of staff (`--staff USERID`), or an admin token.
    Create {
        /// The member of staff it acts as; what they see follows their staff record.
        #[arg(long)]
        staff: Option<String>,
        /// What it is for, e.g. "Li's phone".
        #[arg(long, default_value = "")]
        label: String,
    },
    /// Tokens with their ids (never their secrets).
    List,
    /// Revoke a token by its id: it stops working at once.
    Revoke { id: String },
}

pub async fn run(args: TokenArgs) -> anyhow::Result<ExitCode> {
    let server = super::admin_client::AdminServer::from_env(&args.server)?;
    match args.what {
        TokenCommand::Create { staff, label } => {
            let t = server.call(reqwest::Method::POST, "/api/v1/tokens", Some(&json!({"staff_userid": staff, "label": label}))).await?;
            let who = t["staff_userid"].as_str().map(|s| format!("staff member {s}")).unwrap_or_else(|| "an admin".into());
            println!("token {} for {who} (id {}): it is shown only now, keep it safe", t["token"].as_str().unwrap_or(""), t["id"].as_str().unwrap_or(""));
        }
        TokenCommand::List => {
            let list = server.call(reqwest::Method::GET, "/api/v1/tokens", None).await?;
            for t in list.as_array().into_iter().flatten() {
                println!(
                    "{}  {:<6} {:<16} {}",
                    t["id"].as_str().unwrap_or(""),
                    t["role"].as_str().unwrap_or(""),
                    t["staff_userid"].as_str().unwrap_or("-"),
                    t["label"].as_str().unwrap_or("")
                );
            }
        }
        TokenCommand::Revoke { id } => {
            server.call(reqwest::Method::DELETE, &format!("/api/v1/tokens/{id}"), None).await?;
            println!("token {id} revoked");
        }
    }
    Ok(ExitCode::SUCCESS)
}
