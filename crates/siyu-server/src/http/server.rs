//! Serving connections, with the limits that keep one client from starving the rest:
//!
//! - a request's headers must arrive within [`Limits::header_read`] (a client that
//!   opens connections and trickles bytes is cut off);
//! - at most [`Limits::connections`] connections at once (past that, new ones wait in
//!   the kernel's accept queue);
//! - at most [`Limits::in_flight`] requests in handlers at once; a request that finds
//!   no place within a second is answered 503 with `Retry-After`;
//! - a handler gets [`Limits::request`] to answer (slow uploads included): 503 past it.
//!
//! Bodies are limited per route (`DefaultBodyLimit`, and the tracking API's own limits).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tower::ServiceExt;

use crate::http::error::ApiError;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_read: Duration,
    pub connections: usize,
    pub in_flight: usize,
    pub request: Duration,
    /// Acknowledged messages not yet applied to the store, at most: past it the
    /// tracking API answers 503 with `Retry-After` instead of letting the backlog (and
    /// the memory that follows it) grow without bound while the store is slow or down.
    pub backlog: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { header_read: Duration::from_secs(10), connections: 10_000, in_flight: 512, request: Duration::from_secs(60), backlog: 1_000_000 }
    }
}

impl Limits {
    /// `SIYU_REQUEST_TIMEOUT_SECS` and `SIYU_MAX_IN_FLIGHT` override the defaults.
    pub fn from_env() -> Limits {
        let mut l = Limits::default();
        let num = |k: &str| std::env::var(k).ok().and_then(|v| v.trim().parse::<u64>().ok()).filter(|n| *n > 0);
        if let Some(s) = num("SIYU_REQUEST_TIMEOUT_SECS") {
            l.request = Duration::from_secs(s);
        }
        if let Some(n) = num("SIYU_MAX_IN_FLIGHT") {
            l.in_flight = n as usize;
        }
        if let Some(n) = num("SIYU_MAX_BACKLOG") {
            l.backlog = n;
        }
        l
    }
}

/// The in-flight limit and the request deadline, as a middleware over every route.
#[derive(Clone)]
pub struct Guard {
    slots: Arc<Semaphore>,
    request: Duration,
}

impl Guard {
    pub fn new(limits: &Limits) -> Guard {
        Guard { slots: Arc::new(Semaphore::new(limits.in_flight)), request: limits.request }
    }
}

fn busy(message: &str) -> Response {
    let mut r = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "busy", message).into_response();
    r.headers_mut().insert(axum::http::header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

pub async fn guard(State(g): State<Guard>, req: Request, next: Next) -> Response {
    let Ok(Ok(_slot)) = tokio::time::timeout(Duration::from_secs(1), g.slots.clone().acquire_owned()).await else {
        return busy("the server is at its limit of requests in progress; retry in a moment");
    };
    match tokio::time::timeout(g.request, next.run(req)).await {
        Ok(response) => response,
        Err(_) => busy(&format!("the request took longer than {} s and was stopped; retry, or send less at once", g.request.as_secs())),
    }
}

/// Serves `router` on `listener` until `stop` changes, then lets open requests finish.
pub async fn serve(listener: TcpListener, router: Router, limits: Limits, mut stop: watch::Receiver<bool>) {
    let connections = Arc::new(Semaphore::new(limits.connections));
    // Each connection holds a receiver: when all are dropped, every connection is done.
    let (done_tx, done_rx) = watch::channel(());
    loop {
        let Ok(permit) = connections.clone().acquire_owned().await else { break };
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait, do not spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped(&mut stop) => break,
        };
        let _ = stream.set_nodelay(true);
        let service = router.clone().map_request(move |mut req: Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(ConnectInfo::<SocketAddr>(remote));
            req.map(axum::body::Body::new)
        });
        let mut stop = stop.clone();
        let done = done_rx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _done = done;
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new()).header_read_timeout(limits.header_read);
            let conn = http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
            tokio::pin!(conn);
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, %remote, "connection ended");
                    }
                }
                _ = stopped(&mut stop) => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    drop(listener);
    drop(done_rx);
    // Open connections finish the requests they are serving (each holds a receiver).
    let _ = tokio::time::timeout(Duration::from_secs(30), done_tx.closed()).await;
}

/// Resolves once the stop flag is set (the guard `wait_for` returns is not `Send`).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
