//! PostgreSQL behind `--database-url postgres://…`, through sqlx at run time (no
//! compile-time database needed).
//!
//! SQL text passed here is always one of the repository's own statements; values are
//! bound as parameters, never formatted in, which is what `AssertSqlSafe` asserts.

use async_trait::async_trait;
use futures::TryStreamExt;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{AssertSqlSafe, Column, Executor, PgPool, Postgres, Row as _, TypeInfo, ValueRef};

use crate::StoreError;
use crate::sql::{Backend, Db, Param, Row, Value};

pub struct PgDb {
    conn: PoolConnection<Postgres>,
}

impl PgDb {
    pub fn new(conn: PoolConnection<Postgres>) -> PgDb {
        PgDb { conn }
    }
}

/// Opens a pool. With `schema`, every connection uses it as its search path, and it is
/// created if missing.
pub async fn connect(url: &str, max_connections: u32, schema: Option<&str>) -> Result<PgPool, StoreError> {
    let mut options: PgConnectOptions = url.parse().map_err(|e: sqlx::Error| StoreError::Config(format!("database URL: {e}")))?;
    if let Some(schema) = schema {
        if !schema.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(StoreError::Config(format!("schema name {schema:?} must be letters, digits and _")));
        }
        options = options.options([("search_path", schema)]);
    }
    let pool = PgPoolOptions::new().max_connections(max_connections).acquire_timeout(std::time::Duration::from_secs(10)).connect_with(options).await?;
    if let Some(schema) = schema {
        sqlx::raw_sql(AssertSqlSafe(format!("CREATE SCHEMA IF NOT EXISTS {schema}"))).execute(&pool).await?;
    }
    Ok(pool)
}

fn bind<'q>(
    mut q: sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>,
    params: &[Param<'q>],
) -> sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments> {
    for p in params {
        q = match *p {
            Param::Int(v) => q.bind(v),
            Param::Real(v) => q.bind(v),
            Param::Text(v) => q.bind(v),
        };
    }
    q
}

fn decode(row: &PgRow) -> Result<Row, StoreError> {
    let mut values = Vec::with_capacity(row.columns().len());
    for (i, col) in row.columns().iter().enumerate() {
        let raw = row.try_get_raw(i)?;
        if raw.is_null() {
            values.push(Value::Null);
            continue;
        }
        let value = match col.type_info().name() {
            "INT8" => Value::Int(row.try_get::<i64, _>(i)?),
            "INT4" => Value::Int(row.try_get::<i32, _>(i)? as i64),
            "INT2" => Value::Int(row.try_get::<i16, _>(i)? as i64),
            "BOOL" => Value::Int(row.try_get::<bool, _>(i)? as i64),
            "FLOAT8" => Value::Real(row.try_get::<f64, _>(i)?),
            "FLOAT4" => Value::Real(row.try_get::<f32, _>(i)? as f64),
            "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" => Value::Text(row.try_get::<String, _>(i)?),
            other => return Err(StoreError::Decode(format!("column {}: unsupported type {other}", col.name()))),
        };
        values.push(value);
    }
    Ok(Row(values))
}

#[async_trait]
impl Db for PgDb {
    fn backend(&self) -> Backend {
        Backend::Postgres
    }

    async fn execute(&mut self, sql: &str, params: &[Param<'_>]) -> Result<u64, StoreError> {
        let q = bind(sqlx::query(AssertSqlSafe(sql)), params);
        Ok(q.execute(&mut *self.conn).await?.rows_affected())
    }

    async fn query(&mut self, sql: &str, params: &[Param<'_>]) -> Result<Vec<Row>, StoreError> {
        let q = bind(sqlx::query(AssertSqlSafe(sql)), params);
        let mut stream = q.fetch(&mut *self.conn);
        let mut out = Vec::new();
        while let Some(row) = stream.try_next().await? {
            out.push(decode(&row)?);
        }
        Ok(out)
    }

    async fn execute_script(&mut self, sql: &str) -> Result<(), StoreError> {
        // The simple query protocol runs several statements in one round trip.
        (&mut *self.conn).execute(sqlx::raw_sql(AssertSqlSafe(sql))).await?;
        Ok(())
    }
}
