//! Building the index from an [`IndexSource`] (the store): the whole index from one
//! snapshot at start, or one trait or aggregate first used later.

use siyu_core::Timestamp;

use crate::build::{IndexBuilder, Spec};
use crate::index::{Index, SeriesKey};
use crate::lifecycle::LifecycleConfig;
use crate::series::Series;
use crate::source::{EventRows, IndexSource, SourceError, TraitRows};
use crate::traits::TraitColumn;

pub use crate::source::Progress;

/// Builds the whole index from one snapshot of the source.
pub async fn load<S: IndexSource + ?Sized>(source: &S, config: LifecycleConfig, spec: Spec, now: Timestamp, progress: Progress) -> Result<Index, SourceError> {
    let (b, applied) = source.read_index(IndexBuilder::new(config, &spec, now), progress).await?;
    Ok(b.finish(applied))
}

/// One trait, read after start: `(column, the ingest sequence the snapshot is at)`.
pub async fn load_trait<S: IndexSource + ?Sized>(source: &S, key: &str) -> Result<(TraitColumn, u64), SourceError> {
    let (rows, applied) = source.read_trait(TraitRows::new(key)).await?;
    Ok((rows.finish(), applied))
}

/// One aggregate, read after start.
pub async fn load_series<S: IndexSource + ?Sized>(source: &S, key: SeriesKey, now: Timestamp) -> Result<(Series, u64), SourceError> {
    let (rows, applied) = source.read_events(EventRows::new(key, now)).await?;
    Ok((rows.finish(), applied))
}
