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

/// The ids in `0..len` for which `f` holds.
pub fn dense(len: u32, f: impl Fn(u32) -> bool + Sync) -> RoaringBitmap {
    let bytes = if len < PARALLEL_FROM {
        fill(0, len, &f)
    } else {
        // Split on a byte boundary so the halves concatenate.
        let mid = (len / 2) & !7;
        let (mut left, right) = std::thread::scope(|s| {
            let right = s.spawn(|| fill(mid, len, &f));
            let left = fill(0, mid, &f);
            (left, right.join().expect("scan thread"))
        });
        left.extend(right);
        left
    };
    RoaringBitmap::from_lsb0_bytes(0, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dense_scans_match_a_filter() {
        for len in [0u32, 1, 7, 8, 9, 1000, PARALLEL_FROM + 13] {
            let got = dense(len, |p| p % 3 == 0 || p == len.saturating_sub(1));
            let want: RoaringBitmap = (0..len).filter(|p| p % 3 == 0 || *p == len.saturating_sub(1)).collect();
            assert_eq!(got, want, "len {len}");
        }
    }
}
