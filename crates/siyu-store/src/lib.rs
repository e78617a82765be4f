//! Siyu's system of record. One interface, two backends: SQLite (one file in the data
//! directory, the embedded default) and PostgreSQL.
//!
//! - [`sql`]: the SQL surface both backends share; repository code is written once.
//! - [`ingest`]: the group-commit writer that makes tracked events durable before ack.
//! - [`resolve`]: identity resolution and profile merges.
//! - [`profiles`], [`org`], [`admin`]: what the admin API reads and writes.
//! - [`bulk`]: fast loading for the demo brand and large imports.
//! - [`index_source`]: the store as the segment engine's source.
//! - `testing` (feature `testing`): stores for tests on both backends, `both_backends!`.

pub mod admin;
pub mod analytics;
pub mod bulk;
pub mod console;
pub mod counters;
pub mod index_source;
pub mod ingest;
pub mod migrate;
pub mod org;
pub mod outreach;
pub mod postgres;
pub mod profiles;
pub mod resolve;
pub mod segments;
pub mod sql;
pub mod sqlite;
#[cfg(feature = "testing")]
pub mod testing;
pub mod wecom;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::future::BoxFuture;

pub use sql::{Backend, Db, Param, Row, Value};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("SQLite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("PostgreSQL: {0}")]
    Postgres(#[from] sqlx::Error),
    #[error("reading a row: {0}")]
    Decode(String),
    #[error("{0}")]
    Config(String),
    #[error("I/O: {0}")]
    Io(String),
    #[error("{0}")]
    Invalid(String),
    #[error("the ingest writer has stopped")]
    WriterStopped,
}

/// Where the data lives.
#[derive(Debug, Clone)]
pub enum StoreConfig {
    /// `siyu.db` inside this directory.
    Sqlite { data_dir: PathBuf },
    /// A PostgreSQL URL; `schema`, if set, is created and used as the search path
    /// (the test suite gives each test its own).
    Postgres { url: String, schema: Option<String> },
}

impl StoreConfig {
    /// `--database-url` wins; otherwise the SQLite file in `--data-dir`.
    pub fn from_args(data_dir: &Path, database_url: Option<&str>) -> StoreConfig {
        match database_url {
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => StoreConfig::Postgres { url: url.to_string(), schema: None },
            Some(url) if url.starts_with("sqlite://") => StoreConfig::Sqlite { data_dir: PathBuf::from(url.trim_start_matches("sqlite://")) },
            _ => StoreConfig::Sqlite { data_dir: data_dir.to_path_buf() },
        }
    }
}

/// A handle to the store; cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

enum Inner {
    Sqlite { pool: Arc<sqlite::SqlitePool> },
    Postgres { pool: sqlx::PgPool, schema: Option<String> },
}

impl Store {
    /// Opens (creating if needed) and migrates the store.
    pub async fn open(config: &StoreConfig) -> Result<Store, StoreError> {
        let store = match config {
            StoreConfig::Sqlite { data_dir } => {
                std::fs::create_dir_all(data_dir).map_err(|e| StoreError::Io(format!("creating data directory {}: {e}", data_dir.display())))?;
                let path = data_dir.join(sqlite::DB_FILE);
                Store { inner: Arc::new(Inner::Sqlite { pool: sqlite::SqlitePool::new(path) }) }
            }
            StoreConfig::Postgres { url, schema } => {
                let pool = postgres::connect(url, 16, schema.as_deref()).await?;
                Store { inner: Arc::new(Inner::Postgres { pool, schema: schema.clone() }) }
            }
        };
        store.run(|db| Box::pin(migrate::migrate(db))).await?;
        Ok(store)
    }

    pub fn backend(&self) -> Backend {
        match &*self.inner {
            Inner::Sqlite { .. } => Backend::Sqlite,
            Inner::Postgres { .. } => Backend::Postgres,
        }
    }

    /// The SQLite file, for the embedded backend.
    pub fn sqlite_path(&self) -> Option<&Path> {
        match &*self.inner {
            Inner::Sqlite { pool } => Some(pool.path()),
            Inner::Postgres { .. } => None,
        }
    }

    pub(crate) fn pg_pool(&self) -> Option<&sqlx::PgPool> {
        match &*self.inner {
            Inner::Postgres { pool, .. } => Some(pool),
            Inner::Sqlite { .. } => None,
        }
    }

    pub fn pg_schema(&self) -> Option<&str> {
        match &*self.inner {
            Inner::Postgres { schema, .. } => schema.as_deref(),
            Inner::Sqlite { .. } => None,
        }
    }

    /// Runs `work` on a connection: a blocking thread for SQLite, a pooled connection
    /// for PostgreSQL.
    pub async fn run<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut dyn Db) -> BoxFuture<'c, Result<T, StoreError>> + Send + 'static,
    {
        match &*self.inner {
            Inner::Sqlite { pool } => {
                let pool = pool.clone();
                tokio::task::spawn_blocking(move || {
                    let mut db = pool.get()?;
                    let result = futures::executor::block_on(work(&mut db));
                    pool.put(db);
                    result
                })
                .await
                .map_err(|e| StoreError::Io(format!("store task failed: {e}")))?
            }
            Inner::Postgres { pool, .. } => {
                let mut db = postgres::PgDb::new(pool.acquire().await?);
                work(&mut db).await
            }
        }
    }

    /// Runs `work` inside one transaction: all of it or none of it.
    pub async fn transaction<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut dyn Db) -> BoxFuture<'c, Result<T, StoreError>> + Send + 'static,
    {
        self.run(move |db| {
            Box::pin(async move {
                db.begin().await?;
                let result = work(&mut *db).await;
                sql::finish(db, result).await
            })
        })
        .await
    }

    /// Bytes the store occupies on disk (SQLite: the database and its WAL;
    /// PostgreSQL: the tables and indexes of the schema in use).
    pub async fn disk_bytes(&self) -> Result<u64, StoreError> {
        match &*self.inner {
            Inner::Sqlite { pool } => {
                let base = pool.path().to_path_buf();
                let mut total = 0;
                for suffix in ["", "-wal", "-shm"] {
                    let mut p = base.clone().into_os_string();
                    p.push(suffix);
                    total += std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
                }
                Ok(total)
            }
            Inner::Postgres { .. } => {
                let row = self
                    .run(|db| {
                        Box::pin(async move {
                            db.query_one(
                                "SELECT CAST(COALESCE(SUM(pg_total_relation_size(c.oid)), 0) AS BIGINT)
                                   FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                                  WHERE n.nspname = current_schema() AND c.relkind = 'r'",
                                &[],
                            )
                            .await
                        })
                    })
                    .await?;
                Ok(row.int(0)? as u64)
            }
        }
    }
}
