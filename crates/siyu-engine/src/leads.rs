//! Where identities lead, in 8 bytes each: tens of millions of identities is the
//! everyday size of a brand, so a hash map's 17+ bytes a slot would cost more than the
//! whole segment index.
//!
//! Identities are kept by a 64-bit hash. The packed part groups them by the hash's top
//! 20 bits (a bucket, found through an offset per bucket) and keeps the next 32 bits (a
//! fingerprint) and the profile: a 52-bit key, so at 50 million identities one lookup
//! of an unknown identity in 80 million finds a false match. That only makes an early
//! guess the commit takes back. What is learned later goes to a small map, merged into
//! the packed part once it grows to a quarter of it.

use std::collections::HashMap;

const BUCKET_BITS: u32 = 20;
const BUCKETS: usize = 1 << BUCKET_BITS;
/// A forgotten packed entry.
const NONE: u32 = u32::MAX;

#[derive(Default)]
pub struct LeadsTo {
    /// `starts[b]..starts[b + 1]`: bucket `b`'s entries (empty until the first merge).
    starts: Vec<u32>,
    fingerprints: Vec<u32>,
    profiles: Vec<u32>,
    /// Live packed entries.
    packed_live: usize,
    recent: HashMap<u64, u32, foldhash::fast::FixedState>,
}

fn bucket(k: u64) -> usize {
    (k >> (64 - BUCKET_BITS)) as usize
}

fn fingerprint(k: u64) -> u32 {
    (k >> (64 - BUCKET_BITS - 32)) as u32
}

impl LeadsTo {
    fn slot(&self, k: u64) -> Option<usize> {
        if self.starts.is_empty() {
            return None;
        }
        let b = bucket(k);
        let (from, to) = (self.starts[b] as usize, self.starts[b + 1] as usize);
        let fp = fingerprint(k);
        (from..to).find(|i| self.fingerprints[*i] == fp && self.profiles[*i] != NONE)
    }

    pub fn get(&self, k: u64) -> Option<u32> {
        self.recent.get(&k).copied().or_else(|| self.slot(k).map(|i| self.profiles[i]))
    }

    pub fn contains(&self, k: u64) -> bool {
        self.get(k).is_some()
    }

    pub fn insert(&mut self, k: u64, profile: u32) {
        match self.slot(k) {
            Some(i) if !self.recent.contains_key(&k) => self.profiles[i] = profile,
            _ => {
                self.recent.insert(k, profile);
                if self.recent.len() >= (1 << 16).max(self.packed_live / 4) {
                    self.pack();
                }
            }
        }
    }

    pub fn remove(&mut self, k: u64) {
        if self.recent.remove(&k).is_none()
            && let Some(i) = self.slot(k)
        {
            self.profiles[i] = NONE;
            self.packed_live -= 1;
        }
    }

    pub fn len(&self) -> usize {
        self.packed_live + self.recent.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn memory_bytes(&self) -> usize {
        self.starts.capacity() * 4 + self.fingerprints.capacity() * 4 + self.profiles.capacity() * 4 + self.recent.capacity() * 13
    }

    /// Merges the recent map into the packed part (a counting sort by bucket).
    fn pack(&mut self) {
        let mut counts = vec![0u32; BUCKETS + 1];
        if !self.starts.is_empty() {
            #[allow(clippy::needless_range_loop)]
            for b in 0..BUCKETS {
                let live = (self.starts[b]..self.starts[b + 1]).filter(|i| self.profiles[*i as usize] != NONE).count();
                counts[b + 1] = live as u32;
            }
        }
        for k in self.recent.keys() {
            counts[bucket(*k) + 1] += 1;
        }
        for b in 0..BUCKETS {
            counts[b + 1] += counts[b];
        }
        let total = counts[BUCKETS] as usize;
        let mut fingerprints = vec![0u32; total];
        let mut profiles = vec![NONE; total];
        let mut next = counts.clone();
        if !self.starts.is_empty() {
            for (b, slot) in next.iter_mut().enumerate().take(BUCKETS) {
                for i in self.starts[b] as usize..self.starts[b + 1] as usize {
                    if self.profiles[i] != NONE {
                        let at = *slot as usize;
                        fingerprints[at] = self.fingerprints[i];
                        profiles[at] = self.profiles[i];
                        *slot += 1;
                    }
                }
            }
        }
        for (k, p) in self.recent.drain() {
            let b = bucket(k);
            let at = next[b] as usize;
            fingerprints[at] = fingerprint(k);
            profiles[at] = p;
            next[b] += 1;
        }
        self.starts = counts;
        self.fingerprints = fingerprints;
        self.profiles = profiles;
        self.packed_live = total;
        self.recent.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(i: u64) -> u64 {
        // Spread like hashes: a multiplicative mix.
        i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (i << 7)
    }

    #[test]
    fn what_goes_in_comes_out_packed_or_not() {
        let mut m = LeadsTo::default();
        let n = (1u64 << 20) + 5_000;
        for i in 0..n {
            m.insert(k(i), i as u32);
        }
        assert!(!m.starts.is_empty(), "packed once the recent map grew");
        assert_eq!(m.len(), n as usize);
        for i in (0..n).step_by(997) {
            assert_eq!(m.get(k(i)), Some(i as u32));
        }
        assert_eq!(m.get(k(n + 1)), None);
        // Moved, forgotten, then packed again.
        m.insert(k(10), 7);
        m.remove(k(11));
        m.remove(k(n - 1));
        assert_eq!((m.get(k(10)), m.get(k(11)), m.get(k(n - 1))), (Some(7), None, None));
        m.pack();
        assert_eq!((m.get(k(10)), m.get(k(11)), m.get(k(n - 1)), m.get(k(12))), (Some(7), None, None, Some(12)));
        assert_eq!(m.len(), n as usize - 2);
        assert!(m.memory_bytes() < n as usize * 9 + BUCKETS * 4 + 64, "8 bytes an identity");
    }
}
