//! The store as the segment engine's source: the engine's [`IndexSource`] (its index
//! read at start and on demand) and its views of ingest batches ([`CommittedBatch`],
//! [`AcknowledgedBatch`]). The engine defines what it reads and depends on `siyu-core`
//! only; the store implements it here.

use std::collections::HashMap;

use siyu_core::{IdentityKind, Message, Timestamp};
use siyu_engine::build::{IndexBuilder, RowBatch};
use siyu_engine::index::Org;
use siyu_engine::ingest::{AcknowledgedBatch, Applied, CommittedBatch};
use siyu_engine::source::{EventRows, IndexSource, Progress, SavedSegment, SourceError, TraitRows};

use crate::bulk::Batch;
use crate::ingest::{Acknowledged, Committed};
use crate::{Db, Param, Row, Store, StoreError, counters, params};

/// Rows per page: memory holds one page at a time.
const PAGE: i64 = 50_000;

impl From<StoreError> for SourceError {
    fn from(e: StoreError) -> SourceError {
        SourceError(Box::new(e))
    }
}

/// The store's own error back from the engine's (the server maps it to a response).
impl From<SourceError> for StoreError {
    fn from(e: SourceError) -> StoreError {
        match e.0.downcast::<StoreError>() {
            Ok(e) => *e,
            Err(other) => StoreError::Io(other.to_string()),
        }
    }
}

#[async_trait::async_trait]
impl IndexSource for Store {
    async fn saved_segments(&self) -> Result<Vec<SavedSegment>, SourceError> {
        let saved = self.run(|db| Box::pin(crate::segments::list(db))).await?;
        Ok(saved.into_iter().map(|s| SavedSegment { name: s.name, rule: s.rule }).collect())
    }

    async fn read_index(&self, rows: IndexBuilder, progress: Progress) -> Result<(IndexBuilder, u64), SourceError> {
        Ok(self.run(move |db| Box::pin(in_snapshot(db, move |db| Box::pin(read_all(db, rows, progress))))).await?)
    }

    async fn read_trait(&self, rows: TraitRows) -> Result<(TraitRows, u64), SourceError> {
        Ok(self.run(move |db| Box::pin(in_snapshot(db, move |db| Box::pin(read_trait(db, rows))))).await?)
    }

    async fn read_events(&self, rows: EventRows) -> Result<(EventRows, u64), SourceError> {
        Ok(self.run(move |db| Box::pin(in_snapshot(db, move |db| Box::pin(read_events(db, rows))))).await?)
    }

    async fn guides_of(&self, profiles: Vec<u32>) -> Result<HashMap<u32, Vec<String>>, SourceError> {
        let guides = self
            .run(move |db| {
                Box::pin(async move {
                    let mut out: HashMap<u32, Vec<String>> = HashMap::new();
                    for p in profiles {
                        let rows = db
                            .query(
                                "SELECT staff_userid FROM staff_customers WHERE profile_id = $1 AND status = 'active'",
                                params![siyu_core::ProfileId::from_bit(p)],
                            )
                            .await?;
                        out.insert(p, rows.iter().map(|r| r.text(0)).collect::<Result<_, _>>()?);
                    }
                    Ok(out)
                })
            })
            .await?;
        Ok(guides)
    }

    async fn org(&self) -> Result<Org, SourceError> {
        Ok(self.run(|db| Box::pin(org(db))).await?)
    }
}

/// Runs `read` in one snapshot (a read transaction); returns what it read with the
/// ingest sequence number the snapshot is at.
async fn in_snapshot<T>(
    db: &mut dyn Db,
    read: impl for<'c> FnOnce(&'c mut dyn Db) -> futures::future::BoxFuture<'c, Result<T, StoreError>>,
) -> Result<(T, u64), StoreError> {
    db.begin_snapshot().await?;
    let result = async {
        let applied = counters::get(db, counters::INGEST_APPLIED_SEQ).await? as u64;
        Ok((read(&mut *db).await?, applied))
    }
    .await;
    db.rollback().await.ok();
    result
}

async fn org(db: &mut dyn Db) -> Result<Org, StoreError> {
    let mut org = Org::default();
    for r in db.query("SELECT userid, store_id FROM staff WHERE store_id IS NOT NULL", &[]).await? {
        org.staff_store.insert(r.text(0)?, r.text(1)?);
    }
    for r in db.query("SELECT id, city FROM stores", &[]).await? {
        org.store_city.insert(r.text(0)?, r.text(1)?);
    }
    Ok(org)
}

