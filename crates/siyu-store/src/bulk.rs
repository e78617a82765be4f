//! Fast loading of generated data (the demo brand, benchmark brands) into an empty
//! store. Rows arrive in batches grouped by profile, in profile-id order, so every index
//! but the identity key is appended to rather than scattered. Ingest's guarantees
//! (messageId dedup, identity resolution) are the generator's job here: it produces
//! already-resolved profiles. Imports of real data go through [`crate::ingest::apply`].

use std::sync::mpsc as std_mpsc;
use std::thread::JoinHandle;

use siyu_core::ProfileId;

use crate::sql::Db;
use crate::sqlite::{ConnRole, SqliteDb};
use crate::{Store, StoreError, counters, params};

pub struct ProfileRow {
    pub id: ProfileId,
    pub uuid: String,
    pub created_at: i64,
}

pub struct IdentityRow {
    pub kind: &'static str,
    pub value: String,
    pub profile_id: ProfileId,
    pub created_at: i64,
}

pub struct TraitRow {
    pub profile_id: ProfileId,
    pub key: &'static str,
    /// JSON text.
    pub value: String,
    pub updated_at: i64,
}

pub struct EventRow {
    pub profile_id: ProfileId,
    pub message_id: String,
    pub kind: &'static str,
    pub name: Option<&'static str>,
    pub ts: i64,
    pub received_at: i64,
    pub user_id: Option<String>,
    pub anonymous_id: Option<String>,
    /// JSON text.
    pub payload: String,
    pub context: Option<String>,
}

pub struct TagRow {
    pub profile_id: ProfileId,
    pub tag: String,
    pub source: &'static str,
    pub created_at: i64,
}

pub struct RelationshipRow {
    pub profile_id: ProfileId,
    pub staff_userid: String,
    pub active: bool,
    pub added_at: i64,
    pub removed_at: Option<i64>,
    pub state: Option<String>,
}

#[derive(Default)]
pub struct Batch {
    pub profiles: Vec<ProfileRow>,
    pub identities: Vec<IdentityRow>,
    pub traits: Vec<TraitRow>,
    pub events: Vec<EventRow>,
    pub tags: Vec<TagRow>,
    pub relationships: Vec<RelationshipRow>,
}

impl Batch {
    pub fn rows(&self) -> usize {
        self.profiles.len() + self.identities.len() + self.traits.len() + self.events.len() + self.tags.len() + self.relationships.len()
    }
}

/// Writes batches; SQLite on its own thread so generation and writing overlap.
pub struct BulkLoader {
    store: Store,
    sink: Sink,
}

enum Sink {
    Sqlite { tx: Option<std_mpsc::SyncSender<Batch>>, worker: Option<JoinHandle<Result<(), StoreError>>> },
    Postgres,
}

impl BulkLoader {
    /// Starts loading into `store`, which must hold no profiles yet.
    pub async fn begin(store: &Store) -> Result<BulkLoader, StoreError> {
        let existing = store.run(|db| Box::pin(async move { db.query_one("SELECT COUNT(*) FROM profiles", &[]).await?.int(0) })).await?;
        if existing > 0 {
            return Err(StoreError::Invalid(format!("bulk loading needs an empty store; this one has {existing} profiles")));
        }
        let sink = match store.sqlite_path() {
            Some(path) => {
                let mut db = SqliteDb::open(path, ConnRole::Writer)?;
                // Generated data can be regenerated: no fsync while loading.
                db.execute_script("PRAGMA synchronous = OFF").await?;
                let (tx, rx) = std_mpsc::sync_channel::<Batch>(2);
                let worker = std::thread::Builder::new()
                    .name("bulk-loader".into())
                    .spawn(move || {
                        for batch in rx {
                            futures::executor::block_on(write_rows(&mut db, &batch))?;
                        }
                        Ok(())
                    })
                    .map_err(|e| StoreError::Io(e.to_string()))?;
                Sink::Sqlite { tx: Some(tx), worker: Some(worker) }
            }
            None => Sink::Postgres,
        };
        Ok(BulkLoader { store: store.clone(), sink })
    }

