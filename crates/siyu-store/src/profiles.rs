//! Reading profiles: lookup by any identity, the full profile with its identities,
//! traits, tags, owning guides and recent events, the event timeline, manual tags.

use serde::Serialize;
use serde_json::{Map, Value as Json};
use siyu_core::{Identity, ProfileId, Timestamp};
use utoipa::ToSchema;

use crate::sql::{Db, Row};
use crate::{StoreError, counters, params};

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ProfileView {
    pub id: ProfileId,
    pub uuid: String,
    pub created_at: Timestamp,
    pub first_seen: Timestamp,
    pub last_seen: Timestamp,
    pub identities: Vec<IdentityView>,
    #[schema(value_type = Object)]
    pub traits: Map<String, Json>,
    pub tags: Vec<String>,
    /// The guides who have added this customer on WeCom.
    pub owners: Vec<Ownership>,
    /// Profiles that were merged into this one.
    pub merged_from: Vec<ProfileId>,
    pub recent_events: Vec<EventView>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct IdentityView {
    pub kind: String,
    /// Phones and e-mail addresses are shown as the SHA-256 of their normal form (the
    /// `phone` and `email` traits hold them in the clear); openids as `appid:openid`.
    pub value: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Ownership {
    pub staff_userid: String,
    pub staff_name: Option<String>,
    pub store_id: Option<String>,
    /// `active`, or `deleted` once either side removed the other.
    pub status: String,
    pub added_at: Timestamp,
    pub removed_at: Option<Timestamp>,
    /// The `state` of the contact way (live QR code) the customer added through.
    pub state: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EventView {
    pub id: i64,
    pub message_id: String,
    /// identify, track, page, screen, group or alias.
    #[serde(rename = "type")]
    pub kind: String,
    /// Track: the event name; page/screen: the page name.
    pub name: Option<String>,
    pub timestamp: Timestamp,
    pub received_at: Timestamp,
    pub user_id: Option<String>,
    pub anonymous_id: Option<String>,
    /// Properties (track, page, screen) or traits (identify, group).
    #[schema(value_type = Object)]
    pub payload: Json,
    #[schema(value_type = Option<Object>)]
    pub context: Option<Json>,
}

#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub struct Stats {
    /// Live profiles (merged ones are not counted).
    pub profiles: i64,
    /// Stored events.
    pub events: i64,
}

pub async fn find_by_identity(db: &mut dyn Db, identity: &Identity) -> Result<Option<ProfileId>, StoreError> {
    let row = db.query_opt("SELECT profile_id FROM identities WHERE kind = $1 AND value = $2", params![identity.kind.as_str(), &identity.value]).await?;
    row.map(|r| r.profile(0)).transpose()
}

/// The live profile for an id, following merges; `None` if no such profile.
pub async fn live_id(db: &mut dyn Db, id: ProfileId) -> Result<Option<ProfileId>, StoreError> {
    let row = db.query_opt("SELECT id, merged_into FROM profiles WHERE id = $1", params![id]).await?;
    match row {
        None => Ok(None),
        Some(r) => Ok(Some(r.opt_profile(1)?.unwrap_or(r.profile(0)?))),
    }
}

pub async fn find_by_uuid(db: &mut dyn Db, uuid: &str) -> Result<Option<ProfileId>, StoreError> {
    let row = db.query_opt("SELECT id, merged_into FROM profiles WHERE uuid = $1", params![uuid]).await?;
    match row {
        None => Ok(None),
        Some(r) => Ok(Some(r.opt_profile(1)?.unwrap_or(r.profile(0)?))),
    }
}

pub async fn load(db: &mut dyn Db, id: ProfileId, recent_events: i64) -> Result<Option<ProfileView>, StoreError> {
    let Some(id) = live_id(db, id).await? else { return Ok(None) };
    let p = db.query_one("SELECT id, uuid, created_at FROM profiles WHERE id = $1", params![id]).await?;
    // First and last seen come from the timeline's index (two index probes) rather than
    // a column every event would have to rewrite.
    let created_at = Timestamp(p.int(2)?);
    let seen = db.query_one("SELECT MIN(ts), MAX(ts) FROM events WHERE profile_id = $1", params![id]).await?;
    let identities = db
        .query("SELECT kind, value FROM identities WHERE profile_id = $1 ORDER BY kind, value", params![id])
        .await?
        .iter()
        .map(|r| Ok(IdentityView { kind: r.text(0)?, value: r.text(1)? }))
        .collect::<Result<Vec<_>, StoreError>>()?;
    let mut traits = Map::new();
    for r in db.query("SELECT key, value FROM traits WHERE profile_id = $1 ORDER BY key", params![id]).await? {
        traits.insert(r.text(0)?, parse_json(&r.text(1)?));
    }
    let tags = db
        .query("SELECT tag FROM profile_tags WHERE profile_id = $1 ORDER BY tag", params![id])
        .await?
        .iter()
        .map(|r| r.text(0))
        .collect::<Result<Vec<_>, _>>()?;
    let owners = owners(db, id).await?;
    let merged_from = db
        .query("SELECT merged FROM merges WHERE survivor = $1 ORDER BY id", params![id])
        .await?
        .iter()
        .map(|r| r.profile(0))
        .collect::<Result<Vec<_>, _>>()?;
    let recent_events = events_page(db, id, None, recent_events).await?;
    Ok(Some(ProfileView {
        id,
        uuid: p.text(1)?,
        created_at,
        first_seen: seen.opt_int(0)?.map(Timestamp).unwrap_or(created_at),
        last_seen: seen.opt_int(1)?.map(Timestamp).unwrap_or(created_at),
        identities,
        traits,
        tags,
        owners,
        merged_from,
        recent_events,
    }))
}

pub async fn owners(db: &mut dyn Db, id: ProfileId) -> Result<Vec<Ownership>, StoreError> {
    db.query(
        "SELECT sc.staff_userid, s.name, s.store_id, sc.status, sc.added_at, sc.removed_at, sc.state
           FROM staff_customers sc LEFT JOIN staff s ON s.userid = sc.staff_userid
          WHERE sc.profile_id = $1 ORDER BY sc.added_at",
        params![id],
    )
    .await?
    .iter()
    .map(|r| {
        Ok(Ownership {
            staff_userid: r.text(0)?,
            staff_name: r.opt_text(1)?,
            store_id: r.opt_text(2)?,
            status: r.text(3)?,
            added_at: Timestamp(r.int(4)?),
            removed_at: r.opt_int(5)?.map(Timestamp),
            state: r.opt_text(6)?,
        })
    })
    .collect()
}

/// Where a timeline page ends: the next page starts strictly before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventCursor {
    pub ts: i64,
    pub id: i64,
}

impl EventCursor {
    pub fn encode(&self) -> String {
        format!("{}_{}", self.ts, self.id)
    }

    pub fn decode(s: &str) -> Option<EventCursor> {
        let (ts, id) = s.split_once('_')?;
        Some(EventCursor { ts: ts.parse().ok()?, id: id.parse().ok()? })
    }
}

/// The profile's events, newest first.
pub async fn events_page(db: &mut dyn Db, id: ProfileId, before: Option<EventCursor>, limit: i64) -> Result<Vec<EventView>, StoreError> {
    const COLUMNS: &str = "id, message_id, kind, name, ts, received_at, user_id, anonymous_id, payload, context";
    let rows = match before {
        None => db.query(&format!("SELECT {COLUMNS} FROM events WHERE profile_id = $1 ORDER BY ts DESC, id DESC LIMIT $2"), params![id, limit]).await?,
        Some(c) => {
            db.query(
                &format!(
                    "SELECT {COLUMNS} FROM events WHERE profile_id = $1 AND (ts < $2 OR (ts = $2 AND id < $3))
                      ORDER BY ts DESC, id DESC LIMIT $4"
                ),
                params![id, c.ts, c.id, limit],
            )
            .await?
        }
    };
    rows.iter().map(event_view).collect()
}

fn event_view(r: &Row) -> Result<EventView, StoreError> {
    Ok(EventView {
        id: r.int(0)?,
        message_id: r.text(1)?,
        kind: r.text(2)?,
        name: r.opt_text(3)?,
        timestamp: Timestamp(r.int(4)?),
        received_at: Timestamp(r.int(5)?),
        user_id: r.opt_text(6)?,
        anonymous_id: r.opt_text(7)?,
        payload: parse_json(&r.text(8)?),
        context: r.opt_text(9)?.map(|c| parse_json(&c)),
    })
}

pub(crate) fn parse_json(text: &str) -> Json {
    serde_json::from_str(text).unwrap_or_else(|_| Json::String(text.to_string()))
}

/// Adds a tag; returns whether it was new.
pub async fn add_tag(db: &mut dyn Db, id: ProfileId, tag: &str, source: &str, at: Timestamp) -> Result<bool, StoreError> {
    let n = db
        .execute(
            "INSERT INTO profile_tags (profile_id, tag, source, created_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (profile_id, tag) DO NOTHING",
            params![id, tag, source, at.0],
        )
        .await?;
    Ok(n > 0)
}

/// Removes a tag; returns whether it was there.
pub async fn remove_tag(db: &mut dyn Db, id: ProfileId, tag: &str) -> Result<bool, StoreError> {
    let n = db.execute("DELETE FROM profile_tags WHERE profile_id = $1 AND tag = $2", params![id, tag]).await?;
    Ok(n > 0)
}

pub async fn stats(db: &mut dyn Db) -> Result<Stats, StoreError> {
    Ok(Stats { profiles: counters::get(db, counters::PROFILES).await?, events: counters::get(db, counters::EVENTS).await? })
}

/// A line about a profile, for lists, samples and exports.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ProfileSummary {
    pub id: ProfileId,
    pub uuid: String,
    pub user_id: Option<String>,
    pub name: Option<String>,
    pub city: Option<String>,
    pub phone: Option<String>,
}

