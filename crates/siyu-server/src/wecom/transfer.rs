//! Customer transfers (在职继承 / 离职继承): when a guide leaves, or a store rebalances
//! its guides, their customers are handed to another guide through WeCom, so the
//! relationship (and its history) stays with the brand. WeCom accepts or refuses each
//! customer at once; the takeover itself completes later (within 24 hours) and is read
//! back with `transfer_result`. Only then does Siyu move the relationship, as a
//! `Contact Transferred` event on the customer, so the store, the segment engine and
//! the timeline all see the same thing.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use serde_json::json;
use siyu_core::{Message, Timestamp};
use siyu_store::Store;
use siyu_store::wecom as wstore;
use siyu_wecom::client::Client;
use utoipa::ToSchema;

use crate::state::Core;

/// Customers per `transfer_customer` call, WeCom's limit.
const PER_CALL: usize = 100;
/// WeCom transfers a customer at most twice in 90 days; Siyu checks before asking.
const TRANSFERS_PER_90_DAYS: i64 = 2;

#[derive(Debug, Serialize, ToSchema)]
pub struct Requested {
    /// Customers WeCom accepted: their takeover is waiting.
    pub accepted: usize,
    /// Customers WeCom refused, with its errcode (for example 40129: already being
    /// transferred; 84061: not the guide's contact).
    pub refused: Vec<Refused>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Refused {
    pub external_userid: String,
    /// WeCom's errcode, or none when Siyu did not ask (see `reason`).
    pub errcode: Option<i64>,
    /// `wecom` (see errcode), `in_transfer` (an earlier transfer is still waiting for its
    /// takeover) or `transfer_limit` (already transferred twice in 90 days).
    pub reason: String,
}

/// Asks WeCom to hand every active customer of `from` to `to`.
pub async fn request(store: &Store, client: &Client, from: &str, to: &str, resigned: bool) -> anyhow::Result<Requested> {
    let f = from.to_string();
    let since = Timestamp(Timestamp::now().0 - 90 * 86_400_000);
    let (customers, recent) = store
        .run(move |db| {
            Box::pin(async move {
                let customers = wstore::transferable_customers(db, &f).await?;
                let ids: Vec<i64> = customers.iter().map(|(p, _)| *p).collect();
                Ok((customers, wstore::recent_transfers(db, &ids, since).await?))
            })
        })
        .await?;
    let mut out = Requested { accepted: 0, refused: Vec::new() };
    // What WeCom would refuse, Siyu refuses first: a customer whose takeover is still
    // waiting, and one already transferred twice in 90 days.
    let mut to_ask = Vec::with_capacity(customers.len());
    for (p, e) in customers {
        let r = recent.get(&p).copied().unwrap_or_default();
        let reason = if r.waiting {
            "in_transfer"
        } else if r.count >= TRANSFERS_PER_90_DAYS {
            "transfer_limit"
        } else {
            to_ask.push((p, e));
            continue;
        };
        out.refused.push(Refused { external_userid: e, errcode: None, reason: reason.into() });
    }
    let customers = to_ask;
    for chunk in customers.chunks(PER_CALL) {
        let externals: Vec<String> = chunk.iter().map(|(_, e)| e.clone()).collect();
        let answer =
            if resigned { client.resigned_transfer_customer(from, to, &externals).await? } else { client.transfer_customer(from, to, &externals).await? };
        let codes: HashMap<&str, i64> = answer["customer"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| Some((c["external_userid"].as_str()?, c["errcode"].as_i64().unwrap_or(0))))
            .collect();
        // A customer WeCom's answer leaves out was not transferred.
        let answers: Vec<(i64, String, i64)> = chunk.iter().map(|(p, e)| (*p, e.clone(), codes.get(e.as_str()).copied().unwrap_or(-1))).collect();
        for (_, e, code) in &answers {
            if *code == 0 {
                out.accepted += 1;
            } else {
                out.refused.push(Refused { external_userid: e.clone(), errcode: Some(*code), reason: "wecom".into() });
            }
        }
        let (f, t, now) = (from.to_string(), to.to_string(), Timestamp::now());
        store.run(move |db| Box::pin(async move { wstore::record_transfers(db, &f, &t, resigned, &answers, now).await })).await?;
    }
    Ok(out)
}

/// Reads back waiting takeovers and settles them; completed ones move the customer.
pub async fn settle(o: &Core, client: &Client, now: Timestamp) -> anyhow::Result<()> {
    let waiting = o.store.run(|db| Box::pin(wstore::waiting_transfers(db))).await?;
    let mut pairs: BTreeMap<(String, String, bool), Vec<wstore::Transfer>> = BTreeMap::new();
    for t in waiting {
        pairs.entry((t.handover.clone(), t.takeover.clone(), t.resigned)).or_default().push(t);
    }
    for ((from, to, resigned), transfers) in pairs {
        let results = match transfer_results(client, &from, &to, resigned).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(handover = %from, takeover = %to, error = %e, "transfer_result failed; asked again next round");
                continue;
            }
        };
        for t in transfers {
            let Some((status, takeover_time)) = results.get(&t.external_userid) else { continue };
            let settled = match status {
                1 => "completed",
                3 => "customer_refused",
                4 => "takeover_full",
                5 => "no_record",
                _ => continue, // 2: still waiting
            };
            if settled == "completed" {
                let at = takeover_time.map(|s| Timestamp(s * 1000)).unwrap_or(now);
                let props = json!({"staff_userid": to, "handover_userid": from, "resigned": t.resigned, "source": "wecom"});
                let message = Message::internal(t.profile_id, "Contact Transferred", format!("wecom:transfer:{}", t.id), props, at);
                o.ingest.submit(vec![message]).await?;
            }
            o.store.run(move |db| Box::pin(async move { wstore::settle_transfer(db, t.id, settled, now).await })).await?;
        }
    }
    Ok(())
}

/// external_userid → (status, takeover time in seconds) for one handover and takeover.
async fn transfer_results(
    client: &Client,
    from: &str,
    to: &str,
    resigned: bool,
) -> Result<HashMap<String, (i64, Option<i64>)>, siyu_wecom::client::WecomError> {
    let mut out = HashMap::new();
    let mut cursor = String::new();
    loop {
        let page = if resigned { client.resigned_transfer_result(from, to, &cursor).await? } else { client.transfer_result(from, to, &cursor).await? };
        for c in page["customer"].as_array().into_iter().flatten() {
            if let (Some(e), Some(s)) = (c["external_userid"].as_str(), c["status"].as_i64()) {
                out.insert(e.to_string(), (s, c["takeover_time"].as_i64()));
            }
        }
        cursor = page["next_cursor"].as_str().unwrap_or_default().to_string();
        if cursor.is_empty() {
            return Ok(out);
        }
    }
}
