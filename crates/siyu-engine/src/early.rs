//! Early application: a known customer's event reaches the index when it is
//! acknowledged, not seconds later when the store has applied it.
//!
//! The store resolves a message whose known identities all lead to one profile to
//! that profile, and attaches to it any identity it has never seen, unless that is a
//! user id (which may start a profile of its own: [`IdentityKind::is_exclusive`]). The
//! engine mirrors where identities lead: it loads them all at start, learns what the
//! store reports (identities attached, profiles merged), and learns the identities a
//! message it applied early will attach. So for such a message it knows the store's
//! answer before the store gives it. Everything else (new customers, merges, aliases,
//! contact changes) waits for the store, and so does every later message about the
//! profiles such a message may change: a profile stays *unsettled* until the store has
//! applied every message that might move it.
//!
//! Only events go early; traits wait for the commit, which keeps their latest-wins
//! order the store's. When the store commits an early message it must agree; where it
//! does not (a retried message it had already stored, say) the early event is taken
//! back out and the store's outcome applied instead.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hash, Hasher};

use siyu_core::{Identity, IdentityKind, Message};

use crate::leads::LeadsTo;

/// An identity, by a 64-bit hash of it (see [`LeadsTo`] for how much of it is kept).
pub type Key = u64;

/// Identities remembered at most (about 800 MB); past it, messages with an identity
/// the map lacks wait for the store.
const MAX_IDENTITIES: usize = 100_000_000;

pub struct EarlyResolver {
    leads_to: LeadsTo,
    /// Whether `leads_to` holds every identity the store has (none were left out for
    /// room): only then is an identity it lacks one the store has never seen.
    complete: bool,
    /// Merged profile → survivor, as the store reported them.
    merged_into: HashMap<u32, u32>,
    /// Profiles that must wait for the store until it has applied a sequence number.
    unsettled: Until<u32>,
    /// Identities unknown when a waiting message named them: when the store reports
    /// where they lead, that profile waits for that message too.
    unknown: Until<Key>,
    /// The last sequence number the store has applied.
    committed: u64,
    pub waits: Waits,
}

/// Why messages waited for the store, counted.
#[derive(Debug, Default, Clone, Copy)]
pub struct Waits {
    /// A new customer, or a message that may merge profiles or change guides.
    pub uncertain: u64,
    /// The customer's profile was unsettled by an earlier message still waiting.
    pub unsettled: u64,
    /// A new identity the store might not attach (a user id, or one a waiting message names).
    pub unattachable: u64,
}

/// What is certain about a message before the store applies it.
pub struct Certain {
    pub profile: u32,
    /// Identities the store will attach to the profile, already learned here.
    pub attaches: Vec<Key>,
}

impl Default for EarlyResolver {
    fn default() -> Self {
        EarlyResolver {
            leads_to: LeadsTo::default(),
            complete: true,
            merged_into: HashMap::new(),
            unsettled: Until::default(),
            unknown: Until::default(),
            committed: 0,
            waits: Waits::default(),
        }
    }
}

pub fn key(kind: IdentityKind, value: &str) -> Key {
    let mut h = foldhash::quality::FixedState::with_seed(0x5117_0001).build_hasher();
    kind.as_str().hash(&mut h);
    value.hash(&mut h);
    h.finish()
}

impl EarlyResolver {
    /// Remembers an identity the store holds (the index load reads them all).
    pub fn learn(&mut self, kind: IdentityKind, value: &str, profile: u32) {
        self.insert(key(kind, value), profile);
    }

    fn insert(&mut self, k: Key, profile: u32) {
        if self.leads_to.len() < MAX_IDENTITIES || self.leads_to.contains(k) {
            self.leads_to.insert(k, profile);
        } else {
            self.complete = false;
        }
    }

    pub fn identities(&self) -> usize {
        self.leads_to.len()
    }

    pub fn memory_bytes(&self) -> usize {
        // hashbrown: the slot, a control byte, and load-factor slack.
        self.leads_to.memory_bytes() + self.merged_into.capacity() * 9
    }

