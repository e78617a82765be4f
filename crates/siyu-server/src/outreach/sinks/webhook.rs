//! The webhook sink: a gateway of the brand's (SMS, e-mail, official account) receives
//! each batch as one POST.

use async_trait::async_trait;

use super::{Handed, Outgoing, Sink};

/// POSTs `{"deliveries": [...]}` to a URL; any 2xx is success.
pub struct Webhook {
    pub url: String,
    pub client: reqwest::Client,
}

impl Webhook {
    pub fn new(url: String) -> Webhook {
        let client = siyu_wecom::client::http_builder().no_proxy().timeout(std::time::Duration::from_secs(30)).build().expect("http client");
        Webhook { url, client }
    }
}

#[async_trait]
impl Sink for Webhook {
    fn name(&self) -> String {
        format!("webhook {}", self.url)
    }

    async fn send(&self, batch: &[Outgoing]) -> Result<Handed, String> {
        let resp = self.client.post(&self.url).json(&serde_json::json!({ "deliveries": batch })).send().await.map_err(|e| e.to_string())?;
        if resp.status().is_success() { Ok(Handed::Sent) } else { Err(format!("webhook answered {}", resp.status())) }
    }
}
