//! Where the engine's inputs come from, in its own terms: the system of record, read at
//! start and on demand. The store implements [`IndexSource`] (`siyu_store::index_source`),
//! as it does the ingest views in [`crate::ingest`], so the engine depends on `siyu-core`
//! only and the store on the engine, not both ways.
//!
//! Reads that must see one snapshot (the whole index at start, one trait, one
//! aggregate) are one call each: the source hands the rows to an engine-side builder
//! page by page, so memory holds one page of rows at a time. The builder goes in and
//! comes back by value because the store reads on a thread of its own.

use std::collections::HashMap;

use serde_json::Value;
use siyu_core::Timestamp;

use crate::build::IndexBuilder;
use crate::index::{Org, SeriesKey};
use crate::series::Series;
use crate::time::secs;
use crate::traits::TraitColumn;

/// How far a load has come: (what, rows read so far).
pub type Progress = Box<dyn Fn(&str, u64) + Send + Sync>;

/// A source failed; the engine only passes its error on (the store gets its own back,
/// see `siyu_store::index_source`).
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct SourceError(pub Box<dyn std::error::Error + Send + Sync>);

/// A saved segment definition, its rule as stored (JSON).
#[derive(Debug, Clone)]
pub struct SavedSegment {
    pub name: String,
    pub rule: Value,
}

/// Where the engine's inputs come from (the store implements it).
#[async_trait::async_trait]
pub trait IndexSource: Send + Sync + 'static {
    /// The saved segments, defined at start.
    async fn saved_segments(&self) -> Result<Vec<SavedSegment>, SourceError>;

    /// Everything the index is built from, in one snapshot: the org, live profiles,
    /// identities, traits, tags, active guides, and the tracked events named in
    /// [`IndexBuilder::event_names`] (in storage order), in that order. Returns the
    /// builder and the ingest sequence number the snapshot is at.
    async fn read_index(&self, rows: IndexBuilder, progress: Progress) -> Result<(IndexBuilder, u64), SourceError>;

    /// One trait's values, in one snapshot; with the ingest sequence number it is at.
    async fn read_trait(&self, rows: TraitRows) -> Result<(TraitRows, u64), SourceError>;

    /// One event's tracked occurrences by time, in one snapshot; with the ingest
    /// sequence number it is at.
    async fn read_events(&self, rows: EventRows) -> Result<(EventRows, u64), SourceError>;

    /// The active guides of some profiles, as the source has them now.
    async fn guides_of(&self, profiles: Vec<u32>) -> Result<HashMap<u32, Vec<String>>, SourceError>;

    /// Who works where, read afresh (staff and stores change while Siyu runs).
    async fn org(&self) -> Result<Org, SourceError>;
}

/// One trait's rows, collected into its column.
pub struct TraitRows {
    key: String,
    column: TraitColumn,
}

impl TraitRows {
    pub fn new(key: &str) -> TraitRows {
        TraitRows { key: key.to_string(), column: TraitColumn::new() }
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    /// A stored value, as JSON text (text that is not JSON is taken as a string).
    pub fn add(&mut self, p: u32, json: &str, updated: Timestamp) {
        let value = serde_json::from_str(json).unwrap_or_else(|_| Value::String(json.to_string()));
        self.column.set(p, &value, secs(updated));
    }

    pub fn finish(self) -> TraitColumn {
        self.column
    }
}

/// One aggregate's rows: the events it takes, with their measure.
pub struct EventRows {
    key: SeriesKey,
    now: Timestamp,
    rows: Vec<(u32, u32, f64)>,
}

impl EventRows {
    pub fn new(key: SeriesKey, now: Timestamp) -> EventRows {
        EventRows { key, now, rows: Vec::new() }
    }

    /// The event name to read.
    pub fn event(&self) -> &str {
        &self.key.event
    }

    /// An occurrence, its properties as JSON text; kept if the aggregate takes it.
    pub fn add(&mut self, p: u32, at: Timestamp, payload: &str) {
        let payload: Value = serde_json::from_str(payload).unwrap_or(Value::Null);
        if let Some(v) = self.key.accept(&payload, self.now) {
            self.rows.push((p, secs(at), v));
        }
    }

    pub fn finish(self) -> Series {
        Series::from_events(self.key.measure.is_some(), self.rows)
    }
}
