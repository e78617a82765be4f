//! A `siyu serve` child process for benchmarks: the server measured is the real binary,
//! in its own process, so its memory and the client's are not mixed up.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

pub struct ChildServer {
    pub child: Child,
    pub base_url: String,
    pub write_key: String,
    pub admin_token: String,
}

impl ChildServer {
    /// Starts `siyu serve` on a free loopback port and waits until it answers.
    /// `env` adds to the server's environment (a WeCom corp, for example).
    pub async fn start(data_dir: &Path, database_url: Option<&str>, env: &[(&str, String)]) -> anyhow::Result<ChildServer> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let write_key = siyu_server::secrets::random_token("wk_bench_");
        let admin_token = siyu_server::secrets::random_token("siyu_admin_bench_");
        let mut cmd = Command::new(crate::siyu_binary()?);
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .env("SIYU_WRITE_KEY", &write_key)
            .env("SIYU_ADMIN_TOKEN", &admin_token)
            .env("SIYU_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        cmd.envs(env.iter().map(|(k, v)| (k, v)));
        if let Some(url) = database_url {
            cmd.arg("--database-url").arg(url);
        }
        let child = cmd.spawn().context("starting siyu serve")?;
        let server = ChildServer { child, base_url: format!("http://127.0.0.1:{port}"), write_key, admin_token };
        server.wait_ready(Duration::from_secs(60)).await?;
        Ok(server)
    }

    async fn wait_ready(&self, limit: Duration) -> anyhow::Result<()> {
        let client = siyu_wecom::client::http_builder().no_proxy().build()?;
        let started = Instant::now();
        while started.elapsed() < limit {
            if let Ok(r) = client.get(format!("{}/healthz", self.base_url)).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("the server did not become ready within {limit:?}")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Peak resident memory of the server process.
    pub fn peak_rss(&self) -> Option<u64> {
        siyu_server::metrics::peak_rss_of(&self.pid().to_string())
    }

    pub fn stop(mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.pid().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
