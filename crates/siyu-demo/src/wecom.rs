//! `siyu demo --wecom-sim`: the demo brand with a simulated WeCom corp beside it. The
//! simulator runs in the same process, knows the demo's guides, and sends its callbacks
//! to the demo server; Siyu is configured to use it (`DATA_DIR/wecom.json`).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use serde_json::json;
use siyu_store::Store;
use siyu_wecom::sim::{SimConfig, Simulator};

const CORP: &str = "wwlanshandemo";
const SECRET: &str = "demo-contact-secret";
const TOKEN: &str = "demotoken";
const KEY: &str = "6qkdMrq68nTKduznJYO1A37W2oEgpkMUvkttRToqhUt";

/// Starts the simulator and writes Siyu's WeCom configuration for it. Returns its URL.
pub async fn start(store: &Store, data_dir: &Path, siyu: SocketAddr) -> anyhow::Result<(String, Arc<Simulator>)> {
    let sim = Simulator::new(SimConfig { callback_url: Some(format!("http://{siyu}/wecom/callback")), ..SimConfig::new(CORP, SECRET, TOKEN, KEY) });
    let staff = store.run(|db| Box::pin(siyu_store::org::list_staff(db, None))).await?;
    let guides: Vec<&str> = staff.iter().map(|s| s.userid.as_str()).collect();
    sim.add_staff(&guides);
    // Each store's community group (`wr` + store id, as the demo's history names them),
    // owned by the store's first guide.
    let mut owners = std::collections::BTreeMap::new();
    for s in &staff {
        if let Some(store_id) = &s.store_id {
            owners.entry(store_id.clone()).or_insert_with(|| s.userid.clone());
        }
    }
    for (store_id, owner) in &owners {
        sim.add_group(&format!("wr{store_id}"), &format!("{store_id} 门店社群"), owner, &[]);
    }
    let base = siyu_wecom::sim::spawn_local(sim.clone()).await?;
    // The simulated app's agentid: task reminders reach the guides as app messages
    // (`GET {base}/sim/app_messages` shows them).
    let agent_id = sim.config().agent_id;
    let config = json!({"corp_id": CORP, "secret": SECRET, "token": TOKEN, "encoding_aes_key": KEY, "api_base": base, "agent_id": agent_id});
    std::fs::write(data_dir.join("wecom.json"), serde_json::to_string_pretty(&config)?)?;
    Ok((base, sim))
}