    fn live(&self, mut p: u32) -> u32 {
        while let Some(&survivor) = self.merged_into.get(&p) {
            p = survivor;
        }
        p
    }

    fn find(&self, identity: &Identity) -> Option<u32> {
        self.leads_to.get(key(identity.kind, &identity.value)).map(|p| self.live(p))
    }

    fn is_settled(&self, p: u32) -> bool {
        !self.unsettled.holds(&p, self.committed)
    }

    /// The profile the store will give message `seq`, when that is certain now, and
    /// the identities it will attach there (learned from now on). `alive` says whether
    /// the index holds a profile.
    pub fn resolve(&mut self, seq: u64, msg: &Message, alive: impl Fn(u32) -> bool) -> Option<Certain> {
        let Some((p, new)) = self.certain(msg) else {
            self.waits.uncertain += 1;
            self.wait_for(seq, msg);
            return None;
        };
        // A new identity is attached for sure only if the store has never seen it and
        // no message before this one, still waiting, names it (else the store may merge
        // the profile with the one that message joins); a new user id may not be
        // attached at all (it may start a profile of its own).
        let may_merge = !new.is_empty() && (!self.complete || new.iter().any(|(k, _)| self.unknown.holds(k, self.committed)));
        let attachable = !may_merge && new.iter().all(|(_, kind)| !kind.is_exclusive());
        // An unsettled profile's message waits, but moves nothing itself: it must not
        // keep a busy customer waiting for ever.
        if !(alive(p) && self.is_settled(p) && attachable) {
            if attachable {
                self.waits.unsettled += 1;
            } else {
                self.waits.unattachable += 1;
            }
            for (k, _) in &new {
                self.unknown.raise(*k, seq);
            }
            if may_merge {
                self.unsettled.raise(p, seq);
            }
            return None;
        }
        let attaches: Vec<Key> = new.into_iter().map(|(k, _)| k).collect();
        for k in &attaches {
            self.insert(*k, p);
        }
        Some(Certain { profile: p, attaches })
    }

    /// The one profile a message's known identities lead to, and its unknown ones.
    fn certain(&self, msg: &Message) -> Option<(u32, Vec<(Key, IdentityKind)>)> {
        // Guides follow the store's own rules (timestamps, repeats): those wait.
        if msg.previous_id.is_some() || msg.changes_guides() {
            return None;
        }
        if let Some(p) = msg.profile_id {
            return Some((self.live(p.bit()), Vec::new()));
        }
        let mut found = None;
        let mut new: Vec<(Key, IdentityKind)> = Vec::new();
        for identity in &msg.identities {
            let k = key(identity.kind, &identity.value);
            match self.leads_to.get(k).map(|p| self.live(p)) {
                Some(p) if found.is_some_and(|f| f != p) => return None,
                Some(p) => found = Some(p),
                None if !new.iter().any(|(n, _)| *n == k) => new.push((k, identity.kind)),
                None => {}
            }
        }
        // No identity known: a new customer, whose profile the store creates.
        found.map(|p| (p, new))
    }

    /// The store did not do what message `seq`, applied early, expected: the
    /// identities it was to attach to `profile` lead nowhere known again (unless the
    /// store's outcome, learned next, says otherwise).
    pub fn forget(&mut self, attaches: &[Key], profile: u32) {
        for k in attaches {
            if self.leads_to.get(*k).is_some_and(|p| self.live(p) == self.live(profile)) {
                self.leads_to.remove(*k);
            }
        }
    }

    /// A message that waits for the store: every profile it may move waits with it.
    fn wait_for(&mut self, seq: u64, msg: &Message) {
        let mut names: Vec<Identity> = msg.identities.clone();
        if let Some(prev) = &msg.previous_id {
            names.extend(Identity::previous_ids(prev));
        }
        for identity in &names {
            match self.find(identity) {
                Some(p) => self.unsettled.raise(p, seq),
                None => self.unknown.raise(key(identity.kind, &identity.value), seq),
            }
        }
        if let Some(p) = msg.profile_id {
            self.unsettled.raise(self.live(p.bit()), seq);
        }
    }

