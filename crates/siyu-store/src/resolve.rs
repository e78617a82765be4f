//! Identity resolution: find or create the one profile a message is about, merging
//! profiles the message proves to be the same customer.
//!
//! Rules, in order:
//! 1. Every identity the message names is looked up (`userId`, `anonymousId`,
//!    `context.externalIds`, the `phone` trait; for `alias`, `previousId` as a user id
//!    or an anonymous id).
//! 2. None found: a new profile gets them all.
//! 3. Found profiles merge into the oldest, which survives; the others' identities,
//!    events, traits (latest timestamp wins), tags and guides move to it, and the merge
//!    is recorded. Old identities keep resolving because they now point at the survivor.
//! 4. A profile has at most one `userId`. An implicit link (a shared device id, say)
//!    between profiles of two different user ids does not merge them: the message goes
//!    to its own user's profile and the shared identity stays where it was. An `alias`
//!    is an explicit statement that two ids are one customer and always merges.

use std::collections::HashMap;

use siyu_core::{Identity, IdentityKind, Message, ProfileId, Timestamp};

use crate::sql::Db;
use crate::{StoreError, counters, params};

/// Identities the indexer has seen, so a known customer costs no lookup. While Siyu
/// runs the indexer is the only writer of identities: it updates the cache when it
/// attaches identities and when it merges profiles. Merges made by anyone else (an
/// import from the command line) move the store's `merges` counter past what the cache
/// has seen, and the cache starts afresh.
#[derive(Debug, Default)]
pub struct IdentityCache {
    /// foldhash: the cache is read for every message; SipHash's flooding defence buys
    /// nothing for keys the store already accepted.
    map: HashMap<Identity, ProfileId, foldhash::fast::RandomState>,
    merges_seen: i64,
}

/// Identities cached at most; beyond this the cache starts afresh.
const CACHE_LIMIT: usize = 4_000_000;

impl IdentityCache {
    /// Before a batch: forget everything if someone else merged profiles.
    pub async fn check(&mut self, db: &mut dyn Db) -> Result<(), StoreError> {
        let merges = counters::get(db, counters::MERGES).await?;
        if merges != self.merges_seen || self.map.len() > CACHE_LIMIT {
            self.map.clear();
            self.merges_seen = merges;
        }
        Ok(())
    }

    /// After a failed batch the cache may hold what was rolled back.
    pub fn clear(&mut self) {
        self.map.clear();
        self.merges_seen = -1;
    }
}

