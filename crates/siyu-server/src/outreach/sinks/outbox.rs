//! The outbox sink: with no webhook configured (the demo), touches are appended to a
//! file a person can read.

use std::io::Write;
use std::path::PathBuf;

use async_trait::async_trait;

use super::{Handed, Outgoing, Sink};

/// Appends each delivery as a JSON line to a file (the demo's outbox), fsynced.
pub struct Outbox {
    pub path: PathBuf,
}

#[async_trait]
impl Sink for Outbox {
    fn name(&self) -> String {
        format!("outbox {}", self.path.display())
    }

    async fn send(&self, batch: &[Outgoing]) -> Result<Handed, String> {
        let path = self.path.clone();
        let lines: Vec<String> = batch.iter().map(|o| serde_json::to_string(o).expect("serializable")).collect();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&path)?;
            for l in lines {
                writeln!(f, "{l}")?;
            }
            f.sync_data()
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
        Ok(Handed::Sent)
    }
}
