//! Reading the index from the store: one snapshot (a read transaction), read in pages
//! so memory holds one page of rows at a time.

use std::collections::HashMap;

use siyu_core::{IdentityKind, Timestamp};
use siyu_store::{Db, Param, Row, Store, StoreError, counters, params};

use crate::build::{IndexBuilder, Spec};
use crate::index::{Index, Org, SeriesKey};
use crate::lifecycle::LifecycleConfig;
use crate::series::Series;
use crate::time::secs;
use crate::traits::TraitColumn;

const PAGE: i64 = 50_000;

/// How far a load has come: (what, rows read so far).
pub type Progress = Box<dyn Fn(&str, u64) + Send + Sync>;

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

/// Who works where, read afresh (staff and stores change while Siyu runs).
pub async fn load_org(store: &Store) -> Result<Org, StoreError> {
    store.run(|db| Box::pin(org(db))).await
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

/// Builds the whole index from one snapshot of the store.
pub async fn load(store: &Store, config: LifecycleConfig, spec: Spec, now: Timestamp, progress: Progress) -> Result<Index, StoreError> {
    store
        .run(move |db| {
            Box::pin(async move {
                db.begin_snapshot().await?;
                let result = read_all(db, config, &spec, now, &progress).await;
                db.rollback().await.ok();
                result
            })
        })
        .await
}

async fn read_all(db: &mut dyn Db, config: LifecycleConfig, spec: &Spec, now: Timestamp, progress: &Progress) -> Result<Index, StoreError> {
    let applied = counters::get(db, counters::INGEST_APPLIED_SEQ).await? as u64;
    let mut b = IndexBuilder::new(config, spec, now);
    b.org(org(db).await?);

    let mut n = 0u64;
    pages(
        db,
        "SELECT id FROM profiles WHERE merged_into IS NULL AND id > $1 ORDER BY id LIMIT $2",
        &[],
        Cursor::Id(0),
        |r| Ok(Cursor::Id(r.int(0)?)),
        |r| {
            b.profile(r.int(0)? as u32);
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
                b.identity(kind, &r.text(1)?, r.int(2)? as u32);
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
                b.trait_text(r.int(0)? as u32, &key, &r.text(2)?, Timestamp(r.int(3)?));
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
            b.tag(r.int(0)? as u32, &r.text(1)?);
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
            b.guide(r.int(0)? as u32, &r.text(1)?);
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
                b.event(r.int(1)? as u32, &name, Timestamp(r.int(3)?), &r.text(4)?);
            }
            n += 1;
            progress("events", n);
            Ok(())
        },
    )
    .await?;
    Ok(b.finish(applied))
}

/// One trait, read after start: `(column, the ingest sequence the snapshot is at)`.
pub async fn load_trait(store: &Store, key: &str) -> Result<(TraitColumn, u64), StoreError> {
    let key = key.to_string();
    store
        .run(move |db| {
            Box::pin(async move {
                db.begin_snapshot().await?;
                let result = async {
                    let applied = counters::get(db, counters::INGEST_APPLIED_SEQ).await? as u64;
                    let mut column = TraitColumn::new();
                    pages(
                        db,
                        "SELECT profile_id, value, updated_at FROM traits WHERE key = $1 AND profile_id > $2 ORDER BY profile_id LIMIT $3",
                        params![key.as_str()],
                        Cursor::Id(0),
                        |r| Ok(Cursor::Id(r.int(0)?)),
                        |r| {
                            let json = r.text(1)?;
                            let value = serde_json::from_str(&json).unwrap_or(serde_json::Value::String(json));
                            column.set(r.int(0)? as u32, &value, secs(Timestamp(r.int(2)?)));
                            Ok(())
                        },
                    )
                    .await?;
                    Ok((column, applied))
                }
                .await;
                db.rollback().await.ok();
                result
            })
        })
        .await
}

/// One aggregate, read after start through the events-by-name index.
pub async fn load_series(store: &Store, key: SeriesKey, now: Timestamp) -> Result<(Series, u64), StoreError> {
    store
        .run(move |db| {
            Box::pin(async move {
                db.begin_snapshot().await?;
                let result = async {
                    let applied = counters::get(db, counters::INGEST_APPLIED_SEQ).await? as u64;
                    let mut rows = Vec::new();
                    pages(
                        db,
                        "SELECT id, profile_id, ts, payload FROM events
                          WHERE name = $1 AND kind = 'track' AND (ts > $2 OR (ts = $2 AND id > $3))
                          ORDER BY ts, id LIMIT $4",
                        params![key.event.as_str()],
                        Cursor::IdId(i64::MIN, 0),
                        |r| Ok(Cursor::IdId(r.int(2)?, r.int(0)?)),
                        |r| {
                            let payload: serde_json::Value = serde_json::from_str(&r.text(3)?).unwrap_or(serde_json::Value::Null);
                            if let Some(v) = key.accept(&payload, now) {
                                rows.push((r.int(1)? as u32, secs(Timestamp(r.int(2)?)), v));
                            }
                            Ok(())
                        },
                    )
                    .await?;
                    Ok((Series::from_events(key.measure.is_some(), rows), applied))
                }
                .await;
                db.rollback().await.ok();
                result
            })
        })
        .await
}

/// The active guides of some profiles, as the store has them now.
pub async fn guides_of(store: &Store, profiles: Vec<u32>) -> Result<HashMap<u32, Vec<String>>, StoreError> {
    store
        .run(move |db| {
            Box::pin(async move {
                let mut out: HashMap<u32, Vec<String>> = HashMap::new();
                for p in profiles {
                    let rows = db.query("SELECT staff_userid FROM staff_customers WHERE profile_id = $1 AND status = 'active'", params![p as i64]).await?;
                    out.insert(p, rows.iter().map(|r| r.text(0)).collect::<Result<_, _>>()?);
                }
                Ok(out)
            })
        })
        .await
}