    pub async fn write(&mut self, batch: Batch) -> Result<(), StoreError> {
        match &mut self.sink {
            Sink::Sqlite { tx, worker } => {
                let sent = tx.as_ref().map(|t| t.send(batch).is_ok()).unwrap_or(false);
                if !sent {
                    // The worker stopped: surface its error.
                    tx.take();
                    return match worker.take().map(JoinHandle::join) {
                        Some(Ok(Err(e))) => Err(e),
                        _ => Err(StoreError::Io("bulk loader stopped".into())),
                    };
                }
                Ok(())
            }
            Sink::Postgres => copy_batch(&self.store, &batch).await,
        }
    }

    /// Waits for every batch to be written, then brings counters and sequences up to date.
    pub async fn finish(mut self) -> Result<(), StoreError> {
        if let Sink::Sqlite { tx, worker } = &mut self.sink {
            tx.take();
            if let Some(w) = worker.take() {
                w.join().map_err(|_| StoreError::Io("bulk loader panicked".into()))??;
            }
        }
        let postgres = self.store.pg_pool().is_some();
        self.store
            .run(move |db| {
                Box::pin(async move {
                    counters::recount(db).await?;
                    if postgres {
                        for table in ["profiles", "events"] {
                            db.execute_script(&format!(
                                "SELECT setval(pg_get_serial_sequence('{table}', 'id'), COALESCE((SELECT MAX(id) FROM {table}), 0) + 1, false);
                                 ANALYZE {table};"
                            ))
                            .await?;
                        }
                    } else {
                        db.execute_script("ANALYZE").await?;
                    }
                    Ok(())
                })
            })
            .await
    }
}

async fn write_rows(db: &mut dyn Db, b: &Batch) -> Result<(), StoreError> {
    db.begin().await?;
    for p in &b.profiles {
        db.execute("INSERT INTO profiles (id, uuid, created_at) VALUES ($1, $2, $3)", params![p.id, &p.uuid, p.created_at]).await?;
    }
    for i in &b.identities {
        db.execute(
            "INSERT INTO identities (kind, value, profile_id, created_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (kind, value) DO NOTHING",
            params![i.kind, &i.value, i.profile_id, i.created_at],
        )
        .await?;
    }
    for t in &b.traits {
        db.execute("INSERT INTO traits (profile_id, key, value, updated_at) VALUES ($1, $2, $3, $4)", params![t.profile_id, t.key, &t.value, t.updated_at])
            .await?;
    }
    for e in &b.events {
        db.execute(
            "INSERT INTO events (profile_id, message_id, kind, name, ts, received_at, user_id, anonymous_id, payload, context)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            params![e.profile_id, &e.message_id, e.kind, e.name, e.ts, e.received_at, &e.user_id, &e.anonymous_id, &e.payload, &e.context],
        )
        .await?;
    }
    for t in &b.tags {
        db.execute(
            "INSERT INTO profile_tags (profile_id, tag, source, created_at) VALUES ($1, $2, $3, $4)",
            params![t.profile_id, &t.tag, t.source, t.created_at],
        )
        .await?;
    }
    for r in &b.relationships {
        db.execute(
            "INSERT INTO staff_customers (profile_id, staff_userid, status, added_at, removed_at, state)
             VALUES ($1, $2, $3, $4, $5, $6)",
            params![r.profile_id, &r.staff_userid, status(r.active), r.added_at, r.removed_at, &r.state],
        )
        .await?;
    }
    db.commit().await
}

fn status(active: bool) -> &'static str {
    if active { "active" } else { "deleted" }
}

