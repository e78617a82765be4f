//! Versioned schema migrations, one SQL file per backend per version, applied in order
//! inside a transaction each and recorded in `schema_migrations`.

use siyu_core::Timestamp;

use crate::sql::{Backend, Db};
use crate::{StoreError, params};

struct Migration {
    version: i64,
    name: &'static str,
    sqlite: &'static str,
    postgres: &'static str,
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "customer_graph",
        sqlite: include_str!("../migrations/sqlite/0001_customer_graph.sql"),
        postgres: include_str!("../migrations/postgres/0001_customer_graph.sql"),
    },
    Migration {
        version: 2,
        name: "segments",
        sqlite: include_str!("../migrations/sqlite/0002_segments.sql"),
        postgres: include_str!("../migrations/postgres/0002_segments.sql"),
    },
    Migration {
        version: 3,
        name: "merge_chains",
        sqlite: include_str!("../migrations/sqlite/0003_merge_chains.sql"),
        postgres: include_str!("../migrations/postgres/0003_merge_chains.sql"),
    },
    Migration {
        version: 4,
        name: "outreach",
        sqlite: include_str!("../migrations/sqlite/0004_outreach.sql"),
        postgres: include_str!("../migrations/postgres/0004_outreach.sql"),
    },
    Migration {
        version: 5,
        name: "wecom",
        sqlite: include_str!("../migrations/sqlite/0005_wecom.sql"),
        postgres: include_str!("../migrations/postgres/0005_wecom.sql"),
    },
    Migration {
        version: 6,
        name: "transfers",
        sqlite: include_str!("../migrations/sqlite/0006_transfers.sql"),
        postgres: include_str!("../migrations/postgres/0006_transfers.sql"),
    },
    Migration {
        version: 7,
        name: "reported_membership",
        sqlite: include_str!("../migrations/sqlite/0007_reported_membership.sql"),
        postgres: include_str!("../migrations/postgres/0007_reported_membership.sql"),
    },
];

/// Brings the schema up to date; returns the versions it applied.
pub async fn migrate(db: &mut dyn Db) -> Result<Vec<i64>, StoreError> {
    db.execute_script(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    BIGINT PRIMARY KEY,
             name       TEXT NOT NULL,
             applied_at BIGINT NOT NULL)",
    )
    .await?;
    let mut applied = Vec::new();
    for m in MIGRATIONS {
        db.begin().await?;
        if db.backend() == Backend::Postgres {
            // Two servers starting at once must not both apply a migration.
            db.execute_script("LOCK TABLE schema_migrations IN EXCLUSIVE MODE").await?;
        }
        let done = db.query_opt("SELECT version FROM schema_migrations WHERE version = $1", params![m.version]).await?.is_some();
        if done {
            db.rollback().await?;
            continue;
        }
        let sql = match db.backend() {
            Backend::Sqlite => m.sqlite,
            Backend::Postgres => m.postgres,
        };
        let result = async {
            db.execute_script(sql).await?;
            db.execute("INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)", params![m.version, m.name, Timestamp::now().0]).await
        }
        .await;
        match result {
            Ok(_) => {
                db.commit().await?;
                tracing::info!(version = m.version, name = m.name, "applied migration");
                applied.push(m.version);
            }
            Err(e) => {
                db.rollback().await.ok();
                return Err(StoreError::Config(format!("migration {} ({}) failed: {e}", m.version, m.name)));
            }
        }
    }
    Ok(applied)
}
