//! `GET|POST /wecom/callback`: WeCom's URL verification and encrypted event callbacks.
//! Everything is checked before anything is recorded: signature, freshness, replay,
//! decryption, receive id (corp id), XML. An accepted event is made durable through the
//! ingest pipeline (its message id is the callback's dedupe key, so WeCom's retries are
//! stored once) and answered at once; profiles are updated by the indexer.

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use siyu_core::Timestamp;
use siyu_wecom::callback::{self, CallbackEvent};
use siyu_wecom::crypto::CryptoError;
use siyu_wecom::events;

use crate::app::App;

pub fn routes() -> Router<App> {
    Router::new().route("/wecom/callback", get(verify_url).post(receive))
}

#[derive(Deserialize)]
pub struct CallbackQuery {
    msg_signature: Option<String>,
    timestamp: Option<String>,
    nonce: Option<String>,
    echostr: Option<String>,
}

fn reject(status: StatusCode, why: &str) -> Response {
    tracing::warn!(status = status.as_u16(), why, "WeCom callback rejected");
    (status, why.to_string()).into_response()
}

fn crypto_status(e: &CryptoError) -> StatusCode {
    match e {
        CryptoError::BadSignature | CryptoError::WrongReceiver { .. } => StatusCode::FORBIDDEN,
        _ => StatusCode::BAD_REQUEST,
    }
}

fn params(q: &CallbackQuery) -> Result<(&str, &str, &str), Response> {
    match (&q.msg_signature, &q.timestamp, &q.nonce) {
        (Some(s), Some(t), Some(n)) => Ok((s, t, n)),
        _ => Err(reject(StatusCode::BAD_REQUEST, "msg_signature, timestamp and nonce are required")),
    }
}

/// URL verification: return the decrypted `echostr`.
async fn verify_url(State(app): State<App>, Query(q): Query<CallbackQuery>) -> Response {
    let Some(wecom) = &app.wecom else { return reject(StatusCode::NOT_FOUND, "WeCom is not configured on this server") };
    let (sig, ts, nonce) = match params(&q) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let Some(echostr) = &q.echostr else { return reject(StatusCode::BAD_REQUEST, "echostr is required") };
    if let Err(why) = wecom.admit(ts, nonce, Timestamp::now().0 / 1000) {
        return reject(StatusCode::FORBIDDEN, why);
    }
    match wecom.crypt.open(sig, ts, nonce, echostr) {
        Ok(plain) => plain.into_response(),
        Err(e) => reject(crypto_status(&e), &e.to_string()),
    }
}

/// An encrypted event.
async fn receive(State(app): State<App>, Query(q): Query<CallbackQuery>, body: Bytes) -> Response {
    let Some(wecom) = &app.wecom else { return reject(StatusCode::NOT_FOUND, "WeCom is not configured on this server") };
    let (sig, ts, nonce) = match params(&q) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let Ok(text) = std::str::from_utf8(&body) else { return reject(StatusCode::BAD_REQUEST, "the body is not UTF-8") };
    let envelope = match callback::parse(text) {
        Ok(f) => f,
        Err(e) => return reject(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    let Some(encrypted) = envelope.get("Encrypt") else { return reject(StatusCode::BAD_REQUEST, "the body has no <Encrypt>") };
    // The signature first: an unsigned request must not use up a nonce.
    if let Err(e) = wecom.crypt.verify(sig, ts, nonce, encrypted) {
        return reject(crypto_status(&e), &e.to_string());
    }
    if let Err(why) = wecom.admit(ts, nonce, Timestamp::now().0 / 1000) {
        return reject(StatusCode::FORBIDDEN, why);
    }
    let message = match wecom.crypt.open(sig, ts, nonce, encrypted) {
        Ok(m) => m,
        Err(e) => return reject(crypto_status(&e), &e.to_string()),
    };
    let fields = match callback::parse(&message) {
        Ok(f) => f,
        Err(e) => return reject(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    let event = match CallbackEvent::from_fields(&fields) {
        Ok(e) => e,
        Err(e) => return reject(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    tracing::debug!(?event, "WeCom callback");
    if let Some(m) = events::to_message(&fields, &event, Timestamp::now()) {
        if let Err(e) = app.ingest.submit(vec![m]).await {
            // Not acknowledged: WeCom retries.
            tracing::error!(error = %e, "could not record a WeCom callback");
            return (StatusCode::SERVICE_UNAVAILABLE, "try again").into_response();
        }
    }
    "success".into_response()
}
