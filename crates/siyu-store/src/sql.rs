//! The small SQL surface both backends share. Repository code is written once against
//! [`Db`]; each backend turns these calls into rusqlite or sqlx calls.
//!
//! SQL text uses PostgreSQL's `$1, $2 …` placeholders; the SQLite backend reads them
//! as `?1, ?2 …`, which bind by number in either engine. Column types are kept to what
//! both engines agree on: 64-bit integers, doubles and text (JSON is stored as text).

use async_trait::async_trait;

use crate::StoreError;

/// A bound parameter. Nulls carry their type: PostgreSQL needs it.
#[derive(Debug, Clone, Copy)]
pub enum Param<'a> {
    Int(Option<i64>),
    Real(Option<f64>),
    Text(Option<&'a str>),
}

impl From<i64> for Param<'_> {
    fn from(v: i64) -> Self {
        Param::Int(Some(v))
    }
}
impl From<Option<i64>> for Param<'_> {
    fn from(v: Option<i64>) -> Self {
        Param::Int(v)
    }
}
impl From<siyu_core::ProfileId> for Param<'_> {
    fn from(v: siyu_core::ProfileId) -> Self {
        Param::Int(Some(v.get()))
    }
}
impl From<Option<siyu_core::ProfileId>> for Param<'_> {
    fn from(v: Option<siyu_core::ProfileId>) -> Self {
        Param::Int(v.map(|p| p.get()))
    }
}
impl From<f64> for Param<'_> {
    fn from(v: f64) -> Self {
        Param::Real(Some(v))
    }
}
impl<'a> From<&'a str> for Param<'a> {
    fn from(v: &'a str) -> Self {
        Param::Text(Some(v))
    }
}
impl<'a> From<&'a String> for Param<'a> {
    fn from(v: &'a String) -> Self {
        Param::Text(Some(v.as_str()))
    }
}
impl<'a> From<Option<&'a str>> for Param<'a> {
    fn from(v: Option<&'a str>) -> Self {
        Param::Text(v)
    }
}
impl<'a> From<&'a Option<String>> for Param<'a> {
    fn from(v: &'a Option<String>) -> Self {
        Param::Text(v.as_deref())
    }
}

/// Builds a parameter list: `params![id, name, ts]`.
#[macro_export]
macro_rules! params {
    ($($p:expr),* $(,)?) => { &[$($crate::sql::Param::from($p)),*][..] };
}

/// `1,2,3` for an `IN (…)` list. Integers are safe to inline, and long lists would run
/// past the backends' parameter limits.
pub fn int_list<I: Copy + std::fmt::Display>(ids: &[I]) -> String {
    ids.iter().map(I::to_string).collect::<Vec<_>>().join(",")
}

/// `'a','b'` for an `IN (…)` list of names, quotes doubled.
pub fn text_list<S: AsRef<str>>(items: &[S]) -> String {
    items.iter().map(|n| format!("'{}'", n.as_ref().replace('\'', "''"))).collect::<Vec<_>>().join(",")
}

/// A value read back from a row.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
}

/// One result row, read by position.
#[derive(Debug, Clone, PartialEq)]
pub struct Row(pub Vec<Value>);

impl Row {
    fn at(&self, i: usize) -> Result<&Value, StoreError> {
        self.0.get(i).ok_or_else(|| StoreError::Decode(format!("no column {i}")))
    }

    pub fn int(&self, i: usize) -> Result<i64, StoreError> {
        match self.at(i)? {
            Value::Int(v) => Ok(*v),
            Value::Real(v) => Ok(*v as i64),
            other => Err(StoreError::Decode(format!("column {i}: expected an integer, found {other:?}"))),
        }
    }

    pub fn opt_int(&self, i: usize) -> Result<Option<i64>, StoreError> {
        match self.at(i)? {
            Value::Null => Ok(None),
            _ => self.int(i).map(Some),
        }
    }

    /// A profile id column; one outside the engine's range is a decode error.
    pub fn profile(&self, i: usize) -> Result<siyu_core::ProfileId, StoreError> {
        siyu_core::ProfileId::new(self.int(i)?).map_err(|e| StoreError::Decode(format!("column {i}: {e}")))
    }

    pub fn opt_profile(&self, i: usize) -> Result<Option<siyu_core::ProfileId>, StoreError> {
        self.opt_int(i)?.map(|v| siyu_core::ProfileId::new(v).map_err(|e| StoreError::Decode(format!("column {i}: {e}")))).transpose()
    }

    pub fn real(&self, i: usize) -> Result<f64, StoreError> {
        match self.at(i)? {
            Value::Int(v) => Ok(*v as f64),
            Value::Real(v) => Ok(*v),
            other => Err(StoreError::Decode(format!("column {i}: expected a number, found {other:?}"))),
        }
    }

    pub fn text(&self, i: usize) -> Result<String, StoreError> {
        match self.at(i)? {
            Value::Text(s) => Ok(s.clone()),
            other => Err(StoreError::Decode(format!("column {i}: expected text, found {other:?}"))),
        }
    }

    pub fn opt_text(&self, i: usize) -> Result<Option<String>, StoreError> {
        match self.at(i)? {
            Value::Null => Ok(None),
            _ => self.text(i).map(Some),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A connection to either backend. Repository functions take `&mut dyn Db`.
#[async_trait]
pub trait Db: Send {
    fn backend(&self) -> Backend;

    /// Runs a statement; returns the number of rows it changed.
    async fn execute(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64, StoreError>;

    async fn query(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>, StoreError>;

    /// Runs statements that take no parameters (DDL, pragmas), separated by `;`.
    async fn execute_script(&mut self, sql: &str) -> Result<(), StoreError>;

    async fn query_opt(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Option<Row>, StoreError> {
        Ok(self.query(sql, params).await?.into_iter().next())
    }

    async fn query_one(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Row, StoreError> {
        self.query_opt(sql, params).await?.ok_or_else(|| StoreError::Decode(format!("no row from: {sql}")))
    }

    async fn begin(&mut self) -> Result<(), StoreError> {
        let sql = match self.backend() {
            // Take the write lock up front, so a transaction never fails half-way on
            // a lock upgrade.
            Backend::Sqlite => "BEGIN IMMEDIATE",
            Backend::Postgres => "BEGIN",
        };
        self.execute_script(sql).await
    }

    /// A read-only transaction that sees one consistent snapshot across many queries.
    async fn begin_snapshot(&mut self) -> Result<(), StoreError> {
        let sql = match self.backend() {
            Backend::Sqlite => "BEGIN",
            Backend::Postgres => "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
        };
        self.execute_script(sql).await
    }

    async fn commit(&mut self) -> Result<(), StoreError> {
        self.execute_script("COMMIT").await
    }

    async fn rollback(&mut self) -> Result<(), StoreError> {
        self.execute_script("ROLLBACK").await
    }
}

/// Ends the transaction `result` was produced in: commit on success, roll back on error.
pub async fn finish<T>(db: &mut dyn Db, result: Result<T, StoreError>) -> Result<T, StoreError> {
    match result {
        Ok(v) => {
            db.commit().await?;
            Ok(v)
        }
        Err(e) => {
            db.rollback().await.ok();
            Err(e)
        }
    }
}
