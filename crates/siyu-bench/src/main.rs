//! `siyu bench …` (this binary, `siyu-bench`, which `siyu bench` runs): the benchmarks
//! the issues ask for. They print figures; they assert nothing about time (that belongs
//! here, not in tests). Run them on a release build. They live outside the server's
//! crate so the server carries no benchmark code and never installs DuckDB.

mod console;
mod ingest;
mod outreach;
mod segments;
mod server;
mod sql;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

// The same allocator as the server binary, so in-process servers measure the same.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "siyu bench", bin_name = "siyu bench", version, about = "Benchmarks that print the figures the issues ask for.")]
struct Cli {
    #[command(subcommand)]
    which: BenchCommand,
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Drive a server over loopback HTTP with realistic Segment batches; print
    /// events/s, latency percentiles, bytes on disk per event and peak memory.
    Ingest(ingest::IngestBench),
    /// Build a synthetic brand in memory and time a published set of segment rules,
    /// against DuckDB on the same data; memory, updates, freshness.
    Segments(segments::SegmentsBench),
    /// Plan a broadcast to a 5M-member segment through the full contact policy, then
    /// dispatch to a local webhook: plan time, deliveries/s, memory.
    Outreach(outreach::OutreachBench),
    /// Time every console page and analytics endpoint (and the segment builder's live
    /// count) through a real server on the demo brand: p50/p95/max per page.
    Console(console::ConsoleBench),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    siyu_server::process::init_logging();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("the tokio runtime");
    let result = runtime.block_on(async move {
        match cli.which {
            BenchCommand::Ingest(args) => ingest::run(args).await,
            BenchCommand::Segments(args) => segments::run(args).await,
            BenchCommand::Outreach(args) => outreach::run(args).await,
            BenchCommand::Console(args) => console::run(args).await,
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

/// The `siyu` binary beside this one (both are built into the same target directory):
/// benchmarks that need the server in a process of its own start it.
fn siyu_binary() -> anyhow::Result<PathBuf> {
    siyu_server::process::sibling_binary("siyu", "build both binaries (cargo build --release -p siyu -p siyu-bench)")
}

/// The p-th percentile of sorted samples.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}
