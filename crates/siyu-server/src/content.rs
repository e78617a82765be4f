//! What a template is filled with for one customer: their traits, their guide and the
//! guide's store, a coupon code, their profile id. Shared by outreach (campaigns,
//! journeys) and WeCom (welcome messages), so `{{ owner.name }}` means the same in both.

use serde_json::{Value, json};
use siyu_store::outreach::Directory;

/// The variables of one message.
pub fn vars(
    traits: Option<&serde_json::Map<String, Value>>,
    guide: Option<&str>,
    dir: &Directory,
    coupon: Option<String>,
    profile_id: siyu_core::ProfileId,
) -> Value {
    let owner = guide.and_then(|g| dir.staff.get(g).map(|(name, store)| (g, name, store.clone())));
    let store =
        owner.as_ref().and_then(|(_, _, s)| s.as_ref()).and_then(|s| dir.stores.get(s).map(|(name, city)| json!({"id": s, "name": name, "city": city})));
    json!({
        "traits": traits.cloned().map(Value::Object).unwrap_or_else(|| json!({})),
        "owner": owner.map(|(g, name, _)| json!({"userid": g, "name": name})).unwrap_or(Value::Null),
        "store": store.unwrap_or(Value::Null),
        "coupon": coupon.map(|c| json!({"code": c})).unwrap_or(Value::Null),
        "profile": {"id": profile_id},
    })
}

/// A coupon code for one delivery: the campaign's prefix and a stable suffix.
pub fn coupon_code(prefix: &str, key: &str) -> String {
    let h = siyu_outreach::policy::fnv1a(key.bytes());
    format!("{prefix}-{:08X}", (h >> 32) as u32 ^ h as u32)
}