/// Where a keyset-paged read resumes: the last row's key.
#[derive(Clone)]
enum Cursor {
    Id(i64),
    IdId(i64, i64),
    IdText(i64, String),
    TextText(String, String),
}

impl Cursor {
    fn params(&self) -> Vec<Param<'_>> {
        match self {
            Cursor::Id(a) => vec![Param::Int(Some(*a))],
            Cursor::IdId(a, b) => vec![Param::Int(Some(*a)), Param::Int(Some(*b))],
            Cursor::IdText(a, b) => vec![Param::Int(Some(*a)), Param::Text(Some(b))],
            Cursor::TextText(a, b) => vec![Param::Text(Some(a)), Param::Text(Some(b))],
        }
    }
}

/// Pages through `sql`, whose parameters are `fixed`, then the cursor's, then the page
/// size, calling `each` on every row; `next` reads the cursor from a row.
async fn pages(
    db: &mut dyn Db,
    sql: &str,
    fixed: &[Param<'_>],
    mut cursor: Cursor,
    next: impl Fn(&Row) -> Result<Cursor, StoreError>,
    mut each: impl FnMut(&Row) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    loop {
        let rows = {
            let mut params: Vec<Param> = fixed.to_vec();
            params.extend(cursor.params());
            params.push(Param::Int(Some(PAGE)));
            db.query(sql, &params).await?
        };
        for r in &rows {
            each(r)?;
        }
        match rows.last() {
            Some(last) if rows.len() as i64 == PAGE => cursor = next(last)?,
            _ => return Ok(()),
        }
    }
}

async fn read_trait(db: &mut dyn Db, mut rows: TraitRows) -> Result<TraitRows, StoreError> {
    let key = rows.key().to_string();
    pages(
        db,
        "SELECT profile_id, value, updated_at FROM traits WHERE key = $1 AND profile_id > $2 ORDER BY profile_id LIMIT $3",
        params![key.as_str()],
        Cursor::Id(0),
        |r| Ok(Cursor::Id(r.int(0)?)),
        |r| {
            rows.add(r.profile(0)?.bit(), &r.text(1)?, Timestamp(r.int(2)?));
            Ok(())
        },
    )
    .await?;
    Ok(rows)
}

/// One event's occurrences through the events-by-name index, in time order.
async fn read_events(db: &mut dyn Db, mut rows: EventRows) -> Result<EventRows, StoreError> {
    let name = rows.event().to_string();
    pages(
        db,
        "SELECT id, profile_id, ts, payload FROM events
          WHERE name = $1 AND kind = 'track' AND (ts > $2 OR (ts = $2 AND id > $3))
          ORDER BY ts, id LIMIT $4",
        params![name.as_str()],
        Cursor::IdId(i64::MIN, 0),
        |r| Ok(Cursor::IdId(r.int(2)?, r.int(0)?)),
        |r| {
            rows.add(r.profile(1)?.bit(), Timestamp(r.int(2)?), &r.text(3)?);
            Ok(())
        },
    )
    .await?;
    Ok(rows)
}

/// The whole index's rows, in the order [`IndexSource::read_index`] promises.
async fn read_all(db: &mut dyn Db, mut b: IndexBuilder, progress: Progress) -> Result<IndexBuilder, StoreError> {
    b.org(org(db).await?);

    let mut n = 0u64;
    pages(
        db,
        "SELECT id FROM profiles WHERE merged_into IS NULL AND id > $1 ORDER BY id LIMIT $2",
        &[],
        Cursor::Id(0),
        |r| Ok(Cursor::Id(r.int(0)?)),
        |r| {
            b.profile(r.profile(0)?.bit());
            n += 1;
            progress("profiles", n);
            Ok(())
        },
    )
    .await?;

    let mut n = 0u64;
    pages(
        db,
        "SELECT kind, value, profile_id FROM identities WHERE kind > $1 OR (kind = $1 AND value > $2) ORDER BY kind, value LIMIT $3",
        &[],
        Cursor::TextText(String::new(), String::new()),
        |r| Ok(Cursor::TextText(r.text(0)?, r.text(1)?)),
        |r| {
            if let Some(kind) = IdentityKind::parse(&r.text(0)?) {
                b.identity(kind, &r.text(1)?, r.profile(2)?.bit());
            }
            n += 1;
            progress("identities", n);
            Ok(())
        },
    )
    .await?;

    let mut n = 0u64;
    let traits = b.trait_names();
    pages(
        db,
        "SELECT profile_id, key, value, updated_at FROM traits WHERE (profile_id > $1 OR (profile_id = $1 AND key > $2))
          ORDER BY profile_id, key LIMIT $3",
        &[],
        Cursor::IdText(0, String::new()),
        |r| Ok(Cursor::IdText(r.int(0)?, r.text(1)?)),
        |r| {
            let key = r.text(1)?;
            if traits.contains(&key) {
                b.trait_text(r.profile(0)?.bit(), &key, &r.text(2)?, Timestamp(r.int(3)?));
            }
            n += 1;
            progress("traits", n);
            Ok(())
        },
    )
    .await?;

    pages(
        db,
        "SELECT profile_id, tag FROM profile_tags WHERE (profile_id > $1 OR (profile_id = $1 AND tag > $2)) ORDER BY profile_id, tag LIMIT $3",
        &[],
        Cursor::IdText(0, String::new()),
        |r| Ok(Cursor::IdText(r.int(0)?, r.text(1)?)),
        |r| {
            b.tag(r.profile(0)?.bit(), &r.text(1)?);
            Ok(())
        },
    )
    .await?;

    pages(
        db,
        "SELECT profile_id, staff_userid FROM staff_customers
          WHERE status = 'active' AND (profile_id > $1 OR (profile_id = $1 AND staff_userid > $2))
          ORDER BY profile_id, staff_userid LIMIT $3",
        &[],
        Cursor::IdText(0, String::new()),
        |r| Ok(Cursor::IdText(r.int(0)?, r.text(1)?)),
        |r| {
            b.guide(r.profile(0)?.bit(), &r.text(1)?);
            Ok(())
        },
    )
    .await?;

    // Events in storage order, only those with a name that has an aggregate: the
    // database skips the rest without handing them over.
    let names = b.event_names();
    let list: Vec<String> = (1..=names.len()).map(|i| format!("${i}")).collect();
    let sql = format!(
        "SELECT id, profile_id, name, ts, payload FROM events WHERE kind = 'track' AND name IN ({}) AND id > ${} ORDER BY id LIMIT ${}",
        list.join(", "),
        names.len() + 1,
        names.len() + 2
    );
    let fixed: Vec<Param> = names.iter().map(|n| Param::Text(Some(n.as_str()))).collect();
    let mut n = 0u64;
    pages(
        db,
        &sql,
        &fixed,
        Cursor::Id(0),
        |r| Ok(Cursor::Id(r.int(0)?)),
        |r| {
            let name = r.opt_text(2)?.unwrap_or_default();
            if names.binary_search(&name).is_ok() {
                b.event(r.profile(1)?.bit(), &name, Timestamp(r.int(3)?), &r.text(4)?);
            }
            n += 1;
            progress("events", n);
            Ok(())
        },
    )
    .await?;
    Ok(b)
}

/// Bulk rows (the demo generator's) straight into an index.
impl RowBatch for Batch {
    fn add_to(&self, b: &mut IndexBuilder) {
        for p in &self.profiles {
            b.profile(p.id.bit());
        }
        for i in &self.identities {
            if let Some(kind) = IdentityKind::parse(i.kind) {
                b.identity(kind, &i.value, i.profile_id.bit());
            }
        }
        for t in &self.traits {
            b.trait_text(t.profile_id.bit(), t.key, &t.value, Timestamp(t.updated_at));
        }
        for t in &self.tags {
            b.tag(t.profile_id.bit(), &t.tag);
        }
        for r in self.relationships.iter().filter(|r| r.active) {
            b.guide(r.profile_id.bit(), &r.staff_userid);
        }
        for e in self.events.iter().filter(|e| e.kind == "track") {
            if let Some(name) = e.name {
                b.event(e.profile_id.bit(), name, Timestamp(e.ts), &e.payload);
            }
        }
    }
}

impl CommittedBatch for Committed {
    fn len(&self) -> usize {
        self.messages.len()
    }

    fn last_seq(&self) -> u64 {
        self.last_seq
    }

    fn get(&self, i: usize) -> (&Message, Applied<'_>) {
        let (msg, o) = &self.messages[i];
        (msg, Applied { profile_id: o.profile_id, merged: &o.merged, attached: &o.attached })
    }
}

impl AcknowledgedBatch for Acknowledged {
    fn first_seq(&self) -> u64 {
        self.first_seq
    }

    fn messages(&self) -> &[Message] {
        &self.messages
    }
}
