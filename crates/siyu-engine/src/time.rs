//! Event times in the engine: whole seconds since 2000-01-01 UTC in a `u32` (good until
//! 2136), half the memory of milliseconds. Rules see these times as milliseconds
//! (`secs * 1000`): event times are kept to the second.

use siyu_core::Timestamp;

/// 2000-01-01T00:00:00Z in epoch milliseconds.
pub const ORIGIN_MS: i64 = 946_684_800_000;

/// An event time as the engine keeps it; earlier times become the origin.
pub fn secs(t: Timestamp) -> u32 {
    ((t.0 - ORIGIN_MS).div_euclid(1000)).clamp(0, u32::MAX as i64) as u32
}

pub fn instant(secs: u32) -> Timestamp {
    Timestamp(secs as i64 * 1000 + ORIGIN_MS)
}

/// The engine seconds inside an inclusive millisecond range: `(first, last)`.
pub fn secs_range(lo_ms: i64, hi_ms: i64) -> (u32, u32) {
    // s * 1000 + ORIGIN >= lo  <=>  s >= ceil((lo - ORIGIN) / 1000)
    let lo = if lo_ms == i64::MIN { 0 } else { (lo_ms - ORIGIN_MS + 999).div_euclid(1000).clamp(0, u32::MAX as i64) as u32 };
    let hi = if hi_ms == i64::MAX { u32::MAX as i64 } else { (hi_ms - ORIGIN_MS).div_euclid(1000).clamp(-1, u32::MAX as i64) };
    if hi < 0 {
        return (1, 0);
    }
    (lo, hi as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_inclusive_at_second_precision() {
        let t = Timestamp(ORIGIN_MS + 10_500);
        assert_eq!(secs(t), 10);
        assert_eq!(instant(10), Timestamp(ORIGIN_MS + 10_000));
        assert_eq!(secs_range(ORIGIN_MS + 10_000, ORIGIN_MS + 20_000), (10, 20));
        assert_eq!(secs_range(ORIGIN_MS + 10_001, ORIGIN_MS + 19_999), (11, 19));
        assert_eq!(secs_range(i64::MIN, i64::MAX), (0, u32::MAX));
        let (lo, hi) = secs_range(0, ORIGIN_MS - 1);
        assert!(lo > hi, "a range before the origin is empty");
    }
}
