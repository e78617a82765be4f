//! WeCom (企业微信) for Siyu.
//!
//! - [`crypto`]: the callback protocol's signature and AES envelope (WXBizMsgCrypt),
//!   checked against the published test vectors and the `wechatpy` implementation.
//! - [`callback`]: callback XML (parsed without DTDs or entity expansion) into typed events.
//! - [`client`]: the server API client: a shared, cached access token, retries, typed errors.
//! - `sim` (feature `sim`): a WeCom simulator, an axum server; off by default so the
//!   client does not build axum.

pub mod callback;
pub mod client;
pub mod crypto;
pub mod events;
#[cfg(feature = "sim")]
pub mod sim;
