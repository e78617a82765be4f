//! Prometheus text-format metrics at `/metrics`: counters and latency histograms kept
//! in atomics, rendered on scrape.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

#[derive(Default)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, seconds: f64) {
        if let Some(i) = BUCKETS.iter().position(|b| seconds <= *b) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (i, bound) in BUCKETS.iter().enumerate() {
            cumulative += self.counts[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {}", self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "{name}_count {count}");
    }
}

#[derive(Default)]
pub struct Metrics {
    pub tracking_requests_ok: AtomicU64,
    pub tracking_requests_rejected: AtomicU64,
    pub tracking_requests_failed: AtomicU64,
    /// Refused with 503 because the store's backlog was past its limit.
    pub tracking_backlog_refused: AtomicU64,
    pub messages_stored: AtomicU64,
    pub messages_duplicate: AtomicU64,
    pub messages_failed: AtomicU64,
    pub profiles_created: AtomicU64,
    pub profiles_merged: AtomicU64,
    pub admin_requests: AtomicU64,
    pub admin_unauthorized: AtomicU64,
    pub ingest_latency: Histogram,
}

impl Metrics {
    /// `stats`: (profiles, events); `ingest`: (appended, applied) log sequence numbers.
    pub fn render(&self, stats: Option<(i64, i64)>, ingest: (u64, u64), engine: EngineCounters) -> String {
        let mut out = String::new();
        let counter = |out: &mut String, name: &str, help: &str, v: &AtomicU64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}", v.load(Ordering::Relaxed));
        };
        let _ = writeln!(out, "# HELP siyu_tracking_requests_total Tracking API requests by result.\n# TYPE siyu_tracking_requests_total counter");
        for (result, v) in [
            ("ok", &self.tracking_requests_ok),
            ("rejected", &self.tracking_requests_rejected),
            ("failed", &self.tracking_requests_failed),
            ("backlog_full", &self.tracking_backlog_refused),
        ] {
            let _ = writeln!(out, "siyu_tracking_requests_total{{result=\"{result}\"}} {}", v.load(Ordering::Relaxed));
        }
        counter(&mut out, "siyu_messages_stored_total", "Tracked messages stored.", &self.messages_stored);
        counter(&mut out, "siyu_messages_duplicate_total", "Tracked messages acknowledged as repeats of a seen messageId.", &self.messages_duplicate);
        counter(&mut out, "siyu_messages_failed_total", "Messages the store refused; kept in ingest_failures.", &self.messages_failed);
        counter(&mut out, "siyu_profiles_created_total", "Profiles created by ingest.", &self.profiles_created);
        counter(&mut out, "siyu_profiles_merged_total", "Profiles merged into another by identity resolution.", &self.profiles_merged);
        counter(&mut out, "siyu_admin_requests_total", "Authenticated admin API requests.", &self.admin_requests);
        counter(&mut out, "siyu_admin_unauthorized_total", "Admin API requests refused for a missing or wrong token.", &self.admin_unauthorized);
        self.ingest_latency.render(&mut out, "siyu_ingest_seconds", "Time from a tracking request's arrival to its durable acknowledgement.");
        let _ = writeln!(
            out,
            "# HELP siyu_ingest_lag_messages Acknowledged messages not yet applied to the store.\n# TYPE siyu_ingest_lag_messages gauge\nsiyu_ingest_lag_messages {}",
            ingest.0.saturating_sub(ingest.1)
        );
        let _ = writeln!(
            out,
            "# HELP siyu_engine_early_total Messages the segment engine applied on acknowledgement, before the store.\n# TYPE siyu_engine_early_total counter\nsiyu_engine_early_total {}",
            engine.early
        );
        let _ = writeln!(
            out,
            "# HELP siyu_engine_early_taken_back_total Messages applied early that the store then applied otherwise (retries).\n# TYPE siyu_engine_early_taken_back_total counter\nsiyu_engine_early_taken_back_total {}",
            engine.taken_back
        );
        let _ = writeln!(
            out,
            "# HELP siyu_engine_waited_total Acknowledged messages the engine left for the store, by reason.\n# TYPE siyu_engine_waited_total counter"
        );
        for (reason, n) in [("uncertain", engine.waits.uncertain), ("unsettled", engine.waits.unsettled), ("unattachable", engine.waits.unattachable)] {
            let _ = writeln!(out, "siyu_engine_waited_total{{reason=\"{reason}\"}} {n}");
        }
        if let Some((profiles, events)) = stats {
            let _ = writeln!(out, "# HELP siyu_profiles Live profiles.\n# TYPE siyu_profiles gauge\nsiyu_profiles {profiles}");
            let _ = writeln!(out, "# HELP siyu_events Stored events.\n# TYPE siyu_events gauge\nsiyu_events {events}");
        }
        out
    }
}

/// What the segment engine reports of its early application (see `siyu_engine::early`).
#[derive(Debug, Default, Clone, Copy)]
pub struct EngineCounters {
    pub early: u64,
    pub taken_back: u64,
    pub waits: siyu_engine::early::Waits,
}

/// Peak resident memory of this process (Linux `VmHWM`), in bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    peak_rss_of("self")
}

/// Resident memory of this process now (Linux `VmRSS`), in bytes.
pub fn rss_bytes() -> Option<u64> {
    status_kib("self", "VmRSS:").map(|k| k * 1024)
}

/// Peak resident memory of a process by pid (or `self`).
pub fn peak_rss_of(pid: &str) -> Option<u64> {
    status_kib(pid, "VmHWM:").map(|k| k * 1024)
}

/// One `kB` field of `/proc/<pid>/status`.
fn status_kib(pid: &str, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.tracking_requests_ok.fetch_add(3, Ordering::Relaxed);
        m.ingest_latency.observe(0.004);
        m.ingest_latency.observe(0.2);
        let text = m.render(Some((10, 20)), (7, 5), EngineCounters::default());
        assert!(text.contains("siyu_ingest_lag_messages 2"));
        assert!(text.contains("siyu_tracking_requests_total{result=\"ok\"} 3"));
        assert!(text.contains("siyu_ingest_seconds_bucket{le=\"0.005\"} 1"));
        assert!(text.contains("siyu_ingest_seconds_bucket{le=\"+Inf\"} 2"));
        assert!(text.contains("siyu_profiles 10"));
    }
}
