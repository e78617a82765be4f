//! Filling templates for real customers: their traits, their guide and store, and a
//! coupon code derived from the delivery's idempotency key (so a re-render after a
//! restart gives the same code).

use std::collections::HashMap;

use serde_json::{Value, json};
use siyu_core::ProfileId;
use siyu_outreach::campaign::CampaignSpec;
use siyu_outreach::template::Template;
use siyu_store::outreach::{self as stored, DeliveryRow};

use super::Outreach;
use super::sinks::Outgoing;
use crate::content::{coupon_code, vars};

/// Renders a template for several customers at once (one read of their traits).
pub async fn render_many(
    o: &Outreach,
    template: &Template,
    coupon: Option<&str>,
    targets: &[(ProfileId, Option<String>, String)],
) -> anyhow::Result<Vec<String>> {
    let ids: Vec<ProfileId> = targets.iter().map(|t| t.0).collect();
    let (traits, dir) = o.store.run(move |db| Box::pin(async move { Ok((stored::traits_of(db, &ids).await?, stored::directory(db).await?)) })).await?;
    Ok(targets.iter().map(|(p, guide, key)| template.render(&vars(traits.get(p), guide.as_deref(), &dir, coupon.map(|c| coupon_code(c, key)), *p))).collect())
}

/// Deliveries as they go to a channel, with the content of those that had none
/// rendered and stored before anything is sent: a touch sent again (after a crash, a
/// failed batch) carries exactly the words it first had.
pub async fn rendered_once(o: &Outreach, due: &[DeliveryRow]) -> anyhow::Result<Vec<Outgoing>> {
    let outgoing = outgoing(o, due).await?;
    let rendered: Vec<(i64, String)> = due.iter().zip(&outgoing).filter(|(d, _)| d.content.is_none()).map(|(d, x)| (d.id, x.content.clone())).collect();
    if !rendered.is_empty() {
        o.store.transaction(move |db| Box::pin(async move { stored::save_contents(db, &rendered).await })).await?;
    }
    Ok(outgoing)
}

/// Deliveries as they go to a channel, content rendered.
pub async fn outgoing(o: &Outreach, due: &[DeliveryRow]) -> anyhow::Result<Vec<Outgoing>> {
    let ids: Vec<ProfileId> = due.iter().map(|d| d.profile_id).collect();
    let mut campaign_ids: Vec<i64> = due.iter().filter(|d| d.content.is_none()).filter_map(|d| d.campaign_id).collect();
    campaign_ids.sort_unstable();
    campaign_ids.dedup();
    let (traits, dir, identities, specs) = o
        .store
        .run(move |db| {
            Box::pin(async move {
                let mut specs = HashMap::new();
                for id in campaign_ids {
                    if let Some(c) = stored::get_campaign(db, id).await? {
                        specs.insert(id, c.spec);
                    }
                }
                Ok((stored::traits_of(db, &ids).await?, stored::directory(db).await?, stored::identities_of(db, &ids).await?, specs))
            })
        })
        .await?;
    let templates: HashMap<i64, (Template, Option<String>)> = specs
        .into_iter()
        .filter_map(|(id, v)| serde_json::from_value::<CampaignSpec>(v).ok().and_then(|s| Template::parse(&s.content).ok().map(|t| (id, (t, s.coupon)))))
        .collect();
    Ok(due
        .iter()
        .map(|d| {
            let content = match (&d.content, d.campaign_id.and_then(|c| templates.get(&c))) {
                (Some(c), _) => c.clone(),
                (None, Some((t, coupon))) => {
                    t.render(&vars(traits.get(&d.profile_id), d.guide.as_deref(), &dir, coupon.as_deref().map(|c| coupon_code(c, &d.key)), d.profile_id))
                }
                (None, None) => String::new(),
            };
            Outgoing {
                id: d.id,
                key: d.key.clone(),
                profile_id: d.profile_id,
                channel: d.channel,
                kind: d.kind,
                campaign_id: d.campaign_id,
                journey_id: d.journey_id,
                content,
                to: address(identities.get(&d.profile_id), traits.get(&d.profile_id)),
                guide: d.guide.clone(),
            }
        })
        .collect())
}

/// Where a gateway sends a touch: the customer's identities (`user_id`,
/// `external_userid`, `unionid`, `member_no`), their phone in E.164 and e-mail address
/// from their traits, and their official-account `openid` with its `appid`. (The phone
/// and e-mail identities are only hashes: they are given as `phone_hash` and
/// `email_hash`, never as `phone` or `email`.)
pub fn address(identities: Option<&serde_json::Map<String, Value>>, traits: Option<&serde_json::Map<String, Value>>) -> Value {
    let mut to = identities.cloned().unwrap_or_default();
    for kind in ["phone", "email"] {
        if let Some(hash) = to.remove(kind) {
            to.insert(format!("{kind}_hash"), hash);
        }
    }
    if let Some(Value::String(stored)) = to.remove("openid") {
        let (appid, openid) = stored.split_once(':').unwrap_or(("", stored.as_str()));
        to.insert("openid".into(), json!(openid));
        if !appid.is_empty() {
            to.insert("appid".into(), json!(appid));
        }
    }
    let text = |key: &str| traits.and_then(|t| t.get(key)).and_then(Value::as_str);
    if let Some(phone) = text("phone").and_then(siyu_core::phone::normalize_e164) {
        to.insert("phone".into(), json!(phone));
    }
    if let Some(email) = text("email").and_then(siyu_core::email::normalize) {
        to.insert("email".into(), json!(email));
    }
    Value::Object(to)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashed_identities_are_never_given_as_addresses() {
        let hash = siyu_core::email::hash("li@example.com");
        let identities = json!({"email": hash, "phone": "abc123", "user_id": "m1"});
        let to = address(identities.as_object(), None);
        assert_eq!(to, json!({"email_hash": hash, "phone_hash": "abc123", "user_id": "m1"}));
        let traits = json!({"email": "Li@Example.com", "phone": "138 1234 5678"});
        let to = address(identities.as_object(), traits.as_object());
        assert_eq!((to["email"].as_str(), to["phone"].as_str()), (Some("li@example.com"), Some("+8613812345678")));
    }
}
