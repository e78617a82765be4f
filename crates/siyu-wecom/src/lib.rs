//! WeCom (企业微信) for Siyu.
//!
//! - [`crypto`]: the callback protocol's signature and AES envelope (WXBizMsgCrypt),
//!   checked against the published test vectors and the `wechatpy` implementation.
//! - [`callback`]: callback XML (parsed without DTDs or entity expansion) into typed events.
//! - [`client`]: the server API client: a shared, cached access token, retries, typed errors.

pub mod callback;
pub mod client;
pub mod crypto;
pub mod events;
pub mod sim;