async fn lookup(db: &mut dyn Db, cache: &mut Option<&mut IdentityCache>, identity: &Identity) -> Result<Option<ProfileId>, StoreError> {
    if let Some(c) = cache.as_deref()
        && let Some(p) = c.map.get(identity)
    {
        return Ok(Some(*p));
    }
    let found = crate::profiles::find_by_identity(db, identity).await?;
    if let (Some(c), Some(p)) = (cache.as_deref_mut(), found) {
        c.map.insert(identity.clone(), p);
    }
    Ok(found)
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resolution {
    pub profile_id: ProfileId,
    pub created: bool,
    /// Profiles merged into `profile_id` by this message.
    pub merged: Vec<ProfileId>,
    /// Identities this message newly gave the profile.
    pub attached: Vec<Identity>,
}

pub async fn resolve(db: &mut dyn Db, msg: &Message, mut cache: Option<&mut IdentityCache>) -> Result<Resolution, StoreError> {
    let at = msg.received_at;
    // Siyu's own events name their profile directly (following any merge since).
    if let Some(p) = msg.profile_id {
        let live = crate::profiles::live_id(db, p).await?.ok_or_else(|| StoreError::Invalid(format!("profile {p} does not exist")))?;
        return Ok(Resolution { profile_id: live, created: false, merged: Vec::new(), attached: Vec::new() });
    }
    let mut found: Vec<Option<ProfileId>> = Vec::with_capacity(msg.identities.len());
    let mut profiles: Vec<ProfileId> = Vec::new();
    for identity in &msg.identities {
        let p = lookup(db, &mut cache, identity).await?;
        if let Some(p) = p
            && !profiles.contains(&p)
        {
            profiles.push(p);
        }
        found.push(p);
    }

    // alias: previousId names an existing customer by user id or anonymous id.
    let mut unattached_previous = None;
    if let Some(prev) = &msg.previous_id {
        let [as_user, as_anonymous] = Identity::previous_ids(prev);
        let mut prev_profile = lookup(db, &mut cache, &as_user).await?;
        if prev_profile.is_none() {
            prev_profile = lookup(db, &mut cache, &as_anonymous).await?;
        }
        match prev_profile {
            Some(p) if !profiles.contains(&p) => profiles.push(p),
            Some(_) => {}
            None => unattached_previous = Some(as_anonymous),
        }
    }

    let all_found = found.iter().all(Option::is_some);
    if profiles.len() == 1 && all_found && unattached_previous.is_none() {
        // The everyday case: a known customer, nothing new to learn.
        return Ok(Resolution { profile_id: profiles[0], created: false, merged: Vec::new(), attached: Vec::new() });
    }

    let compatible = if msg.is_alias() { profiles.clone() } else { compatible_profiles(db, msg, &profiles, &found).await? };

    let (survivor, created) = match compatible.iter().min() {
        Some(&p) => (p, false),
        None => (create_profile(db, at).await?, true),
    };
    let mut merged = Vec::new();
    for &p in &compatible {
        if p != survivor {
            let reason = if msg.is_alias() { "alias" } else { "shared identity" };
            if let Some(c) = cache.as_deref_mut() {
                // The merged profile's identities now lead to the survivor.
                let moved = db.query("SELECT kind, value FROM identities WHERE profile_id = $1", params![p]).await?;
                for r in moved {
                    if let Some(kind) = IdentityKind::parse(&r.text(0)?) {
                        c.map.insert(Identity { kind, value: r.text(1)? }, survivor);
                    }
                }
                c.merges_seen += 1;
            }
            merge(db, survivor, p, Some(&msg.message_id), reason, at).await?;
            merged.push(p);
        }
    }
    let mut attached = Vec::new();
    for (identity, f) in msg.identities.iter().zip(&found) {
        if f.is_none() {
            attach(db, survivor, identity, at).await?;
            attached.push(identity.clone());
            if let Some(c) = cache.as_deref_mut() {
                c.map.insert(identity.clone(), survivor);
            }
        }
    }
    if let Some(prev) = unattached_previous {
        attach(db, survivor, &prev, at).await?;
        if let Some(c) = cache {
            c.map.insert(prev.clone(), survivor);
        }
        attached.push(prev);
    }
    Ok(Resolution { profile_id: survivor, created, merged, attached })
}

/// The found profiles this message may join: those without a user id, or with the
/// message's own (or, without one, the strongest found profile's).
async fn compatible_profiles(db: &mut dyn Db, msg: &Message, profiles: &[ProfileId], found: &[Option<ProfileId>]) -> Result<Vec<ProfileId>, StoreError> {
    let user_id_unfound = msg.identities.iter().zip(found).any(|(i, f)| i.kind.is_exclusive() && f.is_none());
    if profiles.len() == 1 && !user_id_unfound {
        return Ok(profiles.to_vec());
    }
    let mut user_ids = Vec::with_capacity(profiles.len());
    for &p in profiles {
        user_ids.push(user_id_of(db, p).await?);
    }
    let wanted = msg.user_id.clone().or_else(|| user_ids.iter().flatten().next().cloned());
    Ok(profiles.iter().zip(&user_ids).filter(|(_, uid)| uid.is_none() || *uid == &wanted).map(|(p, _)| *p).collect())
}

async fn user_id_of(db: &mut dyn Db, profile: ProfileId) -> Result<Option<String>, StoreError> {
    db.query_opt("SELECT value FROM identities WHERE profile_id = $1 AND kind = 'user_id' LIMIT 1", params![profile]).await?.map(|r| r.text(0)).transpose()
}

pub async fn create_profile(db: &mut dyn Db, at: Timestamp) -> Result<ProfileId, StoreError> {
    // Version 7 starts with the time: new profiles' uuids go to the end of the unique
    // index instead of a random page each (a 10M-profile index has ~100,000 of them).
    let uuid = uuid::Uuid::now_v7().to_string();
    let row = db.query_one("INSERT INTO profiles (uuid, created_at) VALUES ($1, $2) RETURNING id", params![&uuid, at.0]).await?;
    crate::counters::add(db, crate::counters::PROFILES, 1).await?;
    row.profile(0)
}

pub async fn attach(db: &mut dyn Db, profile: ProfileId, identity: &Identity, at: Timestamp) -> Result<(), StoreError> {
    db.execute(
        "INSERT INTO identities (kind, value, profile_id, created_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (kind, value) DO NOTHING",
        params![identity.kind.as_str(), &identity.value, profile, at.0],
    )
    .await?;
    Ok(())
}

/// Touches follow the customer: the merged profile's deliveries move to the survivor,
/// so its timeline shows them and what is still queued goes out to the one customer.
/// A queued touch of a campaign run (the same campaign, created in the same run) the
/// other profile also has a touch of that is sent, on its way or still queued would
/// reach the person twice: it is suppressed with reason `merged` instead (the merged
/// profile's, when both are queued). Touches already with a guide or WeCom move as
/// they are.
async fn move_deliveries(db: &mut dyn Db, survivor: ProfileId, merged: ProfileId, at: Timestamp) -> Result<(), StoreError> {
    // $2's queued touch goes when $1 has the same run's touch sent or going (or, for
    // the merged profile's touches, also queued).
    let suppress = |live: &'static str| {
        format!(
            "UPDATE deliveries SET status = 'suppressed', reason = 'merged', sent_at = $3
             WHERE profile_id = $2 AND status = 'queued' AND campaign_id IS NOT NULL
               AND EXISTS (SELECT 1 FROM deliveries s WHERE s.profile_id = $1 AND s.campaign_id = deliveries.campaign_id
                           AND s.created_at = deliveries.created_at AND s.status IN ({live}))"
        )
    };
    db.execute(&suppress("'sent', 'confirmed', 'pending_staff'"), params![merged, survivor, at.0]).await?;
    db.execute(&suppress("'sent', 'confirmed', 'pending_staff', 'queued'"), params![survivor, merged, at.0]).await?;
    db.execute("UPDATE deliveries SET profile_id = $1 WHERE profile_id = $2", params![survivor, merged]).await?;
    Ok(())
}

