//! Generated secrets and comparisons that do not leak timing.

/// A random token: 256 bits from the OS generator (via two v4 UUIDs), hex encoded.
pub fn random_token(prefix: &str) -> String {
    format!("{prefix}{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple())
}

/// Compares secrets in time that depends only on their lengths.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_and_distinct() {
        let a = random_token("siyu_");
        assert_eq!(a.len(), 5 + 64);
        assert_ne!(a, random_token("siyu_"));
        assert!(constant_time_eq(&a, &a.clone()));
        assert!(!constant_time_eq(&a, &random_token("siyu_")));
        assert!(!constant_time_eq("short", "longer"));
    }
}
