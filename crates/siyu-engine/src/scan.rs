//! Scanning a dense per-profile column into a bitmap, on both cores.
//!
//! A predicate over profile ids `0..len` fills a bitset a byte at a time (no branches
//! on the result), the two halves run in parallel, and the bitset becomes a roaring
//! bitmap in one step. Callers intersect with the live profiles afterwards, which is
//! cheaper than asking a bitmap per profile.

use roaring::RoaringBitmap;

/// Below this, one thread is faster than two.
const PARALLEL_FROM: u32 = 1 << 16;

fn fill(from: u32, to: u32, f: &(impl Fn(u32) -> bool + Sync)) -> Vec<u8> {
    let mut bytes = vec![0u8; (to - from).div_ceil(8) as usize];
    for (i, byte) in bytes.iter_mut().enumerate() {
        let base = from + i as u32 * 8;
        let mut b = 0u8;
        for bit in 0..8u32 {
            let p = base + bit;
            if p < to && f(p) {
                b |= 1 << bit;
            }
        }
        *byte = b;
    }
    bytes
}

/// Like [`fill`], for a predicate that is known to be `otherwise` wherever
/// `key[p] < lo` (or `p` is past `key`): eight keys at a time are compared (the
/// compiler vectorises this), and `f` runs only where some key is at least `lo`.
fn fill_keyed(from: u32, to: u32, key: &[u32], lo: u32, otherwise: bool, f: &(impl Fn(u32) -> bool + Sync)) -> Vec<u8> {
    let mut bytes = vec![0u8; (to - from).div_ceil(8) as usize];
    let keyed = (key.len() as u32).min(to);
    for (i, byte) in bytes.iter_mut().enumerate() {
        let base = from + i as u32 * 8;
        let candidates: u8 = if base + 8 <= keyed {
            let k = &key[base as usize..base as usize + 8];
            k.iter().enumerate().fold(0u8, |m, (j, t)| m | (((*t >= lo) as u8) << j))
        } else {
            (0..8u32).filter(|bit| base + bit < keyed && key[(base + bit) as usize] >= lo).fold(0u8, |m, bit| m | (1 << bit))
        };
        let valid: u8 = if base + 8 <= to { 0xFF } else { ((1u16 << (to - base)) - 1) as u8 };
        let mut b = if otherwise { valid & !candidates } else { 0 };
        let mut rest = candidates;
        while rest != 0 {
            let bit = rest.trailing_zeros();
            rest &= rest - 1;
            if f(base + bit) {
                b |= 1 << bit;
            }
        }
        *byte = b;
    }
    bytes
}

/// Runs `fill` over `0..len`, on both cores when that pays.
fn halves(len: u32, fill: impl Fn(u32, u32) -> Vec<u8> + Sync) -> RoaringBitmap {
    let bytes = if len < PARALLEL_FROM {
        fill(0, len)
    } else {
        // Split on a byte boundary so the halves concatenate.
        let mid = (len / 2) & !7;
        let (mut left, right) = std::thread::scope(|s| {
            let right = s.spawn(|| fill(mid, len));
            let left = fill(0, mid);
            (left, right.join().expect("scan thread"))
        });
        left.extend(right);
        left
    };
    RoaringBitmap::from_lsb0_bytes(0, &bytes)
}

/// The ids in `0..len` for which `f` holds.
pub fn dense(len: u32, f: impl Fn(u32) -> bool + Sync) -> RoaringBitmap {
    halves(len, |from, to| fill(from, to, &f))
}

/// The ids in `0..len` for which `f` holds, where `f` is known to be `otherwise` for
/// every id whose `key` is below `lo` (a profile's last event time before a window,
/// say): those ids are settled eight at a time without calling `f`.
pub fn dense_keyed(len: u32, key: &[u32], lo: u32, otherwise: bool, f: impl Fn(u32) -> bool + Sync) -> RoaringBitmap {
    halves(len, |from, to| fill_keyed(from, to, key, lo, otherwise, &f))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_scans_match_a_filter() {
        for len in [0u32, 1, 7, 8, 9, 1000, PARALLEL_FROM + 13] {
            // Keys cover only part of the ids; below `lo` (or past the keys) the answer is `otherwise`.
            let key: Vec<u32> = (0..len.saturating_sub(5)).map(|p| p % 11).collect();
            for otherwise in [false, true] {
                let f = |p: u32| p.is_multiple_of(3);
                let got = dense_keyed(len, &key, 7, otherwise, f);
                let want: RoaringBitmap = (0..len).filter(|p| if key.get(*p as usize).is_some_and(|k| *k >= 7) { f(*p) } else { otherwise }).collect();
                assert_eq!(got, want, "len {len} otherwise {otherwise}");
            }
        }
    }

    #[test]
    fn dense_scans_match_a_filter() {
        for len in [0u32, 1, 7, 8, 9, 1000, PARALLEL_FROM + 13] {
            let got = dense(len, |p| p % 3 == 0 || p == len.saturating_sub(1));
            let want: RoaringBitmap = (0..len).filter(|p| p % 3 == 0 || *p == len.saturating_sub(1)).collect();
            assert_eq!(got, want, "len {len}");
        }
    }
}