/// Moves everything of `merged` to `survivor` and records the merge.
pub async fn merge(db: &mut dyn Db, survivor: ProfileId, merged: ProfileId, message_id: Option<&str>, reason: &str, at: Timestamp) -> Result<(), StoreError> {
    db.execute("UPDATE identities SET profile_id = $1 WHERE profile_id = $2", params![survivor, merged]).await?;
    db.execute("UPDATE events SET profile_id = $1 WHERE profile_id = $2", params![survivor, merged]).await?;
    db.execute(
        "INSERT INTO traits (profile_id, key, value, updated_at)
         SELECT $1, key, value, updated_at FROM traits WHERE profile_id = $2
         ON CONFLICT (profile_id, key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at
         WHERE excluded.updated_at > traits.updated_at",
        params![survivor, merged],
    )
    .await?;
    db.execute("DELETE FROM traits WHERE profile_id = $1", params![merged]).await?;
    db.execute(
        "INSERT INTO profile_tags (profile_id, tag, source, created_at)
         SELECT $1, tag, source, created_at FROM profile_tags WHERE profile_id = $2
         ON CONFLICT (profile_id, tag) DO NOTHING",
        params![survivor, merged],
    )
    .await?;
    db.execute("DELETE FROM profile_tags WHERE profile_id = $1", params![merged]).await?;
    db.execute(
        "INSERT INTO staff_customers (profile_id, staff_userid, status, added_at, removed_at, state)
         SELECT $1, staff_userid, status, added_at, removed_at, state FROM staff_customers WHERE profile_id = $2
         ON CONFLICT (profile_id, staff_userid) DO NOTHING",
        params![survivor, merged],
    )
    .await?;
    db.execute("DELETE FROM staff_customers WHERE profile_id = $1", params![merged]).await?;
    move_deliveries(db, survivor, merged, at).await?;
    db.execute("UPDATE profiles SET merged_into = $1 WHERE id = $2 OR merged_into = $2", params![survivor, merged]).await?;
    db.execute(
        "INSERT INTO merges (survivor, merged, message_id, reason, merged_at) VALUES ($1, $2, $3, $4, $5)",
        params![survivor, merged, message_id, reason, at.0],
    )
    .await?;
    crate::counters::add(db, crate::counters::PROFILES, -1).await?;
    crate::counters::add(db, crate::counters::MERGES, 1).await?;
    Ok(())
}
