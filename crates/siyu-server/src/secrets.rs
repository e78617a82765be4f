//! Generated secrets and comparisons that do not leak timing.

use rand::TryRngCore;
use subtle::ConstantTimeEq;

/// A random token: 256 bits from the operating system's generator, hex encoded.
pub fn random_token(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.try_fill_bytes(&mut bytes).expect("the operating system's random generator");
    format!("{prefix}{}", hex::encode(bytes))
}

/// Compares secrets in time that depends only on their lengths.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
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