fn trait_text(row: &Row, i: usize) -> Result<Option<String>, StoreError> {
    Ok(row.opt_text(i)?.map(|t| match parse_json(&t) {
        Json::String(s) => s,
        other => other.to_string(),
    }))
}

/// Summaries of the given profiles, in the order given (missing ones left out).
pub async fn summaries(db: &mut dyn Db, ids: &[ProfileId]) -> Result<Vec<ProfileSummary>, StoreError> {
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let row = db
            .query_opt(
                "SELECT p.id, p.uuid,
                        (SELECT value FROM identities WHERE profile_id = p.id AND kind = 'user_id' LIMIT 1),
                        (SELECT value FROM traits WHERE profile_id = p.id AND key = 'name'),
                        (SELECT value FROM traits WHERE profile_id = p.id AND key = 'city'),
                        (SELECT value FROM traits WHERE profile_id = p.id AND key = 'phone')
                   FROM profiles p WHERE p.id = $1 AND p.merged_into IS NULL",
                params![*id],
            )
            .await?;
        if let Some(r) = row {
            out.push(ProfileSummary {
                id: r.profile(0)?,
                uuid: r.text(1)?,
                user_id: r.opt_text(2)?,
                name: trait_text(&r, 3)?,
                city: trait_text(&r, 4)?,
                phone: trait_text(&r, 5)?,
            });
        }
    }
    Ok(out)
}

/// Live profiles in id order, after `after`.
pub async fn list(db: &mut dyn Db, after: ProfileId, limit: i64) -> Result<Vec<ProfileId>, StoreError> {
    db.query("SELECT id FROM profiles WHERE merged_into IS NULL AND id > $1 ORDER BY id LIMIT $2", params![after, limit])
        .await?
        .iter()
        .map(|r| r.profile(0))
        .collect()
}
