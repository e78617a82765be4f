//! The handles every service shares: the store, the ingest pipeline (the only way an
//! event enters), the segment engine, and the tracker of work that outlives a request.
//! A service takes a `Core` (or the one handle it needs), never the whole server, so it
//! can be built and tested without HTTP. A leaf: it names nothing else in this crate.

use siyu_engine::Engine;
use siyu_store::Store;
use siyu_store::ingest::IngestHandle;
use tokio_util::task::TaskTracker;

#[derive(Clone)]
pub struct Core {
    pub store: Store,
    pub ingest: IngestHandle,
    pub engine: Engine,
    /// Work started by requests or rounds that outlives them (welcome messages, tag
    /// pushes, the WeCom sync): waited for at shutdown, so none of it is cut off.
    pub tasks: TaskTracker,
}
