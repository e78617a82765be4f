//! `siyu bench …`: the benchmarks the issues ask for. They print figures; they assert
//! nothing about time (that belongs here, not in tests). Run them on a release build.

pub mod freshness;
pub mod ingest;
pub mod outreach;
pub mod segments;
pub mod server;
pub mod sql;

use std::process::ExitCode;

use clap::Subcommand;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Drive a server over loopback HTTP with realistic Segment batches; print
    /// events/s, latency percentiles, bytes on disk per event and peak memory.
    Ingest(ingest::IngestBench),
    /// Build a synthetic brand in memory and time a published set of segment rules,
    /// against DuckDB on the same data; memory, updates, freshness.
    Segments(segments::SegmentsBench),
    /// Plan a broadcast to a 5M-member segment through the full contact policy, then
    /// dispatch to a local webhook: plan time, deliveries/s, memory.
    Outreach(outreach::OutreachBench),
}

pub async fn run(which: BenchCommand) -> anyhow::Result<ExitCode> {
    match which {
        BenchCommand::Ingest(args) => ingest::run(args).await,
        BenchCommand::Segments(args) => segments::run(args).await,
        BenchCommand::Outreach(args) => outreach::run(args).await,
    }
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