    /// What the store did with message `seq`: where its new identities lead, which
    /// profiles it merged. Called for every committed message, in log order.
    pub fn learn_outcome(&mut self, msg_profile: u32, attached: &[Identity], merged: &[siyu_core::ProfileId]) {
        for loser in merged {
            self.merged_into.insert(loser.bit(), msg_profile);
        }
        for identity in attached {
            let k = key(identity.kind, &identity.value);
            self.insert(k, msg_profile);
            // A later message named it before anyone knew where it led.
            if let Some(seq) = self.unknown.until(&k).filter(|seq| *seq > self.committed) {
                self.unsettled.raise(msg_profile, seq);
            }
        }
    }

    /// The store has applied everything up to `seq`.
    pub fn committed(&mut self, seq: u64) {
        self.committed = self.committed.max(seq);
        self.unsettled.expire(self.committed);
        self.unknown.expire(self.committed);
    }
}

/// Things held until the store has applied a sequence number: the latest such number
/// per thing, and the order they were raised in, so what has passed is dropped cheaply.
struct Until<K> {
    latest: HashMap<K, u64, foldhash::fast::FixedState>,
    order: VecDeque<(u64, K)>,
}

impl<K> Default for Until<K> {
    fn default() -> Self {
        Until { latest: HashMap::default(), order: VecDeque::new() }
    }
}

impl<K: Copy + Eq + std::hash::Hash> Until<K> {
    /// Holds `k` until at least `seq`.
    fn raise(&mut self, k: K, seq: u64) {
        let entry = self.latest.entry(k).or_insert(0);
        *entry = (*entry).max(seq);
        self.order.push_back((seq, k));
    }

    fn until(&self, k: &K) -> Option<u64> {
        self.latest.get(k).copied()
    }

    /// Whether `k` is still held once the store has applied `committed`.
    fn holds(&self, k: &K, committed: u64) -> bool {
        self.until(k).is_some_and(|seq| seq > committed)
    }

