//! Stores for tests, on both backends. The PostgreSQL one lives in its own schema of
//! the `test` database, so tests run in parallel without seeing each other.
//!
//! PostgreSQL is found at `SIYU_TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`). When it cannot be reached, tests skip
//! their PostgreSQL half locally, and fail under `CI=true`: CI must run them for real.
//!
//! libtest has no runtime skip, so a skipped half still shows as "ok". To keep it
//! visible, every skip prints `SKIPPED: …` on stderr and, when `SIYU_TEST_SKIPS` names
//! a file, appends a line `<reason>\t<test name>` to it; `scripts/test` sets that
//! variable and lists the skipped tests at the end of the run.

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

/// The environment variable naming the file skipped tests are listed in.
pub const SKIPS_FILE_VAR: &str = "SIYU_TEST_SKIPS";

/// The running test, as `<test binary>: <test name>`: libtest runs each test on a thread
/// named after it (tests call the helpers below from that thread, in the body
/// `#[tokio::test]` blocks on), and cargo names the binary `<target>-<hash>`.
fn current_test() -> String {
    let exe = std::env::current_exe().ok().and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned())).unwrap_or_default();
    let binary = match exe.rsplit_once('-') {
        Some((target, hash)) if hash.len() == 16 && hash.chars().all(|c| c.is_ascii_hexdigit()) => target.to_string(),
        _ => exe,
    };
    let test = match std::thread::current().name() {
        Some(name) if name != "main" => name.to_string(),
        _ => "(a test not on its own thread)".to_string(),
    };
    format!("{binary}: {test}")
}

/// `url` without its password, if it has one (for messages).
fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let Some((userinfo, host)) = rest.rsplit_once('@') else { return url.to_string() };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

/// Makes a skipped test visible: a `SKIPPED:` line on stderr, and a line
/// `<reason>\t<test name>` appended to the file `SIYU_TEST_SKIPS` names, if set.
pub fn record_skip(reason: &str, detail: &str) {
    let test = current_test();
    eprintln!("SKIPPED: {test}: {detail}");
    let Some(path) = std::env::var_os(SKIPS_FILE_VAR) else { return };
    use std::io::Write;
    // One short write in append mode: lines from parallel tests and processes do not interleave.
    let line = format!("{reason}\t{test}\n");
    let written = std::fs::OpenOptions::new().create(true).append(true).open(&path).and_then(|mut f| f.write_all(line.as_bytes()));
    if let Err(e) = written {
        eprintln!("could not record the skip in {}: {e}", std::path::Path::new(&path).display());
    }
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
    record_skip("python", &format!("{python} cannot import {module} (run scripts/test to install it; set CI=true to require it)"));
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

    /// `None` when PostgreSQL is unreachable outside CI: the caller returns, and the skip
    /// is recorded ([`record_skip`]) so the run reports it instead of a silent "ok".
    pub async fn postgres() -> Option<TestStore> {
        let schema = unique_schema();
        let config = StoreConfig::Postgres { url: test_database_url(), schema: Some(schema.clone()) };
        match Store::open(&config).await {
            Ok(store) => Some(TestStore { store, config, dir: tempfile::tempdir().expect("temp dir"), schema: Some(schema) }),
            Err(e) if !in_ci() => {
                record_skip("postgres", &format!("PostgreSQL not reachable at {} ({e}) (set CI=true to require it)", redacted(&test_database_url())));
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
