//! The `siyu` binary's library: the HTTP server (tracking API, admin API, WeCom
//! callback), the CLI commands and the benchmarks. Integration tests start the real
//! server from here on a loopback port.

pub mod admin_client;
pub mod app;
pub mod bench;
pub mod campaign_cli;
pub mod cli;
pub mod datadir;
pub mod demo;
pub mod http;
pub mod import;
pub mod membership;
pub mod metrics;
pub mod outreach;
pub mod secrets;
pub mod segment_cli;
pub mod token_cli;
pub mod wecom;
pub mod wecom_groups;
pub mod wecom_sim_cli;
pub mod wecom_sync;
pub mod wecom_tags;
pub mod wecom_transfer;