    /// Drops what the store has applied (entries raised out of order wait for those
    /// before them; `holds` is exact regardless).
    fn expire(&mut self, committed: u64) {
        while let Some(&(seq, k)) = self.order.front() {
            if seq > committed {
                break;
            }
            self.order.pop_front();
            if !self.holds(&k, committed) {
                self.latest.remove(&k);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use siyu_core::{MessageKind, ProfileId, Timestamp};

    fn track(identities: &[Identity]) -> Message {
        Message::track_about(identities.to_vec(), "Order Completed", "m".into(), serde_json::json!({}), Timestamp(0), Timestamp(0), "test")
    }

    fn at(c: Option<Certain>) -> Option<u32> {
        c.map(|c| c.profile)
    }

    fn known() -> EarlyResolver {
        let mut r = EarlyResolver::default();
        r.learn(IdentityKind::UserId, "u1", 1);
        r.learn(IdentityKind::AnonymousId, "a1", 1);
        r.learn(IdentityKind::UserId, "u2", 2);
        r
    }

    #[test]
    fn a_known_customer_is_certain_and_a_new_one_waits() {
        let mut r = known();
        let alive = |_| true;
        assert_eq!(at(r.resolve(1, &track(&[Identity::user_id("u1"), Identity::anonymous_id("a1")]), alive)), Some(1));
        assert_eq!(at(r.resolve(2, &track(&[Identity::user_id("u9")]), alive)), None);
        // Two known profiles in one message: the store may merge them.
        assert_eq!(at(r.resolve(3, &track(&[Identity::user_id("u1"), Identity::user_id("u2")]), alive)), None);
        // ... so both wait until it is applied, then are certain again.
        assert_eq!(at(r.resolve(4, &track(&[Identity::user_id("u2")]), alive)), None);
        r.committed(3);
        assert_eq!(at(r.resolve(5, &track(&[Identity::user_id("u2")]), alive)), Some(2));
        // A profile the index does not hold is never guessed.
        assert_eq!(at(r.resolve(6, &track(&[Identity::user_id("u2")]), |p| p != 2)), None);
    }

    #[test]
    fn a_known_customer_s_new_identity_is_learned_at_once() {
        let mut r = known();
        let alive = |_| true;
        let c = r.resolve(1, &track(&[Identity::user_id("u1"), Identity::anonymous_id("a9")]), alive).expect("certain");
        assert_eq!((c.profile, c.attaches), (1, vec![key(IdentityKind::AnonymousId, "a9")]));
        assert_eq!(at(r.resolve(2, &track(&[Identity::anonymous_id("a9")]), alive)), Some(1));
        // A new user id may start a profile of its own: that waits for the store.
        assert_eq!(at(r.resolve(3, &track(&[Identity::user_id("u2"), Identity::user_id("u7")]), alive)), None);
    }

    #[test]
    fn an_identity_a_waiting_message_names_holds_its_profile_until_applied() {
        let mut r = known();
        let alive = |_| true;
        // Seq 1 is a new customer, a9; seq 2 ties a9 to profile 1, which the store
        // may merge with seq 1's new profile: profile 1 waits for seq 2.
        assert_eq!(at(r.resolve(1, &track(&[Identity::anonymous_id("a9")]), alive)), None);
        assert_eq!(at(r.resolve(2, &track(&[Identity::user_id("u1"), Identity::anonymous_id("a9")]), alive)), None);
        assert_eq!(at(r.resolve(3, &track(&[Identity::user_id("u1")]), alive)), None, "profile 1 is about to change");
        // The store applies seq 1 alone: a9 leads to a new profile 3, and seq 2, still
        // to come, names it: profile 3 waits too.
        r.learn_outcome(3, &[Identity::anonymous_id("a9")], &[]);
        r.committed(1);
        assert_eq!(at(r.resolve(4, &track(&[Identity::anonymous_id("a9")]), alive)), None);
        r.learn_outcome(1, &[], &[ProfileId::from_bit(3)]);
        r.committed(2);
        assert_eq!(at(r.resolve(5, &track(&[Identity::anonymous_id("a9")]), alive)), Some(1));
        assert_eq!(at(r.resolve(6, &track(&[Identity::user_id("u1")]), alive)), Some(1));
    }

    #[test]
    fn what_the_store_did_not_attach_is_forgotten() {
        let mut r = known();
        let c = r.resolve(1, &track(&[Identity::user_id("u1"), Identity::anonymous_id("a9")]), |_| true).expect("certain");
        r.forget(&c.attaches, c.profile);
        r.committed(1);
        assert_eq!(at(r.resolve(2, &track(&[Identity::anonymous_id("a9")]), |_| true)), None);
    }

    #[test]
    fn merged_profiles_lead_to_their_survivor() {
        let mut r = known();
        r.learn_outcome(1, &[], &[ProfileId::from_bit(2)]);
        r.committed(1);
        assert_eq!(at(r.resolve(2, &track(&[Identity::user_id("u2")]), |_| true)), Some(1));
        let mut internal = track(&[]);
        internal.profile_id = Some(ProfileId::from_bit(2));
        assert_eq!(at(r.resolve(3, &internal, |_| true)), Some(1));
    }

    #[test]
    fn contact_changes_and_aliases_wait_for_the_store() {
        let mut r = known();
        let mut contact = track(&[Identity::user_id("u1")]);
        contact.event = Some("Contact Added".into());
        assert_eq!(at(r.resolve(1, &contact, |_| true)), None);
        let mut alias = track(&[Identity::user_id("u2")]);
        alias.kind = MessageKind::Alias;
        alias.previous_id = Some("a1".into());
        assert_eq!(at(r.resolve(2, &alias, |_| true)), None);
        r.committed(1);
        assert_eq!(at(r.resolve(3, &track(&[Identity::user_id("u1")]), |_| true)), None, "the alias may merge profile 1");
        r.committed(2);
        assert_eq!(at(r.resolve(4, &track(&[Identity::user_id("u1")]), |_| true)), Some(1));
    }
}
