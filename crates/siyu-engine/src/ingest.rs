//! Ingest as the engine reads it: batches acknowledged (durable, not yet applied) and
//! committed (applied by the store, with what it did). The store's ingest pipeline
//! implements these views over its own batches, so nothing is copied on the way in.

use siyu_core::{Identity, Message, ProfileId};

/// What the store did with one message.
#[derive(Debug, Clone, Copy)]
pub struct Applied<'a> {
    /// `None` when nothing was stored (a duplicate or a failure).
    pub profile_id: Option<ProfileId>,
    /// Profiles merged into `profile_id`.
    pub merged: &'a [ProfileId],
    /// Identities the message newly gave the profile.
    pub attached: &'a [Identity],
}

/// A committed ingest batch: a contiguous run of the ingest log, each message with
/// what the store did with it.
pub trait CommittedBatch: Send + Sync {
    fn len(&self) -> usize;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The last log sequence number applied.
    fn last_seq(&self) -> u64;

    fn get(&self, i: usize) -> (&Message, Applied<'_>);

    /// The log sequence number of message `i`.
    fn seq_of(&self, i: usize) -> u64 {
        self.last_seq() + 1 + i as u64 - self.len() as u64
    }
}

/// Messages just made durable, in log order, before the store has applied them.
pub trait AcknowledgedBatch: Send + Sync {
    fn first_seq(&self) -> u64;

    fn messages(&self) -> &[Message];
}
