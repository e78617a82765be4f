//! Stores for tests, on both backends. The PostgreSQL one lives in its own schema of
//! the `test` database, so tests run in parallel without seeing each other.
//!
//! PostgreSQL is found at `SIYU_TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`). When it cannot be reached, tests skip
//! their PostgreSQL half locally, and fail under `CI=true`: CI must run them for real.

use std::sync::atomic::{AtomicU32, Ordering};

use crate::{Store, StoreConfig};

pub const DEFAULT_TEST_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

pub struct TestStore {
    pub store: Store,
    pub config: StoreConfig,
    /// The data directory (the SQLite file, the ingest log), alive for the test.
    pub dir: tempfile::TempDir,
    schema: Option<String>,
}

pub fn test_database_url() -> String {
    std::env::var("SIYU_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_TEST_DATABASE_URL.to_string())
}

fn in_ci() -> bool {
    std::env::var("CI").map(|v| v == "true" || v == "1").unwrap_or(false)
}

/// A Python that can import `module` — `SIYU_TEST_PYTHON` (the virtualenv `scripts/test`
/// installs the independent clients into), else `python3` — or `None` (the test skips)
/// outside CI. Under CI=true a missing client fails the test.
pub fn python_with(module: &str) -> Option<String> {
    let python = std::env::var("SIYU_TEST_PYTHON").unwrap_or_else(|_| "python3".to_string());
    let ok = std::process::Command::new(&python).args(["-c", &format!("import {module}")]).output().map(|o| o.status.success()).unwrap_or(false);
    if ok {
        return Some(python);
    }
    if in_ci() {
        panic!("{python} cannot import {module}; scripts/test installs it (CI must run this test)");
    }
    eprintln!("skipping: {python} cannot import {module} (run scripts/test to install it)");
    None
}

/// A schema name no other test process or test in this process uses.
pub fn unique_schema() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("siyu_test_{}_{}_{}", std::process::id(), n, nanos)
}

impl TestStore {
    pub async fn sqlite() -> TestStore {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = StoreConfig::Sqlite { data_dir: dir.path().to_path_buf() };
        let store = Store::open(&config).await.expect("open SQLite store");
        TestStore { store, config, dir, schema: None }
    }

    /// `None` (with a note on stderr) when PostgreSQL is unreachable outside CI.
    pub async fn postgres() -> Option<TestStore> {
        let schema = unique_schema();
        let config = StoreConfig::Postgres { url: test_database_url(), schema: Some(schema.clone()) };
        match Store::open(&config).await {
            Ok(store) => Some(TestStore { store, config, dir: tempfile::tempdir().expect("temp dir"), schema: Some(schema) }),
            Err(e) if !in_ci() => {
                eprintln!("skipping the PostgreSQL half of this test: {e} (set CI=true to make this fail)");
                None
            }
            Err(e) => panic!("PostgreSQL is required under CI=true and could not be reached: {e}"),
        }
    }

    /// A plain PostgreSQL URL for this store (for the `siyu` binary): the test's schema
    /// rides in the connection options.
    pub fn postgres_url(&self) -> Option<String> {
        let schema = self.schema.as_ref()?;
        let base = test_database_url();
        let sep = if base.contains('?') { '&' } else { '?' };
        Some(format!("{base}{sep}options=-c%20search_path%3D{schema}"))
    }

    /// Where this store's ingest log lives.
    pub fn log_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("ingest-log")
    }

    /// Drops the test's PostgreSQL schema.
    pub async fn cleanup(self) {
        if let (Some(schema), Some(pool)) = (&self.schema, self.store.pg_pool()) {
            let sql = format!("DROP SCHEMA IF EXISTS {schema} CASCADE");
            let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(pool).await;
        }
    }
}

/// Runs a test body against SQLite and PostgreSQL:
///
/// ```ignore
/// both_backends!(stores_a_profile, |store: Store, log_dir: PathBuf| async move { ... });
/// ```
#[macro_export]
macro_rules! both_backends {
    ($name:ident, $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let t = $crate::testing::TestStore::sqlite().await;
                ($body)(t.store.clone(), t.log_dir()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let Some(t) = $crate::testing::TestStore::postgres().await else { return };
                ($body)(t.store.clone(), t.log_dir()).await;
                t.cleanup().await;
            }
        }
    };
}