/// PostgreSQL: one `COPY … FROM STDIN` per table per batch.
async fn copy_batch(store: &Store, b: &Batch) -> Result<(), StoreError> {
    let pool = store.pg_pool().expect("postgres store");
    let mut conn = pool.acquire().await?;
    let mut tables: Vec<(&str, String)> = Vec::new();
    let mut buf = String::new();
    for p in &b.profiles {
        row(&mut buf, &[Cell::Int(p.id.get()), Cell::Text(&p.uuid), Cell::Int(p.created_at)]);
    }
    tables.push(("profiles (id, uuid, created_at)", std::mem::take(&mut buf)));
    for i in &b.identities {
        row(&mut buf, &[Cell::Text(i.kind), Cell::Text(&i.value), Cell::Int(i.profile_id.get()), Cell::Int(i.created_at)]);
    }
    tables.push(("identities (kind, value, profile_id, created_at)", std::mem::take(&mut buf)));
    for t in &b.traits {
        row(&mut buf, &[Cell::Int(t.profile_id.get()), Cell::Text(t.key), Cell::Text(&t.value), Cell::Int(t.updated_at)]);
    }
    tables.push(("traits (profile_id, key, value, updated_at)", std::mem::take(&mut buf)));
    for e in &b.events {
        row(
            &mut buf,
            &[
                Cell::Int(e.profile_id.get()),
                Cell::Text(&e.message_id),
                Cell::Text(e.kind),
                Cell::OptText(e.name),
                Cell::Int(e.ts),
                Cell::Int(e.received_at),
                Cell::OptText(e.user_id.as_deref()),
                Cell::OptText(e.anonymous_id.as_deref()),
                Cell::Text(&e.payload),
                Cell::OptText(e.context.as_deref()),
            ],
        );
    }
    tables.push(("events (profile_id, message_id, kind, name, ts, received_at, user_id, anonymous_id, payload, context)", std::mem::take(&mut buf)));
    for t in &b.tags {
        row(&mut buf, &[Cell::Int(t.profile_id.get()), Cell::Text(&t.tag), Cell::Text(t.source), Cell::Int(t.created_at)]);
    }
    tables.push(("profile_tags (profile_id, tag, source, created_at)", std::mem::take(&mut buf)));
    for r in &b.relationships {
        row(
            &mut buf,
            &[
                Cell::Int(r.profile_id.get()),
                Cell::Text(&r.staff_userid),
                Cell::Text(status(r.active)),
                Cell::Int(r.added_at),
                Cell::OptInt(r.removed_at),
                Cell::OptText(r.state.as_deref()),
            ],
        );
    }
    tables.push(("staff_customers (profile_id, staff_userid, status, added_at, removed_at, state)", buf));

    for (target, data) in tables {
        if data.is_empty() {
            continue;
        }
        let mut copy = conn.copy_in_raw(&format!("COPY {target} FROM STDIN")).await?;
        copy.send(data.into_bytes()).await?;
        copy.finish().await?;
    }
    Ok(())
}

enum Cell<'a> {
    Int(i64),
    OptInt(Option<i64>),
    Text(&'a str),
    OptText(Option<&'a str>),
}

/// One row in COPY's text format: tab-separated, `\N` for null, backslash escapes.
fn row(buf: &mut String, cells: &[Cell]) {
    for (i, cell) in cells.iter().enumerate() {
        if i > 0 {
            buf.push('\t');
        }
        match cell {
            Cell::Int(v) | Cell::OptInt(Some(v)) => buf.push_str(&v.to_string()),
            Cell::Text(s) | Cell::OptText(Some(s)) => {
                for c in s.chars() {
                    match c {
                        '\\' => buf.push_str("\\\\"),
                        '\t' => buf.push_str("\\t"),
                        '\n' => buf.push_str("\\n"),
                        '\r' => buf.push_str("\\r"),
                        c => buf.push(c),
                    }
                }
            }
            Cell::OptInt(None) | Cell::OptText(None) => buf.push_str("\\N"),
        }
    }
    buf.push('\n');
}
