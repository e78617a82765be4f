//! What the routes work with: the services' shared handles, the keys and tokens that
//! authorise callers, the services themselves, and the HTTP limits. Built by `app`.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::state::Core;

/// Shared state of a running server.
pub struct AppState {
    /// The store, ingest, the segment engine and background work: what services share.
    pub core: Core,
    /// The tracking API's write key.
    pub write_key: String,
    /// The client-side write key (web, mini programs): it cannot change relationships,
    /// give consent or attribute customers to staff.
    pub client_write_key: String,
    /// `SIYU_ADMIN_TOKEN`, when set; tokens in the store are checked too.
    pub admin_token: Option<String>,
    pub metrics: Arc<Metrics>,
    /// The HTTP limits, the ingest backlog limit among them.
    pub limits: super::server::Limits,
    /// Campaigns, journeys, the contact policy, guide tasks.
    pub outreach: Arc<crate::outreach::Outreach>,
    /// WeCom callbacks, when configured.
    pub wecom: Option<Arc<crate::wecom::WecomCallbacks>>,
    /// Cancelled when the server stops: background loops end their round and return.
    pub stop: CancellationToken,
}

pub type App = Arc<AppState>;

impl AppState {
    /// WeCom's API client, when the secret is configured.
    pub fn wecom_client(&self) -> Option<Arc<siyu_wecom::client::Client>> {
        crate::wecom::client_of(self.wecom.as_ref())
    }

    /// What the WeCom glue a route calls works with.
    pub fn wecom_context(&self) -> crate::wecom::WecomContext {
        crate::wecom::WecomContext { core: self.core.clone(), wecom: self.wecom.clone() }
    }
}

impl std::ops::Deref for AppState {
    type Target = Core;

    /// Routes read `app.store`, `app.engine` …: the shared handles are the server's.
    fn deref(&self) -> &Core {
        &self.core
    }
}
