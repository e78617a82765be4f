//! Versioned schema migrations, one SQL file per backend per version, applied in order
//! inside a transaction each and recorded in `schema_migrations` with the sha256 of the
//! file's text. At every start each applied migration's recorded checksum is compared
//! with the file: a migration edited after it ran would leave databases that ran the old
//! text and databases that ran the new one with different schemas under one version.

use sha2::{Digest, Sha256};
use siyu_core::Timestamp;

use crate::sql::{self, Backend, Db};
use crate::{StoreError, params};

struct Migration {
    version: i64,
    name: &'static str,
    sqlite: &'static str,
    postgres: &'static str,
}

impl Migration {
    fn sql(&self, backend: Backend) -> &'static str {
        match backend {
            Backend::Sqlite => self.sqlite,
            Backend::Postgres => self.postgres,
        }
    }

    /// The file's name, as errors name it: `0004_outreach.sql`.
    fn file_name(&self) -> String {
        format!("{:04}_{}.sql", self.version, self.name)
    }

    /// Where the file is in the source tree, for errors: `migrations/sqlite/0004_outreach.sql`.
    fn path(&self, backend: Backend) -> String {
        let dir = match backend {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        };
        format!("migrations/{dir}/{}", self.file_name())
    }
}

/// What `schema_migrations.checksum` holds: the lowercase hex sha256 of the file's text.
fn checksum(sql: &str) -> String {
    hex::encode(Sha256::digest(sql.as_bytes()))
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
    Migration {
        version: 8,
        name: "console",
        sqlite: include_str!("../migrations/sqlite/0008_console.sql"),
        postgres: include_str!("../migrations/postgres/0008_console.sql"),
    },
];

/// Brings the schema up to date; returns the versions it applied. Fails before applying
/// any migration when an applied one's file has changed since.
pub async fn migrate(db: &mut dyn Db) -> Result<Vec<i64>, StoreError> {
    db.execute_script(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version    BIGINT PRIMARY KEY,
             name       TEXT NOT NULL,
             applied_at BIGINT NOT NULL,
             checksum   TEXT)",
    )
    .await?;
    add_checksums(db).await?;
    verify_checksums(db).await?;
    let backend = db.backend();
    let mut applied = Vec::new();
    for m in MIGRATIONS {
        db.begin().await?;
        if backend == Backend::Postgres {
            // Two servers starting at once must not both apply a migration.
            db.execute_script("LOCK TABLE schema_migrations IN EXCLUSIVE MODE").await?;
        }
        let done = db.query_opt("SELECT version FROM schema_migrations WHERE version = $1", params![m.version]).await?.is_some();
        if done {
            db.rollback().await?;
            continue;
        }
        let text = m.sql(backend);
        let result = async {
            db.execute_script(text).await?;
            db.execute(
                "INSERT INTO schema_migrations (version, name, applied_at, checksum) VALUES ($1, $2, $3, $4)",
                params![m.version, m.name, Timestamp::now().0, &checksum(text)],
            )
            .await
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

/// Upgrades a `schema_migrations` made before checksums existed: adds the column and
/// records, for migrations already applied, the checksums of the files as they are now
/// (what they were when applied is not known any more).
async fn add_checksums(db: &mut dyn Db) -> Result<(), StoreError> {
    let backend = db.backend();
    db.begin().await?;
    let result = async {
        if backend == Backend::Postgres {
            // Two servers upgrading at once: one adds the column, the other waits and then sees it.
            db.execute_script("LOCK TABLE schema_migrations IN EXCLUSIVE MODE").await?;
        }
        let has_column = match backend {
            Backend::Sqlite => "SELECT COUNT(*) FROM pragma_table_info('schema_migrations') WHERE name = 'checksum'",
            Backend::Postgres => {
                "SELECT COUNT(*) FROM information_schema.columns
                  WHERE table_schema = current_schema() AND table_name = 'schema_migrations' AND column_name = 'checksum'"
            }
        };
        if db.query_one(has_column, &[]).await?.int(0)? == 0 {
            db.execute_script("ALTER TABLE schema_migrations ADD COLUMN checksum TEXT").await?;
            tracing::info!("schema_migrations: added the checksum column");
        }
        // Only rows without one: a checksum recorded when the migration ran is kept.
        for m in MIGRATIONS {
            db.execute("UPDATE schema_migrations SET checksum = $1 WHERE version = $2 AND checksum IS NULL", params![&checksum(m.sql(backend)), m.version])
                .await?;
        }
        Ok(())
    }
    .await;
    sql::finish(db, result).await
}

/// Every applied migration this build knows must have the checksum of its file.
/// (Versions it does not know were applied by a newer build; they are not judged.)
async fn verify_checksums(db: &mut dyn Db) -> Result<(), StoreError> {
    let backend = db.backend();
    let rows = db.query("SELECT version, checksum FROM schema_migrations WHERE checksum IS NOT NULL", &[]).await?;
    for row in rows {
        let (version, recorded) = (row.int(0)?, row.text(1)?);
        let Some(m) = MIGRATIONS.iter().find(|m| m.version == version) else { continue };
        let now = checksum(m.sql(backend));
        if recorded != now {
            return Err(StoreError::Config(format!(
                "migration {} was changed after it was applied: the database recorded sha256 {recorded}, {} is now sha256 {now}; \
                 restore the file as it was and make the change in a new migration",
                m.file_name(),
                m.path(backend)
            )));
        }
    }
    Ok(())
}
