//! The demo brand's outreach: two journeys and one broadcast, ready to dry-run.
//!
//! - 新客欢迎 Welcome: a customer adds a guide → the next 10:00 their guide sends a
//!   welcome with a first-order coupon; three days later, if they have not ordered, the
//!   guide gets a task to check in.
//! - 豆子复购 Bean reminder: 25 days after a beans order, unless they ordered beans again,
//!   the guide reminds them (re-entry on every beans order).
//! - 秋季新豆 Autumn beans: a WeCom broadcast (a draft) to oat-milk lovers in Shanghai,
//!   10% held out to measure lift.

use serde_json::{Value, json};
use siyu_core::Timestamp;
use siyu_core::rule::parse;
use siyu_store::outreach as stored;
use siyu_store::{Store, segments};

pub const BROADCAST: &str = "秋季新豆 Autumn beans";

fn segments_to_seed() -> [(&'static str, &'static str, &'static str); 2] {
    [
        ("shanghai_oat_lovers", "Shanghai customers whose taste is oat milk", r#"city = "Shanghai" and taste = "oat milk""#),
        ("beans_buyers_90d", "Bought beans in the last 90 days", r#"count(Order Completed where category = "beans", 90d) >= 1"#),
    ]
}

fn welcome() -> Value {
    json!({
        "name": "新客欢迎 Welcome",
        "trigger": {"event": {"event": "Contact Added"}},
        "reentry": "once",
        "exit_on": {"event": "Order Completed"},
        "steps": [
            {"wait_until": {"time": "10:00"}},
            {"send": {"channel": "wecom", "content": "{{ traits.name | default: \"你好\" }}，我是{{ store.name }}的{{ owner.name }}，欢迎加入岚山咖啡！首单立减券 {{ coupon.code }}"}},
            {"coupon": {"code": "WELCOME"}},
            {"wait": {"hours": 72}},
            {"task": {"title": "新客回访", "content": "{{ traits.name }} 加你三天还没下单，问问口味偏好？", "deadline_hours": 48}}
        ]
    })
}

fn bean_reminder() -> Value {
    json!({
        "name": "豆子复购 Bean reminder",
        "trigger": {"event": {"event": "Order Completed", "where": {"category": "beans"}}},
        "reentry": "always",
        "steps": [
            {"wait": {"hours": 600}},
            {"wait_until": {"time": "10:00"}},
            {"send": {"channel": "wecom", "content": "{{ traits.name | default: \"你好\" }}，上次的咖啡豆快喝完了吧？{{ owner.name }}给你留了新到的秋季豆。"}}
        ]
    })
}

fn broadcast() -> Value {
    json!({
        "name": BROADCAST,
        "audience": {"segment": "shanghai_oat_lovers"},
        "channel": "wecom",
        "content": "{{ traits.name | default: \"你好\" }}，{{ store.name }}到了秋季新豆，配燕麦奶特别好喝，凭券 {{ coupon.code }} 第二杯半价。——{{ owner.name }}",
        "coupon": "AUTUMN",
        "holdout_percent": 10,
        "conversion_event": "Order Completed"
    })
}

/// Saves the demo's segments, journeys and broadcast (idempotent by name).
pub async fn seed(store: &Store) -> anyhow::Result<()> {
    let now = Timestamp::now();
    let segs: Vec<(String, String, Value)> = segments_to_seed()
        .iter()
        .map(|(n, d, r)| Ok((n.to_string(), d.to_string(), parse(r)?.to_json())))
        .collect::<Result<_, siyu_core::rule::RuleError>>()?;
    for spec in [welcome(), bean_reminder()] {
        siyu_server::outreach::journeys::read_spec(&spec).map_err(|e| anyhow::anyhow!("demo journey: {e}"))?;
    }
    siyu_server::outreach::campaigns::read_spec(&broadcast()).map_err(|e| anyhow::anyhow!("demo broadcast: {e}"))?;
    store
        .transaction(move |db| {
            Box::pin(async move {
                for (name, description, rule) in &segs {
                    segments::put(db, name, description, rule, now).await?;
                }
                for spec in [welcome(), bean_reminder()] {
                    let name = spec["name"].as_str().unwrap_or_default().to_string();
                    stored::put_journey(db, &name, &spec, true, now).await?;
                }
                if !stored::list_campaigns(db).await?.iter().any(|c| c.name == BROADCAST) {
                    stored::create_campaign(db, BROADCAST, &broadcast(), "demo", now).await?;
                }
                Ok(())
            })
        })
        .await?;
    Ok(())
}
