//! The embedded default: one SQLite file in the data directory, in WAL mode.
//!
//! rusqlite is synchronous and fast; its calls run on blocking threads (reads) or on
//! the ingest writer's own thread. The [`Db`] futures it returns never wait on I/O, so
//! they complete on first poll.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, OpenFlags, ToSql};

use crate::StoreError;
use crate::sql::{Backend, Db, Param, Row, Value};

pub const DB_FILE: &str = "siyu.db";

pub struct SqliteDb {
    conn: Connection,
}

impl SqliteDb {
    pub fn open(path: &Path, role: ConnRole) -> Result<SqliteDb, StoreError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags)?;
        conn.busy_handler(Some(wait_for_lock))?;
        conn.set_prepared_statement_cache_capacity(256);
        // FULL: the WAL is fsynced at every commit. The ingest log deletes a segment once
        // the store has applied it, so the store must be as durable as the log was.
        let cache_kib = match role {
            ConnRole::Writer => 256 * 1024,
            ConnRole::Reader => 64 * 1024,
        };
        conn.execute_batch(&format!(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             PRAGMA temp_store = MEMORY;
             PRAGMA cache_size = -{cache_kib};
             PRAGMA mmap_size = 0;"
        ))?;
        if role == ConnRole::Writer {
            // The checkpointer thread copies the WAL into the database on the other core
            // while the writer works; between two large index batches it catches up, so
            // the WAL restarts from its beginning. The file is kept (up to 1 GB) rather
            // than cut back: WAL frames are not block-aligned, and writing them into a
            // freshly extended file made ext4 allocate and zero blocks on every batch
            // (8% of the indexer's time under load). Should the checkpointer ever fall
            // far behind, the writer checkpoints itself at 256 MB.
            conn.execute_batch("PRAGMA wal_autocheckpoint = 65536; PRAGMA journal_size_limit = 1073741824;")?;
        }
        Ok(SqliteDb { conn })
    }

    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    fn run(&self, sql: &str, params: &[Param<'_>]) -> Result<u64, StoreError> {
        let mut stmt = self.conn.prepare_cached(&numbered(sql))?;
        bind(&mut stmt, params)?;
        Ok(stmt.raw_execute()? as u64)
    }

    fn rows(&self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>, StoreError> {
        let mut stmt = self.conn.prepare_cached(&numbered(sql))?;
        bind(&mut stmt, params)?;
        let width = stmt.column_count();
        let mut rows = stmt.raw_query();
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let mut values = Vec::with_capacity(width);
            for i in 0..width {
                values.push(match row.get_ref(i)? {
                    ValueRef::Null => Value::Null,
                    ValueRef::Integer(v) => Value::Int(v),
                    ValueRef::Real(v) => Value::Real(v),
                    ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
                    ValueRef::Blob(b) => Value::Text(String::from_utf8_lossy(b).into_owned()),
                });
            }
            out.push(Row(values));
        }
        Ok(out)
    }
}

/// Waits up to 10 s for another connection's write lock, checking every millisecond.
/// SQLite's own timeout handler backs off to 100 ms sleeps, so the ingest indexer could
/// sleep a tenth of a second past a lock held for a few milliseconds.
fn wait_for_lock(tries: i32) -> bool {
    const CHECKS: i32 = 10_000;
    if tries >= CHECKS {
        return false;
    }
    std::thread::sleep(Duration::from_millis(1));
    true
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnRole {
    Writer,
    Reader,
}

/// The store's SQL is written with PostgreSQL's `$1` placeholders. SQLite reads `$1` as
/// a parameter *named* "$1", numbered by first appearance, which would have to be bound
/// by name (a lookup per parameter: 6% of the indexer's time). `?1` is SQLite's own
/// numbered parameter, bound at position 1 whatever the order of appearance. Quoted
/// literals are left as they are.
fn numbered(sql: &str) -> Cow<'_, str> {
    if !sql.contains('$') {
        return Cow::Borrowed(sql);
    }
    // Bytes: every character that matters is ASCII, and a multi-row statement is long.
    let mut out = sql.as_bytes().to_vec();
    let mut quoted = false;
    for i in 0..out.len() {
        quoted ^= out[i] == b'\'';
        if out[i] == b'$' && !quoted && out.get(i + 1).is_some_and(u8::is_ascii_digit) {
            out[i] = b'?';
        }
    }
    Cow::Owned(String::from_utf8(out).expect("ASCII replaced by ASCII"))
}

fn bind(stmt: &mut rusqlite::CachedStatement<'_>, params: &[Param<'_>]) -> Result<(), StoreError> {
    if params.len() != stmt.parameter_count() {
        return Err(StoreError::Decode(format!(
            "statement takes {} parameters, {} given: {}",
            stmt.parameter_count(),
            params.len(),
            stmt.expanded_sql().unwrap_or_default()
        )));
    }
    for (index, p) in (1..).zip(params) {
        stmt.raw_bind_parameter(index, p)?;
    }
    Ok(())
}

impl ToSql for Param<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match *self {
            Param::Int(Some(v)) => ToSqlOutput::Borrowed(ValueRef::Integer(v)),
            Param::Real(Some(v)) => ToSqlOutput::Borrowed(ValueRef::Real(v)),
            Param::Text(Some(v)) => ToSqlOutput::Borrowed(ValueRef::Text(v.as_bytes())),
            Param::Int(None) | Param::Real(None) | Param::Text(None) => ToSqlOutput::Borrowed(ValueRef::Null),
        })
    }
}

#[async_trait]
impl Db for SqliteDb {
    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    async fn execute(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64, StoreError> {
        self.run(sql, params)
    }

    async fn query(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>, StoreError> {
        self.rows(sql, params)
    }

    async fn execute_script(&mut self, sql: &str) -> Result<(), StoreError> {
        Ok(self.conn.execute_batch(sql)?)
    }
}

/// Reader connections, reused. Writes outside ingest (tags, organisation) also borrow
/// one; SQLite serialises them with the ingest writer through its lock.
pub struct SqlitePool {
    path: PathBuf,
    idle: Mutex<Vec<SqliteDb>>,
}

const MAX_IDLE: usize = 8;

impl SqlitePool {
    pub fn new(path: PathBuf) -> Arc<SqlitePool> {
        Arc::new(SqlitePool { path, idle: Mutex::new(Vec::new()) })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn get(&self) -> Result<SqliteDb, StoreError> {
        if let Some(db) = self.idle.lock().expect("pool lock").pop() {
            return Ok(db);
        }
        SqliteDb::open(&self.path, ConnRole::Reader)
    }

    pub fn put(&self, db: SqliteDb) {
        // A connection left inside a transaction (a panic mid-way) is not reused.
        if !db.conn.is_autocommit() {
            return;
        }
        let mut idle = self.idle.lock().expect("pool lock");
        if idle.len() < MAX_IDLE {
            idle.push(db);
        }
    }
}

/// Runs passive checkpoints every 50 ms on its own connection, until the process exits.
/// The WAL file keeps its size while writes keep coming (see the writer's pragmas), and
/// is truncated once fully copied and quiet for 5 seconds (longer than an index batch
/// takes), or once fully copied but very large: disk use at rest is the database alone.
pub fn spawn_checkpointer(path: PathBuf) -> Result<(), StoreError> {
    const TRUNCATE_FRAMES: i64 = 262_144; // 1 GB
    const QUIET: Duration = Duration::from_secs(5);
    let db = SqliteDb::open(&path, ConnRole::Reader)?;
    std::thread::Builder::new()
        .name("sqlite-checkpoint".into())
        .spawn(move || {
            let mut last = (0, std::time::Instant::now());
            loop {
                std::thread::sleep(Duration::from_millis(50));
                let result = db.conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| Ok((r.get::<_, i64>(1)?, r.get::<_, i64>(2)?)));
                match result {
                    Ok((log, copied)) => {
                        if log != last.0 {
                            last = (log, std::time::Instant::now());
                        }
                        let quiet = log > 0 && last.1.elapsed() >= QUIET;
                        if copied == log
                            && (log >= TRUNCATE_FRAMES || quiet)
                            && let Err(e) = db.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
                        {
                            tracing::debug!(error = %e, "WAL truncate deferred");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "WAL checkpoint failed"),
                }
            }
        })
        .map_err(|e| StoreError::Io(e.to_string()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_numbered_parameters_outside_literals() {
        assert_eq!(numbered("SELECT a FROM t WHERE b = $2 AND c = $1"), "SELECT a FROM t WHERE b = ?2 AND c = ?1");
        assert_eq!(numbered("SELECT json_extract(x, '$.a'), '$1' FROM t WHERE y = $10"), "SELECT json_extract(x, '$.a'), '$1' FROM t WHERE y = ?10");
        assert!(matches!(numbered("SELECT 1"), Cow::Borrowed(_)));
    }

    #[test]
    fn parameters_bind_by_number_whatever_their_order() {
        let dir = tempfile::tempdir().unwrap();
        let db = SqliteDb::open(&dir.path().join("t.db"), ConnRole::Writer).unwrap();
        let rows = db.rows("SELECT $2 || '-' || $1 || '-' || $2", &[Param::from("a"), Param::from("b")]).unwrap();
        assert_eq!(rows[0].text(0).unwrap(), "b-a-b");
        assert!(db.run("SELECT $1", &[]).is_err(), "a missing parameter is an error, not a NULL");
    }
}
